//! The runtime: tasks, channels, exchanges and the two executors.
//!
//! A *task* is one subtask of a node: a source (or an input gate reading one
//! channel) followed by a chain of fused operators ending in sinks or exchange
//! writers. Tasks are steppable state machines ([`task::Task`]): the threaded
//! executor gives each its own thread and steps it with blocking waits; the
//! local executor (for `tideline::testing`) steps them all in the caller's
//! thread without blocking, so tests control exactly what has happened.

pub(crate) mod channels;
pub(crate) mod exchange;
pub(crate) mod executor;
pub(crate) mod input_task;
pub(crate) mod metrics;
pub(crate) mod push;
pub(crate) mod shared;
pub(crate) mod source_task;
pub(crate) mod stop;
pub(crate) mod task;
