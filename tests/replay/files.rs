//! The file source: CSV, JSON lines and Parquet, column mapping, bad rows as
//! dead letters with file and line, bad files rejected before the job starts,
//! arrival and event-time order.

use serde::{Deserialize, Serialize};
use tideline::connectors::file::{FileSource, ReplayOrder};

use super::{with_null_timestamps, write_parquet, write_parquet_groups, Row};
use tideline::prelude::*;

fn rows(n: i64, offset: i64) -> Vec<Row> {
    (0..n)
        .map(|i| Row {
            key: i % 3,
            value: i,
            ts: offset + i * 10,
        })
        .collect()
}

/// Runs `source` to the end; returns the records and the dead letters.
fn read(source: FileSource<Row>) -> Result<(Vec<Row>, Vec<DeadLetter>)> {
    let job = Job::new().mode(ExecutionMode::Bounded).batch_size(7);
    let stream = job.source(source, WatermarkStrategy::none());
    let (out, dead) = (CollectSink::new(), CollectSink::new());
    stream.sink(out.clone());
    stream.dead_letters().sink(dead.clone());
    let summary = job.run()?;
    assert_eq!(summary.dead_letters, dead.len() as u64);
    Ok((out.values(), dead.values()))
}

#[test]
fn csv_bad_rows_become_dead_letters_with_file_and_line() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let path = dir.path().join("a.csv");
    std::fs::write(
        &path,
        "key,value,ts,extra\n1,10,100,x\n2,oops,200,y\n3,30\n4,40,400,z\n",
    )
    .map_err(Error::user)?;
    let (rows, dead) = read(FileSource::new(path.to_str().unwrap_or_default())?)?;
    assert_eq!(
        rows,
        vec![
            Row {
                key: 1,
                value: 10,
                ts: 100
            },
            Row {
                key: 4,
                value: 40,
                ts: 400
            }
        ]
    );
    assert_eq!(dead.len(), 2);
    assert!(
        dead[0]
            .record
            .starts_with(&format!("{}:3: 2,oops,200,y", path.display())),
        "{}",
        dead[0].record
    );
    assert!(
        dead[0].reason.contains("invalid digit"),
        "{}",
        dead[0].reason
    );
    assert!(
        dead[1].record.starts_with(&format!("{}:4", path.display())),
        "{}",
        dead[1].record
    );
    assert_eq!(dead[0].operator, "file_source");
    Ok(())
}

#[test]
fn jsonl_with_a_renamed_column_and_a_bad_line() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let path = dir.path().join("a.jsonl");
    std::fs::write(
        &path,
        "{\"user\":1,\"value\":10,\"ts\":100}\n\n{\"user\":2,\"value\":\"x\",\"ts\":200}\nnot json\n{\"user\":3,\"value\":30,\"ts\":300}\n",
    )
    .map_err(Error::user)?;
    let (rows, dead) =
        read(FileSource::new(path.to_str().unwrap_or_default())?.column("key", "user"))?;
    assert_eq!(
        rows,
        vec![
            Row {
                key: 1,
                value: 10,
                ts: 100
            },
            Row {
                key: 3,
                value: 30,
                ts: 300
            }
        ]
    );
    let lines: Vec<String> = dead
        .iter()
        .map(|d| d.record.split(": ").next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        lines,
        vec![
            format!("{}:3", path.display()),
            format!("{}:4", path.display())
        ]
    );
    Ok(())
}

#[test]
fn parquet_round_trip_with_projection_and_rename() -> Result<()> {
    #[derive(Serialize)]
    struct Wide {
        user_id: i64,
        value: i64,
        ts: i64,
        comment: String,
    }
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let expected = rows(1_000, 0);
    let wide: Vec<Wide> = expected
        .iter()
        .map(|r| Wide {
            user_id: r.key,
            value: r.value,
            ts: r.ts,
            comment: "ignored".into(),
        })
        .collect();
    write_parquet(&dir.path().join("part-0.parquet"), &wide)?;
    let (got, dead) =
        read(FileSource::new(dir.path().to_str().unwrap_or_default())?.column("key", "user_id"))?;
    assert!(dead.is_empty());
    assert_eq!(got, expected);
    Ok(())
}

#[test]
fn parquet_null_timestamps_are_rejected_row_by_row() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let path = dir.path().join("n.parquet");
    let data = with_null_timestamps(10, 4, 1);
    write_parquet(&path, &data)?;
    let (got, dead) = read(FileSource::new(path.to_str().unwrap_or_default())?)?;
    assert_eq!(
        got.iter().map(|r| r.value).collect::<Vec<_>>(),
        vec![0, 2, 3, 4, 6, 7, 8]
    );
    let where_: Vec<String> = dead.iter().map(|d| d.record.clone()).collect();
    let p = path.display();
    assert_eq!(
        where_,
        vec![
            format!("{p}:2 (row)"),
            format!("{p}:6 (row)"),
            format!("{p}:10 (row)")
        ]
    );
    assert_eq!(got.len() + dead.len(), 10, "every row is accounted for");
    Ok(())
}

fn start_error(source: Result<FileSource<Row>>) -> String {
    let source = match source {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    let job = Job::new().mode(ExecutionMode::Bounded);
    job.source(source, WatermarkStrategy::none())
        .sink(CollectSink::new());
    match job.run() {
        Ok(_) => "no error".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_fail_before_the_job_starts_naming_file_and_column() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let d = dir.path();
    let missing = d.join("nothing-here.csv");
    assert!(
        start_error(FileSource::new(missing.to_str().unwrap_or_default()))
            .contains("matches no file")
    );

    std::fs::write(d.join("empty.csv"), "").map_err(Error::user)?;
    let e = start_error(FileSource::new(
        d.join("empty.csv").to_str().unwrap_or_default(),
    ));
    assert!(e.contains("empty.csv is empty"), "{e}");

    std::fs::write(d.join("nocol.csv"), "key,ts\n1,2\n").map_err(Error::user)?;
    let e = start_error(FileSource::new(
        d.join("nocol.csv").to_str().unwrap_or_default(),
    ));
    assert!(
        e.contains("file_source.column 'value'") && e.contains("nocol.csv"),
        "{e}"
    );

    std::fs::write(d.join("corrupt.parquet"), b"PAR1 this is not parquet").map_err(Error::user)?;
    let e = start_error(FileSource::new(
        d.join("corrupt.parquet").to_str().unwrap_or_default(),
    ));
    assert!(
        e.contains("corrupt.parquet is not a readable Parquet file"),
        "{e}"
    );

    #[derive(Serialize)]
    struct Stringly {
        key: i64,
        value: String,
        ts: i64,
    }
    write_parquet(
        &d.join("types.parquet"),
        &[Stringly {
            key: 1,
            value: "1".into(),
            ts: 1,
        }],
    )?;
    let e = start_error(FileSource::new(
        d.join("types.parquet").to_str().unwrap_or_default(),
    ));
    assert!(
        e.contains("file_source.column 'value'")
            && e.contains("types.parquet")
            && e.contains("Utf8"),
        "{e}"
    );

    std::fs::write(d.join("notes.txt"), "hello").map_err(Error::user)?;
    let e = start_error(FileSource::new(
        d.join("notes.txt").to_str().unwrap_or_default(),
    ));
    assert!(
        e.contains("cannot tell the format of") && e.contains("notes.txt"),
        "{e}"
    );
    Ok(())
}

#[test]
fn arrival_order_is_file_order_and_event_time_order_sorts_across_files() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::user)?;
    // Hive-style partition folders; names order the files.
    let (a, b) = (
        dir.path().join("date=2026-11-20"),
        dir.path().join("date=2026-11-21"),
    );
    std::fs::create_dir_all(&a).map_err(Error::user)?;
    std::fs::create_dir_all(&b).map_err(Error::user)?;
    let later = rows(50, 5);
    let earlier = rows(50, 0);
    write_parquet(&a.join("x.parquet"), &later)?;
    std::fs::write(
        b.join("y.jsonl"),
        earlier
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default() + "\n")
            .collect::<String>(),
    )
    .map_err(Error::user)?;
    let pattern = dir.path().to_str().unwrap_or_default();
    let (arrival, _) = read(FileSource::new(pattern)?)?;
    assert_eq!(arrival, [later.clone(), earlier.clone()].concat());
    let (by_time, _) = read(
        FileSource::new(pattern)?
            .event_time(|r: &Row| r.ts)
            .order(ReplayOrder::EventTime),
    )?;
    let mut expected = [later, earlier].concat();
    expected.sort_by_key(|r| r.ts); // stable: ties keep file order
    assert_eq!(by_time, expected);
    let glob = format!("{}/*/*.parquet", dir.path().display());
    assert_eq!(FileSource::<Row>::new(&glob)?.files().len(), 1);
    Ok(())
}

#[test]
fn time_range_prunes_row_groups_and_filters_rows() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let path = dir.path().join("t.parquet");
    let all = rows(1_000, 0); // ts 0, 10, ..., 9_990
    write_parquet_groups(&path, &all, 100)?; // 10 groups of 1 s each
    let source = || -> Result<FileSource<Row>> {
        Ok(FileSource::new(path.to_str().unwrap_or_default())?
            .event_time(|r: &Row| r.ts)
            .time_range("ts", 2_500, 4_000))
    };
    let plan = source()?.row_group_plan()?;
    assert_eq!(
        plan.iter()
            .map(|(_, kept, total)| (*kept, *total))
            .collect::<Vec<_>>(),
        vec![(2, 10)]
    );
    let (got, _) = read(source()?)?;
    let expected: Vec<Row> = all
        .iter()
        .filter(|r| (2_500..4_000).contains(&r.ts))
        .cloned()
        .collect();
    assert_eq!(got, expected);
    // CSV cannot prune, but filters the same way.
    let csv = dir.path().join("t.csv");
    let mut text = String::from("key,value,ts\n");
    for r in &all {
        text.push_str(&format!("{},{},{}\n", r.key, r.value, r.ts));
    }
    std::fs::write(&csv, text).map_err(Error::user)?;
    let (got, _) = read(
        FileSource::new(csv.to_str().unwrap_or_default())?
            .event_time(|r: &Row| r.ts)
            .time_range("ts", 2_500, 4_000),
    )?;
    assert_eq!(got, expected);
    Ok(())
}

#[test]
fn event_time_sort_spills_to_disk_and_merges_stably() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let path = dir.path().join("u.jsonl");
    let mut rng = SmallRng::seed_from_u64(3);
    let unsorted: Vec<Row> = (0..5_000)
        .map(|i| Row {
            key: i,
            value: i,
            ts: rng.gen_range(0..500),
        })
        .collect();
    std::fs::write(
        &path,
        unsorted
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default() + "\n")
            .collect::<String>(),
    )
    .map_err(Error::user)?;
    let sorted_source = |budget: usize| -> Result<FileSource<Row>> {
        Ok(FileSource::new(path.to_str().unwrap_or_default())?
            .event_time(|r: &Row| r.ts)
            .order(ReplayOrder::EventTime)
            .sort_memory_rows(budget))
    };
    let (in_memory, _) = read(sorted_source(1_000_000)?)?;
    let (spilled, _) = read(sorted_source(700)?)?; // 8 runs on disk
    let mut expected = unsorted.clone();
    expected.sort_by_key(|r| r.ts); // stable: ties in file order
    assert_eq!(in_memory, expected);
    assert_eq!(spilled, expected);
    Ok(())
}

#[test]
fn hive_partition_directories_fill_fields_and_partitioned_sinks_write_them() -> Result<()> {
    use tideline::connectors::file::PartitionedParquetSink;
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    struct Dated {
        date: String,
        hour: i64,
        value: i64,
    }
    #[derive(Serialize)]
    struct ValueOnly {
        value: i64,
    }
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let d = dir.path();
    for sub in [
        "date=2026-11-20/hour=13",
        "date=2026-11-21/hour=7",
        "date=2026-11-22/hour=0",
    ] {
        std::fs::create_dir_all(d.join(sub)).map_err(Error::user)?;
    }
    std::fs::write(d.join("date=2026-11-20/hour=13/a.csv"), "value\n1\n2\n")
        .map_err(Error::user)?;
    std::fs::write(d.join("date=2026-11-21/hour=7/b.jsonl"), "{\"value\":3}\n")
        .map_err(Error::user)?;
    write_parquet(
        &d.join("date=2026-11-22/hour=0/c.parquet"),
        &[ValueOnly { value: 4 }],
    )?;
    let job = Job::new().mode(ExecutionMode::Bounded);
    let out = CollectSink::new();
    job.source(
        FileSource::<Dated>::new(d.to_str().unwrap_or_default())?,
        WatermarkStrategy::none(),
    )
    .sink(out.clone());
    job.run()?;
    let dated = |date: &str, hour, value| Dated {
        date: date.into(),
        hour,
        value,
    };
    assert_eq!(
        out.values(),
        vec![
            dated("2026-11-20", 13, 1),
            dated("2026-11-20", 13, 2),
            dated("2026-11-21", 7, 3),
            dated("2026-11-22", 0, 4)
        ]
    );

    // A partitioned sink writes date=/hour= folders that the source reads back.
    let written = tempfile::tempdir().map_err(Error::user)?;
    let rows_in = rows(100, 1_763_640_000_000); // 2025-11-20T12:00Z onwards, 10 ms apart
    let job = Job::new().mode(ExecutionMode::Bounded).parallelism(2);
    job.source(
        VecSource::new(rows_in.clone()).with_partitions(2),
        WatermarkStrategy::none(),
    )
    .sink(PartitionedParquetSink::new(written.path(), |r: &Row| {
        PartitionedParquetSink::<Row>::date_hour(r.ts)
    }));
    job.run()?;
    let file = written.path().join("date=2025-11-20/hour=12/part.parquet");
    assert!(file.is_file(), "{}", file.display());
    let (mut back, dead) = read(FileSource::new(
        written.path().to_str().unwrap_or_default(),
    )?)?;
    back.sort();
    let mut expected = rows_in;
    expected.sort();
    assert!(dead.is_empty());
    assert_eq!(back, expected);
    Ok(())
}

#[cfg(feature = "sql")]
#[test]
fn sql_predicate_filters_rows_and_bad_predicates_fail_before_start() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let parquet = dir.path().join("p.parquet");
    let all = rows(300, 0);
    write_parquet(&parquet, &all)?;
    let csv = dir.path().join("p.csv");
    let mut text = String::from("key,value,ts\n");
    for r in &all {
        text.push_str(&format!("{},{},{}\n", r.key, r.value, r.ts));
    }
    std::fs::write(&csv, text).map_err(Error::user)?;
    let expected: Vec<Row> = all
        .iter()
        .filter(|r| r.value > 100 && r.key != 1)
        .cloned()
        .collect();
    for path in [&parquet, &csv] {
        let (got, _) = read(
            FileSource::new(path.to_str().unwrap_or_default())?.filter("value > 100 AND key <> 1"),
        )?;
        assert_eq!(got, expected, "{}", path.display());
    }
    let e = start_error(
        FileSource::new(csv.to_str().unwrap_or_default()).map(|s| s.filter("missing > 3")),
    );
    assert!(
        e.contains("file_source.predicate") && e.contains("missing"),
        "{e}"
    );
    let e = start_error(
        FileSource::new(csv.to_str().unwrap_or_default()).map(|s| s.filter("value + 1")),
    );
    assert!(
        e.contains("file_source.predicate") && e.contains("not a boolean"),
        "{e}"
    );
    Ok(())
}

#[test]
fn fail_fast_stops_at_the_first_bad_row_naming_it() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, "key,value,ts\n1,1,1\n2,oops,2\n3,3,3\n").map_err(Error::user)?;
    let job = Job::new()
        .mode(ExecutionMode::Bounded)
        .failure_policy(FailurePolicy::FailFast);
    job.source(
        FileSource::<Row>::new(path.to_str().unwrap_or_default())?,
        WatermarkStrategy::none(),
    )
    .sink(CollectSink::new());
    let err = job.run().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.starts_with("operator 'file_source' failed: record"),
        "{err}"
    );
    assert!(
        err.contains("bad.csv:3") && err.contains("invalid digit"),
        "{err}"
    );
    Ok(())
}

#[test]
fn pacing_by_rate_and_by_event_time_speed_follows_the_clock() -> Result<()> {
    use std::time::Duration;
    use tideline::connectors::file::Pacing;
    use tideline::testing::TestJob;
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let path = dir.path().join("p.jsonl");
    // One row per second of event time.
    let all: Vec<Row> = (0..100)
        .map(|i| Row {
            key: 0,
            value: i,
            ts: i * 1_000,
        })
        .collect();
    std::fs::write(
        &path,
        all.iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default() + "\n")
            .collect::<String>(),
    )
    .map_err(Error::user)?;
    // At a fixed rate rows go in chunks of about 50 ms (here 2 rows), so
    // where watermarks fall does not depend on timing.
    for (pacing, at_once, after_100ms) in [
        (Pacing::RecordsPerSecond(50.0), 2, 6),
        (Pacing::Speed(20.0), 1, 3),
    ] {
        let t = TestJob::new();
        let source = FileSource::<Row>::new(path.to_str().unwrap_or_default())?
            .event_time(|r: &Row| r.ts)
            .pace(pacing);
        let out = t.collect(&t.job().source(source, WatermarkStrategy::none()));
        let mut run = t.start()?;
        run.step()?;
        assert_eq!(
            out.len(),
            at_once,
            "{pacing:?}: the first chunk goes at once"
        );
        run.advance_processing_time(Duration::from_millis(100))?;
        // 50/s: 1 + 100 ms × 50/s = 6 rows. 20× speed: 100 ms = 2 s of event time, 3 rows.
        assert_eq!(out.len(), after_100ms, "{pacing:?}");
        run.advance_processing_time(Duration::from_secs(60))?;
        assert_eq!(out.len(), 100, "{pacing:?}");
    }
    Ok(())
}
