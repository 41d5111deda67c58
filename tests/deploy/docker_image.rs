//! The image around the binary: `.dockerignore` keeps the build context small, the
//! HEALTHCHECK passes on 200 only, and the runtime stage installs the libraries the binary
//! links.

use crate::common::BIN;
use crate::dockerfile::{dockerfile, dockerignore, exec_form, ignored, shell_words};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

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
