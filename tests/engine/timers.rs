//! Timers fire once, in timestamp order, only when the watermark passes;
//! keyed state is per key.

use tideline::prelude::*;
use tideline::testing::KeyedProcessHarness;

/// Input `(key, timer_at, delete)`: registers (or deletes) an event-time
/// timer; on firing emits `(key, at)`.
#[derive(Clone)]
struct Timers;

impl KeyedProcessFunction<char, (char, i64, bool), (char, i64)> for Timers {
    fn process_element(
        &mut self,
        (_, at, delete): (char, i64, bool),
        ctx: &mut ProcessContext<'_, char, (char, i64)>,
    ) -> Result<()> {
        if delete {
            ctx.delete_event_time_timer(at);
        } else {
            ctx.register_event_time_timer(at);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        at: EventTime,
        ctx: &mut ProcessContext<'_, char, (char, i64)>,
    ) -> Result<()> {
        assert_eq!(ctx.time_domain(), Some(TimeDomain::EventTime));
        let key = *ctx.key();
        ctx.collect((key, at.millis()));
        Ok(())
    }
}

#[test]
fn timers_fire_once_in_order_when_the_watermark_passes() -> Result<()> {
    let mut h = KeyedProcessHarness::new(|e: &(char, i64, bool)| e.0, Timers);
    for (key, at) in [
        ('a', 30),
        ('b', 10),
        ('c', 20),
        ('a', 20),
        ('b', 10),
        ('d', 25),
    ] {
        h.process_element(0, (key, at, false))?;
    }
    h.process_element(0, ('d', 25, true))?;
    h.process_watermark(9)?;
    assert!(h.take_output().is_empty());
    h.process_watermark(10)?;
    assert_eq!(h.take_output(), vec![Record::new(10, ('b', 10))]);
    h.process_watermark(25)?;
    // Ties in registration order; 'd' was deleted.
    assert_eq!(
        h.take_output(),
        vec![Record::new(20, ('c', 20)), Record::new(20, ('a', 20))]
    );
    h.process_watermark(25)?;
    assert!(h.take_output().is_empty());
    // End of input: +inf fires the rest.
    assert_eq!(h.finish()?, vec![Record::new(30, ('a', 30))]);
    Ok(())
}

/// Counts per key in value state; emits the count when a processing-time
/// timer 100 ms after the first record fires.
#[derive(Clone)]
struct CountThenReport;
const COUNT: ValueStateDescriptor<u32> = ValueStateDescriptor::new("count");

impl KeyedProcessFunction<u8, u8, (u8, u32)> for CountThenReport {
    fn process_element(
        &mut self,
        _v: u8,
        ctx: &mut ProcessContext<'_, u8, (u8, u32)>,
    ) -> Result<()> {
        let first = {
            let mut count = ctx.value_state(&COUNT)?;
            let n = count.get_or_insert_with(|| 0);
            *n += 1;
            *n == 1
        };
        if first {
            let at = ctx.current_processing_time() + 100;
            ctx.register_processing_time_timer(at);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _at: EventTime,
        ctx: &mut ProcessContext<'_, u8, (u8, u32)>,
    ) -> Result<()> {
        assert_eq!(ctx.time_domain(), Some(TimeDomain::ProcessingTime));
        let n = ctx.value_state(&COUNT)?.take().unwrap_or(0);
        let key = *ctx.key();
        ctx.collect((key, n));
        Ok(())
    }
}

#[test]
fn processing_time_timers_and_per_key_state() -> Result<()> {
    let mut h = KeyedProcessHarness::new(|v: &u8| *v, CountThenReport);
    h.set_processing_time(1_000)?;
    for v in [1, 2, 1, 1] {
        h.process_element(0, v)?;
    }
    h.set_processing_time(1_099)?;
    assert!(h.take_output().is_empty());
    h.set_processing_time(1_100)?;
    let mut out: Vec<(u8, u32)> = h.take_output().into_iter().map(|r| r.value).collect();
    out.sort();
    assert_eq!(out, vec![(1, 3), (2, 1)]);
    // State was cleared: a new record starts again at 1.
    h.process_element(0, 1)?;
    h.set_processing_time(1_200)?;
    assert_eq!(
        h.take_output()
            .into_iter()
            .map(|r| r.value)
            .collect::<Vec<_>>(),
        vec![(1, 1)]
    );
    Ok(())
}

#[test]
fn side_outputs_from_a_process_function() -> Result<()> {
    #[derive(Clone)]
    struct Split(OutputTag<i32>);
    impl KeyedProcessFunction<bool, i32, i32> for Split {
        fn process_element(
            &mut self,
            v: i32,
            ctx: &mut ProcessContext<'_, bool, i32>,
        ) -> Result<()> {
            if v < 0 {
                ctx.output(&self.0, v);
            } else {
                ctx.collect(v);
            }
            Ok(())
        }
    }
    let negatives = OutputTag::new("negatives");
    let mut h = KeyedProcessHarness::new(|v: &i32| *v < 0, Split(negatives.clone()));
    let side = h.side_output(&negatives)?;
    for (ts, v) in [(1, 5), (2, -3), (3, 7), (4, -1)] {
        h.process_element(ts, v)?;
    }
    assert_eq!(h.take_output(), vec![Record::new(1, 5), Record::new(3, 7)]);
    assert_eq!(side.records(), vec![Record::new(2, -3), Record::new(4, -1)]);
    assert!(h.side_output(&OutputTag::<i32>::new("too-late")).is_err());
    Ok(())
}
