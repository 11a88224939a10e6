//! Replayable sources: a reader resumed at the offset an earlier reader
//! reported continues exactly after the last record that reader emitted.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tideline::connectors::file::{FileSource, ReplayOrder};
use tideline::prelude::*;
use tideline::{Data, ReaderContext, SourceOffset, SourceOutput, SourceReader, SourceStatus};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Row {
    key: i64,
    value: i64,
    ts: i64,
}

fn ctx() -> ReaderContext {
    ReaderContext {
        clock: Arc::new(SystemClock),
        partitions: 1,
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
    {
        use serde_arrow::schema::{SchemaLike, TracingOptions};
        let fields = Vec::<arrow_schema::FieldRef>::from_samples(&rows, TracingOptions::default())
            .map_err(Error::user)?;
        let file = std::fs::File::create(dir.path().join("c.parquet")).map_err(Error::user)?;
        let mut w = parquet::arrow::ArrowWriter::try_new(
            file,
            Arc::new(arrow_schema::Schema::new(fields.clone())),
            None,
        )
        .map_err(Error::user)?;
        for chunk in rows.chunks(40) {
            w.write(&serde_arrow::to_record_batch(&fields, &chunk).map_err(Error::user)?)
                .map_err(Error::user)?;
        }
        w.close().map_err(Error::user)?;
    }
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
