//! Orders from PostgreSQL, captured from its write-ahead log: revenue per
//! status that stays right as orders move between statuses (a retracting
//! aggregate over the table's changelog), paid orders per minute (event
//! time windows), every change archived to Parquet, exactly once.
//!
//! ```text
//! # a server with wal_level=logical (the test one prints its connection string)
//! scripts/postgres.sh start
//! # create an `orders` table with 2,000 sample orders, then pay, refund and
//! # delete some while the job runs; ends when the sample is written
//! cargo run --release --features postgres --example postgres_cdc -- \
//!   --connection "host=127.0.0.1 port=15432 user=postgres dbname=tideline" --demo 2000
//! # or follow an existing `orders` table live (Ctrl-C stops with a savepoint)
//! cargo run --release --features postgres --example postgres_cdc -- --connection "..."
//! ```
//!
//! The table: `orders (id bigint PRIMARY KEY, customer text, status text,
//! amount bigint, paid_at bigint)` (`paid_at`: epoch milliseconds, set
//! when the order is paid). The first run snapshots it, then streams its
//! changes; a restart resumes from the last checkpoint
//! (`--checkpoint-dir`). Output: `revenue` lines (a `+I`/`-U`/`+U`/`-D`
//! changelog of orders and amount per status), `paid` lines (orders paid
//! per minute of payment time), a Parquet archive of
//! the changes in `--archive` (committed files `part-*.parquet`), and the
//! last line `changes=N revenue_updates=N windows=N dead_letters=N
//! checkpoints=N`.

// `main` is public so the integration tests can run it.
#![allow(unreachable_pub)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[path = "common/mod.rs"]
mod common;

use clap::Parser;
use serde::{Deserialize, Serialize};
use tideline::connectors::file::ExactlyOnceParquetSink;
use tideline::operators::changelog::{
    AggregateChangelogExt, Change, ChangelogRow, ChangelogStreamExt, ToTableExt,
};
use tideline::postgres::{execute_batch, pgoutput::parse_lsn, query_text, PostgresCdcSource};
use tideline::prelude::*;
use tideline::RestoreFrom;

/// A row of `orders`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The primary key.
    pub id: i64,
    /// Who ordered.
    pub customer: String,
    /// `pending`, `paid`, `refunded`.
    pub status: String,
    /// In cents.
    pub amount: i64,
    /// When it was paid (epoch milliseconds).
    pub paid_at: Option<i64>,
}

/// One change as archived: flat columns for Parquet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArchivedChange {
    /// `read`, `insert`, `update` or `delete`.
    pub op: String,
    /// The order's id.
    pub id: i64,
    /// Its status after the change (before it, for deletes).
    pub status: String,
    /// Its amount after the change (before it, for deletes).
    pub amount: i64,
    /// The commit LSN of the change's transaction.
    pub lsn: u64,
    /// The commit time, epoch microseconds.
    pub commit_time: i64,
}

impl ArchivedChange {
    fn of(change: &Change<Order>) -> Option<Self> {
        let row = change.row()?;
        Some(Self {
            op: format!("{:?}", change.op).to_lowercase(),
            id: row.id,
            status: row.status.clone(),
            amount: row.amount,
            lsn: change.lsn,
            commit_time: change.commit_time,
        })
    }
}

/// One line of the revenue changelog: `+I`/`-U`/`+U`/`-D` of a status's
/// totals.
#[derive(Clone, Debug)]
pub struct Revenue {
    /// `+I`, `-U`, `+U` or `-D`.
    pub change: &'static str,
    /// The order status.
    pub status: String,
    /// Orders with it.
    pub orders: u64,
    /// Their amount.
    pub cents: i64,
}

/// Orders paid in one minute of payment time.
#[derive(Clone, Debug)]
pub struct PaidPerMinute {
    /// The window's start, epoch milliseconds.
    pub start: i64,
    /// Its end (exclusive).
    pub end: i64,
    /// Orders paid in it.
    pub orders: u64,
}

/// Command-line options.
#[derive(Debug, Parser)]
pub struct Args {
    /// The database (libpq `key=value` string or `postgresql://` URL).
    #[arg(long)]
    pub connection: String,
    /// The table.
    #[arg(long, default_value = "orders")]
    pub table: String,
    /// The replication slot (the job's identity on the server).
    #[arg(long, default_value = "orders_example")]
    pub slot: String,
    /// Checkpoints.
    #[arg(long, default_value = "postgres-cdc-chk")]
    pub checkpoint_dir: PathBuf,
    /// The Parquet archive of every change.
    #[arg(long, default_value = "postgres-cdc-archive")]
    pub archive: PathBuf,
    /// Create the table with N sample orders, change them while the job
    /// runs, and end when that is read.
    #[arg(long)]
    pub demo: Option<u64>,
    /// Serve the job's web UI on this address (e.g. 127.0.0.1:8081; `web` feature).
    #[arg(long)]
    pub web: Option<String>,
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Creates the sample table with the first half of `n` orders; an earlier
/// demo's slot, checkpoints and archive go.
fn create_demo(args: &Args, n: u64) -> Result<()> {
    for dir in [&args.checkpoint_dir, &args.archive] {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove", dir, e));
            }
            _ => {}
        }
    }
    let (table, slot) = (&args.table, &args.slot);
    execute_batch(
        &args.connection,
        &format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}';
             DROP PUBLICATION IF EXISTS {slot}_publication;
             DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (id bigint PRIMARY KEY, customer text NOT NULL, status text NOT NULL,
                                   amount bigint NOT NULL, paid_at bigint);
             INSERT INTO {table} SELECT g, 'c' || (g % 97), 'pending', 100 + g % 900, NULL
               FROM generate_series(1, {}) g;",
            n / 2
        ),
    )
}

/// The rest of the sample: the second half of the orders, then 70 % of
/// all paid (one per 300 ms of event time), 5 % refunded, 3 % deleted.
/// Returns the LSN after it.
fn write_demo(args: &Args, n: u64) -> Result<u64> {
    let table = &args.table;
    let start = now_millis();
    let mut sql = format!(
        "INSERT INTO {table} SELECT g, 'c' || (g % 97), 'pending', 100 + g % 900, NULL
           FROM generate_series({}, {n}) g;\n",
        n / 2 + 1
    );
    for id in 1..=n {
        if id % 10 < 7 {
            sql.push_str(&format!(
                "UPDATE {table} SET status = 'paid', paid_at = {} WHERE id = {id};\n",
                start + id as i64 * 300
            ));
        }
        if id % 20 == 3 {
            sql.push_str(&format!(
                "UPDATE {table} SET status = 'refunded' WHERE id = {id};\n"
            ));
        }
        if id % 33 == 5 {
            sql.push_str(&format!("DELETE FROM {table} WHERE id = {id};\n"));
        }
    }
    execute_batch(&args.connection, &sql)?;
    let lsn = query_text(
        &args.connection,
        "SELECT pg_logical_emit_message(true, 'tideline-example', 'end')::text",
    )?
    .and_then(|text| parse_lsn(&text))
    .ok_or_else(|| Error::external("PostgreSQL", "read the end LSN", "no LSN"))?;
    Ok(lsn)
}

/// Builds and runs the job.
pub fn run(args: &Args) -> Result<JobSummary> {
    if let Some(n) = args.demo {
        create_demo(args, n)?;
    }
    let job = Job::new()
        .checkpointing(Duration::from_secs(1), &args.checkpoint_dir)
        .restore(RestoreFrom::Latest);
    let job = common::web_ui(job, args.web.as_deref())?;
    let mut source = PostgresCdcSource::builder(&args.connection, &args.slot).table(&args.table);
    if args.demo.is_some() {
        source = source.bounded();
    }
    // Event time: when an order was paid, else when its change committed.
    let source = source.build::<Order>()?.event_time(|c: &Change<Order>| {
        c.row()
            .and_then(|o| o.paid_at)
            .unwrap_or(c.commit_time / 1000)
    });
    let (bound, metrics) = (source.bound(), source.metrics());
    let changes = job.source(
        source,
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(5)),
    );
    changes.dead_letters().sink(PrintSink::new("dead-letter"));
    changes
        .flat_map(|c: Change<Order>| ArchivedChange::of(&c))
        .sink(ExactlyOnceParquetSink::<ArchivedChange>::new(
            &args.archive,
        )?)
        .named("archive");

    // The table by id, as its changelog; an update that changes the id is
    // a delete and an insert.
    let orders = changes
        .flat_map(|c: Change<Order>| c.split_key_update(|o| o.id))
        .key_by(|c: &Change<Order>| c.row().map(|o| o.id))
        .to_table();
    orders
        .key_by_row(|o: &Order| o.status.clone())
        .aggregate_changelog((Count, Sum::of(|o: &Order| o.amount)))
        .map(|r: ChangelogRow<(String, (u64, i64))>| {
            let (status, (orders, cents)) = r.row;
            Revenue {
                change: r.kind.short(),
                status,
                orders,
                cents,
            }
        })
        .sink(PrintSink::new("revenue"))
        .named("revenue");
    // Paid orders per minute of payment time: the table's rows written
    // with status `paid` (the sample pays each order once).
    orders
        .filter(|r: &ChangelogRow<Order>| r.kind.is_addition() && r.row.status == "paid")
        .key_by(|_: &ChangelogRow<Order>| "paid".to_string())
        .window(Tumbling::of(Duration::from_secs(60)))
        .aggregate(Count)
        .map(|w| PaidPerMinute {
            start: w.window.start,
            end: w.window.end,
            orders: w.value,
        })
        .sink(PrintSink::new("paid"))
        .named("windows");

    let running = job.spawn()?;
    if let Some(n) = args.demo {
        while !metrics.snapshot_done() {
            std::thread::sleep(Duration::from_millis(20));
        }
        bound.set(write_demo(args, n)?);
    }
    let summary = running.join()?;
    let count = |name: &str| summary.operator(name).map_or(0, |o| o.records_in);
    println!(
        "changes={} revenue_updates={} windows={} dead_letters={} checkpoints={}",
        count("archive"),
        count("revenue"),
        count("windows"),
        summary.dead_letters,
        summary.checkpoints.len(),
    );
    Ok(summary)
}

/// Runs the example with the command line's arguments.
pub fn main() -> Result<()> {
    tideline::logging::init();
    run(&Args::parse()).map(|_| ())
}
