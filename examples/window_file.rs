//! Windowed aggregation over historical files — the replay half of
//! "one job, live or over history".
//!
//! ```text
//! cargo run --release --example window_file -- \
//!   --input PATH                     # file, directory or glob; .parquet | .csv | .jsonl
//!   --key-column NAME --value-column NAME --time-column NAME   # int64 columns; time in epoch ms
//!   --window tumbling:10s | sliding:10s,2s | session:5s
//!   --out-of-orderness 2s  --allowed-lateness 0s  --parallelism N
//!   --order arrival | event-time
//!   [--partition-per-file]           # each file its own source partition (parallel, same late data)
//!   [--rate R]                       # pace to R records/s (default: as fast as possible)
//!   [--filter SQL]                   # keep rows meeting a SQL condition over key, value, ts (`sql` feature)
//!   --output out.csv                 # header: key,window_start,window_end,count,sum,min,max
//!   --late-output late.csv           # header: key,ts,value
//!   [--state memory|rocksdb]         # where window state lives (default memory; rocksdb: `rocksdb` feature)
//!   [--checkpoint-dir DIR]           # checkpoint there; resume from the latest one
//!   [--checkpoint-interval 200ms]    # default 1s
//!   [--savepoint-dir DIR]            # where SIGINT/SIGTERM stops with a savepoint (default: CHECKPOINT_DIR-savepoint)
//!   [--resume-from DIR/chk-N]        # resume from that savepoint
//!   [--web 127.0.0.1:8081]           # serve the job's web UI there (`web` feature)
//! ```
//!
//! SIGINT or SIGTERM (Ctrl-C) stops the job with a savepoint (with
//! `--checkpoint-dir`): no window fires early; the last line is then
//! `savepoint=PATH`, and the same command with `--resume-from PATH` goes on
//! to exactly the output of an uninterrupted run. A second signal, or a
//! signal without `--checkpoint-dir`, aborts.
//!
//! The last line on stdout is a summary: `records=N late=N dead_letter=N
//! windows=N seconds=S records_per_s=R checkpoints=N restored_from=ID|none`
//! (`records` counts what this run read, after any resume). Malformed rows
//! go to dead letters (counted) and the run goes on. Progress shows on
//! stderr: a bar on a terminal (with a percentage and an ETA for Parquet
//! input, whose row counts are known), a line every 10 s otherwise; logs
//! (`RUST_LOG`, default `info`) go to stderr too.
//!
//! Results and late records go through exactly-once file sinks into
//! `OUTPUT.parts/` and `LATE_OUTPUT.parts/`; when the job ends, the
//! committed parts are sorted into `--output` and `--late-output` (written
//! to a temporary file and renamed). With `--checkpoint-dir`, a run that is
//! killed at any moment and started again with the same arguments resumes
//! from its latest checkpoint and ends with exactly the files an
//! uninterrupted run writes.

// `main` and `pipeline` are public so the integration tests use them too.
#![allow(unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

#[path = "common/mod.rs"]
mod common;

use clap::Parser;
use serde::{Deserialize, Serialize};
use tideline::connectors::file::{
    sort_committed_csv, ExactlyOnceCsvSink, FileSource, Pacing, ReplayOrder,
};
use tideline::engine::checkpoint::CheckpointStorage;
use tideline::prelude::*;
use tideline::progress::Progress;
use tideline::window::{Span, WindowKind};
#[cfg(feature = "rocksdb")]
use tideline::RocksDbOptions;
use tideline::{RestoreFrom, StateBackend};

/// One input row: the three int64 columns the job reads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Event {
    /// Grouping key.
    pub key: i64,
    /// Aggregated value.
    pub value: i64,
    /// Event time, epoch milliseconds.
    pub ts: i64,
}

/// One output row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WindowRow {
    /// The key.
    pub key: i64,
    /// Window start (ms).
    pub window_start: i64,
    /// Window end (ms, exclusive).
    pub window_end: i64,
    /// Records in the window.
    pub count: u64,
    /// Sum of values.
    pub sum: i64,
    /// Smallest value.
    pub min: i64,
    /// Largest value.
    pub max: i64,
}

/// The job logic, shared by the live and the replayed runs: per key and
/// window, count, sum, min and max of the values. Returns the window rows and
/// the events late for every window they belong to.
pub fn pipeline(
    events: &Stream<Event>,
    windows: WindowKind<Event>,
    lateness: Span,
) -> (Stream<WindowRow>, Stream<Event>) {
    let late = OutputTag::new("late");
    let results = events
        .key_by(|e: &Event| e.key)
        .window(windows)
        .allowed_lateness(lateness)
        .side_output_late_data(&late)
        .aggregate((
            Count,
            Sum::of(|e: &Event| e.value),
            Min::of(|e: &Event| e.value),
            Max::of(|e: &Event| e.value),
        ));
    let rows = results
        .map(|r| WindowRow {
            key: r.key,
            window_start: r.window.start,
            window_end: r.window.end,
            count: r.value.0,
            sum: r.value.1,
            min: r.value.2,
            max: r.value.3,
        })
        .named("window_rows");
    (rows, results.side_output(&late))
}

#[derive(Parser, Debug)]
#[command(about = "Windowed count/sum/min/max per key over Parquet, CSV or JSON-lines files")]
struct Args {
    /// File, directory or glob (.parquet, .csv, .jsonl).
    #[arg(long)]
    input: String,
    /// Column with the key (int64).
    #[arg(long)]
    key_column: String,
    /// Column with the value (int64).
    #[arg(long)]
    value_column: String,
    /// Column with the event time (int64, epoch ms).
    #[arg(long)]
    time_column: String,
    /// `tumbling:SIZE`, `sliding:SIZE,SLIDE` or `session:GAP`.
    #[arg(long, value_parser = parse_window)]
    window: WindowSpec,
    /// Bounded out-of-orderness of the watermark.
    #[arg(long, default_value = "0s", value_parser = parse_millis)]
    out_of_orderness: i64,
    /// How long windows accept late records (re-firing as updates).
    #[arg(long, default_value = "0s", value_parser = parse_millis)]
    allowed_lateness: i64,
    /// Subtasks per operator.
    #[arg(long, default_value_t = 1)]
    parallelism: usize,
    /// `arrival` (file order, reproduces the live run) or `event-time` (sorted).
    #[arg(long, default_value = "arrival", value_parser = parse_order)]
    order: ReplayOrder,
    /// Read each file as its own source partition (files in parallel;
    /// lateness is judged per partition, so the output does not depend on
    /// the parallelism).
    #[arg(long)]
    partition_per_file: bool,
    /// Pace the replay to this many records per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Keep only rows meeting this SQL condition over key, value and ts.
    #[arg(long)]
    filter: Option<String>,
    /// Window results, CSV.
    #[arg(long)]
    output: String,
    /// Late records, CSV.
    #[arg(long)]
    late_output: String,
    /// Where window state lives: `memory` or `rocksdb`.
    #[arg(long, default_value = "memory", value_parser = parse_state)]
    state: StateKind,
    /// Take checkpoints in this directory, and resume from the latest one.
    #[arg(long)]
    checkpoint_dir: Option<String>,
    /// Time between checkpoints.
    #[arg(long, default_value = "1s", value_parser = parse_millis)]
    checkpoint_interval: i64,
    /// Where a SIGINT/SIGTERM stops the job with a savepoint.
    #[arg(long)]
    savepoint_dir: Option<String>,
    /// Resume from this savepoint (a `chk-N` directory).
    #[arg(long)]
    resume_from: Option<String>,
    /// Serve the job's web UI on this address (e.g. 127.0.0.1:8081; `web` feature).
    #[arg(long)]
    web: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StateKind {
    Memory,
    RocksDb,
}

/// The RocksDB backend, working files under `dir`.
#[cfg(feature = "rocksdb")]
fn rocksdb_backend(dir: &std::path::Path) -> Result<StateBackend> {
    Ok(StateBackend::RocksDb(RocksDbOptions::new(dir)))
}

/// This build has no RocksDB backend: `--state rocksdb` is a clear error.
#[cfg(not(feature = "rocksdb"))]
fn rocksdb_backend(_dir: &std::path::Path) -> Result<StateBackend> {
    Err(Error::config(
        "--state",
        "built without the `rocksdb` feature; rebuild with --features rocksdb",
    ))
}

/// `source` keeping only the rows meeting the SQL condition `sql`.
#[cfg(feature = "sql")]
fn with_filter(source: FileSource<Event>, sql: &str) -> Result<FileSource<Event>> {
    Ok(source.filter(sql))
}

/// This build has no SQL predicates: `--filter` is a clear error.
#[cfg(not(feature = "sql"))]
fn with_filter(_source: FileSource<Event>, _sql: &str) -> Result<FileSource<Event>> {
    Err(Error::config(
        "--filter",
        "built without the `sql` feature; rebuild with --features sql",
    ))
}

fn parse_state(text: &str) -> Result<StateKind, String> {
    match text {
        "memory" => Ok(StateKind::Memory),
        "rocksdb" => Ok(StateKind::RocksDb),
        _ => Err(format!("'{text}': use memory or rocksdb")),
    }
}

/// One late record, as written to `--late-output`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateRow {
    /// The key.
    pub key: i64,
    /// Event time (ms).
    pub ts: i64,
    /// The value.
    pub value: i64,
}

/// Where the exactly-once sink stages the parts of `output`.
fn parts_dir(output: &str) -> String {
    format!("{output}.parts")
}

#[derive(Clone, Copy, Debug)]
enum WindowSpec {
    Tumbling(i64),
    Sliding(i64, i64),
    Session(i64),
}

/// `250ms`, `10s`, `5m`, `1h`, or plain milliseconds (see `Span`'s `FromStr`).
fn parse_millis(text: &str) -> Result<i64, String> {
    text.parse::<Span>()
        .map(Span::as_millis)
        .map_err(|e| e.to_string())
}

fn parse_window(text: &str) -> Result<WindowSpec, String> {
    let (kind, spec) = text.split_once(':').ok_or_else(|| {
        format!("'{text}': expected tumbling:SIZE, sliding:SIZE,SLIDE or session:GAP")
    })?;
    match kind {
        "tumbling" => Ok(WindowSpec::Tumbling(parse_millis(spec)?)),
        "sliding" => {
            let (size, slide) = spec
                .split_once(',')
                .ok_or_else(|| format!("'{text}': sliding needs SIZE,SLIDE"))?;
            Ok(WindowSpec::Sliding(
                parse_millis(size)?,
                parse_millis(slide)?,
            ))
        }
        "session" => Ok(WindowSpec::Session(parse_millis(spec)?)),
        _ => Err(format!(
            "'{kind}': unknown window kind (tumbling, sliding or session)"
        )),
    }
}

fn parse_order(text: &str) -> Result<ReplayOrder, String> {
    match text {
        "arrival" => Ok(ReplayOrder::Arrival),
        "event-time" => Ok(ReplayOrder::EventTime),
        _ => Err(format!("'{text}': use arrival or event-time")),
    }
}

impl WindowSpec {
    fn kind(self) -> WindowKind<Event> {
        match self {
            WindowSpec::Tumbling(size) => Tumbling::of(Span::millis(size)).into(),
            WindowSpec::Sliding(size, slide) => {
                Sliding::of(Span::millis(size), Span::millis(slide)).into()
            }
            WindowSpec::Session(gap) => Session::with_gap(Span::millis(gap)).into(),
        }
    }
}

/// Runs the job described by `args` (a command line without the program
/// name), handling signals as `on_signals` says.
///
/// # Errors
/// Bad arguments, unreadable input, or a failed job.
pub fn run_with(args: &[&str], on_signals: OnSignals) -> Result<String> {
    let args = Args::try_parse_from(std::iter::once("window_file").chain(args.iter().copied()))
        .map_err(|e| Error::config("arguments", e))?;
    let mut source = FileSource::<Event>::new(&args.input)?
        .column("key", &args.key_column)
        .column("value", &args.value_column)
        .column("ts", &args.time_column)
        .event_time(|e: &Event| e.ts)
        .order(args.order);
    if args.partition_per_file {
        source = source.partition_per_file();
    }
    if let Some(rate) = args.rate {
        source = source.pace(Pacing::RecordsPerSecond(rate));
    }
    if let Some(sql) = &args.filter {
        source = with_filter(source, sql)?;
    }
    let mut job = Job::new()
        .parallelism(args.parallelism)
        .mode(ExecutionMode::Bounded);
    // RocksDB's working files are scratch (checkpoints hold what survives);
    // beside the checkpoints they share a file system, so snapshots are
    // hard links rather than copies.
    let scratch = match &args.checkpoint_dir {
        Some(dir) => std::path::Path::new(dir).join(".rocksdb-work"),
        None => std::env::temp_dir().join(format!("tideline-window-file-{}", std::process::id())),
    };
    if args.state == StateKind::RocksDb {
        // Whatever an earlier, killed run left there is of no use.
        let _ = std::fs::remove_dir_all(&scratch);
        job = job.state_backend(rocksdb_backend(&scratch)?);
    }
    let resuming = match &args.checkpoint_dir {
        Some(dir) => {
            job = job
                .checkpointing(
                    Duration::from_millis(args.checkpoint_interval.max(1) as u64),
                    dir,
                )
                .restore(RestoreFrom::Latest);
            !CheckpointStorage::new(dir)?.complete_ids()?.is_empty()
        }
        None => false,
    };
    let resuming = match &args.resume_from {
        Some(savepoint) => {
            job = job.restore(RestoreFrom::Path(savepoint.into()));
            true
        }
        None => resuming,
    };
    let savepoint_dir = args.savepoint_dir.clone().or_else(|| {
        args.checkpoint_dir
            .as_ref()
            .map(|dir| format!("{}-savepoint", dir.trim_end_matches('/')))
    });
    let (rows_parts, late_parts) = (parts_dir(&args.output), parts_dir(&args.late_output));
    if !resuming {
        // A fresh start: parts committed by an earlier, finished run go.
        for dir in [&rows_parts, &late_parts] {
            if std::path::Path::new(dir).exists() {
                std::fs::remove_dir_all(dir)
                    .map_err(|e| Error::user(format!("cannot clear {dir}: {e}")))?;
            }
        }
    }
    let job = common::web_ui(job, args.web.as_deref())?;
    let metrics = job.metrics();
    let events = job.source(
        source,
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(
            args.out_of_orderness.max(0) as u64,
        ))
        .with_timestamps(|e: &Event| e.ts),
    );
    let (rows, late) = pipeline(
        &events,
        args.window.kind(),
        Span::millis(args.allowed_lateness),
    );
    // Writing CSV is a task of its own: the window task, the busiest, only
    // hands its results over.
    rows.rebalance().sink(ExactlyOnceCsvSink::new(&rows_parts)?);
    late.map(|e: Event| LateRow {
        key: e.key,
        ts: e.ts,
        value: e.value,
    })
    .named("late_rows")
    .sink(ExactlyOnceCsvSink::new(&late_parts)?);

    // As the process's own job: a progress bar (or lines) on stderr.
    let show_progress = on_signals == OnSignals::StopWithSavepoint;
    let summary = {
        let _progress = show_progress.then(|| Progress::start(Arc::clone(&metrics)));
        let _signals = match on_signals {
            OnSignals::StopWithSavepoint => Some(tideline::signals::stop_on_signals(
                job.stop_handle(),
                savepoint_dir.map(Into::into),
            )?),
            OnSignals::Default => None,
        };
        job.run()?
    };
    if args.state == StateKind::RocksDb {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    if let Some(savepoint) = &summary.savepoint {
        // Stopped, not finished: the outputs are written by the run that
        // resumes from here and reaches the end.
        return Ok(format!(
            "records={} savepoint={}",
            metrics.snapshot().records_read(),
            savepoint.display()
        ));
    }

    // Sorted, so the files do not depend on how subtasks interleaved: by
    // key and window start, then the other columns (a window's updates
    // under allowed lateness in the order they were made); late rows by
    // time, then key and value.
    let windows = sort_committed_csv(
        &rows_parts,
        &args.output,
        &[
            "key",
            "window_start",
            "window_end",
            "count",
            "sum",
            "min",
            "max",
        ],
        [0, 1],
    )?;
    let late_rows = sort_committed_csv(
        &late_parts,
        &args.late_output,
        &["key", "ts", "value"],
        [1, 0],
    )?;

    let n = metrics.snapshot().records_read();
    let secs = summary.elapsed.as_secs_f64();
    Ok(format!(
        "records={n} late={} dead_letter={} windows={} seconds={secs:.3} records_per_s={:.0} \
         checkpoints={} restored_from={}",
        late_rows,
        summary.dead_letters,
        windows,
        n as f64 / secs.max(1e-9),
        summary.checkpoints.len(),
        summary
            .restored_from
            .map_or_else(|| "none".to_string(), |id| id.to_string()),
    ))
}

/// What SIGINT and SIGTERM do during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnSignals {
    /// The process default (end it): for runs inside other programs.
    Default,
    /// The first stops the job with a savepoint, the second aborts it.
    StopWithSavepoint,
}

/// Runs the job as [`main`] does but leaves signals alone (for callers that
/// are not the process's owner, like the tests).
///
/// # Errors
/// Bad arguments, unreadable input, or a failed job.
pub fn run(args: &[&str]) -> Result<String> {
    run_with(args, OnSignals::Default)
}

/// The example's entry point.
pub fn main() -> Result<()> {
    tideline::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run_with(&args, OnSignals::StopWithSavepoint) {
        Ok(line) => {
            println!("{line}");
            Ok(())
        }
        Err(Error::Config { field, reason }) if field == "arguments" => {
            eprintln!("{reason}");
            std::process::exit(2);
        }
        Err(e) => Err(e),
    }
}
