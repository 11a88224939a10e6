//! Replay throughput: a 5 M-row Parquet file `(key, value, ts)` through the
//! `window_file` job (tumbling 10 s count/sum/min/max per key) at parallelism
//! 1, end to end (decode included), in arrival order and in event-time order
//! (the file is unsorted: 1 row in 10 is up to a minute late).
//!
//! `cargo bench --bench replay` (`-- --quick` for 200 k rows).

#[allow(dead_code)]
#[path = "../examples/window_file.rs"]
mod window_file;

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use tideline::prelude::*;

fn write_input(path: &std::path::Path, rows: usize) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("value", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
    ]));
    let file = std::fs::File::create(path).map_err(Error::user)?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, Arc::clone(&schema), None)
        .map_err(Error::user)?;
    let mut rng = SmallRng::seed_from_u64(5);
    let chunk = 1 << 16;
    let mut written = 0;
    while written < rows {
        let n = chunk.min(rows - written);
        let (mut keys, mut values, mut ts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for i in written..written + n {
            keys.push(rng.gen_range(0..10_000i64));
            values.push(rng.gen_range(0..1_000i64));
            let late = if rng.gen_ratio(1, 10) {
                rng.gen_range(0..60_000)
            } else {
                0
            };
            ts.push(i as i64 / 10 - late);
        }
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(keys)),
                Arc::new(Int64Array::from(values)),
                Arc::new(Int64Array::from(ts)),
            ],
        )
        .map_err(Error::user)?;
        writer.write(&batch).map_err(Error::user)?;
        written += n;
    }
    writer.close().map_err(Error::user)?;
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; without it (`cargo test`) runs are small.
    let quick = std::env::args().all(|a| a != "--bench")
        || std::env::args().any(|a| a == "--quick" || a == "--test");
    let rows = if quick { 200_000 } else { 5_000_000 };
    let dir = tempfile::tempdir().map_err(Error::user)?;
    let input = dir.path().join("events.parquet");
    write_input(&input, rows)?;
    let path = |name: &str| {
        dir.path()
            .join(name)
            .to_str()
            .unwrap_or_default()
            .to_string()
    };
    for order in ["arrival", "event-time"] {
        let args = [
            "--input",
            &path("events.parquet"),
            "--key-column",
            "key",
            "--value-column",
            "value",
            "--time-column",
            "ts",
            "--window",
            "tumbling:10s",
            "--out-of-orderness",
            "2s",
            "--parallelism",
            "1",
            "--order",
            order,
            "--output",
            &path("out.csv"),
            "--late-output",
            &path("late.csv"),
        ];
        let summary = window_file::run(&args)?;
        println!("replay {order:<10} rows={rows} {summary}");
    }
    Ok(())
}
