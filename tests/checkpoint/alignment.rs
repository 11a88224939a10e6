//! Barrier alignment under skew: a fast input whose barrier arrived is not
//! read until the stalled one delivers its barrier, so the fast source's
//! sends block (bounded memory, no held-back queue), and the checkpoint
//! holds exactly the records before the barrier; with an alignment timeout
//! the checkpoint is given up instead and the next one completes.
//!
//! These run threaded (bounded channels are what make a sender block) on a
//! manual clock: the test decides when checkpoints are due and how long
//! alignment took. The stalled input is a source blocked in user code on a
//! gate the test opens, so it cannot emit its barrier until then.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tideline::engine::checkpoint::CheckpointStorage;
use tideline::prelude::*;
use tideline::{JobHandle, RestoreFrom};

use super::tempdir;

const BATCH: usize = 8;
const CAPACITY: usize = 2;
const SLOW: u64 = 100;
/// Records generated but not yet processed at most: the batch being
/// generated, the exchange buffer, the channel, and the batch a blocked send holds.
const BOUND: u64 = ((CAPACITY + 3) * BATCH) as u64;

/// What the test observes of a running job.
#[derive(Default)]
struct Counters {
    /// Records the fast source generated.
    produced: AtomicU64,
    /// Fast records the union's task processed.
    processed: AtomicU64,
    /// Slow records the union's task processed.
    processed_slow: AtomicU64,
    /// The slow source is waiting at its gate.
    stalled: AtomicBool,
}

/// A fast generator (`fast` records, unbounded with `None`) and a slow one
/// whose first record waits for `gate`, unioned and counted.
fn skewed_job(job: &Job, fast: Option<u64>, gate: Option<Receiver<()>>, c: &Arc<Counters>) {
    let produced = Arc::clone(c);
    let generator = GeneratorSource::new(move |i: u64, _: &mut SmallRng| {
        produced.produced.fetch_add(1, Ordering::SeqCst);
        (0u8, i)
    });
    let generator = match fast {
        Some(n) => generator.with_count(n),
        None => generator,
    };
    let fast = job
        .source(generator, WatermarkStrategy::none())
        .named("fast");
    let slow = job
        .source(
            GeneratorSource::new(|i: u64, _: &mut SmallRng| (1u8, i)).with_count(SLOW),
            WatermarkStrategy::none(),
        )
        .named("slow");
    let stalled = Arc::clone(c);
    let slow = slow.map(move |v: (u8, u64)| {
        if let (Some(gate), 0) = (&gate, v.1) {
            stalled.stalled.store(true, Ordering::SeqCst);
            // Closed (the test dropped it) also opens the gate.
            let _ = gate.recv();
        }
        v
    });
    let processed = Arc::clone(c);
    fast.union(&slow)
        .map(move |v: (u8, u64)| {
            let counter = if v.0 == 0 {
                &processed.processed
            } else {
                &processed.processed_slow
            };
            counter.fetch_add(1, Ordering::SeqCst);
            v
        })
        .filter(|_| false)
        .sink(CollectSink::new());
}

fn checkpointed_job(dir: &Path, clock: &Arc<ManualClock>) -> Job {
    Job::new()
        .clock(Arc::clone(clock) as Arc<dyn Clock>)
        .batch_size(BATCH)
        .channel_capacity(CAPACITY)
        .checkpointing(Duration::from_millis(100), dir.join("chk"))
}

/// Polls `done` until it holds (failing after 30 s).
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// Waits until the fast source has stopped producing (its sends block),
/// asserting at every look that it never ran more than [`BOUND`] ahead of
/// the union. Returns how many fast records the union processed.
fn wait_until_blocked(c: &Counters) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut unchanged) = (u64::MAX, 0);
    // Unchanged over many looks a millisecond apart (a second: far longer
    // than a busy machine starves a runnable thread): blocked, not slow.
    while unchanged < 1_000 {
        assert!(
            Instant::now() < deadline,
            "the fast source never blocked: {} produced, {} processed",
            c.produced.load(Ordering::SeqCst),
            c.processed.load(Ordering::SeqCst)
        );
        let processed = c.processed.load(Ordering::SeqCst);
        let produced = c.produced.load(Ordering::SeqCst);
        let ahead = produced.saturating_sub(processed);
        assert!(ahead <= BOUND, "{ahead} fast records queued, bound {BOUND}");
        if produced == last {
            unchanged += 1;
        } else {
            (last, unchanged) = (produced, 0);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    c.processed.load(Ordering::SeqCst)
}

/// Spawns the skewed job with its slow source held at a gate, makes
/// checkpoint 1 due (the fast source emits its barrier, the slow one is
/// stuck on its first record) and waits until the fast source blocks.
/// Returns the job, the gate's opener and the fast records processed
/// before the barrier.
fn stall_at_checkpoint_1(
    job: Job,
    clock: &ManualClock,
    counters: &Arc<Counters>,
) -> Result<(JobHandle, Sender<()>, u64)> {
    let (open, gate) = crossbeam_channel::bounded(0);
    skewed_job(&job, None, Some(gate), counters);
    let handle = job.spawn()?;
    wait_for("the slow source to stall", || {
        counters.stalled.load(Ordering::SeqCst)
    });
    clock.advance(Duration::from_millis(150));
    let before_barrier = wait_until_blocked(counters);
    Ok((handle, open, before_barrier))
}

#[test]
fn a_stalled_input_blocks_the_fast_one_and_the_checkpoint_is_exact() -> Result<()> {
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    let counters = Arc::new(Counters::default());
    let job = checkpointed_job(dir.path(), &clock);
    let (handle, open, before_barrier) = stall_at_checkpoint_1(job, &clock, &counters)?;
    clock.advance(Duration::from_secs(5));
    open.send(())
        .map_err(|_| Error::Internal("the slow source is gone".into()))?;
    let storage = CheckpointStorage::new(dir.path().join("chk"))?;
    wait_for("checkpoint 1", || {
        storage.complete_ids().is_ok_and(|ids| ids.contains(&1))
    });
    // Reading the fast input again.
    wait_for("the fast source to resume", || {
        counters.processed.load(Ordering::SeqCst) > before_barrier + BOUND
    });
    handle.stop_and_drain();
    let summary = handle.join()?;
    let first = summary.checkpoints.first();
    assert_eq!(first.map(|c| (c.id, c.is_final)), Some((1, false)));
    assert!(first.is_some_and(|c| c.alignment >= Duration::from_secs(5)));
    assert!(summary.aborted_checkpoints.is_empty());

    // Checkpoint 1 holds exactly the fast records before its barrier: a
    // restore from it reads the fast source on from there.
    let more = 1_000;
    let restored = Arc::new(Counters::default());
    let job =
        checkpointed_job(dir.path(), &clock).restore(RestoreFrom::Path(storage.open(1)?.dir()));
    skewed_job(&job, Some(before_barrier + more), None, &restored);
    job.start_local()?.finish()?;
    assert_eq!(restored.processed.load(Ordering::SeqCst), more);
    // The slow source had emitted its first batch at most.
    let slow = restored.processed_slow.load(Ordering::SeqCst);
    assert!(slow >= SLOW - BATCH as u64 && slow <= SLOW, "{slow}");
    Ok(())
}

#[test]
fn an_alignment_timeout_aborts_the_checkpoint_and_the_next_completes() -> Result<()> {
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    let counters = Arc::new(Counters::default());
    let job =
        checkpointed_job(dir.path(), &clock).checkpoint_alignment_timeout(Duration::from_secs(1));
    let (handle, open, before_barrier) = stall_at_checkpoint_1(job, &clock, &counters)?;
    // Past the timeout: the union gives checkpoint 1 up and reads on.
    clock.advance(Duration::from_millis(1_500));
    wait_for("the fast source to resume", || {
        counters.processed.load(Ordering::SeqCst) > before_barrier + BOUND
    });
    open.send(())
        .map_err(|_| Error::Internal("the slow source is gone".into()))?;
    // The next checkpoint is due an interval after the abort.
    clock.advance(Duration::from_millis(150));
    let storage = CheckpointStorage::new(dir.path().join("chk"))?;
    wait_for("checkpoint 2", || {
        storage.complete_ids().is_ok_and(|ids| ids.contains(&2))
    });
    // Every slow record goes through despite the abandoned barrier (waited
    // for: stopping ends the sources where they are).
    wait_for("the slow records", || {
        counters.processed_slow.load(Ordering::SeqCst) == SLOW
    });
    handle.stop_and_drain();
    let summary = handle.join()?;
    assert_eq!(summary.aborted_checkpoints.len(), 1);
    let aborted = &summary.aborted_checkpoints[0];
    assert_eq!(aborted.id, 1);
    assert!(
        aborted.reason.contains("union[0]")
            && aborted.reason.contains("alignment timeout of 1000 ms"),
        "{}",
        aborted.reason
    );
    let ids: Vec<(u64, bool)> = summary
        .checkpoints
        .iter()
        .map(|c| (c.id, c.is_final))
        .collect();
    assert_eq!(ids.first(), Some(&(2, false)));
    assert!(storage.complete_ids()?.contains(&2));
    Ok(())
}
