//! `make chaos`: the chaos soak at size (`tests/e2e/chaos.rs` holds the logic; `make test` runs
//! its small smoke version). A `harness = false` target that plain `cargo test` skips.
//!
//! Parameters (environment): `CHAOS_OBJECTS` (200), `CHAOS_MINUTES` (5), `CHAOS_KILLS`
//! (2 per minute), `CHAOS_HA` (0; 1 = two replicas with leader election, the leader killed),
//! `CHAOS_SEED` (random, printed), `CHAOS_MAX_OPS` (20,000), `CHAOS_GAP_MS` ("50-250", pause
//! between operations), `CHAOS_POLL` ("30s", drift-check interval), `CHAOS_CONVERGE_SECS`
//! (300, bound on the wait after healing), `CHAOS_REUSE_NUMBERS` (1), `CHAOS_CROSS_NAMESPACE`
//! (1: newcomers in a second namespace claim numbers and ids), `CHAOS_PARTITIONS` (1, HA only:
//! the leader cut off the API server for 12 s), `CHAOS_PLANE_FAULTS` (1: a kube-apiserver
//! restart at a third of the churn and an etcd outage at two thirds; the soak must have the
//! control plane to itself), `CHAOS_ETCD_OUTAGE_SECS` (30).
//! The report is printed and written to `target/chaos/report-<seed>.txt`; exit status 1 when
//! an invariant fails.

// Test support code: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]
// The shared e2e modules have helpers this target does not use.
#![allow(dead_code)]

#[path = "../e2e/harness.rs"]
mod harness;

#[path = "../e2e/chaos.rs"]
mod chaos;

use std::time::Duration;

use harness::env;

fn main() {
    let minutes: f64 = env("CHAOS_MINUTES", 5.0);
    let gap: String = env("CHAOS_GAP_MS", "50-250".to_string());
    let (lo, hi) = gap
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .unwrap_or_else(|| panic!("CHAOS_GAP_MS={gap:?}: expected e.g. 50-250"));
    let poll: String = env("CHAOS_POLL", "30s".to_string());
    let params = chaos::Params {
        seed: env("CHAOS_SEED", rand::random()),
        objects: env("CHAOS_OBJECTS", 200),
        churn: Duration::from_secs_f64(minutes * 60.0),
        max_ops: env("CHAOS_MAX_OPS", 20_000),
        op_gap_ms: (lo, hi),
        kills: env("CHAOS_KILLS", (minutes * 2.0).ceil() as usize),
        ha: env("CHAOS_HA", 0u8) == 1,
        faults: env("CHAOS_FAULTS", 1u8) == 1,
        reuse_numbers: env("CHAOS_REUSE_NUMBERS", 1u8) == 1,
        converge_timeout: Duration::from_secs(env("CHAOS_CONVERGE_SECS", 300)),
        poll_interval: Box::leak(poll.into_boxed_str()),
        cross_namespace: env("CHAOS_CROSS_NAMESPACE", 1u8) == 1,
        partitions: env("CHAOS_PARTITIONS", 1),
        plane_faults: env("CHAOS_PLANE_FAULTS", 1u8) == 1,
        etcd_outage: Duration::from_secs(env("CHAOS_ETCD_OUTAGE_SECS", 30)),
    };
    println!("chaos soak: {params:?}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = rt.block_on(chaos::run(params));
    let text = report.render();
    println!("{text}");
    let dir = harness::repo().join("target/chaos");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("report-{}.txt", report.seed));
    let _ = std::fs::write(&file, &text);
    println!("report written to {}", file.display());
    let logs = dir.join(format!("operator-{}.log", report.seed));
    let _ = std::fs::write(&logs, &report.operator_logs);
    println!("operator logs written to {}", logs.display());
    if report.passed() {
        println!("chaos soak: all invariants hold");
    } else {
        println!("chaos soak FAILED: {:#?}", report.failures());
        std::process::exit(1);
    }
}
