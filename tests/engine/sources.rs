//! Built-in sources: deterministic generator, rate pacing by the injected
//! clock, partitioned vectors.

use std::time::Duration;

use tideline::prelude::*;
use tideline::testing::TestJob;

fn generate(parallelism: usize) -> Result<Vec<(u64, u32)>> {
    let job = Job::new()
        .parallelism(parallelism)
        .mode(ExecutionMode::Bounded);
    let out = CollectSink::new();
    job.source(
        GeneratorSource::new(|i: u64, rng: &mut SmallRng| (i, rng.gen_range(0..1_000u32)))
            .with_count(10_001)
            .with_partitions(3)
            .with_seed(5),
        WatermarkStrategy::none(),
    )
    .sink(out.clone());
    job.run()?;
    let mut v = out.values();
    v.sort();
    Ok(v)
}

#[test]
fn generator_is_deterministic_and_covers_every_index_once() -> Result<()> {
    let a = generate(1)?;
    let b = generate(3)?;
    assert_eq!(a, b);
    assert_eq!(
        a.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (0..10_001).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn generator_rate_follows_the_clock() -> Result<()> {
    let t = TestJob::new();
    let stream = t.job().source(
        GeneratorSource::new(|i: u64, _: &mut SmallRng| i).with_rate(1_000.0),
        WatermarkStrategy::none(),
    );
    let out = t.collect(&stream);
    let mut run = t.start()?;
    run.step()?;
    run.step()?;
    // At 1,000/s, time 0 allows one record (the sink is chained: no batching delay).
    assert_eq!(out.len(), 1);
    run.advance_processing_time(Duration::from_millis(10))?;
    assert_eq!(out.len(), 11);
    run.advance_processing_time(Duration::from_secs(1))?;
    assert_eq!(out.len(), 1_011);
    let summary = run.finish()?;
    assert_eq!(
        summary.operator("generator").map(|o| o.records_out),
        Some(1_011)
    );
    Ok(())
}

#[test]
fn vec_source_partitions_read_in_parallel() -> Result<()> {
    let job = Job::new().parallelism(2).mode(ExecutionMode::Bounded);
    let out = CollectSink::new();
    let stream = job.source(
        VecSource::timestamped((0..100).map(|i| (i, i)).collect()).with_partitions(4),
        WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO),
    );
    assert_eq!(stream.parallelism(), 2);
    stream.sink(out.clone());
    let summary = job.run()?;
    let mut v: Vec<(i64, i64)> = out
        .records()
        .into_iter()
        .map(|r| (r.timestamp.millis(), r.value))
        .collect();
    v.sort();
    assert_eq!(v, (0..100).map(|i| (i, i)).collect::<Vec<_>>());
    assert_eq!(summary.operator("collect").map(|o| o.parallelism), Some(2));
    Ok(())
}

/// An unbounded source whose partition count grows when the test says:
/// partition `p` emits `(p, i, subtask)` for `i` in `0..3`, then waits.
#[derive(Clone)]
struct Growing(std::sync::Arc<std::sync::atomic::AtomicUsize>);

struct GrowingReader {
    partition: usize,
    subtask: usize,
    done: bool,
}

impl tideline::SourceReader<(usize, u64, usize)> for GrowingReader {
    fn poll(
        &mut self,
        out: &mut tideline::SourceOutput<(usize, u64, usize)>,
    ) -> Result<tideline::SourceStatus> {
        if !self.done {
            self.done = true;
            for i in 0..3 {
                out.push(Record::new(
                    1_000 * self.partition as i64 + i as i64,
                    (self.partition, i, self.subtask),
                ));
            }
        }
        Ok(tideline::SourceStatus::Pending)
    }
}

impl tideline::Source<(usize, u64, usize)> for Growing {
    fn partitions(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn create_reader(
        &self,
        partition: usize,
        ctx: &tideline::ReaderContext,
    ) -> Result<Box<dyn tideline::SourceReader<(usize, u64, usize)>>> {
        Ok(Box::new(GrowingReader {
            partition,
            subtask: ctx.subtask.subtask,
            done: false,
        }))
    }

    fn partition_discovery_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(100))
    }

    fn discover_partitions(&self) -> Result<usize> {
        Ok(self.partitions())
    }
}

#[test]
fn discovered_partitions_are_read_by_the_subtask_that_owns_them() -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let count = Arc::new(AtomicUsize::new(2));
    let clock = Arc::new(ManualClock::new(0));
    let job = Job::new()
        .parallelism(2)
        .clock(Arc::clone(&clock) as Arc<dyn tideline::time::Clock>);
    let out = CollectSink::new();
    job.source(Growing(Arc::clone(&count)), WatermarkStrategy::none())
        .sink(out.clone());
    let mut run = job.start_local()?;
    run.step()?;
    let sorted = |out: &CollectSink<(usize, u64, usize)>| {
        let mut v = out.values();
        v.sort_unstable();
        v
    };
    let expected = |partitions: usize| -> Vec<(usize, u64, usize)> {
        (0..partitions)
            .flat_map(|p| (0..3).map(move |i| (p, i, p % 2)))
            .collect()
    };
    assert_eq!(sorted(&out), expected(2));
    count.store(5, Ordering::SeqCst);
    // Not due yet: nothing new is opened.
    clock.advance(Duration::from_millis(50));
    run.step()?;
    assert_eq!(sorted(&out), expected(2));
    clock.advance(Duration::from_millis(60));
    run.step()?;
    assert_eq!(
        sorted(&out),
        expected(5),
        "each new partition once, by partition % 2"
    );
    clock.advance(Duration::from_millis(200));
    run.step()?;
    assert_eq!(sorted(&out), expected(5), "no partition is opened twice");
    Ok(())
}
