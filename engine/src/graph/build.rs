//! Validation and translation of a [`Graph`] into runnable tasks.

use std::rc::Rc;
use std::sync::Arc;

use crate::checkpoint::coordinator::Coordinator;
use crate::checkpoint::hooks::{Hooks, SourceHook};
use crate::checkpoint::restore::Restored;
use crate::checkpoint::{CheckpointStorage, CompletedCheckpoint, RestoreFrom, SkippedCheckpoint};
use crate::config::ExecutionMode;
use crate::error::{Error, Result};
use crate::graph::context::{BuildCtx, EdgeLayout, NodeLayout};
use crate::graph::port::{Port, SideRegistry};
use crate::graph::remote::{DecodingSource, PartPlan, RecordCodec, RemoteWriter};
use crate::graph::{EdgeKind, Graph, NodeId, OpId, OpKind};
use crate::metrics::{
    EdgeKind as GraphEdgeKind, GraphEdge, GraphOperator, JobGraph, OpCounters, OperatorKind,
    RunMetrics, RunOperator, SourceTaskMetrics, TaskCounters,
};
use crate::record::Data;
use crate::runtime::channels::Channels;
use crate::runtime::exchange::{ExchangeWriter, KeyHashFn, Route};
use crate::runtime::executor::JobReport;
use crate::runtime::input_task::InputTask;
use crate::runtime::metrics::JobCounters;
use crate::runtime::push::BoxPush;
use crate::runtime::shared::Shared;
use crate::runtime::source_task::{Discovery, Partition, SourceTask};
use crate::runtime::task::{ChainHead, Task, TaskCheckpoint};
use crate::sink::SinkPush;
use crate::source::{ReaderContext, Source, SourceOffset};
use crate::time::WatermarkStrategy;
use crate::time::{EventTime, Periodic};

/// Everything a built job consists of: its tasks, their shared flags, and
/// the counters the summary is made from.
pub(crate) type BuiltJob = (Vec<Box<dyn Task>>, Arc<Shared>, JobReport);

/// Builds the task of one subtask of a node.
pub(crate) trait TaskFactory {
    fn build(&self, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn Task>>;
}

/// The head of a task whose chain starts at `port`, with `inputs`
/// watermark inputs; the task is named after `op` and the subtask.
fn chain_head<T: Data>(
    ctx: &mut BuildCtx<'_>,
    op: OpId,
    port: &Port<T>,
    inputs: usize,
) -> Result<ChainHead<T>> {
    let push = port.build(ctx)?;
    let node_name = ctx.op_names[op].to_string();
    let node_uid = ctx.op_uids[op].to_string();
    let mut head = ChainHead::new(
        Arc::from(format!("{node_name}[{}]", ctx.subtask)),
        push,
        inputs,
        Arc::clone(&ctx.config.clock),
        Arc::clone(&ctx.shared.cancel),
        ctx.task_counters(),
    );
    if let Some(restored) = ctx.restored {
        head.restored_watermark = restored
            .watermark(&node_uid, ctx.subtask, ctx.parallelism())
            .map(EventTime::from_millis);
    }
    head.checkpoint = ctx.coordinator.map(|c| TaskCheckpoint {
        coordinator: Arc::clone(c),
        task: ctx.task,
        node: node_uid,
        subtask: ctx.subtask,
    });
    Ok(head)
}

/// The consumer that ends a chain at an exchange into node `to`, edge
/// `edge`; in a task run, a keyed exchange into another stage writes to
/// the remote exchange instead (with `codec`).
pub(crate) fn exchange_writer<T: Data>(
    to: NodeId,
    edge: usize,
    kind: EdgeKind,
    hash: Option<KeyHashFn<T>>,
    codec: Option<RecordCodec<T>>,
) -> crate::graph::port::ConsumerFactory<T> {
    Box::new(move |ctx| {
        if let Some(plan) = ctx.part.filter(|plan| !plan.builds(to)) {
            return remote_writer(ctx, plan, to, hash.clone(), codec);
        }
        let target = &ctx.layout[to];
        let layout = target.edges[edge];
        let channel = if layout.forward {
            layout.channel_offset
        } else {
            layout.channel_offset + ctx.subtask
        };
        let all = ctx
            .channels
            .senders::<T>(to, target.parallelism, target.channels, channel)?;
        let (senders, route) = if layout.forward {
            let one = all
                .get(ctx.subtask)
                .cloned()
                .ok_or_else(|| Error::Internal("forward edge without a matching subtask".into()))?;
            (vec![one], Route::Forward)
        } else {
            let route = match (kind, &hash) {
                (EdgeKind::Keyed, Some(h)) => Route::Keyed {
                    hash: Arc::clone(h),
                    key_groups: ctx.config.key_groups,
                },
                (EdgeKind::Broadcast, _) => Route::Broadcast,
                _ => Route::Rebalance { next: ctx.subtask },
            };
            (all, route)
        };
        Ok(Box::new(ExchangeWriter::new(
            senders,
            route,
            ctx.config.batch_size,
            ctx.config.flush_interval_millis(),
            ctx.task_counters(),
        )) as BoxPush<T>)
    })
}

/// The consumer writing a keyed exchange into node `to` of another stage.
fn remote_writer<T: Data>(
    ctx: &mut BuildCtx<'_>,
    plan: &PartPlan,
    to: NodeId,
    hash: Option<KeyHashFn<T>>,
    codec: Option<RecordCodec<T>>,
) -> Result<BoxPush<T>> {
    let edge = plan.edge_into(to, ctx.node);
    let (Some(hash), Some(codec)) = (hash, codec) else {
        return Err(Error::config(
            format!("exchange '{}'", edge.exchange),
            "worker mode sends keyed exchanges between workers, and this one cannot \
             cross (a rebalance or broadcast, or an operator's internal key_by_local \
             over records that are not serde)",
        ));
    };
    let sink = plan.part.exchange.writer(&edge)?;
    let exchange_op = plan.exchange_op[to]
        .ok_or_else(|| Error::Internal(format!("keyed node {to} without an exchange operator")))?;
    // Its counters are its own: the exchange operator's are sized for the
    // downstream stage.
    open_sink_push(ctx, exchange_op, sink, Arc::default()).map(|sink| {
        Box::new(RemoteWriter {
            codec,
            hash,
            key_groups: ctx.config.key_groups,
            partitions: edge.downstream_tasks,
            exchange: edge.exchange.clone(),
            sink,
        }) as BoxPush<T>
    })
}

/// `sink`, opened as this subtask's, its committer registered under
/// operator `op`'s uid: what every sink of a chain is built as.
pub(crate) fn open_sink_push<T: Data, S: crate::sink::Sink<T>>(
    ctx: &mut BuildCtx<'_>,
    op: OpId,
    mut sink: S,
    counters: Arc<OpCounters>,
) -> Result<SinkPush<S>> {
    let info = ctx.subtask_info();
    let name = ctx.op_name(op);
    let uid = ctx.op_uid(op);
    sink.open(info).map_err(|e| e.in_operator(&name))?;
    let committer = sink.committer();
    if let Some(c) = &committer {
        ctx.register_committer(&uid, c);
    }
    let commit_at_end = committer.filter(|_| ctx.coordinator.is_none());
    Ok(SinkPush::new(
        name,
        uid,
        sink,
        counters,
        ctx.subtask,
        commit_at_end,
    ))
}

pub(crate) struct SourceFactory<T> {
    pub(crate) source: Arc<dyn Source<T>>,
    pub(crate) strategy: WatermarkStrategy<T>,
    pub(crate) head: Rc<Port<T>>,
    pub(crate) sides: Rc<SideRegistry>,
    pub(crate) op: OpId,
}

impl<T: Data> TaskFactory for SourceFactory<T> {
    fn build(&self, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn Task>> {
        let name = ctx.op_name(self.op);
        let uid = ctx.op_uid(self.op);
        if let Some(restored) = ctx.restored {
            let offsets = restored.checkpoint.metadata.source_offsets(&uid);
            self.source
                .restore_partitions(&offsets)
                .map_err(|e| e.in_operator(&name))?;
        }
        let total = self.source.partitions();
        let reader_ctx = ReaderContext {
            clock: Arc::clone(&ctx.config.clock),
            partitions: total,
            subtask: ctx.subtask_info(),
        };
        let partitions = (ctx.subtask..total)
            .step_by(ctx.parallelism())
            .map(|p| {
                let restored = ctx.restored.and_then(|r| r.partition(&uid, p));
                let mut generator = self.strategy.generator();
                let reader = match restored {
                    Some(state) => {
                        generator.restore(
                            EventTime::from_millis(state.max_timestamp),
                            EventTime::from_millis(state.explicit_watermark),
                        );
                        let offset = SourceOffset(state.offset.clone());
                        self.source.create_reader_at(p, &reader_ctx, &offset)
                    }
                    None => self.source.create_reader(p, &reader_ctx),
                }
                .map_err(|e| e.in_operator(&name))?;
                Ok(Partition {
                    index: p,
                    reader,
                    generator,
                    finished: restored.is_some_and(|s| s.finished),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut head = chain_head(ctx, self.op, &self.head, partitions.len())?;
        head.sides = self.sides.build(ctx)?;
        ctx.hooks.add(Arc::new(SourceHook {
            uid: uid.to_string(),
            source: Arc::clone(&self.source),
        }));
        let discovery = self
            .source
            .partition_discovery_interval()
            .filter(|_| !self.source.is_bounded())
            .map(|interval| Discovery {
                source: Arc::clone(&self.source),
                strategy: self.strategy.clone(),
                reader_ctx: reader_ctx.clone(),
                every: Periodic::starting_at(ctx.config.clock.now_millis(), interval),
            });
        Ok(Box::new(SourceTask {
            head,
            partitions,
            discovery,
            timestamps: self.strategy.timestamps.clone(),
            started_at: ctx.config.clock.now_millis(),
            batch_size: ctx.config.batch_size,
            stop: Arc::clone(&ctx.shared.stop),
            counters: ctx.op_counters(self.op),
            job: Arc::clone(ctx.job_counters),
            failure_policy: ctx.config.failure_policy,
            operator: ctx.op_name(self.op),
            uid,
            last_barrier: 0,
            metrics: ctx.source_metrics(),
            sampling: Periodic::new(crate::metrics::SAMPLE_INTERVAL_MILLIS),
        }))
    }
}

pub(crate) struct InputFactory<T> {
    pub(crate) head: Rc<Port<T>>,
    pub(crate) op: OpId,
    /// How a keyed exchange's records cross workers.
    pub(crate) codec: Option<RecordCodec<T>>,
}

impl<T: Data> InputFactory<T> {
    /// In a task run, a node behind a keyed exchange from another stage
    /// reads that exchange as a source: watermarks only as its reader
    /// asserts them, lateness watermarks as the records carry them.
    fn remote_input(&self, ctx: &mut BuildCtx<'_>) -> Option<Result<Box<dyn Task>>> {
        let plan = ctx.part?;
        let node = &ctx.nodes[ctx.node];
        let from = node.inputs.iter().find(|e| !plan.builds(e.from))?.from;
        Some(self.read_remote(ctx, plan, from))
    }

    fn read_remote(
        &self,
        ctx: &mut BuildCtx<'_>,
        plan: &PartPlan,
        from: NodeId,
    ) -> Result<Box<dyn Task>> {
        let edge = plan.edge_into(ctx.node, from);
        let (Some(codec), true) = (self.codec, ctx.nodes[ctx.node].inputs.len() == 1) else {
            return Err(Error::config(
                format!("exchange '{}'", edge.exchange),
                "worker mode reads keyed exchanges from other workers, and this one cannot \
                 cross (several inputs, or an operator's internal key_by_local over records \
                 that are not serde)",
            ));
        };
        let source = DecodingSource {
            inner: plan.part.exchange.reader(&edge)?,
            codec,
            exchange: edge.exchange.clone(),
        };
        SourceFactory {
            source: Arc::new(source),
            strategy: WatermarkStrategy::asserted_only(),
            head: Rc::clone(&self.head),
            sides: Rc::new(SideRegistry::default()),
            op: self.op,
        }
        .build(ctx)
    }
}

impl<T: Data> TaskFactory for InputFactory<T> {
    fn build(&self, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn Task>> {
        if let Some(task) = self.remote_input(ctx) {
            return task;
        }
        let layout = &ctx.layout[ctx.node];
        let (parallelism, channels) = (layout.parallelism, layout.channels);
        let receivers =
            ctx.channels
                .receivers::<T>(ctx.node, parallelism, channels, ctx.subtask)?;
        let head = chain_head(ctx, self.op, &self.head, channels)?;
        let timeout = ctx
            .config
            .checkpointing
            .as_ref()
            .and_then(|c| c.alignment_timeout);
        Ok(Box::new(InputTask::new(head, receivers, timeout)))
    }
}

/// A drained job's last checkpoint has every window fired and the
/// watermark at `+inf`: resuming from it would make every new record late.
fn refuse_drained(checkpoint: &CompletedCheckpoint) -> Result<()> {
    if checkpoint.metadata.drained {
        return Err(Error::Checkpoint {
            path: checkpoint.dir().display().to_string(),
            reason: "this is the last checkpoint of a job stopped with a drain \
                     (stop_and_drain: every window fired, the watermark is +inf), \
                     so resuming from it would treat every new record as late; \
                     stop with a savepoint to resume later, or restore an earlier checkpoint"
                .into(),
        });
    }
    Ok(())
}

impl Graph {
    /// The checkpoint to restore from, and newer ones passed over.
    fn resolve_restore(&self) -> Result<(Option<Restored>, Vec<SkippedCheckpoint>)> {
        match &self.config.restore {
            None => Ok((None, Vec::new())),
            Some(RestoreFrom::Path(dir)) => {
                let checkpoint = CheckpointStorage::open_dir(dir)?;
                Ok((Some(Restored::new(checkpoint)), Vec::new()))
            }
            Some(RestoreFrom::Latest) => {
                let Some(cp) = &self.config.checkpointing else {
                    return Err(Error::config(
                        "restore",
                        "RestoreFrom::Latest needs a checkpoint directory: call job.checkpointing(...) first",
                    ));
                };
                let storage = cp.storage()?;
                let (latest, skipped) = storage.latest()?;
                if latest.is_none() && !skipped.is_empty() {
                    let reasons: Vec<String> = skipped
                        .iter()
                        .map(|s| format!("checkpoint {}: {}", s.id, s.reason))
                        .collect();
                    return Err(Error::Checkpoint {
                        path: cp.location(),
                        reason: format!(
                            "no checkpoint verifies, refusing to start over: {}",
                            reasons.join("; ")
                        ),
                    });
                }
                Ok((latest.map(Restored::new), skipped))
            }
        }
    }

    /// The uid checkpoints use for `op`. An exchange (the head of a node
    /// behind `key_by`, `union`...) is named after its position (`key_by#2`),
    /// which shifts when the job changes; it takes the uid of the first
    /// operator it feeds instead, so its node's watermark follows that
    /// operator.
    fn effective_uid(&self, op: &crate::graph::Op) -> String {
        if op.kind != OpKind::Exchange || op.uid.is_some() {
            return op.uid().to_string();
        }
        self.ops
            .iter()
            .find(|o| o.node == op.node && o.kind != OpKind::Exchange)
            .map_or_else(|| op.uid().to_string(), |o| format!("{}@input", o.uid()))
    }

    /// Refuses a checkpoint that holds state, offsets or transactions under
    /// a uid this job does not have (it would be dropped silently), unless
    /// the job allows it.
    fn check_restored_uids(&self, restored: &Restored, uids: &[Arc<str>]) -> Result<()> {
        if self.config.allow_non_restored_state {
            return Ok(());
        }
        let meta = &restored.checkpoint.metadata;
        let held = meta
            .operators
            .keys()
            .chain(meta.sources.keys())
            .chain(meta.transactions.keys());
        let mut unknown: Vec<&str> = held
            .map(String::as_str)
            .filter(|uid| !uids.iter().any(|u| &**u == *uid))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(Error::config(
            "restore",
            format!(
                "checkpoint {} holds state for operators this job no longer has (uids: {}); \
                 give the operators their old uids with .uid(...), or drop that state with \
                 job.allow_non_restored_state(true)",
                restored.checkpoint.id(),
                unknown.join(", ")
            ),
        ))
    }

    /// Checks the graph; `uids` are the operators' effective uids, in order.
    fn validate(&self, uids: &[Arc<str>]) -> Result<()> {
        self.config.validate()?;
        if !self.ops.iter().any(|o| o.kind == OpKind::Sink) {
            return Err(Error::NoSink);
        }
        for (i, op) in self.ops.iter().enumerate() {
            if self.ops[..i].iter().any(|o| o.name == op.name) {
                return Err(Error::config(
                    format!("operator '{}'", op.name),
                    "two operators have this name; names must be unique",
                ));
            }
            if uids[..i].contains(&uids[i]) {
                return Err(Error::config(
                    format!("operator '{}'.uid", op.name),
                    format!("uid '{}' is used twice; uids must be unique", uids[i]),
                ));
            }
            if op.kind != OpKind::Sink && op.ports.iter().all(|p| p.consumer_count() == 0) {
                return Err(Error::DanglingStream {
                    operator: op.name.clone(),
                });
            }
            if let Some(check) = &op.validate {
                check().map_err(|e| e.in_operator(&op.name))?;
            }
        }
        for node in &self.nodes {
            if let Some(src) = &node.source {
                if src.partitions == 0 {
                    return Err(Error::config(
                        format!("source '{}'.partitions", src.name),
                        "a source needs at least one partition",
                    ));
                }
                if self.config.mode == ExecutionMode::Bounded && !src.bounded {
                    return Err(Error::UnboundedSource {
                        source_name: src.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    fn layout(&self, part: Option<&PartPlan>) -> Vec<NodeLayout> {
        let parallelism: Vec<usize> = match part {
            Some(plan) => plan.parallelism.clone(),
            None => self
                .nodes
                .iter()
                .map(|n| match &n.source {
                    Some(s) => s.partitions.min(self.config.parallelism),
                    None => self.config.parallelism,
                })
                .collect(),
        };
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let mut offset = 0;
                let edges = node
                    .inputs
                    .iter()
                    .map(|e| {
                        let forward =
                            e.kind == EdgeKind::Forward && parallelism[e.from] == parallelism[i];
                        let layout = EdgeLayout {
                            forward,
                            channel_offset: offset,
                        };
                        offset += if forward { 1 } else { parallelism[e.from] };
                        layout
                    })
                    .collect();
                NodeLayout {
                    parallelism: parallelism[i],
                    channels: offset,
                    edges,
                }
            })
            .collect()
    }

    /// Validates the graph and builds every task. `capacity` is the channel
    /// capacity in batches (`None`: unbounded, for the local executor).
    ///
    /// The graph stays as it was, so a failed run can be built again (a
    /// restart restores the new tasks from the latest checkpoint); every
    /// build counts records afresh.
    pub(crate) fn build(&self, capacity: Option<usize>) -> Result<BuiltJob> {
        self.build_part(capacity, None)
    }

    /// [`Graph::build`], of only the task `part` plans when there is one
    /// (worker mode; see [`remote`](crate::graph::remote)).
    pub(crate) fn build_part(
        &self,
        capacity: Option<usize>,
        part: Option<&PartPlan>,
    ) -> Result<BuiltJob> {
        let op_uids: Vec<Arc<str>> = self
            .ops
            .iter()
            .map(|o| Arc::from(self.effective_uid(o).as_str()))
            .collect();
        self.validate(&op_uids)?;
        let layout = self.layout(part);
        let op_names: Vec<Arc<str>> = self
            .ops
            .iter()
            .map(|o| Arc::from(o.name.as_str()))
            .collect();
        let op_counters: Vec<Vec<Arc<OpCounters>>> = self
            .ops
            .iter()
            .map(|o| per_subtask(layout[o.node].parallelism))
            .collect();
        let task_counters: Vec<Vec<Arc<TaskCounters>>> =
            layout.iter().map(|l| per_subtask(l.parallelism)).collect();
        let source_metrics: Vec<Vec<Arc<SourceTaskMetrics>>> = self
            .nodes
            .iter()
            .zip(&layout)
            .map(|(n, l)| match n.source {
                Some(_) => per_subtask(l.parallelism),
                None => Vec::new(),
            })
            .collect();
        let job_counters = Arc::new(JobCounters::new(
            Arc::clone(&self.metrics.dead_letters),
            Arc::clone(&self.config.clock),
        ));
        let shared = Arc::new(Shared::default());
        let (restored, skipped_checkpoints) = self.resolve_restore()?;
        if let Some(restored) = &restored {
            refuse_drained(&restored.checkpoint)?;
            self.check_restored_uids(restored, &op_uids)?;
            tracing::info!(
                checkpoint = restored.checkpoint.id(),
                path = %restored.checkpoint.dir().display(),
                skipped = skipped_checkpoints.len(),
                "restoring from a checkpoint"
            );
        }
        let task_count: usize = match part {
            Some(plan) => (0..layout.len()).filter(|&n| plan.builds(n)).count(),
            None => layout.iter().map(|l| l.parallelism).sum(),
        };
        let coordinator = match &self.config.checkpointing {
            Some(cp) => Some(Coordinator::start(
                cp.storage()?,
                cp.retain,
                cp.interval,
                Arc::clone(&self.config.clock),
                task_count,
                Arc::clone(&shared),
                restored.as_ref().map(|r| r.checkpoint.id()),
            )?),
            None => None,
        };
        // A build that fails from here on must not leave the checkpoint
        // thread waiting for work forever.
        let built = self.build_tasks(
            capacity,
            &layout,
            &op_names,
            &op_uids,
            Counters {
                ops: &op_counters,
                tasks: &task_counters,
                sources: &source_metrics,
                job: &job_counters,
            },
            &shared,
            coordinator.as_ref(),
            restored.as_ref(),
            part,
        );
        let (tasks, hooks) = match built {
            Ok(built) => built,
            Err(e) => {
                if let Some(c) = &coordinator {
                    c.shutdown();
                }
                return Err(e);
            }
        };
        if let Some(c) = &coordinator {
            c.set_hooks(hooks);
        }
        self.stop.attach(&shared, coordinator.as_ref());
        let graph = self.job_graph(&layout);
        self.metrics.begin_run(RunMetrics {
            operators: self
                .ops
                .iter()
                .enumerate()
                .filter(|(_, o)| o.kind != OpKind::Exchange)
                .zip(&graph.operators)
                .map(|((op, o), info)| RunOperator {
                    info: info.clone(),
                    counters: op_counters[op].clone(),
                    tasks: task_counters[o.node].clone(),
                    partitions: if o.kind == OpKind::Source {
                        source_metrics[o.node].clone()
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
            graph,
            job: Arc::clone(&job_counters),
            coordinator: coordinator.clone(),
            clock: Arc::clone(&self.config.clock),
            restored_from: restored.as_ref().map(|r| r.checkpoint.id()),
        });
        let report = JobReport {
            operators: self
                .ops
                .iter()
                .zip(&op_counters)
                .filter(|(o, _)| o.kind != OpKind::Exchange)
                .map(|(o, counters)| (o.name.clone(), layout[o.node].parallelism, counters.clone()))
                .collect(),
            counters: job_counters,
            coordinator,
            restored_from: restored.as_ref().map(|r| r.checkpoint.id()),
            skipped_checkpoints,
            stop: self.stop.clone(),
            metrics: Arc::clone(&self.metrics),
            attachments: Vec::new(),
        };
        Ok((tasks, shared, report))
    }

    /// Builds every task (and collects the completion hooks), then runs the
    /// restore hooks of the checkpoint restored from.
    #[allow(clippy::too_many_arguments)]
    fn build_tasks(
        &self,
        capacity: Option<usize>,
        layout: &[NodeLayout],
        op_names: &[Arc<str>],
        op_uids: &[Arc<str>],
        counters: Counters<'_>,
        shared: &Arc<Shared>,
        coordinator: Option<&Arc<Coordinator>>,
        restored: Option<&Restored>,
        part: Option<&PartPlan>,
    ) -> Result<(Vec<Box<dyn Task>>, Hooks)> {
        let mut hooks = Hooks::default();
        let mut channels = Channels::new(capacity);
        let mut tasks = Vec::new();
        for (node_id, node) in self.nodes.iter().enumerate() {
            let subtasks = match part {
                Some(plan) if !plan.builds(node_id) => 0..0,
                Some(plan) => plan.part.task..plan.part.task + 1,
                None => 0..layout[node_id].parallelism,
            };
            for subtask in subtasks {
                let mut ctx = BuildCtx {
                    config: &self.config,
                    layout,
                    op_names,
                    op_uids,
                    op_counters: counters.ops,
                    task_counters: counters.tasks,
                    source_metrics: counters.sources,
                    channels: &mut channels,
                    job_counters: counters.job,
                    shared,
                    node: node_id,
                    subtask,
                    task: tasks.len(),
                    coordinator,
                    restored,
                    hooks: &mut hooks,
                    nodes: &self.nodes,
                    part,
                };
                tasks.push(node.factory.build(&mut ctx)?);
            }
        }
        if let Some(restored) = restored {
            restored.clean_up();
            // Sinks' leftovers go, the restored checkpoint's transactions are
            // committed (again) and its sources told again: its output is
            // visible, nothing after it.
            hooks.restoring(&restored.checkpoint.metadata)?;
        }
        // Dropping the registry drops the original senders: a receiver then
        // disconnects exactly when every upstream task has ended.
        drop(channels);
        Ok((tasks, hooks))
    }
}

/// The metric cells a build hands to every task factory.
#[derive(Clone, Copy)]
struct Counters<'a> {
    ops: &'a [Vec<Arc<OpCounters>>],
    tasks: &'a [Vec<Arc<TaskCounters>>],
    sources: &'a [Vec<Arc<SourceTaskMetrics>>],
    job: &'a Arc<JobCounters>,
}

fn per_subtask<C: Default>(parallelism: usize) -> Vec<Arc<C>> {
    (0..parallelism).map(|_| Arc::default()).collect()
}

fn operator_kind(kind: OpKind) -> OperatorKind {
    match kind {
        OpKind::Source => OperatorKind::Source,
        OpKind::Sink => OperatorKind::Sink,
        OpKind::Operator | OpKind::Exchange => OperatorKind::Operator,
    }
}

fn edge_kind(kind: EdgeKind) -> GraphEdgeKind {
    match kind {
        EdgeKind::Forward => GraphEdgeKind::Forward,
        EdgeKind::Rebalance => GraphEdgeKind::Rebalance,
        EdgeKind::Broadcast => GraphEdgeKind::Broadcast,
        EdgeKind::Keyed => GraphEdgeKind::Keyed,
    }
}

impl Graph {
    /// The name of node `node`'s head operator, which its tasks are named after.
    fn task_name(&self, node: NodeId) -> &str {
        self.ops
            .iter()
            .find(|o| o.node == node)
            .map_or("", |o| o.name.as_str())
    }

    /// The graph as the metrics show it: exchange operators become the
    /// kind of the edges through them.
    fn job_graph(&self, layout: &[NodeLayout]) -> JobGraph {
        let ids: Vec<Option<usize>> = {
            let mut next = 0;
            self.ops
                .iter()
                .map(|o| {
                    (o.kind != OpKind::Exchange).then(|| {
                        next += 1;
                        next - 1
                    })
                })
                .collect()
        };
        let operators = self
            .ops
            .iter()
            .zip(&ids)
            .filter_map(|(o, id)| {
                id.map(|id| GraphOperator {
                    id,
                    name: o.name.clone(),
                    kind: operator_kind(o.kind),
                    parallelism: layout[o.node].parallelism,
                    task: self.task_name(o.node).to_string(),
                })
            })
            .collect();
        let mut edges = Vec::new();
        for (op, id) in self.ops.iter().zip(&ids) {
            let Some(to) = *id else { continue };
            for &(from, kind) in &op.inputs {
                self.edges_into(from, kind, to, &ids, &mut edges);
            }
        }
        JobGraph { operators, edges }
    }

    /// Edges from `from` (through exchanges) into graph operator `to`.
    fn edges_into(
        &self,
        from: OpId,
        kind: Option<EdgeKind>,
        to: usize,
        ids: &[Option<usize>],
        edges: &mut Vec<GraphEdge>,
    ) {
        match ids[from] {
            Some(from) => edges.push(GraphEdge {
                from,
                to,
                kind: kind.map_or(GraphEdgeKind::Chained, edge_kind),
            }),
            None => {
                for &(upstream, exchange) in &self.ops[from].inputs {
                    // The exchange nearest the consumer decides how records
                    // reach it (a union feeding a key_by: keyed).
                    self.edges_into(upstream, kind.or(exchange), to, ids, edges);
                }
            }
        }
    }
}
