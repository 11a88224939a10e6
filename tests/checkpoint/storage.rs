//! Checkpoints on disk: retention, partial and corrupt checkpoints.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tideline::engine::checkpoint::CheckpointStorage;
use tideline::prelude::*;
use tideline::RestoreFrom;
use tideline::{CheckpointStore, LocalDirectory};

use super::{committed, drive, tempdir, windowed_job, Backend};

fn checkpoint_dirs(root: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .map_err(Error::user)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("chk-"))
        .collect();
    names.sort();
    Ok(names)
}

/// Runs the job to `rounds` (or the end) with checkpoints in `dir/chk`.
fn run(
    dir: &Path,
    clock: &Arc<ManualClock>,
    backend: Backend,
    rounds: Option<usize>,
) -> Result<Option<JobSummary>> {
    let job = windowed_job(dir, clock, 6_000, 2, 2, backend, true)?;
    drive(job, clock, rounds)
}

#[test]
fn retention_keeps_exactly_the_newest_k() -> Result<()> {
    for backend in super::backends() {
        let dir = tempdir()?;
        let clock = Arc::new(ManualClock::new(0));
        let summary =
            run(dir.path(), &clock, backend, None)?.ok_or_else(|| Error::user("unfinished"))?;
        assert!(summary.checkpoints.len() >= 3, "{:?}", summary.checkpoints);
        let storage = CheckpointStorage::new(dir.path().join("chk"))?;
        let newest: Vec<u64> = summary
            .checkpoints
            .iter()
            .rev()
            .take(2)
            .map(|c| c.id)
            .collect();
        assert_eq!(storage.complete_ids()?, newest);
        assert_eq!(checkpoint_dirs(&dir.path().join("chk"))?.len(), 2);
        // Both kept checkpoints verify, shared files included.
        for id in newest {
            storage.open(id)?;
        }
    }
    Ok(())
}

/// The largest file under `dir`.
fn largest_file(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(meta) = entry.metadata() {
                if path.file_name().is_some_and(|n| n != "_metadata")
                    && best.as_ref().is_none_or(|(len, _)| meta.len() > *len)
                {
                    best = Some((meta.len(), path));
                }
            }
        }
    }
    best.map(|(_, p)| p)
}

/// Checkpoints in a store of their own (`Job::checkpoint_store`): the
/// checkpoint directory only stages files, and a run dropped mid-way
/// resumes from the store to the uninterrupted run's output.
#[test]
fn checkpoints_in_a_store_of_their_own_restore_to_the_uninterrupted_output() -> Result<()> {
    for backend in super::backends() {
        let reference = tempdir()?;
        let fresh = Arc::new(ManualClock::new(0));
        let job = windowed_job(reference.path(), &fresh, 6_000, 2, 2, backend, false)?;
        drive(job, &fresh, None)?;

        let (dir, elsewhere) = (tempdir()?, tempdir()?);
        let store: Arc<dyn CheckpointStore> = Arc::new(LocalDirectory::new(elsewhere.path())?);
        let clock = Arc::new(ManualClock::new(0));
        let job = |store: &Arc<dyn CheckpointStore>| -> Result<Job> {
            Ok(
                windowed_job(dir.path(), &clock, 6_000, 2, 2, backend, true)?
                    .checkpoint_store(Arc::clone(store)),
            )
        };
        assert!(drive(job(&store)?, &clock, Some(25))?.is_none());
        let in_store = CheckpointStorage::new(elsewhere.path())?.complete_ids()?;
        assert!(in_store.len() >= 2, "{in_store:?}");
        // The staging directory holds no checkpoint.
        assert!(CheckpointStorage::new(dir.path().join("chk"))?
            .complete_ids()?
            .is_empty());
        let summary =
            drive(job(&store)?, &clock, None)?.ok_or_else(|| Error::user("unfinished"))?;
        assert_eq!(summary.restored_from, Some(in_store[0]));
        assert_eq!(committed(dir.path())?, committed(reference.path())?);
    }
    Ok(())
}

#[test]
fn a_corrupt_checkpoint_is_detected_and_the_previous_one_used() -> Result<()> {
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    // Crash mid-way: at least two checkpoints complete.
    assert!(run(dir.path(), &clock, Backend::Memory, Some(25))?.is_none());
    let root = dir.path().join("chk");
    let storage = CheckpointStorage::new(&root)?;
    let ids = storage.complete_ids()?;
    assert!(ids.len() >= 2, "{ids:?}");
    let (newest, previous) = (ids[0], ids[1]);
    // Truncate the newest checkpoint's largest private file.
    let victim = largest_file(&root.join(format!("chk-{newest:010}")))
        .ok_or_else(|| Error::user("no file"))?;
    let bytes = std::fs::read(&victim).map_err(Error::user)?;
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).map_err(Error::user)?;

    // Restoring that checkpoint by path fails, naming the file.
    let job = windowed_job(dir.path(), &clock, 6_000, 2, 2, Backend::Memory, true)?
        .restore(RestoreFrom::Path(root.join(format!("chk-{newest:010}"))));
    let err = job
        .start_local()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let name = victim
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    assert!(err.contains(&name) && err.contains("truncated"), "{err}");

    // Restoring the latest passes over it, reports why, and uses the previous one.
    let summary =
        run(dir.path(), &clock, Backend::Memory, None)?.ok_or_else(|| Error::user("unfinished"))?;
    assert_eq!(summary.restored_from, Some(previous));
    assert_eq!(summary.skipped_checkpoints.len(), 1);
    assert_eq!(summary.skipped_checkpoints[0].id, newest);
    assert!(summary.skipped_checkpoints[0].reason.contains("truncated"));
    // And the output is still exactly that of an uninterrupted run.
    let reference_dir = tempdir()?;
    let fresh = Arc::new(ManualClock::new(0));
    let job = windowed_job(
        reference_dir.path(),
        &fresh,
        6_000,
        2,
        2,
        Backend::Memory,
        false,
    )?;
    drive(job, &fresh, None)?;
    assert_eq!(committed(dir.path())?, committed(reference_dir.path())?);
    Ok(())
}

#[test]
fn a_checkpoint_without_metadata_is_ignored_and_removed() -> Result<()> {
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    assert!(run(dir.path(), &clock, Backend::Memory, Some(15))?.is_none());
    let root = dir.path().join("chk");
    let storage = CheckpointStorage::new(&root)?;
    let newest = storage
        .complete_ids()?
        .first()
        .copied()
        .ok_or_else(|| Error::user("none"))?;
    // A later checkpoint whose metadata never got written.
    let partial = root.join(format!("chk-{:010}", newest + 1));
    std::fs::create_dir_all(partial.join("window_aggregate/0")).map_err(Error::user)?;
    std::fs::write(partial.join("window_aggregate/0/timers"), b"half").map_err(Error::user)?;
    let summary =
        run(dir.path(), &clock, Backend::Memory, None)?.ok_or_else(|| Error::user("unfinished"))?;
    assert_eq!(summary.restored_from, Some(newest));
    assert!(summary.skipped_checkpoints.is_empty());
    // It was removed before the run started; the run's checkpoints follow
    // the one it restored from.
    assert!(summary.checkpoints.iter().all(|c| c.id > newest));
    assert!(CheckpointStorage::new(&root)?
        .complete_ids()?
        .iter()
        .all(|id| *id > newest));
    Ok(())
}

#[test]
fn when_no_checkpoint_verifies_the_job_refuses_to_start_over() -> Result<()> {
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    assert!(run(dir.path(), &clock, Backend::Memory, Some(15))?.is_none());
    let root = dir.path().join("chk");
    for id in CheckpointStorage::new(&root)?.complete_ids()? {
        let meta = root.join(format!("chk-{id:010}")).join("_metadata");
        let text = std::fs::read_to_string(&meta).map_err(Error::user)?;
        std::fs::write(&meta, text.replacen('1', "2", 1)).map_err(Error::user)?;
    }
    let job = windowed_job(dir.path(), &clock, 6_000, 2, 2, Backend::Memory, true)?;
    let err = job
        .start_local()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("no checkpoint verifies"), "{err}");
    Ok(())
}
