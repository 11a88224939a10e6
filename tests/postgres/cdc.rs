//! `PostgresCdcSource` against a real server.

use serde::{Deserialize, Serialize};
use tideline::operators::changelog::{Change, ChangeOp};
use tideline::postgres::PostgresCdcSource;
use tideline::prelude::*;

use super::{marker_lsn, postgres_url, psql, unique_name, wait_for};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Order {
    id: i64,
    status: String,
    amount: i64,
}

fn order(id: i64, status: &str, amount: i64) -> Order {
    Order {
        id,
        status: status.into(),
        amount,
    }
}

#[test]
fn snapshot_then_stream_reads_every_change_once() {
    let Some(url) = postgres_url() else { return };
    let table = unique_name("orders");
    let slot = unique_name("slot");
    psql(
        &url,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, status text NOT NULL, amount bigint NOT NULL);
             INSERT INTO {table} SELECT g, 'pending', g * 10 FROM generate_series(1, 25) g;"
        ),
    );
    let source = PostgresCdcSource::builder(url.clone(), slot.clone())
        .table(table.clone())
        .snapshot_chunk(10)
        .bounded()
        .build::<Order>()
        .unwrap();
    let bound = source.bound();
    let metrics = source.metrics();
    let job = Job::new();
    let changes = CollectSink::new();
    job.source(source, WatermarkStrategy::none())
        .sink(changes.clone());
    let running = job.spawn().unwrap();
    wait_for("the snapshot", || metrics.snapshot_done());
    psql(
        &url,
        &format!(
            "UPDATE {table} SET status = 'paid' WHERE id = 3;
             BEGIN; DELETE FROM {table} WHERE id = 4; INSERT INTO {table} VALUES (26, 'new', 1); COMMIT;"
        ),
    );
    bound.set(marker_lsn(&url));
    running.join().unwrap();

    let changes: Vec<Change<Order>> = changes.values();
    let reads: Vec<&Change<Order>> = changes.iter().filter(|c| c.op == ChangeOp::Read).collect();
    assert_eq!(reads.len(), 25);
    assert_eq!(metrics.snapshot_progress().0, 25);
    let mut ids: Vec<i64> = reads.iter().map(|c| c.after.as_ref().unwrap().id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=25).collect::<Vec<_>>());
    let streamed: Vec<_> = changes[25..]
        .iter()
        .map(|c| (c.op, c.before.clone(), c.after.clone()))
        .collect();
    assert_eq!(
        streamed,
        vec![
            (ChangeOp::Update, None, Some(order(3, "paid", 30))),
            // REPLICA IDENTITY DEFAULT: the key, other fields zero.
            (ChangeOp::Delete, Some(order(4, "", 0)), None),
            (ChangeOp::Insert, None, Some(order(26, "new", 1))),
        ]
    );
    // One transaction: one commit LSN, time and id.
    assert_eq!(changes[26].lsn, changes[27].lsn);
    assert_eq!(changes[26].tx_id, changes[27].tx_id);
    assert!(changes[25].lsn < changes[26].lsn);
    assert!(changes.iter().all(|c| c.table == format!("public.{table}")));
    psql(&url, &format!("SELECT pg_drop_replication_slot('{slot}')"));
}
