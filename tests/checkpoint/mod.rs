//! Checkpoints and recovery: a job stopped at any point and restored from
//! its latest checkpoint ends with exactly the output of a run that was
//! never interrupted — in process (stepped, deterministic), across a
//! parallelism change, and in a child process killed with SIGKILL.

mod alignment;
mod crash;
mod hooks;
mod joins;
mod late_data;
mod restarts;
mod restore;
mod stop;
mod storage;
mod uids;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tideline::connectors::file::{read_committed, ExactlyOnceCsvSink};
use tideline::prelude::*;
use tideline::RestoreFrom;
#[cfg(feature = "rocksdb")]
use tideline::{RocksDbOptions, StateBackend};

/// One generated event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Ev {
    pub(crate) key: u32,
    pub(crate) value: i64,
    pub(crate) ts: i64,
}

/// One window result as written by the exactly-once sink.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Out {
    pub(crate) key: u32,
    pub(crate) start: i64,
    pub(crate) count: u64,
    pub(crate) sum: i64,
}

/// Which state backend a test job uses.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Memory,
    /// Needs the `rocksdb` feature.
    #[cfg(feature = "rocksdb")]
    RocksDb,
}

/// Every backend of this build.
pub(crate) fn backends() -> Vec<Backend> {
    #[allow(unused_mut)]
    let mut all = vec![Backend::Memory];
    #[cfg(feature = "rocksdb")]
    all.push(Backend::RocksDb);
    all
}

/// `n` events over `partitions` partitions, event time advancing 1 ms per
/// record with up to 200 ms of disorder: under a 300 ms out-of-orderness
/// bound none is late, so results do not depend on how partitions interleave.
pub(crate) fn generator(
    n: u64,
    partitions: usize,
    rate: f64,
) -> GeneratorSource<impl Fn(u64, &mut SmallRng) -> Ev + Send + Sync + 'static> {
    GeneratorSource::new(|i: u64, rng: &mut SmallRng| Ev {
        key: rng.gen_range(0..40),
        value: rng.gen_range(0..1_000),
        ts: i as i64 + rng.gen_range(0..200),
    })
    .with_count(n)
    .with_partitions(partitions)
    .with_seed(11)
    .with_rate(rate)
}

/// A job at `parallelism` on `clock`, batches of 64; with `checkpoints`,
/// checkpointing every 100 ms into `dir/chk` (keeping 2) and restoring from
/// the latest one if there is one.
pub(crate) fn stepped_job(
    dir: &Path,
    clock: &Arc<ManualClock>,
    parallelism: usize,
    checkpoints: bool,
) -> Job {
    let job = Job::new()
        .parallelism(parallelism)
        .clock(Arc::clone(clock) as Arc<dyn Clock>)
        .batch_size(64);
    if !checkpoints {
        return job;
    }
    job.checkpointing(Duration::from_millis(100), dir.join("chk"))
        .checkpoint_retention(2)
        .restore(RestoreFrom::Latest)
}

/// Writes per-key `(count, sum)` window results as [`Out`] rows through an
/// exactly-once CSV sink into `dir/out`.
pub(crate) fn sink_windows(
    results: &Stream<WindowResult<u32, (u64, i64)>>,
    dir: &Path,
) -> Result<()> {
    results
        .map(|r| Out {
            key: r.key,
            start: r.window.start,
            count: r.value.0,
            sum: r.value.1,
        })
        .sink(ExactlyOnceCsvSink::new(dir.join("out"))?);
    Ok(())
}

/// A job over `generator(n, partitions)` at `parallelism`: per key, tumbling
/// 500 ms windows of count and sum, written by an exactly-once CSV sink into
/// `dir/out`; with `checkpoints`, checkpointing every 100 ms into `dir/chk`
/// and restoring from the latest one if there is one.
pub(crate) fn windowed_job(
    dir: &Path,
    clock: &Arc<ManualClock>,
    n: u64,
    partitions: usize,
    parallelism: usize,
    backend: Backend,
    checkpoints: bool,
) -> Result<Job> {
    let job = stepped_job(dir, clock, parallelism, checkpoints);
    let job = match backend {
        Backend::Memory => job,
        #[cfg(feature = "rocksdb")]
        Backend::RocksDb => job.state_backend(StateBackend::RocksDb(
            RocksDbOptions::new(dir.join("rocksdb")).cache_entries(16),
        )),
    };
    let results = job
        .source(
            generator(n, partitions, 20_000.0),
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(300))
                .with_timestamps(|e: &Ev| e.ts),
        )
        .key_by(|e: &Ev| e.key)
        .window(Tumbling::of(Duration::from_millis(500)))
        .aggregate((Count, Sum::of(|e: &Ev| e.value)));
    sink_windows(&results, dir)?;
    Ok(job)
}

/// Steps a local run, moving the clock 10 ms a round, for at most `rounds`
/// rounds (then the run is dropped as if the process died) or to the end.
pub(crate) fn drive(
    job: Job,
    clock: &ManualClock,
    rounds: Option<usize>,
) -> Result<Option<JobSummary>> {
    let mut run = job.start_local()?;
    let mut round = 0;
    while !run.is_finished() {
        if rounds.is_some_and(|r| round >= r) {
            return Ok(None);
        }
        clock.advance(Duration::from_millis(10));
        run.step()?;
        round += 1;
    }
    run.finish().map(Some)
}

/// The committed output in `dir/out`, sorted.
pub(crate) fn committed(dir: &Path) -> Result<Vec<Out>> {
    let mut rows: Vec<Out> = read_committed(dir.join("out"))?;
    rows.sort();
    Ok(rows)
}

pub(crate) fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(Error::user)
}
