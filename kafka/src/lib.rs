//! Kafka connectors for Tideline: [`KafkaSource`] (each Kafka partition a
//! source partition with its own watermark; start positions; bounded
//! replay) and [`KafkaSink`] (at least once, or exactly once with a
//! transaction per checkpoint that survives a crash between checkpoint
//! completion and commit).
//!
//! Both are built on `rdkafka`, with librdkafka compiled from its bundled
//! sources and linked statically. The [`source`] and [`sink`] modules
//! state their invariants and failure analysis; [`workers`] is the design
//! of running one job on several worker processes (not built yet).

mod client;
mod producer;
pub mod record;
pub mod sink;
pub mod source;
pub mod workers;

/// The Kafka client the connectors use, for what they do not cover
/// (admin operations, say).
pub use rdkafka;

pub use client::{default_partition, murmur2};
pub use record::{KafkaMessage, KafkaRecord};
pub use sink::{DeliveryGuarantee, KafkaSink, KafkaSinkBuilder};
pub use source::{Bound, Fallback, KafkaSource, KafkaSourceBuilder, StartOffset};
