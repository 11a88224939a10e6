//! A small bounded thread pool for restore work: independent reads run on a
//! few scoped threads, and results come back in input order, so the outcome
//! (which entry wins, which error is reported) never depends on scheduling.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::Result;

/// At most this many threads per restoring subtask: a restore reads files and
/// checks checksums, and several subtasks of a job restore at the same time,
/// so more threads than this would only contend for the same cores and disk.
const MAX_THREADS: usize = 4;

/// Threads a restore of `items` work items uses.
pub(crate) fn threads_for(items: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    items.min(cores).clamp(1, MAX_THREADS)
}

/// `f` applied to every item, on up to [`threads_for`] threads; the results in
/// item order. On errors, the error of the first failing item (in item
/// order) is returned, whichever thread hit it first.
pub(crate) fn map_ordered<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let threads = threads_for(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<Result<R>>>> =
        Mutex::new(std::iter::repeat_with(|| None).take(items.len()).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let result = f(item);
                // A poisoned lock means another worker panicked; its panic is
                // re-raised by the scope, so this result does not matter.
                if let Ok(mut slots) = slots.lock() {
                    slots[i] = Some(result);
                }
            });
        }
    });
    let slots = slots
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = Vec::with_capacity(items.len());
    for slot in slots {
        match slot {
            Some(result) => out.push(result?),
            // Unreachable: every index below `items.len()` is taken by a
            // worker and the scope joins them all.
            None => {
                return Err(crate::StateError::Snapshot {
                    path: String::new(),
                    reason: "a restore worker did not report".to_string(),
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StateError;

    #[test]
    fn results_keep_item_order_and_the_first_error_wins() {
        let items: Vec<u32> = (0..50).collect();
        let doubled = map_ordered(&items, |&i| Ok(i * 2)).ok();
        assert_eq!(doubled, Some((0..50).map(|i| i * 2).collect()));
        let err = map_ordered(&items, |&i| {
            if i % 7 == 3 {
                Err(StateError::snapshot(
                    std::path::Path::new("x"),
                    format!("item {i}"),
                ))
            } else {
                Ok(i)
            }
        })
        .err();
        assert!(
            matches!(&err, Some(StateError::Snapshot { reason, .. }) if reason == "item 3"),
            "{err:?}"
        );
    }
}
