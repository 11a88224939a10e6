//! The Nexmark source: live generation or replay of pre-generated events.
//!
//! Event `i` of a run is a pure function of `i` and the [`NexmarkConfig`]
//! (the `nexmark` crate seeds each event's generator from its id), so the
//! same configuration gives the same events at any parallelism, after any
//! restart. Partition `p` of `P` emits events `p, p + P, p + 2P, …`; within a
//! partition timestamps never decrease, so `WatermarkStrategy::monotonous()`
//! loses no event. Records carry their event time, so no timestamp
//! assigner is needed.
//!
//! Offsets are "events emitted by this partition": a checkpointed run
//! resumes exactly after the last event it had emitted.

use std::sync::Arc;

use nexmark::EventGenerator;
use tideline::connectors::{partition_len, PacingStart, RateLimit};
use tideline::{
    Error, ReaderContext, Record, Result, Source, SourceOffset, SourceOutput, SourceReader,
    SourceStatus,
};

use crate::event::Event;

/// The generator's settings (a subset of the `nexmark` crate's, with
/// Nexmark's defaults otherwise: 1 person : 3 auctions : 46 bids, 1,000
/// active people, 100 auctions in flight, 5 categories).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NexmarkConfig {
    /// Events per second of event time (the spacing of timestamps).
    pub events_per_second: u64,
    /// Timestamp of the first event, epoch milliseconds.
    pub base_time: i64,
}

impl Default for NexmarkConfig {
    /// 10,000 events per event-time second (Nexmark's default) from
    /// 2015-07-15T00:00:00Z: fixed, so runs are repeatable.
    fn default() -> Self {
        Self {
            events_per_second: 10_000,
            base_time: 1_436_918_400_000,
        }
    }
}

impl NexmarkConfig {
    fn generator(&self, first: u64, step: u64) -> Result<EventGenerator> {
        if self.events_per_second == 0 {
            return Err(Error::config(
                "nexmark.events_per_second",
                "must be at least 1",
            ));
        }
        let base_time = u64::try_from(self.base_time).map_err(|_| {
            Error::config(
                "nexmark.base_time",
                format!("{} is before 1970", self.base_time),
            )
        })?;
        let rate = usize::try_from(self.events_per_second).unwrap_or(usize::MAX);
        let config = nexmark::config::NexmarkConfig {
            first_rate: rate,
            next_rate: rate,
            base_time,
            ..Default::default()
        };
        Ok(EventGenerator::new(config)
            .with_offset(first)
            .with_step(step.max(1)))
    }

    /// Generates events `0..count` into memory, in order, on every core
    /// (each event depends only on its index, so chunks are independent).
    ///
    /// # Errors
    /// When the configuration is invalid.
    pub fn generate(&self, count: u64) -> Result<Vec<Event>> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let chunk = count.div_ceil(threads.max(1)).max(1);
        let generators = (0..count.div_ceil(chunk))
            .map(|i| {
                let first = i * chunk;
                Ok((self.generator(first, 1)?, (count - first).min(chunk)))
            })
            .collect::<Result<Vec<_>>>()?;
        let chunks: Vec<Vec<Event>> = std::thread::scope(|scope| {
            let running: Vec<_> = generators
                .into_iter()
                .map(|(generator, n)| {
                    scope.spawn(move || generator.take(n as usize).map(Event::from).collect())
                })
                .collect();
            running
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        let mut events = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for mut chunk in chunks {
            events.append(&mut chunk);
        }
        Ok(events)
    }
}

/// Where events come from.
#[derive(Clone, Debug)]
enum Origin {
    /// Generated as they are read.
    Live(NexmarkConfig),
    /// Cloned from memory (cheap: text fields are shared).
    Replay(Arc<[Event]>),
}

/// A partitioned Nexmark event source (see the module docs).
///
/// ```
/// use tideline::prelude::*;
/// use tideline_nexmark::{NexmarkConfig, NexmarkSource};
///
/// let job = Job::new().mode(ExecutionMode::Bounded);
/// let out = CollectSink::new();
/// job.source(
///     NexmarkSource::live(NexmarkConfig::default()).with_count(100),
///     WatermarkStrategy::monotonous(),
/// )
/// .sink(out.clone());
/// job.run()?;
/// assert_eq!(out.len(), 100);
/// # Ok::<(), tideline::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct NexmarkSource {
    origin: Origin,
    count: Option<u64>,
    partitions: usize,
    rate: Option<f64>,
    pacing_start: PacingStart,
}

impl NexmarkSource {
    /// Generates events as they are read; unbounded until [`Self::with_count`].
    pub fn live(config: NexmarkConfig) -> Self {
        Self {
            origin: Origin::Live(config),
            count: None,
            partitions: 1,
            rate: None,
            pacing_start: PacingStart::default(),
        }
    }

    /// Replays `events` (from [`NexmarkConfig::generate`]): bounded by their number.
    pub fn replay(events: impl Into<Arc<[Event]>>) -> Self {
        let events = events.into();
        let count = events.len() as u64;
        Self {
            origin: Origin::Replay(events),
            count: Some(count),
            partitions: 1,
            rate: None,
            pacing_start: PacingStart::default(),
        }
    }

    /// Ends after `count` events in total (at most the replayed ones).
    pub fn with_count(mut self, count: u64) -> Self {
        self.count = Some(match (&self.origin, self.count) {
            (Origin::Replay(_), Some(max)) => count.min(max),
            _ => count,
        });
        self
    }

    /// Reads in `n` partitions.
    pub fn with_partitions(mut self, n: usize) -> Self {
        self.partitions = n;
        self
    }

    /// Paces all partitions together to `events_per_second` of wall time
    /// (by the job's clock); without it, they run as fast as they are read.
    pub fn with_rate(mut self, events_per_second: f64) -> Self {
        self.rate = Some(events_per_second);
        self
    }

    /// The wall-clock start of pacing (for latency measurements).
    pub fn pacing_start(&self) -> PacingStart {
        self.pacing_start.clone()
    }

    fn reader(&self, partition: usize, ctx: &ReaderContext, emitted: u64) -> Result<NexmarkReader> {
        let pacing = self
            .rate
            .map(|rate| {
                RateLimit::new(
                    "nexmark.rate",
                    rate,
                    self.partitions,
                    Arc::clone(&ctx.clock),
                    emitted,
                )
                .map(|limit| limit.with_start(self.pacing_start.clone()))
            })
            .transpose()?;
        let stride = self.partitions.max(1);
        let next = partition + emitted as usize * stride;
        let (generator, replay) = match &self.origin {
            Origin::Live(config) => (Some(config.generator(next as u64, stride as u64)?), None),
            Origin::Replay(events) => (None, Some(Arc::clone(events))),
        };
        Ok(NexmarkReader {
            generator,
            replay,
            next,
            stride,
            emitted,
            limit: self
                .count
                .map(|c| partition_len(c, partition, self.partitions)),
            pacing,
        })
    }
}

impl Source<Event> for NexmarkSource {
    fn name(&self) -> &str {
        "nexmark"
    }

    fn partitions(&self) -> usize {
        self.partitions
    }

    fn is_bounded(&self) -> bool {
        self.count.is_some()
    }

    fn create_reader(
        &self,
        partition: usize,
        ctx: &ReaderContext,
    ) -> Result<Box<dyn SourceReader<Event>>> {
        Ok(Box::new(self.reader(partition, ctx, 0)?))
    }

    fn create_reader_at(
        &self,
        partition: usize,
        ctx: &ReaderContext,
        offset: &SourceOffset,
    ) -> Result<Box<dyn SourceReader<Event>>> {
        match offset.0.as_slice() {
            [emitted] => Ok(Box::new(self.reader(partition, ctx, *emitted)?)),
            _ => Err(Error::config(
                "nexmark.offset",
                format!("{offset:?} is not a Nexmark offset"),
            )),
        }
    }
}

/// How many events ahead of the one it clones a replaying reader prefetches
/// (see `Shared::prefetch`): enough to keep several cache misses in flight.
const WARM_AHEAD: usize = 16;

struct NexmarkReader {
    generator: Option<EventGenerator>,
    replay: Option<Arc<[Event]>>,
    /// Index of the next event.
    next: usize,
    stride: usize,
    emitted: u64,
    limit: Option<u64>,
    pacing: Option<RateLimit>,
}

impl SourceReader<Event> for NexmarkReader {
    fn poll(&mut self, out: &mut SourceOutput<Event>) -> Result<SourceStatus> {
        let mut budget = out.remaining() as u64;
        if let Some(limit) = self.limit {
            budget = budget.min(limit.saturating_sub(self.emitted));
        }
        if let Some(pacing) = &mut self.pacing {
            budget = budget.min(pacing.allowed(self.emitted));
        }
        if let Some(events) = &self.replay {
            for _ in 0..budget {
                if let Some(ahead) = events.get(self.next + WARM_AHEAD * self.stride) {
                    ahead.prefetch();
                }
                let Some(event) = events.get(self.next) else {
                    break;
                };
                out.push(Record::new(event.date_time(), event.clone()));
                self.next += self.stride;
                self.emitted += 1;
            }
        } else if let Some(generator) = &mut self.generator {
            for event in generator.by_ref().take(budget as usize) {
                let event = Event::from(event);
                out.push(Record::new(event.date_time(), event));
            }
            self.next += self.stride * budget as usize;
            self.emitted += budget;
        }
        Ok(match self.limit {
            Some(limit) if self.emitted >= limit => SourceStatus::Finished,
            _ if budget == 0 => SourceStatus::Pending,
            _ => SourceStatus::Ready,
        })
    }

    fn offset(&self) -> Option<SourceOffset> {
        Some(SourceOffset(vec![self.emitted]))
    }

    fn progress(&self) -> Option<tideline::PartitionProgress> {
        Some(tideline::PartitionProgress {
            position: self.emitted,
            lag: self.limit.map(|l| l.saturating_sub(self.emitted)),
            bounded: self.limit.is_some(),
        })
    }
}
