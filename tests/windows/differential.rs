//! Sorted input through tumbling, sliding and session windows equals a
//! brute-force reference, at parallelism 1 and 4.

use std::time::Duration;

use tideline::prelude::*;

use super::{add, count_sum_min_max, events, to_table, Event, Table};

fn run(
    events: &[Event],
    parallelism: usize,
    windows: impl Into<tideline::window::WindowKind<Event>>,
) -> Result<Table> {
    run_with(events, parallelism, windows, |windowed| {
        (
            windowed.live_windows(),
            windowed.aggregate(count_sum_min_max()),
        )
    })
}

/// Runs sorted `events` through `windows`, finished by `finish` (which
/// returns the live-window gauge and the results), and checks nothing was
/// late and no state is left.
#[allow(clippy::type_complexity)]
fn run_with(
    events: &[Event],
    parallelism: usize,
    windows: impl Into<tideline::window::WindowKind<Event>>,
    finish: impl FnOnce(
        tideline::window::WindowedStream<u64, Event>,
    ) -> (
        tideline::window::LiveWindows,
        Stream<WindowResult<u64, (u64, i64, i64, i64)>>,
    ),
) -> Result<Table> {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| e.1);
    let job = Job::new()
        .parallelism(parallelism)
        .batch_size(64)
        .mode(ExecutionMode::Bounded);
    let out = CollectSink::new();
    let windowed = job
        .source(
            VecSource::new(sorted),
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(100))
                .with_timestamps(|e: &Event| e.1),
        )
        .key_by(|e: &Event| e.0)
        .window(windows);
    let (live, results) = finish(windowed);
    results.sink(out.clone());
    let summary = job.run()?;
    assert_eq!(summary.late_records, 0, "sorted input has no late records");
    assert_eq!(live.get(), 0, "all window state is cleaned up");
    Ok(to_table(out.values()))
}

fn grid_reference(events: &[Event], size: i64, slide: i64, offset: i64) -> Table {
    let mut table = Table::new();
    for &(k, ts, v) in events {
        let mut start = ts - (ts - offset).rem_euclid(slide);
        while start > ts - size {
            add(&mut table, k, TimeWindow::new(start, start + size), v);
            start -= slide;
        }
    }
    table
}

fn session_reference(events: &[Event], gap: i64) -> Table {
    let mut table = Table::new();
    let mut by_key: std::collections::BTreeMap<u64, Vec<(i64, i64)>> = Default::default();
    for &(k, ts, v) in events {
        by_key.entry(k).or_default().push((ts, v));
    }
    for (k, mut items) in by_key {
        items.sort();
        let mut group: Vec<(i64, i64)> = Vec::new();
        let flush = |group: &mut Vec<(i64, i64)>, table: &mut Table| {
            if let (Some(first), Some(last)) = (group.first(), group.last()) {
                let w = TimeWindow::new(first.0, last.0 + gap);
                for (_, v) in group.iter() {
                    add(table, k, w, *v);
                }
            }
            group.clear();
        };
        for item in items {
            // Windows [t, t+gap) that overlap or touch merge: t <= last + gap.
            if group.last().is_some_and(|last| item.0 > last.0 + gap) {
                flush(&mut group, &mut table);
            }
            group.push(item);
        }
        flush(&mut group, &mut table);
    }
    table
}

#[test]
fn tumbling_matches_reference() -> Result<()> {
    let ev = events(1, 20_000, 13, 3, 400);
    let expected = grid_reference(&ev, 1_000, 1_000, 0);
    for p in [1, 4] {
        assert_eq!(
            run(&ev, p, Tumbling::of(Duration::from_secs(1)))?,
            expected,
            "parallelism {p}"
        );
    }
    let with_offset = grid_reference(&ev, 1_000, 1_000, 300);
    assert_eq!(
        run(
            &ev,
            2,
            Tumbling::of(Duration::from_secs(1)).with_offset(Duration::from_millis(300))
        )?,
        with_offset
    );
    Ok(())
}

#[test]
fn sliding_matches_reference() -> Result<()> {
    let ev = events(2, 20_000, 13, 3, 400);
    for (size, slide) in [(1_000, 250), (1_000, 300), (900, 900)] {
        let expected = grid_reference(&ev, size, slide, 0);
        for p in [1, 4] {
            let got = run(
                &ev,
                p,
                Sliding::of(
                    Duration::from_millis(size as u64),
                    Duration::from_millis(slide as u64),
                ),
            )?;
            assert_eq!(got, expected, "size {size} slide {slide} parallelism {p}");
        }
    }
    Ok(())
}

#[test]
fn session_matches_reference() -> Result<()> {
    // Sparse keys so sessions both merge and split.
    let ev = events(3, 5_000, 40, 7, 400);
    let expected = session_reference(&ev, 150);
    for p in [1, 4] {
        assert_eq!(
            run(&ev, p, Session::with_gap(Duration::from_millis(150)))?,
            expected,
            "parallelism {p}"
        );
    }
    // Dynamic gap: per record; with a constant function it equals the fixed one.
    let dynamic = run(&ev, 2, Session::with_dynamic_gap(|_: &Event| 150))?;
    assert_eq!(dynamic, expected);
    // A trigger other than the event-time one takes the per-window session
    // path (merging window slots and their timers); it must agree too.
    for p in [1, 4] {
        assert_eq!(
            run_generic_sessions(&ev, p, 150)?,
            expected,
            "generic path, parallelism {p}"
        );
    }
    Ok(())
}

fn run_generic_sessions(events: &[Event], parallelism: usize, gap: u64) -> Result<Table> {
    run_with(
        events,
        parallelism,
        Session::with_gap(Duration::from_millis(gap)),
        |windowed| {
            // Never fires early: only the on-time results remain.
            let windowed = windowed.trigger(EarlyFiring::every_records(u64::MAX));
            (
                windowed.live_windows(),
                windowed.aggregate(count_sum_min_max()),
            )
        },
    )
}
