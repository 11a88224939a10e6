//! `to_table`: exact normalized changelogs.

use tideline::prelude::*;

use super::{change, delete, insert, key_only, order, orders_table, text, update, Order};

/// A changelog's records and the dead letters beside it.
type Outcome = (Vec<Record<ChangelogRow<Order>>>, Vec<DeadLetter>);

/// Runs `changes` (timestamped 1, 2, ...) through `to_table` at
/// `parallelism`; returns the changelog records and the dead letters.
fn run(changes: Vec<Change<Order>>, parallelism: usize) -> Result<Outcome> {
    let job = Job::new().parallelism(parallelism);
    let timed: Vec<(i64, Change<Order>)> = (1..).zip(changes).collect();
    let table = orders_table(&job.source(VecSource::timestamped(timed), WatermarkStrategy::none()));
    let (out, dead) = (CollectSink::new(), CollectSink::new());
    table.sink(out.clone());
    table.dead_letters().sink(dead.clone());
    job.run()?;
    Ok((out.records(), dead.values()))
}

#[test]
fn insert_update_redelivery_and_deletes_are_normalized() -> Result<()> {
    let (records, dead) = run(
        vec![
            insert(order(1, "pending", 10)),
            update(order(1, "paid", 10)),
            // Redelivered: the same row again changes nothing.
            update(order(1, "paid", 10)),
            change(ChangeOp::Read, None, Some(order(2, "pending", 5))),
            insert(order(2, "pending", 5)),
            // `before` holds only the key: the stored row is retracted.
            delete(1),
            // Deleting a key that has no row changes nothing.
            delete(3),
            delete(1),
            // An update of a key without a row inserts it.
            update(order(1, "refunded", 10)),
            // An update's `before` is not trusted: the stored row is retracted.
            change(
                ChangeOp::Update,
                Some(order(2, "bogus", 99)),
                Some(order(2, "paid", 5)),
            ),
        ],
        1,
    )?;
    assert_eq!(
        text(&records.iter().map(|r| r.value.clone()).collect::<Vec<_>>()),
        vec![
            r#"+I Order { id: 1, status: "pending", amount: 10 }"#,
            r#"-U Order { id: 1, status: "pending", amount: 10 }"#,
            r#"+U Order { id: 1, status: "paid", amount: 10 }"#,
            r#"+I Order { id: 2, status: "pending", amount: 5 }"#,
            r#"-D Order { id: 1, status: "paid", amount: 10 }"#,
            r#"+I Order { id: 1, status: "refunded", amount: 10 }"#,
            r#"-U Order { id: 2, status: "pending", amount: 5 }"#,
            r#"+U Order { id: 2, status: "paid", amount: 5 }"#,
        ]
    );
    // Each row carries its change's timestamp.
    let times: Vec<i64> = records.iter().map(|r| r.timestamp.millis()).collect();
    assert_eq!(times, vec![1, 2, 2, 4, 6, 9, 10, 10]);
    assert!(dead.is_empty(), "{dead:?}");
    Ok(())
}

#[test]
fn a_change_without_its_row_is_a_dead_letter() -> Result<()> {
    let (records, dead) = run(
        vec![
            change(ChangeOp::Insert, None, None),
            change(ChangeOp::Update, Some(key_only(4)), None),
            insert(order(4, "pending", 1)),
        ],
        1,
    )?;
    assert_eq!(
        text(&records.into_iter().map(|r| r.value).collect::<Vec<_>>()),
        vec![r#"+I Order { id: 4, status: "pending", amount: 1 }"#]
    );
    assert_eq!(
        dead,
        vec![
            DeadLetter::new(
                "to_table",
                EventTime::from_millis(1),
                "Insert change without the row after it (`after` is None)",
                "Insert change of public.orders (lsn 0, tx 0)",
            ),
            DeadLetter::new(
                "to_table",
                EventTime::from_millis(2),
                "Update change without the row after it (`after` is None)",
                "Update change of public.orders (lsn 0, tx 0)",
            ),
        ]
    );
    Ok(())
}

#[test]
fn each_key_gets_the_same_changelog_at_any_parallelism() -> Result<()> {
    let changes: Vec<Change<Order>> = (0..60u32)
        .map(|i| {
            let id = i % 7;
            match i % 4 {
                0 => insert(order(id, "pending", i64::from(i))),
                1 => update(order(id, "paid", i64::from(id))),
                2 => update(order(id, "paid", i64::from(id))),
                _ => delete(id),
            }
        })
        .collect();
    let per_key = |records: Vec<Record<ChangelogRow<Order>>>| {
        let mut by_key: std::collections::BTreeMap<u32, Vec<(i64, ChangelogRow<Order>)>> =
            Default::default();
        for r in records {
            by_key
                .entry(r.value.row.id)
                .or_default()
                .push((r.timestamp.millis(), r.value));
        }
        by_key
    };
    let (one, _) = run(changes.clone(), 1)?;
    let (four, _) = run(changes, 4)?;
    assert_eq!(per_key(one), per_key(four));
    Ok(())
}
