//! Window join and interval join against brute-force nested loops.

use std::time::Duration;

use tideline::prelude::*;
use tideline::window::Span;

/// key, ts, value
type Side = (u8, i64, i32);

fn side(seed: u64, n: usize, step: i64) -> Vec<Side> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut ts = -200;
    (0..n)
        .map(|_| {
            ts += rng.gen_range(0..=step);
            (rng.gen_range(0..5), ts, rng.gen_range(0..1_000))
        })
        .collect()
}

fn sources(
    job: &Job,
    left: &[Side],
    right: &[Side],
) -> (KeyedStream<u8, Side>, KeyedStream<u8, Side>) {
    let strategy = || {
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(10))
            .with_timestamps(|e: &Side| e.1)
    };
    let l = job
        .source(VecSource::new(left.to_vec()), strategy())
        .key_by(|e: &Side| e.0);
    let r = job
        .source(VecSource::new(right.to_vec()), strategy())
        .key_by(|e: &Side| e.0);
    (l, r)
}

type Pair = (Side, Side);

fn sorted(mut v: Vec<Pair>) -> Vec<Pair> {
    v.sort();
    v
}

#[test]
fn window_join_matches_nested_loops() -> Result<()> {
    let (left, right) = (side(1, 600, 9), side(2, 500, 11));
    let size = 100;
    let expected: Vec<Pair> = sorted(
        left.iter()
            .flat_map(|a| right.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.0 == b.0 && a.1.div_euclid(size) == b.1.div_euclid(size))
            .collect(),
    );
    assert!(expected.len() > 1_000);
    for parallelism in [1, 3] {
        let job = Job::new()
            .parallelism(parallelism)
            .mode(ExecutionMode::Bounded);
        let (l, r) = sources(&job, &left, &right);
        let out = CollectSink::new();
        l.window_join(&r, Tumbling::of(Span::millis(size)))
            .pairs()
            .sink(out.clone());
        let summary = job.run()?;
        assert_eq!(summary.late_records, 0);
        assert_eq!(sorted(out.values()), expected, "parallelism {parallelism}");
        // Each pair is emitted at its window's last millisecond.
        assert!(out
            .records()
            .iter()
            .all(|r| (r.timestamp.millis() + 1) % size == 0));
    }
    Ok(())
}

#[test]
fn interval_join_matches_nested_loops() -> Result<()> {
    let (left, right) = (side(3, 800, 7), side(4, 700, 8));
    let (lower, upper) = (-50, 30);
    let expected: Vec<Pair> = sorted(
        left.iter()
            .flat_map(|a| right.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.0 == b.0 && b.1 >= a.1 + lower && b.1 <= a.1 + upper)
            .collect(),
    );
    assert!(expected.len() > 1_000);
    for parallelism in [1, 3] {
        let job = Job::new()
            .parallelism(parallelism)
            .mode(ExecutionMode::Bounded);
        let (l, r) = sources(&job, &left, &right);
        let out = CollectSink::new();
        l.interval_join(&r, Span::millis(lower), Span::millis(upper))
            .pairs()
            .sink(out.clone());
        let summary = job.run()?;
        assert_eq!(summary.late_records, 0);
        assert_eq!(sorted(out.values()), expected, "parallelism {parallelism}");
        assert!(out
            .records()
            .iter()
            .all(|r| r.timestamp.millis() == r.value.0 .1.max(r.value.1 .1)));
    }
    Ok(())
}

#[test]
fn interval_join_sends_records_behind_the_watermark_aside() -> Result<()> {
    use tideline::testing::TestJob;
    let t = TestJob::new();
    let (li, ls) = t.push_source::<Side>(WatermarkStrategy::none().with_timestamps(|e: &Side| e.1));
    let (ri, rs) = t.push_source::<Side>(WatermarkStrategy::none().with_timestamps(|e: &Side| e.1));
    let late_tag = OutputTag::new("late");
    let joined = ls
        .key_by(|e: &Side| e.0)
        .interval_join(
            &rs.key_by(|e: &Side| e.0),
            Span::millis(0),
            Span::millis(10),
        )
        .side_output_late_data(&late_tag)
        .apply(|a, b| (a.2, b.2));
    let out = t.collect(&joined);
    let late = t.collect(&joined.side_output(&late_tag));
    let mut run = t.start()?;
    li.send((1, 100, 1))?;
    ri.send((1, 105, 2))?;
    ri.send((1, 111, 3))?; // outside [100, 110]
    run.step()?;
    assert_eq!(out.values(), vec![(1, 2)]);
    li.watermark(120)?;
    ri.watermark(120)?;
    run.step()?;
    li.send((1, 115, 4))?; // behind the watermark: late, joins nothing
    ri.send((1, 121, 5))?; // no partner in [111, 121]
    run.step()?;
    assert_eq!(out.values(), vec![(1, 2)]);
    assert_eq!(late.values(), vec![Either::Left((1, 115, 4))]);
    assert_eq!(run.finish()?.late_records, 1);
    Ok(())
}

#[test]
fn interval_join_rejects_inverted_bounds() {
    let job = Job::new();
    let (l, r) = sources(&job, &[], &[]);
    l.interval_join(&r, Span::millis(5), Span::millis(-5))
        .pairs()
        .sink(CollectSink::new());
    let err = job.run().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("interval_join.lower"), "{err}");
}
