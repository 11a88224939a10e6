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
//!   [--rate R]                       # pace to R records/s (default: as fast as possible)
//!   [--filter SQL]                   # keep rows meeting a SQL condition over key, value, ts
//!   --output out.csv                 # header: key,window_start,window_end,count,sum,min,max
//!   --late-output late.csv           # header: key,ts,value
//! ```
//!
//! The last line on stdout is a summary: `records=N late=N dead_letter=N
//! windows=N seconds=S records_per_s=R`. Malformed rows go to dead letters
//! (counted) and the run goes on. A progress line shows on stderr when it is
//! a terminal.

// `main` and `pipeline` are public so the integration tests use them too.
#![allow(unreachable_pub)]

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};
use tideline::connectors::file::{write_csv, FileSource, Pacing, ReplayOrder};
use tideline::prelude::*;
use tideline::window::{Span, WindowKind};

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
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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
}

#[derive(Clone, Copy, Debug)]
enum WindowSpec {
    Tumbling(i64),
    Sliding(i64, i64),
    Session(i64),
}

/// `250ms`, `10s`, `5m`, `1h`, or plain milliseconds.
fn parse_millis(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 10s, 500ms or 2m"))?;
    let factor = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{unit}' (use ms, s, m or h)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("'{text}' is too large"))
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

/// Reports progress on stderr about five times a second, until dropped.
struct Progress {
    done: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(records: Arc<AtomicU64>, event_time: Arc<AtomicI64>, total: Option<u64>) -> Self {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = Arc::clone(&done);
        let thread = std::io::stderr().is_terminal().then(|| {
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    let n = records.load(Ordering::Relaxed);
                    let secs = started.elapsed().as_secs_f64().max(1e-3);
                    let rate = n as f64 / secs;
                    let at = EventTime::from_millis(event_time.load(Ordering::Relaxed));
                    let position = at.to_datetime().map_or("-".to_string(), |t| t.to_rfc3339());
                    let eta = total.filter(|_| rate > 0.0).map_or(String::new(), |t| {
                        format!(" eta {:.0}s", t.saturating_sub(n) as f64 / rate)
                    });
                    eprint!("\r{n} records  event time {position}  {rate:.0}/s{eta}   ");
                    let _ = std::io::stderr().flush();
                }
                eprintln!();
            })
        });
        Self { done, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the job described by `args` (a command line without the program name).
pub fn run(args: &[&str]) -> Result<String> {
    let args = Args::try_parse_from(std::iter::once("window_file").chain(args.iter().copied()))
        .map_err(|e| Error::config("arguments", e))?;
    let mut source = FileSource::<Event>::new(&args.input)?
        .column("key", &args.key_column)
        .column("value", &args.value_column)
        .column("ts", &args.time_column)
        .event_time(|e: &Event| e.ts)
        .order(args.order);
    if let Some(rate) = args.rate {
        source = source.pace(Pacing::RecordsPerSecond(rate));
    }
    if let Some(sql) = &args.filter {
        source = source.filter(sql);
    }
    let total = source.total_rows_hint();
    let job = Job::new()
        .parallelism(args.parallelism)
        .mode(ExecutionMode::Bounded);
    let records = Arc::new(AtomicU64::new(0));
    let position = Arc::new(AtomicI64::new(i64::MIN));
    let (count, at) = (Arc::clone(&records), Arc::clone(&position));
    let events = job
        .source(
            source,
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(
                args.out_of_orderness.max(0) as u64,
            ))
            .with_timestamps(|e: &Event| e.ts),
        )
        .inspect(move |e: &Event| {
            count.fetch_add(1, Ordering::Relaxed);
            at.fetch_max(e.ts, Ordering::Relaxed);
        })
        .named("progress");
    let (rows, late) = pipeline(
        &events,
        args.window.kind(),
        Span::millis(args.allowed_lateness),
    );
    let results = CollectSink::new();
    let late_rows = CollectSink::new();
    rows.sink(results.clone());
    late.sink(late_rows.clone());

    let summary = {
        let _progress = Progress::start(Arc::clone(&records), Arc::clone(&position), total);
        job.run()?
    };

    // Sorted, so the files do not depend on how subtasks interleaved.
    let mut windows = results.values();
    windows.sort();
    write_csv(
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
        &windows,
    )?;
    let mut late_events: Vec<Event> = late_rows.values();
    late_events.sort_by_key(|e| (e.ts, e.key, e.value));
    #[derive(Serialize)]
    struct LateRow {
        key: i64,
        ts: i64,
        value: i64,
    }
    let late_out: Vec<LateRow> = late_events
        .iter()
        .map(|e| LateRow {
            key: e.key,
            ts: e.ts,
            value: e.value,
        })
        .collect();
    write_csv(&args.late_output, &["key", "ts", "value"], &late_out)?;

    let n = records.load(Ordering::Relaxed);
    let secs = summary.elapsed.as_secs_f64();
    Ok(format!(
        "records={n} late={} dead_letter={} windows={} seconds={secs:.3} records_per_s={:.0}",
        summary.late_records,
        summary.dead_letters,
        windows.len(),
        n as f64 / secs.max(1e-9)
    ))
}

/// The example's entry point.
pub fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&args) {
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
