//! Bad jobs are rejected before they start, with an error naming the problem.

use std::time::Duration;

use tideline::prelude::*;

fn numbers(job: &Job) -> Stream<u32> {
    job.source(VecSource::new(vec![1, 2, 3]), WatermarkStrategy::none())
}

#[test]
fn job_without_sink() {
    let job = Job::new();
    let _ = numbers(&job);
    assert!(matches!(job.run(), Err(Error::NoSink)));
}

#[test]
fn stream_never_consumed() {
    let job = Job::new();
    let n = numbers(&job);
    n.sink(CollectSink::new());
    let _dangling = n.map(|x| x + 1).named("forgotten");
    match job.run() {
        Err(Error::DanglingStream { operator }) => assert_eq!(operator, "forgotten"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn zero_parallelism_and_batch_size() {
    for (job, field) in [
        (Job::new().parallelism(0), "parallelism"),
        (Job::new().batch_size(0), "batch_size"),
        (Job::new().channel_capacity(0), "channel_capacity"),
        (Job::new().parallelism(300), "parallelism"),
        (Job::new().flush_interval(Duration::ZERO), "flush_interval"),
    ] {
        numbers(&job).sink(CollectSink::new());
        match job.run() {
            Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn bounded_mode_rejects_unbounded_sources() {
    let job = Job::new().mode(ExecutionMode::Bounded);
    job.source(
        GeneratorSource::new(|i: u64, _: &mut SmallRng| i),
        WatermarkStrategy::none(),
    )
    .sink(CollectSink::new());
    match job.run() {
        Err(Error::UnboundedSource { source_name }) => assert_eq!(source_name, "generator"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn duplicate_operator_names() {
    let job = Job::new();
    let n = numbers(&job);
    n.map(|x| x).named("same").sink(CollectSink::new());
    n.map(|x| x).named("same").sink(CollectSink::new());
    let err = job.run().err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("invalid configuration `operator 'same'`: two operators have this name; names must be unique")
    );
}

#[test]
fn source_without_partitions_and_bad_rate() {
    let job = Job::new();
    job.source(
        VecSource::<u8>::partitioned(vec![]),
        WatermarkStrategy::none(),
    )
    .sink(CollectSink::new());
    assert!(
        matches!(job.run(), Err(Error::Config { ref field, .. }) if field == "source 'vec_source'.partitions")
    );

    let job = Job::new();
    job.source(
        GeneratorSource::new(|i: u64, _: &mut SmallRng| i)
            .with_count(10)
            .with_rate(-1.0),
        WatermarkStrategy::none(),
    )
    .sink(CollectSink::new());
    let err = job.run().err();
    assert_eq!(err.as_ref().and_then(|e| e.operator()), Some("generator"));
    assert!(err
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("generator.rate"));
}
