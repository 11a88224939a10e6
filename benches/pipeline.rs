//! Throughput of the engine core, printed as events/s.
//!
//! `cargo bench --bench pipeline` runs every scenario at full size;
//! `cargo bench --bench pipeline -- --quick` runs them small (a smoke test).
//!
//! Scenarios (all with the generator source included in the measurement):
//! - `chained`: generator → map → filter → sink at parallelism 1, one task;
//! - `keyed`: generator (2 partitions) → key_by (10,000 keys) → counting
//!   keyed process function at parallelism 2;
//! - `backpressure`: an unbounded generator into a sink slowed to ~1 M
//!   records/s for a few seconds, printing the process RSS over time.

#[path = "common/mod.rs"]
mod common;
use common::CountSink;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tideline::prelude::*;

fn report(name: &str, events: u64, elapsed: Duration) {
    let rate = events as f64 / elapsed.as_secs_f64();
    println!(
        "{name:<14} events={events} seconds={:.3} events_per_s={:.0} ({:.2} M/s)",
        elapsed.as_secs_f64(),
        rate,
        rate / 1e6
    );
}

fn chained(n: u64) -> Result<()> {
    let job = Job::new().mode(ExecutionMode::Bounded);
    let count = CountSink::default();
    job.source(
        GeneratorSource::new(|i: u64, _: &mut SmallRng| i).with_count(n),
        WatermarkStrategy::none(),
    )
    .map(|x| x.wrapping_mul(3))
    .filter(|x| x & 1 == 0)
    .sink(count.clone());
    let summary = job.run()?;
    assert_eq!(count.0.load(Ordering::Relaxed), n.div_ceil(2));
    report("chained p=1", n, summary.elapsed);
    Ok(())
}

const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("count");

#[derive(Clone)]
struct CountPerKey;

impl KeyedProcessFunction<u64, u64, (u64, u64)> for CountPerKey {
    fn process_element(
        &mut self,
        _v: u64,
        ctx: &mut ProcessContext<'_, u64, (u64, u64)>,
    ) -> Result<()> {
        let first = {
            let mut count = ctx.value_state(&COUNT)?;
            let n = count.get_or_insert_with(|| 0);
            *n += 1;
            *n == 1
        };
        if first {
            ctx.register_event_time_timer(EventTime::MAX);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _at: EventTime,
        ctx: &mut ProcessContext<'_, u64, (u64, u64)>,
    ) -> Result<()> {
        let n = ctx.value_state(&COUNT)?.get().copied().unwrap_or(0);
        let key = *ctx.key();
        ctx.collect((key, n));
        Ok(())
    }
}

fn keyed(n: u64) -> Result<()> {
    let job = Job::new().parallelism(2).mode(ExecutionMode::Bounded);
    let totals = CollectSink::new();
    job.source(
        GeneratorSource::new(|i: u64, _: &mut SmallRng| i)
            .with_count(n)
            .with_partitions(2),
        WatermarkStrategy::none(),
    )
    .key_by(|x| x % 10_000)
    .process(CountPerKey)
    .sink(totals.clone());
    let summary = job.run()?;
    let counted: u64 = totals.values().iter().map(|(_, c)| c).sum();
    assert_eq!(counted, n);
    report("keyed p=2", n, summary.elapsed);
    Ok(())
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A sink that spins ~1 µs per record: far slower than the source.
#[derive(Clone, Default)]
struct SlowSink(Arc<AtomicU64>);

impl Sink<u64> for SlowSink {
    fn write_batch(&mut self, batch: Vec<Record<u64>>) -> Result<()> {
        let until = Instant::now() + Duration::from_micros(batch.len() as u64);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn backpressure(seconds: u64) -> Result<()> {
    let job = Job::new().parallelism(1);
    let produced = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&produced);
    let sink = SlowSink::default();
    job.source(
        GeneratorSource::new(move |i: u64, _: &mut SmallRng| {
            counter.fetch_add(1, Ordering::Relaxed);
            i
        }),
        WatermarkStrategy::none(),
    )
    .key_by(|x| x % 100)
    .partitioned()
    .sink(sink.clone());
    let handle = job.spawn()?;
    let mut samples = Vec::new();
    for s in 0..=seconds * 2 {
        std::thread::sleep(Duration::from_millis(500));
        let p = produced.load(Ordering::Relaxed);
        let c = sink.0.load(Ordering::Relaxed);
        samples.push((s as f64 / 2.0 + 0.5, rss_mb(), p - c));
    }
    handle.stop_and_drain();
    handle.join()?;
    for (t, rss, in_flight) in &samples {
        println!("backpressure   t={t:.1}s rss_mb={rss:.1} in_flight_records={in_flight}");
    }
    let first = samples.first().map_or(0.0, |s| s.1);
    let max = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    println!("backpressure   rss_first_mb={first:.1} rss_max_mb={max:.1}");
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; without it (`cargo test`) runs are small.
    let quick = std::env::args().all(|a| a != "--bench")
        || std::env::args().any(|a| a == "--quick" || a == "--test");
    let (n, secs) = if quick {
        (200_000, 1)
    } else {
        (100_000_000, 4)
    };
    chained(n)?;
    keyed(n / 4)?;
    backpressure(secs)?;
    Ok(())
}
