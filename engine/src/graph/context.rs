//! What a task's factories see while one subtask is built: the job's
//! configuration and layout, its channels, counters and checkpoint
//! machinery. Kept apart from [`build`](super::build) so that ports (which
//! hold the factories) depend on this context only, not on the builder.

use std::sync::Arc;

use crate::checkpoint::coordinator::Coordinator;
use crate::checkpoint::hooks::{Hooks, SinkHook};
use crate::checkpoint::restore::Restored;
use crate::config::JobConfig;
use crate::graph::remote::PartPlan;
use crate::graph::{Node, NodeId, OpId};
use crate::metrics::{OpCounters, SourceTaskMetrics, TaskCounters};
use crate::operator::OperatorContext;
use crate::runtime::channels::Channels;
use crate::runtime::metrics::JobCounters;
use crate::runtime::shared::Shared;
use crate::sink::Committer;

/// Where an input edge lands in its node's channel numbering.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EdgeLayout {
    /// One channel per downstream subtask (same index upstream), no routing.
    pub(crate) forward: bool,
    pub(crate) channel_offset: usize,
}

#[derive(Debug)]
pub(crate) struct NodeLayout {
    pub(crate) parallelism: usize,
    pub(crate) channels: usize,
    pub(crate) edges: Vec<EdgeLayout>,
}

/// What consumer factories see while a subtask is built.
pub(crate) struct BuildCtx<'a> {
    pub(crate) config: &'a JobConfig,
    pub(crate) layout: &'a [NodeLayout],
    pub(crate) op_names: &'a [Arc<str>],
    pub(crate) op_uids: &'a [Arc<str>],
    /// Per operator, per subtask.
    pub(crate) op_counters: &'a [Vec<Arc<OpCounters>>],
    /// Per node, per subtask: the task's cells.
    pub(crate) task_counters: &'a [Vec<Arc<TaskCounters>>],
    /// Per node, per subtask: a source task's partitions (empty for other nodes).
    pub(crate) source_metrics: &'a [Vec<Arc<SourceTaskMetrics>>],
    pub(crate) channels: &'a mut Channels,
    pub(crate) job_counters: &'a Arc<JobCounters>,
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) node: NodeId,
    pub(crate) subtask: usize,
    /// This task's index among all tasks of the job.
    pub(crate) task: usize,
    pub(crate) coordinator: Option<&'a Arc<Coordinator>>,
    pub(crate) restored: Option<&'a Restored>,
    /// Completion hooks of sources and exactly-once sinks.
    pub(crate) hooks: &'a mut Hooks,
    /// The graph's nodes.
    pub(crate) nodes: &'a [Node],
    /// In a task run (worker mode), its plan.
    pub(crate) part: Option<&'a PartPlan>,
}

impl BuildCtx<'_> {
    pub(crate) fn op_name(&self, op: OpId) -> Arc<str> {
        Arc::clone(&self.op_names[op])
    }

    pub(crate) fn op_uid(&self, op: OpId) -> Arc<str> {
        Arc::clone(&self.op_uids[op])
    }

    /// The counters of operator `op` in the subtask being built.
    pub(crate) fn op_counters(&self, op: OpId) -> Arc<OpCounters> {
        Arc::clone(&self.op_counters[op][self.subtask])
    }

    /// The cells of the task being built.
    pub(crate) fn task_counters(&self) -> Arc<TaskCounters> {
        Arc::clone(&self.task_counters[self.node][self.subtask])
    }

    /// The partition cells of the source task being built.
    pub(crate) fn source_metrics(&self) -> Arc<SourceTaskMetrics> {
        self.source_metrics[self.node]
            .get(self.subtask)
            .map_or_else(Arc::default, Arc::clone)
    }

    pub(crate) fn parallelism(&self) -> usize {
        self.layout[self.node].parallelism
    }

    /// Which subtask is being built, for sinks and source readers.
    pub(crate) fn subtask_info(&self) -> crate::sink::SubtaskInfo {
        crate::sink::SubtaskInfo {
            subtask: self.subtask,
            parallelism: self.parallelism(),
            isolated: self.part.is_some(),
        }
    }

    pub(crate) fn operator_context(&self, op: OpId) -> OperatorContext {
        OperatorContext {
            name: self.op_name(op),
            uid: self.op_uid(op),
            subtask: self.subtask,
            parallelism: self.parallelism(),
            config: self.config.clone(),
        }
    }

    /// Registers the committer of an exactly-once sink (once per sink).
    pub(crate) fn register_committer(&mut self, sink: &str, committer: &Arc<dyn Committer>) {
        self.hooks.add(Arc::new(SinkHook {
            uid: sink.to_string(),
            committer: Arc::clone(committer),
        }));
    }
}
