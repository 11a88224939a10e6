//! Worker mode against the real broker: repartition topics made once and
//! refused with another partition count, workers of another stage layout
//! refused, and a job run as separate task runs whose keyed exchange goes
//! through a repartition topic, with the one-process job's output.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tideline::kafka::workers::{InternalTopics, KafkaExchange, KafkaWorkers};
use tideline::kafka::{Bound, KafkaSink, KafkaSource};
use tideline::prelude::*;
use tideline::window::Tumbling;
use tideline::{JobPart, StageLayout};

use super::{brokers, consume_json, create_topic, produce, unique_topic, Click, Produce};
use crate::error_text;

/// A keyed window job whose window has `uid`.
fn layout(uid: &str) -> StageLayout {
    let job = Job::new();
    job.source(VecSource::new(vec![1u32]), WatermarkStrategy::none())
        .key_by(|x: &u32| *x)
        .window(Tumbling::of(Duration::from_millis(10)))
        .aggregate(Count)
        .uid(uid)
        .map(|r| r.value)
        .sink(CollectSink::new());
    job.stage_layout()
}

#[test]
fn repartition_topics_are_made_once_and_refused_with_another_count() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let app = unique_topic("app");
    let layout = layout("counts");
    let topics = InternalTopics::new(&brokers, &app, 3).ensure_repartition_topics(&layout)?;
    assert_eq!(topics, vec![format!("{app}-key_by-repartition")]);
    // A second worker with the same settings finds it as it should be.
    assert_eq!(
        InternalTopics::new(&brokers, &app, 3).ensure_repartition_topics(&layout)?,
        topics
    );
    let err = error_text(InternalTopics::new(&brokers, &app, 4).ensure_repartition_topics(&layout));
    assert!(
        err.contains(&topics[0]) && err.contains("exists with 3 partitions, this job asks for 4"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_topic_made_by_hand_with_another_count_is_refused() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let app = unique_topic("app");
    create_topic(&brokers, &format!("{app}-key_by-repartition"), 2);
    let err = error_text(
        InternalTopics::new(&brokers, &app, 6).ensure_repartition_topics(&layout("counts")),
    );
    assert!(
        err.contains("exists with 2 partitions, this job asks for 6"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_worker_of_another_layout_is_refused() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let app = unique_topic("app");
    let topics = InternalTopics::new(&brokers, &app, 2);
    topics.check_layout(&layout("counts"))?;
    // The same job again (another worker, or a restart): accepted.
    topics.check_layout(&layout("counts"))?;
    let err = error_text(topics.check_layout(&layout("counts-v2")));
    assert!(err.contains("runs another stage layout"), "{err}");
    assert!(
        err.contains("counts-v2"),
        "the message shows the layouts: {err}"
    );
    // The first layout stays the application's.
    topics.check_layout(&layout("counts"))?;
    // The same layout routing keys with other counts would split keys.
    let err = error_text(
        InternalTopics::new(&brokers, &app, 2)
            .key_groups(64)
            .check_layout(&layout("counts")),
    );
    assert!(
        err.contains("runs with 128 key groups and 2 partitions"),
        "{err}"
    );
    let err = error_text(InternalTopics::new(&brokers, &app, 3).check_layout(&layout("counts")));
    assert!(err.contains("this worker with 128 and 3"), "{err}");
    Ok(())
}

/// One window's result, as the job writes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Row {
    user: u32,
    start: i64,
    count: u64,
}

/// Where a run of the clicks job reads and writes.
struct Topics {
    brokers: String,
    input: String,
    output: String,
    late: String,
}

/// The job code, the same for one process and for task runs: per-user
/// tumbling 1 s counts of `input` into `output`, late clicks into `late`.
/// `throttle` slows it (1 ms every 2 clicks), so kills land mid-run.
fn clicks_job(job: Job, topics: &Topics, throttle: bool) -> Result<Job> {
    let late = OutputTag::<Click>::new("late-clicks");
    let source = KafkaSource::builder(&topics.brokers)
        .topic(&topics.input)
        .bounded(Bound::EndOffsets)
        .json::<Click>()?;
    let counts = job
        .source(
            source,
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(100))
                .with_timestamps(|c: &Click| c.ts),
        )
        .inspect(move |c: &Click| {
            if throttle && c.seq % 2 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .key_by(|c: &Click| c.user)
        .window(Tumbling::of(Duration::from_secs(1)))
        .side_output_late_data(&late)
        .aggregate(Count)
        .uid("counts");
    counts
        .side_output(&late)
        .sink(
            KafkaSink::<Click>::json(&topics.brokers, &topics.late)
                .exactly_once(format!("{}-txn", topics.late))
                .build()?,
        )
        .uid("late-sink");
    counts
        .map(|r| Row {
            user: r.key,
            start: r.window.start,
            count: r.value,
        })
        .sink(
            KafkaSink::<Row>::json(&topics.brokers, &topics.output)
                .key(|r: &Row| Some(r.user.to_string().into_bytes()))
                .exactly_once(format!("{}-txn", topics.output))
                .build()?,
        )
        .uid("rows-sink");
    Ok(job)
}

/// Clicks over 6 partitions: 60 users, out of order within the 100 ms
/// bound, and every 101st click 2.5 s behind (late for its window).
fn write_clicks(brokers: &str, topic: &str, clicks: u64) {
    create_topic(brokers, topic, 6);
    produce_clicks(brokers, topic, clicks);
}

/// The clicks of [`write_clicks`] into `topic`, which has 6 partitions.
fn produce_clicks(brokers: &str, topic: &str, clicks: u64) {
    let records: Vec<Produce> = (0..clicks)
        .map(|i| {
            let behind = if i % 101 == 100 {
                2_500
            } else {
                (i * 13 % 50) as i64
            };
            let click = Click {
                user: (i * 7 % 60) as u32,
                ts: 1_000_000 + i as i64 - behind,
                seq: i,
            };
            Produce::click((i % 6) as i32, &click)
        })
        .collect();
    produce(brokers, topic, &records);
}

/// A run's output: its rows and late clicks, sorted.
type Output = (Vec<Row>, Vec<Click>);

/// The rows and late clicks of `topics`, sorted.
fn results(topics: &Topics) -> Output {
    let mut rows: Vec<Row> = consume_json(&topics.brokers, &topics.output);
    rows.sort();
    let mut late: Vec<Click> = consume_json(&topics.brokers, &topics.late);
    late.sort();
    (rows, late)
}

/// Fresh output topics reading `input`.
fn fresh_topics(brokers: &str, input: &str, name: &str) -> Topics {
    let topics = Topics {
        brokers: brokers.to_string(),
        input: input.to_string(),
        output: unique_topic(&format!("{name}-rows")),
        late: unique_topic(&format!("{name}-late")),
    };
    create_topic(brokers, &topics.output, 3);
    create_topic(brokers, &topics.late, 1);
    topics
}

/// Runs every task of the clicks job as its own task run, each from a job
/// built afresh (as a worker builds one per task), through repartition
/// topics of `partitions` partitions; waits for them all.
fn run_as_tasks(topics: &Topics, app: &str, partitions: usize, dir: &Path) -> Result<()> {
    let build = || {
        clicks_job(
            Job::new()
                .worker_mode()
                .mode(ExecutionMode::Bounded)
                .checkpointing(Duration::from_millis(200), dir.join("chk")),
            topics,
            false,
        )
    };
    let layout = build()?.stage_layout();
    assert_eq!(layout.stages.len(), 2, "{layout:?}");
    InternalTopics::new(&topics.brokers, app, partitions).ensure_repartition_topics(&layout)?;
    let exchange = Arc::new(KafkaExchange::new(
        &topics.brokers,
        app,
        build()?.config().key_groups,
    ));
    let mut handles = Vec::new();
    for (stage, tasks) in [(0, 6), (1, partitions)] {
        for task in 0..tasks {
            handles.push(build()?.spawn_part(&JobPart {
                stage,
                task,
                repartition_partitions: partitions,
                exchange: Arc::clone(&exchange) as Arc<dyn tideline::RemoteExchange>,
                checkpoint_stores: None,
                stage_tasks: None,
            })?);
        }
    }
    for handle in handles {
        handle.join()?;
    }
    Ok(())
}

#[test]
fn a_job_run_as_task_runs_over_repartition_topics_equals_one_process() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let input = unique_topic("tasks-in");
    let clicks = 30_000;
    write_clicks(&brokers, &input, clicks);
    let one = fresh_topics(&brokers, &input, "one-process");
    clicks_job(
        Job::new().parallelism(2).mode(ExecutionMode::Bounded),
        &one,
        false,
    )?
    .run()?;
    let (want_rows, want_late) = results(&one);
    let counted: u64 = want_rows.iter().map(|r| r.count).sum();
    assert!(!want_late.is_empty(), "the input has late clicks");
    assert_eq!(counted + want_late.len() as u64, clicks);

    let tasks = fresh_topics(&brokers, &input, "tasks");
    let dir = tempfile::tempdir().map_err(|e| Error::io("create", "tempdir", e))?;
    run_as_tasks(&tasks, &unique_topic("app"), 3, dir.path())?;
    let (rows, late) = results(&tasks);
    assert_eq!(rows.len(), want_rows.len(), "rows missing or doubled");
    assert_eq!(rows, want_rows);
    assert_eq!(late, want_late);
    Ok(())
}

/// What a worker process is told, by environment variables.
struct WorkerConfig {
    topics: Topics,
    app: String,
    dir: String,
    /// The worker leaves the group once this file exists.
    stop_file: String,
    /// Its `KafkaWorkers::standby_replicas`.
    standbys: usize,
}

impl WorkerConfig {
    fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok();
        Some(Self {
            topics: Topics {
                brokers: var("TL_W_BROKERS")?,
                input: var("TL_W_IN")?,
                output: var("TL_W_OUT")?,
                late: var("TL_W_LATE")?,
            },
            app: var("TL_W_APP")?,
            dir: var("TL_W_DIR")?,
            stop_file: var("TL_W_STOP")?,
            standbys: var("TL_W_STANDBYS")?.parse().ok()?,
        })
    }

    /// Starts worker `n` as a process of this test binary.
    fn spawn(&self, n: usize) -> Worker {
        let stop_file = format!("{}-{n}", self.stop_file);
        let log = std::fs::File::create(format!("{}/worker-{n}.log", self.dir)).expect("log");
        let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "kafka::workers::worker_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("TL_W_BROKERS", &self.topics.brokers)
            .env("TL_W_IN", &self.topics.input)
            .env("TL_W_OUT", &self.topics.output)
            .env("TL_W_LATE", &self.topics.late)
            .env("TL_W_APP", &self.app)
            .env("TL_W_DIR", &self.dir)
            .env("TL_W_STOP", &stop_file)
            .env("TL_W_STANDBYS", self.standbys.to_string())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn a worker process");
        Worker { child, stop_file }
    }
}

/// A running worker process.
struct Worker {
    child: std::process::Child,
    stop_file: String,
}

impl Worker {
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL the worker");
        self.child.wait().expect("wait for the worker");
    }

    /// Asks it to leave the group, and waits until it has.
    fn leave(mut self) {
        std::fs::write(&self.stop_file, b"").expect("stop file");
        let status = self.child.wait().expect("wait for the worker");
        assert!(status.success(), "the worker left cleanly: {status}");
    }
}

/// Run by the tests below as a worker process (never on its own).
#[test]
#[ignore = "a worker process of the worker tests; they run it"]
fn worker_process() -> Result<()> {
    let config = WorkerConfig::from_env().expect("run by the worker tests, with TL_W_* set");
    // The test keeps each worker's log (stderr) in its directory.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let workers = KafkaWorkers::new(&config.topics.brokers, &config.app)
        .partitions(3)
        .session_timeout(Duration::from_secs(6))
        .standby_replicas(config.standbys);
    let handle = workers.handle();
    let stop_file = config.stop_file.clone();
    std::thread::spawn(move || {
        while !Path::new(&stop_file).exists() {
            std::thread::sleep(Duration::from_millis(50));
        }
        handle.leave();
    });
    // A directory of this process's own: checkpoints are in Kafka, so a
    // task restores on a worker that never saw its files.
    let dir = Path::new(&config.dir).join(format!("chk-{}", std::process::id()));
    workers.run(|job| {
        clicks_job(
            job.mode(ExecutionMode::Bounded)
                .checkpointing(Duration::from_millis(200), &dir),
            &config.topics,
            true,
        )
    })
}

/// Waits until `topics` hold at least `rows` rows and `late` late clicks,
/// failing with the workers' logs if they do not get there, or all end.
fn wait_for_results(config: &WorkerConfig, workers: &mut [Worker], rows: usize, late: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (got_rows, got_late) = results(&config.topics);
        if got_rows.len() >= rows && got_late.len() >= late {
            return;
        }
        let ended: Vec<String> = workers
            .iter_mut()
            .filter_map(|w| w.child.try_wait().ok().flatten().map(|s| s.to_string()))
            .collect();
        if std::time::Instant::now() >= deadline || ended.len() == workers.len() {
            let logs: Vec<String> = (0..8)
                .filter_map(|n| {
                    std::fs::read_to_string(format!("{}/worker-{n}.log", config.dir))
                        .ok()
                        .map(|log| format!("--- worker {n}:\n{log}"))
                })
                .collect();
            panic!(
                "the workers did not finish: {} of {rows} rows, {} of {late} late clicks; \
                 ended: {ended:?}\n{}",
                got_rows.len(),
                got_late.len(),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The clicks job's one-process output, and a worker configuration over
/// the same input with fresh output topics (worker logs kept in its dir).
fn worker_setup(brokers: &str, clicks: u64) -> Result<(Output, WorkerConfig)> {
    let input = unique_topic("workers-in");
    write_clicks(brokers, &input, clicks);
    worker_setup_on(brokers, &input)
}

/// [`worker_setup`] over the clicks already in `input`.
fn worker_setup_on(brokers: &str, input: &str) -> Result<(Output, WorkerConfig)> {
    let input = input.to_string();
    let one = fresh_topics(brokers, &input, "workers-one");
    clicks_job(
        Job::new().parallelism(2).mode(ExecutionMode::Bounded),
        &one,
        false,
    )?
    .run()?;
    let dir = tempfile::tempdir()
        .map_err(|e| Error::io("create", "tempdir", e))?
        .keep();
    eprintln!("worker logs in {}", dir.display());
    let config = WorkerConfig {
        topics: fresh_topics(brokers, &input, "workers"),
        app: unique_topic("app"),
        dir: dir.display().to_string(),
        stop_file: dir.join("stop").display().to_string(),
        standbys: 0,
    };
    Ok((results(&one), config))
}

/// Waits for the whole output, lets the workers leave, and checks the
/// output is the one-process run's, row for row.
fn finish_and_compare(
    config: &WorkerConfig,
    mut workers: Vec<Worker>,
    (want_rows, want_late): &Output,
) {
    wait_for_results(config, &mut workers, want_rows.len(), want_late.len());
    for worker in workers {
        worker.leave();
    }
    let (rows, late) = results(&config.topics);
    assert_eq!(rows.len(), want_rows.len(), "rows missing or doubled");
    assert_eq!(&rows, want_rows);
    assert_eq!(&late, want_late);
}

/// The tasks worker `n`'s log says it started, each with when.
fn started_tasks(config: &WorkerConfig, n: usize) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    logged(config, n, "starting a task")
}

/// What follows `message` on the lines of worker `n`'s log that have it,
/// each with when it was logged.
fn logged(
    config: &WorkerConfig,
    n: usize,
    message: &str,
) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    let log = std::fs::read_to_string(format!("{}/worker-{n}.log", config.dir)).unwrap_or_default();
    log.lines()
        .filter(|line| line.contains(message))
        .filter_map(|line| {
            let at = chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next()?).ok()?;
            let rest = line.split(message).nth(1)?.trim().to_string();
            Some((rest, at.with_timezone(&chrono::Utc)))
        })
        .collect()
}

#[test]
fn three_workers_with_a_kill_a_newcomer_and_a_leave_equal_one_process() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let (want, config) = worker_setup(&brokers, 20_000)?;
    let mut workers: Vec<Worker> = (0..3).map(|n| config.spawn(n)).collect();
    // The group spreads the tasks over all three before one is killed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (0..3).any(|n| started_tasks(&config, n).is_empty()) {
        assert!(std::time::Instant::now() < deadline, "a worker got no task");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SIGKILL one mid-run; its tasks move after the session timeout.
    let killed_at = chrono::Utc::now();
    workers.remove(0).kill();
    std::thread::sleep(Duration::from_millis(1_500));
    workers.push(config.spawn(3));
    std::thread::sleep(Duration::from_millis(1_500));
    // A graceful leave: its tasks move at once.
    workers.remove(0).leave();
    finish_and_compare(&config, workers, &want);
    // When the killed worker's tasks started again elsewhere (a figure
    // for the benchmark notes; the bound is the 6 s session timeout).
    let lost: Vec<String> = started_tasks(&config, 0)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let mut restarts: Vec<i64> = [1, 2, 3]
        .into_iter()
        .flat_map(|n| started_tasks(&config, n))
        .filter(|(task, at)| lost.contains(task) && *at > killed_at)
        .map(|(_, at)| (at - killed_at).num_milliseconds())
        .collect();
    restarts.sort_unstable();
    assert!(
        !lost.is_empty() && !restarts.is_empty(),
        "the killed worker's tasks moved"
    );
    eprintln!(
        "the killed worker's {} tasks restarted {restarts:?} ms after the SIGKILL",
        lost.len()
    );
    Ok(())
}

#[test]
fn a_rolling_restart_of_every_worker_loses_and_doubles_nothing() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let (want, config) = worker_setup(&brokers, 20_000)?;
    let mut workers: Vec<Worker> = (0..3).map(|n| config.spawn(n)).collect();
    for n in 3..6 {
        std::thread::sleep(Duration::from_millis(1_500));
        // One at a time: the old one leaves, its replacement joins.
        workers.remove(0).leave();
        workers.push(config.spawn(n));
    }
    finish_and_compare(&config, workers, &want);
    Ok(())
}

/// The stage layout of the clicks job over `config`'s topics.
fn build_layout(config: &WorkerConfig) -> Result<StageLayout> {
    Ok(clicks_job(Job::new().worker_mode(), &config.topics, false)?.stage_layout())
}

/// An application that started when its input had 3 partitions (its task
/// topics say so) meets an input of 6: its workers are not refused, each
/// of its 3 source tasks reads 2 partitions, and the output is the
/// one-process run's over all 6.
#[test]
fn partitions_added_to_the_input_are_read_by_the_tasks_the_application_has() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let input = unique_topic("grown-in");
    create_topic(&brokers, &input, 3);
    super::add_partitions(&brokers, &input, 6);
    produce_clicks(&brokers, &input, 12_000);
    let (want, config) = worker_setup_on(&brokers, &input)?;
    // The application's task topics, as made when the input had 3.
    let topics = InternalTopics::new(&brokers, &config.app, 3);
    let layout = build_layout(&config)?;
    let made = topics.ensure_task_topics(&layout, &[3, 3])?;
    assert_eq!(made.iter().map(|(_, n)| *n).collect::<Vec<_>>(), [3, 3]);
    // Asked for 6 now, it keeps 3.
    assert_eq!(topics.ensure_task_topics(&layout, &[6, 3])?, made);
    // A keyed stage's count never changes so.
    let err = error_text(topics.ensure_task_topics(&layout, &[3, 4]));
    assert!(
        err.contains("exists with 3 partitions, this job asks for 4"),
        "{err}"
    );
    let workers: Vec<Worker> = (0..2).map(|n| config.spawn(n)).collect();
    finish_and_compare(&config, workers, &want);
    let started: Vec<String> = (0..2)
        .flat_map(|n| started_tasks(&config, n))
        .map(|(task, _)| task)
        .collect();
    assert!(
        started
            .iter()
            .all(|t| !t.starts_with("stage=0 task=") || !t.ends_with(['3', '4', '5'])),
        "only 3 source tasks: {started:?}"
    );
    Ok(())
}

/// Per-user 1 s counts of `topics.input`, live (unbounded), with
/// partitions idle after 300 ms without data.
fn idle_job(job: Job, topics: &Topics) -> Result<Job> {
    let source = KafkaSource::builder(&topics.brokers)
        .topic(&topics.input)
        .json::<Click>()?;
    job.source(
        source,
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(100))
            .with_timestamps(|c: &Click| c.ts)
            .with_idleness(Duration::from_millis(300)),
    )
    .key_by(|c: &Click| c.user)
    .window(Tumbling::of(Duration::from_secs(1)))
    .aggregate(Count)
    .uid("counts")
    .map(|r| Row {
        user: r.key,
        start: r.window.start,
        count: r.value,
    })
    .sink(
        KafkaSink::<Row>::json(&topics.brokers, &topics.output)
            .exactly_once(format!("{}-txn", topics.output))
            .build()?,
    )
    .uid("rows-sink");
    Ok(job)
}

/// An upstream task whose partition never has data goes idle, and says so
/// to the tasks downstream (a control record): windows fire on the other
/// upstream task's watermark alone, as in one process. Without it the
/// downstream watermark would stay at the silent task's `-inf` and no
/// window would ever fire.
#[test]
fn an_idle_upstream_task_holds_no_window_back_on_other_workers() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let topics = Topics {
        brokers: brokers.clone(),
        input: unique_topic("idle-in"),
        output: unique_topic("idle-rows"),
        late: String::new(),
    };
    create_topic(&brokers, &topics.input, 2);
    create_topic(&brokers, &topics.output, 1);
    // Clicks into partition 0 only, 1 per ms of event time, 5 users, for
    // as long as the test runs: partition 0 stays active, 1 goes idle.
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (brokers, input, writing) =
            (brokers.clone(), topics.input.clone(), Arc::clone(&writing));
        std::thread::spawn(move || {
            let mut seq = 0u64;
            while writing.load(std::sync::atomic::Ordering::SeqCst) && seq < 120_000 {
                let batch: Vec<Produce> = (seq..seq + 100)
                    .map(|i| {
                        let click = Click {
                            user: (i % 5) as u32,
                            ts: 1_000_000 + i as i64,
                            seq: i,
                        };
                        Produce::click(0, &click)
                    })
                    .collect();
                produce(&brokers, &input, &batch);
                seq += 100;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let dir = tempfile::tempdir().map_err(|e| Error::io("create", "tempdir", e))?;
    let app = unique_topic("idle-app");
    let build = || {
        idle_job(
            Job::new()
                .worker_mode()
                .checkpointing(Duration::from_millis(200), dir.path().join("chk")),
            &topics,
        )
    };
    let layout = build()?.stage_layout();
    InternalTopics::new(&brokers, &app, 2).ensure_repartition_topics(&layout)?;
    let exchange = Arc::new(KafkaExchange::new(
        &brokers,
        &app,
        build()?.config().key_groups,
    ));
    let mut handles = Vec::new();
    for (stage, task) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        handles.push(build()?.spawn_part(&JobPart {
            stage,
            task,
            repartition_partitions: 2,
            exchange: Arc::clone(&exchange) as Arc<dyn tideline::RemoteExchange>,
            checkpoint_stores: None,
            stage_tasks: None,
        })?);
    }
    // The first two windows: 1,000 clicks each, 200 per user.
    let mut want: Vec<Row> = (0..2)
        .flat_map(|w| {
            (0..5).map(move |user| Row {
                user,
                start: 1_000_000 + w * 1_000,
                count: 200,
            })
        })
        .collect();
    want.sort();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let mut rows: Vec<Row> = consume_json(&brokers, &topics.output);
        rows.retain(|r| r.start < 1_002_000);
        rows.sort();
        if rows.len() >= want.len() || std::time::Instant::now() >= deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    for handle in handles {
        handle.stop_handle().abort();
        match handle.join() {
            Ok(_) | Err(Error::Aborted) => {}
            Err(e) => return Err(e),
        }
    }
    writer
        .join()
        .map_err(|_| Error::user("the click writer panicked"))?;
    assert_eq!(rows, want, "windows fired with an idle upstream task");
    Ok(())
}

/// A session timeout the brokers refuse (below their 6 s minimum) stops
/// the worker with an error naming the setting, instead of a warning at
/// every poll.
#[test]
fn a_session_timeout_the_brokers_refuse_is_an_error() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let app = unique_topic("short-session");
    let dir = tempfile::tempdir().map_err(|e| Error::io("create", "tempdir", e))?;
    let staging = dir.path().to_path_buf();
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = KafkaWorkers::new(&brokers, &app)
            .partitions(1)
            .session_timeout(Duration::from_secs(1))
            .run(|job| {
                let job = job.checkpointing(Duration::from_millis(200), &staging);
                job.source(VecSource::new(vec![1u32]), WatermarkStrategy::none())
                    .key_by(|x: &u32| *x)
                    .window(Tumbling::of(Duration::from_millis(10)))
                    .aggregate(Count)
                    .map(|r| r.value)
                    .sink(CollectSink::new());
                Ok(job)
            });
        let _ = done.send(result);
    });
    let result = outcome
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| Error::user("the worker did not stop within 60 s"))?;
    let err = error_text(result);
    assert!(err.contains("refuse a session timeout of 1s"), "{err}");
    Ok(())
}

/// With a standby replica each, two workers keep warm copies of each
/// other's tasks: when one is killed, every task that moves to the other
/// restores from its replica (reading only the tail of its checkpoint
/// partition), and the output is still the one-process run's.
#[test]
fn a_killed_workers_tasks_restore_from_standby_replicas() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let (want, mut config) = worker_setup(&brokers, 20_000)?;
    config.standbys = 1;
    let mut workers: Vec<Worker> = (0..2).map(|n| config.spawn(n)).collect();
    // Both run tasks and worker 1 keeps replicas of worker 0's; a few
    // placement rounds (2 s each) later, of all of them, read to their end.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while started_tasks(&config, 0).is_empty()
        || started_tasks(&config, 1).is_empty()
        || logged(&config, 1, "keeping a standby replica").is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the workers got no tasks or worker 1 keeps no replica"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(4_500));
    let killed_at = chrono::Utc::now();
    workers.remove(0).kill();
    finish_and_compare(&config, workers, &want);
    let restores: Vec<String> = logged(&config, 1, "checkpoint store replayed")
        .into_iter()
        .filter(|(_, at)| *at > killed_at)
        .map(|(fields, _)| fields)
        .collect();
    let moved = started_tasks(&config, 1)
        .into_iter()
        .filter(|(_, at)| *at > killed_at)
        .count();
    assert!(moved > 0, "worker 0's tasks moved to worker 1");
    assert_eq!(restores.len(), moved, "{restores:#?}");
    assert!(
        restores.iter().all(|r| r.contains("standby=true")),
        "every moved task restored from its replica: {restores:#?}"
    );
    eprintln!("restores after the kill: {restores:#?}");
    Ok(())
}
