//! Window throughput at parallelism 1, printed as events/s.
//!
//! `cargo bench --bench windows` (add `-- --quick` for a smoke run).
//!
//! Events are `(key, ts, value)` from the seeded generator (included in the
//! measurement), 100,000 events per second of event time, in timestamp order:
//! - `tumbling`: 10 s windows, count + sum per key, 10,000 keys;
//! - `sliding`: 10 s windows every 1 s, count per key, 10,000 keys;
//! - `session`: gap 5 s, count per key, 100,000 keys.

use std::time::Duration;

use tideline::prelude::*;
use tideline::window::WindowKind;

type Event = (u64, i64, i64);

fn run<A>(name: &str, n: u64, keys: u64, windows: WindowKind<Event>, agg: A) -> Result<()>
where
    A: AggregateFunction<Event>,
{
    let job = Job::new().mode(ExecutionMode::Bounded);
    let results = CollectSink::new();
    job.source(
        GeneratorSource::new(move |i: u64, rng: &mut SmallRng| {
            (
                rng.gen_range(0..keys),
                i as i64 / 100,
                rng.gen_range(0..100),
            )
        })
        .with_count(n),
        WatermarkStrategy::monotonous().with_timestamps(|e: &Event| e.1),
    )
    .key_by(|e: &Event| e.0)
    .window(windows)
    .aggregate(agg)
    .sink(results.clone());
    let summary = job.run()?;
    let secs = summary.elapsed.as_secs_f64();
    println!(
        "{name:<10} events={n} windows_emitted={} seconds={secs:.3} events_per_s={:.0} ({:.2} M/s)",
        results.len(),
        n as f64 / secs,
        n as f64 / secs / 1e6
    );
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; without it (`cargo test`) runs are small.
    let quick = std::env::args().all(|a| a != "--bench")
        || std::env::args().any(|a| a == "--quick" || a == "--test");
    let n = if quick { 200_000 } else { 20_000_000 };
    // `-- sliding` (or tumbling, session) runs one scenario.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if wanted("tumbling") {
        run(
            "tumbling",
            n,
            10_000,
            Tumbling::of(Duration::from_secs(10)).into(),
            (Count, Sum::of(|e: &Event| e.2)),
        )?;
    }
    if wanted("sliding") {
        run(
            "sliding",
            n,
            10_000,
            Sliding::of(Duration::from_secs(10), Duration::from_secs(1)).into(),
            Count,
        )?;
    }
    if wanted("session") {
        run(
            "session",
            n,
            100_000,
            Session::with_gap(Duration::from_secs(5)).into(),
            Count,
        )?;
    }
    Ok(())
}
