//! # Tideline
//!
//! Event-time stream processing for Rust: the same job code runs live over
//! unbounded sources and over historical data, with the same answers.
//!
//! Start with [`prelude`]: build a [`Job`], add sources, transform the
//! [`Stream`]s, end them in sinks, and run.
//!
//! ```
//! use tideline::prelude::*;
//! use std::time::Duration;
//!
//! let job = Job::new().mode(ExecutionMode::Bounded);
//! let totals = CollectSink::new();
//! job.source(
//!     VecSource::timestamped(vec![(1_000, ("a", 1)), (1_500, ("b", 2)), (2_000, ("a", 3))]),
//!     WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(500)),
//! )
//! .filter(|(_, v)| *v > 0)
//! .map(|(k, v)| (k.to_string(), v))
//! .sink(totals.clone());
//! let summary = job.run()?;
//! assert_eq!(totals.len(), 3);
//! assert_eq!(summary.operator("map").map(|o| o.records_out), Some(3));
//! # Ok::<(), tideline::Error>(())
//! ```
//!
//! Crates behind the facade: [`engine`] (job graph, runtime, time),
//! [`operators`] (transforms, process functions, connectors, [`testing`]) and
//! [`state`] (keyed state).

pub use tideline_engine as engine;
pub use tideline_engine::{
    time, CheckpointConfig, CheckpointStats, Committer, Data, DeadLetter, Error, ErrorDomain,
    EventTime, ExecutionMode, FailurePolicy, Job, JobConfig, JobHandle, JobSummary, KeyedStream,
    LocalRun, Operator, OperatorContext, OperatorSummary, Output, OutputTag, ReaderContext, Record,
    RestoreContext, RestoreFrom, Result, RocksDbOptions, Sink, SnapshotWriter, Source,
    SourceOffset, SourceOutput, SourceReader, SourceStatus, StateBackend, Stream, SubtaskInfo,
    Watermark,
};
pub use tideline_operators as operators;
pub use tideline_operators::{connectors, join, process, stateless, testing, window};
pub use tideline_state as state;

/// Everything a job needs, in one import: `use tideline::prelude::*;`.
pub mod prelude {
    pub use tideline_operators::connectors::{Rng, SeedableRng, SmallRng};
    pub use tideline_operators::join::{Either, JoinExt};
    pub use tideline_operators::prelude::*;
    pub use tideline_operators::window::{
        AggregateFunction, Avg, Count, CountTrigger, EarlyFiring, Firing, GlobalWindows, Max, Min,
        Session, Sliding, Sum, TimeWindow, Trigger, TriggerContext, TriggerResult, Tumbling,
        WindowExt, WindowInfo, WindowResult,
    };
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
