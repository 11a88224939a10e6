//! Regression tests for bugs found in review.

use std::time::Duration;

use tideline::prelude::*;
use tideline::testing::{KeyedProcessHarness, TestJob};
use tideline::window::Span;

fn ms(v: i64) -> EventTime {
    EventTime::from_millis(v)
}

/// A sliding-window key whose timer sat at a far pane expiry while the
/// watermark moved on emitted its next windows twice (late, then "on time").
#[test]
fn sliding_windows_never_fire_twice_after_a_watermark_gap() -> Result<()> {
    let t = TestJob::new();
    let (input, stream) =
        t.push_source::<i64>(WatermarkStrategy::none().with_timestamps(|t: &i64| *t));
    let out = t.collect(
        &stream
            .key_by(|_| 0u8)
            .window(Sliding::of(Span::millis(10), Span::millis(5)))
            .allowed_lateness(Span::millis(1_000))
            .aggregate(Count),
    );
    let mut run = t.start()?;
    input.send(2)?;
    input.watermark(9)?;
    run.step()?;
    input.watermark(500)?;
    run.step()?;
    input.send(300)?; // its windows ended before 500: first, late results
    run.step()?;
    run.finish()?;
    let got: Vec<(i64, i64, u64, Firing, bool)> = out
        .values()
        .iter()
        .map(|r| (r.window.start, r.window.end, r.value, r.firing, r.update))
        .collect();
    assert_eq!(
        got,
        vec![
            (-5, 5, 1, Firing::OnTime, false),
            (0, 10, 1, Firing::OnTime, false),
            (295, 305, 1, Firing::Late, false),
            (300, 310, 1, Firing::Late, false),
        ]
    );
    Ok(())
}

/// A merged session already behind the watermark fired late and then again
/// from the timer its merge registered.
#[test]
fn merged_late_session_fires_once_with_a_custom_trigger() -> Result<()> {
    let t = TestJob::new();
    let (input, stream) =
        t.push_source::<i64>(WatermarkStrategy::none().with_timestamps(|t: &i64| *t));
    let out = t.collect(
        &stream
            .key_by(|_| 0u8)
            .window(Session::with_gap(Span::millis(10)))
            .allowed_lateness(Span::millis(100))
            .trigger(EarlyFiring::every_records(1_000))
            .aggregate(Count),
    );
    let mut run = t.start()?;
    input.send(0)?;
    input.watermark(20)?;
    run.step()?;
    input.send(9)?; // merges into [0, 19), behind the watermark: one late result
    run.step()?;
    input.watermark(30)?;
    run.step()?;
    let got: Vec<(i64, i64, u64, Firing)> = out
        .values()
        .iter()
        .map(|r| (r.window.start, r.window.end, r.value, r.firing))
        .collect();
    assert_eq!(
        got,
        vec![(0, 10, 1, Firing::OnTime), (0, 19, 2, Firing::Late)]
    );
    Ok(())
}

/// After every input went idle, an input coming back at the held watermark
/// must reactivate the channel downstream even through a chained operator.
#[test]
fn return_from_idleness_passes_through_chained_operators() -> Result<()> {
    let t = TestJob::new();
    let clock = t.clock();
    let (a, a_stream) = t.push_source::<i64>(
        WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO)
            .with_idleness(Duration::from_millis(100)),
    );
    let (c, c_stream) =
        t.push_source::<i64>(WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO));
    let out = t.collect(&a_stream.filter(|_| true).union(&c_stream));
    let mut run = t.start()?;
    a.send_at(50, 1)?;
    c.send_at(100, 2)?;
    run.step()?;
    assert_eq!(out.watermarks(), vec![ms(49)]);
    clock.set(100); // a goes idle: the union follows c
    run.step()?;
    assert_eq!(out.watermarks(), vec![ms(49), ms(99)]);
    c.send_at(200, 3)?;
    run.step()?;
    a.watermark(49)?; // a is back, at the watermark it had: it holds the union again
    run.step()?;
    c.send_at(300, 4)?;
    run.step()?;
    assert_eq!(out.watermarks(), vec![ms(49), ms(99), ms(199)]);
    Ok(())
}

/// A timer that re-registers itself a minute later: due ones fire within one
/// watermark advance, and the end of input ends it instead of looping forever.
#[derive(Clone)]
struct EveryMinute;

impl KeyedProcessFunction<u8, u8, i64> for EveryMinute {
    fn process_element(&mut self, _v: u8, ctx: &mut ProcessContext<'_, u8, i64>) -> Result<()> {
        let at = ctx.timestamp();
        ctx.register_event_time_timer(at);
        Ok(())
    }

    fn on_timer(&mut self, at: EventTime, ctx: &mut ProcessContext<'_, u8, i64>) -> Result<()> {
        ctx.collect(at.millis());
        ctx.register_event_time_timer(at.saturating_add_millis(60_000));
        Ok(())
    }
}

#[test]
fn periodic_timers_fire_within_an_advance_and_stop_at_end_of_input() -> Result<()> {
    let mut h = KeyedProcessHarness::new(|_: &u8| 0u8, EveryMinute);
    h.process_element(0, 1)?;
    h.process_watermark(130_000)?;
    assert_eq!(
        h.take_output().iter().map(|r| r.value).collect::<Vec<_>>(),
        vec![0, 60_000, 120_000]
    );
    let rest: Vec<i64> = h.finish()?.iter().map(|r| r.value).collect();
    assert_eq!(rest, vec![180_000]);
    Ok(())
}

#[test]
fn finishing_a_test_run_reads_what_was_queued() -> Result<()> {
    let t = TestJob::new();
    let (input, stream) = t.push_source::<u8>(WatermarkStrategy::none());
    let out = t.collect(&stream);
    let run = t.start()?;
    input.send(7)?;
    run.finish()?;
    assert_eq!(out.values(), vec![7]);
    Ok(())
}
