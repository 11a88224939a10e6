//! Replayable sources: a reader resumed at the offset an earlier reader
//! reported continues exactly after the last record that reader emitted.

use std::sync::Arc;

use tideline::connectors::file::{FileSource, ReplayOrder};
use tideline::prelude::*;

use super::{with_null_timestamps, Row};
use tideline::{Data, ReaderContext, SourceOffset, SourceOutput, SourceReader, SourceStatus};

fn ctx() -> ReaderContext {
    ReaderContext {
        clock: Arc::new(SystemClock),
        partitions: 1,
        subtask: tideline::SubtaskInfo {
            subtask: 0,
            parallelism: 1,
            isolated: false,
        },
    }
}

/// Reads up to `stop_after` records (all if `None`) in polls of 7.
fn drain<T>(reader: &mut dyn SourceReader<T>, stop_after: Option<usize>) -> Result<Vec<T>> {
    let mut got = Vec::new();
    loop {
        let room = stop_after.map_or(7, |n| (n - got.len()).min(7));
        if room == 0 {
            return Ok(got);
        }
        let mut out = SourceOutput::new(room);
        let status = reader.poll(&mut out)?;
        got.extend(out.take_records().into_iter().map(|r| r.value));
        if status == SourceStatus::Finished {
            return Ok(got);
        }
    }
}

/// Every cut point gives the same records as one uninterrupted read.
fn check_resume<T: Data + PartialEq + std::fmt::Debug, S: Source<T>>(
    make: impl Fn() -> Result<S>,
    cuts: &[usize],
) -> Result<()> {
    let all = drain(make()?.create_reader(0, &ctx())?.as_mut(), None)?;
    assert!(all.len() > *cuts.iter().max().unwrap_or(&0));
    for &cut in cuts {
        let mut first = make()?.create_reader(0, &ctx())?;
        let head = drain(first.as_mut(), Some(cut))?;
        let offset: SourceOffset = first
            .offset()
            .ok_or_else(|| Error::Internal("no offset".into()))?;
        let tail = drain(make()?.create_reader_at(0, &ctx(), &offset)?.as_mut(), None)?;
        let joined: Vec<T> = head.into_iter().chain(tail).collect();
        assert_eq!(joined, all, "cut at {cut} ({offset:?})");
    }
    Ok(())
}

#[test]
fn file_sources_resume_at_their_offsets() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let rows: Vec<Row> = (0..300)
        .map(|i| Row {
            key: i % 5,
            value: i,
            ts: (i * 37) % 1_000,
        })
        .collect();
    // CSV with bad rows (they count as consumed input), JSON lines, Parquet in
    // small batches (a skip lands inside one).
    let mut csv = String::from("key,value,ts\n");
    for r in &rows {
        csv.push_str(&format!("{},{},{}\n", r.key, r.value, r.ts));
        if r.value % 50 == 3 {
            csv.push_str("x,y,z\n");
        }
    }
    std::fs::write(dir.path().join("a.csv"), csv).map_err(Error::user)?;
    std::fs::write(
        dir.path().join("b.jsonl"),
        rows.iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default() + "\n\n")
            .collect::<String>(),
    )
    .map_err(Error::user)?;
    super::write_parquet_groups(&dir.path().join("c.parquet"), &rows, 40)?;
    let pattern = dir.path().to_str().unwrap_or_default().to_string();
    // Arrival order across the three files (cuts inside each file and at boundaries).
    check_resume(
        || FileSource::<Row>::new(&pattern),
        &[0, 1, 55, 299, 300, 301, 450, 600, 733, 899],
    )?;
    // Event-time order (offset = records emitted), with and without spilling.
    for budget in [10_000, 128] {
        check_resume(
            || {
                Ok(FileSource::<Row>::new(&pattern)?
                    .event_time(|r: &Row| r.ts)
                    .order(ReplayOrder::EventTime)
                    .sort_memory_rows(budget))
            },
            &[0, 13, 400, 899],
        )?;
    }
    Ok(())
}

#[test]
fn generator_resumes_its_seeded_sequence() -> Result<()> {
    let make = || {
        Ok(
            GeneratorSource::new(|i: u64, rng: &mut SmallRng| (i, rng.gen_range(0..1_000u32)))
                .with_count(200)
                .with_seed(4),
        )
    };
    check_resume(make, &[0, 1, 7, 99, 199])
}

/// Reads everything; returns records and dead-letter locations.
fn drain_both<T>(
    reader: &mut dyn SourceReader<T>,
    stop_after: Option<usize>,
) -> Result<(Vec<T>, Vec<String>)> {
    let (mut got, mut dead) = (Vec::new(), Vec::new());
    loop {
        let room = stop_after.map_or(5, |n| (n - got.len()).min(5));
        if room == 0 {
            return Ok((got, dead));
        }
        let mut out = SourceOutput::new(room);
        let status = reader.poll(&mut out)?;
        got.extend(out.take_records().into_iter().map(|r| r.value));
        dead.extend(out.take_rejected().into_iter().map(|r| r.record));
        if status == SourceStatus::Finished {
            return Ok((got, dead));
        }
    }
}

/// Review finding: with bad rows inside a Parquet batch, resuming lost a
/// record and repeated a dead letter; in event-time order it repeated every
/// dead letter.
#[test]
fn resuming_past_bad_rows_neither_loses_nor_repeats() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let path = dir.path().join("m.parquet");
    let data = with_null_timestamps(60, 7, 3);
    super::write_parquet(&path, &data)?;
    let p = path.to_str().unwrap_or_default().to_string();
    for event_time in [false, true] {
        let make = || -> Result<FileSource<Row>> {
            let s = FileSource::<Row>::new(&p)?;
            Ok(if event_time {
                s.event_time(|r: &Row| r.ts).order(ReplayOrder::EventTime)
            } else {
                s
            })
        };
        let (all, all_dead) = drain_both(make()?.create_reader(0, &ctx())?.as_mut(), None)?;
        assert_eq!(all.len() + all_dead.len(), 60);
        for cut in [1, 2, 3, 10, 30, 50] {
            let mut first = make()?.create_reader(0, &ctx())?;
            let (head, head_dead) = drain_both(first.as_mut(), Some(cut))?;
            let offset = first
                .offset()
                .ok_or_else(|| Error::Internal("no offset".into()))?;
            let (tail, tail_dead) =
                drain_both(make()?.create_reader_at(0, &ctx(), &offset)?.as_mut(), None)?;
            let records: Vec<Row> = head.into_iter().chain(tail).collect();
            let dead: Vec<String> = head_dead.into_iter().chain(tail_dead).collect();
            assert_eq!(records, all, "event_time={event_time} cut={cut}");
            assert_eq!(dead, all_dead, "event_time={event_time} cut={cut}");
        }
    }
    Ok(())
}

/// Review finding: a sink made per subtask by a factory (no clone) never
/// closed its file, leaving Parquet without a footer.
#[test]
fn a_sink_made_by_a_factory_closes_its_file() -> Result<()> {
    use tideline::connectors::file::ParquetSink;
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let path = dir.path().join("f.parquet");
    let rows: Vec<Row> = (0..10)
        .map(|i| Row {
            key: i,
            value: i,
            ts: i,
        })
        .collect();
    let job = Job::new().mode(ExecutionMode::Bounded);
    let target = path.clone();
    job.source(VecSource::new(rows.clone()), WatermarkStrategy::none())
        .sink_with("parquet", move |_| ParquetSink::new(&target));
    job.run()?;
    let job = Job::new().mode(ExecutionMode::Bounded);
    let back = CollectSink::new();
    job.source(
        FileSource::<Row>::new(path.to_str().unwrap_or_default())?,
        WatermarkStrategy::none(),
    )
    .sink(back.clone());
    job.run()?;
    assert_eq!(back.values(), rows);
    Ok(())
}

/// Review findings: an unmapped column named like a mapped field, and a
/// partition folder naming a column the file has, made every row a dead
/// letter; an empty time range silently read nothing.
#[test]
fn column_name_clashes_and_empty_ranges() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let folder = dir.path().join("key=9");
    std::fs::create_dir_all(&folder).map_err(Error::user)?;
    let path = folder.join("c.csv");
    std::fs::write(
        &path,
        "key,user,amount,value,ts\n1,x,10,999,100\n2,y,20,999,200\n",
    )
    .map_err(Error::user)?;
    // `key` comes from the file, not from the `key=9` folder.
    let read = |source: FileSource<Row>| -> Result<Vec<Row>> {
        let job = Job::new().mode(ExecutionMode::Bounded);
        let out = CollectSink::new();
        job.source(source, WatermarkStrategy::none())
            .sink(out.clone());
        job.run()?;
        Ok(out.values())
    };
    let row = |key, value, ts| Row { key, value, ts };
    let p = path.to_str().unwrap_or_default();
    assert_eq!(
        read(FileSource::new(p)?)?,
        vec![row(1, 999, 100), row(2, 999, 200)]
    );
    // `value` filled from `amount`, while a column named `value` also exists.
    assert_eq!(
        read(FileSource::new(p)?.column("value", "amount"))?,
        vec![row(1, 10, 100), row(2, 20, 200)]
    );
    // An empty range is a configuration error.
    let job = Job::new().mode(ExecutionMode::Bounded);
    job.source(
        FileSource::<Row>::new(path.to_str().unwrap_or_default())?
            .event_time(|r: &Row| r.ts)
            .time_range("ts", 5, 5),
        WatermarkStrategy::none(),
    )
    .sink(CollectSink::new());
    let e = job.run().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("file_source.time_range"), "{e}");
    Ok(())
}
