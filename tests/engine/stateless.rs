//! Stateless operators and timestamp assignment.

use std::time::Duration;

use tideline::prelude::*;
use tideline::testing::TestJob;

#[test]
fn flat_map_keeps_timestamps_and_counts() -> Result<()> {
    let job = Job::new().mode(ExecutionMode::Bounded);
    let out = CollectSink::new();
    job.source(
        VecSource::timestamped(vec![(10, "a b"), (20, ""), (30, "c")]),
        WatermarkStrategy::none(),
    )
    .flat_map(|s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
    .sink(out.clone());
    let summary = job.run()?;
    assert_eq!(
        out.records(),
        vec![
            Record::new(10, "a".to_string()),
            Record::new(10, "b".into()),
            Record::new(30, "c".into())
        ]
    );
    let flat = summary.operator("flat_map");
    assert_eq!(flat.map(|o| (o.records_in, o.records_out)), Some((3, 3)));
    Ok(())
}

#[test]
fn assign_timestamps_replaces_upstream_watermarks() -> Result<()> {
    let t = TestJob::new();
    let (input, raw) = t.push_source::<(i64, char)>(WatermarkStrategy::none());
    let stamped = raw.assign_timestamps(
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(5))
            .with_timestamps(|e: &(i64, char)| e.0),
    );
    let out = t.collect(&stamped);
    let mut run = t.start()?;
    input.send((100, 'a'))?;
    input.watermark(1_000)?; // an upstream watermark: not passed on
    run.step()?;
    input.send((90, 'b'))?;
    run.step()?;
    input.send((120, 'c'))?;
    run.step()?;
    let ms = EventTime::from_millis;
    // Stamped here, with this subtask's watermark just before each record.
    assert_eq!(
        out.records(),
        vec![
            Record::new(100, (100, 'a')),
            Record::new(90, (90, 'b')).with_lateness_watermark(ms(94)),
            Record::new(120, (120, 'c')).with_lateness_watermark(ms(94))
        ]
    );
    assert_eq!(out.watermarks(), vec![ms(94), ms(114)]);
    run.finish()?;
    assert_eq!(out.watermarks().last(), Some(&EventTime::MAX));
    Ok(())
}
