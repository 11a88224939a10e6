//! Built-in sources and sinks.
//!
//! Sources: [`VecSource`] (bounded, from memory), [`GeneratorSource`]
//! (deterministic, bounded or not, at full speed or a target rate) and
//! [`PushSource`] (fed from other code through a [`SourceHandle`]).
//! Sinks: [`CollectSink`] (into shared memory, for tests), [`PrintSink`],
//! [`ChannelSink`] (into a crossbeam channel). Users write others with the
//! `Sink` and `Source` traits.

mod channel;
mod collect;
pub mod file;
mod generator;
mod pacing;
mod print;
mod push;
pub(crate) mod upsert;
mod vec;

pub use channel::ChannelSink;
pub use collect::CollectSink;
pub use generator::GeneratorSource;
pub use pacing::{partition_len, PacingStart, RateLimit};
pub use print::PrintSink;
pub use push::{PushSource, SourceHandle};
pub use upsert::UpsertSink;
pub use vec::VecSource;

/// The random generator a [`GeneratorSource`] hands its function, and the trait to draw from it.
pub use rand::{rngs::SmallRng, Rng, SeedableRng};
