//! The crash test: the `window_file` example runs in a child process with
//! checkpoints every 200 ms and is killed with SIGKILL at seeded random
//! moments, then restarted with the same arguments each time; its final
//! output files must equal, byte for byte, those of a run that was never
//! interrupted — late records included.
//!
//! The child is this test binary itself, running the ignored test
//! `child_process` with its arguments in an environment variable.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tideline::prelude::*;

use super::tempdir;
use crate::window_file;

const ARGS_VAR: &str = "TIDELINE_CRASH_CHILD_ARGS";
/// Set: the child stops with a savepoint on SIGINT/SIGTERM, as `main` does.
const SIGNALS_VAR: &str = "TIDELINE_CRASH_CHILD_SIGNALS";
const SEP: char = '\u{1f}';

/// Runs `window_file` with the arguments in [`ARGS_VAR`]; does nothing
/// without it (so `cargo test -- --ignored` passes).
#[test]
#[ignore = "the child process of the crash test"]
fn child_process() -> Result<()> {
    let Ok(args) = std::env::var(ARGS_VAR) else {
        return Ok(());
    };
    let args: Vec<&str> = args.split(SEP).collect();
    let on_signals = if std::env::var_os(SIGNALS_VAR).is_some() {
        window_file::OnSignals::StopWithSavepoint
    } else {
        window_file::OnSignals::Default
    };
    let line = window_file::run_with(&args, on_signals)?;
    println!("{line}");
    Ok(())
}

/// 24,000 rows over 16 keys, event time advancing 5 ms a row with up to
/// 2.5 s of disorder (with a 100 ms bound and 100 ms of allowed lateness
/// on 1 s windows, some rows are late and some windows fire again).
fn write_input(path: &Path) -> Result<()> {
    let mut rng = SmallRng::seed_from_u64(42);
    let mut text = String::from("key,value,ts\n");
    for i in 0..24_000i64 {
        let key = rng.gen_range(0..16);
        let value = rng.gen_range(-50..500);
        let ts = i * 5 + rng.gen_range(0..2_500);
        text.push_str(&format!("{key},{value},{ts}\n"));
    }
    std::fs::write(path, text).map_err(Error::user)
}

fn args(dir: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let p = |f: &str| dir.join(f).display().to_string();
    let mut args: Vec<String> = [
        "--input",
        &p("in.csv"),
        "--key-column",
        "key",
        "--value-column",
        "value",
        "--time-column",
        "ts",
        "--window",
        "tumbling:1s",
        "--out-of-orderness",
        "100ms",
        "--allowed-lateness",
        "100ms",
        "--parallelism",
        "2",
        "--output",
        &p(&format!("{name}-out.csv")),
        "--late-output",
        &p(&format!("{name}-late.csv")),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn child(args: &[String]) -> Result<std::process::Child> {
    child_with(args, false)
}

fn child_with(args: &[String], signals: bool) -> Result<std::process::Child> {
    let exe = std::env::current_exe().map_err(Error::user)?;
    let mut command = Command::new(exe);
    if signals {
        command.env(SIGNALS_VAR, "1");
    }
    command
        .args([
            "--exact",
            "checkpoint::crash::child_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ARGS_VAR, args.join(&SEP.to_string()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::user)
}

/// The newest complete checkpoint in `dir` (0 if none): retention keeps
/// only a few, so progress shows in the id, not the count.
fn complete_checkpoints(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.path().join("_metadata").exists())
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
            .max()
            .unwrap_or(0)
    })
}

/// Kills the child `after` its run has completed a new checkpoint (so
/// every restart makes progress, however slow the machine), unless it
/// ended first; `true` if killed.
fn kill_after(mut child: std::process::Child, checkpoints: &Path, after: Duration) -> Result<bool> {
    let before = complete_checkpoints(checkpoints);
    let mut deadline = None;
    while deadline.is_none_or(|d| Instant::now() < d) {
        if child.try_wait().map_err(Error::user)?.is_some() {
            return Ok(false);
        }
        if deadline.is_none() && complete_checkpoints(checkpoints) > before {
            deadline = Some(Instant::now() + after);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL: no destructor, no flush, no cleanup runs.
    child.kill().map_err(Error::user)?;
    child.wait().map_err(Error::user)?;
    Ok(true)
}

fn crash_and_recover(state: &str) -> Result<()> {
    let dir = tempdir()?;
    write_input(&dir.path().join("in.csv"))?;
    let reference = window_file::run(
        &args(dir.path(), "reference", &["--rate", "8000"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )?;
    // Some records are late, so the late output is compared too.
    assert!(!reference.contains(" late=0 "), "{reference}");

    let checkpointed = args(
        dir.path(),
        "crashed",
        &[
            "--state",
            state,
            "--checkpoint-dir",
            &dir.path().join("chk").display().to_string(),
            "--checkpoint-interval",
            "200ms",
            "--rate",
            "8000",
        ],
    );
    // 24,000 rows at 8,000/s: about 3 s uninterrupted. Kill at seeded
    // moments after a new checkpoint completed (mid-way through the next
    // one, or in between); each restart resumes from the latest checkpoint.
    let mut rng = SmallRng::seed_from_u64(7);
    let mut kills = 0;
    let started = Instant::now();
    while kills < 5 {
        let after = Duration::from_millis(rng.gen_range(0..400));
        if kill_after(child(&checkpointed)?, &dir.path().join("chk"), after)? {
            kills += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "crash test took too long"
        );
    }
    let output = child(&checkpointed)?
        .wait_with_output()
        .map_err(Error::user)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "final run failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The test harness prints its own text before ours on the same line.
    let summary = stdout
        .lines()
        .find_map(|l| l.find("records=").map(|at| &l[at..]))
        .ok_or_else(|| Error::user(format!("no summary line in {stdout}")))?;
    assert!(!summary.contains("restored_from=none"), "{summary}");
    assert!(summary.contains("checkpoints="), "{summary}");

    for kind in ["out", "late"] {
        let read = |name: &str| {
            std::fs::read(dir.path().join(format!("{name}-{kind}.csv"))).map_err(Error::user)
        };
        let (expected, actual) = (read("reference")?, read("crashed")?);
        assert!(expected.len() > 40, "{kind}: reference output is empty");
        assert!(
            expected == actual,
            "{kind} differs after {kills} crashes:\n--- uninterrupted ({} bytes)\n+++ recovered ({} bytes)",
            expected.len(),
            actual.len()
        );
    }
    Ok(())
}

#[test]
fn sigkilled_run_with_memory_state_recovers_byte_for_byte() -> Result<()> {
    crash_and_recover("memory")
}

#[cfg(feature = "rocksdb")]
#[test]
fn sigkilled_run_with_rocksdb_state_recovers_byte_for_byte() -> Result<()> {
    crash_and_recover("rocksdb")
}

/// The summary line a child printed.
fn summary_line(output: &std::process::Output) -> Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "run failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.find("records=").map(|at| l[at..].to_string()))
        .ok_or_else(|| Error::user(format!("no summary line in {stdout}")))
}

/// `args` without allowed lateness: every window then fires exactly once,
/// so the output is a function of the input alone (with allowed lateness,
/// how many intermediate updates fire depends on batch boundaries).
fn exact_args(dir: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let mut args = args(dir, name, extra);
    if let Some(at) = args.iter().position(|a| a == "--allowed-lateness") {
        args[at + 1] = "0s".into();
    }
    args
}

/// SIGTERM stops `window_file` with a savepoint, twice; resuming from each
/// (`--resume-from`) ends with byte for byte the files of a run that was
/// never stopped, late records included.
#[test]
fn sigterm_stops_with_a_savepoint_and_the_resumed_run_is_byte_identical() -> Result<()> {
    let dir = tempdir()?;
    write_input(&dir.path().join("in.csv"))?;
    let reference = window_file::run(
        &exact_args(dir.path(), "reference", &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )?;
    assert!(!reference.contains(" late=0 "), "{reference}");
    let chk = dir.path().join("chk");
    let base = |resume: Option<&str>| {
        let mut extra = vec![
            "--checkpoint-dir".to_string(),
            chk.display().to_string(),
            "--checkpoint-interval".into(),
            "200ms".into(),
            "--rate".into(),
            "8000".into(),
        ];
        if let Some(path) = resume {
            extra.extend(["--resume-from".to_string(), path.to_string()]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        exact_args(dir.path(), "stopped", &extra)
    };
    let mut resume: Option<String> = None;
    for _ in 0..2 {
        let child = child_with(&base(resume.as_deref()), true)?;
        // Stop once a new checkpoint completed: mid-run, with open windows.
        let before = complete_checkpoints(&chk);
        let started = Instant::now();
        while complete_checkpoints(&chk) == before {
            assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint");
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid = child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(Error::user)?;
        assert!(sent.success());
        let line = summary_line(&child.wait_with_output().map_err(Error::user)?)?;
        let path = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("savepoint="))
            .ok_or_else(|| Error::user(format!("not stopped with a savepoint: {line}")))?;
        assert!(path.contains("chk-savepoint"), "{path}");
        resume = Some(path.to_string());
    }
    let last = child_with(&base(resume.as_deref()), true)?;
    let line = summary_line(&last.wait_with_output().map_err(Error::user)?)?;
    assert!(!line.contains("restored_from=none"), "{line}");
    for kind in ["out", "late"] {
        let read = |name: &str| {
            std::fs::read(dir.path().join(format!("{name}-{kind}.csv"))).map_err(Error::user)
        };
        assert!(
            read("reference")? == read("stopped")?,
            "{kind} differs after two stops with a savepoint"
        );
    }
    Ok(())
}
