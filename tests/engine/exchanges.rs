//! Exchanges (union, rebalance, broadcast), the flush interval, and stopping
//! an unbounded job.

use std::time::Duration;

use tideline::prelude::*;
use tideline::testing::TestJob;

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn union_rebalance_and_broadcast() -> Result<()> {
    let job = Job::new().parallelism(3).mode(ExecutionMode::Bounded);
    let a = job.source(VecSource::new((0..10).collect()), WatermarkStrategy::none());
    let b = job.source(
        VecSource::new((100..105).collect()).with_partitions(2),
        WatermarkStrategy::none(),
    );
    let union = CollectSink::new();
    let rebalanced = CollectSink::new();
    let broadcast = CollectSink::new();
    a.union(&b).sink(union.clone());
    a.rebalance().sink(rebalanced.clone());
    b.broadcast().sink(broadcast.clone());
    job.run()?;
    let expected: Vec<u32> = (0..10).chain(100..105).collect();
    assert_eq!(sorted(union.values()), expected);
    assert_eq!(sorted(rebalanced.values()), (0..10).collect::<Vec<_>>());
    let thrice: Vec<u32> = sorted((100..105).flat_map(|x| [x, x, x]).collect());
    assert_eq!(sorted(broadcast.values()), thrice);
    Ok(())
}

#[test]
fn partial_batches_are_flushed_after_the_flush_interval() -> Result<()> {
    let t = TestJob::from_job(Job::new().flush_interval(Duration::from_millis(50)));
    let (input, stream) = t.push_source::<u8>(WatermarkStrategy::none());
    let out = t.collect(&stream.rebalance());
    let clock = t.clock();
    let mut run = t.start()?;
    run.step_unflushed()?;
    input.send(1)?;
    run.step_unflushed()?;
    assert!(out.is_empty(), "a partial batch waits for the interval");
    clock.advance(Duration::from_millis(49));
    run.step_unflushed()?;
    assert!(out.is_empty());
    clock.advance(Duration::from_millis(1));
    run.step_unflushed()?;
    assert_eq!(out.values(), vec![1]);
    // A plain step flushes whatever waits once everything is quiet.
    input.send(2)?;
    run.step()?;
    assert_eq!(out.values(), vec![1, 2]);
    Ok(())
}

#[test]
fn stopping_an_unbounded_job_drains_everything_in_flight() -> Result<()> {
    let job = Job::new().parallelism(2);
    let out = CollectSink::new();
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    job.source(
        GeneratorSource::new(|i: u64, _: &mut SmallRng| i).with_partitions(2),
        WatermarkStrategy::none(),
    )
    .key_by(|i| i % 5)
    .partitioned()
    .inspect(move |_| {
        let _ = tx.try_send(());
    })
    .sink(out.clone());
    let handle = job.spawn()?;
    // Wait until records flow, then stop.
    rx.recv_timeout(Duration::from_secs(60))
        .map_err(|_| Error::Internal("no record within a minute".into()))?;
    assert!(!handle.is_finished());
    handle.stop_and_drain();
    let summary = handle.join()?;
    let generated = summary
        .operator("generator")
        .map(|o| o.records_out)
        .unwrap_or(0);
    assert!(generated > 0);
    assert_eq!(out.len() as u64, generated, "nothing in flight was lost");
    assert_eq!(
        out.watermarks()
            .iter()
            .filter(|w| **w == EventTime::MAX)
            .count(),
        2
    );
    Ok(())
}
