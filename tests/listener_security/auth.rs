//! `listener.auth`: a users file with an argon2id line from the real `tributary passwd` and a
//! bcrypt line; with anonymous access off only the right password gets in, every refusal has
//! its exact CONNACK code, and nothing a refused client sent is stored.

use crate::common::*;
use crate::support;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// alice's password: her line comes from `tributary passwd alice` (argon2id).
const ALICE: &str = "s3cret-alice";
/// bob's password: his line is a bcrypt hash (as `htpasswd -B` writes).
const BOB: &str = "hunter2-bob";

/// `tributary passwd USER` with the password on stdin; returns its one line.
fn passwd(user: &str, password: &str) -> String {
    let out = run(
        Command::new(support::BIN).args(["passwd", user]),
        format!("{password}\n").as_bytes(),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "tributary passwd {user}: {out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "one line: {out:?}");
    assert!(
        !out.stdout.contains(password) && !out.stderr.contains(password),
        "the password is never printed: {out:?}"
    );
    out.stdout.trim_end().to_string()
}

fn users_file(dir: &Path) -> PathBuf {
    let alice = passwd("alice", ALICE);
    assert!(alice.starts_with("alice:$argon2id$"), "{alice}");
    let bob = bcrypt::hash(BOB, 4).unwrap();
    assert!(bob.starts_with("$2b$04$") && bob.len() == 60, "{bob}");
    let path = dir.join("users");
    std::fs::write(&path, format!("# devices\n{alice}\n\nbob:{bob}\n")).unwrap();
    path
}

fn auth_fields(users: &Path, anonymous: bool) -> String {
    format!(
        ", auth: {{ allow_anonymous: {anonymous}, users_file: \"{}\" }}",
        users.display()
    )
}

/// paho-mqtt (MQTT 5) connects with `login` and prints the CONNACK reason code; on success it
/// publishes `payload` at QoS 1 and waits for the PUBACK.
const PAHO: &str = r#"
import sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, user, password, payload = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-" + payload, protocol=mqtt.MQTTv5)
if user:
    c.username_pw_set(user, password)
codes = []
c.on_connect = lambda client, userdata, flags, reason, properties: codes.append(reason.value)
c.connect("127.0.0.1", port, keepalive=30)
deadline = time.time() + 10
while not codes and time.time() < deadline:
    c.loop(0.1)
print(codes[0] if codes else "none", flush=True)
if codes and codes[0] == 0:
    info = c.publish("devices/paho/telemetry/t", payload, qos=1)
    while not info.is_published() and time.time() < deadline:
        c.loop(0.1)
    print("published" if info.is_published() else "not published", flush=True)
    c.disconnect()
"#;

fn paho(port: u16, user: &str, password: &str, payload: &str) -> String {
    let python = support::require_python(&[("paho.mqtt", "paho-mqtt")]);
    let mut cmd = Command::new(python);
    cmd.args(["-c", PAHO, &port.to_string(), user, password, payload])
        .env_remove("LD_LIBRARY_PATH");
    let out = run(&mut cmd, b"", Duration::from_secs(30));
    assert!(out.status.success(), "paho: {out:?}");
    out.stdout.trim().to_string()
}

#[test]
fn only_the_right_password_connects_and_refused_clients_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let server = Server::start(&auth_fields(&users, false));
    let port = server.port;

    // Refusals, byte for byte: CONNACK with the code, then the close. A QoS 1 PUBLISH sent
    // right behind the CONNECT (before any answer) gets no PUBACK and is not stored.
    let refusals = [
        (true, "alice-wrong-5", Some(("alice", "nope")), 0x86),
        (false, "alice-wrong-4", Some(("alice", "nope")), 4),
        (true, "bob-wrong-5", Some(("bob", ALICE)), 0x86),
        (false, "bob-wrong-4", Some(("bob", "hunter2")), 4),
        (true, "alice-as-bob-5", Some(("alice", BOB)), 0x86),
        (true, "mallory-5", Some(("mallory", ALICE)), 0x86),
        (false, "mallory-4", Some(("mallory", BOB)), 4),
        (true, "anonymous-5", None, 0x87),
        (false, "anonymous-4", None, 5),
    ];
    for (v5, id, login, code) in refusals {
        // With a will too: a refused client has no session, so no will either.
        let mut hello = Hello::version(v5, id).will(&format!("devices/{id}/status"), id, 0);
        if let Some((user, password)) = login {
            hello = hello.login(user, password);
        }
        let mut raw = Raw::open(port, v5);
        let mut bytes = hello.bytes();
        bytes.extend(publish_bytes(
            v5,
            &format!("devices/{id}/telemetry/x"),
            id,
            1,
            None,
        ));
        raw.send(&bytes);
        let connack = raw.packet("CONNACK");
        assert_eq!(connack_code(&connack), code, "{id}: {connack:?}");
        assert_eq!(connack.body[0], 0, "{id}: no session present on a refusal");
        if !v5 {
            assert_eq!(connack.wire(), vec![0x20, 2, 0, code], "{id}");
        }
        raw.closed(ANSWER, id);
    }

    // Real clients refused: mosquitto_pub fails, paho sees the MQTT 5 reason codes.
    for (version, extra, what) in [
        ("5", vec!["-u", "alice", "-P", "nope"], "mosq-wrong-5"),
        ("311", vec!["-u", "bob", "-P", "nope"], "mosq-wrong-311"),
        ("5", vec![], "mosq-anonymous-5"),
        ("311", vec![], "mosq-anonymous-311"),
    ] {
        let out = pub_one(port, version, "devices/m/telemetry/x", what, &extra);
        assert!(!out.status.success(), "{what}: {out:?}");
        let expected = if extra.is_empty() {
            "not authori" // "not authorised" (3.1.1), "Not authorized" (5)
        } else {
            "bad user name or password"
        };
        assert!(
            out.stderr.to_lowercase().contains(expected),
            "{what}: {out:?}"
        );
    }
    assert_eq!(paho(port, "alice", "nope", "paho-wrong"), "134");
    assert_eq!(paho(port, "", "", "paho-anonymous"), "135");

    // The right passwords, argon2id and bcrypt, each from both versions.
    for (version, user, password) in [
        ("5", "alice", ALICE),
        ("311", "alice", ALICE),
        ("5", "bob", BOB),
        ("311", "bob", BOB),
    ] {
        let what = format!("{user}-{version}");
        let out = pub_one(
            port,
            version,
            &format!("devices/{user}/telemetry/t"),
            &what,
            &["-u", user, "-P", password],
        );
        assert!(out.status.success(), "{what}: {out:?}\n{}", server.gw.log());
    }
    assert_eq!(paho(port, "bob", BOB, "paho-bob"), "0\npublished");
    let mut raw = Raw::connect(port, &Hello::v5("raw-alice").login("alice", ALICE));
    raw.publish("devices/alice/telemetry/raw", "raw-alice");
    raw.disconnect();

    // Every accepted publish was acked, so stored; nothing of the refused ones is, and no
    // will of theirs (it would have gone at once, long before these acks).
    assert_eq!(
        server.values("telemetry"),
        [
            "alice-311",
            "alice-5",
            "bob-311",
            "bob-5",
            "paho-bob",
            "raw-alice"
        ]
    );
    assert_eq!(server.values("status"), Vec::<String>::new());
}

#[test]
fn with_anonymous_allowed_a_named_user_is_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let server = Server::start(&auth_fields(&users, true));
    for v5 in [true, false] {
        let id = format!("anon-{v5}");
        let mut raw = Raw::connect(server.port, &Hello::version(v5, &id));
        raw.publish("devices/anon/telemetry/t", &id);
        raw.disconnect();
        let (mut raw, connack) = Raw::hello(
            server.port,
            &Hello::version(v5, "named").login("alice", "wrong"),
        );
        assert_eq!(connack_code(&connack), if v5 { 0x86 } else { 4 });
        raw.closed(ANSWER, "a wrong password with anonymous access on");
        let mut raw = Raw::connect(server.port, &Hello::version(v5, "named").login("bob", BOB));
        raw.publish("devices/bob/telemetry/t", &format!("bob-{v5}"));
        raw.disconnect();
    }
    assert_eq!(
        server.values("telemetry"),
        ["anon-false", "anon-true", "bob-false", "bob-true"]
    );
}

#[test]
fn passwd_refuses_bad_input_and_check_names_bad_users_files() {
    for (user, stdin) in [("alice", "\n"), ("a:b", "pw\n"), (" alice", "pw\n")] {
        let out = run(
            Command::new(support::BIN).args(["passwd", user]),
            stdin.as_bytes(),
            Duration::from_secs(30),
        );
        assert!(!out.status.success(), "passwd {user:?}: {out:?}");
        assert!(out.stdout.is_empty(), "no line printed: {out:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let listen = format!("\"127.0.0.1:{port}\"");
    // allow_anonymous false with no users file.
    let path = write_config(
        dir.path(),
        "no-users.yaml",
        &config(&listen, ", auth: { allow_anonymous: false }", None),
    );
    let out = check(&path);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("listener.auth.users_file"), "{out:?}");
    // A line that is not user:<hash>, and a plain-text password.
    let users = dir.path().join("users");
    let good = passwd("alice", ALICE);
    std::fs::write(&users, format!("{good}\nbob\ncarol:plaintext\n")).unwrap();
    let path = write_config(
        dir.path(),
        "bad-users.yaml",
        &config(&listen, &auth_fields(&users, false), None),
    );
    let out = check(&path);
    assert_eq!(out.code(), Some(2), "{out:?}");
    for needle in ["listener.auth.users_file", "line 2", "line 3", "carol"] {
        assert!(out.stderr.contains(needle), "{needle}: {out:?}");
    }
    assert!(
        !out.stderr.contains(&good[6..]) && !out.stderr.contains("plaintext"),
        "no hash or password printed: {out:?}"
    );
    // A good file checks, and the listener line says where users come from.
    std::fs::write(&users, format!("{good}\n")).unwrap();
    let out = check(&path);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "listener: mqtt://127.0.0.1:{port} (MQTT 5 and 3.1.1; users from {};",
            users.display()
        )),
        "{out:?}"
    );
}
