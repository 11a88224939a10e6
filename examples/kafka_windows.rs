//! Clicks from a Kafka topic → per-user tumbling windows → a results topic,
//! exactly once, checkpointed and resumable. Late clicks go to a late
//! topic, undecodable records to a dead-letter topic.
//!
//! ```text
//! # a broker (the test one: scripts/kafka.sh start prints its address)
//! scripts/kafka.sh start
//! # create the topics and write 100,000 sample clicks (some late, some malformed)
//! cargo run --release --features kafka --example kafka_windows -- \
//!   --brokers 127.0.0.1:19092 --create-topics --generate 100000 --bounded
//! # or run live; Ctrl-C stops it with a savepoint and prints savepoint=PATH;
//! # the same command with --resume-from PATH goes on from there
//! cargo run --release --features kafka --example kafka_windows -- --brokers 127.0.0.1:19092
//! ```
//!
//! Options: `--clicks clicks --results click-counts --late late-clicks
//! --dead-letters clicks-dlq` (topic names), `--window 10s`,
//! `--out-of-orderness 2s`, `--checkpoint-dir kafka-windows-chk`,
//! `--checkpoint-interval 1s`, `--parallelism 2`, `--bounded` (stop at the
//! end offsets seen at start: a backfill, same job), `--generate N`,
//! `--create-topics` (3 partitions each).
//!
//! Records are JSON: clicks `{"user": "u7", "ts": 1700000000123}` (event
//! time from `ts`), results `{"user", "start", "end", "clicks"}` keyed by
//! user. Every output is written by exactly-once sinks: a read_committed
//! consumer sees each result once, whatever crashes happen. The last line
//! is `records=N results=N late=N dead_letters=N checkpoints=N
//! restored_from=ID|none`.

// `main` is public so the integration tests can run it.
#![allow(unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[path = "common/mod.rs"]
mod common;

use clap::Parser;
use serde::{Deserialize, Serialize};
use tideline::kafka::rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use tideline::kafka::rdkafka::client::DefaultClientContext;
use tideline::kafka::rdkafka::config::ClientConfig;
use tideline::kafka::rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tideline::kafka::{Bound, KafkaSink, KafkaSource};
use tideline::prelude::*;
use tideline::{DeadLetter, RestoreFrom};

/// A click.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Click {
    /// Who clicked.
    pub user: String,
    /// When, in epoch milliseconds.
    pub ts: i64,
}

/// Clicks of one user in one window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserClicks {
    /// The user.
    pub user: String,
    /// The window's first millisecond.
    pub start: i64,
    /// The first millisecond after it.
    pub end: i64,
    /// How many clicks.
    pub clicks: u64,
}

/// A dead letter as written to the dead-letter topic.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Rejected {
    reason: String,
    record: String,
    offset: Option<String>,
}

/// Command-line options.
#[derive(Parser, Debug, Clone)]
#[command(about = "Kafka clicks -> per-user tumbling windows -> Kafka, exactly once")]
pub struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:19092")]
    pub brokers: String,
    /// The clicks topic.
    #[arg(long, default_value = "clicks")]
    pub clicks: String,
    /// The results topic.
    #[arg(long, default_value = "click-counts")]
    pub results: String,
    /// The late-clicks topic.
    #[arg(long, default_value = "late-clicks")]
    pub late: String,
    /// The dead-letter topic.
    #[arg(long, default_value = "clicks-dlq")]
    pub dead_letters: String,
    /// Window size (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub window: Duration,
    /// Bounded out-of-orderness of the clicks.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub out_of_orderness: Duration,
    /// Where checkpoints go; a run resumes from the latest one there.
    #[arg(long, default_value = "kafka-windows-chk")]
    pub checkpoint_dir: std::path::PathBuf,
    /// How often to checkpoint (and so commit results).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,
    /// Parallelism.
    #[arg(long, default_value_t = 2)]
    pub parallelism: usize,
    /// Stop at the end offsets seen at start (a backfill) instead of running live.
    #[arg(long)]
    pub bounded: bool,
    /// First write this many sample clicks to the clicks topic.
    #[arg(long)]
    pub generate: Option<u64>,
    /// First create the four topics (3 partitions each) if they are missing.
    #[arg(long)]
    pub create_topics: bool,
    /// Resume from this savepoint (`savepoint=PATH` of a run stopped by Ctrl-C).
    #[arg(long)]
    pub resume_from: Option<std::path::PathBuf>,
    /// The transactional id prefix of the sinks (unique per job).
    #[arg(long, default_value = "kafka-windows")]
    pub transactional_id: String,
    /// Serve the job's web UI on this address (e.g. 127.0.0.1:8081; `web` feature).
    #[arg(long)]
    pub web: Option<String>,
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "ms"), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: '{s}'"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("unknown unit in '{s}' (use ms, s or m)")),
    }
}

fn external(what: &str, e: impl std::fmt::Display) -> Error {
    Error::external("Kafka", what, e.to_string())
}

/// Creates the topics that are missing (3 partitions each).
fn create_topics(args: &Args) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()
        .map_err(|e| external("create an admin client", e))?;
    let names = [&args.clicks, &args.results, &args.late, &args.dead_letters];
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|t| NewTopic::new(t, 3, TopicReplication::Fixed(1)))
        .collect();
    let results = futures_executor::block_on(admin.create_topics(&topics, &AdminOptions::new()))
        .map_err(|e| external("create topics", e))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, tideline::kafka::rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(external(&format!("create topic {topic}"), code)),
        }
    }
    Ok(())
}

/// Writes `n` sample clicks: 50 users, 1 click per 10 ms of event time from
/// now, 1 in 100 three windows late, 1 in 1,000 malformed.
fn generate(args: &Args, n: u64) -> Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("linger.ms", "20")
        .create()
        .map_err(|e| external("create a producer", e))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let window = args.window.as_millis() as i64;
    for i in 0..n {
        let user = format!("u{}", i * 7 % 50);
        let late = if i % 100 == 99 { 3 * window } else { 0 };
        let value = if i % 1_000 == 999 {
            format!("{{\"user\": \"{user}\", \"ts\": \"not a time\"}}")
        } else {
            format!(
                "{{\"user\":\"{user}\",\"ts\":{}}}",
                now + i as i64 * 10 - late
            )
        };
        let mut record = BaseRecord::to(&args.clicks).key(&user).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| external("flush the sample clicks", e))
}

/// Builds and runs the job.
pub fn run(args: &Args) -> Result<JobSummary> {
    if args.create_topics {
        create_topics(args)?;
    }
    if let Some(n) = args.generate {
        generate(args, n)?;
    }
    let job = Job::new()
        .parallelism(args.parallelism)
        .mode(if args.bounded {
            ExecutionMode::Bounded
        } else {
            ExecutionMode::Streaming
        })
        .checkpointing(args.checkpoint_interval, &args.checkpoint_dir)
        .restore(match &args.resume_from {
            Some(path) => RestoreFrom::Path(path.clone()),
            None => RestoreFrom::Latest,
        });
    let job = common::web_ui(job, args.web.as_deref())?;
    let mut source = KafkaSource::builder(&args.brokers)
        .topic(&args.clicks)
        .group_id(format!("{}-clicks", args.transactional_id));
    if args.bounded {
        source = source.bounded(Bound::EndOffsets);
    }
    let clicks = job.source(
        source.json::<Click>()?,
        WatermarkStrategy::bounded_out_of_orderness(args.out_of_orderness)
            .with_timestamps(|c: &Click| c.ts)
            .with_idleness(Duration::from_secs(5)),
    );
    let read = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&read);
    let late_tag = OutputTag::<Click>::new("late");
    let windows = clicks
        .inspect(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .key_by(|c: &Click| c.user.clone())
        .window(Tumbling::of(args.window))
        .side_output_late_data(&late_tag)
        .aggregate(tideline::window::Count);
    let results = windows.map(|r| UserClicks {
        user: r.key,
        start: r.window.start,
        end: r.window.end,
        clicks: r.value,
    });
    let prefix = &args.transactional_id;
    results.sink(
        KafkaSink::<UserClicks>::json(&args.brokers, &args.results)
            .key(|r: &UserClicks| Some(r.user.clone().into_bytes()))
            .exactly_once(format!("{prefix}-results"))
            .name("results")
            .build()?,
    );
    windows.side_output(&late_tag).sink(
        KafkaSink::<Click>::json(&args.brokers, &args.late)
            .key(|c: &Click| Some(c.user.clone().into_bytes()))
            .exactly_once(format!("{prefix}-late"))
            .name("late")
            .build()?,
    );
    clicks
        .dead_letters()
        .map(|d: DeadLetter| Rejected {
            reason: d.reason,
            record: d.record,
            offset: d.offset,
        })
        .sink(
            KafkaSink::<Rejected>::json(&args.brokers, &args.dead_letters)
                .exactly_once(format!("{prefix}-dlq"))
                .name("dead-letters")
                .build()?,
        );
    #[cfg(unix)]
    let guard = tideline::signals::stop_on_signals(
        job.stop_handle(),
        Some(args.checkpoint_dir.with_extension("savepoint")),
    )?;
    let summary = job.run()?;
    #[cfg(unix)]
    drop(guard);
    let results = summary.operator("results").map_or(0, |o| o.records_in);
    let late = summary.operator("late").map_or(0, |o| o.records_in);
    let dead = summary.operator("dead-letters").map_or(0, |o| o.records_in);
    println!(
        "records={} results={results} late={late} dead_letters={dead} checkpoints={} restored_from={}",
        read.load(Ordering::Relaxed),
        summary.checkpoints.len(),
        summary
            .restored_from
            .map_or_else(|| "none".to_string(), |id| id.to_string()),
    );
    if let Some(savepoint) = &summary.savepoint {
        println!("savepoint={}", savepoint.display());
    }
    Ok(summary)
}

/// Runs the example with the command line's arguments.
pub fn main() -> Result<()> {
    tideline::logging::init();
    run(&Args::parse()).map(|_| ())
}
