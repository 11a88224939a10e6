//! A source subtask: reads its partitions round-robin, one batch each,
//! stamps records (event time, and the partition's watermark just before
//! each one: the partition-local lateness rule), and emits the minimum
//! watermark over its partitions after every batch (idle partitions left
//! out, finished ones at `+inf`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::checkpoint::storage::PartitionState;
use crate::config::FailurePolicy;
use crate::error::{guarded, Error, Result};
use crate::metrics::{OpCounters, PartitionSample, SourceTaskMetrics};
use crate::operator::{reject, DeadLetter};
use crate::record::Data;
use crate::runtime::metrics::JobCounters;
use crate::runtime::task::{ChainHead, Step, Task};
use crate::source::{ReaderContext, Source, SourceOutput, SourceReader, SourceStatus};
use crate::time::{EventTime, Periodic, TimestampFn, WatermarkGenerator, WatermarkStrategy};

pub(crate) struct Partition<T> {
    /// The partition's number in its source.
    pub(crate) index: usize,
    pub(crate) reader: Box<dyn SourceReader<T>>,
    pub(crate) generator: WatermarkGenerator,
    pub(crate) finished: bool,
}

/// Asks the source for new partitions now and then (unbounded sources
/// that discover partitions).
pub(crate) struct Discovery<T> {
    pub(crate) source: Arc<dyn Source<T>>,
    pub(crate) strategy: WatermarkStrategy<T>,
    /// `partitions` is the count known so far.
    pub(crate) reader_ctx: ReaderContext,
    /// When to look again.
    pub(crate) every: Periodic,
}

pub(crate) struct SourceTask<T> {
    pub(crate) head: ChainHead<T>,
    pub(crate) partitions: Vec<Partition<T>>,
    pub(crate) discovery: Option<Discovery<T>>,
    pub(crate) timestamps: Option<TimestampFn<T>>,
    pub(crate) started_at: i64,
    pub(crate) batch_size: usize,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) counters: Arc<OpCounters>,
    pub(crate) job: Arc<JobCounters>,
    pub(crate) failure_policy: FailurePolicy,
    /// The source operator's name (dead letters name it; the task name adds the subtask).
    pub(crate) operator: Arc<str>,
    /// The source's uid: checkpoints store its partitions under it.
    pub(crate) uid: Arc<str>,
    /// The last checkpoint barrier emitted.
    pub(crate) last_barrier: u64,
    /// Where its partitions stand, for metrics.
    pub(crate) metrics: Arc<SourceTaskMetrics>,
    /// When (job clock) they are sampled.
    pub(crate) sampling: Periodic,
}

impl<T: Data> SourceTask<T> {
    /// Where every partition stands, for a checkpoint.
    fn partition_states(&self) -> Result<Vec<(String, usize, PartitionState)>> {
        self.partitions
            .iter()
            .map(|p| {
                let offset = p.reader.offset().ok_or_else(|| {
                    Error::config(
                        format!("source '{}'", self.operator),
                        "checkpointing needs sources that report offsets \
                         (SourceReader::offset) and resume from them (Source::create_reader_at)",
                    )
                })?;
                let (max_timestamp, explicit) = p.generator.state();
                Ok((
                    self.uid.to_string(),
                    p.index,
                    PartitionState {
                        offset: offset.0,
                        max_timestamp: max_timestamp.millis(),
                        explicit_watermark: explicit.millis(),
                        finished: p.finished,
                    },
                ))
            })
            .collect()
    }

    /// Publishes where every partition stands, when a sample is due (or
    /// the subtask has `ended`: every partition counts as finished).
    fn sample(&mut self, now: i64, ended: bool) {
        if !self.sampling.due(now) && !ended {
            return;
        }
        let samples = self
            .partitions
            .iter()
            .enumerate()
            .map(|(input, p)| {
                let watermark = p.generator.current();
                PartitionSample {
                    partition: p.index,
                    progress: p.reader.progress(),
                    watermark: (watermark != EventTime::MIN).then_some(watermark),
                    idle: self.head.tracker.is_idle(input),
                    finished: p.finished || ended,
                }
            })
            .collect();
        self.metrics.publish(samples);
    }

    fn finish(&mut self) -> Result<Step> {
        self.sample(i64::MAX, true);
        let sources = if self.head.checkpoint.is_some() {
            self.partition_states()?
        } else {
            Vec::new()
        };
        self.head.finish(sources)
    }

    /// Opens readers for the partitions added since the last look that this
    /// subtask owns (`partition % parallelism == subtask`), when a look is due.
    fn discover(&mut self, now: i64) -> Result<()> {
        let Some(d) = &mut self.discovery else {
            return Ok(());
        };
        if !d.every.due(now) {
            return Ok(());
        }
        let source = &d.source;
        let total = guarded(&self.head.name, || source.discover_partitions())
            .map_err(|e| e.in_operator(&self.operator))?;
        let known = d.reader_ctx.partitions;
        if total <= known {
            return Ok(());
        }
        d.reader_ctx.partitions = total;
        let info = d.reader_ctx.subtask;
        tracing::info!(
            source = %self.operator,
            subtask = info.subtask,
            from = known,
            to = total,
            "source partitions discovered"
        );
        for index in (known..total).filter(|p| p % info.parallelism == info.subtask) {
            let reader = d
                .source
                .create_reader(index, &d.reader_ctx)
                .map_err(|e| e.in_operator(&self.operator))?;
            self.partitions.push(Partition {
                index,
                reader,
                generator: d.strategy.generator(),
                finished: false,
            });
            self.head.tracker.add_input();
        }
        Ok(())
    }

    fn poll_partition(&mut self, index: usize, now: i64) -> Result<bool> {
        let mut out = SourceOutput::new(self.batch_size);
        let partition = &mut self.partitions[index];
        let reader = &mut partition.reader;
        let status = guarded(&self.head.name, || reader.poll(&mut out))?;
        let mut progressed = !out.rejected.is_empty();
        if progressed {
            // Readers that do not say where a rejected input was get the
            // position they resume from after this batch.
            let after = reader.offset().map(|o| format!("after {:?}", o.0));
            for rejected in out.rejected.drain(..) {
                let letter = DeadLetter::new(
                    &*self.operator,
                    EventTime::MIN,
                    rejected.reason,
                    rejected.record,
                )
                .at(
                    Some(partition.index),
                    rejected.offset.or_else(|| after.clone()),
                );
                reject(&mut self.head.sides, &self.job, self.failure_policy, letter)
                    .map_err(|e| e.in_operator(&self.operator))?;
            }
        }
        for side in &mut self.head.sides {
            side.flush()?;
        }
        if !out.records.is_empty() {
            progressed = true;
            let generator = &mut partition.generator;
            generator.on_data(now);
            generator.stamp(&mut out.records, self.timestamps.as_ref());
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
        self.head.start()?;
        if self.stop.load(Ordering::Relaxed) {
            return self.finish();
        }
        if let Some(cp) = &self.head.checkpoint {
            if let Some(id) = cp.coordinator.poll_barrier(self.last_barrier) {
                self.last_barrier = id;
                let sources = self.partition_states()?;
                self.head.barrier(id, sources)?;
                if self.head.is_done() {
                    return Ok(Step::Done);
                }
            }
        }
        let now = self.head.clock.now_millis();
        self.discover(now)?;
        let mut progressed = false;
        for index in 0..self.partitions.len() {
            if !self.partitions[index].finished {
                progressed |= self.poll_partition(index, now)?;
            }
        }
        if self.partitions.iter().all(|p| p.finished) {
            return self.finish();
        }
        self.sample(now, false);
        self.head.tick(now)?;
        Ok(if progressed {
            Step::Progress
        } else {
            Step::Idle
        })
    }
}
