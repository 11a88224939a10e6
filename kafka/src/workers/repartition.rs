//! [`KafkaExchange`]: the keyed exchanges between stages of a job on
//! several workers, as repartition topics (the engine's
//! [`RemoteExchange`]).
//!
//! # Invariants
//! - An upstream task writes its records, and after them its watermark as
//!   control records to every partition, through one
//!   [`KafkaSink`](crate::KafkaSink): exactly once by default, in the
//!   transaction of the task's checkpoint, with transactional ids
//!   `<application-id>-<exchange>-<task>-<slot>` that only this task uses
//!   (the sink runs isolated: a restore fences only its own ids).
//! - A downstream task reads its partition with read_committed, so it sees
//!   an upstream checkpoint's records and watermarks exactly when that
//!   checkpoint's transaction commits, in the order they were written.
//! - Its watermark is the minimum over the upstream tasks' last control
//!   records (a [`WatermarkTracker`] with one input per upstream task;
//!   `-inf` until every one has spoken), and it ends when every upstream
//!   task has reached `+inf`. The tracker's inputs are part of the
//!   reader's offset, so a restored task ends, and fires, as the original.
//!
//! # Failure analysis
//! - **An upstream task dies mid-interval:** its open transaction is
//!   aborted when its next owner fences its ids; read_committed readers
//!   never see the aborted records, and the new owner writes them again
//!   from its restored offsets.
//! - **A downstream task dies:** its restored offset (with the tracker's
//!   inputs) is where its last complete checkpoint stood; it reads on from
//!   there.
//! - **A foreign record in the topic** (not of [`RepartitionCodec`]'s
//!   format): a dead letter naming topic, partition and offset.
//! - **A control record from a task the exchange does not have** (another
//!   job version wrote it): the task fails, naming both counts.

use std::sync::Arc;

use tideline_engine::time::WatermarkTracker;
use tideline_engine::{
    Committer, Error, EventTime, ReaderContext, Record, RemoteEdge, RemoteExchange, RemoteRecord,
    Result, Sink, Source, SourceOffset, SourceOutput, SourceReader, SourceStatus, StageLayout,
    SubtaskInfo,
};

use super::exchange::{Control, Incoming, Outgoing, RepartitionCodec};
use crate::{KafkaSink, KafkaSource};

/// Keyed exchanges between workers through the repartition topics
/// `<application-id>-<exchange>-repartition` (made beforehand by
/// [`InternalTopics::ensure_repartition_topics`](super::InternalTopics::ensure_repartition_topics)).
#[derive(Clone, Debug)]
pub struct KafkaExchange {
    brokers: String,
    application_id: String,
    key_groups: u16,
    exactly_once: bool,
    properties: Vec<(String, String)>,
}

impl KafkaExchange {
    /// The exchanges of `application_id` on the cluster at `brokers`, for
    /// a job of `key_groups` key groups; exactly once.
    pub fn new(
        brokers: impl Into<String>,
        application_id: impl Into<String>,
        key_groups: u16,
    ) -> Self {
        Self {
            brokers: brokers.into(),
            application_id: application_id.into(),
            key_groups,
            exactly_once: true,
            properties: Vec::new(),
        }
    }

    /// At-least-once exchanges: no transactions, records visible at once;
    /// a crash may send some twice.
    pub fn at_least_once(mut self) -> Self {
        self.exactly_once = false;
        self
    }

    /// A librdkafka property for the exchanges' producers and consumers.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    fn topic(&self, edge: &RemoteEdge) -> Result<String> {
        StageLayout::repartition_topic_of(&self.application_id, &edge.exchange)
    }
}

impl RemoteExchange for KafkaExchange {
    fn writer(&self, edge: &RemoteEdge) -> Result<Box<dyn Sink<RemoteRecord>>> {
        let topic = self.topic(edge)?;
        let codec = RepartitionCodec::new(self.key_groups, edge.downstream_tasks)?;
        let mut sink =
            KafkaSink::serialize(&self.brokers, &topic, |o: &Outgoing| Ok(o.value.clone()))
                .key(|o: &Outgoing| o.key.clone())
                .headers(|o: &Outgoing| {
                    o.headers
                        .iter()
                        .map(|(name, value)| ((*name).to_string(), value.clone()))
                        .collect()
                })
                .partition_by(|o: &Outgoing| i32::try_from(o.partition).ok())
                .name(format!("{} (to other workers)", edge.exchange));
        if self.exactly_once {
            sink = sink.exactly_once(format!("{}-{}", self.application_id, edge.exchange));
        }
        for (key, value) in &self.properties {
            sink = sink.property(key, value);
        }
        Ok(Box::new(RepartitionWriter {
            inner: sink.build()?,
            codec,
            from: 0,
            sent: EventTime::MIN,
            told_idle: None,
        }))
    }

    fn reader(&self, edge: &RemoteEdge) -> Result<Arc<dyn Source<RemoteRecord>>> {
        let topic = self.topic(edge)?;
        let codec = RepartitionCodec::new(self.key_groups, edge.downstream_tasks)?;
        let mut builder = KafkaSource::builder(&self.brokers)
            .topic(&topic)
            .name(format!("{} (from other workers)", edge.exchange))
            .partition_discovery(None)
            .property("isolation.level", "read_committed");
        for (key, value) in &self.properties {
            builder = builder.property(key, value);
        }
        let inner = builder.deserialize(move |record| codec.decode(record))?;
        let partitions = Source::partitions(&inner);
        if partitions != edge.downstream_tasks {
            return Err(Error::config(
                format!("workers.exchange '{}'", edge.exchange),
                format!(
                    "the repartition topic '{topic}' has {partitions} partitions, the job \
                     expects {}",
                    edge.downstream_tasks
                ),
            ));
        }
        Ok(Arc::new(RepartitionSource {
            inner,
            upstream_tasks: edge.upstream_tasks,
            exchange: edge.exchange.clone(),
        }))
    }
}

/// An upstream task's end of an exchange.
struct RepartitionWriter {
    inner: KafkaSink<Outgoing>,
    codec: RepartitionCodec,
    /// The writing task.
    from: usize,
    /// The last watermark sent.
    sent: EventTime,
    /// What the last control record sent said: idle, active (a
    /// watermark), or nothing yet. Unknown at the start, also after a
    /// restore, when downstream may hold this task as idle: the first
    /// data, watermark or idleness is always told.
    told_idle: Option<bool>,
}

impl RepartitionWriter {
    /// Writes `control` to every partition, stamped `at`.
    fn send_control(&mut self, control: Control, at: EventTime) -> Result<()> {
        let controls = self
            .codec
            .control(control, self.from)
            .into_iter()
            .map(|o| Record::new(at, o))
            .collect();
        self.inner.write_batch(controls)
    }
}

impl Sink<RemoteRecord> for RepartitionWriter {
    fn name(&self) -> &str {
        Sink::<Outgoing>::name(&self.inner)
    }

    fn open(&mut self, subtask: SubtaskInfo) -> Result<()> {
        self.from = subtask.subtask;
        self.inner.open(subtask)
    }

    fn write_batch(&mut self, batch: Vec<Record<RemoteRecord>>) -> Result<()> {
        if self.told_idle != Some(false) && !batch.is_empty() {
            // Data wakes the task's input downstream, as data on an
            // in-process channel does: before the records, so they are
            // not held to another input's watermark.
            self.told_idle = Some(false);
            self.send_control(Control::Watermark(self.sent), self.sent)?;
        }
        let out = batch
            .iter()
            .map(|r| {
                Ok(Record::new(
                    r.timestamp,
                    self.codec.record(&r.value, self.from)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        self.inner.write_batch(out)
    }

    fn on_watermark(&mut self, watermark: EventTime) -> Result<()> {
        // A watermark that does not advance changes nothing downstream,
        // unless it ends this task's idleness there.
        if watermark <= self.sent && self.told_idle == Some(false) {
            return Ok(());
        }
        self.sent = self.sent.max(watermark);
        self.told_idle = Some(false);
        self.send_control(Control::Watermark(watermark), watermark)
    }

    fn on_idle(&mut self) -> Result<()> {
        if self.told_idle == Some(true) {
            return Ok(());
        }
        self.told_idle = Some(true);
        self.send_control(Control::Idle, self.sent)
    }

    fn finish(&mut self) -> Result<()> {
        Sink::<Outgoing>::finish(&mut self.inner)
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        self.inner.pre_commit(checkpoint)
    }

    fn committer(&self) -> Option<Arc<dyn Committer>> {
        Sink::<Outgoing>::committer(&self.inner)
    }
}

/// A downstream task's end of an exchange: one partition per task.
struct RepartitionSource {
    inner: KafkaSource<Incoming>,
    upstream_tasks: usize,
    exchange: String,
}

impl Source<RemoteRecord> for RepartitionSource {
    fn name(&self) -> &str {
        &self.exchange
    }

    fn partitions(&self) -> usize {
        self.inner.partitions()
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn create_reader(
        &self,
        partition: usize,
        ctx: &ReaderContext,
    ) -> Result<Box<dyn SourceReader<RemoteRecord>>> {
        Ok(Box::new(RepartitionReader::new(
            self.inner.create_reader(partition, ctx)?,
            self.upstream_tasks,
            &self.exchange,
        )))
    }

    fn create_reader_at(
        &self,
        partition: usize,
        ctx: &ReaderContext,
        offset: &SourceOffset,
    ) -> Result<Box<dyn SourceReader<RemoteRecord>>> {
        let (upstream, inner) = Upstreams::decode(&offset.0, self.upstream_tasks, &self.exchange)?;
        let mut reader = RepartitionReader::new(
            self.inner
                .create_reader_at(partition, ctx, &SourceOffset(inner.to_vec()))?,
            self.upstream_tasks,
            &self.exchange,
        );
        reader.restore(upstream)?;
        Ok(Box::new(reader))
    }

    fn restore_partitions(&self, offsets: &[(usize, SourceOffset)]) -> Result<()> {
        self.inner.restore_partitions(&self.kafka_offsets(offsets)?)
    }

    fn notify_checkpoint_complete(
        &self,
        checkpoint: u64,
        offsets: &[(usize, SourceOffset)],
    ) -> Result<()> {
        self.inner
            .notify_checkpoint_complete(checkpoint, &self.kafka_offsets(offsets)?)
    }

    fn notify_checkpoint_aborted(&self, checkpoint: u64) -> Result<()> {
        self.inner.notify_checkpoint_aborted(checkpoint)
    }
}

impl RepartitionSource {
    /// The Kafka readers' own offsets inside this source's.
    fn kafka_offsets(
        &self,
        offsets: &[(usize, SourceOffset)],
    ) -> Result<Vec<(usize, SourceOffset)>> {
        offsets
            .iter()
            .map(|(p, offset)| {
                let (_, inner) = Upstreams::decode(&offset.0, self.upstream_tasks, &self.exchange)?;
                Ok((*p, SourceOffset(inner.to_vec())))
            })
            .collect()
    }
}

/// What one upstream task last said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upstream {
    Active(EventTime),
    Idle(EventTime),
    Finished,
}

/// The upstream tasks' states, as a reader's offset carries them in front
/// of the Kafka reader's own: `[n, (kind, watermark) × n, inner…]`.
struct Upstreams;

impl Upstreams {
    fn encode(states: &[Upstream], inner: &[u64]) -> Vec<u64> {
        let mut out = Vec::with_capacity(1 + 2 * states.len() + inner.len());
        out.push(states.len() as u64);
        for state in states {
            let (kind, w) = match *state {
                Upstream::Active(w) => (0, w),
                Upstream::Idle(w) => (1, w),
                Upstream::Finished => (2, EventTime::MAX),
            };
            out.push(kind);
            // The bits of the i64, as SourceOffset holds u64s.
            out.push(w.millis() as u64);
        }
        out.extend_from_slice(inner);
        out
    }

    fn decode<'a>(
        offset: &'a [u64],
        expected: usize,
        exchange: &str,
    ) -> Result<(Vec<Upstream>, &'a [u64])> {
        let corrupt = |why: String| Error::Checkpoint {
            path: format!("the offset of exchange '{exchange}'"),
            reason: why,
        };
        let n = offset
            .first()
            .map(|&n| n as usize)
            .ok_or_else(|| corrupt("it is empty".into()))?;
        if n != expected {
            return Err(corrupt(format!(
                "it was written with {n} upstream tasks, and the exchange now has {expected}: \
                 the upstream stage's partition count changed"
            )));
        }
        let body = offset
            .get(1..1 + 2 * n)
            .ok_or_else(|| corrupt(format!("{} numbers are too few", offset.len())))?;
        let states = body
            .chunks_exact(2)
            .map(|pair| {
                let w = EventTime::from_millis(pair[1] as i64);
                match pair[0] {
                    0 => Ok(Upstream::Active(w)),
                    1 => Ok(Upstream::Idle(w)),
                    2 => Ok(Upstream::Finished),
                    kind => Err(corrupt(format!("unknown upstream state {kind}"))),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((states, &offset[1 + 2 * n..]))
    }
}

struct RepartitionReader {
    inner: Box<dyn SourceReader<Incoming>>,
    tracker: WatermarkTracker,
    upstream: Vec<Upstream>,
    /// The last watermark asserted.
    asserted: EventTime,
    exchange: String,
}

impl RepartitionReader {
    fn new(inner: Box<dyn SourceReader<Incoming>>, upstream_tasks: usize, exchange: &str) -> Self {
        Self {
            inner,
            tracker: WatermarkTracker::new(upstream_tasks),
            upstream: vec![Upstream::Active(EventTime::MIN); upstream_tasks],
            asserted: EventTime::MIN,
            exchange: exchange.to_string(),
        }
    }

    fn restore(&mut self, states: Vec<Upstream>) -> Result<()> {
        for (from, state) in states.into_iter().enumerate() {
            match state {
                Upstream::Active(w) => self.apply(from, Control::Watermark(w))?,
                Upstream::Idle(w) => {
                    self.apply(from, Control::Watermark(w))?;
                    self.apply(from, Control::Idle)?;
                }
                Upstream::Finished => self.apply(from, Control::End)?,
            }
        }
        self.asserted = self.tracker.current();
        Ok(())
    }

    fn apply(&mut self, from: usize, control: Control) -> Result<()> {
        let Some(state) = self.upstream.get_mut(from) else {
            return Err(Error::external(
                format!("the keyed exchange '{}' between workers", self.exchange),
                "read a control record",
                format!(
                    "it comes from upstream task {from}, and the exchange has {} upstream \
                     tasks: was it written by another version of the job?",
                    self.upstream.len()
                ),
            ));
        };
        match control {
            Control::Watermark(w) => {
                *state = Upstream::Active(w);
                self.tracker.on_watermark(from, w);
            }
            Control::Idle => {
                let w = match *state {
                    Upstream::Active(w) | Upstream::Idle(w) => w,
                    Upstream::Finished => EventTime::MAX,
                };
                *state = Upstream::Idle(w);
                self.tracker.on_idle(from);
            }
            Control::End => {
                *state = Upstream::Finished;
                self.tracker.on_finished(from);
            }
        }
        Ok(())
    }
}

impl SourceReader<RemoteRecord> for RepartitionReader {
    fn poll(&mut self, out: &mut SourceOutput<RemoteRecord>) -> Result<SourceStatus> {
        let mut raw = SourceOutput::new(out.remaining());
        let status = self.inner.poll(&mut raw)?;
        for record in raw.take_records() {
            match record.value {
                Incoming::Record { record, .. } => out.push(Record {
                    timestamp: record.timestamp,
                    lateness_watermark: record.lateness_watermark,
                    value: record,
                }),
                Incoming::Control { from, control } => self.apply(from, control)?,
            }
        }
        for rejected in raw.take_rejected() {
            out.reject(rejected);
        }
        let current = self.tracker.current();
        if current > self.asserted {
            self.asserted = current;
            out.watermark(current);
        }
        if current == EventTime::MAX {
            return Ok(SourceStatus::Finished);
        }
        Ok(match status {
            // The topic never ends; only the upstream tasks end it.
            SourceStatus::Finished => SourceStatus::Pending,
            other => other,
        })
    }

    fn offset(&self) -> Option<SourceOffset> {
        let inner = self.inner.offset()?;
        Some(SourceOffset(Upstreams::encode(&self.upstream, &inner.0)))
    }

    fn progress(&self) -> Option<tideline_engine::PartitionProgress> {
        self.inner.progress()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_states_survive_the_offset() -> Result<()> {
        let states = vec![
            Upstream::Active(EventTime::from_millis(-5)),
            Upstream::Idle(EventTime::from_millis(70)),
            Upstream::Finished,
        ];
        let offset = Upstreams::encode(&states, &[9, 8]);
        let (back, inner) = Upstreams::decode(&offset, 3, "x")?;
        assert_eq!((back, inner), (states, &[9u64, 8][..]));
        let text =
            |r: Result<(Vec<Upstream>, &[u64])>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text(Upstreams::decode(&offset, 2, "x")).contains("3 upstream tasks"));
        assert!(text(Upstreams::decode(&offset[..4], 3, "x")).contains("too few"));
        assert!(text(Upstreams::decode(&[], 3, "x")).contains("empty"));
        Ok(())
    }
}
