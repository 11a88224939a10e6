//! Stopping a job, both of Flink's ways: with a savepoint (no drain; the
//! job resumes later, at another parallelism, and ends with exactly the
//! windows and late records of a run never stopped) and with a drain
//! (final: every window fires, and resuming from it is refused).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tideline::prelude::*;
use tideline::RestoreFrom;

use super::late_data::{committed, job, uninterrupted};
use super::{drive, tempdir, Ev, Out};

/// Steps `job` `rounds` rounds of 10 ms, asks for a stop with a savepoint
/// into `savepoint`, and steps to the end.
fn run_then_savepoint(
    job: Job,
    clock: &ManualClock,
    rounds: usize,
    savepoint: &Path,
) -> Result<JobSummary> {
    let mut run = job.start_local()?;
    for _ in 0..rounds {
        clock.advance(Duration::from_millis(10));
        run.step()?;
    }
    assert!(!run.is_finished(), "the stop must come mid-run");
    run.stop_handle().savepoint(savepoint)?;
    while !run.is_finished() {
        clock.advance(Duration::from_millis(10));
        run.step()?;
    }
    run.finish()
}

fn reference() -> Result<(Vec<Out>, Vec<Ev>)> {
    uninterrupted(|dir, clock| job(dir, clock, 2, false))
}

#[test]
fn stop_with_savepoint_then_resume_at_other_parallelisms_is_exact() -> Result<()> {
    let (rows, late) = reference()?;
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    let mut resume_from: Option<std::path::PathBuf> = None;
    // Stop twice with a savepoint (at parallelism 2, then 3), finish at 1.
    for (i, (rounds, parallelism)) in [(9, 2), (8, 3)].into_iter().enumerate() {
        let mut job = job(dir.path(), &clock, parallelism, true)?;
        if let Some(path) = &resume_from {
            job = job.restore(RestoreFrom::Path(path.clone()));
        }
        let savepoint_dir = dir.path().join(format!("savepoint-{i}"));
        let summary = run_then_savepoint(job, &clock, rounds, &savepoint_dir)?;
        let path = summary
            .savepoint
            .clone()
            .ok_or_else(|| Error::user(format!("no savepoint in {summary:?}")))?;
        assert!(path.starts_with(&savepoint_dir), "{path:?}");
        assert!(
            summary.checkpoints.last().is_some_and(|c| !c.is_final),
            "a savepoint is not a final checkpoint: {summary:?}"
        );
        // Nothing fired early: every window committed so far is one of the
        // uninterrupted run's, with all its records.
        let (so_far, late_so_far) = committed(dir.path())?;
        assert!(so_far.len() < rows.len(), "stopped before the end");
        assert!(
            so_far.iter().all(|r| rows.contains(r)),
            "a window fired with partial data at the stop"
        );
        assert!(late_so_far.iter().all(|r| late.contains(r)));
        resume_from = Some(path);
    }
    let resumed = job(dir.path(), &clock, 1, true)?
        .restore(RestoreFrom::Path(resume_from.unwrap_or_default()));
    let summary = drive(resumed, &clock, None)?.ok_or_else(|| Error::user("did not finish"))?;
    assert!(summary.restored_from.is_some());
    assert_eq!(committed(dir.path())?, (rows, late));
    Ok(())
}

#[test]
fn a_drained_job_cannot_be_resumed() -> Result<()> {
    let (rows, _) = reference()?;
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    let mut run = job(dir.path(), &clock, 2, true)?.start_local()?;
    for _ in 0..12 {
        clock.advance(Duration::from_millis(10));
        run.step()?;
    }
    run.stop_handle().drain();
    let summary = run.finish()?;
    assert!(summary.checkpoints.last().is_some_and(|c| c.is_final));
    // The drain fired every open window with what it had.
    let (drained, _) = committed(dir.path())?;
    assert!(drained.iter().any(|r| !rows.contains(r)));

    let again = job(dir.path(), &clock, 2, true)?; // restores the latest
    let error = match again.start_local() {
        Ok(_) => return Err(Error::user("restoring a drained job must be refused")),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("stopped with a drain"), "{error}");
    Ok(())
}

#[test]
fn savepoints_need_checkpointing() -> Result<()> {
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    let run = job(dir.path(), &clock, 1, false)?.start_local()?;
    let error = run
        .stop_handle()
        .savepoint(dir.path().join("sp"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("takes no checkpoints"), "{error}");
    Ok(())
}

#[test]
fn a_job_resumed_into_a_new_checkpoint_directory_numbers_on_after_the_savepoint() -> Result<()> {
    let (rows, late) = reference()?;
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    let summary = run_then_savepoint(
        job(dir.path(), &clock, 2, true)?,
        &clock,
        12,
        &dir.path().join("savepoint"),
    )?;
    let savepoint = summary
        .savepoint
        .ok_or_else(|| Error::user("no savepoint"))?;
    let savepoint_id = summary.checkpoints.last().map_or(0, |c| c.id);
    // A new version of the job, checkpointing somewhere else.
    let resumed = job(dir.path(), &clock, 3, true)?
        .checkpointing(Duration::from_millis(100), dir.path().join("chk-v2"))
        .restore(RestoreFrom::Path(savepoint));
    let summary = drive(resumed, &clock, None)?.ok_or_else(|| Error::user("did not finish"))?;
    assert!(
        summary.checkpoints.iter().all(|c| c.id > savepoint_id),
        "ids must grow across the resume: savepoint {savepoint_id}, then {:?}",
        summary.checkpoints.iter().map(|c| c.id).collect::<Vec<_>>()
    );
    assert_eq!(committed(dir.path())?, (rows, late));
    Ok(())
}
