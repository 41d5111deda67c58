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

#[path = "deploy/gotmpl.rs"]
mod gotmpl;
mod support;

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_tributary");

fn repo(path: &str) -> PathBuf {
    Path::new(ROOT).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// =============================================================================================
// Dockerfile
// =============================================================================================

/// One instruction: its keyword (upper case) and the rest of its line, continuations joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&Instruction> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == keyword)
            .collect()
    }

    fn last(&self, keyword: &str) -> &Instruction {
        self.all(keyword)
            .pop()
            .unwrap_or_else(|| panic!("stage {:?} has no {keyword}", self.name))
    }

    /// The stage's environment: every `ENV K=V ...` (and the old `ENV K V`) form.
    fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for i in self.all("ENV") {
            if i.args.contains('=') {
                for word in shell_words(&i.args) {
                    let (k, v) = word.split_once('=').expect("ENV K=V");
                    env.insert(k.to_string(), v.to_string());
                }
            } else {
                let (k, v) = i.args.split_once(' ').expect("ENV K V");
                env.insert(k.to_string(), v.trim().to_string());
            }
        }
        env
    }
}

/// The Dockerfile's stages, with `ARG`s declared before the first `FROM` substituted into it.
fn dockerfile() -> Vec<Stage> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comment lines are dropped, also inside a continued instruction (as Docker does).
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(
        current.is_empty(),
        "Dockerfile ends inside a continued line"
    );

    let mut args = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        assert_eq!(
            keyword,
            keyword.to_uppercase(),
            "Dockerfile: instructions in upper case: {line}"
        );
        let rest = rest.split_whitespace().collect::<Vec<_>>().join(" ");
        match keyword {
            "ARG" if stages.is_empty() => {
                let (k, v) = rest.split_once('=').unwrap_or((&rest, ""));
                args.insert(k.to_string(), v.to_string());
            }
            "FROM" => {
                let mut base_and_name = rest.split(" AS ").map(str::trim);
                let mut base = base_and_name.next().unwrap().to_string();
                for (k, v) in &args {
                    base = base.replace(&format!("${{{k}}}"), v);
                }
                assert!(!base.contains('$'), "FROM {base}: an undeclared ARG");
                stages.push(Stage {
                    base,
                    name: base_and_name.next().map(String::from),
                    instructions: Vec::new(),
                });
            }
            _ => stages
                .last_mut()
                .expect("an instruction before the first FROM")
                .instructions
                .push(Instruction {
                    keyword: keyword.to_string(),
                    args: rest,
                }),
        }
    }
    stages
}

/// Splits on spaces, keeping single- and double-quoted parts together (quotes removed).
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ' ') => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// An exec-form argument (`["a", "b"]`), as Docker reads it: JSON.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("not an exec-form JSON array: {args}: {e}"))
}

/// `COPY [--from=X] [--chown=..] SRC... DEST`: (from, sources, destination).
fn copy_parts(i: &Instruction) -> (Option<String>, Vec<String>, String) {
    let mut from = None;
    let mut words: Vec<String> = Vec::new();
    for w in i.args.split_whitespace() {
        if let Some(stage) = w.strip_prefix("--from=") {
            from = Some(stage.to_string());
        } else if !w.starts_with("--") {
            words.push(w.to_string());
        }
    }
    let dest = words.pop().expect("COPY without a destination");
    (from, words, dest)
}

fn build_stage(stages: &[Stage]) -> &Stage {
    stages
        .iter()
        .find(|s| s.name.as_deref() == Some("build"))
        .expect("a stage named build")
}

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

fn dockerignore() -> Vec<String> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            assert!(!l.starts_with('!'), "exceptions are not checked here: {l}");
            l.trim_matches('/').to_string()
        })
        .collect()
}

/// Whether `.dockerignore` excludes `path` (or a file under it): the pattern forms it uses.
fn ignored(patterns: &[String], path: &str) -> bool {
    let path = path.trim_start_matches("./").trim_end_matches('/');
    patterns.iter().any(|p| {
        if let Some(suffix) = p.strip_prefix("**/*") {
            path.ends_with(suffix)
        } else {
            assert!(!p.contains('*'), "a pattern form not checked here: {p}");
            path == p || path.starts_with(&format!("{p}/"))
        }
    })
}

#[test]
fn dockerignore_keeps_the_build_context_small() {
    let patterns = dockerignore();
    for big in ["target", ".git", "data"] {
        assert!(ignored(&patterns, big), ".dockerignore lacks {big}");
    }
    for needed in ["Cargo.toml", "Cargo.lock", "src", "bridge.yaml"] {
        assert!(
            !ignored(&patterns, needed),
            ".dockerignore excludes {needed}"
        );
    }
}

/// The image's HEALTHCHECK, run here as Docker would run it (exec form, the image's
/// environment), against a stand-in server on a free port that answers `status`.
fn run_healthcheck(status: Option<&str>) -> (bool, Option<String>) {
    let stages = dockerfile();
    let runtime = stages.last().unwrap();
    let healthcheck = &runtime.last("HEALTHCHECK").args;
    let command = exec_form(&healthcheck[healthcheck.find(" CMD ").unwrap() + 5..]);
    let env = runtime.env();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = match status {
        None => {
            drop(listener); // nothing listens: connection refused
            None
        }
        Some(status) => Some({
            let status = status.to_string();
            std::thread::spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut request = Vec::new();
                let mut buf = [0; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = conn.read(&mut buf).unwrap();
                    assert!(n > 0, "the request ended early");
                    request.extend_from_slice(&buf[..n]);
                }
                conn.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok").as_bytes(),
                )
                .unwrap();
                String::from_utf8(request).unwrap()
            })
        }),
    };
    let listen = env["TRIBUTARY_HTTP__LISTEN"].replace(":9464", &format!(":{port}"));
    let out = Command::new(&command[0])
        .args(&command[1..])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(&env)
        .env("TRIBUTARY_HTTP__LISTEN", listen)
        .output()
        .unwrap();
    let request = server.map(|s| s.join().unwrap());
    (out.status.success(), request)
}

#[test]
fn healthcheck_asks_healthz_and_passes_on_200_only() {
    let (healthy, request) = run_healthcheck(Some("200 OK"));
    assert!(healthy);
    let request = request.unwrap();
    assert!(
        request.starts_with("GET /healthz HTTP/1.0\r\n"),
        "{request:?}"
    );
    assert!(!run_healthcheck(Some("503 Service Unavailable")).0);
    assert!(!run_healthcheck(None).0, "nothing listening is unhealthy");
}

/// Each shared library the binary loads comes from a Debian package the runtime stage installs,
/// or from one that every Debian image has (libc6, libgcc-s1: Priority required). The debug
/// binary links the same libraries as the release build.
#[test]
fn runtime_stage_installs_the_libraries_the_binary_links() {
    let stages = dockerfile();
    let runtime = stages.last().unwrap();
    let install = runtime
        .all("RUN")
        .into_iter()
        .find(|i| i.args.contains("apt-get install"))
        .expect("the runtime installs its libraries");
    let mut installed: BTreeSet<String> = shell_words(&install.args)
        .into_iter()
        .skip_while(|w| w != "install")
        .skip(1)
        .take_while(|w| w != "&&")
        .filter(|w| !w.starts_with('-'))
        .collect();
    assert!(installed.contains("ca-certificates"), "{installed:?}");
    installed.extend(["libc6".to_string(), "libgcc-s1".to_string()]);

    let ldd = run_ok(Command::new("ldd").arg(BIN));
    let libraries: Vec<&str> = ldd
        .lines()
        .filter_map(|l| {
            let path = l
                .split("=>")
                .nth(1)
                .unwrap_or(l)
                .split_whitespace()
                .next()?;
            path.starts_with('/').then_some(path)
        })
        .collect();
    assert!(libraries.iter().any(|l| l.contains("libssl")), "{ldd}");
    for library in libraries {
        // dpkg records some files under /usr/lib and some under /lib (merged /usr).
        let owner = [library.to_string(), format!("/usr{library}")]
            .into_iter()
            .chain(library.strip_prefix("/usr").map(String::from))
            .find_map(|path| {
                let out = Command::new("dpkg").args(["-S", &path]).output().ok()?;
                out.status.success().then(|| {
                    String::from_utf8_lossy(&out.stdout)
                        .split(':')
                        .next()
                        .unwrap()
                        .to_string()
                })
            })
            .unwrap_or_else(|| panic!("{library}: no Debian package owns it"));
        assert!(
            installed.contains(&owner),
            "the binary loads {library} from {owner}, which the runtime stage does not install"
        );
    }
}

fn run_ok(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

// =============================================================================================
// YAML and JSON files, bridge.yaml configs
// =============================================================================================

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn yaml_documents(text: &str, origin: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            let value: serde_yaml::Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{origin}: invalid YAML: {e}"));
            serde_json::to_value(value).unwrap_or_else(|e| panic!("{origin}: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn json_file(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: invalid JSON: {e}"))
}

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let mut files = vec![repo("bridge.yaml")];
    files_under(&repo("deploy"), &mut files);
    let templates = repo("deploy/helm/tributary/templates");
    let mut parsed = 0;
    for path in files {
        let name = path.strip_prefix(ROOT).unwrap().display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        match path.extension().and_then(|e| e.to_str()) {
            // Go templates, not YAML yet: rendered and parsed in helm_chart_* below.
            _ if path.starts_with(&templates) => continue,
            Some("yaml" | "yml") => {
                assert!(!yaml_documents(&text, &name).is_empty(), "{name}: empty");
            }
            Some("json") => {
                serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|e| panic!("{name}: invalid JSON: {e}"));
            }
            _ => continue,
        }
        parsed += 1;
    }
    // bridge.yaml, bridge-kafka.yaml, compose.yaml, compose-kafka.yaml, sidecar.yaml,
    // Chart.yaml, values.yaml, the dashboard (and any file added later).
    assert!(parsed >= 8, "{parsed} files");
}

/// `tributary check -c FILE` (or the given arguments with `run` turned into `check`) with only
/// `env` set among TRIBUTARY_* variables, as the container has them; the log directory is a
/// temporary one (a /data on this machine must not matter).
fn check_config(origin: &str, yaml: &str, env: &BTreeMap<String, String>, args: Option<&[String]>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridge.yaml");
    std::fs::write(&file, yaml).unwrap();
    let file = file.display().to_string();
    let args: Vec<String> = match args {
        None => vec!["check".into(), "-c".into(), file],
        Some(args) => {
            let mut args = args.to_vec();
            let config = args
                .iter()
                .position(|a| a == "-c" || a == "--config")
                .unwrap_or_else(|| panic!("{origin}: no -c in {args:?}"));
            args[config + 1] = file;
            let run = args.iter().position(|a| a == "run").expect("run");
            args[run] = "check".into();
            args
        }
    };
    let mut command = Command::new(BIN);
    command.args(&args).current_dir(dir.path());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TRIBUTARY_")) {
        command.env_remove(k);
    }
    command.envs(env);
    command.env(
        "TRIBUTARY_LOG__EMBEDDED__DIR",
        dir.path().join("data").display().to_string(),
    );
    let out: Output = command.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{origin}: `tributary {}` refused it:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The container's literal `TRIBUTARY_*` and `RUST_LOG` variables (those from Secrets are
/// left out: a password changes nothing `check` decides).
fn container_env(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn container_args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn bridge_configs_in_files_pass_check_with_the_image_environment() {
    let image_env = dockerfile().last().unwrap().env();
    let mut files = vec![repo("bridge.yaml")];
    files_under(&repo("deploy"), &mut files);
    let mut checked = 0;
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy();
        if name.starts_with("bridge") && name.ends_with(".yaml") {
            let origin = path.strip_prefix(ROOT).unwrap().display().to_string();
            check_config(
                &origin,
                &std::fs::read_to_string(&path).unwrap(),
                &image_env,
                None,
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "bridge.yaml and deploy/bridge-kafka.yaml at least"
    );
}

#[test]
fn compose_files_mount_files_that_exist() {
    for compose in ["deploy/compose.yaml", "deploy/compose-kafka.yaml"] {
        let doc = &yaml_documents(&read(compose), compose)[0];
        for (name, service) in doc["services"].as_object().unwrap() {
            for volume in service["volumes"].as_array().into_iter().flatten() {
                let host = volume.as_str().unwrap().split(':').next().unwrap();
                if host.starts_with('.') {
                    let path = repo("deploy").join(host);
                    assert!(path.exists(), "{compose}: {name} mounts {host}: missing");
                }
            }
        }
    }
}

// =============================================================================================
// Kubernetes sidecar example
// =============================================================================================

fn by_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

fn container<'a>(statefulset: &'a Value, name: &str) -> &'a Value {
    statefulset["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// What every Tributary pod spec must have, in the example and in the chart's output: the
/// probes on the HTTP port the gateway listens on, the scrape annotations pointing there
/// (when `annotations`), the config from the ConfigMap, the log on the `data` volume, non-root.
fn check_pod(origin: &str, statefulset: &Value, configmap: &Value, annotations: bool) {
    let pod = &statefulset["spec"]["template"];
    let tributary = container(statefulset, "tributary");
    let env = container_env(tributary);

    let http_port = tributary["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .expect("a port named http")["containerPort"]
        .as_u64()
        .unwrap();
    // The listen address is the image's (0.0.0.0:9464) unless the pod sets its own.
    let listen = env
        .get("TRIBUTARY_HTTP__LISTEN")
        .cloned()
        .unwrap_or_else(|| dockerfile().last().unwrap().env()["TRIBUTARY_HTTP__LISTEN"].clone());
    assert_eq!(listen, format!("0.0.0.0:{http_port}"), "{origin}");

    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &tributary[probe]["httpGet"];
        assert_eq!(get["path"], path, "{origin}: {probe}");
        assert!(
            get["port"] == "http" || get["port"] == http_port,
            "{origin}: {probe} on {}",
            get["port"]
        );
    }

    let annotations_found = &pod["metadata"]["annotations"];
    if annotations {
        assert_eq!(
            annotations_found["prometheus.io/scrape"], "true",
            "{origin}"
        );
        assert_eq!(
            annotations_found["prometheus.io/port"],
            http_port.to_string(),
            "{origin}: quoted, the port the gateway listens on"
        );
        assert_eq!(
            annotations_found["prometheus.io/path"], "/metrics",
            "{origin}"
        );
    } else {
        assert!(annotations_found.get("prometheus.io/scrape").is_none());
    }

    // bridge.yaml from the ConfigMap, at the path the arguments give.
    let args = container_args(tributary);
    let config_path = &args[args.iter().position(|a| a == "-c").unwrap() + 1];
    let mounts = tributary["volumeMounts"].as_array().unwrap();
    let mount_of = |volume: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("{origin}: {volume} is not mounted"))["mountPath"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        format!("{}/bridge.yaml", mount_of("config")),
        *config_path,
        "{origin}"
    );
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    let config_volume = volumes.iter().find(|v| v["name"] == "config").unwrap();
    assert_eq!(
        config_volume["configMap"]["name"], configmap["metadata"]["name"],
        "{origin}"
    );
    // The log on the data volume, where the image keeps it.
    assert_eq!(mount_of("data"), "/data", "{origin}");

    let security = &pod["spec"]["securityContext"];
    assert_eq!(security["runAsNonRoot"], true, "{origin}");
    assert_eq!(
        security["fsGroup"], 10001,
        "{origin}: the volume writable by the image's user"
    );

    // The config passes `check` as this container would run it.
    let mut env_all = dockerfile().last().unwrap().env();
    env_all.extend(env);
    let yaml = configmap["data"]["bridge.yaml"]
        .as_str()
        .expect("data.bridge.yaml");
    check_config(origin, yaml, &env_all, Some(&args));
}

#[test]
fn kubernetes_sidecar_example() {
    let origin = "deploy/kubernetes/sidecar.yaml";
    let docs = yaml_documents(&read(origin), origin);
    let statefulset = by_kind(&docs, "StatefulSet");
    let configmap = by_kind(&docs, "ConfigMap");
    check_pod(origin, statefulset, configmap, true);

    // The log on a claim per pod, and a governing Service that exists.
    let claims = statefulset["spec"]["volumeClaimTemplates"]
        .as_array()
        .unwrap();
    assert_eq!(claims[0]["metadata"]["name"], "data");
    let service = by_kind(&docs, "Service");
    assert_eq!(
        service["metadata"]["name"],
        statefulset["spec"]["serviceName"]
    );
    assert!(
        container(statefulset, "app")["env"]
            .to_string()
            .contains("127.0.0.1:9092"),
        "the application reads the log over the Kafka API in the pod"
    );
}

// =============================================================================================
// Helm chart
// =============================================================================================

const CHART: &str = "deploy/helm/tributary";

/// Renders the chart as `helm template RELEASE CHART` would, with `overrides` merged over
/// values.yaml: every template but the `_` helpers, by file name.
fn render_chart(release: &str, overrides: Value) -> BTreeMap<String, String> {
    let chart: Value =
        yaml_documents(&read(&format!("{CHART}/Chart.yaml")), "Chart.yaml").remove(0);
    let mut values =
        yaml_documents(&read(&format!("{CHART}/values.yaml")), "values.yaml").remove(0);
    merge(&mut values, overrides);
    let root = json!({
        "Values": values,
        "Release": { "Name": release, "Namespace": "iot", "Service": "Helm" },
        "Chart": {
            "Name": chart["name"],
            "Version": chart["version"],
            "AppVersion": chart["appVersion"],
        },
    });
    let mut engine = gotmpl::Engine::default();
    let mut files = Vec::new();
    files_under(&repo(&format!("{CHART}/templates")), &mut files);
    files.sort();
    let mut sources = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let nodes = engine
            .parse(&text)
            .unwrap_or_else(|e| panic!("templates/{name}: {e}"));
        sources.push((name, nodes));
    }
    sources
        .into_iter()
        .filter(|(name, _)| !name.starts_with('_'))
        .map(|(name, nodes)| {
            let out = engine
                .render(&nodes, &root, &root)
                .unwrap_or_else(|e| panic!("templates/{name}: {e}"));
            (name, out)
        })
        .collect()
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (k, v) in over {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, over) => *base = over,
    }
}

fn rendered_docs(rendered: &BTreeMap<String, String>) -> Vec<Value> {
    rendered
        .iter()
        .filter(|(name, _)| name.ends_with(".yaml"))
        .flat_map(|(name, text)| yaml_documents(text, &format!("rendered templates/{name}")))
        .collect()
}

#[test]
fn helm_chart_renders_a_statefulset_configmap_and_service() {
    let rendered = render_chart("telemetry", json!({}));
    let docs = rendered_docs(&rendered);
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["ConfigMap", "Service", "StatefulSet"])
    );
    for doc in &docs {
        assert_eq!(doc["metadata"]["name"], "telemetry-tributary");
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/instance"],
            "telemetry"
        );
        assert_eq!(
            doc["metadata"]["labels"]["helm.sh/chart"],
            "tributary-0.1.0"
        );
    }
    let statefulset = by_kind(&docs, "StatefulSet");
    let configmap = by_kind(&docs, "ConfigMap");
    check_pod("helm chart", statefulset, configmap, true);

    // The config is values.config, whole.
    let values = yaml_documents(&read(&format!("{CHART}/values.yaml")), "values.yaml").remove(0);
    let bridge = configmap["data"]["bridge.yaml"].as_str().unwrap();
    assert_eq!(yaml_documents(bridge, "bridge.yaml")[0], values["config"]);

    let tributary = container(statefulset, "tributary");
    assert_eq!(tributary["image"], "registry.example.com/tributary:0.1.0");
    assert_eq!(tributary["resources"], values["resources"]);
    let selector = &statefulset["spec"]["selector"]["matchLabels"];
    assert_eq!(
        &statefulset["spec"]["template"]["metadata"]["labels"], selector,
        "the pods carry the selector's labels"
    );
    assert_eq!(by_kind(&docs, "Service")["spec"]["selector"], *selector);
    let claim = &statefulset["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "10Gi");
    assert!(claim["spec"].get("storageClassName").is_none());
    let checksum = statefulset["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        .as_str()
        .unwrap();
    assert_eq!(checksum.len(), 64, "a SHA-256 of the config: {checksum}");

    let notes = &rendered["NOTES.txt"];
    assert!(
        notes.contains("statefulset/telemetry-tributary 9464"),
        "{notes}"
    );
    assert!(!notes.contains("WARNING"), "{notes}");
}

#[test]
fn helm_chart_values_change_what_they_say() {
    let rendered = render_chart(
        "edge",
        json!({
            "fullnameOverride": "bridge",
            "image": { "tag": "0.2.0" },
            "logFormat": "json",
            "service": { "ports": { "http": 9100, "kafka": 19092 } },
            "metrics": { "annotations": false },
            "persistence": { "enabled": false, "storageClass": "fast" },
            "mqttPasswordSecret": { "name": "mqtt" },
            "extraEnv": [{ "name": "TRIBUTARY_MQTT__KEEP_ALIVE", "value": "10s" }],
            "nodeSelector": { "disktype": "ssd" },
            "podAnnotations": { "team": "iot" },
            "config": { "mqtt": { "max_inflight": 256 } },
        }),
    );
    let docs = rendered_docs(&rendered);
    let statefulset = by_kind(&docs, "StatefulSet");
    let configmap = by_kind(&docs, "ConfigMap");
    assert_eq!(statefulset["metadata"]["name"], "bridge");
    check_pod("helm chart with overrides", statefulset, configmap, false);

    let tributary = container(statefulset, "tributary");
    assert_eq!(tributary["image"], "registry.example.com/tributary:0.2.0");
    assert_eq!(
        container_args(tributary),
        [
            "run",
            "-c",
            "/etc/tributary/bridge.yaml",
            "--log-format",
            "json"
        ]
    );
    let env = container_env(tributary);
    assert_eq!(env["TRIBUTARY_HTTP__LISTEN"], "0.0.0.0:9100");
    assert_eq!(
        env["TRIBUTARY_LOG__EMBEDDED__KAFKA_LISTENER"],
        "0.0.0.0:19092"
    );
    assert_eq!(env["TRIBUTARY_MQTT__KEEP_ALIVE"], "10s");
    let secret = tributary["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "TRIBUTARY_MQTT__PASSWORD")
        .expect("the password from the Secret");
    assert_eq!(
        secret["valueFrom"]["secretKeyRef"],
        json!({ "name": "mqtt", "key": "password" })
    );
    let pod = &statefulset["spec"]["template"];
    assert_eq!(pod["metadata"]["annotations"]["team"], "iot");
    assert_eq!(pod["spec"]["nodeSelector"], json!({ "disktype": "ssd" }));
    // No claim: an emptyDir, and NOTES.txt says what that costs.
    assert!(statefulset["spec"].get("volumeClaimTemplates").is_none());
    let data = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "data")
        .expect("a data volume");
    assert_eq!(data["emptyDir"], json!({}));
    assert!(rendered["NOTES.txt"].contains("WARNING: persistence.enabled is false"));
    let service = by_kind(&docs, "Service");
    let ports: Vec<u64> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [19092, 9100]);
    let bridge =
        yaml_documents(configmap["data"]["bridge.yaml"].as_str().unwrap(), "bridge").remove(0);
    assert_eq!(bridge["mqtt"]["max_inflight"], 256);
    assert_eq!(
        bridge["mqtt"]["url"], "mqtt://mosquitto:1883",
        "merged over the defaults"
    );
}

#[test]
fn helm_chart_storage_class_is_used_when_set() {
    let docs = rendered_docs(&render_chart(
        "t",
        json!({ "persistence": { "storageClass": "fast", "size": "50Gi" } }),
    ));
    let claim = &by_kind(&docs, "StatefulSet")["spec"]["volumeClaimTemplates"][0]["spec"];
    assert_eq!(claim["storageClassName"], "fast");
    assert_eq!(claim["resources"]["requests"]["storage"], "50Gi");
}

/// Helm's own lint (Helm v4's Go library, from PyPI's helm-sdkpy): the chart file, the values
/// and every template rendered with them as YAML. Infos (no icon) are fine; warnings are not.
#[test]
fn helm_lint_passes() {
    let python = support::require(
        &std::env::var("TRIBUTARY_PYTHON").unwrap_or_else(|_| "python3".into()),
        "apt-get install -y python3 python3-pip",
    );
    let out = Command::new(python)
        .arg(repo("tests/python/helm_lint.py"))
        .arg(repo(CHART))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "helm lint could not run: {stderr}");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems: Vec<&Value> = result["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_u64().unwrap() >= 2)
        .collect();
    assert!(
        problems.is_empty(),
        "helm lint ({}): {problems:?} (severity 2 warning, 3 error; the library drops the \
         message text: the helm_chart_* tests render the same templates and say more)",
        result["library"]
    );
}

// =============================================================================================
// Grafana dashboard
// =============================================================================================

/// DESIGN §9's metrics and their labels.
const METRICS: &[(&str, &str, &[&str])] = &[
    ("tributary_messages_received_total", "counter", &["face"]),
    ("tributary_messages_acked_total", "counter", &["face"]),
    ("tributary_messages_unrouted_total", "counter", &[]),
    ("tributary_records_appended_total", "counter", &["topic"]),
    ("tributary_dead_letters_total", "counter", &["reason"]),
    ("tributary_inflight_messages", "gauge", &[]),
    ("tributary_mqtt_connected", "gauge", &[]),
    ("tributary_listener_connections", "gauge", &[]),
    ("tributary_append_duration_seconds", "histogram", &[]),
    ("tributary_ack_latency_seconds", "histogram", &[]),
    ("tributary_sink_errors_total", "counter", &["reason"]),
    ("tributary_log_end_offset", "gauge", &["topic", "partition"]),
    ("tributary_kafka_forward_lag_records", "gauge", &["topic"]),
    ("tributary_egress_delivered_total", "counter", &["route"]),
    ("tributary_consumer_group_lag", "gauge", &["group", "topic"]),
];

/// The labels every scraped series has, besides the metric's own.
const TARGET_LABELS: &[&str] = &["instance", "job"];

/// The metric a series name belongs to, and its labels (a histogram's series add `le`).
fn metric_of(series: &str) -> Option<(&'static str, Vec<&'static str>)> {
    METRICS.iter().find_map(|(name, kind, labels)| {
        let mut labels = labels.to_vec();
        if series == *name && *kind != "histogram" {
            return Some((*name, labels));
        }
        let suffix = series.strip_prefix(name)?;
        if *kind == "histogram" && ["_bucket", "_sum", "_count"].contains(&suffix) {
            if suffix == "_bucket" {
                labels.push("le");
            }
            return Some((*name, labels));
        }
        None
    })
}

fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        out.push(panel);
        for inner in panel["panels"].as_array().into_iter().flatten() {
            out.push(inner);
        }
    }
    out
}

/// The label names in `by (...)`, `without (...)`, `on (...)`, `ignoring (...)` and in
/// `{...}` matchers of a PromQL expression.
fn labels_used(expr: &str) -> Vec<String> {
    let mut labels = Vec::new();
    for keyword in ["by", "without", "on", "ignoring"] {
        let mut rest = expr;
        while let Some(at) = rest.find(&format!("{keyword} (")) {
            let start = at + keyword.len() + 2;
            let word_start =
                at == 0 || !rest[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
            if !word_start {
                rest = &rest[start..];
                continue;
            }
            let end = start + rest[start..].find(')').unwrap();
            labels.extend(rest[start..end].split(',').map(|l| l.trim().to_string()));
            rest = &rest[end..];
        }
    }
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}').expect("unclosed {");
        for matcher in rest[open + 1..close]
            .split(',')
            .filter(|m| !m.trim().is_empty())
        {
            let name: String = matcher
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            labels.push(name);
        }
        rest = &rest[close + 1..];
    }
    labels.into_iter().filter(|l| !l.is_empty()).collect()
}

#[test]
fn grafana_dashboard_queries_only_design_metrics() {
    let path = "deploy/grafana/tributary.json";
    let dashboard = json_file(path);
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["uid"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["schemaVersion"].as_u64().is_some());

    // Template variables the queries use exist.
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(variables.contains("datasource"), "{variables:?}");

    let mut used = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{title}: gridPos");
        if panel["type"] == "row" {
            continue;
        }
        titles.push(title);
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            !panel["description"].as_str().unwrap_or("").is_empty(),
            "{title}: a description of what to look at"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let mut depth = 0i32;
            for c in expr.chars() {
                depth += match c {
                    '(' | '[' | '{' => 1,
                    ')' | ']' | '}' => -1,
                    _ => 0,
                };
                assert!(depth >= 0, "{title}: unbalanced: {expr}");
            }
            assert_eq!(depth, 0, "{title}: unbalanced: {expr}");
            for variable in expr.match_indices('$').map(|(i, _)| {
                expr[i + 1..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            }) {
                if variable != "__rate_interval" {
                    assert!(
                        variables.contains(variable.as_str()),
                        "{title}: ${variable}"
                    );
                }
            }
            let series: Vec<&str> = expr
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("tributary_"))
                .collect();
            assert!(!series.is_empty(), "{title}: no tributary metric in {expr}");
            let mut allowed: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
            for s in series {
                let (metric, labels) = metric_of(s)
                    .unwrap_or_else(|| panic!("{title}: {s} is not in DESIGN §9's table"));
                used.insert(metric);
                allowed.extend(labels);
            }
            for label in labels_used(expr) {
                assert!(
                    allowed.contains(label.as_str()),
                    "{title}: label {label} is not one of {allowed:?}: {expr}"
                );
            }
        }
    }

    // The panels the README describes.
    for metric in [
        "tributary_messages_received_total",
        "tributary_ack_latency_seconds",
        "tributary_inflight_messages",
        "tributary_dead_letters_total",
        "tributary_sink_errors_total",
        "tributary_mqtt_connected",
        "tributary_consumer_group_lag",
        "tributary_kafka_forward_lag_records",
        "tributary_log_end_offset",
    ] {
        assert!(used.contains(metric), "no panel shows {metric}");
    }
    let readme = read("README.md");
    for title in titles {
        assert!(
            readme.contains(&format!("**{title}**")),
            "README's Dashboard section does not describe the panel {title:?}"
        );
    }
}
