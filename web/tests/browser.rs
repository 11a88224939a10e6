//! A real browser opens the live page of a running job: headless Chromium
//! (Debian's package; `scripts/setup.sh` installs it) driven over the
//! DevTools protocol. The page must update live, show every operator of
//! the graph, and its throughput must change; a screenshot is saved as a
//! test artifact.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cdp::{chromium, Browser};
use common::{running_job, wait_for};
use tideline_engine::{Error, Result};
use tideline_web::WebUiOptions;

const PATIENCE: Duration = Duration::from_secs(60);

fn cdp(e: String) -> Error {
    Error::Internal(format!("browser: {e}"))
}

#[test]
fn the_live_page_shows_the_graph_and_updates() -> Result<()> {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs Chromium (scripts/setup.sh installs Debian's chromium package)"
        );
        eprintln!("SKIPPED: no chromium on PATH (set TIDELINE_CHROMIUM or run scripts/setup.sh)");
        return Ok(());
    };
    let (job, _, _) = running_job(20_000.0)?;
    let metrics = job.metrics();
    let ui = WebUiOptions::new("127.0.0.1:0")
        .sample_interval(Duration::from_millis(250))
        .start(job.metrics())?;
    let handle = job.spawn()?;
    let mut browser = Browser::launch(&chromium, 1400, 1700).map_err(cdp)?;
    browser.navigate(&ui.url()).map_err(cdp)?;

    // Live updates arrive (the page counts its successful polls).
    wait_for("the page's first updates", PATIENCE, || {
        let updates = browser
            .eval("Number(document.body.dataset.updates || 0)")
            .ok()?;
        (updates.as_u64()? >= 2).then_some(())
    });
    assert_eq!(
        browser.eval("document.body.dataset.status").map_err(cdp)?,
        "running"
    );

    // The graph shows every operator of the job.
    let expected: BTreeSet<String> = metrics
        .graph()
        .operators
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(expected.len(), 7, "{expected:?}");
    let drawn = wait_for("the graph", PATIENCE, || {
        let names = browser
            .eval("Array.from(document.querySelectorAll('#graph [data-operator]')).map(g => g.dataset.operator)")
            .ok()?;
        let names: BTreeSet<String> = names
            .as_array()?
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect();
        (names.len() == expected.len()).then_some(names)
    });
    assert_eq!(drawn, expected);
    let count_rate = browser
        .eval(r#"document.querySelector('[data-operator="count"] [data-field="throughput"]').textContent"#)
        .map_err(cdp)?;
    assert!(
        count_rate.as_str().is_some_and(|t| !t.is_empty()),
        "{count_rate}"
    );

    // The throughput number changes while the job runs.
    let read = |b: &mut Browser| {
        b.eval("document.getElementById('throughput').textContent")
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
    };
    let first = wait_for("a throughput figure", PATIENCE, || {
        read(&mut browser).filter(|t| t.chars().any(|c| c.is_ascii_digit() && c != '0'))
    });
    let second = wait_for("the throughput figure to change", PATIENCE, || {
        read(&mut browser).filter(|t| *t != first)
    });
    assert_ne!(first, second);

    // Dead letters reach the page, their markup shown as text: no element
    // of the page came from a record's reason.
    wait_for("dead letters on the page", PATIENCE, || {
        let text = browser.eval("document.body.innerText").ok()?;
        text.as_str()?
            .contains("unparsable \"event\" <x-injected>for</x-injected> key")
            .then_some(())
    });
    let injected = browser
        .eval("document.querySelectorAll('x-injected').length")
        .map_err(cdp)?;
    assert_eq!(injected, 0, "markup from a dead letter became elements");

    let png = browser.screenshot().map_err(cdp)?;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-ui.png");
    std::fs::write(&artifact, &png).map_err(|e| Error::io("write", &artifact, e))?;
    eprintln!("screenshot of the live page: {}", artifact.display());

    common::drain(handle)?;
    wait_for("the page to show the end", PATIENCE, || {
        let status = browser.eval("document.body.dataset.status").ok()?;
        (status == "finished").then_some(())
    });
    Ok(())
}
