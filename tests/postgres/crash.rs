//! Exactly once across crashes: a CDC job (orders → the table by id →
//! count and sum per status, retracting) runs as a child process that is
//! killed with SIGKILL at random moments while a writer changes the table;
//! each time it restarts from its latest checkpoint. At the end the
//! materialized table equals `SELECT *`, the committed aggregate changelog
//! equals the one of an uninterrupted run reading the same WAL, and the
//! slot's confirmed LSN never passed the last completed checkpoint.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use tideline::connectors::file::{read_committed, ExactlyOnceJsonLinesSink};
use tideline::engine::checkpoint::CheckpointStorage;
use tideline::operators::changelog::{
    AggregateChangelogExt, Change, ChangelogRow, ChangelogStreamExt, ChangelogTableSink, ToTableExt,
};
use tideline::postgres::{PostgresCdcSource, SnapshotMode};
use tideline::prelude::*;
use tideline::RestoreFrom;

use super::cdc::{select_orders, Order};
use super::{marker_lsn, postgres_url, psql, unique_name};

/// The aggregate's output: `(status, (count, sum))`.
type StatusTotals = ChangelogRow<(String, (u64, i64))>;

struct ChildConfig {
    url: String,
    table: String,
    slot: String,
    dir: PathBuf,
    until: Option<u64>,
}

impl ChildConfig {
    fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok();
        Some(Self {
            url: var("TL_PG_URL")?,
            table: var("TL_PG_TABLE")?,
            slot: var("TL_PG_SLOT")?,
            dir: var("TL_PG_DIR")?.into(),
            until: var("TL_PG_UNTIL").and_then(|v| v.parse().ok()),
        })
    }

    fn spawn(&self) -> Child {
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args([
                "postgres::crash::child_job",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("TL_PG_URL", &self.url)
            .env("TL_PG_TABLE", &self.table)
            .env("TL_PG_SLOT", &self.slot)
            .env("TL_PG_DIR", &self.dir)
            .stdout(std::process::Stdio::null());
        if let Some(until) = self.until {
            command.env("TL_PG_UNTIL", until.to_string());
        }
        command.spawn().expect("spawn the job process")
    }
}

/// The job; restores from its latest checkpoint.
fn run_job(config: &ChildConfig) -> Result<JobSummary> {
    let job = Job::new()
        .parallelism(1)
        .checkpointing(Duration::from_millis(150), config.dir.join("chk"))
        .restore(RestoreFrom::Latest);
    let source = PostgresCdcSource::builder(config.url.clone(), config.slot.clone())
        .table(config.table.clone())
        .publication(format!("{}_pub", config.table))
        .snapshot(SnapshotMode::Never)
        .bounded()
        .build::<Order>()?;
    if let Some(until) = config.until {
        source.bound().set(until);
    }
    let table = job
        .source(source, WatermarkStrategy::none())
        .flat_map(|c: Change<Order>| c.split_key_update(|o| o.id))
        .key_by(|c: &Change<Order>| c.row().map(|o| o.id))
        .to_table();
    table.sink(ChangelogTableSink::new(|o: &Order| o.id).csv(config.dir.join("orders.csv")));
    table
        .key_by_row(|o: &Order| o.status.clone())
        .aggregate_changelog((Count, Sum::of(|o: &Order| o.amount)))
        .sink(ExactlyOnceJsonLinesSink::<StatusTotals>::new(
            config.dir.join("totals"),
        )?);
    job.run()
}

/// Run by the test below as a child process (never on its own).
#[test]
#[ignore = "the job process of the kill test; it runs it"]
fn child_job() -> Result<()> {
    let config = ChildConfig::from_env().expect("run by the kill test, with TL_PG_* set");
    run_job(&config).map(|_| ())
}

/// A few transactions of random inserts, updates (of status, amount and
/// key) and deletes.
fn writes(table: &str, rng: &mut SmallRng, next_id: &mut i64) -> String {
    let statuses = ["pending", "paid", "shipped", "refunded"];
    let mut sql = String::new();
    for _ in 0..25 {
        sql.push_str("BEGIN;\n");
        for _ in 0..rng.gen_range(1..5) {
            let id = rng.gen_range(1..=*next_id);
            let status = statuses[rng.gen_range(0..statuses.len())];
            sql.push_str(&match rng.gen_range(0..10) {
                0..=3 => {
                    *next_id += 1;
                    format!(
                        "INSERT INTO {table} VALUES ({next_id}, '{status}', {});\n",
                        rng.gen_range(1..1000)
                    )
                }
                4..=5 => format!("UPDATE {table} SET status = '{status}' WHERE id = {id};\n"),
                6 => format!("UPDATE {table} SET amount = amount + 7 WHERE id = {id};\n"),
                7 => format!("UPDATE {table} SET id = id + 1000000 WHERE id = {id};\n"),
                _ => format!("DELETE FROM {table} WHERE id = {id};\n"),
            });
        }
        sql.push_str("COMMIT;\n");
    }
    sql
}

fn confirmed_lsn(url: &str, slot: &str) -> u64 {
    let text = psql(
        url,
        &format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ),
    );
    tideline::postgres::pgoutput::parse_lsn(text.trim()).expect("the slot's LSN")
}

/// The resume LSN of the latest completed checkpoint in `dir`.
fn checkpointed_lsn(dir: &Path) -> Option<u64> {
    let storage = CheckpointStorage::new(dir.join("chk")).ok()?;
    let (latest, _) = storage.latest().ok()?;
    let offsets = latest?.source_offsets("postgres-cdc");
    match offsets.first()?.1 .0.as_slice() {
        [1, resume, _] => Some(*resume),
        _ => None,
    }
}

/// The slot may be confirmed only up to a completed checkpoint's position.
fn assert_slot_behind_checkpoint(url: &str, slot: &str, dir: &Path, created_at: u64) {
    // The slot first: a checkpoint read after it can only be newer.
    let confirmed = confirmed_lsn(url, slot);
    if confirmed > created_at {
        let checkpointed = checkpointed_lsn(dir).expect("a confirmed slot has a checkpoint");
        assert!(
            confirmed <= checkpointed,
            "slot confirmed up to {confirmed:X}, past the checkpoint's {checkpointed:X}"
        );
    }
}

fn committed_totals(dir: &Path) -> Vec<StatusTotals> {
    read_committed::<StatusTotals>(&dir.join("totals")).expect("the committed totals")
}

#[test]
fn exactly_once_across_kills_while_the_table_changes() {
    let Some(url) = postgres_url() else { return };
    let table = unique_name("orders");
    let (slot, reference_slot) = (unique_name("chaos"), unique_name("reference"));
    psql(
        &url,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, status text NOT NULL, amount bigint NOT NULL);
             CREATE PUBLICATION {table}_pub FOR TABLE {table};
             SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');
             SELECT pg_create_logical_replication_slot('{reference_slot}', 'pgoutput');"
        ),
    );
    let created_at = confirmed_lsn(&url, &slot);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ChildConfig {
        url: url.clone(),
        table: table.clone(),
        slot: slot.clone(),
        dir: dir.path().to_path_buf(),
        until: None,
    };
    let mut rng = SmallRng::seed_from_u64(17);
    let mut next_id = 1;
    psql(&url, &writes(&table, &mut rng, &mut next_id));
    for kill in 0..12 {
        let mut child = config.spawn();
        psql(&url, &writes(&table, &mut rng, &mut next_id));
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..700)));
        assert_slot_behind_checkpoint(&url, &slot, dir.path(), created_at);
        if let Some(status) = child.try_wait().expect("poll the job process") {
            panic!("the job process ended on its own before kill {kill}: {status}");
        }
        child.kill().expect("SIGKILL the job process");
        let status = child.wait().expect("wait for the job process");
        assert_eq!(status.signal(), Some(9), "killed: {status}");
        assert_slot_behind_checkpoint(&url, &slot, dir.path(), created_at);
    }
    let until = marker_lsn(&url);
    config.until = Some(until);
    let status = config.spawn().wait().expect("wait for the job process");
    assert!(status.success(), "the last run must finish: {status}");
    assert!(
        confirmed_lsn(&url, &slot) > created_at,
        "checkpoints confirmed the slot"
    );

    let reference_dir = tempfile::tempdir().expect("tempdir");
    run_job(&ChildConfig {
        url: url.clone(),
        table: table.clone(),
        slot: reference_slot.clone(),
        dir: reference_dir.path().to_path_buf(),
        until: Some(until),
    })
    .expect("the reference run");

    let expected = select_orders(&url, &table);
    assert!(
        expected.len() > 100,
        "the writer left {} rows",
        expected.len()
    );
    let table_file = |d: &Path| std::fs::read_to_string(d.join("orders.csv")).expect("orders.csv");
    assert_eq!(
        table_file(dir.path()),
        table_file(reference_dir.path()),
        "the materialized table"
    );
    let reference_totals = committed_totals(reference_dir.path());
    assert!(reference_totals.len() > 100);
    assert_eq!(
        committed_totals(dir.path()),
        reference_totals,
        "the totals changelog"
    );
    // And the table is the database's.
    let mut csv = csv_rows(&table_file(dir.path()));
    csv.sort_by_key(|o| o.id);
    assert!(
        csv == expected,
        "the materialized table differs from SELECT *"
    );
    psql(
        &url,
        &format!(
            "SELECT pg_drop_replication_slot('{slot}'); SELECT pg_drop_replication_slot('{reference_slot}');"
        ),
    );
}

/// The rows of the sink's CSV file (`id,status,amount`, plain values).
fn csv_rows(text: &str) -> Vec<Order> {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("id,status,amount"));
    lines.map(|line| Order::parse(line, ',')).collect()
}
