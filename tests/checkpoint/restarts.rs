//! Restart strategies: a job that fails while running is rebuilt in the
//! same process and restored from its latest checkpoint, and its
//! exactly-once output is that of a run that never failed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tideline::prelude::*;
use tideline::RestartStrategy;

use super::{committed, generator, sink_windows, tempdir, Ev, Out};

const EVENTS: u64 = 40_000;

/// Per key, tumbling 500 ms count and sum into `dir/out`, on the system
/// clock; the map fails (an error, or a panic) at event `fail_at` of its
/// first `failures` passes over it.
fn job(
    dir: &std::path::Path,
    failures: u32,
    panic: bool,
    strategy: RestartStrategy,
) -> Result<Job> {
    let job = Job::new()
        .parallelism(2)
        .checkpointing(Duration::from_millis(5), dir.join("chk"))
        .restart_strategy(strategy);
    let failed = Arc::new(AtomicU32::new(0));
    let results = job
        .source(
            generator(EVENTS, 2, 4_000_000.0),
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(300))
                .with_timestamps(|e: &Ev| e.ts),
        )
        .try_map(move |e: &Ev| {
            if e.ts >= 30_000 && e.ts < 30_010 && failed.load(Ordering::SeqCst) < failures {
                failed.fetch_add(1, Ordering::SeqCst);
                if panic {
                    panic!("the lookup service crashed");
                }
                return Err(Error::user("the lookup service is down"));
            }
            Ok(e.clone())
        })
        .key_by(|e: &Ev| e.key)
        .window(Tumbling::of(Duration::from_millis(500)))
        .aggregate((Count, Sum::of(|e: &Ev| e.value)));
    sink_windows(&results, dir)?;
    Ok(job.failure_policy(FailurePolicy::FailFast))
}

fn reference() -> Result<Vec<Out>> {
    let dir = tempdir()?;
    job(dir.path(), 0, false, RestartStrategy::None)?.run()?;
    committed(dir.path())
}

#[test]
fn a_failing_job_restarts_from_its_latest_checkpoint_with_exact_output() -> Result<()> {
    let expected = reference()?;
    assert_eq!(expected.iter().map(|r| r.count).sum::<u64>(), EVENTS);
    for panic in [false, true] {
        let dir = tempdir()?;
        let strategy = RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::ZERO,
        };
        let summary = job(dir.path(), 2, panic, strategy)?.run()?;
        // Two failures: in two attempts, or both subtasks in the same one.
        assert!((1..=2).contains(&summary.restarts.len()), "{summary:?}");
        let cause = if panic { "crashed" } else { "is down" };
        assert!(
            summary.restarts.iter().all(|r| r.contains(cause)),
            "{:?}",
            summary.restarts
        );
        assert_eq!(committed(dir.path())?, expected);
    }
    Ok(())
}

#[test]
fn restarts_stop_when_the_attempts_are_used_up() -> Result<()> {
    let dir = tempdir()?;
    let strategy = RestartStrategy::ExponentialBackoff {
        attempts: 1,
        initial: Duration::from_millis(1),
        max: Duration::from_millis(2),
        multiplier: 2.0,
    };
    let error = job(dir.path(), 5, false, strategy)?
        .run()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("is down"), "{error}");
    Ok(())
}

#[test]
fn a_restart_strategy_needs_checkpointing() {
    let job = Job::new().restart_strategy(RestartStrategy::FixedDelay {
        attempts: 1,
        delay: Duration::ZERO,
    });
    job.source(VecSource::new(vec![1]), WatermarkStrategy::none())
        .sink(CollectSink::new());
    let error = job.run().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("restart_strategy"), "{error}");
}
