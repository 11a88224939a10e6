//! Integration tests of whole jobs, one binary built from module directories.

mod engine;
mod windows;

/// The examples run as part of the suite, so CI runs them.
#[allow(dead_code)]
#[path = "../examples/quickstart.rs"]
mod quickstart;

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
