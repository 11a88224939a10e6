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
//!   the time to restore the latest.

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
                if i == 0 { "full" } else { "incremental" },
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

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if wanted("throughput") {
        throughput(if quick { 200_000 } else { 20_000_000 })?;
    }
    if wanted("size") {
        size(if quick { 10_000 } else { 1_000_000 })?;
    }
    Ok(())
}
