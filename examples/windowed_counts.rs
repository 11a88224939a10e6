//! Windowed counts: a generated click stream, per-user click counts in
//! tumbling 10-second event-time windows, and the clicks that arrived too late
//! for their window printed from the late-data side output.
//!
//! Run: `cargo run --release --example windowed_counts`

// `main` is public so the integration tests can run this example too.
#![allow(unreachable_pub)]

use std::time::Duration;

use tideline::prelude::*;

/// A click: who, and when (event time, ms).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Click {
    user: u32,
    ts: i64,
}

/// Builds and runs the job; fails if counted + late clicks differ from the input.
pub fn main() -> Result<()> {
    const CLICKS: u64 = 50_000;
    let job = Job::new().parallelism(2).mode(ExecutionMode::Bounded);
    // ~20 clicks per second of event time; 1 in 50 arrives up to 30 s late.
    let clicks = job.source(
        GeneratorSource::new(|i: u64, rng: &mut SmallRng| {
            let delay = if rng.gen_ratio(1, 50) {
                rng.gen_range(0..30_000)
            } else {
                rng.gen_range(0..1_000)
            };
            Click {
                user: rng.gen_range(0..20),
                ts: i as i64 * 50 - delay,
            }
        })
        .with_count(CLICKS)
        .with_seed(7),
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(2))
            .with_timestamps(|c: &Click| c.ts),
    );
    let late = OutputTag::<Click>::new("late-clicks");
    let counts = clicks
        .key_by(|c: &Click| c.user)
        .window(Tumbling::of(Duration::from_secs(10)))
        .side_output_late_data(&late)
        .aggregate(Count)
        .named("clicks_per_user");
    let results = CollectSink::new();
    let late_clicks = CollectSink::new();
    counts.sink(results.clone());
    counts.side_output(&late).sink(late_clicks.clone());

    let summary = job.run()?;

    let mut rows = results.values();
    rows.sort_by_key(|r| (r.window.start, r.key));
    for r in rows.iter().filter(|r| r.key < 3).take(6) {
        println!("user {:>2} window {} clicks {}", r.key, r.window, r.value);
    }
    for click in late_clicks.records().iter().take(3) {
        println!("late: user {} at {} ms", click.value.user, click.timestamp);
    }
    let counted: u64 = rows.iter().map(|r| r.value).sum();
    println!("{summary}");
    println!(
        "clicks={CLICKS} counted={counted} late={} windows={}",
        late_clicks.len(),
        rows.len()
    );
    if counted + late_clicks.len() as u64 != CLICKS
        || summary.late_records != late_clicks.len() as u64
    {
        return Err(Error::Internal("clicks were lost or double counted".into()));
    }
    Ok(())
}
