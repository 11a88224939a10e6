//! Quick start: a generated click stream, per-user click counts per 10-second
//! event-time bucket computed by a keyed process function with timers, late
//! clicks sent to a side output, and the job summary.
//!
//! Run: `cargo run --release --example process_function`

// `main` is public so the integration tests can run this example too.
#![allow(unreachable_pub)]

use std::time::Duration;

use tideline::prelude::*;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Click {
    user: u32,
    ts: i64,
}

const BUCKET_MS: i64 = 10_000;
const COUNTS: MapStateDescriptor<i64, u64> = MapStateDescriptor::new("counts-by-bucket");

/// Counts each user's clicks per bucket; emits `(user, bucket_start, count)`
/// once the watermark passes the bucket's end. Clicks for a bucket that was
/// already emitted go to the `late` side output.
#[derive(Clone)]
struct CountPerBucket {
    late: OutputTag<Click>,
}

impl KeyedProcessFunction<u32, Click, (u32, i64, u64)> for CountPerBucket {
    fn process_element(
        &mut self,
        click: Click,
        ctx: &mut ProcessContext<'_, u32, (u32, i64, u64)>,
    ) -> Result<()> {
        let bucket = click.ts.div_euclid(BUCKET_MS) * BUCKET_MS;
        let last_ms = bucket + BUCKET_MS - 1;
        // Judged by the click's own partition's watermark (not the
        // operator's), so the late clicks are the same in every run.
        if last_ms <= ctx.lateness_watermark().millis() {
            ctx.output(&self.late, click);
            return Ok(());
        }
        let mut counts = ctx.map_state(&COUNTS)?;
        let n = counts.get(&bucket).copied().unwrap_or(0) + 1;
        counts.insert(bucket, n);
        ctx.register_event_time_timer(last_ms);
        Ok(())
    }

    fn on_timer(
        &mut self,
        at: EventTime,
        ctx: &mut ProcessContext<'_, u32, (u32, i64, u64)>,
    ) -> Result<()> {
        let bucket = at.millis() + 1 - BUCKET_MS;
        let count = ctx.map_state(&COUNTS)?.remove(&bucket).unwrap_or(0);
        let user = *ctx.key();
        ctx.collect((user, bucket, count));
        Ok(())
    }
}

/// Builds and runs the job; fails if any click was lost or counted twice.
pub fn main() -> Result<()> {
    let job = Job::new().parallelism(2).mode(ExecutionMode::Bounded);
    // 20,000 clicks of 8 users, ~10 per second of event time, up to 3 s out of order.
    let clicks = job.source(
        GeneratorSource::new(|i: u64, rng: &mut SmallRng| Click {
            user: rng.gen_range(0..8),
            ts: i as i64 * 100 - rng.gen_range(0..3_000),
        })
        .with_count(20_000)
        .with_partitions(2)
        .with_seed(42),
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(2))
            .with_timestamps(|c: &Click| c.ts),
    );
    let late = OutputTag::<Click>::new("late-clicks");
    let counts = clicks
        .key_by(|c: &Click| c.user)
        .process(CountPerBucket { late: late.clone() })
        .named("count_per_bucket");
    let results = CollectSink::new();
    counts.sink(results.clone());
    let late_clicks = CollectSink::new();
    counts.side_output(&late).sink(late_clicks.clone());

    let summary = job.run()?;

    let mut rows = results.values();
    rows.sort();
    for (user, bucket, count) in rows.iter().filter(|(u, _, _)| *u == 0).take(5) {
        println!(
            "user {user} bucket [{bucket}, {}) clicks {count}",
            bucket + BUCKET_MS
        );
    }
    let counted: u64 = rows.iter().map(|(_, _, c)| c).sum();
    println!("{summary}");
    println!(
        "clicks=20000 counted={counted} late={} buckets={}",
        late_clicks.len(),
        rows.len()
    );
    if counted + late_clicks.len() as u64 != 20_000 {
        return Err(Error::Internal("clicks were lost or double counted".into()));
    }
    Ok(())
}
