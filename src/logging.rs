//! Structured logs. The library logs through `tracing` (job start and end,
//! checkpoints completed and given up, restores, restarts, failures, the
//! web UI's address, partitions discovered); without a subscriber nothing
//! is printed, so library users choose. Programs that want the logs on
//! stderr call [`init`] once, as the examples do.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr at `info` (or what `RUST_LOG` says, e.g.
/// `RUST_LOG=tideline_engine=debug`). Does nothing if a subscriber is
/// installed already.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
