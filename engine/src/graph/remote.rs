//! Worker mode, as the engine sees it: one **task** of the job (a stage of
//! [`StageLayout`](crate::StageLayout) at one partition) runs on its own,
//! and its keyed exchanges to and from other stages go through a
//! [`RemoteExchange`] (Kafka's repartition topics, in `tideline_kafka`)
//! instead of channels. The design and its failure analysis are in
//! `tideline_kafka::workers`.
//!
//! # What a task run is
//! [`Job::spawn_part`](crate::Job::spawn_part) builds, of the job's graph,
//! only the nodes of one stage and of them only the subtask `task`, at a
//! parallelism equal to the stage's partition count (its source's
//! partitions, or the repartition topics' for a stage behind a keyed
//! exchange). So subtask `task` reads source partition `task`, owns the
//! key groups a keyed exchange sends to partition `task`, and names its
//! state, offsets and transactions as the one-process job at that
//! parallelism would. Its checkpoints go to a directory of its own under
//! the job's.
//!
//! # Invariants
//! - A record crossing to another stage is written as a [`RemoteRecord`]:
//!   its value in postcard, the partition of the downstream task that owns
//!   its key group (the in-process exchange's mapping, so a key reaches the
//!   task it would reach in one process), its event time and its lateness
//!   watermark. Decoding gives the record back exactly; a value that does
//!   not decode, or leaves bytes over, is an error.
//! - A task behind a remote exchange takes its watermark only from what
//!   its reader asserts (the minimum over the upstream tasks, from their
//!   control records), and keeps every record's lateness watermark as the
//!   upstream task stamped it: late decisions are those of one process.
//! - Inside a stage, nodes are joined by forward edges only (subtask `p`
//!   feeds subtask `p`), so a task needs no other task of its stage;
//!   rebalance and broadcast edges are refused in worker mode.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tideline_state::key_group::{key_group_of_hash, subtask_for_key_group};

use crate::checkpoint::snapshot::BarrierCtx;
use crate::error::{Error, Result};
use crate::graph::{EdgeKind, Graph, NodeId, OpId, OpKind};
use crate::record::{Data, Record};
use crate::runtime::exchange::KeyHashFn;
use crate::runtime::push::Push;
use crate::sink::{Sink, SinkPush};
use crate::source::{
    ReaderContext, Source, SourceOffset, SourceOutput, SourceReader, SourceStatus,
};
use crate::time::{EventTime, Watermark};

/// A record as it crosses a keyed exchange between workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteRecord {
    /// The downstream task (repartition partition) that owns its key group.
    pub partition: u32,
    /// Its key group.
    pub key_group: u16,
    /// Its event time (as [`Record::timestamp`]).
    pub timestamp: EventTime,
    /// Its lateness watermark (as [`Record::lateness_watermark`]).
    pub lateness_watermark: EventTime,
    /// Its value, in postcard.
    pub value: Vec<u8>,
}

/// One keyed exchange between stages, as a task run sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEdge {
    /// The exchange's uid, as [`KeyedInput::exchange`](crate::KeyedInput)
    /// names it (what its repartition topic is named after).
    pub exchange: String,
    /// How many tasks write to it: the upstream stage's partition count.
    pub upstream_tasks: usize,
    /// How many tasks read it: its partition count.
    pub downstream_tasks: usize,
}

/// What carries keyed exchanges between workers. An upstream task writes
/// through a [`Sink`] (exactly once when its transactions commit with the
/// task's checkpoints); a downstream task reads partition `task` of a
/// [`Source`] whose reader asserts the watermark of all upstream tasks and
/// finishes when every one of them has reached `+inf`.
pub trait RemoteExchange: Send + Sync + fmt::Debug + 'static {
    /// The sink upstream tasks write `edge`'s records to (opened with the
    /// writing task as its subtask); it writes their watermarks on too.
    ///
    /// # Errors
    /// When it cannot be made (the message names the exchange).
    fn writer(&self, edge: &RemoteEdge) -> Result<Box<dyn Sink<RemoteRecord>>>;

    /// The source downstream tasks read `edge` from: one partition per
    /// downstream task.
    ///
    /// # Errors
    /// When it cannot be made (the message names the exchange).
    fn reader(&self, edge: &RemoteEdge) -> Result<Arc<dyn Source<RemoteRecord>>>;
}

/// Where the tasks of worker mode keep their checkpoints, when not in the
/// job's checkpoint directory (which then stages them): a store per task,
/// opened when the task starts, on whichever worker runs it.
pub trait TaskCheckpointStores: Send + Sync + fmt::Debug + 'static {
    /// The store of task `task` of stage `stage`, whose local staging
    /// directory is `staging`. Opening it may fence an earlier owner of
    /// the task (a store that can, should): from then on only this one
    /// completes the task's checkpoints.
    ///
    /// # Errors
    /// When the store cannot be reached or opened.
    fn open(
        &self,
        stage: usize,
        task: usize,
        staging: &std::path::Path,
    ) -> Result<Arc<dyn crate::CheckpointStore>>;
}

/// Which task of the job to run (see [`Job::spawn_part`](crate::Job::spawn_part)).
#[derive(Clone, Debug)]
pub struct JobPart {
    /// The stage's index in [`StageLayout::stages`](crate::StageLayout).
    pub stage: usize,
    /// The task: the partition of the stage's input it reads.
    pub task: usize,
    /// The partition count of every repartition topic (the task count of
    /// every stage behind a keyed exchange).
    pub repartition_partitions: usize,
    /// What carries the keyed exchanges between stages.
    pub exchange: Arc<dyn RemoteExchange>,
    /// Where the task's checkpoints are kept (`None`: in
    /// `<checkpoint dir>/stage-<s>-task-<t>`).
    pub checkpoint_stores: Option<Arc<dyn TaskCheckpointStores>>,
    /// The task count of every stage as the application runs it, when a
    /// source stage's topics may have gained partitions since it started
    /// (`None`: the sources' partition counts now). A source stage keeps
    /// its count `n`, and its task `t` reads partitions `t, t + n, …`, as
    /// subtask `t` of a one-process job at parallelism `n` does: a task's
    /// state, transactional ids and the exchanges' upstream counts stay
    /// the same, so running tasks are never renumbered.
    pub stage_tasks: Option<Vec<usize>>,
}

/// How a record type crosses workers: postcard both ways (captured where
/// the type is known to be serde, at `key_by`).
pub(crate) struct RecordCodec<T> {
    encode: fn(&T) -> std::result::Result<Vec<u8>, postcard::Error>,
    decode: fn(&[u8]) -> std::result::Result<T, String>,
}

impl<T> Clone for RecordCodec<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for RecordCodec<T> {}

impl<T: Serialize + DeserializeOwned> RecordCodec<T> {
    pub(crate) fn postcard() -> Self {
        Self {
            encode: |value| postcard::to_stdvec(value),
            decode: |bytes| match postcard::take_from_bytes(bytes) {
                Ok((value, [])) => Ok(value),
                Ok((_, rest)) => Err(format!("{} bytes left over after the value", rest.len())),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

/// The plan of one task run: which nodes it builds, at which parallelism.
pub(crate) struct PartPlan {
    pub(crate) part: JobPart,
    /// Per node, its stage.
    pub(crate) stage_of: Vec<usize>,
    /// Per node, its parallelism in worker mode (its stage's task count).
    pub(crate) parallelism: Vec<usize>,
    /// Per node, the uid of its keyed exchange (as the stage layout names it).
    pub(crate) exchange: Vec<String>,
    /// Per node, its exchange operator.
    pub(crate) exchange_op: Vec<Option<OpId>>,
}

impl PartPlan {
    /// Whether node `node` runs in this task run.
    pub(crate) fn builds(&self, node: NodeId) -> bool {
        self.stage_of[node] == self.part.stage
    }

    /// The keyed exchange into node `to`, seen from a task of this run.
    pub(crate) fn edge_into(&self, to: NodeId, from: NodeId) -> RemoteEdge {
        RemoteEdge {
            exchange: self.exchange[to].clone(),
            upstream_tasks: self.parallelism[from],
            downstream_tasks: self.parallelism[to],
        }
    }
}

impl Graph {
    /// Per node, its parallelism in worker mode: a source's partition
    /// count, `repartition_partitions` behind a keyed exchange, its input's
    /// behind a forward edge; refusing a graph worker mode cannot split.
    ///
    /// A source node runs with its stage's count from `source_tasks` when
    /// given (see [`JobPart::stage_tasks`]), else with its partition count.
    fn worker_parallelism(
        &self,
        repartition_partitions: usize,
        source_tasks: Option<&[usize]>,
    ) -> Result<Vec<usize>> {
        if repartition_partitions == 0 {
            return Err(Error::config(
                "workers.partitions",
                "repartition topics need at least one partition",
            ));
        }
        // A keyed edge inside a stage (a union of a stream with its own
        // keyed exchange) would need the stage's other tasks.
        let stage_of = self.node_stages();
        for (node, info) in self.nodes.iter().enumerate() {
            if info
                .inputs
                .iter()
                .any(|e| e.kind == EdgeKind::Keyed && stage_of[e.from] == stage_of[node])
            {
                return Err(Error::config(
                    format!("operator '{}'", self.exchange_uid(node)),
                    "worker mode cannot run a keyed exchange whose output joins its own \
                     stage again (a union with its input): key the union instead",
                ));
            }
        }
        // Nodes are created after their inputs, so one pass in order
        // knows every input's parallelism.
        let mut parallelism: Vec<usize> = Vec::with_capacity(self.nodes.len());
        for (node, info) in self.nodes.iter().enumerate() {
            let p = match &info.source {
                Some(source) => source_tasks
                    .and_then(|tasks| tasks.get(stage_of[node]).copied())
                    .unwrap_or(source.partitions),
                None => {
                    let name = self.exchange_uid(node);
                    let mut p = None;
                    for edge in &info.inputs {
                        let here = match edge.kind {
                            EdgeKind::Keyed => repartition_partitions,
                            EdgeKind::Forward => parallelism[edge.from],
                            EdgeKind::Rebalance | EdgeKind::Broadcast => {
                                return Err(Error::config(
                                    format!("operator '{name}'"),
                                    "worker mode cannot run rebalance or broadcast \
                                     exchanges yet: every task of a stage must need only \
                                     its own partition",
                                ))
                            }
                        };
                        if p.is_some_and(|p| p != here) {
                            return Err(Error::config(
                                format!("operator '{name}'"),
                                "in worker mode the inputs of a union must have as many \
                                 partitions as each other",
                            ));
                        }
                        p = Some(here);
                    }
                    p.unwrap_or(repartition_partitions)
                }
            };
            parallelism.push(p);
        }
        Ok(parallelism)
    }

    /// Per stage, its task count in worker mode (see
    /// [`Job::stage_tasks`](crate::Job::stage_tasks)).
    pub(crate) fn stage_tasks(
        &self,
        repartition_partitions: usize,
        source_tasks: Option<&[usize]>,
    ) -> Result<Vec<usize>> {
        let parallelism = self.worker_parallelism(repartition_partitions, source_tasks)?;
        Ok(tasks_per_stage(&parallelism, &self.node_stages()))
    }

    /// Plans the run of `part`, refusing a graph worker mode cannot split.
    pub(crate) fn part_plan(&self, part: &JobPart) -> Result<PartPlan> {
        let fixed = part.stage_tasks.as_deref();
        let parallelism = self.worker_parallelism(part.repartition_partitions, fixed)?;
        let stage_of = self.node_stages();
        let tasks = tasks_per_stage(&parallelism, &stage_of);
        let Some(&count) = tasks.get(part.stage) else {
            return Err(Error::config(
                "workers.part",
                format!(
                    "the job has {} stages, so there is no stage {}",
                    tasks.len(),
                    part.stage
                ),
            ));
        };
        if part.task >= count {
            return Err(Error::config(
                "workers.part",
                format!(
                    "stage {} has {count} tasks, so there is no task {}",
                    part.stage, part.task
                ),
            ));
        }
        let exchange_op = (0..self.nodes.len())
            .map(|n| {
                self.ops
                    .iter()
                    .position(|o| o.node == n && o.kind == OpKind::Exchange)
            })
            .collect();
        Ok(PartPlan {
            part: part.clone(),
            stage_of,
            parallelism,
            exchange: (0..self.nodes.len())
                .map(|n| self.exchange_uid(n))
                .collect(),
            exchange_op,
        })
    }

    /// The uid of node `node`'s exchange operator ("" when it has none).
    pub(crate) fn exchange_uid(&self, node: NodeId) -> String {
        self.ops
            .iter()
            .find(|o| o.node == node && o.kind == OpKind::Exchange)
            .map_or_else(String::new, |o| o.uid().to_string())
    }
}

/// Per stage, its task count: the largest parallelism of its nodes.
fn tasks_per_stage(parallelism: &[usize], stage_of: &[usize]) -> Vec<usize> {
    let mut tasks = vec![0; stage_of.iter().max().map_or(0, |m| m + 1)];
    for (node, &stage) in stage_of.iter().enumerate() {
        tasks[stage] = tasks[stage].max(parallelism[node]);
    }
    tasks
}

/// The checkpoint directory of task run `part` under the job's `dir`
/// (with a store of its own, only its staging directory).
pub(crate) fn part_checkpoint_dir(dir: &std::path::Path, part: &JobPart) -> PathBuf {
    dir.join(format!("stage-{}-task-{}", part.stage, part.task))
}

/// The end of a chain at a keyed exchange into another stage: records are
/// encoded, routed to their key group's partition, and handed to the
/// exchange's sink (which also gets the watermarks, barriers and the end).
pub(crate) struct RemoteWriter<T> {
    pub(crate) codec: RecordCodec<T>,
    pub(crate) hash: KeyHashFn<T>,
    pub(crate) key_groups: u16,
    pub(crate) partitions: usize,
    pub(crate) exchange: String,
    pub(crate) sink: SinkPush<Box<dyn Sink<RemoteRecord>>>,
}

impl<T: Data> RemoteWriter<T> {
    fn encode(&self, record: &Record<T>) -> Result<Record<RemoteRecord>> {
        let group = key_group_of_hash((self.hash)(&record.value)?, self.key_groups);
        let partition = subtask_for_key_group(group, self.key_groups, self.partitions);
        let value = (self.codec.encode)(&record.value).map_err(|e| {
            Error::user(format!(
                "a record of exchange '{}' cannot be encoded to cross workers: {e}",
                self.exchange
            ))
        })?;
        Ok(Record {
            timestamp: record.timestamp,
            lateness_watermark: record.lateness_watermark,
            value: RemoteRecord {
                partition: u32::try_from(partition).unwrap_or(u32::MAX),
                key_group: group,
                timestamp: record.timestamp,
                lateness_watermark: record.lateness_watermark,
                value,
            },
        })
    }
}

impl<T: Data> Push<T> for RemoteWriter<T> {
    fn push_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        let encoded = batch
            .iter()
            .map(|r| self.encode(r))
            .collect::<Result<Vec<_>>>()?;
        Push::<RemoteRecord>::push_batch(&mut self.sink, encoded)
    }

    fn push_watermark(&mut self, watermark: Watermark) -> Result<()> {
        Push::<RemoteRecord>::push_watermark(&mut self.sink, watermark)
    }

    fn on_tick(&mut self, now: i64) -> Result<()> {
        Push::<RemoteRecord>::on_tick(&mut self.sink, now)
    }

    fn push_barrier(&mut self, barrier: &mut BarrierCtx) -> Result<()> {
        Push::<RemoteRecord>::push_barrier(&mut self.sink, barrier)
    }

    fn finish(&mut self, last: Option<&mut BarrierCtx>) -> Result<()> {
        Push::<RemoteRecord>::finish(&mut self.sink, last)
    }

    fn stop(&mut self) -> Result<()> {
        Push::<RemoteRecord>::stop(&mut self.sink)
    }

    fn flush(&mut self) -> Result<()> {
        Push::<RemoteRecord>::flush(&mut self.sink)
    }
}

/// A keyed exchange from another stage, read as a source of `T`.
pub(crate) struct DecodingSource<T> {
    pub(crate) inner: Arc<dyn Source<RemoteRecord>>,
    pub(crate) codec: RecordCodec<T>,
    pub(crate) exchange: String,
}

impl<T: Data> DecodingSource<T> {
    fn decoding(&self, inner: Box<dyn SourceReader<RemoteRecord>>) -> Box<dyn SourceReader<T>> {
        Box::new(DecodingReader {
            inner,
            codec: self.codec,
            exchange: self.exchange.clone(),
        })
    }
}

impl<T: Data> Source<T> for DecodingSource<T> {
    fn name(&self) -> &str {
        &self.exchange
    }

    fn partitions(&self) -> usize {
        self.inner.partitions()
    }

    fn is_bounded(&self) -> bool {
        self.inner.is_bounded()
    }

    fn create_reader(
        &self,
        partition: usize,
        ctx: &ReaderContext,
    ) -> Result<Box<dyn SourceReader<T>>> {
        Ok(self.decoding(self.inner.create_reader(partition, ctx)?))
    }

    fn create_reader_at(
        &self,
        partition: usize,
        ctx: &ReaderContext,
        offset: &SourceOffset,
    ) -> Result<Box<dyn SourceReader<T>>> {
        Ok(self.decoding(self.inner.create_reader_at(partition, ctx, offset)?))
    }

    fn restore_partitions(&self, offsets: &[(usize, SourceOffset)]) -> Result<()> {
        self.inner.restore_partitions(offsets)
    }

    fn notify_checkpoint_complete(
        &self,
        checkpoint: u64,
        offsets: &[(usize, SourceOffset)],
    ) -> Result<()> {
        self.inner.notify_checkpoint_complete(checkpoint, offsets)
    }

    fn notify_checkpoint_aborted(&self, checkpoint: u64) -> Result<()> {
        self.inner.notify_checkpoint_aborted(checkpoint)
    }
}

struct DecodingReader<T> {
    inner: Box<dyn SourceReader<RemoteRecord>>,
    codec: RecordCodec<T>,
    exchange: String,
}

impl<T: Data> SourceReader<T> for DecodingReader<T> {
    fn poll(&mut self, out: &mut SourceOutput<T>) -> Result<SourceStatus> {
        let mut raw = SourceOutput::new(out.remaining());
        let status = self.inner.poll(&mut raw)?;
        for record in raw.records {
            let value = (self.codec.decode)(&record.value.value).map_err(|e| {
                Error::external(
                    format!("the keyed exchange '{}' between workers", self.exchange),
                    format!("decode a record of key group {}", record.value.key_group),
                    format!("{e}; was it written by another version of the job?"),
                )
            })?;
            out.records.push(Record {
                timestamp: record.value.timestamp,
                lateness_watermark: record.value.lateness_watermark,
                value,
            });
        }
        out.rejected.extend(raw.rejected);
        if let Some(w) = raw.watermark {
            out.watermark(w);
        }
        Ok(status)
    }

    fn offset(&self) -> Option<SourceOffset> {
        self.inner.offset()
    }

    fn progress(&self) -> Option<crate::source::PartitionProgress> {
        self.inner.progress()
    }
}
