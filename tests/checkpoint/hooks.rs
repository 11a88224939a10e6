//! Checkpoint-completion hooks: sinks commit and sources hear the offsets
//! of every completed checkpoint, in order, after it is durable; a failing
//! or panicking committer fails the job instead of being swallowed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tideline::prelude::*;
use tideline::{Committer, ReaderContext, RestoreFrom, SourceOffset, SourceReader};

use super::{drive, generator, stepped_job, tempdir, Ev};

/// Every notification a source got: `(checkpoint, offsets)`.
type Log = Arc<Mutex<Vec<(u64, Vec<(usize, SourceOffset)>)>>>;

/// A source that records its completion notifications.
struct Recording<S> {
    inner: S,
    log: Log,
}

impl<S: Source<Ev>> Source<Ev> for Recording<S> {
    fn name(&self) -> &str {
        "recording"
    }
    fn partitions(&self) -> usize {
        self.inner.partitions()
    }
    fn is_bounded(&self) -> bool {
        self.inner.is_bounded()
    }
    fn create_reader(&self, p: usize, ctx: &ReaderContext) -> Result<Box<dyn SourceReader<Ev>>> {
        self.inner.create_reader(p, ctx)
    }
    fn create_reader_at(
        &self,
        p: usize,
        ctx: &ReaderContext,
        offset: &SourceOffset,
    ) -> Result<Box<dyn SourceReader<Ev>>> {
        self.inner.create_reader_at(p, ctx, offset)
    }
    fn notify_checkpoint_complete(
        &self,
        checkpoint: u64,
        offsets: &[(usize, SourceOffset)],
    ) -> Result<()> {
        if let Ok(mut log) = self.log.lock() {
            log.push((checkpoint, offsets.to_vec()));
        }
        Ok(())
    }
}

fn notifications(log: &Log) -> Vec<(u64, Vec<(usize, SourceOffset)>)> {
    log.lock().map(|l| l.clone()).unwrap_or_default()
}

fn recording_job(dir: &std::path::Path, clock: &Arc<ManualClock>, log: &Log) -> Job {
    let job = stepped_job(dir, clock, 2, true);
    job.source(
        Recording {
            inner: generator(6_000, 3, 20_000.0),
            log: Arc::clone(log),
        },
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(300))
            .with_timestamps(|e: &Ev| e.ts),
    )
    .sink(CollectSink::new());
    job
}

#[test]
fn sources_hear_every_completed_checkpoint_with_its_offsets_in_order() -> Result<()> {
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    let log: Log = Arc::default();
    let summary = drive(recording_job(dir.path(), &clock, &log), &clock, None)?
        .ok_or_else(|| Error::user("did not finish"))?;
    let ids: Vec<u64> = summary.checkpoints.iter().map(|c| c.id).collect();
    let notified = notifications(&log);
    assert!(ids.len() >= 3, "{ids:?}");
    assert_eq!(
        notified.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        ids,
        "one notification per completed checkpoint, in order"
    );
    for (_, offsets) in &notified {
        assert_eq!(
            offsets.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            vec![0, 1, 2],
            "every partition's offset"
        );
    }
    // The last checkpoint covers the end of every partition: 2,000 records each.
    let (_, last) = notified.last().cloned().unwrap_or_default();
    assert!(
        last.iter().all(|(_, o)| o.0.first() == Some(&2_000)),
        "{last:?}"
    );
    Ok(())
}

#[test]
fn a_restored_job_notifies_the_checkpoint_it_restored_from_first() -> Result<()> {
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    let first: Log = Arc::default();
    drive(recording_job(dir.path(), &clock, &first), &clock, Some(12))?;
    let before = notifications(&first);
    let (last_id, last_offsets) = before
        .last()
        .cloned()
        .ok_or_else(|| Error::user("no checkpoint before the crash"))?;
    let second: Log = Arc::default();
    let job = recording_job(dir.path(), &clock, &second).restore(RestoreFrom::Latest);
    let summary = drive(job, &clock, None)?.ok_or_else(|| Error::user("did not finish"))?;
    assert_eq!(summary.restored_from, Some(last_id));
    let after = notifications(&second);
    assert_eq!(after.first(), Some(&(last_id, last_offsets)));
    assert!(after.windows(2).all(|w| w[0].0 < w[1].0));
    Ok(())
}

/// A sink whose transactions go to a committer that fails or panics.
#[derive(Clone)]
struct Failing {
    panic: bool,
    wrote: bool,
}

struct FailingCommitter {
    panic: bool,
}

impl Committer for FailingCommitter {
    fn commit(&self, _transaction: &[u8]) -> Result<()> {
        if self.panic {
            panic!("the commit target vanished");
        }
        Err(Error::user("the commit target refused"))
    }
    fn abort_uncommitted(&self, _restored: u64, _keep: &[Vec<u8>]) -> Result<()> {
        Ok(())
    }
}

impl Sink<Ev> for Failing {
    fn name(&self) -> &str {
        "failing"
    }
    fn write_batch(&mut self, batch: Vec<Record<Ev>>) -> Result<()> {
        self.wrote |= !batch.is_empty();
        Ok(())
    }
    fn pre_commit(&mut self, _checkpoint: u64) -> Result<Option<Vec<u8>>> {
        Ok(std::mem::take(&mut self.wrote).then(|| vec![1]))
    }
    fn committer(&self) -> Option<Arc<dyn Committer>> {
        Some(Arc::new(FailingCommitter { panic: self.panic }))
    }
}

fn run_with_failing_committer(panic: bool) -> Result<String> {
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    let job = stepped_job(dir.path(), &clock, 1, true);
    job.source(
        generator(2_000, 1, 20_000.0),
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(300))
            .with_timestamps(|e: &Ev| e.ts),
    )
    .sink(Failing {
        panic,
        wrote: false,
    });
    match drive(job, &clock, None) {
        Ok(summary) => Err(Error::user(format!(
            "a job whose commits failed ended Ok: {summary:?}"
        ))),
        Err(e) => Ok(e.to_string()),
    }
}

#[test]
fn a_committer_error_fails_the_job() -> Result<()> {
    let error = run_with_failing_committer(false)?;
    assert!(
        error.contains("failing") && error.contains("the commit target refused"),
        "{error}"
    );
    Ok(())
}

#[test]
fn a_committer_panic_fails_the_job() -> Result<()> {
    let error = run_with_failing_committer(true)?;
    assert!(
        error.contains("failing") && error.contains("the commit target vanished"),
        "{error}"
    );
    Ok(())
}
