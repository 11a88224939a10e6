//! Criterion benchmark of timers at the end of input: `N` timers, each at
//! its own timestamp (the worst case for a timestamp-bucketed service),
//! drained the way a keyed process operator drains them when the final
//! watermark arrives (`pop_due_before(EventTime::MAX, generation)`).
//!
//! `cargo bench --bench timers` measures with `N` = 1,000,000; set
//! `TIDELINE_BENCH_TIMERS` to another count to see how the cost scales.
//! `cargo test` runs it once, small (criterion's test mode), so it cannot rot.

#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tideline::engine::time::TimerService;
use tideline::EventTime;

/// `TIDELINE_BENCH_TIMERS`, else 1,000,000 under `cargo bench` (which passes
/// `--bench`) and 10,000 under `cargo test`, which only checks it runs.
fn timer_count() -> u64 {
    let measuring = std::env::args().any(|a| a == "--bench");
    std::env::var("TIDELINE_BENCH_TIMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 1_000_000 } else { 10_000 })
}

fn end_of_input(c: &mut Criterion) {
    let n = timer_count();
    let mut group = c.benchmark_group("timers");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    group.bench_function(format!("end_of_input_distinct_{n}"), |b| {
        b.iter_batched(
            || {
                let mut timers = TimerService::<u64, ()>::new();
                for k in 0..n {
                    // Reversed, so registration order differs from firing order.
                    let at = i64::try_from(n - k).unwrap_or(i64::MAX);
                    timers.register(&k, &(), EventTime::from_millis(at));
                }
                timers
            },
            |mut timers| {
                let limit = timers.generation();
                let mut fired = 0_u64;
                while let Some(timer) = timers.pop_due_before(EventTime::MAX, limit) {
                    black_box(timer);
                    fired += 1;
                }
                assert_eq!(fired, n);
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = timers;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    targets = end_of_input
}
criterion_main!(timers);
