//! Tests against a real PostgreSQL server: the cluster `scripts/test.sh`
//! starts (`scripts/postgres.sh`, its connection string in
//! `TIDELINE_POSTGRES_URL`), with `wal_level = logical`. Each test makes
//! its own uniquely named tables, slots and publications. Without a
//! server a test says so and passes, unless `CI` is set: then it fails.

// Test setup fails by panicking, with the step that failed.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod cdc;
mod crash;
mod harness;
mod query;
#[cfg(feature = "postgres-tls")]
mod tls;

use std::time::{Duration, Instant};

pub(crate) use harness::{begin, postgres_url, psql, unique_name};

/// Waits until `done` holds, polling; panics naming `what` after 60 s.
/// For conditions set by another thread (a job's progress), never to
/// let time pass.
pub(crate) fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The LSN of a logical decoding message written now, in its own
/// transaction: a bound after everything committed before it.
pub(crate) fn marker_lsn(url: &str) -> u64 {
    let text = psql(
        url,
        "SELECT pg_logical_emit_message(true, 'tideline-test', 'end')::text",
    );
    tideline::postgres::pgoutput::parse_lsn(text.trim()).expect("an LSN")
}

#[allow(dead_code)]
#[path = "../../examples/postgres_cdc.rs"]
mod postgres_cdc_example;

#[test]
fn example_postgres_cdc_runs_its_demo() {
    use clap::Parser;
    use tideline::connectors::file::read_committed;
    let Some(url) = postgres_url() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let table = unique_name("example_orders");
    let slot = unique_name("example");
    let archive = dir.path().join("archive");
    let args = postgres_cdc_example::Args::parse_from([
        "postgres_cdc",
        "--connection",
        &url,
        "--table",
        &table,
        "--slot",
        &slot,
        "--checkpoint-dir",
        &dir.path().join("chk").display().to_string(),
        "--archive",
        &archive.display().to_string(),
        "--demo",
        "500",
    ]);
    let summary = postgres_cdc_example::run(&args).expect("the example runs");
    // 250 rows snapshotted, 250 inserted, 350 paid, 25 refunded, 16 deleted.
    let changes = 250 + 250 + 350 + 25 + 16;
    let archived: Vec<postgres_cdc_example::ArchivedChange> =
        read_committed(&archive).expect("the archive");
    assert_eq!(archived.len(), changes);
    assert_eq!(
        summary.operator("archive").map(|o| o.records_in),
        Some(changes as u64)
    );
    assert!(summary
        .operator("windows")
        .is_some_and(|o| o.records_in > 0));
    assert!(summary
        .operator("revenue")
        .is_some_and(|o| o.records_in > 0));
    assert_eq!(summary.dead_letters, 0);
    psql(&url, &format!("SELECT pg_drop_replication_slot('{slot}')"));
}
