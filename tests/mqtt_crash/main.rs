//! At-least-once under failure: the gateway killed with SIGKILL mid-stream, the broker restarted
//! mid-stream, a sink that fails for a while (in process), and the real binary on a full disk.
//! Every test counts exactly: lost records (must be 0), duplicates (reported, and bounded by
//! `mqtt.max_inflight` per failure where the broker keeps to the receive maximum) and order per
//! device. One ignored test documents a broker limitation; run it with `-- --ignored`.

#[path = "../support/mod.rs"]
mod support;

mod in_process;
mod publish;
mod tally;

mod broker_restart;
mod full_disk;
mod sigkill;
mod sink_faults;
