//! Worker mode's throughput on this machine (issue 16), against the broker
//! `scripts/kafka.sh start` runs (`TIDELINE_KAFKA_BROKERS`, default
//! 127.0.0.1:19092). One job, JSON clicks from a 6-partition topic →
//! `key_by(user)` → tumbling 1 s counts → a topic, exactly once,
//! checkpoints every 500 ms, run:
//!
//! - **in one process** at parallelism 1 and 2: the keyed exchange is an
//!   in-process channel;
//! - **as 1, 2 and 3 worker processes** of this binary
//!   (`KafkaWorkers`, 6 repartition partitions, so 12 tasks): the keyed
//!   exchange goes through a repartition topic, and checkpoints into
//!   Kafka.
//!
//! Each figure is input records per second over the run's whole time:
//! for workers, from spawning the processes to the last output row (the
//! start, the group's assignment and the last checkpoint's commit
//! included); the time to the first output row is printed too. All
//! runs write the same output row count, which is checked. The broker,
//! the workers and this process share the 2 cores, so ratios in one run
//! are what count.
//!
//! `cargo bench --features kafka --bench workers` (2 M clicks; `-- --quick`
//! and `cargo test` use 100 k). Without a broker it says so and does
//! nothing, unless `CI` is set: then it fails.

#[path = "common/kafka.rs"]
mod kafka_common;

use std::path::Path;
use std::time::{Duration, Instant};

use kafka_common::{
    admin, clicks_per_user, create_topic, fail, quick, reachable_brokers, write_input, Row,
};
use tideline::kafka::rdkafka::admin::AdminOptions;
use tideline::kafka::rdkafka::config::ClientConfig;
use tideline::kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use tideline::kafka::rdkafka::error::KafkaError;
use tideline::kafka::rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tideline::kafka::workers::KafkaWorkers;
use tideline::kafka::KafkaSink;
use tideline::prelude::*;

/// Partitions of the input and of the repartition topic.
const PARTITIONS: usize = 6;
/// Partitions of the output topic.
const OUTPUT_PARTITIONS: i32 = 3;

/// The job code, the same in one process and on workers.
fn clicks_job(job: Job, brokers: &str, input: &str, output: &str) -> Result<Job> {
    let sink = KafkaSink::<Row>::json(brokers, output)
        .key(|r: &Row| Some(r.user.to_string().into_bytes()))
        .exactly_once(format!("{output}-txn"))
        .build()?;
    clicks_per_user(job, brokers, input, sink)
}

/// A worker process: runs its tasks until the stop file appears.
fn worker(brokers: &str, app: &str, input: &str, output: &str, dir: &Path) -> Result<()> {
    // Its stderr is its log (kept with `TL_BENCH_LOGS=<dir>`).
    tideline::logging::init();
    let workers = KafkaWorkers::new(brokers, app).partitions(PARTITIONS);
    let handle = workers.handle();
    let stop = dir.join("stop");
    std::thread::spawn(move || {
        while !stop.exists() {
            std::thread::sleep(Duration::from_millis(50));
        }
        handle.leave();
    });
    let staging = dir.join(format!("chk-{}", std::process::id()));
    workers.run(|job| {
        clicks_job(
            job.mode(ExecutionMode::Bounded)
                .checkpointing(Duration::from_millis(500), &staging),
            brokers,
            input,
            output,
        )
    })
}

/// Reads `topic` (read_committed) until it holds `rows` records, or until
/// its end when `rows` is `None`; returns the count and when the first
/// and the last arrived.
fn count_rows(brokers: &str, topic: &str, rows: Option<u64>) -> Result<(u64, Instant, Instant)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tideline-bench-workers")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(|e| fail("consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..OUTPUT_PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| fail("tpl", e))?;
    }
    consumer.assign(&tpl).map_err(|e| fail("assign", e))?;
    let (mut read, mut eof) = (0u64, 0);
    let (mut first, mut last) = (None, Instant::now());
    let mut quiet = Instant::now();
    loop {
        if rows.map_or(eof == OUTPUT_PARTITIONS, |r| read >= r) {
            return Ok((read, first.unwrap_or(last), last));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                read += 1;
                last = Instant::now();
                first.get_or_insert(last);
                quiet = last;
            }
            Some(Err(KafkaError::PartitionEOF(_))) => eof += 1,
            Some(Err(e)) => return Err(fail("consume", e)),
            None if quiet.elapsed() > Duration::from_secs(120) => {
                return Err(fail("consume", format!("{read} rows, then none for 120 s")))
            }
            None => {}
        }
    }
}

/// Runs `n` worker processes over `input` until `rows` rows are in a new
/// output topic; returns the seconds to the first row and to the last.
fn run_workers(brokers: &str, input: &str, n: usize, rows: u64, run: &str) -> Result<(f64, f64)> {
    let output = format!("bench-workers-out-{run}-{n}");
    create_topic(&admin(brokers)?, &output, OUTPUT_PARTITIONS)?;
    let dir = match std::env::var_os("TL_BENCH_LOGS") {
        Some(logs) => {
            let dir = Path::new(&logs).join(format!("{n}-workers"));
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
            dir
        }
        None => tempfile::tempdir()
            .map_err(|e| Error::io("create", "tempdir", e))?
            .keep(),
    };
    let exe = std::env::current_exe().map_err(|e| Error::io("find", "this benchmark", e))?;
    let started = Instant::now();
    let mut children = Vec::new();
    for w in 0..n {
        let log = dir.join(format!("worker-{w}.log"));
        let log = std::fs::File::create(&log).map_err(|e| Error::io("create", &log, e))?;
        let child = std::process::Command::new(&exe)
            .env("TL_BENCH_WORKER", "1")
            .env("TL_BENCH_BROKERS", brokers)
            .env("TL_BENCH_APP", format!("bench-workers-{run}-{n}"))
            .env("TL_BENCH_IN", input)
            .env("TL_BENCH_OUT", &output)
            .env("TL_BENCH_DIR", &dir)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Error::io("spawn", &exe, e))?;
        children.push(child);
    }
    let counted = count_rows(brokers, &output, Some(rows));
    std::fs::write(dir.join("stop"), b"").map_err(|e| Error::io("write", "stop", e))?;
    for mut child in children {
        let status = child
            .wait()
            .map_err(|e| Error::io("wait for", "a worker", e))?;
        if !status.success() {
            let logs: String = (0..n)
                .filter_map(|w| std::fs::read_to_string(dir.join(format!("worker-{w}.log"))).ok())
                .collect();
            return Err(Error::Internal(format!(
                "a worker failed ({status}):\n{logs}"
            )));
        }
    }
    let (read, first, last) = counted?;
    if read != rows {
        return Err(Error::Internal(format!("{read} rows, {rows} expected")));
    }
    let _ =
        futures_executor::block_on(admin(brokers)?.delete_topics(&[&output], &AdminOptions::new()));
    Ok((
        (first - started).as_secs_f64(),
        (last - started).as_secs_f64(),
    ))
}

fn main() -> Result<()> {
    if std::env::var_os("TL_BENCH_WORKER").is_some() {
        let var = |k: &str| std::env::var(k).map_err(|_| Error::config(k, "set by the benchmark"));
        return worker(
            &var("TL_BENCH_BROKERS")?,
            &var("TL_BENCH_APP")?,
            &var("TL_BENCH_IN")?,
            &var("TL_BENCH_OUT")?,
            Path::new(&var("TL_BENCH_DIR")?),
        );
    }
    let records: u64 = if quick() { 100_000 } else { 2_000_000 };
    let Some(brokers) = reachable_brokers("workers")? else {
        return Ok(());
    };
    let run = format!("{}", std::process::id());
    let input = format!("bench-workers-in-{run}");
    create_topic(&admin(&brokers)?, &input, PARTITIONS as i32)?;
    write_input(&brokers, &input, records, PARTITIONS as u64)?;
    println!(
        "workers bench: {records} JSON clicks in {PARTITIONS} partitions → key_by → 1 s counts → topic, \
         exactly once; input records per second over the whole run"
    );
    let mut reference = None;
    let mut rows = 0;
    for parallelism in [1, 2] {
        let output = format!("bench-workers-out-{run}-p{parallelism}");
        create_topic(&admin(&brokers)?, &output, OUTPUT_PARTITIONS)?;
        let dir = tempfile::tempdir().map_err(|e| Error::io("create", "tempdir", e))?;
        let job = Job::new()
            .parallelism(parallelism)
            .mode(ExecutionMode::Bounded)
            .checkpointing(Duration::from_millis(500), dir.path().join("chk"));
        let started = Instant::now();
        clicks_job(job, &brokers, &input, &output)?.run()?;
        let seconds = started.elapsed().as_secs_f64();
        rows = count_rows(&brokers, &output, None)?.0;
        let rate = records as f64 / seconds;
        reference.get_or_insert(rate);
        println!(
            "  one process p={parallelism}          {rate:>10.0}   ({rows} rows, {seconds:.1} s)"
        );
    }
    let one = reference.unwrap_or(1.0);
    for n in [1, 2, 3] {
        let (first, last) = run_workers(&brokers, &input, n, rows, &run)?;
        let rate = records as f64 / last;
        println!(
            "  {n} worker{}                {rate:>10.0}   {:>5.2} x one process p=1   (first row after {first:.1} s, last {last:.1} s)",
            if n == 1 { " " } else { "s" },
            rate / one
        );
    }
    let _ =
        futures_executor::block_on(admin(&brokers)?.delete_topics(&[&input], &AdminOptions::new()));
    Ok(())
}
