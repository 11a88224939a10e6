//! Tideline's engine: the job graph, the parallel runtime, event time and
//! watermarks.
//!
//! Entry point: [`Job`]. Add sources with [`Job::source`], transform the
//! [`Stream`]s they return, end them in sinks, and [`Job::run`]. Operators
//! (in `tideline-operators`) are built on [`Stream::transform`] and
//! [`KeyedStream::transform`] with the [`Operator`] trait.
//!
//! Runtime invariants:
//! - each operator runs as `parallelism` subtasks (sources: one per partition
//!   at most); chained operators share a task and call each other directly;
//! - channels carry batches, watermarks and end-of-input in order, and are
//!   bounded, so a slow consumer slows its producers (backpressure);
//! - an operator's watermark is the minimum over its input channels (idle
//!   ones left out, finished ones at `+inf`), and never goes backwards;
//! - lateness is judged per source partition: every record carries its
//!   partition's watermark just before it ([`Record::lateness_watermark`]),
//!   kept through chains and exchanges (see [`time::LatenessRule`]);
//! - at the end of input the watermark becomes `+inf` before the end is
//!   signalled, so every timer fires;
//! - the first failure of any task stops the whole job and is what
//!   [`Job::run`] returns, naming the operator.

pub mod checkpoint;
mod config;
mod error;
mod graph;
pub mod metrics;
mod operator;
mod record;
mod runtime;
mod sink;
mod source;
pub mod time;

pub use checkpoint::{
    AbortedCheckpoint, CheckpointConfig, CheckpointStats, CheckpointStore, FileSum, LocalDirectory,
    RestoreContext, RestoreFrom, SnapshotWriter,
};
pub use config::{ExecutionMode, FailurePolicy, JobConfig, RestartStrategy};
pub use error::{BoxError, Error, ErrorDomain, Result};
pub use graph::{
    Job, JobPart, KeySelector, KeyedInput, KeyedStream, RemoteEdge, RemoteExchange, RemoteRecord,
    SinkHandle, Stage, StageLayout, Stream, TaskCheckpointStores,
};
pub use operator::{DeadLetter, Operator, OperatorContext, Output, OutputTag, StateSize};
pub use record::{Data, Record};
pub use runtime::executor::{JobHandle, LocalRun};
pub use runtime::metrics::{JobSummary, OperatorSummary};
pub use runtime::stop::StopHandle;
pub use sink::{Committer, Sink, SubtaskInfo};
pub use source::{
    PartitionProgress, ReaderContext, Rejected, Source, SourceOffset, SourceOutput, SourceReader,
    SourceStatus,
};
#[cfg(feature = "rocksdb")]
pub use tideline_state::RocksDbOptions;
pub use tideline_state::StateBackend;
pub use time::{EventTime, Watermark};
