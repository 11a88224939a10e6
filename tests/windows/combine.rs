//! Pre-aggregation before the keyed exchange: tumbling and sliding windows
//! of exact aggregates fold records where they are read, and nothing a
//! user sees changes: the same windows (to the last firing), the same late
//! records, at any parallelism, batch size and allowed lateness.

use tideline::prelude::*;
use tideline::window::AggregateFunction;

use super::count_sum_min_max;
use super::partition_local::{partitions, run_aggregate, Kind};
use super::{Event, Table};

/// The same aggregate with pre-aggregation turned off (its merge is not
/// declared exact), so records cross the exchange one by one.
#[derive(Clone)]
struct RecordByRecord<A>(A);

impl<A: AggregateFunction<Event>> AggregateFunction<Event> for RecordByRecord<A> {
    type Acc = A::Acc;
    type Out = A::Out;
    fn create(&self) -> Self::Acc {
        self.0.create()
    }
    fn add(&self, acc: &mut Self::Acc, value: Event) {
        self.0.add(acc, value);
    }
    fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc) {
        self.0.merge(acc, other);
    }
    fn result(&self, acc: Self::Acc) -> Self::Out {
        self.0.result(acc)
    }
}

/// Each window's last firing.
fn final_values(results: Vec<WindowResult<u64, (u64, i64, i64, i64)>>) -> Table {
    results
        .into_iter()
        .map(|r| ((r.key, r.window.start, r.window.end), r.value))
        .collect()
}

#[test]
fn folded_records_give_the_windows_and_late_records_of_unfolded_ones() -> Result<()> {
    // Three partitions, the last far behind (so some of its records are
    // late by its own watermark), partition 0 read slowly.
    let parts = partitions(21, 3, 600, 3_000);
    let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
    for kind in [Kind::Tumbling, Kind::Sliding] {
        for lateness in [0, 120] {
            for config in [(1, 1024, 50), (2, 7, 1), (4, 64, 5)] {
                let what = format!("{kind:?} L={lateness} (p, batch, flush)={config:?}");
                let (folded, folded_late, _, folded_in) =
                    run_aggregate(kind, &parts, config, lateness, count_sum_min_max())?;
                let (one_by_one, late, _, one_by_one_in) = run_aggregate(
                    kind,
                    &parts,
                    config,
                    lateness,
                    RecordByRecord(count_sum_min_max()),
                )?;
                if lateness == 0 && matches!(kind, Kind::Tumbling) {
                    assert!(!late.is_empty(), "{what}: the case must have late records");
                }
                println!("{what}: {folded_in} partials and records for {total} records");
                assert_eq!(folded_late, late, "{what}: late records");
                assert_eq!(
                    final_values(folded),
                    final_values(one_by_one),
                    "{what}: windows"
                );
                assert_eq!(
                    one_by_one_in, total,
                    "{what}: unfolded, every record crosses"
                );
                // Sliding panes (50 ms) hold fewer records of a key than
                // tumbling windows (200 ms), and records late for some of
                // their windows cross as themselves.
                let at_most = match kind {
                    Kind::Tumbling => total / 2,
                    _ => total * 3 / 4,
                };
                assert!(
                    folded_in < at_most,
                    "{what}: folding must send far fewer entries than records \
                     ({folded_in} of {total})"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn float_sums_are_not_folded() -> Result<()> {
    // Float addition rounds differently in another order: such aggregates
    // send every record, so the result does not depend on batching.
    let parts = partitions(4, 2, 300, 0);
    let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let sum = Sum::of(|e: &Event| e.2 as f64 / 3.0);
    let (_, _, _, window_input) = run_aggregate(Kind::Tumbling, &parts, (2, 64, 5), 0, sum)?;
    assert_eq!(window_input, total);
    Ok(())
}
