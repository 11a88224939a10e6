//! The Nexmark source: live generation equals replay, partitions cover every
//! event once, a reader resumes exactly at its offset, bad settings are
//! refused, and queries give the same answer on RocksDB state (`rocksdb`
//! feature).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use tideline::prelude::*;
use tideline::{ReaderContext, SourceOutput, SourceStatus};
use tideline_nexmark::{Event, NexmarkConfig, NexmarkSource};

fn config() -> NexmarkConfig {
    NexmarkConfig {
        events_per_second: 1_000,
        ..NexmarkConfig::default()
    }
}

fn context(partitions: usize) -> ReaderContext {
    ReaderContext {
        clock: Arc::new(ManualClock::new(0)),
        partitions,
        subtask: tideline::SubtaskInfo {
            subtask: 0,
            parallelism: 1,
            isolated: false,
        },
    }
}

/// Reads a partition to its end in batches of `batch`.
fn drain(reader: &mut dyn tideline::SourceReader<Event>, batch: usize) -> Vec<Event> {
    let mut all = Vec::new();
    loop {
        let mut out = SourceOutput::new(batch);
        let status = reader.poll(&mut out).unwrap();
        all.extend(out.take_records().into_iter().map(|r| {
            assert_eq!(r.timestamp.millis(), r.value.date_time());
            r.value
        }));
        if status == SourceStatus::Finished {
            return all;
        }
    }
}

#[test]
fn live_partitions_together_equal_the_pre_generated_events() {
    let expected = config().generate(5_000).unwrap();
    for partitions in [1, 3] {
        let source = NexmarkSource::live(config())
            .with_count(5_000)
            .with_partitions(partitions);
        let mut got: Vec<(usize, Event)> = Vec::new();
        for p in 0..partitions {
            let mut reader = source.create_reader(p, &context(partitions)).unwrap();
            let events = drain(reader.as_mut(), 700);
            // Partition p holds events p, p + P, p + 2P, ... in order.
            got.extend(
                events
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| (p + i * partitions, e)),
            );
        }
        got.sort_by_key(|(i, _)| *i);
        let got: Vec<Event> = got.into_iter().map(|(_, e)| e).collect();
        assert!(got == expected, "{partitions} partitions");
    }
}

#[test]
fn timestamps_never_decrease_within_a_partition() {
    let events = config().generate(20_000).unwrap();
    assert!(events
        .windows(2)
        .all(|w| w[0].date_time() <= w[1].date_time()));
    let span = events.last().unwrap().date_time() - events[0].date_time();
    assert!(
        (19_900..=20_000).contains(&span),
        "1,000 events per second: {span} ms"
    );
}

#[test]
fn a_reader_resumes_right_after_its_offset() {
    let all = config().generate(3_000).unwrap();
    for source in [
        NexmarkSource::live(config()).with_count(3_000),
        NexmarkSource::replay(all.clone()),
    ] {
        let source = source.with_partitions(2);
        let ctx = context(2);
        let mut first = source.create_reader(1, &ctx).unwrap();
        let mut out = SourceOutput::new(333);
        first.poll(&mut out).unwrap();
        let head: Vec<Event> = out.take_records().into_iter().map(|r| r.value).collect();
        let offset = first.offset().unwrap();
        assert_eq!(offset.0, vec![333]);
        let mut resumed = source.create_reader_at(1, &ctx, &offset).unwrap();
        let tail = drain(resumed.as_mut(), 1_000);
        let got: Vec<Event> = head.into_iter().chain(tail).collect();
        let expected: Vec<Event> = all.iter().skip(1).step_by(2).cloned().collect();
        assert!(got == expected);
    }
}

#[test]
fn bad_settings_are_refused_with_their_name() {
    let zero = NexmarkConfig {
        events_per_second: 0,
        ..NexmarkConfig::default()
    };
    let err = zero.generate(1).unwrap_err().to_string();
    assert!(err.contains("events_per_second"), "{err}");
    let err = NexmarkSource::live(config())
        .with_rate(-1.0)
        .create_reader(0, &context(1))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("rate"), "{err}");
    let err = "q4"
        .parse::<tideline_nexmark::Query>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("'q4'") && err.contains("q11"), "{err}");
}

#[test]
fn a_paced_source_emits_only_what_is_due() {
    let clock = Arc::new(ManualClock::new(1_000));
    let ctx = ReaderContext {
        clock: Arc::clone(&clock) as Arc<dyn tideline::engine::time::Clock>,
        partitions: 1,
        subtask: tideline::SubtaskInfo {
            subtask: 0,
            parallelism: 1,
            isolated: false,
        },
    };
    // 2,000 events per second: 2 per millisecond, plus the first at once.
    let source = NexmarkSource::live(config()).with_rate(2_000.0);
    let start = source.pacing_start();
    let mut reader = source.create_reader(0, &ctx).unwrap();
    let mut emitted = 0;
    for (advance, expected_total) in [(0, 1), (10, 21), (0, 21), (500, 1_021)] {
        clock.advance(std::time::Duration::from_millis(advance));
        let mut out = SourceOutput::new(10_000);
        reader.poll(&mut out).unwrap();
        emitted += out.take_records().len();
        assert_eq!(emitted, expected_total);
    }
    assert_eq!(start.millis(), Some(1_000));
}

/// The same queries on RocksDB state (`rocksdb` feature).
#[cfg(feature = "rocksdb")]
mod rocksdb {
    use super::*;
    use tideline::{RocksDbOptions, StateBackend};
    use tideline_nexmark::queries;

    /// Runs `query` with `backend` and returns its sorted output.
    fn run_with<T: tideline::Data + Ord>(
        backend: Option<StateBackend>,
        events: &[Event],
        query: impl Fn(&Stream<Event>) -> Stream<T>,
    ) -> Vec<T> {
        let mut job = Job::new().parallelism(2).mode(ExecutionMode::Bounded);
        if let Some(backend) = backend {
            job = job.state_backend(backend);
        }
        let out = CollectSink::new();
        query(&job.source(
            NexmarkSource::replay(events.to_vec()).with_partitions(2),
            WatermarkStrategy::monotonous(),
        ))
        .sink(out.clone());
        job.run().unwrap();
        let mut values = out.values();
        values.sort();
        values
    }

    #[test]
    fn stateful_queries_agree_on_rocksdb_state() {
        let events = config().generate(30_000).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let rocks = || {
            Some(StateBackend::RocksDb(RocksDbOptions::new(
                dir.path().join(format!("{}", next_dir_id())),
            )))
        };
        let memory = run_with(None, &events, queries::q3);
        assert!(!memory.is_empty());
        assert!(memory == run_with(rocks(), &events, queries::q3), "q3");
        let memory = run_with(None, &events, queries::q5);
        assert!(memory == run_with(rocks(), &events, queries::q5), "q5");
        let memory = run_with(None, &events, queries::q7);
        assert!(memory == run_with(rocks(), &events, queries::q7), "q7");
        let memory = run_with(None, &events, queries::q11);
        assert!(memory == run_with(rocks(), &events, queries::q11), "q11");
    }

    fn next_dir_id() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}
