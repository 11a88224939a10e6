//! Retracting aggregates: orders moving pending → paid → deleted keep
//! exact counts and sums per status.

use tideline::prelude::*;

use super::{delete, insert, order, orders_table, text, totals_by_status, update, Order, Totals};

fn orders() -> Vec<Change<Order>> {
    vec![
        insert(order(1, "pending", 10)),
        insert(order(2, "pending", 20)),
        update(order(1, "paid", 10)),
        // Paid, and the amount changes too.
        update(order(2, "paid", 25)),
        delete(1),
        // Redelivered: nothing changes anywhere downstream.
        update(order(2, "paid", 25)),
    ]
}

#[test]
fn orders_moving_between_statuses_keep_exact_totals() -> Result<()> {
    let job = Job::new().parallelism(1);
    let changes = job.source(VecSource::new(orders()), WatermarkStrategy::none());
    let table = orders_table(&changes);
    let totals = totals_by_status(&table);
    let (changelog, order_table, totals_table) = (
        CollectSink::new(),
        ChangelogTableSink::new(|o: &Order| o.id),
        ChangelogTableSink::new(|t: &Totals| t.status.clone()),
    );
    totals.sink(changelog.clone());
    table.sink(order_table.clone());
    totals.sink(totals_table.clone());
    job.run()?;

    let rows = changelog.values();
    let of = |status: &str| {
        let rows: Vec<_> = rows
            .iter()
            .filter(|r| r.row.status == status)
            .cloned()
            .collect();
        text(&rows)
    };
    let t = |status: &str, count: u64, sum: i64| {
        format!("Totals {{ status: {status:?}, count: {count}, sum: {sum} }}")
    };
    assert_eq!(
        of("pending"),
        vec![
            format!("+I {}", t("pending", 1, 10)),
            format!("-U {}", t("pending", 1, 10)),
            format!("+U {}", t("pending", 2, 30)),
            // Order 1 leaves pending (its -U carries the old status).
            format!("-U {}", t("pending", 2, 30)),
            format!("+U {}", t("pending", 1, 20)),
            // Order 2 leaves: pending is empty, deleted.
            format!("-D {}", t("pending", 1, 20)),
        ]
    );
    assert_eq!(
        of("paid"),
        vec![
            format!("+I {}", t("paid", 1, 10)),
            format!("-U {}", t("paid", 1, 10)),
            format!("+U {}", t("paid", 2, 35)),
            // Order 1 deleted.
            format!("-U {}", t("paid", 2, 35)),
            format!("+U {}", t("paid", 1, 25)),
        ]
    );
    assert_eq!(rows.len(), 11);
    assert_eq!(order_table.values(), vec![order(2, "paid", 25)]);
    assert_eq!(
        totals_table.values(),
        vec![Totals {
            status: "paid".to_string(),
            count: 1,
            sum: 25
        }]
    );
    Ok(())
}

#[test]
fn final_totals_are_the_same_at_any_parallelism() -> Result<()> {
    let changes: Vec<Change<Order>> = (0..300u32)
        .map(|i| {
            let id = i % 23;
            let status = ["pending", "paid", "shipped"][(i as usize / 23) % 3];
            match i % 5 {
                4 => delete(id),
                _ => update(order(id, status, i64::from(i % 17))),
            }
        })
        .collect();
    let run = |parallelism: usize| -> Result<(Vec<Order>, Vec<Totals>)> {
        let job = Job::new().parallelism(parallelism);
        let table =
            orders_table(&job.source(VecSource::new(changes.clone()), WatermarkStrategy::none()));
        let (orders, totals) = (
            ChangelogTableSink::new(|o: &Order| o.id),
            ChangelogTableSink::new(|t: &Totals| t.status.clone()),
        );
        table.sink(orders.clone());
        totals_by_status(&table).sink(totals.clone());
        job.run()?;
        Ok((orders.values(), totals.values()))
    };
    let (orders, totals) = run(1)?;
    // The totals are those of the final table.
    let mut expected: std::collections::BTreeMap<String, (u64, i64)> = Default::default();
    for o in &orders {
        let e = expected.entry(o.status.clone()).or_default();
        e.0 += 1;
        e.1 += o.amount;
    }
    let expected: Vec<Totals> = expected
        .into_iter()
        .map(|(status, (count, sum))| Totals { status, count, sum })
        .collect();
    assert_eq!(totals, expected);
    assert!(!orders.is_empty());
    for parallelism in [2, 4] {
        assert_eq!(run(parallelism)?, (orders.clone(), totals.clone()));
    }
    Ok(())
}

#[test]
fn a_retraction_for_an_empty_group_is_a_dead_letter() -> Result<()> {
    let job = Job::new().parallelism(1);
    let out = CollectSink::new();
    let dead = CollectSink::new();
    let totals = job
        .source(
            VecSource::timestamped(vec![
                (5, ChangelogRow::delete(order(1, "paid", 3))),
                (6, ChangelogRow::insert(order(1, "paid", 3))),
            ]),
            WatermarkStrategy::none(),
        )
        .key_by_row(|o: &Order| o.status.clone())
        .aggregate_changelog(Count);
    totals.sink(out.clone());
    totals.dead_letters().sink(dead.clone());
    job.run()?;
    assert_eq!(
        out.values(),
        vec![ChangelogRow::insert(("paid".to_string(), 1))]
    );
    assert_eq!(
        dead.values(),
        vec![DeadLetter::new(
            "aggregate_changelog",
            EventTime::from_millis(5),
            "a retraction for a group that holds no row (the changelog is not normalized, \
             or its rows of one key arrive out of order)",
            "-D row",
        )]
    );
    Ok(())
}
