//! An interval join keeps both sides' buffers and its timers in keyed
//! state: a run crashed and restored (also at another parallelism) emits
//! exactly the pairs of an uninterrupted run.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tideline::connectors::file::{read_committed, ExactlyOnceCsvSink};
use tideline::prelude::*;
use tideline::window::Span;
use tideline::RestoreFrom;

use super::{drive, tempdir};

/// key, ts, value
type Side = (u32, i64, i64);

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Pair {
    key: u32,
    left_ts: i64,
    right_ts: i64,
    left: i64,
    right: i64,
}

fn side(seed: u64) -> GeneratorSource<impl Fn(u64, &mut SmallRng) -> Side + Send + Sync + 'static> {
    GeneratorSource::new(|i: u64, rng: &mut SmallRng| {
        (rng.gen_range(0..8), i as i64 * 3, rng.gen_range(0..1_000))
    })
    .with_count(2_000)
    .with_seed(seed)
    .with_rate(10_000.0)
}

fn join_job(
    dir: &Path,
    clock: &Arc<ManualClock>,
    parallelism: usize,
    checkpoints: bool,
) -> Result<Job> {
    let mut job = Job::new()
        .parallelism(parallelism)
        .clock(Arc::clone(clock) as Arc<dyn Clock>)
        .batch_size(32);
    if checkpoints {
        job = job
            .checkpointing(Duration::from_millis(50), dir.join("chk"))
            .restore(RestoreFrom::Latest);
    }
    let strategy = || WatermarkStrategy::monotonous().with_timestamps(|e: &Side| e.1);
    let left = job.source(side(1), strategy()).key_by(|e: &Side| e.0);
    let right = job.source(side(2), strategy()).key_by(|e: &Side| e.0);
    left.interval_join(&right, Span::millis(-20), Span::millis(20))
        .apply(|a: &Side, b: &Side| Pair {
            key: a.0,
            left_ts: a.1,
            right_ts: b.1,
            left: a.2,
            right: b.2,
        })
        .sink(ExactlyOnceCsvSink::new(dir.join("out"))?);
    Ok(job)
}

fn committed(dir: &Path) -> Result<Vec<Pair>> {
    let mut pairs: Vec<Pair> = read_committed(dir.join("out"))?;
    pairs.sort();
    Ok(pairs)
}

#[test]
fn interval_join_recovers_exactly_at_any_parallelism() -> Result<()> {
    let reference = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    drive(join_job(reference.path(), &clock, 2, false)?, &clock, None)?;
    let expected = committed(reference.path())?;
    assert!(expected.len() > 100, "{} pairs", expected.len());

    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    // 2,000 records a side at 10,000/s: 200 ms, 20 rounds of 10 ms.
    for (rounds, parallelism) in [(Some(6), 2), (Some(11), 3), (None, 1)] {
        drive(
            join_job(dir.path(), &clock, parallelism, true)?,
            &clock,
            rounds,
        )?;
    }
    assert_eq!(committed(dir.path())?, expected);
    Ok(())
}
