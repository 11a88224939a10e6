//! Window tests: brute-force references, lateness, triggers, joins.

mod combine;
mod differential;
mod joins;
mod lateness;
mod partition_local;
mod sessions;
mod triggers;

use std::collections::BTreeMap;

use tideline::prelude::*;

/// A test event: key, timestamp (ms), value.
pub(crate) type Event = (u64, i64, i64);

/// `(key, start, end)` → `(count, sum, min, max)`.
pub(crate) type Table = BTreeMap<(u64, i64, i64), (u64, i64, i64, i64)>;

/// Seeded events: timestamps advance ~`step` ms per event with up to
/// `disorder` ms of jitter backwards, keys in `0..keys`, values in -50..50.
pub(crate) fn events(seed: u64, n: usize, keys: u64, step: i64, disorder: i64) -> Vec<Event> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let jitter = if disorder > 0 {
                rng.gen_range(0..=disorder)
            } else {
                0
            };
            (
                rng.gen_range(0..keys),
                i as i64 * step - jitter - 5_000,
                rng.gen_range(-50..50),
            )
        })
        .collect()
}

/// Adds `e` to the reference entry of `(key, window)`.
pub(crate) fn add(table: &mut Table, key: u64, w: TimeWindow, value: i64) {
    let entry = table
        .entry((key, w.start, w.end))
        .or_insert((0, 0, i64::MAX, i64::MIN));
    entry.0 += 1;
    entry.1 += value;
    entry.2 = entry.2.min(value);
    entry.3 = entry.3.max(value);
}

/// The aggregate every differential test computes.
#[allow(clippy::type_complexity)]
pub(crate) fn count_sum_min_max() -> (Count, Sum<Event, i64>, Min<Event, i64>, Max<Event, i64>) {
    (
        Count,
        Sum::of(|e: &Event| e.2),
        Min::of(|e: &Event| e.2),
        Max::of(|e: &Event| e.2),
    )
}

/// Collects window results into a table, checking each window appears once.
pub(crate) fn to_table(results: Vec<WindowResult<u64, (u64, i64, i64, i64)>>) -> Table {
    let mut table = Table::new();
    for r in results {
        let previous = table.insert((r.key, r.window.start, r.window.end), r.value);
        assert!(
            previous.is_none(),
            "window {:?} of key {} emitted twice",
            r.window,
            r.key
        );
        assert_eq!(r.firing, Firing::OnTime);
        assert!(!r.update);
    }
    table
}
