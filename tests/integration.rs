//! Integration tests of whole jobs, one binary built from module directories.

mod engine;
mod windows;

/// The examples run as part of the suite, so CI runs them.
#[allow(dead_code)]
#[path = "../examples/quickstart.rs"]
mod quickstart;

mod checkpoint;
mod replay;

#[test]
fn example_quickstart_runs() -> tideline::Result<()> {
    quickstart::main()
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
        summary.starts_with("records=4 late=0 dead_letter=1 windows=3 "),
        "{summary}"
    );
    let written = std::fs::read_to_string(&out).map_err(tideline::Error::user)?;
    assert_eq!(
        written,
        "key,window_start,window_end,count,sum,min,max\n1,0,10000,2,13,3,10\n1,10000,20000,1,7,7,7\n2,0,10000,1,5,5,5\n"
    );
    assert_eq!(
        std::fs::read_to_string(&late).map_err(tideline::Error::user)?,
        "key,ts,value\n"
    );
    Ok(())
}
