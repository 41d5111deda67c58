//! `tributary check` on the `listener:` section: the checked-in bridge.yaml prints the listener
//! line; no MQTT face at all, or `tls.listen` without its files, exits 2 saying what to add.

use crate::common::*;
use crate::support;

#[test]
fn check_prints_the_listener_line_of_the_checked_in_bridge_yaml() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bridge.yaml");
    let out = check(&path);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.lines().any(|l| l
            == "listener: mqtt://127.0.0.1:1883 (MQTT 5 and 3.1.1; anonymous; up to 10000 connections, 1024 in flight each)"),
        "{out:?}"
    );
    assert!(
        !out.stdout.contains("\nmqtt: "),
        "no broker client: {out:?}"
    );
}

#[test]
fn check_without_an_mqtt_face_or_with_tls_files_missing_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let faceless = format!(
        "log: {{ embedded: {{ dir: DATA_DIR, kafka_listener: null }} }}\nhttp: {{ listen: null }}\n{ROUTES}"
    );
    let out = check(&write_config(dir.path(), "faceless.yaml", &faceless));
    assert_eq!(out.code(), Some(2), "{out:?}");
    for needle in ["no MQTT face", "add `listener:`", "`mqtt:`"] {
        assert!(out.stderr.contains(needle), "{needle}: {out:?}");
    }

    let listen = format!("\"127.0.0.1:{}\"", support::free_port());
    let tls = format!(
        ", tls: {{ listen: \"127.0.0.1:{}\" }}",
        support::free_port()
    );
    let out = check(&write_config(
        dir.path(),
        "tls-no-files.yaml",
        &config(&listen, &tls, None),
    ));
    assert_eq!(out.code(), Some(2), "{out:?}");
    for needle in ["listener.tls", "cert_file", "key_file"] {
        assert!(out.stderr.contains(needle), "{needle}: {out:?}");
    }
    // A key without its certificate is named as well.
    let key = dir.path().join("some.key");
    std::fs::write(&key, "not used").unwrap();
    let tls = format!(
        ", tls: {{ listen: \"127.0.0.1:{}\", key_file: \"{}\" }}",
        support::free_port(),
        key.display()
    );
    let out = check(&write_config(
        dir.path(),
        "tls-key-only.yaml",
        &config(&listen, &tls, None),
    ));
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("cert_file"), "{out:?}");
    // The plain and the TLS listener on one port.
    let tls = format!(", tls: {{ listen: {listen} }}");
    let out = check(&write_config(
        dir.path(),
        "same-port.yaml",
        &config(&listen, &tls, None),
    ));
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("listener.tls.listen") && out.stderr.contains("own port"),
        "{out:?}"
    );
}
