//! Change data capture throughput from PostgreSQL on this machine, against
//! the cluster `scripts/postgres.sh start` runs (`TIDELINE_POSTGRES_URL`,
//! default `host=127.0.0.1 port=15432 user=postgres dbname=tideline`):
//!
//! - **pg_recvlogical**: PostgreSQL's own client reading a slot's
//!   `pgoutput` stream to `/dev/null` (the limit: the server decodes the
//!   WAL, nothing is parsed on the client);
//! - **tideline**: `PostgresCdcSource` reading a slot with the same
//!   contents, decoding every change into a struct, into a counting sink.
//!
//! Both slots are created before the workload is written, so they hold
//! the same changes: inserts in transactions of 1,000 rows, then an update
//! of every fifth row. Each figure is changes per second; runs alternate
//! (three of each), and the ratio compares the medians of the same run:
//! the server and the client share the 2 cores, so ratios are what count.
//!
//! `cargo bench --features postgres --bench postgres_cdc` (1 M inserts +
//! 200 k updates; `-- --quick`, and `cargo test`, use 20 k). Without a
//! server it says so and does nothing, unless `CI` is set: then it fails.

#[path = "common/mod.rs"]
mod common;
use common::CountSink;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Deserialize;
use tideline::postgres::{pgoutput::parse_lsn, PostgresCdcSource, SnapshotMode};
use tideline::prelude::*;

#[derive(Clone, Debug, Deserialize)]
#[allow(dead_code)]
struct Row {
    id: i64,
    user_id: i32,
    amount: i64,
    note: String,
}

fn fail(what: &str, e: impl std::fmt::Display) -> Error {
    Error::external("PostgreSQL", what, e.to_string())
}

/// A PostgreSQL client program: on PATH, or in the newest server's bin.
fn program(name: &str) -> String {
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .map_or_else(|| name.to_string(), |p| p.display().to_string())
}

/// Runs `sql` as a script (`-f`: each statement its own transaction
/// unless the script says otherwise; with `-c` all would be one).
fn psql(url: &str, sql: &str) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new(program("psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-d",
            url,
            "-f",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail("run psql", e))?;
    // Written from another thread: psql's output could fill its pipe.
    let writer = child.stdin.take().map(|mut stdin| {
        let sql = sql.to_string();
        std::thread::spawn(move || stdin.write_all(sql.as_bytes()))
    });
    let out = child.wait_with_output().map_err(|e| fail("run psql", e))?;
    if let Some(writer) = writer {
        writer
            .join()
            .map_err(|_| fail("write to psql", "the writer panicked"))?
            .map_err(|e| fail("write to psql", e))?;
    }
    if !out.status.success() {
        return Err(fail("psql", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn reachable(url: &str) -> bool {
    Command::new(program("pg_isready"))
        .args(["-d", url, "-t", "2"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; without it (`cargo test`) runs are small.
    let quick = std::env::args().all(|a| a != "--bench")
        || std::env::args().any(|a| a == "--quick" || a == "--test");
    let inserts: u64 = if quick { 20_000 } else { 1_000_000 };
    let url = std::env::var("TIDELINE_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=15432 user=postgres dbname=tideline".into());
    if !reachable(&url) {
        if std::env::var_os("CI").is_some() {
            return Err(fail(
                "connect",
                format!("CI is set but nothing answers at {url}"),
            ));
        }
        println!("no PostgreSQL at {url}: benchmark not run (scripts/postgres.sh start)");
        return Ok(());
    }
    let runs = 3;
    let tag = format!("bench_{}", std::process::id());
    let table = format!("{tag}_rows");
    let publication = format!("{tag}_pub");
    psql(
        &url,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, user_id int NOT NULL, amount bigint NOT NULL, note text NOT NULL);
             CREATE PUBLICATION {publication} FOR TABLE {table};"
        ),
    )?;
    let slots: Vec<(String, String)> = (0..runs)
        .map(|i| (format!("{tag}_recv_{i}"), format!("{tag}_tl_{i}")))
        .collect();
    for (recv, tl) in &slots {
        psql(
            &url,
            &format!(
                "SELECT pg_create_logical_replication_slot('{recv}', 'pgoutput');
                 SELECT pg_create_logical_replication_slot('{tl}', 'pgoutput');"
            ),
        )?;
    }
    let mut workload = String::new();
    for start in (0..inserts).step_by(1000) {
        workload.push_str(&format!(
            "INSERT INTO {table} SELECT g, g % 1000, g * 3, 'note ' || g FROM generate_series({}, {}) g;\n",
            start + 1,
            (start + 1000).min(inserts)
        ));
    }
    for start in (0..inserts).step_by(5000) {
        workload.push_str(&format!(
            "UPDATE {table} SET amount = amount + 1 WHERE id % 5 = 0 AND id BETWEEN {} AND {};\n",
            start + 1,
            start + 5000
        ));
    }
    let written = Instant::now();
    psql(&url, &workload)?;
    let changes = inserts + inserts / 5;
    // A logical message after the workload bounds both readers (the WAL
    // write position, pg_current_wal_lsn, can lag the last commit).
    let end = psql(
        &url,
        "SELECT pg_logical_emit_message(true, 'tideline-bench', 'end')::text",
    )?;
    println!(
        "workload: {changes} changes written in {:.1} s, end LSN {}",
        written.elapsed().as_secs_f64(),
        end.trim()
    );

    let measured = measure(&url, &table, &publication, &slots, changes, &end);
    for slot in slots.iter().flat_map(|(recv, tl)| [recv, tl]) {
        // A session that just ended may hold its slot for a moment.
        for _ in 0..100 {
            let active = psql(
                &url,
                &format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"),
            )?;
            if active.trim() != "t" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        psql(&url, &format!("SELECT pg_drop_replication_slot('{slot}')"))?;
    }
    psql(
        &url,
        &format!("DROP PUBLICATION {publication}; DROP TABLE {table};"),
    )?;
    measured
}

/// The alternating runs over `slots`; prints the rates and their medians.
fn measure(
    url: &str,
    table: &str,
    publication: &str,
    slots: &[(String, String)],
    changes: u64,
    end: &str,
) -> Result<()> {
    let end_lsn = parse_lsn(end.trim()).ok_or_else(|| fail("read the WAL position", end))?;
    let (mut recv_rates, mut tl_rates) = (Vec::new(), Vec::new());
    for (recv, tl) in slots {
        let started = Instant::now();
        let status = Command::new(program("pg_recvlogical"))
            .args([
                "-d",
                url,
                "--slot",
                recv,
                "--start",
                "--endpos",
                end.trim(),
                "--no-loop",
                "-o",
                "proto_version=1",
                "-o",
                &format!("publication_names={publication}"),
                "-f",
                "/dev/null",
            ])
            .status()
            .map_err(|e| fail("run pg_recvlogical", e))?;
        if !status.success() {
            return Err(fail("pg_recvlogical", status));
        }
        let seconds = started.elapsed().as_secs_f64();
        recv_rates.push(changes as f64 / seconds);
        println!(
            "pg_recvlogical changes={changes} seconds={seconds:.3} changes_per_s={:.0}",
            changes as f64 / seconds
        );

        let count = CountSink::default();
        let source = PostgresCdcSource::builder(url, tl.clone())
            .table(table)
            .publication(publication)
            .snapshot(SnapshotMode::Never)
            .until_lsn(end_lsn)
            .build::<Row>()?;
        let job = Job::new();
        job.source(source, WatermarkStrategy::none())
            .sink(count.clone());
        let started = Instant::now();
        job.run()?;
        let seconds = started.elapsed().as_secs_f64();
        let read = count.0.load(Ordering::Relaxed);
        if read != changes {
            return Err(fail(
                "count the changes",
                format!("read {read} of {changes} changes"),
            ));
        }
        tl_rates.push(changes as f64 / seconds);
        println!(
            "tideline       changes={changes} seconds={seconds:.3} changes_per_s={:.0}",
            changes as f64 / seconds
        );
    }
    let (recv, tl) = (median(recv_rates), median(tl_rates));
    println!(
        "median: pg_recvlogical {recv:.0}/s, tideline {tl:.0}/s, ratio {:.2}",
        tl / recv
    );
    Ok(())
}
