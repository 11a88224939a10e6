//! The channels into each node's subtasks, created while tasks are built.
//!
//! Every input channel of a subtask (one upstream subtask of one input edge,
//! or the one upstream subtask of a forward edge) is its own crossbeam
//! channel, indexed like the subtask's watermark inputs. Separate channels
//! let an input task stop reading one of them (barrier alignment) while its
//! sender fills the channel and blocks: backpressure instead of a buffer.

use std::any::Any;
use std::collections::HashMap;

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};
use crate::record::Message;

/// Per downstream subtask, per input channel.
struct NodeChannels<T> {
    senders: Vec<Vec<Sender<Message<T>>>>,
    receivers: Vec<Vec<Option<Receiver<Message<T>>>>>,
}

/// Channel capacity in batches, per input channel; `None` means unbounded
/// (the local executor, which must never block on a send).
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
        channels: usize,
    ) -> Result<&mut NodeChannels<T>> {
        let capacity = self.capacity;
        let entry = self.nodes.entry(node).or_insert_with(|| {
            let (senders, receivers) = (0..parallelism)
                .map(|_| {
                    (0..channels)
                        .map(|_| {
                            let (s, r) = match capacity {
                                Some(c) => crossbeam_channel::bounded(c),
                                None => crossbeam_channel::unbounded(),
                            };
                            (s, Some(r))
                        })
                        .unzip::<_, _, Vec<_>, Vec<_>>()
                })
                .unzip();
            Box::new(NodeChannels::<T> { senders, receivers })
        });
        entry
            .downcast_mut::<NodeChannels<T>>()
            .ok_or_else(|| Error::Internal(format!("channel type mismatch for node {node}")))
    }

    /// Senders into input channel `channel` of every subtask of `node`
    /// (which has `parallelism` subtasks of `channels` input channels each).
    pub(crate) fn senders<T: Send + 'static>(
        &mut self,
        node: usize,
        parallelism: usize,
        channels: usize,
        channel: usize,
    ) -> Result<Vec<Sender<Message<T>>>> {
        self.node::<T>(node, parallelism, channels)?
            .senders
            .iter()
            .map(|subtask| {
                subtask.get(channel).cloned().ok_or_else(|| {
                    Error::Internal(format!("node {node} has no input channel {channel}"))
                })
            })
            .collect()
    }

    /// The receivers of every input channel of subtask `subtask` of `node`
    /// (taken once).
    pub(crate) fn receivers<T: Send + 'static>(
        &mut self,
        node: usize,
        parallelism: usize,
        channels: usize,
        subtask: usize,
    ) -> Result<Vec<Receiver<Message<T>>>> {
        let taken = || {
            Error::Internal(format!(
                "receivers of node {node} subtask {subtask} taken twice"
            ))
        };
        self.node::<T>(node, parallelism, channels)?
            .receivers
            .get_mut(subtask)
            .ok_or_else(taken)?
            .iter_mut()
            .map(|r| r.take().ok_or_else(taken))
            .collect()
    }
}
