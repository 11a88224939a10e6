//! A source subtask: reads its partitions round-robin, one batch each,
//! stamps records, and emits the minimum watermark over its partitions after
//! every batch (idle partitions left out, finished ones at `+inf`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{guarded, Error, Result};
use crate::record::Data;
use crate::runtime::metrics::OpCounters;
use crate::runtime::push::BoxPush;
use crate::runtime::task::{Step, Task};
use crate::source::{SourceOutput, SourceReader, SourceStatus};
use crate::time::{Clock, EventTime, TimestampFn, Watermark, WatermarkGenerator, WatermarkTracker};

pub(crate) struct Partition<T> {
    pub(crate) reader: Box<dyn SourceReader<T>>,
    pub(crate) generator: WatermarkGenerator,
    pub(crate) finished: bool,
}

pub(crate) struct SourceTask<T> {
    pub(crate) name: Arc<str>,
    pub(crate) partitions: Vec<Partition<T>>,
    pub(crate) tracker: WatermarkTracker,
    pub(crate) timestamps: Option<TimestampFn<T>>,
    pub(crate) head: BoxPush<T>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) started_at: i64,
    pub(crate) batch_size: usize,
    /// Processing time of the last tick; the chain is ticked whenever the clock moves.
    pub(crate) last_tick: i64,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) counters: Arc<OpCounters>,
    pub(crate) done: bool,
}

impl<T: Data> SourceTask<T> {
    fn emit(&mut self, watermark: Option<Watermark>) -> Result<()> {
        match watermark {
            Some(w) => self.head.push_watermark(w),
            None => Ok(()),
        }
    }

    fn poll_partition(&mut self, index: usize, now: i64) -> Result<bool> {
        let mut out = SourceOutput::new(self.batch_size);
        let partition = &mut self.partitions[index];
        let reader = &mut partition.reader;
        let status = guarded(&self.name, || reader.poll(&mut out))?;
        let mut progressed = false;
        if !out.records.is_empty() {
            progressed = true;
            let generator = &mut partition.generator;
            generator.on_data(now);
            match &self.timestamps {
                Some(f) => {
                    for r in &mut out.records {
                        r.timestamp = f(&r.value);
                        generator.on_timestamp(r.timestamp);
                    }
                }
                None => out
                    .records
                    .iter()
                    .for_each(|r| generator.on_timestamp(r.timestamp)),
            }
            self.counters.add_out(out.records.len());
            self.head.push_batch(out.records)?;
            let reactivated = self.tracker.on_data(index);
            self.emit(reactivated)?;
        }
        if let Some(w) = out.watermark {
            self.partitions[index].generator.on_explicit(w);
            progressed = true;
        }
        // Only news from the partition moves its watermark (and reactivates
        // it): reporting on every poll would wake an idle partition forever.
        if progressed {
            let current = self.partitions[index].generator.current();
            let advanced = self.tracker.on_watermark(index, current);
            self.emit(advanced)?;
        }
        match status {
            SourceStatus::Finished => {
                self.partitions[index].finished = true;
                let w = self.tracker.on_finished(index);
                self.emit(w)?;
                progressed = true;
            }
            SourceStatus::Pending
                if !progressed
                    && self.partitions[index]
                        .generator
                        .is_idle(now, self.started_at) =>
            {
                let w = self.tracker.on_idle(index);
                self.emit(w)?;
            }
            _ => {}
        }
        Ok(progressed)
    }

    fn finish(&mut self) -> Result<Step> {
        if self.tracker.current() != EventTime::MAX {
            self.head
                .push_watermark(Watermark::EventTime(EventTime::MAX))?;
        }
        self.head.finish()?;
        self.done = true;
        Ok(Step::Done)
    }
}

impl<T: Data> Task for SourceTask<T> {
    fn name(&self) -> &str {
        &self.name
    }

    fn flush(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.head.flush()
    }

    fn step(&mut self, _blocking: bool) -> Result<Step> {
        if self.done {
            return Ok(Step::Done);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        if self.stop.load(Ordering::Relaxed) {
            return self.finish();
        }
        let now = self.clock.now_millis();
        let mut progressed = false;
        for index in 0..self.partitions.len() {
            if !self.partitions[index].finished {
                progressed |= self.poll_partition(index, now)?;
            }
        }
        if self.partitions.iter().all(|p| p.finished) {
            return self.finish();
        }
        if now > self.last_tick {
            self.last_tick = now;
            self.head.on_tick(now)?;
        }
        Ok(if progressed {
            Step::Progress
        } else {
            Step::Idle
        })
    }
}
