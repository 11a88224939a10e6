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
//!
//! # Feature flags
//!
//! The default build is pure Rust: it needs no C/C++ toolchain and no system
//! package. It has in-memory keyed state, files read through Arrow/Parquet,
//! the generator, vector and push sources, and the CSV, JSON-lines and
//! Parquet sinks. Optional parts are behind Cargo features; an API whose
//! feature is off is absent (it does not compile), never a runtime error.
//!
//! - `rocksdb`: the RocksDB state backend, `StateBackend::RocksDb` with
//!   `RocksDbOptions`, for state larger than memory. Builds RocksDB from C++
//!   sources, which needs a C++ compiler and libclang (`libclang-dev clang`
//!   on Debian/Ubuntu).
//! - `sql`: SQL predicates of file sources,
//!   `FileSource::filter("value > 10 AND key <> 3")`, planned and evaluated
//!   by DataFusion.
//! - `kafka`: [`kafka::KafkaSource`] and [`kafka::KafkaSink`] (at least
//!   once or exactly once), on `rdkafka`; builds librdkafka from its bundled
//!   C sources, which needs a C compiler and `make`.
//! - `postgres`: [`postgres::PostgresCdcSource`] (log-based change data
//!   capture through logical replication, exactly once) and
//!   [`postgres::PostgresQuerySource`] (query-based); pure Rust.
//! - `postgres-tls`: TLS for them (`sslmode=verify-full sslrootcert=PATH`
//!   in the connection string), on rustls; builds C and assembly sources
//!   (ring, aws-lc).
//! - `web`: [`web::WebUi`], the HTTP endpoint of a running job
//!   (`job.web_ui("127.0.0.1:8081")` with [`web::JobWebUi`]): Prometheus
//!   `/metrics`, `/healthz` and `/readyz`, a JSON API and a live page;
//!   pure Rust (axum). Collecting the metrics ([`metrics`]) is always on.
//! - `full`: all of the above.
//!
//! ```toml
//! [dependencies]
//! tideline = { version = "0.1", features = ["rocksdb"] }
//! ```

pub use tideline_engine as engine;
#[cfg(feature = "rocksdb")]
pub use tideline_engine::RocksDbOptions;
pub use tideline_engine::{
    metrics, time, AbortedCheckpoint, CheckpointConfig, CheckpointStats, CheckpointStore,
    Committer, Data, DeadLetter, Error, ErrorDomain, EventTime, ExecutionMode, FailurePolicy, Job,
    JobConfig, JobHandle, JobPart, JobSummary, KeyedInput, KeyedStream, LocalDirectory, LocalRun,
    Operator, OperatorContext, OperatorSummary, Output, OutputTag, PartitionProgress,
    ReaderContext, Record, Rejected, RemoteEdge, RemoteExchange, RemoteRecord, RestartStrategy,
    RestoreContext, RestoreFrom, Result, Sink, SinkHandle, SnapshotWriter, Source, SourceOffset,
    SourceOutput, SourceReader, SourceStatus, Stage, StageLayout, StateBackend, StateSize,
    StopHandle, Stream, SubtaskInfo, TaskCheckpointStores, Watermark,
};
#[cfg(feature = "kafka")]
pub use tideline_kafka as kafka;
pub use tideline_operators as operators;
pub use tideline_operators::{changelog, connectors, join, process, stateless, testing, window};
#[cfg(feature = "postgres")]
pub use tideline_postgres as postgres;
pub use tideline_state as state;
#[cfg(feature = "web")]
pub use tideline_web as web;

pub mod logging;
pub mod progress;
#[cfg(unix)]
pub mod signals;

/// Everything a job needs, in one import: `use tideline::prelude::*;`.
pub mod prelude {
    pub use tideline_operators::changelog::{
        AggregateChangelogExt, Change, ChangeOp, ChangelogRow, ChangelogStreamExt,
        ChangelogTableSink, RetractingAggregate, RowKind, TableJoinExt, ToTableExt,
    };
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
