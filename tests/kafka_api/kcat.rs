//! kcat lists the topics and consumes exactly the records the log holds.

use crate::clients::kcat;
use crate::records::{append_dataset, timestamp, Rec};
use crate::server::{assert_no_library_panics, blocking, Server};
use tributary::kafka_api::ServerOptions;

#[tokio::test(flavor = "multi_thread")]
async fn kcat_lists_and_consumes_exact_records() {
    let server = Server::start(ServerOptions::default()).await;
    let expected = append_dataset(&server.log, "kcat", 2, 25, true).await;
    let (bootstrap, port) = (server.bootstrap(), server.addr.port());
    blocking(move || {
        let listing = kcat(&["-L", "-b", &bootstrap]);
        let want = format!(
            " 1 brokers:\n  broker 0 at 127.0.0.1:{port} (controller)\n 1 topics:\n  topic \"kcat\" with 2 partitions:\n    partition 0, leader 0, replicas: 0, isrs: 0\n    partition 1, leader 0, replicas: 0, isrs: 0\n"
        );
        assert!(listing.ends_with(&want), "kcat -L:\n{listing}");

        // The whole topic (partitions interleave, so compare sorted)...
        let out = kcat(&["-C", "-b", &bootstrap, "-t", "kcat", "-o", "beginning", "-e", "-q", "-f", "%k=%s\n"]);
        let mut got: Vec<&str> = out.lines().collect();
        got.sort_unstable();
        let mut want: Vec<String> = expected.iter().map(Rec::kcat_line).collect();
        want.sort();
        assert_eq!(got, want);

        // ...each partition in order, with offsets, timestamps and headers...
        for p in 0..2 {
            let out = kcat(&["-C", "-b", &bootstrap, "-t", "kcat", "-p", &p.to_string(), "-o", "beginning", "-e", "-q", "-f", "%p:%o:%T:%k=%s|%h\n"]);
            let want: Vec<String> = expected
                .iter()
                .filter(|r| r.partition == p)
                .map(|r| {
                    let headers: Vec<String> = r.headers.iter().map(|(k, v)| format!("{k}={}", String::from_utf8(v.clone().unwrap()).unwrap())).collect();
                    format!("{}:{}:{}:{}|{}", r.partition, r.offset, r.timestamp, r.kcat_line(), headers.join(","))
                })
                .collect();
            assert_eq!(out.lines().collect::<Vec<_>>(), want, "partition {p}");
        }

        // ...from an offset, and from a time.
        let out = kcat(&["-C", "-b", &bootstrap, "-t", "kcat", "-p", "1", "-o", "7", "-e", "-q", "-f", "%o\n"]);
        assert_eq!(out, (7..25).map(|o| format!("{o}\n")).collect::<String>());
        let at = format!("s@{}", timestamp(0, 12) - 3);
        let out = kcat(&["-C", "-b", &bootstrap, "-t", "kcat", "-p", "0", "-o", &at, "-e", "-q", "-f", "%o\n"]);
        assert_eq!(out, (12..25).map(|o| format!("{o}\n")).collect::<String>());
    })
    .await;
    server.assert_alive();
    assert_no_library_panics();
}
