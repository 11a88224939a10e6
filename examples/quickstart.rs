//! Tideline in one run: a live, paced click stream with real disorder, late
//! clicks and malformed events goes through keyed tumbling windows, with
//! checkpoints, while the same job archives the raw stream to Parquet. Then
//! the *same pipeline function* replays the archive at another parallelism,
//! and the program checks that windows and late clicks are identical to the
//! live run and that every event is accounted for.
//!
//! Run: `cargo run --release --example quickstart`. Ctrl-C during the live
//! run stops it with a savepoint (no window fires early; the path is
//! printed); a second Ctrl-C aborts. With `-- --web 127.0.0.1:8081` (and
//! `--features web`) the live run serves its web UI there.

// `main` is public so the integration tests can run this example too.
#![allow(unreachable_pub)]

use std::path::PathBuf;
use std::time::Duration;

#[path = "common/mod.rs"]
mod common;

use serde::{Deserialize, Serialize};
use tideline::connectors::file::{ArchivingSource, FileSource};
use tideline::prelude::*;

/// A click as it arrives: its user field is text and may be malformed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct RawClick {
    ts: i64,
    user: String,
}

/// A click after parsing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Click {
    user: u32,
    ts: i64,
}

const EVENTS: u64 = 12_000;
const PARTITIONS: usize = 4;

/// Clicks ~2 ms apart in event time with up to 300 ms of jitter; one in 40
/// is held up 1.5 s (beyond the 500 ms bound: late), one in 500 is garbage.
fn click(i: u64, rng: &mut SmallRng) -> RawClick {
    let late = rng.gen_ratio(1, 40);
    let delay = if late { 1_500 } else { rng.gen_range(0..300) };
    let user = match rng.gen_ratio(1, 500) {
        true => "#corrupt#".to_string(),
        false => format!("u{}", rng.gen_range(0..6)),
    };
    let ts = 1_700_000_000_000 + i as i64 * 2 - delay;
    RawClick { ts, user }
}

/// Every source gets this strategy: each partition's watermark trails its
/// largest timestamp by 500 ms.
fn strategy() -> WatermarkStrategy<RawClick> {
    WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(500))
        .with_timestamps(|c: &RawClick| c.ts)
}

/// The job's logic, written once, for the live stream and for its replay:
/// parse (malformed clicks become dead letters), count per user in 1 s
/// tumbling windows, late clicks to their own output.
fn pipeline(raw: &Stream<RawClick>, late: &OutputTag<Click>) -> Stream<WindowResult<u32, u64>> {
    raw.try_map(|c: &RawClick| {
        let user = c.user.strip_prefix('u').and_then(|u| u.parse().ok());
        user.map(|user| Click { user, ts: c.ts })
            .ok_or(format!("bad user field {:?}", c.user))
    })
    .key_by(|c: &Click| c.user)
    .window(Tumbling::of(Duration::from_secs(1)))
    .side_output_late_data(late)
    .aggregate(Count)
}

/// What one run produced: `(user, window start, count)` rows, late clicks, dead letters.
type Outcome = (Vec<(u32, i64, u64)>, Vec<Click>, u64);

/// Runs `pipeline` over `raw`'s job and collects the outcome; `Err(path)`
/// inside when the job was stopped with a savepoint there.
fn run(job: Job, raw: Stream<RawClick>) -> Result<std::result::Result<Outcome, PathBuf>> {
    let late_tag = OutputTag::new("late-clicks");
    let counts = pipeline(&raw, &late_tag);
    let (windows, late) = (CollectSink::new(), CollectSink::new());
    counts.sink(windows.clone());
    counts.side_output(&late_tag).sink(late.clone());
    let summary = job.run()?;
    if let Some(savepoint) = summary.savepoint {
        return Ok(Err(savepoint));
    }
    let mut windows: Vec<_> = windows
        .values()
        .into_iter()
        .map(|r| (r.key, r.window.start, r.value))
        .collect();
    let mut late = late.values();
    windows.sort();
    late.sort();
    Ok(Ok((windows, late, summary.dead_letters)))
}

/// Runs live, replays the archive, and checks they agree.
pub fn main() -> Result<()> {
    tideline::logging::init();
    let args: Vec<String> = std::env::args().collect();
    let web = args
        .iter()
        .position(|a| a == "--web")
        .and_then(|i| args.get(i + 1));
    let work = tempfile::tempdir().map_err(Error::user)?;
    let archive = work.path().join("archive");

    // 1. Live: 4 partitions paced at 4,000 clicks/s (3 s), checkpointed every
    //    500 ms, the raw stream archived per partition as it is read.
    let live_job = Job::new()
        .parallelism(2)
        .checkpointing(Duration::from_millis(500), work.path().join("checkpoints"));
    let live_job = common::web_ui(live_job, web.map(String::as_str))?;
    let source = GeneratorSource::new(click)
        .with_count(EVENTS)
        .with_partitions(PARTITIONS)
        .with_seed(7)
        .with_rate(4_000.0);
    let raw = live_job.source(ArchivingSource::new(source, &archive), strategy());
    println!("live: {EVENTS} clicks in {PARTITIONS} partitions at 4,000/s ...");
    let savepoints = std::env::temp_dir().join("tideline-quickstart-savepoints");
    let signals = tideline::signals::stop_on_signals(live_job.stop_handle(), Some(savepoints))?;
    let (windows, late, dead_letters) = match run(live_job, raw)? {
        Ok(outcome) => outcome,
        Err(savepoint) => {
            println!(
                "stopped with a savepoint at {}: the open windows are in it, none fired early \
                 (RestoreFrom::Path resumes it; see window_file --resume-from)",
                savepoint.display()
            );
            return Ok(());
        }
    };
    drop(signals);

    // 2. Replay: the archive, each partition folder a source partition, at parallelism 3.
    let replay_job = Job::new().parallelism(3).mode(ExecutionMode::Bounded);
    let files = FileSource::<RawClick>::new(&archive.to_string_lossy())?.partition_per_folder();
    let raw = replay_job.source(files, strategy());
    println!("replay: the Parquet archive at parallelism 3 ...");
    let replay = run(replay_job, raw)?.map_err(|_| {
        Error::Internal("a replay without signal handling stopped with a savepoint".into())
    })?;

    println!("\n  user  window start (ms)  clicks");
    for (user, start, count) in windows.iter().filter(|w| w.0 == 0).take(5) {
        println!("  u{user:<4} {start:>17}  {count:>6}");
    }
    let counted: u64 = windows.iter().map(|w| w.2).sum();
    let (n_windows, n_late) = (windows.len(), late.len());
    println!("\n  live: {n_windows} windows, {counted} counted, {n_late} late, {dead_letters} dead letters\n");
    let has_late = n_late > 0 && dead_letters > 0;
    let conserved = counted + n_late as u64 + dead_letters == EVENTS;
    let checks = [
        ("the live run has late clicks and dead letters", has_late),
        ("windows + late + dead letters = every click", conserved),
        ("replay identical: every window", replay.0 == windows),
        ("replay identical: every late click", replay.1 == late),
        ("replay identical: dead letters", replay.2 == dead_letters),
    ];
    for (what, ok) in &checks {
        println!("  [{}] {what}", if *ok { "ok" } else { "FAILED" });
    }
    match checks.iter().find(|(_, ok)| !ok) {
        Some((what, _)) => Err(Error::user(format!("check failed: {what}"))),
        None => Ok(()),
    }
}
