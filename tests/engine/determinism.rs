//! Where watermarks fall is a function of each partition's input, not of
//! thread timing: the same input through a threaded parallel job sees the
//! same watermark at every record, run after run.

use std::time::Duration;

use tideline::prelude::*;

/// Emits each record with the watermark its subtask had when it arrived.
#[derive(Clone)]
struct WatermarkAtArrival;

impl KeyedProcessFunction<u64, (u64, i64), (u64, i64, EventTime)> for WatermarkAtArrival {
    fn process_element(
        &mut self,
        (k, ts): (u64, i64),
        ctx: &mut ProcessContext<'_, u64, (u64, i64, EventTime)>,
    ) -> Result<()> {
        let wm = ctx.current_watermark();
        ctx.collect((k, ts, wm));
        Ok(())
    }
}

fn run_once() -> Result<Vec<(u64, i64, EventTime)>> {
    let job = Job::new()
        .parallelism(4)
        .batch_size(16)
        .mode(ExecutionMode::Bounded);
    let out = CollectSink::new();
    // One partition read as one ordered sequence, with disorder.
    job.source(
        GeneratorSource::new(|i: u64, rng: &mut SmallRng| {
            (
                rng.gen_range(0..20u64),
                i as i64 * 10 - rng.gen_range(0..400),
            )
        })
        .with_count(20_000)
        .with_seed(11),
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(100))
            .with_timestamps(|e: &(u64, i64)| e.1),
    )
    .key_by(|e| e.0)
    .process(WatermarkAtArrival)
    .sink(out.clone());
    job.run()?;
    let mut v = out.values();
    v.sort();
    Ok(v)
}

#[test]
fn same_input_same_watermark_at_every_record() -> Result<()> {
    let first = run_once()?;
    assert_eq!(first.len(), 20_000);
    // Records behind the watermark exist (so lateness decisions are exercised).
    assert!(first
        .iter()
        .any(|(_, ts, wm)| EventTime::from_millis(*ts) <= *wm));
    for _ in 0..3 {
        assert_eq!(run_once()?, first);
    }
    Ok(())
}
