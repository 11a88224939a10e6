//! A producer that remembers its first failed delivery, and the records a
//! sink produces in the form a checkpoint can store.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde::{Deserialize, Serialize};
use tideline_engine::Result;

use crate::client::ClientSettings;

/// Records the first delivery failure; the sink reports it at its next
/// flush (a checkpoint barrier or the end), so a failed write fails the
/// checkpoint instead of being lost.
#[derive(Default)]
pub(crate) struct DeliveryContext {
    failed: Mutex<Option<KafkaError>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
            if failed.is_none() {
                *failed = Some(e.clone());
            }
        }
    }
}

/// A producer with its delivery context.
pub(crate) type KafkaProducer = BaseProducer<DeliveryContext>;

/// One record as produced: what an exactly-once checkpoint keeps to write a
/// transaction again (see the [`sink`](crate::sink) module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredRecord {
    pub(crate) topic: String,
    pub(crate) key: Option<Vec<u8>>,
    /// `None`: a tombstone (deletes the key in a compacted topic).
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    /// The partition, when the sink chooses it (else the key's murmur2).
    pub(crate) partition: Option<i32>,
}

/// How long a flush, a transaction call or a full queue may block.
pub(crate) const PRODUCE_TIMEOUT: Duration = Duration::from_secs(60);

/// Creates an idempotent producer (acks from all replicas, Kafka's Java
/// partitioner) with `extra` properties, and the user's on top.
pub(crate) fn create(settings: &ClientSettings, extra: &[(&str, &str)]) -> Result<KafkaProducer> {
    const COMMON: [(&str, &str); 4] = [
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("partitioner", "murmur2_random"),
        ("linger.ms", "5"),
    ];
    let defaults: Vec<(&str, &str)> = COMMON.iter().chain(extra).copied().collect();
    settings
        .config(&defaults)
        .create_with_context(DeliveryContext::default())
        .map_err(|e| crate::client::invalid_property(settings, e))
}

/// A transactional producer for `id`, initialized: this fences every
/// earlier producer with that id and aborts (or waits out) its open
/// transaction. A transaction may stay open `timeout_ms` before the
/// coordinator aborts it.
pub(crate) fn transactional(
    settings: &ClientSettings,
    id: &str,
    timeout_ms: &str,
) -> Result<KafkaProducer> {
    let producer = create(
        settings,
        &[
            ("transactional.id", id),
            ("transaction.timeout.ms", timeout_ms),
        ],
    )?;
    producer
        .init_transactions(PRODUCE_TIMEOUT)
        .map_err(|e| settings.error(format!("initialize transactional id '{id}'"), e))?;
    Ok(producer)
}

/// Sends `record`, waiting while the producer's queue is full.
pub(crate) fn send(
    producer: &KafkaProducer,
    settings: &ClientSettings,
    record: &StoredRecord,
) -> Result<()> {
    let headers = (!record.headers.is_empty()).then(|| {
        record
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |h, (k, v)| {
                h.insert(Header {
                    key: k,
                    value: Some(v),
                })
            })
    });
    let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&record.topic);
    if let Some(value) = &record.value {
        base = base.payload(&value[..]);
    }
    if let Some(key) = &record.key {
        base = base.key(&key[..]);
    }
    if let Some(partition) = record.partition {
        base = base.partition(partition);
    }
    if let Some(headers) = headers {
        base = base.headers(headers);
    }
    let deadline = std::time::Instant::now() + PRODUCE_TIMEOUT;
    loop {
        match producer.send(base) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if std::time::Instant::now() < deadline =>
            {
                // Serve delivery reports until there is room: the queue
                // bounds the memory a slow broker can cost.
                producer.poll(Duration::from_millis(10));
                base = back;
            }
            Err((e, _)) => {
                return Err(settings.error(format!("produce to topic '{}'", record.topic), e))
            }
        }
    }
}

/// Waits until everything sent is delivered, and fails if anything was not.
pub(crate) fn flush(producer: &KafkaProducer, settings: &ClientSettings, what: &str) -> Result<()> {
    producer
        .flush(PRODUCE_TIMEOUT)
        .map_err(|e| settings.error(format!("flush {what}"), e))?;
    take_failure(producer, settings, what)
}

/// The first delivery failure since the last call, as an error.
pub(crate) fn take_failure(
    producer: &KafkaProducer,
    settings: &ClientSettings,
    what: &str,
) -> Result<()> {
    let failed = producer
        .context()
        .failed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match failed {
        Some(e) => Err(settings.error(format!("deliver the records of {what}"), e)),
        None => Ok(()),
    }
}

/// A producer shared between the sink subtask that writes through it and
/// the committer that commits its transaction.
pub(crate) type SharedProducer = Arc<KafkaProducer>;
