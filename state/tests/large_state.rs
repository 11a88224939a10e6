//! Hand-run check that the RocksDB backend keeps memory bounded with state far
//! larger than its caches. Not part of CI:
//!
//! ```text
//! cargo test -p tideline-state --release -- --ignored large_state --nocapture
//! ```
//!
//! Environment knobs: `TIDELINE_LARGE_KEYS` (default 20,000,000 keys of
//! ~100-byte values, ≥ 2 GB on disk) and `TIDELINE_LARGE_DIR` (default: a
//! temporary directory).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use tideline_state::{KeyedState, RocksDbOptions, StateBackend, StateScope, ValueStateDescriptor};

const PAYLOAD: ValueStateDescriptor<Vec<u8>> = ValueStateDescriptor::new("payload");

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Incompressible bytes derived from the key (xorshift), so on-disk size is real.
fn payload(key: u64, out: &mut Vec<u8>) {
    out.clear();
    let mut x = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < 100 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(100);
}

#[test]
#[ignore = "writes ≥ 2 GB; run by hand with --release"]
fn large_state() {
    let keys: u64 = std::env::var("TIDELINE_LARGE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000_000);
    let temp = tempfile::tempdir().unwrap();
    let base =
        std::env::var("TIDELINE_LARGE_DIR").map_or_else(|_| temp.path().to_path_buf(), Into::into);
    let block_cache = 32usize << 20;
    let memtables = 64usize << 20;
    let cache_entries = 10_000usize;
    let backend = StateBackend::RocksDb(
        RocksDbOptions::new(base.join("work"))
            .block_cache_bytes(block_cache)
            .write_buffer_bytes(memtables)
            .cache_entries(cache_entries),
    );
    let mut state: KeyedState<u64> =
        KeyedState::open(&backend, StateScope::for_subtask("large", 0, 1, 128)).unwrap();
    let rss_start = status_kib("VmRSS:");
    let started = Instant::now();
    let mut value = Vec::with_capacity(100);
    let mut max_rss = 0;
    for k in 0..keys {
        payload(k, &mut value);
        state.value(&PAYLOAD, &k, &()).unwrap().set(value.clone());
        if k % 1_000_000 == 0 {
            let rss = status_kib("VmRSS:");
            max_rss = max_rss.max(rss);
            eprintln!(
                "{k:>10} keys  {:>7.1} s  RSS {:>6} MiB  disk {:>6} MiB",
                started.elapsed().as_secs_f64(),
                rss / 1024,
                state.disk_bytes() >> 20
            );
        }
    }
    let write_secs = started.elapsed().as_secs_f64();
    // Read back a sample (cache misses go to RocksDB).
    let read_started = Instant::now();
    for i in 0..100_000u64 {
        let k = i.wrapping_mul(7_919_993) % keys;
        payload(k, &mut value);
        assert_eq!(
            state.value(&PAYLOAD, &k, &()).unwrap().get(),
            Some(&value),
            "key {k}"
        );
    }
    let read_secs = read_started.elapsed().as_secs_f64();
    let snapshot_dir = base.join("snapshot");
    std::fs::create_dir_all(&snapshot_dir).unwrap();
    let snapshot_started = Instant::now();
    let files = state.snapshot_to(&snapshot_dir).unwrap();
    let snapshot_secs = snapshot_started.elapsed().as_secs_f64();
    let disk = state.disk_bytes();
    let rss = status_kib("VmRSS:");
    max_rss = max_rss.max(rss);
    let peak = status_kib("VmHWM:");
    eprintln!(
        "keys {keys}: write {write_secs:.1} s ({:.0} keys/s), 100k random reads {read_secs:.2} s, \
         snapshot {snapshot_secs:.2} s ({} files), disk {} MiB, RSS start {} MiB, max sampled {} MiB, \
         end {} MiB, peak (VmHWM) {} MiB",
        keys as f64 / write_secs,
        files.len(),
        disk >> 20,
        rss_start / 1024,
        max_rss / 1024,
        rss / 1024,
        peak / 1024
    );
    // Budget: block cache + memtables + write-back cache (+ its write batch)
    // + a fixed slack for RocksDB's table readers, allocator and the test.
    let cache_bytes = cache_entries as u64 * 2 * 256;
    let slack = 256u64 << 20;
    let budget_kib =
        (block_cache as u64 + memtables as u64 + cache_bytes + slack) / 1024 + rss_start;
    assert!(
        max_rss < budget_kib,
        "RSS {max_rss} KiB over budget {budget_kib} KiB"
    );
    if keys >= 20_000_000 {
        assert!(disk >= 2 << 30, "only {disk} bytes on disk");
    }
}
