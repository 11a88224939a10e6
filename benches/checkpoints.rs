//! State backends and checkpoints, printed as events/s and checkpoint figures.
//!
//! `cargo bench --bench checkpoints` (add `-- --quick` for a smoke run;
//! `-- throughput` or `-- size` runs one part).
//!
//! - `throughput`: the tumbling-window workload of `benches/windows.rs`
//!   (10 s windows, count + sum, 10,000 keys, 100,000 events per event-time
//!   second) with in-memory and RocksDB state, checkpoints off and every 1 s;
//! - `size`: 1 M keys, each holding one open window, checkpointed every
//!   500 ms: the first (full) checkpoint, the later (incremental) ones, and
//!   the time to restore the latest;
//! - `large` (only when named: `-- large`): ≥ 2 GB of RocksDB state (20 M
//!   keys of 100 incompressible bytes; `TIDELINE_LARGE_KEYS` changes it)
//!   written through the keyed-state API with a 32 MiB block cache, 64 MiB
//!   of memtables and a 10,000-entry write-back cache; it samples RSS as it
//!   goes and fails if RSS exceeds that budget plus 256 MiB of slack.

use std::path::Path;
use std::time::{Duration, Instant};

use tideline::prelude::*;
use tideline::{RestoreFrom, RocksDbOptions, StateBackend};

type Event = (u64, i64, i64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Memory,
    RocksDb,
}

fn job(dir: &Path, backend: Backend, checkpoint: Option<Duration>) -> Job {
    let mut job = Job::new().mode(ExecutionMode::Bounded);
    if backend == Backend::RocksDb {
        job = job.state_backend(StateBackend::RocksDb(RocksDbOptions::new(dir.join("work"))));
    }
    if let Some(interval) = checkpoint {
        job = job.checkpointing(interval, dir.join("chk"));
    }
    job
}

/// The tumbling job; `restore` names a checkpoint directory to start from.
fn tumbling_job(
    dir: &Path,
    n: u64,
    keys: u64,
    events_per_second: i64,
    backend: Backend,
    checkpoint: Option<Duration>,
    restore: Option<std::path::PathBuf>,
) -> Job {
    let mut job = job(dir, backend, checkpoint);
    if let Some(path) = restore {
        job = job.restore(RestoreFrom::Path(path));
    }
    let results = CollectSink::new();
    job.source(
        GeneratorSource::new(move |i: u64, rng: &mut SmallRng| {
            (
                rng.gen_range(0..keys),
                i as i64 * 1_000 / events_per_second,
                rng.gen_range(0..100),
            )
        })
        .with_count(n),
        WatermarkStrategy::monotonous().with_timestamps(|e: &Event| e.1),
    )
    .key_by(|e: &Event| e.0)
    .window(Tumbling::of(Duration::from_secs(10)))
    .aggregate((Count, Sum::of(|e: &Event| e.2)))
    .sink(results);
    job
}

fn tumbling(
    dir: &Path,
    n: u64,
    keys: u64,
    events_per_second: i64,
    backend: Backend,
    checkpoint: Option<Duration>,
) -> Result<JobSummary> {
    tumbling_job(dir, n, keys, events_per_second, backend, checkpoint, None).run()
}

fn throughput(n: u64) -> Result<()> {
    for backend in [Backend::Memory, Backend::RocksDb] {
        for checkpoint in [None, Some(Duration::from_secs(1))] {
            let dir = tempfile::tempdir().map_err(Error::user)?;
            let summary = tumbling(dir.path(), n, 10_000, 100_000, backend, checkpoint)?;
            let secs = summary.elapsed.as_secs_f64();
            println!(
                "tumbling backend={backend:?} checkpoints={} events={n} seconds={secs:.3} events_per_s={:.0} ({:.2} M/s) completed_checkpoints={}",
                if checkpoint.is_some() { "1s" } else { "off" },
                n as f64 / secs,
                n as f64 / secs / 1e6,
                summary.checkpoints.len(),
            );
        }
    }
    Ok(())
}

fn size(keys: u64) -> Result<()> {
    for backend in [Backend::Memory, Backend::RocksDb] {
        let dir = tempfile::tempdir().map_err(Error::user)?;
        // Event time advances 1 ms per 1,000 events: nothing fires while the
        // first pass over the keys fills 1 M open windows; later passes
        // update them (incremental checkpoints see few changed files).
        let n = keys * 4;
        let summary = tumbling(
            dir.path(),
            n,
            keys,
            1_000_000,
            backend,
            Some(Duration::from_millis(500)),
        )?;
        let regular: Vec<_> = summary.checkpoints.iter().filter(|c| !c.is_final).collect();
        for (i, c) in regular.iter().enumerate() {
            println!(
                "size backend={backend:?} keys={keys} checkpoint={} kind={} duration_ms={} size_mb={:.1} new_mb={:.1}",
                c.id,
                // In-memory snapshots are complete each time.
                if i == 0 || backend == Backend::Memory {
                    "full"
                } else {
                    "incremental"
                },
                c.duration.as_millis(),
                c.size_bytes as f64 / 1e6,
                c.new_bytes as f64 / 1e6,
            );
        }
        // Restore the newest checkpoint: the time to build the job with its
        // state loaded (the generator replays its random sequence to the
        // offset too).
        if let Some(last) = regular.last() {
            let path = dir.path().join("chk").join(format!("chk-{:010}", last.id));
            let started = Instant::now();
            let run = tumbling_job(dir.path(), n, keys, 1_000_000, backend, None, Some(path))
                .start_local()?;
            println!(
                "restore backend={backend:?} keys={keys} checkpoint={} seconds={:.3}",
                last.id,
                started.elapsed().as_secs_f64()
            );
            drop(run);
        }
    }
    Ok(())
}

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

fn large(keys: u64) -> Result<()> {
    use tideline::state::{KeyedState, StateScope, ValueStateDescriptor};
    const PAYLOAD: ValueStateDescriptor<Vec<u8>> = ValueStateDescriptor::new("payload");
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let (block_cache, memtables, cache_entries) = (32usize << 20, 64usize << 20, 10_000usize);
    let backend = StateBackend::RocksDb(
        RocksDbOptions::new(dir.path().join("work"))
            .block_cache_bytes(block_cache)
            .write_buffer_bytes(memtables)
            .cache_entries(cache_entries),
    );
    let mut state: KeyedState<u64> =
        KeyedState::open(&backend, StateScope::for_subtask("large", 0, 1, 128))?;
    let rss_start = status_kib("VmRSS:");
    let started = Instant::now();
    let mut value = Vec::with_capacity(100);
    let mut max_rss = 0;
    for k in 0..keys {
        payload(k, &mut value);
        state.value(&PAYLOAD, &k, &())?.set(value.clone());
        if k % 2_000_000 == 0 {
            max_rss = max_rss.max(status_kib("VmRSS:"));
            println!(
                "large keys={k} seconds={:.1} rss_mb={} disk_mb={}",
                started.elapsed().as_secs_f64(),
                status_kib("VmRSS:") / 1024,
                state.disk_bytes() >> 20
            );
        }
    }
    let write_secs = started.elapsed().as_secs_f64();
    // Read a sample back: cache misses go to RocksDB.
    let read_started = Instant::now();
    for i in 0..100_000u64 {
        let k = i.wrapping_mul(7_919_993) % keys;
        payload(k, &mut value);
        if state.value(&PAYLOAD, &k, &())?.get() != Some(&value) {
            return Err(Error::user(format!("key {k} read back wrong")));
        }
    }
    let read_secs = read_started.elapsed().as_secs_f64();
    let snapshot_dir = dir.path().join("snapshot");
    std::fs::create_dir_all(&snapshot_dir).map_err(Error::user)?;
    let snapshot_started = Instant::now();
    let files = state.snapshot_to(&snapshot_dir)?;
    let snapshot_secs = snapshot_started.elapsed().as_secs_f64();
    max_rss = max_rss.max(status_kib("VmRSS:"));
    let disk = state.disk_bytes();
    // Block cache + memtables + write-back cache (and its batch) + slack.
    let budget_kib =
        (block_cache as u64 + memtables as u64 + cache_entries as u64 * 512 + (256 << 20)) / 1024
            + rss_start;
    println!(
        "large keys={keys} write_keys_per_s={:.0} random_reads_100k_s={read_secs:.2} snapshot_s={snapshot_secs:.2} snapshot_files={} disk_mb={} rss_start_mb={} rss_max_mb={} budget_mb={}",
        keys as f64 / write_secs,
        files.len(),
        disk >> 20,
        rss_start / 1024,
        max_rss / 1024,
        budget_kib / 1024,
    );
    if max_rss > budget_kib {
        return Err(Error::user(format!(
            "RSS {max_rss} KiB over the budget of {budget_kib} KiB"
        )));
    }
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; without it (`cargo test`) runs are small.
    let quick = std::env::args().all(|a| a != "--bench")
        || std::env::args().any(|a| a == "--quick" || a == "--test");
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if wanted("throughput") {
        throughput(if quick { 200_000 } else { 20_000_000 })?;
    }
    if wanted("size") {
        size(if quick { 10_000 } else { 1_000_000 })?;
    }
    if only.as_deref() == Some("large") {
        let keys = std::env::var("TIDELINE_LARGE_KEYS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000_000);
        large(keys)?;
    }
    Ok(())
}
