//! The Nexmark benchmark driver.
//!
//! ```sh
//! cargo run --release --example nexmark -- --query q5 --events 10000000 --parallelism 1 \
//!     [--state memory|rocksdb] [--checkpoint-interval 1s] [--rate 1000000] [--live]
//! ```
//!
//! `--state rocksdb` needs the `rocksdb` feature (`--features rocksdb`).
//!
//! Events are generated into memory first (unless `--live`), so the run
//! measures the job, not the generator; the generator's own speed is printed
//! on a line of its own. The last line of stdout is
//! `query=q5 events=N seconds=S events_per_s=R peak_rss_mb=M`, and with
//! `--rate` also `latency_p50_ms=… latency_p99_ms=…`: processing time from
//! when the source emitted the input that completed a result to when the
//! result reached the sink.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

use clap::Parser;
use tideline::prelude::*;
use tideline::window::{ParseSpanError, Span};
#[cfg(feature = "rocksdb")]
use tideline::RocksDbOptions;
use tideline::StateBackend;
use tideline_nexmark::{BenchSink, Event, LatencyProbe, NexmarkConfig, NexmarkSource, Query};

/// The driver's command line.
#[derive(Parser, Debug)]
#[command(about = "Runs one Nexmark query and prints its throughput")]
pub(crate) struct Args {
    /// q0, q1, q2, q3, q5, q7, q8, q11, w1 or w2.
    #[arg(long)]
    query: Query,
    /// Events in the run.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Parallelism of every operator (and source partitions).
    #[arg(long, default_value_t = 1)]
    parallelism: usize,
    /// Keyed state backend: memory or rocksdb.
    #[arg(long, default_value = "memory", value_parser = ["memory", "rocksdb"])]
    state: String,
    /// Take checkpoints this often (e.g. 1s, 500ms); off when absent.
    #[arg(long, value_parser = parse_duration)]
    checkpoint_interval: Option<Duration>,
    /// Where checkpoints and RocksDB files go (default: a temporary directory, removed after).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Emit events at this rate (events per second, all partitions) and report latency.
    #[arg(long)]
    rate: Option<f64>,
    /// Generate events while the job runs instead of before it.
    #[arg(long)]
    live: bool,
    /// Serve the job's web UI on this address (e.g. 127.0.0.1:8081; `web` feature).
    #[arg(long)]
    web: Option<String>,
}

/// `250ms`, `1s`, `2m`, `1h`, or plain milliseconds (see `Span`'s `FromStr`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let span: Span = text.parse().map_err(|e: ParseSpanError| e.to_string())?;
    // A parsed span is never negative: it has no sign.
    Ok(Duration::from_millis(span.as_millis().unsigned_abs()))
}

/// The process's peak resident set (VmHWM), in MiB.
/// The RocksDB backend, working files under `dir`.
#[cfg(feature = "rocksdb")]
fn rocksdb_backend(dir: PathBuf) -> Result<StateBackend> {
    Ok(StateBackend::RocksDb(RocksDbOptions::new(dir)))
}

/// This build has no RocksDB backend: `--state rocksdb` is a clear error.
#[cfg(not(feature = "rocksdb"))]
fn rocksdb_backend(_dir: PathBuf) -> Result<StateBackend> {
    Err(Error::config(
        "--state",
        "built without the `rocksdb` feature; rebuild with --features rocksdb",
    ))
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<()> {
    tideline::logging::init();
    let last = run(&Args::parse())?;
    println!("{last}");
    Ok(())
}

/// Runs the job `args` describe, prints progress lines and returns the
/// summary line (`query=… events=… seconds=… events_per_s=… peak_rss_mb=…`).
pub(crate) fn run(args: &Args) -> Result<String> {
    if args.parallelism == 0 {
        return Err(Error::config("--parallelism", "must be at least 1"));
    }
    let mut config = NexmarkConfig::default();
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate >= 1.0) {
            return Err(Error::config(
                "--rate",
                format!("{rate} is not a rate of at least 1 event per second"),
            ));
        }
        // Event time then advances with processing time.
        config.events_per_second = rate as u64;
    }

    // The pre-generated events, kept here so that freeing them happens
    // after the measurement, not in the job's last task.
    let mut pregenerated: Option<Arc<[Event]>> = None;
    let mut source = if args.live {
        NexmarkSource::live(config.clone()).with_count(args.events)
    } else {
        let started = Instant::now();
        let events: Arc<[Event]> = config.generate(args.events)?.into();
        pregenerated = Some(Arc::clone(&events));
        let secs = started.elapsed().as_secs_f64();
        println!(
            "generator events={} seconds={secs:.3} events_per_s={:.0}",
            args.events,
            args.events as f64 / secs.max(f64::EPSILON)
        );
        NexmarkSource::replay(events)
    }
    .with_partitions(args.parallelism);
    if let Some(rate) = args.rate {
        source = source.with_rate(rate);
    }

    let scratch = tempdir_or(&args.work_dir)?;
    let mut job = Job::new()
        .parallelism(args.parallelism)
        .mode(ExecutionMode::Bounded);
    if args.state == "rocksdb" {
        job = job.state_backend(rocksdb_backend(scratch.join("rocksdb"))?);
    }
    if let Some(interval) = args.checkpoint_interval {
        job = job.checkpointing(interval, scratch.join("checkpoints"));
    }
    let sink = match args.rate {
        Some(rate) => {
            BenchSink::with_latency(LatencyProbe::new(source.pacing_start(), &config, rate))
        }
        None => BenchSink::new(),
    };
    let job = common::web_ui(job, args.web.as_deref())?;
    let events = job.source(source, WatermarkStrategy::monotonous());
    args.query.build(&events, sink.clone());
    // A bar on a terminal only: the output is parsed by benches/nexmark.sh.
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| tideline::progress::Progress::start(job.metrics()));
    let summary = job.run()?;
    drop(progress);
    drop(pregenerated);
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }

    let secs = summary.elapsed.as_secs_f64();
    println!(
        "results={} checkpoints={} state={}",
        sink.count(),
        summary.checkpoints.len(),
        args.state
    );
    let mut last = format!(
        "query={} events={} seconds={secs:.3} events_per_s={:.0} peak_rss_mb={:.0}",
        args.query,
        args.events,
        args.events as f64 / secs.max(f64::EPSILON),
        peak_rss_mb()
    );
    if args.rate.is_some() {
        let p = |q| sink.latency_quantile_ms(q).unwrap_or(f64::NAN);
        last.push_str(&format!(
            " latency_p50_ms={:.1} latency_p99_ms={:.1}",
            p(0.5),
            p(0.99)
        ));
    }
    Ok(last)
}

/// `dir`, or a fresh directory under the system's temporary directory.
fn tempdir_or(dir: &Option<PathBuf>) -> Result<PathBuf> {
    let path = dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("tideline-nexmark-{}", std::process::id()))
    });
    std::fs::create_dir_all(&path).map_err(|e| Error::io("create", &path, e))?;
    Ok(path)
}
