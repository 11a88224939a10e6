//! The whole changelog pipeline through crashes and restores: CDC changes
//! → `to_table` → table sink; → totals per status → table sink; clicks
//! joined with the table in event time → exactly-once CSV. Crashed and
//! restored several times (also at other parallelisms), it ends with
//! exactly the files of a run that was never interrupted.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tideline::connectors::file::{read_committed, ExactlyOnceCsvSink};
use tideline::prelude::*;

use super::{key_only, order, orders_table, tempdir, totals_by_status, Order, Totals};
use crate::checkpoint::{drive, stepped_job};

const CHANGES: u64 = 3_000;

/// Orders in batches of 40: inserted as `pending`, then paid, then (by
/// id) paid again (a redelivery), shipped, or deleted with only the key.
fn change_of(i: u64) -> Change<Order> {
    let (batch, j) = (i / 120, i % 120);
    let id = u32::try_from(batch * 40 + j % 40).unwrap_or(u32::MAX);
    let amount = i64::from(id * 7 % 50);
    let paid = order(id, "paid", amount + i64::from(id % 3));
    let (op, before, after) = match (j / 40, id % 4) {
        (0, _) => (ChangeOp::Insert, None, Some(order(id, "pending", amount))),
        (1, _) | (_, 0) => (ChangeOp::Update, None, Some(paid)),
        (_, 1) => (ChangeOp::Update, None, Some(order(id, "shipped", amount))),
        _ => (ChangeOp::Delete, Some(key_only(id)), None),
    };
    Change {
        op,
        before,
        after,
        table: "public.orders".to_string(),
        lsn: i,
        // Event time: one change per millisecond.
        commit_time: i64::try_from(i).unwrap_or(i64::MAX) * 1_000,
        tx_id: 0,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Click {
    ts: i64,
    order: u32,
}

/// A click per millisecond on an order of the batch being changed then.
fn click_of(i: u64) -> Click {
    Click {
        ts: i64::try_from(i).unwrap_or(i64::MAX),
        order: u32::try_from(i / 120 * 40 + i * 7 % 40).unwrap_or(u32::MAX),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Seen {
    ts: i64,
    order: u32,
    status: Option<String>,
}

struct Sinks {
    orders: ChangelogTableSink<u32, Order>,
    totals: ChangelogTableSink<String, Totals>,
}

fn pipeline(
    dir: &Path,
    clock: &Arc<ManualClock>,
    parallelism: usize,
    checkpoints: bool,
) -> Result<(Job, Sinks)> {
    let job = stepped_job(dir, clock, parallelism, checkpoints);
    let changes = job.source(
        GeneratorSource::new(|i: u64, _: &mut SmallRng| change_of(i))
            .with_count(CHANGES)
            .with_rate(10_000.0),
        WatermarkStrategy::monotonous().with_timestamps(|c: &Change<Order>| c.commit_time / 1_000),
    );
    let clicks = job.source(
        GeneratorSource::new(|i: u64, _: &mut SmallRng| click_of(i))
            .with_count(CHANGES)
            .with_rate(10_000.0),
        WatermarkStrategy::monotonous().with_timestamps(|c: &Click| c.ts),
    );
    let table = orders_table(&changes);
    let sinks = Sinks {
        orders: ChangelogTableSink::new(|o: &Order| o.id)
            .csv(dir.join("orders.csv"))
            .parquet(dir.join("orders.parquet")),
        totals: ChangelogTableSink::new(|t: &Totals| t.status.clone()).csv(dir.join("totals.csv")),
    };
    table.sink(sinks.orders.clone());
    totals_by_status(&table).sink(sinks.totals.clone());
    clicks
        .key_by(|c: &Click| c.order)
        .join_table(&table.key_by_row(|o: &Order| o.id))
        .left(|c: &Click, o: Option<&Order>| Seen {
            ts: c.ts,
            order: c.order,
            status: o.map(|o| o.status.clone()),
        })
        .sink(ExactlyOnceCsvSink::new(dir.join("clicks"))?);
    Ok((job, sinks))
}

/// What a run leaves: both tables' files (and views), the join's output.
#[derive(Debug)]
struct Outcome {
    orders_csv: String,
    totals_csv: String,
    orders: Vec<Order>,
    totals: Vec<Totals>,
    clicks: Vec<Seen>,
}

fn outcome(dir: &Path, sinks: &Sinks) -> Result<Outcome> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(Error::user);
    let mut clicks: Vec<Seen> = read_committed(dir.join("clicks"))?;
    clicks.sort();
    Ok(Outcome {
        orders_csv: read("orders.csv")?,
        totals_csv: read("totals.csv")?,
        orders: sinks.orders.values(),
        totals: sinks.totals.values(),
        clicks,
    })
}

#[test]
fn tables_aggregates_and_the_join_recover_exactly() -> Result<()> {
    let reference_dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    let (job, sinks) = pipeline(reference_dir.path(), &clock, 2, false)?;
    drive(job, &clock, None)?;
    let expected = outcome(reference_dir.path(), &sinks)?;
    // The reference is what the changes say.
    assert!(
        expected.orders.len() > 300,
        "{} orders",
        expected.orders.len()
    );
    let statuses: Vec<&str> = expected.totals.iter().map(|t| t.status.as_str()).collect();
    assert_eq!(statuses, vec!["paid", "shipped"]);
    for t in &expected.totals {
        let of: Vec<&Order> = expected
            .orders
            .iter()
            .filter(|o| o.status == t.status)
            .collect();
        assert_eq!(t.count, of.len() as u64);
        assert_eq!(t.sum, of.iter().map(|o| o.amount).sum::<i64>());
    }
    assert_eq!(expected.clicks.len() as u64, CHANGES);
    assert!(expected.clicks.iter().any(|c| c.status.is_none()));
    assert!(expected
        .clicks
        .iter()
        .any(|c| c.status.as_deref() == Some("pending")));

    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    // 3,000 changes at 10,000/s: 300 ms of clock, 30 rounds of 10 ms;
    // checkpoints every 100 ms. Crash after 12, 17, 18 (before another
    // checkpoint could complete) and 25 rounds, at changing parallelism.
    let mut last = None;
    for (rounds, parallelism) in [
        (Some(12), 2),
        (Some(17), 3),
        (Some(18), 2),
        (Some(25), 1),
        (None, 2),
    ] {
        let (job, sinks) = pipeline(dir.path(), &clock, parallelism, true)?;
        if let Some(summary) = drive(job, &clock, rounds)? {
            assert!(summary.restored_from.is_some(), "{summary:?}");
            last = Some(sinks);
        }
    }
    let sinks = last.ok_or_else(|| Error::user("the last run did not finish"))?;
    let got = outcome(dir.path(), &sinks)?;
    // Field by field, so that a difference shows without pages of output.
    assert_eq!(got.orders_csv, expected.orders_csv);
    assert_eq!(got.totals_csv, expected.totals_csv);
    assert_eq!(got.orders, expected.orders);
    assert_eq!(got.totals, expected.totals);
    let first_difference = got
        .clicks
        .iter()
        .zip(&expected.clicks)
        .find(|(g, e)| g != e);
    assert_eq!(first_difference, None);
    assert_eq!(got.clicks.len(), expected.clicks.len());
    let parquet_rows = |dir: &Path| -> Result<u64> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let file = std::fs::File::open(dir.join("orders.parquet")).map_err(Error::user)?;
        let reader = SerializedFileReader::new(file).map_err(Error::user)?;
        Ok(u64::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0))
    };
    assert_eq!(parquet_rows(dir.path())?, expected.orders.len() as u64);
    assert_eq!(
        parquet_rows(reference_dir.path())?,
        expected.orders.len() as u64
    );
    Ok(())
}
