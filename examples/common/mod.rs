//! What the examples share.

use tideline::{Job, Result};

/// `--web ADDR`: serves the job's web UI on `address` while it runs
/// (`web` feature; without it, an error saying to rebuild with it).
pub(crate) fn web_ui(job: Job, address: Option<&str>) -> Result<Job> {
    match address {
        None => Ok(job),
        Some(address) => serve(job, address),
    }
}

#[cfg(feature = "web")]
fn serve(job: Job, address: &str) -> Result<Job> {
    use tideline::web::JobWebUi;
    job.web_ui(address)
}

#[cfg(not(feature = "web"))]
fn serve(_job: Job, _address: &str) -> Result<Job> {
    Err(tideline::Error::config(
        "--web",
        "this build has no web UI: rebuild with --features web",
    ))
}
