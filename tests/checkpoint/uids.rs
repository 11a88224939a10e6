//! State belongs to an operator's uid, not to its place in the graph: a
//! new version of a job, with operators inserted between checkpointed ones,
//! resumes with every operator's own state; a checkpoint holding state for
//! a uid the job no longer has is refused unless the job allows it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tideline::connectors::file::{read_committed, ExactlyOnceCsvSink};
use tideline::prelude::*;
use tideline::window::Span;

use super::{drive, generator, stepped_job, tempdir, Ev};

/// Which version of the job runs.
#[derive(Clone, Copy, PartialEq)]
enum Version {
    /// Counts per key, then sums per key of the counted stream's source.
    V1,
    /// V1 with a filter and a new stateful window operator (its own uid)
    /// inserted between the source and both checkpointed windows.
    V2Inserted,
    /// V1 without the sums operator (and its sink).
    V3Removed,
}

/// Per key and 500 ms window: `(count)` into `dir/counts`, `(sum)` into `dir/sums`.
fn job(dir: &Path, clock: &Arc<ManualClock>, version: Version, checkpoints: bool) -> Result<Job> {
    let job = stepped_job(dir, clock, 2, checkpoints);
    let mut events = events(&job);
    if version == Version::V2Inserted {
        events = events.filter(|_| true).named("keep-all");
        let maxima = events
            .key_by(|e: &Ev| e.key)
            .window(Sliding::of(Span::millis(1_000), Span::millis(250)))
            .aggregate(Max::of(|e: &Ev| e.value))
            .uid("maxima");
        maxima
            .map(|r| (r.key, r.window.start, r.value))
            .sink(CollectSink::new());
    }
    let counts = events
        .key_by(|e: &Ev| e.key)
        .window(Tumbling::of(Duration::from_millis(500)))
        .aggregate(Count)
        .uid("counts");
    counts
        .map(|r| row(r.key, r.window.start, r.value as i64))
        .sink(ExactlyOnceCsvSink::new(dir.join("counts"))?)
        .uid("counts-out");
    if version != Version::V3Removed {
        let sums = events
            .key_by(|e: &Ev| e.key)
            .window(Tumbling::of(Duration::from_millis(500)))
            .aggregate(Sum::of(|e: &Ev| e.value))
            .uid("sums");
        sums.map(|r| row(r.key, r.window.start, r.value))
            .sink(ExactlyOnceCsvSink::new(dir.join("sums"))?)
            .uid("sums-out");
    }
    Ok(job)
}

/// One window result (a struct: CSV files get a header row).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Row {
    key: u32,
    start: i64,
    value: i64,
}

fn row(key: u32, start: i64, value: i64) -> Row {
    Row { key, start, value }
}

fn rows(dir: &Path, name: &str) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = read_committed(dir.join(name))?;
    rows.sort_unstable();
    Ok(rows)
}

#[test]
fn operators_inserted_between_checkpointed_ones_keep_every_state_by_uid() -> Result<()> {
    let reference = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    drive(
        job(reference.path(), &clock, Version::V1, false)?,
        &clock,
        None,
    )?;

    let (dir, clock) = v1_crashed_mid_run()?;
    let summary = drive(
        job(dir.path(), &clock, Version::V2Inserted, true)?,
        &clock,
        None,
    )?
    .ok_or_else(|| Error::user("V2 did not finish"))?;
    assert!(summary.restored_from.is_some(), "{summary:?}");
    assert_eq!(
        rows(dir.path(), "counts")?,
        rows(reference.path(), "counts")?
    );
    assert_eq!(rows(dir.path(), "sums")?, rows(reference.path(), "sums")?);
    let counted: i64 = rows(dir.path(), "counts")?.iter().map(|r| r.value).sum();
    assert_eq!(counted, 6_000, "every event counted once");
    Ok(())
}

/// V1 run for 17 rounds (checkpoints every 100 ms), then "crashed".
fn v1_crashed_mid_run() -> Result<(tempfile::TempDir, Arc<ManualClock>)> {
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    drive(
        job(dir.path(), &clock, Version::V1, true)?,
        &clock,
        Some(17),
    )?;
    Ok((dir, clock))
}

/// The events source, with its uid.
fn events(job: &Job) -> Stream<Ev> {
    job.source(
        generator(6_000, 2, 20_000.0),
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(300))
            .with_timestamps(|e: &Ev| e.ts),
    )
    .uid("events")
}

#[test]
fn state_for_a_removed_uid_is_refused_unless_allowed() -> Result<()> {
    let (dir, clock) = v1_crashed_mid_run()?;
    let error = match job(dir.path(), &clock, Version::V3Removed, true)?.start_local() {
        Ok(_) => return Err(Error::user("state of 'sums' would be dropped silently")),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("sums") && error.contains("allow_non_restored_state"),
        "{error}"
    );
    let allowed = job(dir.path(), &clock, Version::V3Removed, true)?.allow_non_restored_state(true);
    let summary = drive(allowed, &clock, None)?.ok_or_else(|| Error::user("did not finish"))?;
    assert!(summary.restored_from.is_some());
    Ok(())
}

/// Emits each record's key.
#[derive(Clone)]
struct KeyOf;

impl KeyedProcessFunction<u32, Ev, u32> for KeyOf {
    fn process_element(&mut self, value: Ev, ctx: &mut ProcessContext<'_, u32, u32>) -> Result<()> {
        ctx.collect(value.key);
        Ok(())
    }
}

#[test]
fn a_uid_reused_by_another_kind_of_operator_is_refused() -> Result<()> {
    let (dir, clock) = v1_crashed_mid_run()?;
    // The same uids, but "counts" is now a keyed process function.
    let job2 = stepped_job(dir.path(), &clock, 2, true).allow_non_restored_state(true);
    events(&job2)
        .key_by(|e: &Ev| e.key)
        .process(KeyOf)
        .uid("counts")
        .sink(CollectSink::new());
    let error = match job2.start_local() {
        Ok(_) => {
            return Err(Error::user(
                "a window's state restored into a process function",
            ))
        }
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("uid 'counts'") && error.contains("WindowOperator"),
        "{error}"
    );
    Ok(())
}
