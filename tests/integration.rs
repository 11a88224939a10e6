//! Integration tests of whole jobs, one binary built from module directories.

// The examples included below each bring their copy of examples/common.
#![allow(clippy::duplicate_mod)]

mod engine;
mod windows;

/// The error's text; an `Ok` gives an empty text, which no assertion accepts.
pub(crate) fn error_text<T>(result: tideline::Result<T>) -> String {
    result.err().map(|e| e.to_string()).unwrap_or_default()
}

/// The examples run as part of the suite, so CI runs them.
#[allow(dead_code)]
#[path = "../examples/quickstart.rs"]
mod quickstart;

mod changelog;
mod checkpoint;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "postgres")]
mod postgres;
mod replay;

#[test]
fn example_quickstart_runs() -> tideline::Result<()> {
    quickstart::main()
}

#[allow(dead_code)]
#[path = "../examples/process_function.rs"]
mod process_function;

#[test]
fn example_process_function_runs() -> tideline::Result<()> {
    process_function::main()
}

#[allow(dead_code)]
#[path = "../examples/windowed_counts.rs"]
mod windowed_counts;

#[test]
fn example_windowed_counts_runs() -> tideline::Result<()> {
    windowed_counts::main()
}

#[allow(dead_code)]
#[path = "../examples/window_file.rs"]
mod window_file;

#[test]
fn example_window_file_runs() -> tideline::Result<()> {
    let dir = tempfile::tempdir().map_err(tideline::Error::user)?;
    let input = dir.path().join("in.csv");
    std::fs::write(
        &input,
        "user,amount,t\n1,10,1000\n2,5,2000\n1,7,12000\nbad,row,here\n1,3,500\n",
    )
    .map_err(tideline::Error::user)?;
    let (out, late) = (dir.path().join("out.csv"), dir.path().join("late.csv"));
    let p = |p: &std::path::Path| p.to_str().unwrap_or_default().to_string();
    let args = [
        "--input",
        &p(&input),
        "--key-column",
        "user",
        "--value-column",
        "amount",
        "--time-column",
        "t",
        "--window",
        "tumbling:10s",
        "--out-of-orderness",
        "0s",
        "--parallelism",
        "2",
        "--output",
        &p(&out),
        "--late-output",
        &p(&late),
    ];
    let summary = window_file::run(&args)?;
    assert!(
        summary.starts_with("records=4 late=1 dead_letter=1 windows=3 "),
        "{summary}"
    );
    let written = std::fs::read_to_string(&out).map_err(tideline::Error::user)?;
    assert_eq!(
        written,
        "key,window_start,window_end,count,sum,min,max\n1,0,10000,1,10,10,10\n1,10000,20000,1,7,7,7\n2,0,10000,1,5,5,5\n"
    );
    // 500 comes after 12000 in the file, whose watermark is then 11999:
    // late for [0, 10000), by the rule, whatever the batch size.
    assert_eq!(
        std::fs::read_to_string(&late).map_err(tideline::Error::user)?,
        "key,ts,value\n1,500,3\n"
    );
    Ok(())
}

#[allow(dead_code)]
#[path = "../examples/nexmark.rs"]
mod nexmark;

/// The driver's last line, for a small run of `args`.
fn nexmark_line(args: &[&str]) -> tideline::Result<String> {
    use clap::Parser;
    let args =
        nexmark::Args::try_parse_from(std::iter::once("nexmark").chain(args.iter().copied()))
            .map_err(|e| tideline::Error::user(e.to_string()))?;
    nexmark::run(&args)
}

#[test]
fn example_nexmark_prints_the_summary_line() -> tideline::Result<()> {
    let line = nexmark_line(&["--query", "q5", "--events", "20000", "--parallelism", "2"])?;
    assert!(line.starts_with("query=q5 events=20000 seconds="), "{line}");
    for field in ["events_per_s=", "peak_rss_mb="] {
        assert!(line.contains(field), "{line}");
    }
    assert!(!line.contains("latency"), "{line}");
    Ok(())
}

#[cfg(feature = "rocksdb")]
#[test]
fn example_nexmark_checkpoints_on_rocksdb_and_reports_latency_when_paced() -> tideline::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| tideline::Error::user(e.to_string()))?;
    let work = dir.path().to_string_lossy().to_string();
    let line = nexmark_line(&[
        "--query",
        "q0",
        "--events",
        "4000",
        "--state",
        "rocksdb",
        "--checkpoint-interval",
        "50ms",
        "--rate",
        "40000",
        "--live",
        "--work-dir",
        &work,
    ])?;
    assert!(line.starts_with("query=q0 events=4000 "), "{line}");
    assert!(
        line.contains(" latency_p50_ms=") && line.contains(" latency_p99_ms="),
        "{line}"
    );
    assert!(
        !line.contains("NaN"),
        "every bid is a result with a latency: {line}"
    );
    Ok(())
}

#[cfg(not(feature = "rocksdb"))]
#[test]
fn example_nexmark_names_the_missing_rocksdb_feature() {
    let err = nexmark_line(&["--query", "q0", "--events", "100", "--state", "rocksdb"])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("built without the `rocksdb` feature; rebuild with --features rocksdb"),
        "{err}"
    );
}

#[test]
fn example_nexmark_refuses_an_unknown_query() {
    let err = nexmark_line(&["--query", "q4"])
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("unknown query 'q4'")),
        "{err:?}"
    );
}
