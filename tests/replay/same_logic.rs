//! The project's promise, tested: one pipeline function, run live over a
//! generator whose raw events are archived, then replayed from the archive
//! in arrival order (identical outputs, identical late records), then in
//! event-time order (equal to a brute-force reference of complete windows).
//! Plus write/read round trips for every format.

use std::collections::BTreeMap;
use std::time::Duration;

use tideline::connectors::file::{CsvSink, FileSource, JsonLinesSink, ParquetSink, ReplayOrder};
use tideline::prelude::*;
use tideline::window::Span;

use crate::window_file::{pipeline, Event, WindowRow};

const BATCH: usize = 64;
const BOUND_MS: u64 = 200;

fn strategy() -> WatermarkStrategy<Event> {
    WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(BOUND_MS))
        .with_timestamps(|e: &Event| e.ts)
}

/// Runs `pipeline` over `events`; returns window rows and late events, sorted.
fn run(job: Job, events: Stream<Event>) -> Result<(Vec<WindowRow>, Vec<Event>, JobSummary)> {
    let (rows, late) = pipeline(
        &events,
        Tumbling::of(Duration::from_secs(1)).into(),
        Span::millis(0),
    );
    let (out, late_out) = (CollectSink::new(), CollectSink::new());
    rows.sink(out.clone());
    late.sink(late_out.clone());
    let summary = job.run()?;
    let (mut rows, mut late) = (out.values(), late_out.values());
    rows.sort();
    late.sort();
    Ok((rows, late, summary))
}

/// Live event `i`: 5 ms apart, 1 in 20 up to 3 s out of order, the rest up
/// to 150 ms; `behind` ms earlier still.
fn live_event(i: u64, rng: &mut SmallRng, behind: i64) -> Event {
    let delay = if rng.gen_ratio(1, 20) {
        rng.gen_range(0..3_000)
    } else {
        rng.gen_range(0..150)
    };
    Event {
        key: rng.gen_range(0..7),
        value: rng.gen_range(-100..100),
        ts: i as i64 * 5 - delay - behind,
    }
}

#[test]
fn live_run_replayed_from_its_archive_gives_the_same_answers() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let archive = dir.path().join("archive/events.parquet");
    const N: u64 = 20_000;

    // (a) live: streaming, out-of-order events (1 in 20 up to 3 s late), archived raw.
    let live_job = Job::new().parallelism(2).batch_size(BATCH);
    let live = live_job.source(
        GeneratorSource::new(|i: u64, rng: &mut SmallRng| live_event(i, rng, 0))
            .with_count(N)
            .with_seed(21),
        strategy(),
    );
    live.sink(ParquetSink::new(&archive)?);
    let (live_rows, live_late, live_summary) = run(live_job, live)?;
    assert!(
        live_late.len() > 100,
        "the live run must have late data: {}",
        live_late.len()
    );
    let counted: u64 = live_rows.iter().map(|r| r.count).sum();
    assert_eq!(counted + live_late.len() as u64, N);
    assert_eq!(live_summary.late_records, live_late.len() as u64);

    // (b) replay in arrival order, at another parallelism: the same answers.
    let replay_job = Job::new()
        .parallelism(3)
        .batch_size(BATCH)
        .mode(ExecutionMode::Bounded);
    let replayed = replay_job.source(
        FileSource::<Event>::new(archive.to_str().unwrap_or_default())?,
        strategy(),
    );
    let (rows, late, _) = run(replay_job, replayed)?;
    assert_eq!(rows, live_rows, "same windows");
    assert_eq!(late, live_late, "same late records");

    // (c) replay in event-time order: complete windows, equal to brute force.
    let sorted_job = Job::new()
        .parallelism(2)
        .batch_size(BATCH)
        .mode(ExecutionMode::Bounded);
    let sorted = sorted_job.source(
        FileSource::<Event>::new(archive.to_str().unwrap_or_default())?
            .event_time(|e: &Event| e.ts)
            .order(ReplayOrder::EventTime),
        strategy(),
    );
    let (rows, late, _) = run(sorted_job, sorted)?;
    assert!(late.is_empty());
    let all: Vec<Event> = {
        let job = Job::new().mode(ExecutionMode::Bounded);
        let out = CollectSink::new();
        job.source(
            FileSource::<Event>::new(archive.to_str().unwrap_or_default())?,
            WatermarkStrategy::none(),
        )
        .sink(out.clone());
        job.run()?;
        out.values()
    };
    assert_eq!(all.len() as u64, N);
    let mut reference: BTreeMap<(i64, i64), WindowRow> = BTreeMap::new();
    for e in &all {
        let start = e.ts.div_euclid(1_000) * 1_000;
        let row = reference.entry((e.key, start)).or_insert(WindowRow {
            key: e.key,
            window_start: start,
            window_end: start + 1_000,
            count: 0,
            sum: 0,
            min: i64::MAX,
            max: i64::MIN,
        });
        row.count += 1;
        row.sum += e.value;
        row.min = row.min.min(e.value);
        row.max = row.max.max(e.value);
    }
    let mut expected: Vec<WindowRow> = reference.into_values().collect();
    expected.sort();
    assert_eq!(rows, expected);
    Ok(())
}

/// Several live partitions, archived per partition by `ArchivingSource`,
/// replay with identical windows and late records at other parallelisms,
/// one source partition per archive folder.
#[test]
fn multi_partition_live_run_replays_exactly_from_its_partitioned_archive() -> Result<()> {
    use tideline::connectors::file::ArchivingSource;
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let archive = dir.path().join("archive");
    const N: u64 = 24_000;
    let live_job = Job::new().parallelism(2).batch_size(BATCH);
    let generator = GeneratorSource::new(|i: u64, rng: &mut SmallRng| {
        // Partition 4 of 5 runs 2 s behind the others in event time.
        live_event(i, rng, if i % 5 == 4 { 2_000 } else { 0 })
    })
    .with_count(N)
    .with_partitions(5)
    .with_seed(23);
    let live = live_job.source(ArchivingSource::new(generator, &archive), strategy());
    let (live_rows, live_late, _) = run(live_job, live)?;
    assert!(live_late.len() > 100, "late data: {}", live_late.len());
    let counted: u64 = live_rows.iter().map(|r| r.count).sum();
    assert_eq!(counted + live_late.len() as u64, N);

    for parallelism in [1, 4] {
        let replay_job = Job::new()
            .parallelism(parallelism)
            .batch_size(BATCH * 3)
            .mode(ExecutionMode::Bounded);
        let files =
            FileSource::<Event>::new(archive.to_str().unwrap_or_default())?.partition_per_folder();
        assert_eq!(files.partition_files().len(), 5, "one partition per folder");
        let replayed = replay_job.source(files, strategy());
        let (rows, late, _) = run(replay_job, replayed)?;
        assert_eq!(rows, live_rows, "p={parallelism}: same windows");
        assert_eq!(late, live_late, "p={parallelism}: same late records");
    }
    Ok(())
}

#[test]
fn every_format_round_trips_through_our_sink_and_source() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let events: Vec<Event> = (0..500)
        .map(|i| Event {
            key: i % 9,
            value: i * 3 - 700,
            ts: i * 11,
        })
        .collect();
    for name in ["out.csv", "out.jsonl", "out.parquet"] {
        let path = dir.path().join(name);
        let job = Job::new().mode(ExecutionMode::Bounded).parallelism(2);
        let stream = job.source(VecSource::new(events.clone()), WatermarkStrategy::none());
        match name {
            "out.csv" => stream.sink(CsvSink::new(&path)?),
            "out.jsonl" => stream.sink(JsonLinesSink::new(&path)?),
            _ => stream.sink(ParquetSink::new(&path)?),
        };
        job.run()?;
        let job = Job::new().mode(ExecutionMode::Bounded);
        let back = CollectSink::new();
        let read = job.source(
            FileSource::<Event>::new(path.to_str().unwrap_or_default())?,
            WatermarkStrategy::none(),
        );
        read.sink(back.clone());
        let dead = CollectSink::new();
        read.dead_letters().sink(dead.clone());
        job.run()?;
        assert!(dead.is_empty(), "{name}: {:?}", dead.values());
        assert_eq!(back.values(), events, "{name}");
    }
    Ok(())
}

/// What an archive cannot hold is refused, not silently lost: records the
/// source timestamped itself (only values are archived), and a directory
/// that already holds a partition (an earlier run's would be replayed too).
#[test]
fn archive_refuses_what_a_replay_could_not_reproduce() -> Result<()> {
    use tideline::connectors::file::ArchivingSource;
    let event = |ts| Event {
        key: 1,
        value: 1,
        ts,
    };
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let job = Job::new().mode(ExecutionMode::Bounded);
    job.source(
        ArchivingSource::new(
            VecSource::timestamped(vec![(5, event(5)), (6, event(6))]),
            dir.path().join("a"),
        ),
        WatermarkStrategy::<Event>::none(),
    )
    .sink(CollectSink::new());
    let err = job.run().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("cannot be archived"), "{err}");

    let make = || {
        let job = Job::new().mode(ExecutionMode::Bounded);
        job.source(
            ArchivingSource::new(
                VecSource::new(vec![event(1), event(2)]),
                dir.path().join("b"),
            ),
            WatermarkStrategy::<Event>::none(),
        )
        .sink(CollectSink::new());
        job.run()
    };
    make()?;
    let err = make().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("archive into an empty directory"), "{err}");
    Ok(())
}
