//! Tests against a real PostgreSQL server: the cluster `scripts/test.sh`
//! starts (`scripts/postgres.sh`, its connection string in
//! `TIDELINE_POSTGRES_URL`), with `wal_level = logical`. Each test makes
//! its own uniquely named tables, slots and publications. Without a
//! server a test says so and passes, unless `CI` is set: then it fails.

// Test setup fails by panicking, with the step that failed.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod cdc;
mod harness;
mod query;

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
