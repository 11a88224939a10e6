//! The channels into each node's subtasks, created while tasks are built.
//! Every upstream subtask of every input edge sends into the one receiver of
//! a downstream subtask, tagging messages with its channel index there.

use std::any::Any;
use std::collections::HashMap;

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};
use crate::record::Envelope;

struct NodeChannels<T> {
    senders: Vec<Sender<Envelope<T>>>,
    receivers: Vec<Option<Receiver<Envelope<T>>>>,
}

/// Channel capacity in batches; `None` means unbounded (the local executor,
/// which must never block on a send).
pub(crate) struct Channels {
    capacity: Option<usize>,
    nodes: HashMap<usize, Box<dyn Any>>,
}

impl Channels {
    pub(crate) fn new(capacity: Option<usize>) -> Self {
        Self {
            capacity,
            nodes: HashMap::new(),
        }
    }

    fn node<T: Send + 'static>(
        &mut self,
        node: usize,
        parallelism: usize,
    ) -> Result<&mut NodeChannels<T>> {
        let capacity = self.capacity;
        let entry = self.nodes.entry(node).or_insert_with(|| {
            let (senders, receivers) = (0..parallelism)
                .map(|_| {
                    let (s, r) = match capacity {
                        Some(c) => crossbeam_channel::bounded(c),
                        None => crossbeam_channel::unbounded(),
                    };
                    (s, Some(r))
                })
                .unzip();
            Box::new(NodeChannels::<T> { senders, receivers })
        });
        entry
            .downcast_mut::<NodeChannels<T>>()
            .ok_or_else(|| Error::Internal(format!("channel type mismatch for node {node}")))
    }

    /// Senders to every subtask of `node`.
    pub(crate) fn senders<T: Send + 'static>(
        &mut self,
        node: usize,
        parallelism: usize,
    ) -> Result<Vec<Sender<Envelope<T>>>> {
        Ok(self.node::<T>(node, parallelism)?.senders.clone())
    }

    /// The receiver of subtask `subtask` of `node` (taken once).
    pub(crate) fn receiver<T: Send + 'static>(
        &mut self,
        node: usize,
        parallelism: usize,
        subtask: usize,
    ) -> Result<Receiver<Envelope<T>>> {
        self.node::<T>(node, parallelism)?
            .receivers
            .get_mut(subtask)
            .and_then(Option::take)
            .ok_or_else(|| {
                Error::Internal(format!(
                    "receiver of node {node} subtask {subtask} taken twice"
                ))
            })
    }
}
