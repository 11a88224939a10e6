//! Checkpointing what every keyed operator holds: its keyed state and its
//! timer services. One helper, so window, process and join operators write
//! and read snapshots the same way.
//!
//! Layout of an operator subtask's snapshot directory: `state/` holds the
//! keyed state backend's files, `timers` the timer services (each a list of
//! `(time, key, namespace)` in firing order). A restore keeps only the
//! timers of keys the subtask now owns; keyed state filters itself by key
//! group.

use tideline_engine::time::TimerService;
use tideline_engine::{EventTime, RestoreContext, Result, SnapshotWriter};
use tideline_state::{KeyedState, SnapshotFile, StateKey};

const STATE_DIR: &str = "state";
const TIMERS: &str = "timers";

/// The timers of one subtask, as stored.
pub(crate) type StoredTimers<K, N> = Vec<(EventTime, K, N)>;

/// Writes `state` and the snapshots of `timers` (one list per service).
pub(crate) fn snapshot_keyed<K: StateKey, N: StateKey>(
    state: &mut KeyedState<K>,
    timers: &[&TimerService<K, N>],
    writer: &mut SnapshotWriter<'_>,
) -> Result<()> {
    let dir = writer.subdir(STATE_DIR)?;
    let files = state.snapshot_to(&dir)?;
    writer.add_files(
        files
            .into_iter()
            .map(|f| SnapshotFile {
                name: format!("{STATE_DIR}/{}", f.name),
                shared_name: f.shared_name,
            })
            .collect(),
    );
    let lists: Vec<StoredTimers<K, N>> = timers.iter().map(|t| t.snapshot()).collect();
    writer.put(TIMERS, &lists)
}

/// Restores `state` and `timers` (in the order they were written), keeping
/// the timers of keys this subtask owns.
pub(crate) fn restore_keyed<K: StateKey, N: StateKey>(
    state: &mut KeyedState<K>,
    timers: &mut [&mut TimerService<K, N>],
    restore: &RestoreContext,
) -> Result<()> {
    let dirs: Vec<_> = restore.dirs().iter().map(|d| d.join(STATE_DIR)).collect();
    state.restore_from(&dirs)?;
    for lists in restore.read_all::<Vec<StoredTimers<K, N>>>(TIMERS)? {
        for (service, list) in timers.iter_mut().zip(lists) {
            let mut owned = Vec::with_capacity(list.len());
            for timer in list {
                if restore.owns_key(&timer.1)? {
                    owned.push(timer);
                }
            }
            service.restore(owned);
        }
    }
    Ok(())
}
