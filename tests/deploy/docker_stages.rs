//! The Dockerfile's stages: a build stage on the runtime's Debian release, replayed here in a
//! temporary directory, and a small non-root runtime stage with a data volume, the ports and
//! a healthcheck.

use crate::common::{repo, ROOT};
use crate::dockerfile::{build_stage, copy_parts, dockerfile, dockerignore, exec_form, ignored};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

#[test]
fn dockerfile_has_a_build_stage_and_a_small_runtime_stage() {
    let stages = dockerfile();
    assert_eq!(stages.len(), 2, "{stages:#?}");
    let build = build_stage(&stages);
    assert!(
        build.base.starts_with("rust:") && build.base.ends_with("-bookworm"),
        "the build runs on the runtime's Debian release (glibc, OpenSSL 3): {}",
        build.base
    );
    let runtime = stages.last().unwrap();
    assert_eq!(runtime.base, "debian:bookworm-slim");

    // The runtime installs only run-time libraries; the build stage is where compilers live.
    let installs = runtime.all("RUN");
    assert!(installs.iter().all(|i| !i.args.contains("-dev")));

    // Every COPY into the runtime comes from the build stage or the repository.
    for copy in runtime.all("COPY") {
        let (from, sources, _) = copy_parts(copy);
        match from.as_deref() {
            Some("build") => {}
            Some(other) => panic!("COPY --from={other}: no such stage"),
            None => {
                for s in sources {
                    assert!(repo(&s).exists(), "COPY {s}: not in the repository");
                }
            }
        }
    }
}

#[test]
fn dockerfile_runtime_is_non_root_with_a_data_volume_ports_and_a_healthcheck() {
    let stages = dockerfile();
    let runtime = stages.last().unwrap();

    let user = &runtime.last("USER").args;
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|n| n != 0),
        "USER {user}: a numeric non-root id (Kubernetes' runAsNonRoot can only verify a number)"
    );
    // The same id as the Kubernetes examples' securityContext.
    let useradd = runtime
        .all("RUN")
        .into_iter()
        .find(|i| i.args.contains("useradd"))
        .expect("a RUN that adds the user");
    assert!(useradd.args.contains(&format!("--uid {uid}")));
    assert!(useradd.args.contains("chown tributary:tributary /data"));

    let volume = &runtime.last("VOLUME").args;
    assert_eq!(exec_form(volume), ["/data"]);
    assert_eq!(runtime.last("WORKDIR").args, "/data");

    let exposed: BTreeSet<u16> = runtime
        .all("EXPOSE")
        .iter()
        .flat_map(|i| i.args.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    assert_eq!(exposed, BTreeSet::from([1883, 9092, 9464]));

    // In the container the listeners bind every interface, on the exposed ports, and the log
    // is the volume.
    let env = runtime.env();
    assert_eq!(env["TRIBUTARY_HTTP__LISTEN"], "0.0.0.0:9464");
    assert_eq!(
        env["TRIBUTARY_LOG__EMBEDDED__KAFKA_LISTENER"],
        "0.0.0.0:9092"
    );
    assert_eq!(env["TRIBUTARY_LOG__EMBEDDED__DIR"], "/data");

    assert_eq!(exec_form(&runtime.last("ENTRYPOINT").args), ["tributary"]);
    let cmd = exec_form(&runtime.last("CMD").args);
    assert_eq!(cmd, ["run", "-c", "/etc/tributary/bridge.yaml"]);
    assert!(
        runtime
            .all("COPY")
            .iter()
            .any(|c| copy_parts(c).2 == "/etc/tributary/bridge.yaml"),
        "CMD's config is copied into the image"
    );

    let healthcheck = &runtime.last("HEALTHCHECK").args;
    assert!(healthcheck.contains("--timeout="), "{healthcheck}");
    assert!(healthcheck.contains(" CMD ["), "exec form: {healthcheck}");
}

/// The image's `cargo build` is replayed here: see the module docs.
#[test]
fn dockerfile_build_stage_replays_here() {
    let stages = dockerfile();
    let build = build_stage(&stages);
    let work = tempfile::tempdir().unwrap();
    let workdir_in_image = &build.last("WORKDIR").args;
    let src = work.path().join("src-root");
    std::fs::create_dir(&src).unwrap();

    // A cargo that records its arguments, checks the manifest and lock with the real cargo
    // (`metadata --locked`: fails if Cargo.lock is not what the manifest needs; `--offline`:
    // the tests run after the build downloaded every crate) and leaves a binary where a
    // release build would, for `strip` to strip.
    let real_cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let host = String::from_utf8(
        Command::new("rustc")
            .arg("-vV")
            .output()
            .expect("rustc")
            .stdout,
    )
    .unwrap()
    .lines()
    .find_map(|l| l.strip_prefix("host: ").map(String::from))
    .expect("rustc's host triple");
    let shims = work.path().join("shims");
    std::fs::create_dir(&shims).unwrap();
    let calls = work.path().join("cargo-calls");
    let shim = shims.join("cargo");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\n\
             set -e\n\
             echo \"$*\" >> '{calls}'\n\
             '{real_cargo}' metadata --locked --offline --filter-platform {host} \\\n\
             \x20 --format-version 1 > \"metadata-$(wc -l < '{calls}').json\"\n\
             bin=$(echo \"$*\" | sed -n 's/.*--bin \\([^ ]*\\).*/\\1/p')\n\
             mkdir -p target/release && cp /usr/bin/true \"target/release/$bin\"\n",
            calls = calls.display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        shims.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let dockerignore = dockerignore();
    let mut runs = 0;
    let mut in_workdir = false;
    for i in &build.instructions {
        match i.keyword.as_str() {
            "WORKDIR" => in_workdir = true,
            // Package installs are the base image's business, not replayed here.
            "RUN" if i.args.starts_with("apt-get") => {}
            "COPY" if in_workdir => {
                let (from, sources, dest) = copy_parts(i);
                assert!(from.is_none());
                let into_dir = dest.ends_with('/') || sources.len() > 1;
                let dest = src.join(dest.trim_start_matches("./"));
                for s in &sources {
                    assert!(repo(s).exists(), "COPY {s}: not in the repository");
                    assert!(
                        !ignored(&dockerignore, s),
                        "COPY {s}: excluded from the build context by .dockerignore"
                    );
                    // As Docker copies: a directory's contents into DEST; a file into DEST/
                    // or as DEST.
                    let from = repo(s);
                    let to = if from.is_file() && into_dir {
                        dest.join(from.file_name().unwrap())
                    } else {
                        dest.clone()
                    };
                    copy_recursively(&from, &to);
                }
            }
            "RUN" if in_workdir => {
                runs += 1;
                // As Docker runs a shell-form RUN: /bin/sh -c (dash on Debian).
                let out = Command::new("/bin/sh")
                    .args(["-c", &i.args])
                    .current_dir(&src)
                    .env("PATH", &path)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "RUN {}\nfailed here: {}{}",
                    i.args,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            "COPY" | "RUN" => panic!("{} before WORKDIR in the build stage", i.keyword),
            _ => {}
        }
    }
    assert_eq!(runs, 2, "a dependency layer, then the real build");

    // Two builds, the same command both times: the first over the stub crate.
    let calls = std::fs::read_to_string(&calls).expect("the build stage ran cargo");
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(
        calls,
        [
            "build --release --locked --bin tributary",
            "build --release --locked --bin tributary"
        ]
    );
    // `--locked` needs the lock file in the repository, not only on this machine.
    let tracked = Command::new("git")
        .args(["ls-files", "--error-unmatch", "Cargo.lock"])
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert!(tracked.status.success(), "Cargo.lock is not committed");
    // `--bin tributary` names the binary target of the manifest that was copied.
    for n in 1..=2 {
        let metadata: Value =
            serde_json::from_slice(&std::fs::read(src.join(format!("metadata-{n}.json"))).unwrap())
                .unwrap();
        let bins: Vec<&str> = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == "tributary")
            .flat_map(|p| p["targets"].as_array().unwrap())
            .filter(|t| t["kind"] == json!(["bin"]))
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(bins, ["tributary"]);
    }

    // The runtime stage copies the binary from where the build left it.
    let runtime = stages.last().unwrap();
    let (_, sources, dest) = runtime
        .all("COPY")
        .into_iter()
        .map(copy_parts)
        .find(|(from, _, _)| from.as_deref() == Some("build"))
        .expect("COPY --from=build");
    assert_eq!(dest, "/usr/local/bin/tributary");
    for s in sources {
        let relative = s
            .strip_prefix(&format!("{workdir_in_image}/"))
            .unwrap_or_else(|| panic!("COPY --from=build {s}: outside WORKDIR"));
        assert!(
            src.join(relative).is_file(),
            "COPY --from=build {s}: not built"
        );
    }
}

fn copy_recursively(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_recursively(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}
