//! `PostgresQuerySource` against a real server. Time is a `ManualClock`:
//! the tests set "now", and so the safety lag's cutoff, explicitly; the
//! only waiting is for the reader's query thread to answer.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tideline::connectors::file::{read_committed, ExactlyOnceCsvSink};
use tideline::operators::changelog::{Change, ChangeOp};
use tideline::postgres::{PostgresQuerySource, QueryMetrics};
use tideline::prelude::*;
use tideline::{
    LocalRun, ReaderContext, Rejected, RestoreFrom, SourceOffset, SourceOutput, SourceReader,
    SourceStatus,
};

use super::{begin, postgres_url, psql, unique_name};

/// 2024-01-01 00:00:00 UTC, in µs since the Unix epoch: the tests' cursor
/// values are offsets from it.
const T0: i64 = 1_704_067_200_000_000;
/// [`T0`] in ms, for the clock.
const T0_MS: i64 = T0 / 1000;

/// An SQL expression for `ms` milliseconds after [`T0`].
fn at(ms: i64) -> String {
    format!("(timestamptz '2024-01-01 00:00:00+00' + {ms} * interval '1 millisecond')")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Item {
    id: i64,
    name: String,
    amount: i64,
}

fn ctx(clock: &Arc<ManualClock>) -> ReaderContext {
    ReaderContext {
        clock: Arc::clone(clock) as Arc<dyn Clock>,
        partitions: 1,
        subtask: tideline::SubtaskInfo {
            subtask: 0,
            parallelism: 1,
            isolated: false,
        },
    }
}

type Read<T> = (Vec<Record<Change<T>>>, Vec<Rejected>);

/// Polls `reader` (batches of 3) until `done` says so after a poll that
/// found nothing more to emit, or until it finishes, or until it has
/// emitted `limit` records; panics after 60 s. Waits only for the query
/// thread's answers.
fn read<T>(
    reader: &mut dyn SourceReader<Change<T>>,
    limit: Option<usize>,
    mut done: impl FnMut() -> bool,
) -> Read<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut records, mut rejected) = (Vec::new(), Vec::new());
    loop {
        let room = limit.map_or(3, |n| (n - records.len()).min(3));
        if room == 0 {
            return (records, rejected);
        }
        let mut out = SourceOutput::new(room);
        let status = reader.poll(&mut out).expect("poll");
        records.extend(out.take_records());
        rejected.extend(out.take_rejected());
        match status {
            SourceStatus::Finished => return (records, rejected),
            SourceStatus::Pending if done() => return (records, rejected),
            SourceStatus::Pending => {
                assert!(Instant::now() < deadline, "timed out reading");
                std::thread::yield_now();
            }
            SourceStatus::Ready => {}
        }
    }
}

/// Reads until the reader has finished.
fn read_to_end<T>(reader: &mut dyn SourceReader<Change<T>>) -> Read<T> {
    read(reader, None, || false)
}

/// Reads until the reader has caught up with `cutoff` (µs): every row
/// visible to its last query with a cursor at or before it is emitted.
fn read_caught_up<T>(
    reader: &mut dyn SourceReader<Change<T>>,
    metrics: &QueryMetrics,
    cutoff: i64,
) -> Read<T> {
    read(reader, None, || {
        metrics.caught_up_to_micros() == Some(cutoff)
    })
}

#[test]
fn query_source_reads_rows_in_cursor_and_key_order_across_chunks() {
    let Some(url) = postgres_url() else { return };
    let table = unique_name("items");
    // 22 rows, three per cursor value, ids in no particular order (ties
    // are broken by the key); one with an amount that does not parse.
    let bad = 15;
    let mut rows: Vec<(i64, Option<i64>, String)> = (0..22)
        .map(|i| {
            let id = (i * 7) % 22 + 1;
            let amount = if id == bad {
                "n/a".into()
            } else {
                (id * 10).to_string()
            };
            (id, Some((i / 3) * 1000), amount)
        })
        .collect();
    // Never read: a NULL cursor, and a cursor after the bound. Read: one
    // exactly at the bound.
    rows.push((23, None, "1".into()));
    rows.push((24, Some(60_000), "1".into()));
    rows.push((25, Some(20_000), "250".into()));
    let values: Vec<String> = rows
        .iter()
        .map(|(id, ms, amount)| {
            let ts = ms.map_or_else(|| "NULL".to_string(), at);
            format!("({id}, 'item {id}', '{amount}', {ts})")
        })
        .collect();
    psql(
        &url,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL, amount text NOT NULL,
                                   updated_at timestamptz);
             INSERT INTO {table} VALUES {};",
            values.join(", ")
        ),
    );
    let source = PostgresQuerySource::builder(url.clone(), table.clone())
        .cursor_column("updated_at")
        .key_column("id")
        .chunk_size(4)
        .until_micros(T0 + 20_000_000)
        .build::<Item>()
        .unwrap();
    assert!(source.is_bounded());
    let metrics = source.metrics();
    let clock = Arc::new(ManualClock::new(T0_MS + 60_000));
    let mut reader = source.create_reader(0, &ctx(&clock)).unwrap();
    let (records, rejected) = read_to_end(reader.as_mut());

    let mut expected: Vec<(i64, i64)> = rows
        .iter()
        .filter_map(|(id, ms, _)| ms.filter(|ms| *ms <= 20_000).map(|ms| (ms, *id)))
        .collect();
    expected.sort_unstable();
    let read_rows = expected.len() as u64;
    let expected: Vec<(i64, i64)> = expected.into_iter().filter(|(_, id)| *id != bad).collect();
    let got: Vec<(i64, i64)> = records
        .iter()
        .map(|r| {
            let item = r.value.after.as_ref().unwrap();
            ((r.value.commit_time - T0) / 1000, item.id)
        })
        .collect();
    assert_eq!(got, expected);
    for record in &records {
        let change = &record.value;
        let item = change.after.as_ref().unwrap();
        assert_eq!(change.op, ChangeOp::Update);
        assert_eq!(change.before, None);
        assert_eq!(change.table, format!("public.{table}"));
        assert_eq!((change.lsn, change.tx_id), (0, 0));
        assert_eq!(record.timestamp.millis(), change.commit_time / 1000);
        assert_eq!(
            (item.name.clone(), item.amount),
            (format!("item {}", item.id), item.id * 10)
        );
    }
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0].reason.contains("column `amount`"),
        "{rejected:?}"
    );
    assert!(rejected[0].record.contains("amount=n/a"), "{rejected:?}");
    let place = rejected[0].offset.clone().unwrap_or_default();
    assert!(place.contains(&format!("id={bad}")), "{place}");
    // 4 rows a query: every full chunk is followed by one more query.
    assert_eq!(metrics.rows(), read_rows);
    assert_eq!(metrics.queries(), read_rows / 4 + 1);
    assert_eq!(metrics.cursor_micros(), Some(T0 + 20_000_000));
    assert_eq!(metrics.caught_up_to_micros(), Some(T0 + 20_000_000));
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Sale {
    region: String,
    id: i32,
    amount: i64,
}

#[test]
fn query_source_resumes_strictly_after_its_offset() {
    let Some(url) = postgres_url() else { return };
    let table = unique_name("sales");
    // A composite key of text and integer, a `timestamp` (no time zone)
    // cursor with four rows per value: chunks of 3 end inside the ties.
    let values: Vec<String> = (0..20)
        .map(|i| {
            let region = ["north", "south", "east"][i % 3];
            let ms = (i / 4) * 500;
            format!(
                "('{region}', {}, {i}, timestamp '2024-01-01 00:00:00' + {ms} * interval '1 ms')",
                i / 2
            )
        })
        .collect();
    psql(
        &url,
        &format!(
            "CREATE TABLE {table} (region text NOT NULL, id int NOT NULL, amount bigint NOT NULL,
                                   changed timestamp NOT NULL, PRIMARY KEY (region, id));
             INSERT INTO {table} VALUES {};",
            values.join(", ")
        ),
    );
    let make = || {
        PostgresQuerySource::builder(url.clone(), table.clone())
            .cursor_column("changed")
            .key_column("region")
            .key_column("id")
            .chunk_size(3)
            .until_micros(T0 + 10_000_000)
            .build::<Sale>()
            .unwrap()
    };
    let clock = Arc::new(ManualClock::new(T0_MS + 60_000));
    let key = |r: &Record<Change<Sale>>| {
        let sale = r.value.after.clone().unwrap();
        (r.value.commit_time, sale.region, sale.id)
    };
    let all: Vec<_> = read_to_end(make().create_reader(0, &ctx(&clock)).unwrap().as_mut())
        .0
        .iter()
        .map(key)
        .collect();
    assert_eq!(all.len(), 20);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "read in (cursor, region, id) order");

    for cut in [0, 1, 2, 3, 4, 7, 19, 20] {
        let mut first = make().create_reader(0, &ctx(&clock)).unwrap();
        let head = read(first.as_mut(), Some(cut), || false).0;
        assert_eq!(head.len(), cut);
        let offset = first.offset().unwrap();
        drop(first);
        let mut second = make().create_reader_at(0, &ctx(&clock), &offset).unwrap();
        let tail = read_to_end(second.as_mut()).0;
        let joined: Vec<_> = head.iter().chain(&tail).map(key).collect();
        assert_eq!(joined, all, "cut at {cut} ({offset:?})");
    }

    // Offsets that are not this source's are refused, naming the field.
    let source = make();
    let err = source
        .create_reader_at(0, &ctx(&clock), &SourceOffset(vec![7]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("source 'postgres-query'.offset"), "{err}");
    // One integer key where the table has (text, int): refused once the
    // reader has looked the table up.
    let mut reader = source
        .create_reader_at(0, &ctx(&clock), &SourceOffset(vec![1, 0, 1, 0, 5]))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let err = loop {
        match reader.poll(&mut SourceOutput::new(4)) {
            Err(e) => break e.to_string(),
            Ok(_) => assert!(Instant::now() < deadline, "the offset was not refused"),
        }
    };
    assert!(err.contains("does not fit the key columns"), "{err}");
}

/// One row as the job of the restore test writes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Out {
    id: i64,
    amount: i64,
    commit_time: i64,
}

/// The restore test's bound: its rows' last cursor value.
const RESTORE_UNTIL: i64 = T0 + 2_500_000;
/// The restore test's safety lag, in ms.
const RESTORE_LAG_MS: i64 = 1000;

/// A job reading `table` on `clock` (rows by the cutoff, 2 a query, a
/// query every 10 ms) into an exactly-once CSV sink in `dir/out`,
/// checkpointing every 100 ms into `dir/chk` and restoring from the latest
/// checkpoint there.
fn restore_job(
    url: &str,
    table: &str,
    dir: &Path,
    clock: &Arc<ManualClock>,
) -> (Job, QueryMetrics) {
    let source = PostgresQuerySource::builder(url, table)
        .cursor_column("updated_at")
        .key_column("id")
        .chunk_size(2)
        .poll_interval(Duration::from_millis(10))
        .safety_lag(Duration::from_millis(RESTORE_LAG_MS as u64))
        .until_micros(RESTORE_UNTIL)
        .build::<Item>()
        .unwrap();
    let metrics = source.metrics();
    let job = Job::new()
        .clock(Arc::clone(clock) as Arc<dyn Clock>)
        .checkpointing(Duration::from_millis(100), dir.join("chk"))
        .checkpoint_retention(2)
        .restore(RestoreFrom::Latest);
    job.source(source, WatermarkStrategy::none())
        .map(|change: Change<Item>| {
            let item = change.after.unwrap_or_else(|| Item {
                id: -1,
                name: String::new(),
                amount: 0,
            });
            Out {
                id: item.id,
                amount: item.amount,
                commit_time: change.commit_time,
            }
        })
        .sink(ExactlyOnceCsvSink::new(dir.join("out")).unwrap());
    (job, metrics)
}

/// Moves the clock 10 ms, then steps `run` until its source has caught up
/// with the new cutoff or the run has ended: the clock never runs ahead of
/// the queries, so what has been read at each clock reading is exact.
fn step_caught_up(run: &mut LocalRun, clock: &ManualClock, metrics: &QueryMetrics) {
    clock.advance(Duration::from_millis(10));
    let cutoff = ((clock.now_millis() - RESTORE_LAG_MS) * 1000).min(RESTORE_UNTIL);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        run.step().unwrap();
        if run.is_finished() || metrics.caught_up_to_micros() == Some(cutoff) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for a query");
        std::thread::yield_now();
    }
}

#[test]
fn a_restored_job_reads_exactly_the_rows_after_its_checkpoint() {
    let Some(url) = postgres_url() else { return };
    let table = unique_name("restored");
    // 25 rows 100 ms apart: with a 1 s lag, the clock lets them through one
    // by one, so the first run is stopped part-way.
    psql(
        &url,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL, amount bigint NOT NULL,
                                   updated_at timestamptz NOT NULL);
             INSERT INTO {table}
             SELECT g, 'item ' || g, g * 10,
                    timestamptz '2024-01-01 00:00:00+00' + g * 100 * interval '1 ms'
             FROM generate_series(1, 25) g;"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0_MS));

    // The first run stops (is dropped, as a crash would) when the clock
    // shows 2 s: it has read the 10 rows up to 1 s. Checkpoints are taken
    // every 100 ms of the clock, so the last one it completed (dropping the
    // run completes the one acknowledged) holds at least 8 of them.
    let (job, metrics) = restore_job(&url, &table, dir.path(), &clock);
    let mut run = job.start_local().unwrap();
    while clock.now_millis() < T0_MS + 2000 {
        step_caught_up(&mut run, &clock, &metrics);
        assert!(
            !run.is_finished(),
            "the first run ended before it was stopped"
        );
    }
    assert_eq!(metrics.rows(), 10);
    drop(run);

    let (job, metrics) = restore_job(&url, &table, dir.path(), &clock);
    let mut run = job.start_local().unwrap();
    while !run.is_finished() {
        step_caught_up(&mut run, &clock, &metrics);
    }
    let summary = run.finish().unwrap();
    assert!(summary.restored_from.is_some(), "{summary:?}");
    // It resumed after 8 to 10 rows, not from the start.
    let read_second = metrics.rows();
    assert!(
        (15..=17).contains(&read_second),
        "the second run read {read_second} rows"
    );

    let mut committed: Vec<Out> = read_committed(dir.path().join("out")).unwrap();
    committed.sort();
    let expected: Vec<Out> = (1..=25)
        .map(|i| Out {
            id: i,
            amount: i * 10,
            commit_time: T0 + i * 100_000,
        })
        .collect();
    assert_eq!(committed, expected);
}

/// The same writes and polls under `lag`; returns the ids read and the ids
/// in the table at the end. Timeline (cursor values and clock in ms after
/// [`T0`]):
///
/// - row 1 at 1000 is committed; a transaction writes row 2 at 2000 and
///   stays open; row 3 at 3000 is committed; another transaction writes row
///   4 at 3500 and stays open; row 5 at 3800 is committed;
/// - the clock shows 6000: read;
/// - row 2 commits (4 s after its cursor value); the clock shows 9000: read;
/// - row 4 commits (5.5 s after its cursor value); the clock shows 20000:
///   read.
fn late_commits(lag: Duration) -> Option<(Vec<i64>, Vec<i64>)> {
    let url = postgres_url()?;
    let table = unique_name("late");
    psql(
        &url,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL, amount bigint NOT NULL,
                                   updated_at timestamptz NOT NULL);
             INSERT INTO {table} VALUES (1, 'on time', 10, {});",
            at(1000)
        ),
    );
    let insert = |id: i64, ms: i64| {
        format!(
            "INSERT INTO {table} VALUES ({id}, 'row {id}', {}, {});",
            id * 10,
            at(ms)
        )
    };
    let source = PostgresQuerySource::builder(url.clone(), table.clone())
        .cursor_column("updated_at")
        .key_column("id")
        .safety_lag(lag)
        .build::<Item>()
        .unwrap();
    assert!(!source.is_bounded());
    let metrics = source.metrics();
    let clock = Arc::new(ManualClock::new(T0_MS));
    let mut reader = source.create_reader(0, &ctx(&clock)).unwrap();
    let lag_micros = i64::try_from(lag.as_micros()).unwrap();
    let mut read_at = |ms: i64| -> Vec<i64> {
        clock.set(T0_MS + ms);
        let cutoff = T0 + ms * 1000 - lag_micros;
        let (records, rejected) = read_caught_up(reader.as_mut(), &metrics, cutoff);
        assert!(rejected.is_empty(), "{rejected:?}");
        records
            .iter()
            .map(|r| r.value.after.as_ref().unwrap().id)
            .collect()
    };

    let row_2 = begin(&url, &insert(2, 2000));
    psql(&url, &insert(3, 3000));
    let row_4 = begin(&url, &insert(4, 3500));
    psql(&url, &insert(5, 3800));
    let mut ids = read_at(6000);
    row_2.commit();
    ids.extend(read_at(9000));
    row_4.commit();
    ids.extend(read_at(20_000));

    let in_table = psql(&url, &format!("SELECT id FROM {table} ORDER BY id"))
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    Some((ids, in_table))
}

/// Row 2 commits 4 s after its cursor value, and row 3, committed before
/// it with a later value, was already in the table: with a 5 s lag the
/// cutoff had not passed row 2's value, so row 2 is read, in order. Row 4
/// commits 5.5 s after its value, later than the lag, after row 5 (later
/// value) was read: it is missed, as the module docs say.
#[test]
fn a_row_committed_late_within_the_safety_lag_is_read() {
    let Some((read, in_table)) = late_commits(Duration::from_secs(5)) else {
        return;
    };
    assert_eq!(in_table, vec![1, 2, 3, 4, 5]);
    assert_eq!(read, vec![1, 2, 3, 5]);
}

/// The limit is real: without a lag the first poll reads rows 3 and 5 past
/// the open transactions' rows, and rows 2 and 4, committed later with
/// earlier cursor values, are behind the position and never read.
#[test]
fn without_a_safety_lag_a_row_committed_late_is_missed() {
    let Some((read, in_table)) = late_commits(Duration::ZERO) else {
        return;
    };
    assert_eq!(in_table, vec![1, 2, 3, 4, 5]);
    assert_eq!(read, vec![1, 3, 5]);
}
