//! The deployment files, checked without Docker or Kubernetes (none runs on these machines):
//!
//! - `Dockerfile`: its stages parse; the build stage is replayed in a temporary directory (every
//!   `COPY` from the repository, every `RUN` after `WORKDIR` but the apt-get installs, with a
//!   `cargo` on PATH that records its arguments and has the real cargo resolve the copied
//!   manifest and lock with `--locked`), so the files it copies exist, the stub layer is a crate
//!   cargo reads, and the binary the runtime stage copies is where the build leaves it; the
//!   runtime stage is non-root with a `/data` volume, the listeners on 0.0.0.0, the ports
//!   exposed and a `HEALTHCHECK` that is run here against a stand-in HTTP server; the
//!   libraries the binary links are installed; `.dockerignore` keeps what the build copies.
//! - every YAML and JSON file under `deploy/` (and `bridge.yaml`) parses; every bridge.yaml
//!   among them, in files, in the sidecar's ConfigMap and in the Helm chart's values, passes
//!   `tributary check` with the environment and arguments its container gets.
//! - the Helm chart: rendered by a small renderer of the template forms it uses
//!   (tests/deploy/gotmpl.rs: a form it does not know is an error, never skipped) and checked resource by resource, and
//!   linted by Helm itself (`helm lint`, from the Helm Go library in PyPI's helm-sdkpy:
//!   tests/python/helm_lint.py; no helm command is packaged for the registries reached here).
//! - the Grafana dashboard: its PromQL names only metrics of DESIGN §9's table, groups by
//!   their labels, and covers the panels the README describes.

#[path = "../support/mod.rs"]
mod support;

mod common;
mod dockerfile;
mod gotmpl;
mod pods;

mod configs;
mod docker_image;
mod docker_stages;
mod grafana;
mod helm;
mod kubernetes;
