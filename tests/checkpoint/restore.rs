//! In-process recovery, stepped under a manual clock: stop a job after a
//! few checkpoints (dropping it, as a crash would), restore, and compare
//! the committed output with a run that was never interrupted.

use std::sync::Arc;

use tideline::prelude::*;

use super::{committed, drive, tempdir, windowed_job, Backend};

const EVENTS: u64 = 6_000;

fn reference(partitions: usize, parallelism: usize) -> Result<Vec<super::Out>> {
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    let job = windowed_job(
        dir.path(),
        &clock,
        EVENTS,
        partitions,
        parallelism,
        Backend::Memory,
        false,
    )?;
    let summary = drive(job, &clock, None)?;
    assert!(summary.is_some_and(|s| s.checkpoints.is_empty() && s.restored_from.is_none()));
    let rows = committed(dir.path())?;
    // Every event is counted exactly once.
    assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), EVENTS);
    Ok(rows)
}

/// Crashes after each of `crashes` (rounds), restoring every time, then runs to the end.
fn crashed_run(
    backend: Backend,
    partitions: usize,
    parallelism: &[usize],
    crashes: &[usize],
) -> Result<(Vec<super::Out>, Vec<JobSummary>)> {
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    let mut summaries = Vec::new();
    for (i, rounds) in crashes.iter().map(|r| Some(*r)).chain([None]).enumerate() {
        let p = parallelism[i.min(parallelism.len() - 1)];
        let job = windowed_job(dir.path(), &clock, EVENTS, partitions, p, backend, true)?;
        if let Some(summary) = drive(job, &clock, rounds)? {
            summaries.push(summary);
        }
    }
    Ok((committed(dir.path())?, summaries))
}

fn check(backend: Backend, partitions: usize, parallelism: &[usize]) -> Result<()> {
    let expected = reference(partitions, *parallelism.last().unwrap_or(&1))?;
    // 6,000 events at 20,000/s take 300 ms of clock, 30 rounds; checkpoints
    // every 100 ms. Crash early, mid-way (twice in a row before a new
    // checkpoint could complete) and late.
    let (rows, summaries) = crashed_run(backend, partitions, parallelism, &[7, 12, 13, 20])?;
    assert_eq!(rows, expected);
    let last = summaries
        .last()
        .ok_or_else(|| Error::user("no final run"))?;
    assert!(last.restored_from.is_some(), "{last:?}");
    assert!(last.checkpoints.last().is_some_and(|c| c.is_final));
    Ok(())
}

#[test]
fn memory_state_restores_exactly() -> Result<()> {
    check(Backend::Memory, 2, &[2])
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_state_restores_exactly() -> Result<()> {
    check(Backend::RocksDb, 2, &[2])
}

#[test]
fn restore_at_parallelism_2_from_checkpoints_taken_at_4() -> Result<()> {
    check(Backend::Memory, 4, &[4, 4, 4, 4, 2])
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_restore_at_another_parallelism() -> Result<()> {
    check(Backend::RocksDb, 4, &[4, 2, 3, 4, 2])
}

#[test]
fn a_finished_job_restored_from_its_final_checkpoint_adds_nothing() -> Result<()> {
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    let job = super::windowed_job(dir.path(), &clock, EVENTS, 2, 2, Backend::Memory, true)?;
    let first = drive(job, &clock, None)?.ok_or_else(|| Error::user("not finished"))?;
    let before = committed(dir.path())?;
    assert!(first.checkpoints.len() >= 2, "{:?}", first.checkpoints);
    let job = super::windowed_job(dir.path(), &clock, EVENTS, 2, 2, Backend::Memory, true)?;
    let again = drive(job, &clock, None)?.ok_or_else(|| Error::user("not finished"))?;
    assert_eq!(again.restored_from, first.checkpoints.last().map(|c| c.id));
    assert_eq!(committed(dir.path())?, before);
    Ok(())
}
