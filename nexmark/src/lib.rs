//! # The Nexmark benchmark on Tideline
//!
//! [Nexmark](https://github.com/nexmark/nexmark) models an online auction:
//! a stream of [`Person`], [`Auction`] and [`Bid`] events and a set of
//! queries over it. This crate has
//! - [`NexmarkSource`]: the `nexmark` crate's deterministic generator as a
//!   partitioned, replayable (checkpointable) source, live or over events
//!   pre-generated into memory;
//! - [`queries`]: q0, q1, q2, q3, q5, q7, q8, q11 and the window workloads
//!   W1, W2, each written against Tideline's public API only;
//! - [`BenchSink`]: counts results and measures end-to-end latency.
//!
//! The driver is `cargo run --release --example nexmark -- --help`.
//!
//! Invariants: event `i` depends only on `i` and the [`NexmarkConfig`];
//! timestamps never decrease within a source partition, so
//! `WatermarkStrategy::monotonous()` declares no event late.
//!
//! ```
//! use tideline::prelude::*;
//! use tideline_nexmark::{queries, NexmarkConfig, NexmarkSource};
//!
//! let job = Job::new().mode(ExecutionMode::Bounded);
//! let events = job.source(
//!     NexmarkSource::live(NexmarkConfig::default()).with_count(5_000),
//!     WatermarkStrategy::monotonous(),
//! );
//! let out = CollectSink::new();
//! queries::q2(&events).sink(out.clone());
//! job.run()?;
//! assert!(out.values().iter().all(|(auction, _)| auction % 123 == 0));
//! # Ok::<(), tideline::Error>(())
//! ```

mod event;
pub mod queries;
mod sink;
mod source;

use std::fmt;
use std::str::FromStr;

use tideline::Stream;

pub use event::{Auction, AuctionText, Bid, BidText, Event, Person, PersonText, Shared, Text};
pub use sink::{BenchSink, LatencyProbe};
pub use source::{NexmarkConfig, NexmarkSource};

/// A query by name, for drivers that pick one at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Query {
    /// [`queries::q0`]
    Q0,
    /// [`queries::q1`]
    Q1,
    /// [`queries::q2`]
    Q2,
    /// [`queries::q3`]
    Q3,
    /// [`queries::q5`]
    Q5,
    /// [`queries::q7`]
    Q7,
    /// [`queries::q8`]
    Q8,
    /// [`queries::q11`]
    Q11,
    /// [`queries::w1`]
    W1,
    /// [`queries::w2`]
    W2,
}

impl Query {
    /// Every query, in order.
    pub const ALL: [Query; 10] = [
        Query::Q0,
        Query::Q1,
        Query::Q2,
        Query::Q3,
        Query::Q5,
        Query::Q7,
        Query::Q8,
        Query::Q11,
        Query::W1,
        Query::W2,
    ];

    /// The query's name (`q5`, `w1`, …).
    pub fn name(self) -> &'static str {
        match self {
            Query::Q0 => "q0",
            Query::Q1 => "q1",
            Query::Q2 => "q2",
            Query::Q3 => "q3",
            Query::Q5 => "q5",
            Query::Q7 => "q7",
            Query::Q8 => "q8",
            Query::Q11 => "q11",
            Query::W1 => "w1",
            Query::W2 => "w2",
        }
    }

    /// Builds the query on `events` and writes its results to `sink`.
    pub fn build(self, events: &Stream<Event>, sink: BenchSink) {
        let _ = match self {
            Query::Q0 => queries::q0(events).sink(sink),
            Query::Q1 => queries::q1(events).sink(sink),
            Query::Q2 => queries::q2(events).sink(sink),
            Query::Q3 => queries::q3(events).sink(sink),
            Query::Q5 => queries::q5(events).sink(sink),
            Query::Q7 => queries::q7(events).sink(sink),
            Query::Q8 => queries::q8(events).sink(sink),
            Query::Q11 => queries::q11(events).sink(sink),
            Query::W1 => queries::w1(events).sink(sink),
            Query::W2 => queries::w2(events).sink(sink),
        };
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A query name that is not one of [`Query::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown query '{0}': expected one of {names}", names = query_names())]
pub struct UnknownQuery(pub String);

/// The names of [`Query::ALL`], comma-separated.
fn query_names() -> String {
    let names: Vec<&str> = Query::ALL.iter().map(|q| q.name()).collect();
    names.join(", ")
}

impl FromStr for Query {
    type Err = UnknownQuery;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Query::ALL
            .into_iter()
            .find(|q| q.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownQuery(s.to_string()))
    }
}
