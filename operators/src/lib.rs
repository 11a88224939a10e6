//! Tideline's operators: stateless transforms ([`StreamExt`]), keyed process
//! functions ([`KeyedProcessExt`]), built-in sources and sinks
//! ([`connectors`]) and test harnesses ([`testing`]).
//!
//! Everything here is built on the engine's public operator API
//! (`Stream::transform`, `KeyedStream::transform`, `Operator`), the same one
//! users can build their own operators on.

pub mod changelog;
pub mod connectors;
pub mod join;
mod keyed_snapshot;
pub mod process;
pub mod stateless;
pub mod testing;
pub mod window;

pub use process::{KeyedProcessExt, KeyedProcessFunction, ProcessContext, TimeDomain};
pub use stateless::StreamExt;

/// Everything a job needs, in one import.
pub mod prelude {
    pub use crate::connectors::{
        ChannelSink, CollectSink, GeneratorSource, PrintSink, PushSource, SourceHandle, VecSource,
    };
    pub use crate::process::{KeyedProcessExt, KeyedProcessFunction, ProcessContext, TimeDomain};
    pub use crate::stateless::StreamExt;
    pub use tideline_engine::time::{Clock, ManualClock, SystemClock, WatermarkStrategy};
    pub use tideline_engine::{
        DeadLetter, Error, EventTime, ExecutionMode, FailurePolicy, Job, JobConfig, JobSummary,
        KeyedStream, Operator, OutputTag, Record, Result, Sink, Source, Stream, Watermark,
    };
    pub use tideline_state::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
}
