//! What the source and the sink share: client settings, the error mapping,
//! and topic metadata.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::{Metadata, MetadataTopic};
use tideline_engine::Error;

/// How long a metadata, offset or commit request may take before the
/// connector gives up with an error naming the broker.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the first metadata request may take: unreachable brokers are
/// reported after it.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the cluster is and the librdkafka properties to pass on.
#[derive(Clone, Debug)]
pub(crate) struct ClientSettings {
    /// `bootstrap.servers`.
    pub(crate) brokers: String,
    /// Extra librdkafka properties set by the user (they win over ours).
    pub(crate) properties: BTreeMap<String, String>,
}

impl ClientSettings {
    pub(crate) fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            properties: BTreeMap::new(),
        }
    }

    /// `Kafka at <brokers>`: how errors name the cluster.
    pub(crate) fn system(&self) -> String {
        format!("Kafka at {}", self.brokers)
    }

    /// A client configuration with `defaults` (the connector's settings),
    /// then the user's properties on top.
    pub(crate) fn config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        // librdkafka logs through its own callback; keep it quiet unless
        // asked: errors reach the job as `Result`s.
        config.set("log_level", "3");
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// An [`Error::External`] for `action` failing with `e`.
    pub(crate) fn error(&self, action: impl Into<String>, e: KafkaError) -> Error {
        Error::external(self.system(), action, e)
    }

    /// A consumer for metadata and offset queries (no group membership).
    /// It reads committed offsets as read_committed consumers do: a pending
    /// transactional offset commit is waited for, not skipped.
    pub(crate) fn metadata_consumer(&self, group: Option<&str>) -> Result<BaseConsumer, Error> {
        let mut config = self.config(&[
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
        ]);
        if let Some(group) = group {
            config.set("group.id", group);
        }
        config.create().map_err(|e| invalid_property(self, e))
    }

    /// The cluster's metadata, all topics, or an error naming the brokers
    /// when they cannot be reached.
    pub(crate) fn metadata(&self, consumer: &BaseConsumer) -> Result<Metadata, Error> {
        consumer
            .fetch_metadata(None, METADATA_TIMEOUT)
            .map_err(|e| match e {
                KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut)
                | KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure)
                | KafkaError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown) => Error::external(
                    self.system(),
                    "fetch cluster metadata (is a broker running there? check bootstrap.servers)",
                    e,
                ),
                other => self.error("fetch cluster metadata", other),
            })
    }

    /// The number of partitions of each of `topics`, in their order; a
    /// missing topic is a configuration error naming it.
    pub(crate) fn partition_counts(
        &self,
        metadata: &Metadata,
        topics: &[String],
        field: &str,
    ) -> Result<Vec<usize>, Error> {
        topics
            .iter()
            .map(|topic| {
                topic_metadata(metadata, topic)
                    .map(|t| t.partitions().len())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        Error::config(
                            field,
                            format!(
                                "topic '{topic}' does not exist on {} (create it first; \
                                 Tideline does not create topics)",
                                self.system()
                            ),
                        )
                    })
            })
            .collect()
    }
}

/// The metadata of `topic`, if the cluster has it without an error.
pub(crate) fn topic_metadata<'a>(metadata: &'a Metadata, topic: &str) -> Option<&'a MetadataTopic> {
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
}

/// A librdkafka property it refused, as a configuration error.
pub(crate) fn invalid_property(settings: &ClientSettings, e: KafkaError) -> Error {
    Error::config(
        "kafka properties",
        format!(
            "{} refused the client configuration: {e}",
            settings.system()
        ),
    )
}

/// The 32-bit murmur2 hash Kafka's Java clients use for keys (and
/// librdkafka's `murmur2_random` partitioner), so that every client puts a
/// key on the same partition: `partition = (murmur2(key) & 0x7fffffff) % n`.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    // Kafka hashes the length as a Java int.
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition Kafka's default partitioner gives `key` among `partitions`.
pub fn default_partition(key: &[u8], partitions: usize) -> usize {
    ((murmur2(key) & 0x7fff_ffff) as usize) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Reference values from Kafka's `UtilsTest.testMurmur2`.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key) as i32,
                expected,
                "{:?}",
                String::from_utf8_lossy(key)
            );
        }
    }
}
