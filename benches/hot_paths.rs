//! Criterion micro-benchmarks of the per-record hot paths.
//!
//! `cargo bench --bench hot_paths` measures; `cargo test` runs each once
//! (criterion's test mode), so they cannot rot.
//!
//! - `window_assign/*`: the window(s) of one record, per assigner;
//! - `key/*`: hashing a key to its key group and subtask (what `key_by` does
//!   per record), and a keyed exchange through a whole job at parallelism 2
//!   (per 100,000 records);
//! - `state/*`: a read-modify-write of a keyed `u64` value in a hot key set,
//!   on the memory and (with the `rocksdb` feature) RocksDB backends
//!   (RocksDB with a write-back cache smaller than the key set, so it reads
//!   from and writes to the database);
//! - `panes/*`: combining the five 2 s panes of a 10 s sliding window
//!   (count + sum + max accumulators).

#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tideline::prelude::*;
use tideline::state::key_group::{key_group_of, subtask_for_key_group};
use tideline::state::{KeyedState, StateScope};
use tideline::window::WindowKind;
#[cfg(feature = "rocksdb")]
use tideline::RocksDbOptions;
use tideline::StateBackend;

fn window_assign(c: &mut Criterion) {
    let mut group = c.benchmark_group("window_assign");
    group.throughput(Throughput::Elements(1));
    let kinds: [(&str, WindowKind<u64>); 3] = [
        ("tumbling_10s", Tumbling::of(Duration::from_secs(10)).into()),
        (
            "sliding_10s_2s",
            Sliding::of(Duration::from_secs(10), Duration::from_secs(2)).into(),
        ),
        (
            "session_10s",
            Session::with_gap(Duration::from_secs(10)).into(),
        ),
    ];
    for (name, kind) in kinds {
        let mut out = Vec::with_capacity(8);
        let mut ts = 1_436_918_400_000_i64;
        group.bench_function(name, |b| {
            b.iter(|| {
                ts += 7;
                out.clear();
                kind.assign(black_box(ts), &0, &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn key(c: &mut Criterion) {
    let mut group = c.benchmark_group("key");
    group.throughput(Throughput::Elements(1));
    let mut k = 0_u64;
    group.bench_function("u64_to_subtask", |b| {
        b.iter(|| {
            k = k.wrapping_add(0x9E37_79B9);
            let g = key_group_of(black_box(&k), 128);
            black_box(g.map(|g| subtask_for_key_group(g, 128, 2)))
        })
    });
    let names: Vec<String> = (0..1024).map(|i| format!("bidder-{i:08}")).collect();
    let mut i = 0;
    group.bench_function("string_to_subtask", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let g = key_group_of(black_box(names[i].as_str()), 128);
            black_box(g.map(|g| subtask_for_key_group(g, 128, 2)))
        })
    });
    const N: u64 = 100_000;
    group.throughput(Throughput::Elements(N));
    group.sample_size(10);
    group.bench_function("exchange_p2_100k", |b| {
        b.iter(|| {
            let job = Job::new().parallelism(2).mode(ExecutionMode::Bounded);
            let out = CollectSink::new();
            job.source(
                GeneratorSource::new(|i: u64, _: &mut SmallRng| i)
                    .with_count(N)
                    .with_partitions(2),
                WatermarkStrategy::none(),
            )
            .key_by(|x| x % 10_000)
            .partitioned()
            .filter(|x| x % 1_000 == 0)
            .sink(out.clone());
            job.run().map(|_| out.len())
        })
    });
    group.finish();
}

const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("count");
const KEYS: u64 = 10_000;

fn state(c: &mut Criterion) {
    let mut group = c.benchmark_group("state");
    group.throughput(Throughput::Elements(1));
    let dir = std::env::temp_dir().join(format!("tideline-hot-paths-{}", std::process::id()));
    #[allow(unused_mut)]
    let mut backends = vec![("memory", StateBackend::Memory)];
    #[cfg(feature = "rocksdb")]
    backends.push((
        "rocksdb",
        StateBackend::RocksDb(RocksDbOptions::new(&dir).cache_entries(1_000)),
    ));
    for (name, backend) in backends {
        let Ok(mut state) =
            KeyedState::<u64>::open(&backend, StateScope::for_subtask("bench", 0, 1, 128))
        else {
            eprintln!("state/{name}: cannot open the backend; skipped");
            continue;
        };
        let mut key = 0_u64;
        group.bench_function(format!("{name}_get_put"), |b| {
            b.iter(|| {
                key = (key + 7_919) % KEYS;
                match state.value(&COUNT, &key, &()) {
                    Ok(mut v) => {
                        *v.get_or_insert_with(|| 0) += 1;
                    }
                    Err(e) => panic!("state/{name}: {e}"),
                }
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn panes(c: &mut Criterion) {
    let mut group = c.benchmark_group("panes");
    group.throughput(Throughput::Elements(1));
    let agg = (Count, Sum::of(|v: &u64| *v), Max::of(|v: &u64| *v));
    let filled: Vec<_> = (0..5_u64)
        .map(|p| {
            let mut acc = AggregateFunction::<u64>::create(&agg);
            for v in 0..20 {
                AggregateFunction::<u64>::add(&agg, &mut acc, p * 100 + v);
            }
            acc
        })
        .collect();
    group.bench_function("combine_5_panes", |b| {
        b.iter_batched(
            || AggregateFunction::<u64>::create(&agg),
            |mut window| {
                for pane in &filled {
                    AggregateFunction::<u64>::merge(&agg, &mut window, pane);
                }
                black_box(AggregateFunction::<u64>::result(&agg, window))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = hot_paths;
    // Short runs: these paths take nanoseconds, two seconds is plenty.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = window_assign, key, state, panes
}
criterion_main!(hot_paths);
