//! Late data: conservation with disorder beyond the bound (the exact late set
//! is simulated from the watermark rule), allowed lateness re-firing, state cleanup.

use std::time::Duration;

use tideline::prelude::*;
use tideline::testing::TestJob;
use tideline::window::Span;

use super::{events, Event};

#[test]
fn conservation_and_exact_late_records() -> Result<()> {
    const BATCH: usize = 50;
    const BOUND: i64 = 100;
    const SIZE: i64 = 500;
    let input = events(7, 30_000, 11, 2, 2_000);
    // Simulate the rule: the partition's watermark just before a record is
    // W = max(earlier ts) - BOUND - 1; it is late when its window's
    // end - 1 <= W.
    let mut expected_late = Vec::new();
    let mut max_ts = i64::MIN;
    for e in &input {
        let end = e.1 - e.1.rem_euclid(SIZE) + SIZE;
        if max_ts != i64::MIN && end - 1 < max_ts - BOUND {
            expected_late.push(*e);
        }
        max_ts = max_ts.max(e.1);
    }
    assert!(
        expected_late.len() > 1_000,
        "the test must exercise lateness"
    );
    expected_late.sort();

    for parallelism in [1, 3] {
        let job = Job::new()
            .parallelism(parallelism)
            .batch_size(BATCH)
            .mode(ExecutionMode::Bounded);
        let late_tag = OutputTag::<Event>::new("late");
        let windowed = job
            .source(
                VecSource::new(input.clone()),
                WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(BOUND as u64))
                    .with_timestamps(|e: &Event| e.1),
            )
            .key_by(|e: &Event| e.0)
            .window(Tumbling::of(Span::millis(SIZE)))
            .side_output_late_data(&late_tag);
        let live = windowed.live_windows();
        let counts = windowed.aggregate(Count);
        let results = CollectSink::new();
        let late = CollectSink::new();
        counts.sink(results.clone());
        counts.side_output(&late_tag).sink(late.clone());
        let summary = job.run()?;

        let counted: u64 = results.values().iter().map(|r| r.value).sum();
        let mut late_records = late.values();
        late_records.sort();
        assert_eq!(
            counted + late_records.len() as u64,
            input.len() as u64,
            "nothing lost, nothing twice"
        );
        assert_eq!(
            late_records, expected_late,
            "exactly the records the rule makes late"
        );
        assert_eq!(summary.late_records, expected_late.len() as u64);
        assert_eq!(live.get(), 0);
        // Late records keep their timestamps.
        assert!(late
            .records()
            .iter()
            .all(|r| r.timestamp.millis() == r.value.1));
    }
    Ok(())
}

fn row<K: Clone, R: Clone>(r: &WindowResult<K, R>) -> (i64, i64, R, Firing, bool) {
    (
        r.window.start,
        r.window.end,
        r.value.clone(),
        r.firing,
        r.update,
    )
}

#[test]
fn allowed_lateness_refires_then_drops() -> Result<()> {
    let t = TestJob::new();
    let (input, stream) =
        t.push_source::<i64>(WatermarkStrategy::none().with_timestamps(|t: &i64| *t));
    let late_tag = OutputTag::<i64>::new("late");
    let windowed = stream
        .key_by(|_| 'k')
        .window(Tumbling::of(Span::millis(10)))
        .allowed_lateness(Span::millis(5))
        .side_output_late_data(&late_tag);
    let live = windowed.live_windows();
    let sums = windowed.aggregate(Sum::of(|v: &i64| *v));
    let out = t.collect(&sums);
    let late = t.collect(&sums.side_output(&late_tag));
    let mut run = t.start()?;
    input.send(1)?;
    input.send(2)?;
    input.watermark(9)?;
    run.step()?;
    assert_eq!(
        out.values().iter().map(row).collect::<Vec<_>>(),
        vec![(0, 10, 3, Firing::OnTime, false)]
    );
    assert_eq!(live.get(), 1, "kept for the allowed lateness");
    input.send(3)?; // late but within lateness: fires again with the corrected sum
    run.step()?;
    assert_eq!(
        out.values().iter().map(row).collect::<Vec<_>>(),
        vec![
            (0, 10, 3, Firing::OnTime, false),
            (0, 10, 6, Firing::Late, true)
        ]
    );
    input.watermark(14)?; // 9 + 5: the window is dropped
    run.step()?;
    assert_eq!(live.get(), 0);
    input.send(4)?; // too late now
    run.step()?;
    // The late record keeps its lateness watermark: its partition's, 14.
    assert_eq!(
        late.records(),
        vec![Record::new(4, 4).with_lateness_watermark(EventTime::from_millis(14))]
    );
    assert_eq!(out.len(), 2);
    let summary = run.finish()?;
    assert_eq!(summary.late_records, 1);
    Ok(())
}

#[test]
fn sliding_windows_refire_within_lateness() -> Result<()> {
    let t = TestJob::new();
    let (input, stream) =
        t.push_source::<i64>(WatermarkStrategy::none().with_timestamps(|t: &i64| *t));
    let windowed = stream
        .key_by(|_| 0u8)
        .window(Sliding::of(Span::millis(10), Span::millis(5)))
        .allowed_lateness(Span::millis(5));
    let live = windowed.live_windows();
    let out = t.collect(&windowed.aggregate(Count));
    let mut run = t.start()?;
    input.send(7)?;
    input.watermark(9)?;
    run.step()?;
    input.send(8)?; // [0,10) fired already: fires again; [5,15) still open
    run.step()?;
    input.watermark(14)?; // [5,15) on time; [0,10) expires
    run.step()?;
    input.send(6)?; // [5,15) again; [0,10) is gone
    run.step()?;
    input.watermark(19)?;
    run.step()?;
    assert_eq!(live.get(), 0);
    // A new pane: [10,20) is past its end but within lateness (a first, late
    // result); [5,15) has expired.
    input.send(12)?;
    run.step()?;
    run.finish()?;
    assert_eq!(
        out.values().iter().map(row).collect::<Vec<_>>(),
        vec![
            (0, 10, 1, Firing::OnTime, false),
            (0, 10, 2, Firing::Late, true),
            (5, 15, 2, Firing::OnTime, false),
            (5, 15, 3, Firing::Late, true),
            (10, 20, 1, Firing::Late, false),
        ]
    );
    assert_eq!(live.get(), 0);
    Ok(())
}

#[test]
fn windows_fire_in_end_order_when_the_watermark_jumps() -> Result<()> {
    let t = TestJob::new();
    let (input, stream) =
        t.push_source::<(u8, i64)>(WatermarkStrategy::none().with_timestamps(|e: &(u8, i64)| e.1));
    let out = t.collect(
        &stream
            .key_by(|e| e.0)
            .window(Tumbling::of(Span::millis(10)))
            .aggregate(Count),
    );
    let mut run = t.start()?;
    for e in [(1, 25), (2, 5), (1, 15), (3, 5), (2, 27), (1, 3)] {
        input.send(e)?;
    }
    input.watermark(100)?;
    run.step()?;
    let got: Vec<(i64, u8, u64)> = out
        .values()
        .iter()
        .map(|r| (r.window.end, r.key, r.value))
        .collect();
    // By window end; within an end, in the order the windows were created.
    assert_eq!(
        got,
        vec![
            (10, 2, 1),
            (10, 3, 1),
            (10, 1, 1),
            (20, 1, 1),
            (30, 1, 1),
            (30, 2, 1)
        ]
    );
    Ok(())
}

/// Sliding panes with an allowed lateness at the end of time: the last
/// watermark drops every pane (nothing waits for a later one), and every
/// window fired once with its records.
#[test]
fn sliding_panes_with_the_largest_lateness_finish() -> Result<()> {
    let t = TestJob::new();
    let (input, stream) =
        t.push_source::<i64>(WatermarkStrategy::none().with_timestamps(|t: &i64| *t));
    let windowed = stream
        .key_by(|_| 'k')
        .window(Sliding::of(Span::millis(10), Span::millis(2)))
        .allowed_lateness(Span::millis(i64::MAX));
    let live = windowed.live_windows();
    let counts = windowed.aggregate(Count);
    let out = t.collect(&counts);
    let mut run = t.start()?;
    for ts in 0..10 {
        input.send(ts)?;
    }
    input.watermark(i64::MAX)?;
    run.step()?;
    let windows: Vec<(i64, u64)> = out
        .values()
        .iter()
        .map(|r| (r.window.start, r.value))
        .collect();
    // Windows starting at -8, -6, …, 8; each record counts in five.
    assert_eq!(windows.len(), 9, "{windows:?}");
    assert_eq!(windows.iter().map(|w| w.1).sum::<u64>(), 50);
    assert_eq!(live.get(), 0, "every pane dropped at the end of time");
    Ok(())
}
