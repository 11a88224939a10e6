//! The job graph as users build it, and its translation into tasks.
//!
//! Users build *operators* connected by streams. Operators joined by a plain
//! stream run in the same task (chained: a direct call, no channel); a new
//! *node* — a new set of tasks behind channels — starts only at an exchange
//! (`key_by`, `rebalance`, `broadcast`, `union`) or a source. Each stream is a
//! [`port::Port`] holding the factories of its consumers; building a task walks
//! these factories from the node's head down to its sinks and exchange writers.

pub(crate) mod build;
pub(crate) mod context;
mod job;
pub(crate) mod port;
pub(crate) mod remote;
pub(crate) mod stages;
mod stream;

pub use job::Job;
pub use remote::{JobPart, RemoteEdge, RemoteExchange, RemoteRecord, TaskCheckpointStores};
pub use stages::{KeyedInput, Stage, StageLayout};
pub use stream::{KeySelector, KeyedStream, SinkHandle, Stream};

use std::rc::Rc;

use build::TaskFactory;
use port::AnyPort;

pub(crate) type NodeId = usize;
pub(crate) type OpId = usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EdgeKind {
    Forward,
    Rebalance,
    Broadcast,
    Keyed,
}

pub(crate) struct Edge {
    pub(crate) from: NodeId,
    pub(crate) kind: EdgeKind,
}

pub(crate) struct SourceInfo {
    pub(crate) name: String,
    pub(crate) partitions: usize,
    pub(crate) bounded: bool,
}

pub(crate) struct Node {
    pub(crate) source: Option<SourceInfo>,
    pub(crate) inputs: Vec<Edge>,
    pub(crate) factory: Box<dyn TaskFactory>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Source,
    Operator,
    Exchange,
    Sink,
}

pub(crate) struct Op {
    pub(crate) name: String,
    /// The stable identity its state, offsets and transactions are stored
    /// under; `None`: its name.
    pub(crate) uid: Option<String>,
    pub(crate) node: NodeId,
    pub(crate) kind: OpKind,
    pub(crate) ports: Vec<Rc<dyn AnyPort>>,
    /// The operators it reads from: chained (`None`) or over an exchange
    /// of that kind (exchange operators only).
    pub(crate) inputs: Vec<(OpId, Option<EdgeKind>)>,
    pub(crate) validate: Option<Box<dyn Fn() -> crate::Result<()>>>,
}

/// The whole graph under construction.
#[derive(Default)]
pub(crate) struct Graph {
    pub(crate) config: crate::config::JobConfig,
    pub(crate) nodes: Vec<Node>,
    pub(crate) ops: Vec<Op>,
    /// Stops whichever run of the job is current.
    pub(crate) stop: crate::runtime::stop::StopHandle,
    /// The job's metrics, over every run.
    pub(crate) metrics: std::sync::Arc<crate::metrics::JobMetrics>,
    /// Kept alive while the job runs (a web UI serving its metrics, say).
    pub(crate) attachments: Vec<Box<dyn std::any::Any + Send>>,
}

impl Op {
    /// Its uid: the one given with `.uid(...)`, else its name.
    pub(crate) fn uid(&self) -> &str {
        self.uid.as_deref().unwrap_or(&self.name)
    }
}

impl Graph {
    pub(crate) fn add_node(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Registers an operator whose output is `port`.
    pub(crate) fn add_op_with_port(
        &mut self,
        base: &str,
        node: NodeId,
        kind: OpKind,
        port: Rc<dyn AnyPort>,
    ) -> OpId {
        let op = self.add_op(base, node, kind);
        self.ops[op].ports.push(port);
        op
    }

    /// Registers an operator under a unique name (`map`, `map#2`, ...).
    pub(crate) fn add_op(&mut self, base: &str, node: NodeId, kind: OpKind) -> OpId {
        let taken = |n: &str| self.ops.iter().any(|o| o.name == n);
        let mut name = base.to_string();
        let mut i = 2;
        while taken(&name) {
            name = format!("{base}#{i}");
            i += 1;
        }
        self.ops.push(Op {
            name,
            uid: None,
            node,
            kind,
            ports: Vec::new(),
            inputs: Vec::new(),
            validate: None,
        });
        self.ops.len() - 1
    }
}
