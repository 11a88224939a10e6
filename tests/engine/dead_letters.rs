//! What a dead letter carries: the record (its `Debug` form, the input
//! text, or what the operator was told to show), the reason, the operator,
//! and for a source's rejections the partition and where in it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tideline::connectors::file::FileSource;
use tideline::prelude::*;

/// Steps `job` to the end with `dead` collecting its dead letters.
fn dead_letters_of(job: Job, dead: &CollectSink<DeadLetter>) -> Result<Vec<DeadLetter>> {
    let summary = job.start_local()?.finish()?;
    let letters = dead.values();
    assert_eq!(summary.dead_letters, letters.len() as u64);
    Ok(letters)
}

const NO_EVENT_TIME: &str =
    "record has no event time: give its source a watermark strategy with timestamps";

#[test]
fn a_record_without_event_time_reaching_a_window_shows_its_key_or_its_debug_form() -> Result<()> {
    for debug in [false, true] {
        let job = Job::new().mode(ExecutionMode::Bounded);
        let windows = job
            .source(
                VecSource::new(vec![(7u32, 1i64)]),
                WatermarkStrategy::none(),
            )
            .key_by(|v: &(u32, i64)| v.0)
            .window(Tumbling::of(Duration::from_secs(1)));
        let windows = if debug {
            windows.debug_dead_letters()
        } else {
            windows
        };
        let dead = CollectSink::new();
        windows.aggregate(Count).dead_letters().sink(dead.clone());
        let record = if debug {
            "(7, 1)"
        } else {
            "(u32, i64) with key 7"
        };
        assert_eq!(
            dead_letters_of(job, &dead)?,
            vec![DeadLetter::new(
                "window_aggregate",
                EventTime::MIN,
                NO_EVENT_TIME,
                record
            )]
        );
    }
    Ok(())
}

#[test]
fn a_non_positive_session_gap_names_the_gap_and_the_record() -> Result<()> {
    let job = Job::new().mode(ExecutionMode::Bounded);
    let dead = CollectSink::new();
    job.source(
        VecSource::new(vec![(1u32, 100i64, 5i64), (2, 200, 0), (3, 300, -4)]),
        WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO)
            .with_timestamps(|v: &(u32, i64, i64)| v.1),
    )
    .key_by(|v: &(u32, i64, i64)| v.0)
    .window(Session::with_dynamic_gap(|v: &(u32, i64, i64)| v.2))
    .dead_letter_text(|v| format!("key {} at {}", v.0, v.1))
    .aggregate(Count)
    .dead_letters()
    .sink(dead.clone());
    let letter = |ts: i64, gap: i64, record: &str| {
        DeadLetter::new(
            "window_aggregate",
            EventTime::from_millis(ts),
            format!("session gap must be positive, got {gap} ms"),
            record,
        )
    };
    assert_eq!(
        dead_letters_of(job, &dead)?,
        vec![
            letter(200, 0, "key 2 at 200"),
            letter(300, -4, "key 3 at 300")
        ]
    );
    Ok(())
}

#[derive(Clone, Debug, Deserialize, Serialize)]
struct Row {
    #[allow(dead_code)]
    key: i64,
    #[allow(dead_code)]
    value: i64,
}

#[test]
fn a_malformed_file_row_carries_its_partition_and_line() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
    std::fs::write(&a, "key,value\n1,10\n").map_err(Error::user)?;
    std::fs::write(&b, "key,value\n2,20\n3,oops\n").map_err(Error::user)?;
    let pattern = dir.path().join("*.csv");
    let job = Job::new().mode(ExecutionMode::Bounded);
    let dead = CollectSink::new();
    let source = FileSource::<Row>::new(pattern.to_str().unwrap_or_default())?.partition_per_file();
    job.source(source, WatermarkStrategy::none())
        .dead_letters()
        .sink(dead.clone());
    let letters = dead_letters_of(job, &dead)?;
    assert_eq!(letters.len(), 1);
    let at = format!("{}:3", b.display());
    let letter = &letters[0];
    assert_eq!(letter.operator, "file_source");
    assert_eq!(letter.record, format!("{at}: 3,oops"));
    assert!(letter.reason.contains("invalid digit"), "{}", letter.reason);
    assert_eq!(letter.partition, Some(1));
    assert_eq!(letter.offset.as_deref(), Some(at.as_str()));
    assert_eq!(letter.timestamp, EventTime::MIN);
    Ok(())
}

#[test]
fn a_try_map_rejection_carries_the_record_debug_form() -> Result<()> {
    let job = Job::new().mode(ExecutionMode::Bounded);
    let dead = CollectSink::new();
    job.source(
        VecSource::new(vec!["1".to_string(), "x".to_string()]),
        WatermarkStrategy::none(),
    )
    .try_map(|s: &String| s.parse::<u32>())
    .named("parse")
    .dead_letters()
    .sink(dead.clone());
    assert_eq!(
        dead_letters_of(job, &dead)?,
        vec![DeadLetter::new(
            "parse",
            EventTime::MIN,
            "invalid digit found in string",
            "\"x\""
        )]
    );
    Ok(())
}
