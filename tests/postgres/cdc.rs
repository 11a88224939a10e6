//! `PostgresCdcSource` against a real server.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tideline::operators::changelog::{Change, ChangeOp, ChangelogTableSink, ToTableExt};
use tideline::postgres::PostgresCdcSource;

use tideline::prelude::*;

use super::{marker_lsn, postgres_url, psql, unique_name, wait_for};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Order {
    pub(crate) id: i64,
    pub(crate) status: String,
    pub(crate) amount: i64,
}

fn order(id: i64, status: &str, amount: i64) -> Order {
    Order {
        id,
        status: status.into(),
        amount,
    }
}

impl Order {
    /// A row as `psql -At` or a CSV file shows it: `id`, `status`,
    /// `amount` separated by `separator`.
    pub(crate) fn parse(line: &str, separator: char) -> Order {
        let mut cols = line.split(separator);
        let mut next = || cols.next().expect("a column");
        Order {
            id: next().parse().expect("id"),
            status: next().to_string(),
            amount: next().parse().expect("amount"),
        }
    }
}

/// A new `orders (id, status, amount)` table with `rows` pending orders,
/// and a slot name for it.
pub(crate) fn create_orders(url: &str, rows: u64) -> (String, String) {
    let (table, slot) = (unique_name("orders"), unique_name("slot"));
    psql(
        url,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, status text NOT NULL, amount bigint NOT NULL);
             INSERT INTO {table} SELECT g, 'pending', g FROM generate_series(1, {rows}) g;"
        ),
    );
    (table, slot)
}

pub(crate) fn drop_slot(url: &str, slot: &str) {
    psql(url, &format!("SELECT pg_drop_replication_slot('{slot}')"));
}

/// The table the changes describe, by id.
fn materialize(changes: impl IntoIterator<Item = Change<Order>>) -> Vec<Order> {
    let mut rows = std::collections::BTreeMap::new();
    for change in changes {
        if let Some(before) = &change.before {
            rows.remove(&before.id);
        }
        if let Some(after) = change.after {
            rows.insert(after.id, after);
        }
    }
    rows.into_values().collect()
}

/// A bounded CDC source of the orders table `table` through slot `slot`.
fn bounded_orders(url: &str, slot: &str, table: &str) -> PostgresCdcSource<Order> {
    PostgresCdcSource::builder(url, slot)
        .table(table)
        .bounded()
        .build::<Order>()
        .unwrap()
}

#[test]
fn snapshot_then_stream_reads_every_change_once() {
    let Some(url) = postgres_url() else { return };
    let (table, slot) = create_orders(&url, 25);
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
            (ChangeOp::Update, None, Some(order(3, "paid", 3))),
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
    drop_slot(&url, &slot);
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Doc {
    id: i32,
    n: i32,
    body: Option<String>,
}

/// Runs a bounded source over `tables` in a job while `write` runs (after
/// the snapshot); returns the changes and the dead letters.
fn capture(
    url: &str,
    tables: &[&str],
    write: impl FnOnce(),
) -> (
    Vec<Change<Doc>>,
    Vec<DeadLetter>,
    tideline::postgres::CdcMetrics,
) {
    let slot = unique_name("slot");
    let mut builder = PostgresCdcSource::builder(url, slot.clone()).bounded();
    for table in tables {
        builder = builder.table(*table);
    }
    let source = builder.build::<Doc>().unwrap();
    let (bound, metrics) = (source.bound(), source.metrics());
    let job = Job::new();
    let (changes, dead) = (CollectSink::new(), CollectSink::new());
    let stream = job.source(source, WatermarkStrategy::none());
    stream.dead_letters().sink(dead.clone());
    stream.sink(changes.clone());
    let running = job.spawn().unwrap();
    wait_for("the snapshot", || metrics.snapshot_done());
    write();
    bound.set(marker_lsn(url));
    running.join().unwrap();
    psql(url, &format!("SELECT pg_drop_replication_slot('{slot}')"));
    (changes.values(), dead.values(), metrics)
}

#[test]
fn replica_identity_toast_schema_changes_and_rows_that_do_not_fit() {
    let Some(url) = postgres_url() else { return };
    let (plain, full) = (unique_name("docs"), unique_name("docs_full"));
    psql(
        &url,
        &format!(
            "CREATE TABLE {plain} (id int PRIMARY KEY, n int NOT NULL, body text);
             CREATE TABLE {full} (id int PRIMARY KEY, n int NOT NULL, body text);
             ALTER TABLE {plain} ALTER COLUMN body SET STORAGE EXTERNAL;
             ALTER TABLE {full} ALTER COLUMN body SET STORAGE EXTERNAL;
             ALTER TABLE {full} REPLICA IDENTITY FULL;"
        ),
    );
    // 10 KB stored out of line (TOAST).
    let big = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 320) g)";
    let (changes, dead, metrics) = capture(&url, &[&plain, &full], || {
        psql(
            &url,
            &format!(
                "INSERT INTO {plain} VALUES (1, 1, {big});
                 INSERT INTO {full} VALUES (1, 1, {big});
                 UPDATE {plain} SET n = 2 WHERE id = 1;
                 UPDATE {full} SET n = 2 WHERE id = 1;
                 DELETE FROM {full} WHERE id = 1;
                 ALTER TABLE {plain} ADD COLUMN extra text;
                 INSERT INTO {plain} VALUES (2, 1, 'small', 'ignored');
                 ALTER TABLE {plain} ALTER COLUMN n TYPE text;
                 INSERT INTO {plain} VALUES (3, 'three', NULL, NULL);
                 INSERT INTO {plain} VALUES (4, '4', NULL, NULL);
                 TRUNCATE {full};"
            ),
        );
    });
    let big_value = psql(
        &url,
        "SELECT string_agg(md5(g::text), '') FROM generate_series(1, 320) g",
    )
    .trim()
    .to_string();
    assert_eq!(big_value.len(), 10_240);
    let doc = |id, n, body: Option<&str>| Doc {
        id,
        n,
        body: body.map(str::to_string),
    };
    let summary: Vec<_> = changes
        .iter()
        .map(|c| {
            (
                c.table.trim_start_matches("public.").to_string(),
                c.op,
                c.before.clone(),
                c.after.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                plain.clone(),
                ChangeOp::Insert,
                None,
                Some(doc(1, 1, Some(&big_value)))
            ),
            (
                full.clone(),
                ChangeOp::Insert,
                None,
                Some(doc(1, 1, Some(&big_value)))
            ),
            // The plain table's update is a dead letter (below). FULL: the
            // old row, and the unchanged TOAST value taken from it.
            (
                full.clone(),
                ChangeOp::Update,
                Some(doc(1, 1, Some(&big_value))),
                Some(doc(1, 2, Some(&big_value)))
            ),
            (
                full.clone(),
                ChangeOp::Delete,
                Some(doc(1, 2, Some(&big_value))),
                None
            ),
            // A column added: the row still decodes.
            (
                plain.clone(),
                ChangeOp::Insert,
                None,
                Some(doc(2, 1, Some("small")))
            ),
            // `n` became text: "4" still decodes, "three" does not (below).
            (plain.clone(), ChangeOp::Insert, None, Some(doc(4, 4, None))),
        ]
    );
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:#?}");
    assert!(
        reasons[0].contains(&format!("public.{plain}"))
            && reasons[0].contains("column `body`")
            && reasons[0].contains("TOAST"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].contains("column `n`") && reasons[1].contains("\"three\""),
        "{}",
        reasons[1]
    );
    assert!(
        dead[1].record.contains("id=3") && dead[1].record.contains("n=three"),
        "{}",
        dead[1].record
    );
    assert!(
        reasons[2].starts_with(&format!("TRUNCATE of public.{full}")),
        "{}",
        reasons[2]
    );
    assert!(dead
        .iter()
        .all(|d| d.offset.as_deref().is_some_and(|o| o.starts_with("lsn "))));
    assert_eq!(metrics.truncates(), 1);
    // Two changes of the plain table's columns (a column added, a type
    // changed).
    assert_eq!(metrics.schema_changes(), 2);
    let last = metrics.last_schema_change().unwrap();
    assert!(
        last.contains(&format!("public.{plain}")) && last.contains("n (25)"),
        "{last}"
    );
}

/// `id|status|amount` rows of `SELECT` as orders.
pub(crate) fn select_orders(url: &str, table: &str) -> Vec<Order> {
    psql(
        url,
        &format!("SELECT id, status, amount FROM {table} ORDER BY id"),
    )
    .lines()
    .map(|line| Order::parse(line, '|'))
    .collect()
}

#[test]
fn a_snapshot_taken_while_a_writer_changes_the_table_misses_nothing_and_duplicates_nothing() {
    let Some(url) = postgres_url() else { return };
    let (table, slot) = create_orders(&url, 100_000);
    psql(&url, &format!("ANALYZE {table}"));
    let source = bounded_orders(&url, &slot, &table);
    let (bound, metrics) = (source.bound(), source.metrics());
    let job = Job::new();
    let changes = CollectSink::new();
    // The job holds the snapshot at its 5,000th row until the writer is
    // done, so the writes land while the snapshot is read (its
    // transaction open, most rows not read yet).
    let writer_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = std::sync::Arc::clone(&writer_done);
    let seen = std::sync::atomic::AtomicU64::new(0);
    let changes_in = job
        .source(source, WatermarkStrategy::none())
        .inspect(move |_| {
            if seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 5_000 {
                wait_for("the writer", || {
                    gate.load(std::sync::atomic::Ordering::SeqCst)
                });
            }
        });
    changes_in.sink(changes.clone());
    // The job's own table: the changes by id, normalized, into a table
    // sink (an update that changes the id is a delete and an insert).
    let table_sink = ChangelogTableSink::new(|o: &Order| o.id);
    changes_in
        .flat_map(|c: Change<Order>| c.split_key_update(|o| o.id))
        .key_by(|c: &Change<Order>| c.row().map(|o| o.id))
        .to_table()
        .sink(table_sink.clone());
    let running = job.spawn().unwrap();
    wait_for("the snapshot to start", || {
        metrics.snapshot_progress().0 > 5_000
    });
    // While the snapshot is read: updates, deletes and inserts, each
    // statement its own transaction, some touching rows read already and
    // some rows not read yet.
    let mut writes = String::new();
    for round in 0..20 {
        writes.push_str(&format!(
            "UPDATE {table} SET status = 'paid', amount = amount + {round} WHERE id % 97 = {round};
             DELETE FROM {table} WHERE id % 101 = {round};
             INSERT INTO {table} SELECT 100000 + {round} * 100 + g, 'new', g FROM generate_series(1, 100) g;
             UPDATE {table} SET id = id + 1000000 WHERE id % 1009 = {round};\n"
        ));
    }
    psql(&url, &writes);
    let (read_while_writing, _) = metrics.snapshot_progress();
    assert!(
        read_while_writing < 50_000,
        "the snapshot was held: {read_while_writing} rows read"
    );
    writer_done.store(true, std::sync::atomic::Ordering::SeqCst);
    bound.set(super::marker_lsn(&url));
    running.join().unwrap();
    assert!(metrics.snapshot_done());
    let (read, estimate) = metrics.snapshot_progress();
    assert_eq!(read, 100_000);
    assert!(
        (90_000..=110_000).contains(&estimate),
        "estimate {estimate}"
    );

    let changes: Vec<Change<Order>> = changes.values();
    let reads = changes.iter().filter(|c| c.op == ChangeOp::Read).count();
    assert_eq!(reads, 100_000, "the snapshot reads the table as it was");
    let expected = select_orders(&url, &table);
    let materialized = table_sink.values();
    assert_eq!(materialized.len(), expected.len());
    assert!(
        materialized == expected,
        "the job's table differs from SELECT *"
    );
    assert!(
        materialize(changes) == expected,
        "the changes rebuild it too"
    );
    drop_slot(&url, &slot);
}

#[test]
fn a_snapshot_stopped_half_way_resumes_where_it_stopped() {
    use tideline::connectors::file::{read_committed, ExactlyOnceJsonLinesSink};
    use tideline::engine::checkpoint::CheckpointStorage;
    use tideline::RestoreFrom;

    let Some(url) = postgres_url() else { return };
    let (table, slot) = create_orders(&url, 20_000);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("changes");
    let run = |restore: Option<std::path::PathBuf>, until: Option<u64>| {
        let source = PostgresCdcSource::builder(url.clone(), slot.clone())
            .table(table.clone())
            .snapshot_chunk(500)
            .bounded()
            .build::<Order>()
            .unwrap();
        if let Some(until) = until {
            source.bound().set(until);
        }
        let metrics = source.metrics();
        let mut job = Job::new().checkpointing(Duration::from_secs(3600), dir.path().join("chk"));
        if let Some(path) = restore {
            job = job.restore(RestoreFrom::Path(path));
        }
        let seen = std::sync::atomic::AtomicU64::new(0);
        job.source(source, WatermarkStrategy::none())
            // Slow enough that the savepoint lands within the snapshot.
            .inspect(move |_| {
                if seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .sink(ExactlyOnceJsonLinesSink::<Change<Order>>::new(&out).unwrap());
        (job, metrics)
    };
    let (job, metrics) = run(None, None);
    let running = job.spawn().unwrap();
    wait_for("the snapshot to be under way", || {
        metrics.snapshot_progress().0 > 3_000
    });
    running
        .stop_handle()
        .savepoint(dir.path().join("savepoints"))
        .unwrap();
    let summary = running.join().unwrap();
    let savepoint = summary.savepoint.expect("a savepoint");
    let offsets = CheckpointStorage::open_dir(&savepoint)
        .unwrap()
        .source_offsets("postgres-cdc");
    assert_eq!(
        offsets[0].1 .0[0], 0,
        "the savepoint is within the snapshot: {offsets:?}"
    );
    let first_run = read_committed::<Change<Order>>(&out).unwrap().len();
    assert!(
        (1..20_000).contains(&first_run),
        "{first_run} rows before the savepoint"
    );

    // While the job is stopped: rows read and not read yet change, move
    // across the point the snapshot stopped at, appear and go.
    psql(
        &url,
        &format!(
            "UPDATE {table} SET status = 'paid' WHERE id % 7 = 0;
             DELETE FROM {table} WHERE id % 11 = 0;
             UPDATE {table} SET id = id + 100000 WHERE id % 13 = 0 AND id < 2000;
             DELETE FROM {table} WHERE id BETWEEN 1 AND 600;
             UPDATE {table} SET id = id - 19400 WHERE id > 19400;
             INSERT INTO {table} SELECT g, 'new', g FROM generate_series(30001, 30500) g;"
        ),
    );
    let until = marker_lsn(&url);
    let (job, metrics) = run(Some(savepoint), Some(until));
    job.run().unwrap();
    let (resumed_rows, _) = metrics.snapshot_progress();
    assert!(
        resumed_rows > 0 && resumed_rows < 20_000 - 2_000,
        "the resumed snapshot copied only the rest: {resumed_rows} rows"
    );

    let all = read_committed::<Change<Order>>(&out).unwrap();
    // No row read twice, and inserts minus deletes count the rows: what a
    // retracting count downstream relies on (an extra delete or insert
    // would not show in an upsert table, but would here).
    let mut read_ids: Vec<i64> = all
        .iter()
        .filter(|c| c.op == ChangeOp::Read)
        .map(|c| c.after.as_ref().unwrap().id)
        .collect();
    let reads = read_ids.len();
    read_ids.sort_unstable();
    read_ids.dedup();
    assert_eq!(read_ids.len(), reads, "a row was read twice");
    let count: i64 = all
        .iter()
        .map(|c| match c.op {
            ChangeOp::Read | ChangeOp::Insert => 1,
            ChangeOp::Delete => -1,
            ChangeOp::Update => 0,
        })
        .sum();
    let materialized = materialize(all);
    let expected = select_orders(&url, &table);
    assert_eq!(materialized.len(), expected.len());
    assert_eq!(count, expected.len() as i64, "inserts minus deletes");
    assert!(
        materialized == expected,
        "the materialized table differs from SELECT *"
    );
    drop_slot(&url, &slot);
}

#[test]
fn a_job_backpressured_longer_than_the_server_timeout_keeps_its_replication_session() {
    let Some(url) = postgres_url() else { return };
    // The server drops a replication session that says nothing for 2 s.
    let url = format!("{url} options='-c wal_sender_timeout=2000'");
    let (table, slot) = create_orders(&url, 0);
    let source = bounded_orders(&url, &slot, &table);
    let (bound, metrics) = (source.bound(), source.metrics());
    let release = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = std::sync::Arc::clone(&release);
    let job = Job::new();
    let changes = CollectSink::new();
    job.source(source, WatermarkStrategy::none())
        .inspect(move |_| {
            wait_for("the release", || {
                gate.load(std::sync::atomic::Ordering::SeqCst)
            })
        })
        .sink(changes.clone());
    let running = job.spawn().unwrap();
    wait_for("the snapshot", || metrics.snapshot_done());
    // 20,000 changes: far more than fit between the threads, so the
    // stream is held back while the job is blocked.
    psql(
        &url,
        &format!("INSERT INTO {table} SELECT g, 'new', g FROM generate_series(1, 20000) g;"),
    );
    bound.set(marker_lsn(&url));
    // Blocked for three times the server's timeout: only the session's
    // status updates keep it open.
    std::thread::sleep(Duration::from_secs(6));
    release.store(true, std::sync::atomic::Ordering::SeqCst);
    running.join().unwrap();
    let changes: Vec<Change<Order>> = changes.values();
    assert_eq!(changes.len(), 20_000);
    assert!(changes.iter().all(|c| c.op == ChangeOp::Insert));
    assert_eq!(metrics.slot_lag_bytes(), 0, "caught up");
    drop_slot(&url, &slot);
}

#[test]
fn a_bounded_read_ends_at_its_lsn_whatever_committed_after() {
    let Some(url) = postgres_url() else { return };
    let (table, slot) = create_orders(&url, 0);
    let source = bounded_orders(&url, &slot, &table);
    let (bound, metrics) = (source.bound(), source.metrics());
    let job = Job::new();
    let job_metrics = job.metrics();
    let changes = CollectSink::new();
    job.source(source, WatermarkStrategy::none())
        .sink(changes.clone());
    let running = job.spawn().unwrap();
    wait_for("the snapshot", || metrics.snapshot_done());
    // The job's metrics show the slot's position and lag, as the source
    // counts them (LSN, WAL bytes behind the server).
    wait_for("the partition's position in the job's metrics", || {
        let partitions = job_metrics.snapshot().sources;
        partitions.len() == 1
            && partitions[0].position == Some(metrics.position())
            && partitions[0].position.is_some_and(|p| p > 0)
            && partitions[0].lag == Some(metrics.slot_lag_bytes())
            && !partitions[0].bounded
    });
    psql(
        &url,
        &format!("INSERT INTO {table} VALUES (1, 'before', 1);"),
    );
    bound.set(marker_lsn(&url));
    // Committed after the bound: whenever the reader sees them (before or
    // after the marker's own transaction), they are not read.
    psql(
        &url,
        &format!("INSERT INTO {table} VALUES (2, 'after', 2); INSERT INTO {table} VALUES (3, 'after', 3);"),
    );
    running.join().unwrap();
    let ids: Vec<i64> = changes
        .values()
        .iter()
        .map(|c: &Change<Order>| c.after.as_ref().unwrap().id)
        .collect();
    assert_eq!(ids, vec![1]);
    drop_slot(&url, &slot);
}

#[test]
fn a_replication_session_killed_by_the_server_restarts_the_job_exactly_once() {
    use tideline::connectors::file::{read_committed, ExactlyOnceJsonLinesSink};
    use tideline::RestartStrategy;

    let Some(url) = postgres_url() else { return };
    let (table, slot) = create_orders(&url, 0);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("changes");
    let source = bounded_orders(&url, &slot, &table);
    let (bound, metrics) = (source.bound(), source.metrics());
    let (chk, sink) = (dir.path().join("chk"), out.clone());
    // `run` restarts the job by its strategy (`spawn` runs it once); a job
    // is built on the thread that runs it.
    let running = std::thread::spawn(move || {
        let job = Job::new()
            .checkpointing(Duration::from_millis(50), chk)
            .restart_strategy(RestartStrategy::FixedDelay {
                attempts: 10,
                delay: Duration::from_millis(50),
            });
        job.source(source, WatermarkStrategy::none())
            .sink(ExactlyOnceJsonLinesSink::<Change<Order>>::new(&sink)?);
        job.run()
    });
    wait_for("the snapshot", || metrics.snapshot_done());
    let active_pid = || {
        psql(
            &url,
            &format!(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{slot}' AND active"
            ),
        )
        .trim()
        .to_string()
    };
    for round in 0..3 {
        psql(
            &url,
            &format!(
                "INSERT INTO {table} SELECT g, 'new', g FROM generate_series({}, {}) g;",
                round * 1000 + 1,
                round * 1000 + 1000
            ),
        );
        // The server ends the job's replication session (as a restart or
        // a failover would): the job fails and restarts from its last
        // checkpoint.
        wait_for("a replication session", || !active_pid().is_empty());
        psql(
            &url,
            &format!("SELECT pg_terminate_backend({})", active_pid()),
        );
    }
    bound.set(marker_lsn(&url));
    let summary = running.join().expect("the job thread").unwrap();
    assert!(!summary.restarts.is_empty(), "the job restarted");
    let mut ids: Vec<i64> = read_committed::<Change<Order>>(&out)
        .unwrap()
        .iter()
        .map(|c| c.after.as_ref().unwrap().id)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=3000).collect::<Vec<_>>(), "every insert once");
    drop_slot(&url, &slot);
}
