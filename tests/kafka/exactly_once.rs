//! End to end over a real broker: topic → key_by → windows → topic, RocksDB
//! state, checkpoints every 200 ms. The job runs as a child process that is
//! killed with SIGKILL at random moments, and aborted at the fault point
//! between a checkpoint's completion and its transaction commit; each time
//! it restarts from its latest checkpoint. A read_committed consumer of the
//! output must then see exactly the rows of an uninterrupted run (exactly
//! once), or at least all of them (at least once).

#![cfg(feature = "rocksdb")]

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tideline::kafka::{Bound, KafkaSink, KafkaSource};
use tideline::prelude::*;
use tideline::{RestoreFrom, RocksDbOptions, StateBackend};

use super::{brokers, consume_json, create_topic, produce, unique_topic, Click, Produce};

/// Input clicks.
const CLICKS: u64 = 60_000;

/// One window's result, as the job writes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Row {
    user: u32,
    start: i64,
    count: u64,
}

/// What a child job run is told, by environment variables.
struct ChildConfig {
    brokers: String,
    input: String,
    output: String,
    dir: String,
    exactly_once: bool,
    /// Abort the process at the n-th transaction commit (the fault point).
    crash_at_commit: Option<u32>,
    /// Slow the job down so that kills land in the middle of it.
    throttle: bool,
}

impl ChildConfig {
    fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok();
        Some(Self {
            brokers: var("TL_EOS_BROKERS")?,
            input: var("TL_EOS_IN")?,
            output: var("TL_EOS_OUT")?,
            dir: var("TL_EOS_DIR")?,
            exactly_once: var("TL_EOS_MODE")? == "exactly",
            crash_at_commit: var("TL_EOS_CRASH_AT").and_then(|v| v.parse().ok()),
            throttle: var("TL_EOS_THROTTLE").is_some(),
        })
    }

    fn spawn(&self) -> Child {
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args([
                "kafka::exactly_once::child_job",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("TL_EOS_BROKERS", &self.brokers)
            .env("TL_EOS_IN", &self.input)
            .env("TL_EOS_OUT", &self.output)
            .env("TL_EOS_DIR", &self.dir)
            .env(
                "TL_EOS_MODE",
                if self.exactly_once {
                    "exactly"
                } else {
                    "atleast"
                },
            )
            .stdout(std::process::Stdio::null());
        if let Some(n) = self.crash_at_commit {
            command.env("TL_EOS_CRASH_AT", n.to_string());
        }
        if self.throttle {
            command.env("TL_EOS_THROTTLE", "1");
        }
        command.spawn().expect("spawn the job process")
    }
}

/// The job: per-user tumbling 1 s counts of the input topic into the output
/// topic; restores from its latest checkpoint.
fn run_job(config: &ChildConfig) -> Result<JobSummary> {
    let dir = Path::new(&config.dir);
    let job = Job::new()
        .parallelism(2)
        .mode(ExecutionMode::Bounded)
        .state_backend(StateBackend::RocksDb(RocksDbOptions::new(
            dir.join("rocksdb"),
        )))
        .checkpointing(Duration::from_millis(200), dir.join("chk"))
        .restore(RestoreFrom::Latest);
    let source = KafkaSource::builder(&config.brokers)
        .topic(&config.input)
        .bounded(Bound::EndOffsets)
        .json::<Click>()?;
    let mut sink = KafkaSink::<Row>::json(&config.brokers, &config.output)
        .key(|r: &Row| Some(r.user.to_string().into_bytes()));
    sink = if config.exactly_once {
        sink.exactly_once(format!("{}-txn", config.output))
    } else {
        sink.at_least_once()
    };
    if let Some(n) = config.crash_at_commit {
        let commits = AtomicU32::new(0);
        sink = sink.before_commit(move |_, _| {
            if commits.fetch_add(1, Ordering::SeqCst) + 1 >= n {
                // The fault point: the checkpoint is complete, the commit
                // has not been sent.
                std::process::abort();
            }
        });
    }
    let throttle = config.throttle;
    let seen = AtomicU32::new(0);
    job.source(
        source,
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(100))
            .with_timestamps(|c: &Click| c.ts),
    )
    .inspect(move |_| {
        if throttle && seen.fetch_add(1, Ordering::Relaxed) % 4 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .key_by(|c: &Click| c.user)
    .window(Tumbling::of(Duration::from_secs(1)))
    .aggregate(tideline::window::Count)
    .map(|r| Row {
        user: r.key,
        start: r.window.start,
        count: r.value,
    })
    .sink(sink.build()?);
    job.run()
}

/// Run by the tests below as a child process (never on its own).
#[test]
#[ignore = "the job process of the kill tests; they run it"]
fn child_job() -> Result<()> {
    let config = ChildConfig::from_env().expect("run by the kill tests, with TL_EOS_* set");
    run_job(&config).map(|_| ())
}

/// The input: 3 partitions, 40 users, 1 click per ms of event time,
/// slightly out of order within the 100 ms bound (so none is late).
fn write_input(brokers: &str, topic: &str) {
    create_topic(brokers, topic, 3);
    let records: Vec<Produce> = (0..CLICKS)
        .map(|i| {
            let click = Click {
                user: (i * 7 % 40) as u32,
                ts: 1_000_000 + i as i64 - (i * 13 % 50) as i64,
                seq: i,
            };
            Produce::click((i % 3) as i32, &click)
        })
        .collect();
    produce(brokers, topic, &records);
}

fn wait(child: &mut Child) -> ExitStatus {
    child.wait().expect("wait for the job process")
}

/// Runs the job to its end across `kills` SIGKILLs and `faults` aborts at
/// the fault point; returns the output rows.
fn chaos(brokers: &str, input: &str, exactly_once: bool, kills: usize, faults: usize) -> Vec<Row> {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = unique_topic(if exactly_once { "eos-out" } else { "alo-out" });
    create_topic(brokers, &output, 3);
    let mut config = ChildConfig {
        brokers: brokers.to_string(),
        input: input.to_string(),
        output: output.clone(),
        dir: dir.path().display().to_string(),
        exactly_once,
        crash_at_commit: None,
        throttle: true,
    };
    let mut rng = SmallRng::seed_from_u64(if exactly_once { 11 } else { 12 });
    let mut faulted = 0;
    let mut attempts = 0;
    while faulted < faults {
        attempts += 1;
        assert!(
            attempts < 50,
            "the fault point was hit only {faulted} times"
        );
        config.crash_at_commit = Some(rng.gen_range(1..=4));
        let status = wait(&mut config.spawn());
        match status.signal() {
            Some(6) => faulted += 1,
            _ => assert!(
                !status.success(),
                "the job ended before its fault point: {status}"
            ),
        }
    }
    config.crash_at_commit = None;
    for kill in 0..kills {
        let mut child = config.spawn();
        std::thread::sleep(Duration::from_millis(rng.gen_range(150..900)));
        if let Some(status) = child.try_wait().expect("poll the job process") {
            panic!("the job process ended on its own before kill {kill}: {status}");
        }
        child.kill().expect("SIGKILL the job process");
        let status = wait(&mut child);
        assert_eq!(status.signal(), Some(9), "killed: {status}");
    }
    config.throttle = false;
    let status = wait(&mut config.spawn());
    assert!(status.success(), "the last run must finish: {status}");
    let completed = std::fs::read_dir(dir.path().join("chk"))
        .expect("checkpoint dir")
        .count();
    assert!(completed > 0, "checkpoints completed");
    let mut rows: Vec<Row> = consume_json(brokers, &output);
    rows.sort();
    rows
}

/// The rows of an uninterrupted run, in this process.
fn reference(brokers: &str, input: &str) -> Result<Vec<Row>> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("create", "tempdir", e))?;
    let output = unique_topic("reference-out");
    create_topic(brokers, &output, 3);
    run_job(&ChildConfig {
        brokers: brokers.to_string(),
        input: input.to_string(),
        output: output.clone(),
        dir: dir.path().display().to_string(),
        exactly_once: true,
        crash_at_commit: None,
        throttle: false,
    })?;
    let mut rows: Vec<Row> = consume_json(brokers, &output);
    rows.sort();
    let total: u64 = rows.iter().map(|r| r.count).sum();
    assert_eq!(total, CLICKS, "the reference counts every click once");
    Ok(rows)
}

#[test]
fn exactly_once_across_kills_and_crashes_before_commit() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let input = unique_topic("eos-in");
    write_input(&brokers, &input);
    let want = reference(&brokers, &input)?;
    let got = chaos(&brokers, &input, true, 20, 5);
    assert_eq!(got.len(), want.len(), "rows missing or doubled");
    assert_eq!(got, want);
    Ok(())
}

#[test]
fn at_least_once_across_kills_loses_nothing() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let input = unique_topic("alo-in");
    write_input(&brokers, &input);
    let want = reference(&brokers, &input)?;
    let mut got = chaos(&brokers, &input, false, 6, 0);
    assert!(got.len() >= want.len());
    got.dedup();
    assert_eq!(got, want, "every row, none but the expected ones");
    Ok(())
}
