//! The real binary on a full disk (a small tmpfs), then space freed.

use crate::publish::{spawn_publishers, ROUTE};
use crate::support::{self, Gateway, Mosquitto};
use crate::tally::{ranges, report, tally, wait_drained};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A tmpfs mounted on a temp dir; unmounted when dropped (after whatever uses it is gone).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` when mounting is not permitted here.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with `filler` until `free` bytes are left.
    fn fill(&self, filler: &Path, free: u64) {
        use std::io::Write;
        let mut f = std::fs::File::create(filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        let mut len = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n as u64,
            }
        }
        let _ = f.flush();
        f.set_len(len.saturating_sub(free)).unwrap();
        f.sync_all().unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn full_disk_holds_acks_until_space_returns() {
    const N: usize = 5_000;
    const MAX_INFLIGHT: usize = 100;
    let started = Instant::now();
    // Declared first, dropped last: unmounted after the gateway is gone.
    let Some(tmpfs) = Tmpfs::mount("4m") else {
        println!("NOTE: skipping the full-disk test: mounting a tmpfs is not permitted here");
        return;
    };
    let data = tmpfs.path().join("data");
    let broker = Mosquitto::start();
    let yaml = Gateway::config(
        &broker.url(),
        "gw-full",
        &format!(", max_inflight: {MAX_INFLIGHT}"),
        ROUTE,
    )
    .replace("DATA_DIR", &data.display().to_string());
    let mut gw = Gateway::new(&yaml);
    gw.start();
    let filler = tmpfs.path().join("filler");
    tmpfs.fill(&filler, 128 << 10);
    let count = || support::count_records(&data, "telemetry");

    let progress = Arc::new(AtomicUsize::new(0));
    let publishers = spawn_publishers(broker.port, "full-pub", N, 2, progress.clone());
    assert!(
        support::wait_until(Duration::from_secs(30), || gw
            .log()
            .contains("append failed")),
        "the disk never filled up:\n{}",
        gw.log()
    );
    // A failed write is cut off its file again, which frees the bytes it had taken, and a
    // retried smaller append may fit in them: fill what is free after each failure too.
    let rest = tmpfs.path().join("filler-rest");
    tmpfs.fill(&rest, 0);
    let stored_full = wait_drained(Duration::from_secs(30), 0, count);
    std::thread::sleep(Duration::from_secs(1));
    let stored_later = count();
    println!("disk full at {:?}: {stored_full} stored, {stored_later} a second later; {} acked by the broker", started.elapsed(), progress.load(Ordering::Relaxed));
    assert!(stored_full < N, "everything fit: make the disk smaller");
    // At most the bytes given back by cut-off writes: well under what the pipeline holds.
    assert!(
        stored_later - stored_full < MAX_INFLIGHT,
        "little is stored while the disk is full: {stored_full} -> {stored_later}"
    );
    assert!(
        gw.wait_exit(Duration::from_millis(100)).is_none(),
        "the gateway keeps running on a full disk:\n{}",
        gw.log()
    );

    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&rest).unwrap();
    let freed = Instant::now();
    let reports = publishers.join().expect("publishers");
    assert!(
        reports
            .iter()
            .all(|r| r.connections == 1 && r.not_success == 0),
        "{reports:?}"
    );
    let stored = wait_drained(Duration::from_secs(60), N, count);
    println!(
        "space freed: all stored {:?} later ({stored} records)",
        freed.elapsed()
    );
    let status = gw.terminate();
    assert!(
        status.success(),
        "graceful shutdown exits 0: {status:?}\n{}",
        gw.log()
    );

    let t = tally(&support::read_topic(&data, "telemetry"), N);
    report("full disk", &t);
    println!("full disk: {:?} in all", started.elapsed());
    assert!(
        !broker.log().contains("Outgoing messages are being dropped"),
        "the broker dropped messages"
    );
    assert_eq!(
        t.lost.len(),
        0,
        "lost messages: {}",
        ranges(t.lost.iter().copied().take(100))
    );
    assert_eq!(t.records, N + t.duplicates);
    assert!(
        t.duplicates <= MAX_INFLIGHT,
        "{} duplicates without a crash",
        t.duplicates
    );
    assert!(
        t.disorder.is_empty(),
        "order per device: {:?}",
        &t.disorder[..t.disorder.len().min(20)]
    );
    drop(gw);
}
