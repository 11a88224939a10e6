//! Watermarks: minimum over partitions and over exchange channels, idleness,
//! end of input, monotony.

use std::time::Duration;

use proptest::prelude::*;
use tideline::prelude::*;
use tideline::testing::TestJob;

fn ms(v: i64) -> EventTime {
    EventTime::from_millis(v)
}

#[test]
fn minimum_over_partitions_of_one_source_subtask() -> Result<()> {
    let t = TestJob::new();
    let (source, handles) = PushSource::<u32>::with_partitions(2, None);
    let stream = t.job().source(source, WatermarkStrategy::none());
    let out = t.collect(&stream);
    let mut run = t.start()?;
    handles[0].watermark(10)?;
    handles[1].watermark(5)?;
    run.step()?;
    assert_eq!(out.watermarks(), vec![ms(5)]);
    handles[1].watermark(20)?;
    run.step()?;
    assert_eq!(out.watermarks(), vec![ms(5), ms(10)]);
    // A finished partition counts as +inf: only partition 1 holds it back now.
    handles[0].close()?;
    run.step()?;
    assert_eq!(out.watermarks(), vec![ms(5), ms(10), ms(20)]);
    handles[1].close()?;
    run.step()?;
    assert_eq!(
        out.watermarks(),
        vec![ms(5), ms(10), ms(20), EventTime::MAX]
    );
    Ok(())
}

#[test]
fn minimum_across_a_key_by_exchange() -> Result<()> {
    let t = TestJob::from_job(Job::new().parallelism(2));
    let (source, handles) = PushSource::<u32>::with_partitions(2, None);
    let keyed = t
        .job()
        .source(
            source,
            WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO),
        )
        .key_by(|v| *v)
        .partitioned();
    let out = t.collect(&keyed);
    let mut run = t.start()?;
    assert_eq!(
        run.task_names(),
        vec!["push_source[0]", "push_source[1]", "key_by[0]", "key_by[1]"]
    );
    // Both source subtasks send to both keyed subtasks.
    handles[0].send_at(100, 1)?; // partition watermark 99
    run.step()?;
    assert!(
        out.watermarks().is_empty(),
        "partition 1 has said nothing yet"
    );
    handles[1].send_at(50, 2)?; // 49
    run.step()?;
    assert_eq!(out.watermarks(), vec![ms(49), ms(49)]);
    handles[1].send_at(500, 3)?; // 499: the minimum is now partition 0's 99
    run.step()?;
    assert_eq!(out.watermarks(), vec![ms(49), ms(49), ms(99), ms(99)]);
    let mut values: Vec<u32> = out.values();
    values.sort();
    assert_eq!(values, vec![1, 2, 3]);
    Ok(())
}

#[test]
fn idle_partition_leaves_the_minimum_until_data_returns() -> Result<()> {
    let t = TestJob::new();
    let clock = t.clock();
    let (source, handles) = PushSource::<u32>::with_partitions(2, None);
    let strategy = WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO)
        .with_idleness(Duration::from_millis(100));
    let out = t.collect(&t.job().source(source, strategy));
    let mut run = t.start()?;
    handles[0].send_at(1_000, 1)?;
    run.step()?;
    clock.set(60);
    handles[0].send_at(1_500, 2)?;
    run.step()?;
    assert!(
        out.watermarks().is_empty(),
        "partition 1 is not idle before 100 ms"
    );
    clock.set(110);
    run.step()?;
    assert_eq!(
        out.watermarks(),
        vec![ms(1_499)],
        "partition 1 idle: partition 0 alone decides"
    );
    // Partition 1 returns behind the watermark: it holds it, never pulls it back.
    handles[1].send_at(500, 3)?;
    run.step()?;
    handles[0].send_at(2_000, 4)?;
    run.step()?;
    assert_eq!(out.watermarks(), vec![ms(1_499)]);
    handles[1].send_at(3_000, 5)?;
    run.step()?;
    assert_eq!(out.watermarks(), vec![ms(1_499), ms(1_999)]);
    let summary = run.finish()?;
    assert_eq!(out.watermarks().last(), Some(&EventTime::MAX));
    assert_eq!(
        summary.operator("push_source").map(|o| o.records_out),
        Some(5)
    );
    Ok(())
}

#[test]
fn all_partitions_idle_sends_idle_downstream_which_skips_them() -> Result<()> {
    // Two sources into a union: one goes idle, the union follows the other.
    let t = TestJob::new();
    let clock = t.clock();
    let strategy = || {
        WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO)
            .with_idleness(Duration::from_millis(100))
    };
    let (a_src, a) = PushSource::<u32>::new();
    let (b_src, b) = PushSource::<u32>::new();
    let union = t
        .job()
        .source(a_src, strategy())
        .union(&t.job().source(b_src, strategy()));
    let out = t.collect(&union);
    let mut run = t.start()?;
    a.send_at(10, 1)?;
    b.send_at(20, 2)?;
    run.step()?;
    assert_eq!(out.watermarks(), vec![ms(9)]);
    clock.set(50);
    a.send_at(30, 3)?;
    run.step()?;
    assert_eq!(out.watermarks(), vec![ms(9), ms(19)]);
    clock.set(120); // b has been silent since 0: idle. a has data at 50: active.
    run.step()?;
    assert_eq!(out.watermarks(), vec![ms(9), ms(19), ms(29)]);
    Ok(())
}

#[test]
fn end_of_input_flushes_with_infinite_watermark() -> Result<()> {
    let job = Job::new().mode(ExecutionMode::Bounded);
    let out = CollectSink::new();
    job.source(
        VecSource::timestamped(vec![(5, 'a'), (3, 'b')]),
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(10)),
    )
    .sink(out.clone());
    job.run()?;
    // 5 - 10 - 1 = -6 after the batch, then +inf at the end.
    assert_eq!(out.watermarks(), vec![ms(-6), EventTime::MAX]);
    assert_eq!(out.finished_subtasks(), 1);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Whatever the per-partition timestamps, the watermarks leaving a
    /// parallel keyed exchange increase strictly per subtask, and none passes
    /// the slowest partition's own bound.
    #[test]
    fn watermarks_monotone_through_a_job(events in prop::collection::vec((0usize..3, 0i64..10_000), 1..200)) {
        let t = TestJob::from_job(Job::new().parallelism(2).batch_size(4));
        let (source, handles) = PushSource::<i64>::with_partitions(3, None);
        let stream = t.job().source(source, WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(100)))
            .key_by(|v| *v % 7)
            .partitioned()
            .map(|v| v)
            ;
        let per_subtask: Vec<CollectSink<i64>> = vec![CollectSink::new(), CollectSink::new()];
        let sinks = per_subtask.clone();
        stream.sink_with("per_subtask", move |info| Ok(sinks[info.subtask].clone()));
        let mut run = t.start().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut max_ts = [i64::MIN; 3];
        for (p, ts) in &events {
            handles[*p].send_at(*ts, *ts).map_err(|e| TestCaseError::fail(e.to_string()))?;
            max_ts[*p] = max_ts[*p].max(*ts);
            run.step().map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let bound = max_ts.iter().min().copied().unwrap_or(i64::MIN).saturating_sub(101);
        for sink in &per_subtask {
            let wms = sink.watermarks();
            prop_assert!(wms.windows(2).all(|w| w[0] < w[1]), "{wms:?}");
            prop_assert!(wms.iter().all(|w| w.millis() <= bound), "{wms:?} > {bound}");
        }
        run.finish().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let total: usize = per_subtask.iter().map(|s| s.len()).sum();
        prop_assert_eq!(total, events.len());
    }
}
