//! A source subtask: reads its partitions round-robin, one batch each,
//! stamps records, and emits the minimum watermark over its partitions after
//! every batch (idle partitions left out, finished ones at `+inf`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::FailurePolicy;
use crate::error::{guarded, Result};
use crate::operator::reject;
use crate::record::Data;
use crate::runtime::metrics::{JobCounters, OpCounters};
use crate::runtime::task::{ChainHead, Step, Task};
use crate::source::{SourceOutput, SourceReader, SourceStatus};
use crate::time::{TimestampFn, WatermarkGenerator};

pub(crate) struct Partition<T> {
    pub(crate) reader: Box<dyn SourceReader<T>>,
    pub(crate) generator: WatermarkGenerator,
    pub(crate) finished: bool,
}

pub(crate) struct SourceTask<T> {
    pub(crate) head: ChainHead<T>,
    pub(crate) partitions: Vec<Partition<T>>,
    pub(crate) timestamps: Option<TimestampFn<T>>,
    pub(crate) started_at: i64,
    pub(crate) batch_size: usize,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) counters: Arc<OpCounters>,
    pub(crate) job: Arc<JobCounters>,
    pub(crate) failure_policy: FailurePolicy,
    /// The source operator's name (dead letters name it; the task name adds the subtask).
    pub(crate) operator: Arc<str>,
}

impl<T: Data> SourceTask<T> {
    fn poll_partition(&mut self, index: usize, now: i64) -> Result<bool> {
        let mut out = SourceOutput::new(self.batch_size);
        let partition = &mut self.partitions[index];
        let reader = &mut partition.reader;
        let status = guarded(&self.head.name, || reader.poll(&mut out))?;
        let mut progressed = !out.rejected.is_empty();
        for (timestamp, reason, record) in out.rejected.drain(..) {
            reject(
                &mut self.head.sides,
                &self.job,
                self.failure_policy,
                &self.operator,
                timestamp,
                reason,
                record,
            )
            .map_err(|e| e.in_operator(&self.operator))?;
        }
        for side in &mut self.head.sides {
            side.flush()?;
        }
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
            self.head.push.push_batch(out.records)?;
            let reactivated = self.head.tracker.on_data(index);
            self.head.emit(reactivated)?;
        }
        if let Some(w) = out.watermark {
            // A watermark is news from the partition: it is not idle.
            let generator = &mut self.partitions[index].generator;
            generator.on_explicit(w);
            generator.on_data(now);
            progressed = true;
        }
        // Only news from the partition moves its watermark (and reactivates
        // it): reporting on every poll would wake an idle partition forever.
        if progressed {
            let current = self.partitions[index].generator.current();
            let advanced = self.head.tracker.on_watermark(index, current);
            self.head.emit(advanced)?;
        }
        match status {
            SourceStatus::Finished => {
                self.partitions[index].finished = true;
                let w = self.head.tracker.on_finished(index);
                self.head.emit(w)?;
                progressed = true;
            }
            SourceStatus::Pending
                if !progressed
                    && self.partitions[index]
                        .generator
                        .is_idle(now, self.started_at) =>
            {
                let w = self.head.tracker.on_idle(index);
                self.head.emit(w)?;
            }
            _ => {}
        }
        Ok(progressed)
    }
}

impl<T: Data> Task for SourceTask<T> {
    fn name(&self) -> &str {
        &self.head.name
    }

    fn flush(&mut self) -> Result<()> {
        self.head.flush()
    }

    fn step(&mut self, _blocking: bool) -> Result<Step> {
        if let Some(step) = self.head.check()? {
            return Ok(step);
        }
        if self.stop.load(Ordering::Relaxed) {
            return self.head.finish();
        }
        let now = self.head.clock.now_millis();
        let mut progressed = false;
        for index in 0..self.partitions.len() {
            if !self.partitions[index].finished {
                progressed |= self.poll_partition(index, now)?;
            }
        }
        if self.partitions.iter().all(|p| p.finished) {
            return self.head.finish();
        }
        self.head.tick(now)?;
        Ok(if progressed {
            Step::Progress
        } else {
            Step::Idle
        })
    }
}
