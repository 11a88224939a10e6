//! Replay throughput: a 5 M-row Parquet file `(key, value, ts)` through the
//! `window_file` job (tumbling 10 s count/sum/min/max per key) at parallelism
//! 1, end to end (decode included), in arrival order and in event-time order
//! (the file is unsorted: 1 row in 10 is up to a minute late).
//!
//! Then parallel reading: the same rows split into 2 files (alternate rows)
//! read with `--partition-per-file` at parallelism 2, against the one file
//! at parallelism 1, in arrival order; the ratio is printed (target ≥ 1.6).
//!
//! `cargo bench --bench replay` (`-- --quick` for 200 k rows).

#[allow(dead_code)]
#[path = "../examples/window_file.rs"]
mod window_file;

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use tideline::prelude::*;

/// Writes `rows` seeded rows, row `i` to file `i % paths.len()`.
fn write_input(paths: &[std::path::PathBuf], rows: usize) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("value", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
    ]));
    let mut writers = Vec::new();
    for path in paths {
        let file = std::fs::File::create(path).map_err(Error::user)?;
        writers.push(
            parquet::arrow::ArrowWriter::try_new(file, Arc::clone(&schema), None)
                .map_err(Error::user)?,
        );
    }
    let files = writers.len();
    let mut rng = SmallRng::seed_from_u64(5);
    let chunk = 1 << 16;
    let mut written = 0;
    while written < rows {
        let n = chunk.min(rows - written);
        let mut columns: Vec<[Vec<i64>; 3]> = (0..files).map(|_| Default::default()).collect();
        for i in written..written + n {
            let [keys, values, ts] = &mut columns[i % files];
            keys.push(rng.gen_range(0..10_000i64));
            values.push(rng.gen_range(0..1_000i64));
            let late = if rng.gen_ratio(1, 10) {
                rng.gen_range(0..60_000)
            } else {
                0
            };
            ts.push(i as i64 / 10 - late);
        }
        for (writer, [keys, values, ts]) in writers.iter_mut().zip(columns) {
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
        }
        written += n;
    }
    for writer in writers {
        writer.close().map_err(Error::user)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; without it (`cargo test`) runs are small.
    let quick = std::env::args().all(|a| a != "--bench")
        || std::env::args().any(|a| a == "--quick" || a == "--test");
    let rows = if quick { 200_000 } else { 5_000_000 };
    let dir = tempfile::tempdir().map_err(Error::user)?;
    write_input(&[dir.path().join("events.parquet")], rows)?;
    std::fs::create_dir_all(dir.path().join("split")).map_err(Error::user)?;
    write_input(
        &[
            dir.path().join("split/events-0.parquet"),
            dir.path().join("split/events-1.parquet"),
        ],
        rows,
    )?;
    let path = |name: &str| {
        dir.path()
            .join(name)
            .to_str()
            .unwrap_or_default()
            .to_string()
    };
    let mut rates = Vec::new();
    for (order, input, parallelism, split) in [
        ("arrival", "events.parquet", "1", false),
        ("event-time", "events.parquet", "1", false),
        ("arrival", "split", "2", true),
    ] {
        let (input, out, late) = (path(input), path("out.csv"), path("late.csv"));
        let mut args = vec![
            "--input",
            &input,
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
            parallelism,
            "--order",
            order,
            "--output",
            &out,
            "--late-output",
            &late,
        ];
        if split {
            args.push("--partition-per-file");
        }
        let (cpu_before, wall) = (cpu_seconds(), std::time::Instant::now());
        let summary = window_file::run(&args)?;
        let cores = (cpu_seconds() - cpu_before) / wall.elapsed().as_secs_f64();
        let label = if split { "2 files p=2" } else { "1 file p=1" };
        println!("replay {order:<10} {label} rows={rows} {summary} cores_busy={cores:.2}");
        if order == "arrival" {
            rates.push(records_per_s(&summary));
        }
    }
    if let [one, two] = rates[..] {
        println!(
            "parallel reading: 2 files at p=2 / 1 file at p=1 = {:.2}x",
            two / one
        );
    }
    Ok(())
}

/// CPU seconds (user + system) this process has used, from /proc (Linux;
/// 0 elsewhere): how many cores a run kept busy.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses: utime is the
    // 12th, stime the 13th, in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    fields.iter().sum::<f64>() / 100.0
}

/// The `records_per_s=` figure of a `window_file` summary line.
fn records_per_s(summary: &str) -> f64 {
    summary
        .split_whitespace()
        .find_map(|f| f.strip_prefix("records_per_s="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}
