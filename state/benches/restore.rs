//! Restore cost of keyed state: 1 M keys (`u64` → `u64`) snapshotted once at
//! an old parallelism, then restored by every subtask of a new parallelism,
//! for the memory and the RocksDB backend. Prints, per (backend, old
//! parallelism, new parallelism), the restore time of each new subtask, their
//! sum (total work) and their maximum (wall time when subtasks restore
//! concurrently on enough cores).
//!
//! `cargo bench -p tideline-state --features rocksdb --bench restore`
//! (`-- --quick` restores 20,000 keys; `TIDELINE_RESTORE_KEYS` sets the count).
//! Run without `--bench` (as `cargo test --benches` does) it uses the quick size.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tideline_state::{
    KeyedState, Result, RocksDbOptions, StateBackend, StateError, StateScope, ValueStateDescriptor,
};

const VALUE: ValueStateDescriptor<u64> = ValueStateDescriptor::new("value");
const GROUPS: u16 = 128;

fn owner(key: u64, parallelism: usize) -> Result<usize> {
    let group = tideline_state::key_group::key_group_of(&key, GROUPS)?;
    Ok(tideline_state::key_group::subtask_for_key_group(
        group,
        GROUPS,
        parallelism,
    ))
}

/// Writes `keys` keys at `parallelism` and snapshots every subtask; returns
/// the snapshot directories.
fn snapshot(
    backend: &StateBackend,
    root: &std::path::Path,
    keys: u64,
    parallelism: usize,
) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for subtask in 0..parallelism {
        let scope = StateScope::for_subtask("bench", subtask, parallelism, GROUPS);
        let mut state = KeyedState::<u64>::open(backend, scope)?;
        for key in 0..keys {
            if owner(key, parallelism)? == subtask {
                state.value(&VALUE, &key, &())?.set(key.wrapping_mul(31));
            }
        }
        let dir = root.join(format!("snap-{parallelism}-{subtask}"));
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        state.snapshot_to(&dir)?;
        dirs.push(dir);
    }
    Ok(dirs)
}

fn io(path: &std::path::Path, source: std::io::Error) -> StateError {
    StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Restores every subtask of `parallelism` from `dirs`, one after the other;
/// returns each restore's time and checks that every key arrived once.
fn restore(
    backend: &StateBackend,
    dirs: &[PathBuf],
    keys: u64,
    parallelism: usize,
) -> Result<Vec<Duration>> {
    let mut times = Vec::new();
    let mut total = 0;
    for subtask in 0..parallelism {
        let scope = StateScope::for_subtask("bench", subtask, parallelism, GROUPS);
        let mut state = KeyedState::<u64>::open(backend, scope)?;
        let start = Instant::now();
        state.restore_from(dirs)?;
        times.push(start.elapsed());
        total += state.approximate_len()?;
        // Spot check outside the timed part: a key this subtask owns.
        if let Some(key) =
            (0..keys.min(1000)).find(|&k| owner(k, parallelism).ok() == Some(subtask))
        {
            let value = state.value(&VALUE, &key, &())?.get().copied();
            if value != Some(key.wrapping_mul(31)) {
                return Err(StateError::Snapshot {
                    path: format!("{dirs:?}"),
                    reason: format!("key {key} restored as {value:?}"),
                });
            }
        }
    }
    if total != keys {
        return Err(StateError::Snapshot {
            path: format!("{dirs:?}"),
            reason: format!("restored {total} entries, expected {keys}"),
        });
    }
    Ok(times)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test` runs benches with `--bench` absent; keep that run small.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let keys: u64 = std::env::var("TIDELINE_RESTORE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 20_000 } else { 1_000_000 });
    let root = tempfile::tempdir().map_err(|e| io(std::path::Path::new("tempdir"), e))?;
    let backends = [
        ("memory", StateBackend::Memory),
        (
            "rocksdb",
            StateBackend::RocksDb(RocksDbOptions::new(root.path().join("work"))),
        ),
    ];
    for (name, backend) in &backends {
        for old in [1usize, 2] {
            let snap_root = root.path().join(format!("{name}-{old}"));
            let dirs = snapshot(backend, &snap_root, keys, old)?;
            for new in [1usize, 2] {
                let times = restore(backend, &dirs, keys, new)?;
                let ms: Vec<String> = times
                    .iter()
                    .map(|t| format!("{:.1}", t.as_secs_f64() * 1e3))
                    .collect();
                let sum: Duration = times.iter().sum();
                let max = times.iter().max().copied().unwrap_or_default();
                println!(
                    "restore backend={name} keys={keys} old_parallelism={old} new_parallelism={new} \
                     per_subtask_ms=[{}] sum_ms={:.1} max_ms={:.1}",
                    ms.join(", "),
                    sum.as_secs_f64() * 1e3,
                    max.as_secs_f64() * 1e3,
                );
            }
            std::fs::remove_dir_all(&snap_root).map_err(|e| io(&snap_root, e))?;
        }
    }
    Ok(())
}
