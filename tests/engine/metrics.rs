//! The job's metrics registry on a scripted job: exact counts per operator
//! and subtask, watermark lag under a manual clock, late records and dead
//! letters by reason, source positions, state sizes, checkpoints, status,
//! and totals that survive a restart.

use std::time::Duration;

use tideline::metrics::{EdgeKind, GraphEdge, JobStatus, OperatorKind, PartitionStatus};
use tideline::prelude::*;
use tideline::testing::TestJob;
use tideline::window::Span;

/// `(key, event time)`, or text that does not parse.
fn parse(line: &str) -> std::result::Result<(u32, i64), String> {
    let (key, ts) = line.split_once(',').ok_or("expected 'key,ts'")?;
    Ok((
        key.parse().map_err(|_| format!("bad key '{key}'"))?,
        ts.parse().map_err(|_| format!("bad time '{ts}'"))?,
    ))
}

/// Sends `line` at the event time it names (a bad line at 0).
fn send(input: &tideline::connectors::SourceHandle<String>, line: &str) -> Result<()> {
    let ts = parse(line).map_or(0, |(_, ts)| ts);
    input.send_at(ts, line.to_string())
}

#[test]
fn a_scripted_job_reports_exact_metrics() -> Result<()> {
    let t = TestJob::from_job(Job::new().parallelism(2));
    let metrics = t.job().metrics();
    assert_eq!(metrics.snapshot().job.status, JobStatus::Created);
    assert!(metrics.graph().operators.is_empty(), "not built yet");

    let (input, lines) = t.push_source::<String>(WatermarkStrategy::none());
    let late_tag = OutputTag::<(u32, i64)>::new("late");
    let windowed = lines
        .try_map(|line: &String| parse(line))
        .named("parse")
        .key_by(|e: &(u32, i64)| e.0)
        .window(Tumbling::of(Span::millis(1_000)))
        .side_output_late_data(&late_tag);
    let counts = windowed.aggregate(Count).named("count");
    let results = t.collect(&counts);
    let late = t.collect(&counts.side_output(&late_tag));
    let clock = t.clock();
    let mut run = t.start()?;

    let graph = metrics.graph();
    let names: Vec<&str> = graph.operators.iter().map(|o| o.name.as_str()).collect();
    // Counting is exact, so records are folded per key and window before
    // the exchange (`window_combine`), chained to the parser.
    assert_eq!(
        names,
        [
            "push_source",
            "parse",
            "window_combine",
            "count",
            "collect",
            "collect#2"
        ]
    );
    let kinds: Vec<OperatorKind> = graph.operators.iter().map(|o| o.kind).collect();
    assert_eq!(
        kinds,
        [
            OperatorKind::Source,
            OperatorKind::Operator,
            OperatorKind::Operator,
            OperatorKind::Operator,
            OperatorKind::Sink,
            OperatorKind::Sink
        ]
    );
    let edge = |from, to, kind| GraphEdge { from, to, kind };
    assert_eq!(
        graph.edges,
        [
            edge(0, 1, EdgeKind::Chained),
            edge(1, 2, EdgeKind::Chained),
            edge(2, 3, EdgeKind::Keyed),
            edge(3, 4, EdgeKind::Chained),
            edge(3, 5, EdgeKind::Chained),
        ]
    );
    // One partition: the source runs as one subtask, the rest as two.
    let parallelism: Vec<usize> = graph.operators.iter().map(|o| o.parallelism).collect();
    assert_eq!(parallelism, [1, 1, 1, 2, 2, 2]);
    assert_eq!(graph.operators[1].task, "push_source");
    assert_eq!(graph.operators[2].task, "push_source");
    assert_eq!(graph.operators[3].task, "key_by");
    assert_eq!(metrics.snapshot().job.status, JobStatus::Running);

    // Ten lines, one of them bad; keys 1..=3 in window [0, 1000).
    for line in [
        "1,100", "2,200", "3,300", "1,400", "oops", "2,500", "3,600", "1,700", "2,800", "3,900",
    ] {
        send(&input, line)?;
    }
    input.watermark(999)?;
    clock.set(10_000);
    run.step()?;

    let s = metrics.snapshot();
    assert_eq!(s.time_ms, 10_000);
    let source = s.operator("push_source").map(|o| o.total());
    assert_eq!(source.map(|t| (t.records_in, t.records_out)), Some((0, 10)));
    let parse_op = s.operator("parse").map(|o| o.total());
    assert_eq!(
        parse_op.map(|t| (t.records_in, t.records_out)),
        Some((10, 9))
    );
    assert_eq!(s.dead_letters, 1);
    assert_eq!(s.dead_letters_by_reason.len(), 1);
    assert_eq!(s.dead_letters_by_reason[0].operator, "parse");
    assert_eq!(s.dead_letters_by_reason[0].reason, "expected 'key,ts'");
    assert_eq!(s.dead_letters_by_reason[0].count, 1);
    assert_eq!(s.recent_dead_letters.len(), 1);
    assert_eq!(s.recent_dead_letters[0].record, "\"oops\"");
    assert_eq!(s.recent_dead_letters[0].at_ms, 10_000);

    // The window fired (watermark 999 = end - 1): three keys, nine records,
    // folded into one partial per key before the exchange.
    let combine = s.operator("window_combine").map(|o| o.total());
    assert_eq!(combine.map(|t| (t.records_in, t.records_out)), Some((9, 3)));
    let Some(count) = s.operator("count").cloned() else {
        panic!("no count operator in {s:?}");
    };
    assert_eq!(count.subtasks.len(), 2);
    let total = count.total();
    assert_eq!((total.records_in, total.records_out), (3, 3));
    // Per subtask: the keys split over the two subtasks, all arrive.
    let per_subtask: u64 = count.subtasks.iter().map(|s| s.records_in).sum();
    assert_eq!(per_subtask, 3);
    for subtask in &count.subtasks {
        assert_eq!(subtask.watermark_ms, Some(999));
        assert_eq!(subtask.watermark_lag_ms, Some(10_000 - 999));
        assert_eq!(subtask.queue_fill, None, "local channels are unbounded");
    }
    assert_eq!(results.values().iter().map(|r| r.value).sum::<u64>(), 9);

    // Where the partition stands: ten records read, nothing queued.
    assert_eq!(s.sources.len(), 1);
    let partition = &s.sources[0];
    assert_eq!(
        (partition.source.as_str(), partition.partition),
        ("push_source", 0)
    );
    assert_eq!((partition.position, partition.lag), (Some(10), Some(0)));
    assert_eq!(partition.status, PartitionStatus::Active);
    assert_eq!(partition.watermark_ms, Some(999));
    // What a progress bar shows of it: no total, the partition is unbounded.
    let line = tideline::progress::ProgressTracker::new().line(&s);
    assert_eq!(line.records, 10);
    assert_eq!(line.done_of, None);
    assert_eq!(line.event_time, Some(EventTime::from_millis(999)));
    assert_eq!(line.message(), "10 records, event time 1970-01-01 00:00:00");

    // A record for the fired window is late; two records open a window.
    send(&input, "1,50")?;
    send(&input, "2,1500")?;
    send(&input, "3,1600")?;
    run.step()?;
    // State sizes are sampled every 250 ms of the job's clock.
    clock.advance(Duration::from_millis(250));
    run.step()?;
    let s = metrics.snapshot();
    assert_eq!(s.late_records, 1);
    assert_eq!(late.values(), vec![(1, 50)]);
    let Some(count) = s.operator("count").cloned() else {
        panic!("no count operator in {s:?}");
    };
    assert_eq!(count.total().late_records, 1);
    // The two open windows are held as partials until the watermark
    // reaches their end; the late record went on to be judged.
    let held = s
        .operator("window_combine")
        .map(|o| o.total().state_entries);
    assert_eq!(held, Some(Some(2)), "two open windows, one partial each");
    let entries: u64 = count.subtasks.iter().filter_map(|s| s.state_entries).sum();
    assert_eq!(entries, 0, "nothing reached the window operator yet");
    assert!(count.subtasks.iter().all(|s| s.state_bytes.is_none()));

    let summary = run.finish()?;
    let s = metrics.snapshot();
    assert_eq!(s.job.status, JobStatus::Finished);
    assert_eq!(s.sources[0].status, PartitionStatus::Finished);
    assert_eq!(s.operator("count").map(|o| o.total().records_out), Some(5));
    assert_eq!(summary.operator("count").map(|o| o.records_out), Some(5));
    // Conservation: windows + late + dead letters == input.
    assert_eq!(
        results.values().iter().map(|r| r.value).sum::<u64>() + s.late_records + s.dead_letters,
        13
    );
    Ok(())
}

#[test]
fn counts_and_checkpoints_carry_over_restarts() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
    let job = Job::new()
        .mode(ExecutionMode::Bounded)
        .checkpointing(Duration::from_millis(1), dir.path())
        .restart_strategy(tideline::RestartStrategy::FixedDelay {
            attempts: 2,
            delay: Duration::ZERO,
        });
    let metrics = job.metrics();
    let failed_once = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&failed_once);
    let sink = CollectSink::new();
    job.source(
        GeneratorSource::new(|i: u64, _: &mut SmallRng| i).with_count(20_000),
        WatermarkStrategy::none(),
    )
    .map(move |x| {
        if x == 15_000 && !flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            panic!("boom at {x}");
        }
        x
    })
    .named("fragile")
    .sink(sink.clone());
    let summary = job.run()?;
    assert_eq!(summary.restarts.len(), 1);
    let s = metrics.snapshot();
    assert_eq!(s.job.status, JobStatus::Finished);
    assert_eq!(s.job.restarts, 1);
    assert!(
        s.job
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("boom at 15000")),
        "{:?}",
        s.job.last_error
    );
    // The second run counted only what it replayed; the totals hold both.
    let fragile = s.operator("fragile").map_or(0, |o| o.total().records_in);
    let last_run = summary.operator("fragile").map_or(0, |o| o.records_in);
    // The first run reached record 15,000 (its batch was counted) and read
    // no more than the 20,000 records there are: counted once, not twice.
    let first_run = fragile - last_run;
    assert!(
        (15_001..=20_000).contains(&first_run),
        "total {fragile}, last run {last_run}"
    );
    // The source and the map are chained: they count the same records.
    assert_eq!(
        s.operator("generator").map(|o| o.total().records_out),
        Some(fragile)
    );
    assert!(s.checkpoints.completed >= summary.checkpoints.len() as u64);
    let Some(last) = s.checkpoints.last() else {
        panic!("no checkpoint completed: {:?}", s.checkpoints);
    };
    assert!(last.is_final);
    assert!(last.age_ms >= 0);
    assert!(
        sink.values().len() >= 20_000,
        "every record reached the sink"
    );
    Ok(())
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_state_reports_entries_and_bytes_on_disk() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
    let t = TestJob::from_job(Job::new().state_backend(tideline::StateBackend::RocksDb(
        tideline::RocksDbOptions::new(dir.path()),
    )));
    let metrics = t.job().metrics();
    let (input, events) = t.push_source::<(u32, i64)>(WatermarkStrategy::none());
    // Kept after firing for the allowed lateness, so the windows are in
    // the operator's state once the watermark passed their end.
    let counts = events
        .key_by(|e: &(u32, i64)| e.0)
        .window(Tumbling::of(Span::millis(1_000)))
        .allowed_lateness(Span::millis(60_000))
        .aggregate(Count)
        .named("count");
    let _results = t.collect(&counts);
    let clock = t.clock();
    let mut run = t.start()?;
    for key in 0..50u32 {
        input.send_at(i64::from(key), (key, i64::from(key)))?;
    }
    input.watermark(999)?;
    run.step()?;
    clock.advance(Duration::from_millis(250));
    run.step()?;
    let s = metrics.snapshot();
    let Some(count) = s.operator("count") else {
        panic!("no count operator in {s:?}");
    };
    let state = &count.subtasks[0];
    // 50 open windows: cached in front of RocksDB, or in it.
    assert!(state.state_entries.is_some_and(|n| n >= 50), "{state:?}");
    assert!(state.state_bytes.is_some_and(|b| b > 0), "{state:?}");
    run.finish()?;
    Ok(())
}

#[test]
fn edges_through_a_union_and_a_key_by_are_keyed() -> Result<()> {
    let t = TestJob::from_job(Job::new().parallelism(2));
    let (_a, left) = t.push_source::<(u32, i64)>(WatermarkStrategy::none());
    let (_b, right) = t.push_source::<(u32, i64)>(WatermarkStrategy::none());
    let counts = left
        .named("left")
        .union(&right.named("right"))
        .key_by(|e: &(u32, i64)| e.0)
        .window(Tumbling::of(Span::millis(1_000)))
        .aggregate(Count)
        .named("count");
    let _results = t.collect(&counts);
    let metrics = t.job().metrics();
    let _run = t.start()?;
    let graph = metrics.graph();
    let names: Vec<&str> = graph.operators.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        ["left", "right", "window_combine", "count", "collect"]
    );
    let edge = |from, to, kind| GraphEdge { from, to, kind };
    // The union's inputs reach the pre-aggregation by forward edges; the
    // key_by after it is keyed.
    assert_eq!(
        graph.edges,
        [
            edge(0, 2, EdgeKind::Forward),
            edge(1, 2, EdgeKind::Forward),
            edge(2, 3, EdgeKind::Keyed),
            edge(3, 4, EdgeKind::Chained)
        ]
    );
    Ok(())
}

/// A sink that holds its first batch until released.
#[derive(Clone)]
struct GatedSink {
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Sink<u64> for GatedSink {
    fn write_batch(&mut self, _batch: Vec<Record<u64>>) -> Result<()> {
        while !self.open.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

#[test]
fn time_blocked_on_a_full_channel_shows_while_it_lasts() -> Result<()> {
    let job = Job::new()
        .parallelism(1)
        .batch_size(16)
        .channel_capacity(2)
        .mode(ExecutionMode::Bounded);
    let metrics = job.metrics();
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    job.source(
        GeneratorSource::new(|i: u64, _: &mut SmallRng| i).with_count(10_000),
        WatermarkStrategy::none(),
    )
    .named("numbers")
    .rebalance()
    .sink(GatedSink {
        open: std::sync::Arc::clone(&open),
    });
    let handle = job.spawn()?;
    // The sink holds its first batch: the source fills the channel and
    // blocks. Its blocked time grows while it is blocked, not only after.
    let blocked = |m: &tideline::metrics::JobMetrics| {
        m.snapshot()
            .operator("numbers")
            .map_or(0, |o| o.total().blocked_ms)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while blocked(&metrics) < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "no blocked time booked: {:?}",
            metrics.snapshot().operator("numbers")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let read = metrics.snapshot().records_read();
    assert!(read < 10_000, "the source is held back: {read}");
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    handle.join()?;
    assert_eq!(metrics.snapshot().records_read(), 10_000);
    Ok(())
}
