//! A failure anywhere stops the whole job; `run()` returns it, naming the operator.

use tideline::prelude::*;

fn keyed_pipeline(job: &Job) -> Stream<u64> {
    job.source(
        GeneratorSource::new(|i: u64, _: &mut SmallRng| i)
            .with_count(1_000_000)
            .with_partitions(2),
        WatermarkStrategy::none(),
    )
    .key_by(|i| *i % 8)
    .partitioned()
}

#[test]
fn panic_in_user_closure_fails_the_job_with_the_operator_name() {
    let job = Job::new().parallelism(2);
    keyed_pipeline(&job)
        .map(|i| {
            if i == 777_777 {
                panic!("bad record {i}")
            } else {
                i
            }
        })
        .named("explode")
        .sink(CollectSink::new());
    match job.run() {
        Err(Error::Operator { operator, source }) => {
            assert_eq!(operator, "explode");
            assert!(
                matches!(*source, Error::Panic { ref message } if message == "bad record 777777"),
                "{source}"
            );
        }
        other => panic!("expected the operator's panic, got {other:?}"),
    }
}

#[derive(Clone)]
struct FailingSink {
    after: usize,
    seen: usize,
}

impl Sink<u64> for FailingSink {
    fn name(&self) -> &str {
        "failing_sink"
    }
    fn write_batch(&mut self, batch: Vec<Record<u64>>) -> Result<()> {
        self.seen += batch.len();
        if self.seen > self.after {
            return Err(Error::user(std::io::Error::other("disk full")));
        }
        Ok(())
    }
}

#[test]
fn failing_sink_fails_the_job_with_its_name() {
    let job = Job::new().parallelism(2);
    keyed_pipeline(&job).sink(FailingSink {
        after: 5_000,
        seen: 0,
    });
    let err = job.run().err();
    assert_eq!(
        err.as_ref().and_then(|e| e.operator()),
        Some("failing_sink")
    );
    assert!(err
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("disk full"));
}

#[derive(Clone)]
struct Rejects;

impl KeyedProcessFunction<u64, u64, u64> for Rejects {
    fn process_element(&mut self, v: u64, _ctx: &mut ProcessContext<'_, u64, u64>) -> Result<()> {
        if v == 4_321 {
            return Err(Error::user(format!("cannot handle {v}")));
        }
        Ok(())
    }
}

#[test]
fn error_from_process_function_fails_the_job() {
    let job = Job::new().parallelism(2);
    job.source(
        GeneratorSource::new(|i: u64, _: &mut SmallRng| i).with_count(10_000),
        WatermarkStrategy::none(),
    )
    .key_by(|i| *i % 3)
    .process(Rejects)
    .sink(CollectSink::new());
    let err = job.run().err();
    assert_eq!(err.as_ref().and_then(|e| e.operator()), Some("process"));
    assert_eq!(
        err.map(|e| e.to_string()),
        Some("operator 'process' failed: cannot handle 4321".to_string())
    );
}

#[test]
fn rejected_records_go_to_dead_letters_and_counts_add_up() -> Result<()> {
    let job = Job::new().mode(ExecutionMode::Bounded);
    let lines = ["1", "2", "x", "4", "", "6"];
    let parsed = job
        .source(
            VecSource::new(lines.iter().map(|s| s.to_string()).collect()),
            WatermarkStrategy::none(),
        )
        .try_map(|s: &String| s.parse::<u32>())
        .named("parse");
    let good = CollectSink::new();
    let dead = CollectSink::new();
    parsed.sink(good.clone());
    parsed.dead_letters().sink(dead.clone());
    let summary = job.run()?;
    assert_eq!(good.values(), vec![1, 2, 4, 6]);
    let letters = dead.values();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].operator, "parse");
    assert_eq!(letters[0].record, "\"x\"");
    assert_eq!(letters[0].reason, "invalid digit found in string");
    assert_eq!(letters[1].record, "\"\"");
    assert_eq!(summary.dead_letters, 2);
    assert_eq!(good.len() as u64 + summary.dead_letters, lines.len() as u64);
    Ok(())
}

#[test]
fn fail_fast_stops_on_the_first_rejected_record() {
    let job = Job::new().failure_policy(FailurePolicy::FailFast);
    job.source(
        VecSource::new(vec!["1".to_string(), "x".into()]),
        WatermarkStrategy::none(),
    )
    .try_map(|s: &String| s.parse::<u32>())
    .sink(CollectSink::new());
    let err = job.run().err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("operator 'try_map' failed: record \"x\" rejected: invalid digit found in string")
    );
}
