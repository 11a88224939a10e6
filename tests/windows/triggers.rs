//! Early firings (records and processing time), count trigger on global
//! windows, a custom trigger, reduce and process windows.

use std::time::Duration;

use tideline::prelude::*;
use tideline::testing::TestJob;
use tideline::window::Span;

type Stamped = i64;

fn keyed_input(
    t: &TestJob,
) -> (
    tideline::connectors::SourceHandle<Stamped>,
    KeyedStream<u8, Stamped>,
) {
    let (input, stream) =
        t.push_source::<Stamped>(WatermarkStrategy::none().with_timestamps(|t: &i64| *t));
    (input, stream.key_by(|_| 0u8))
}

fn rows(out: &CollectSink<WindowResult<u8, u64>>) -> Vec<(u64, Firing, bool)> {
    out.values()
        .iter()
        .map(|r| (r.value, r.firing, r.update))
        .collect()
}

#[test]
fn early_firing_every_n_records_then_final() -> Result<()> {
    let t = TestJob::new();
    let (input, keyed) = keyed_input(&t);
    let out = t.collect(
        &keyed
            .window(Tumbling::of(Span::millis(10)))
            .trigger(EarlyFiring::every_records(2))
            .aggregate(Count),
    );
    let mut run = t.start()?;
    for ts in [1, 2, 3] {
        input.send(ts)?;
    }
    run.step()?;
    assert_eq!(rows(&out), vec![(2, Firing::Early, false)]);
    input.watermark(9)?;
    run.step()?;
    assert_eq!(
        rows(&out),
        vec![(2, Firing::Early, false), (3, Firing::OnTime, true)]
    );
    Ok(())
}

#[test]
fn early_firing_on_processing_time() -> Result<()> {
    let t = TestJob::new();
    let (input, keyed) = keyed_input(&t);
    let out = t.collect(
        &keyed
            .window(Tumbling::of(Span::millis(10)))
            .trigger(EarlyFiring::every(Duration::from_millis(100)))
            .aggregate(Count),
    );
    let mut run = t.start()?;
    input.send(1)?;
    run.step()?;
    run.advance_processing_time(Duration::from_millis(99))?;
    assert!(out.is_empty());
    run.advance_processing_time(Duration::from_millis(1))?;
    assert_eq!(rows(&out), vec![(1, Firing::Early, false)]);
    input.send(2)?;
    run.advance_processing_time(Duration::from_millis(100))?;
    input.watermark(9)?;
    run.step()?;
    run.advance_processing_time(Duration::from_millis(500))?; // closed: no more early results
    assert_eq!(
        rows(&out),
        vec![
            (1, Firing::Early, false),
            (2, Firing::Early, true),
            (2, Firing::OnTime, true)
        ]
    );
    Ok(())
}

#[test]
fn count_trigger_on_global_windows_flushes_the_rest_at_the_end() -> Result<()> {
    let job = Job::new().mode(ExecutionMode::Bounded);
    let out = CollectSink::new();
    job.source(
        VecSource::timestamped((0..7).map(|i| (i, i % 2)).collect()),
        WatermarkStrategy::none(),
    )
    .key_by(|k: &i64| *k)
    .window(GlobalWindows)
    .trigger(CountTrigger::of(2))
    .aggregate(Count)
    .sink(out.clone());
    job.run()?;
    let mut got: Vec<(i64, u64)> = out.values().iter().map(|r| (r.key, r.value)).collect();
    got.sort();
    // Key 0 has 4 records (two full windows), key 1 has 3 (one full, one partial).
    assert_eq!(got, vec![(0, 2), (0, 2), (1, 1), (1, 2)]);
    Ok(())
}

/// Fires (and purges) as soon as a negative record arrives; otherwise on time.
#[derive(Clone)]
struct FireOnNegative;

impl Trigger<i64> for FireOnNegative {
    type State = ();

    fn on_element<K: std::hash::Hash + Eq + Clone>(
        &self,
        value: &i64,
        _ts: EventTime,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K, ()>,
    ) -> TriggerResult {
        ctx.register_event_time_timer(window.max_timestamp());
        if *value < 0 {
            TriggerResult::FireAndPurge
        } else {
            TriggerResult::Continue
        }
    }

    fn on_event_time<K: std::hash::Hash + Eq + Clone>(
        &self,
        time: EventTime,
        window: &TimeWindow,
        _ctx: &mut TriggerContext<'_, K, ()>,
    ) -> TriggerResult {
        if time == window.max_timestamp() {
            TriggerResult::Fire
        } else {
            TriggerResult::Continue
        }
    }
}

#[test]
fn custom_trigger() -> Result<()> {
    let t = TestJob::new();
    let (input, stream) =
        t.push_source::<i64>(WatermarkStrategy::none().with_timestamps(|v: &i64| v.abs()));
    let out = t.collect(
        &stream
            .key_by(|_| 0u8)
            .window(Tumbling::of(Span::millis(100)))
            .trigger(FireOnNegative)
            .reduce(|a, b| a + b),
    );
    let mut run = t.start()?;
    for v in [10, 20, -30, 40] {
        input.send(v)?;
    }
    input.watermark(99)?;
    run.step()?;
    let got: Vec<(i64, Firing, bool)> = out
        .values()
        .iter()
        .map(|r| (r.value, r.firing, r.update))
        .collect();
    assert_eq!(
        got,
        vec![(0, Firing::Early, false), (40, Firing::OnTime, true)]
    );
    Ok(())
}

#[test]
fn process_window_sees_all_records_and_the_window() -> Result<()> {
    let job = Job::new().mode(ExecutionMode::Bounded);
    let out = CollectSink::new();
    job.source(
        VecSource::timestamped(vec![
            (1, ('a', 3)),
            (2, ('b', 1)),
            (5, ('a', 4)),
            (12, ('a', 9)),
        ]),
        WatermarkStrategy::monotonous(),
    )
    .key_by(|e: &(char, i32)| e.0)
    .window(Tumbling::of(Span::millis(10)))
    .process(
        |key: &char,
         info: &WindowInfo,
         items: Vec<(char, i32)>,
         out: &mut tideline::window::WindowCollector<'_, String>| {
            let values: Vec<i32> = items.iter().map(|e| e.1).collect();
            out.collect(format!("{key}{}:{values:?}", info.window));
            Ok(())
        },
    )
    .sink(out.clone());
    job.run()?;
    assert_eq!(
        out.records(),
        vec![
            Record::new(9, "a[0, 10):[3, 4]".to_string()),
            Record::new(9, "b[0, 10):[1]".into()),
            Record::new(19, "a[10, 20):[9]".into()),
        ]
    );
    Ok(())
}

#[test]
fn bad_window_configuration_is_rejected_before_start() {
    let job = Job::new();
    job.source(
        VecSource::timestamped(vec![(1, 1i64)]),
        WatermarkStrategy::none(),
    )
    .key_by(|v| *v)
    .window(Sliding::of(Span::millis(10), Span::millis(20)))
    .aggregate(Count)
    .sink(CollectSink::new());
    match job.run() {
        Err(Error::Operator { operator, source }) => {
            assert_eq!(operator, "window_aggregate");
            assert!(
                matches!(*source, Error::Config { ref field, .. } if field == "window.slide"),
                "{source}"
            );
        }
        other => panic!("{other:?}"),
    }
    let job = Job::new();
    job.source(
        VecSource::timestamped(vec![(1, 1i64)]),
        WatermarkStrategy::none(),
    )
    .key_by(|v| *v)
    .window(Sliding::of(Span::millis(10), Span::millis(5)))
    .trigger(CountTrigger::of(3))
    .aggregate(Count)
    .sink(CollectSink::new());
    assert!(job
        .run()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("window.trigger"));
}
