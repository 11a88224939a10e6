//! Properties over random change sequences: applying `to_table`'s
//! changelog gives the table the changes describe, the changelog is
//! normalized, and the retracting aggregate's final values are those
//! recomputed from the final table.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tideline::prelude::*;

use super::{change, key_only, order, orders_table, Order};

fn arb_change() -> impl Strategy<Value = Change<Order>> {
    let statuses = prop::sample::select(vec!["pending", "paid", "shipped"]);
    (0..4u8, 0..6u32, statuses, 0..4i64, any::<bool>()).prop_map(
        |(op, id, status, amount, key_only_before)| {
            let row = order(id, status, amount);
            match op {
                0 => change(ChangeOp::Read, None, Some(row)),
                1 => change(ChangeOp::Insert, None, Some(row)),
                2 => change(ChangeOp::Update, None, Some(row)),
                _ => {
                    let before = if key_only_before { key_only(id) } else { row };
                    change(ChangeOp::Delete, Some(before), None)
                }
            }
        },
    )
}

/// The table `changes` describe, applied directly.
fn apply_changes(changes: &[Change<Order>]) -> BTreeMap<u32, Order> {
    let mut table = BTreeMap::new();
    for c in changes {
        match (c.op, &c.after, c.row()) {
            (ChangeOp::Delete, _, Some(row)) => {
                table.remove(&row.id);
            }
            (_, Some(after), _) => {
                table.insert(after.id, after.clone());
            }
            _ => {}
        }
    }
    table
}

/// Applies a changelog keyed by `key`, checking it is normalized: each
/// retraction retracts exactly the row last added for its key, each
/// addition of a key with a row follows its retraction.
fn apply_changelog<K: Ord + std::fmt::Debug, V: Clone + PartialEq + std::fmt::Debug>(
    rows: &[ChangelogRow<V>],
    key: impl Fn(&V) -> K,
) -> std::result::Result<BTreeMap<K, V>, String> {
    let mut table = BTreeMap::new();
    for r in rows {
        let k = key(&r.row);
        match r.kind {
            RowKind::Insert | RowKind::UpdateAfter => {
                if let Some(old) = table.insert(k, r.row.clone()) {
                    return Err(format!("{} {:?} over {old:?}", r.kind, r.row));
                }
            }
            RowKind::UpdateBefore | RowKind::Delete => {
                if table.remove(&k).as_ref() != Some(&r.row) {
                    return Err(format!("{} {:?} retracts what is not there", r.kind, r.row));
                }
            }
        }
    }
    Ok(table)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_changelog_rebuilds_the_table_and_the_aggregate(
        changes in prop::collection::vec(arb_change(), 0..60),
        parallelism in 1..4usize,
    ) {
        let job = Job::new().parallelism(parallelism);
        let table = orders_table(&job.source(VecSource::new(changes.clone()), WatermarkStrategy::none()));
        let totals = table
            .key_by_row(|o: &Order| o.status.clone())
            .aggregate_changelog((Count, Sum::of(|o: &Order| o.amount)));
        let (table_out, totals_out) = (CollectSink::new(), CollectSink::new());
        table.sink(table_out.clone());
        totals.sink(totals_out.clone());
        job.run().map_err(|e| TestCaseError::fail(e.to_string()))?;

        // Subtasks interleave, but each key's rows keep their order.
        let expected = apply_changes(&changes);
        let rebuilt = apply_changelog(&table_out.values(), |o: &Order| o.id)
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(&rebuilt, &expected);

        let mut recomputed: BTreeMap<String, (String, (u64, i64))> = BTreeMap::new();
        for o in expected.values() {
            let e = recomputed.entry(o.status.clone()).or_insert_with(|| (o.status.clone(), (0, 0)));
            e.1 .0 += 1;
            e.1 .1 += o.amount;
        }
        let aggregated = apply_changelog(&totals_out.values(), |t: &(String, (u64, i64))| t.0.clone())
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(aggregated, recomputed);
    }
}
