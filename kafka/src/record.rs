//! A consumed Kafka record as the deserializer sees it, and the built-in
//! deserializers.

use std::sync::Arc;

use rdkafka::message::{BorrowedMessage, Headers, Message};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One consumed record, borrowed from the client: what a deserializer gets.
#[derive(Debug)]
pub struct KafkaRecord<'a> {
    /// The topic it was read from.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// The record's key, if any.
    pub key: Option<&'a [u8]>,
    /// The record's value (`None` for a tombstone).
    pub payload: Option<&'a [u8]>,
    /// The Kafka timestamp (create or log-append time), in milliseconds.
    pub timestamp: Option<i64>,
    /// The record's headers, in order.
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

impl<'a> KafkaRecord<'a> {
    pub(crate) fn from_message(message: &'a BorrowedMessage<'a>) -> Self {
        let headers = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
            .unwrap_or_default();
        Self {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key(),
            payload: message.payload(),
            timestamp: message.timestamp().to_millis(),
            headers,
        }
    }

    /// The value, or an error for a tombstone (a record without one).
    pub fn payload_or_err(&self) -> Result<&'a [u8], String> {
        self.payload
            .ok_or_else(|| "the record has no value (a tombstone)".to_string())
    }

    /// Where the record is, for dead letters: `topic/partition@offset`.
    pub(crate) fn position(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }

    /// The record's value as text for a dead letter (lossy UTF-8, at most
    /// 4 KiB).
    pub(crate) fn payload_text(&self) -> String {
        const LIMIT: usize = 4096;
        let payload = self.payload.unwrap_or_default();
        let text = String::from_utf8_lossy(&payload[..payload.len().min(LIMIT)]);
        if payload.len() > LIMIT {
            format!("{text}… ({} bytes)", payload.len())
        } else {
            text.into_owned()
        }
    }
}

/// A record with everything Kafka says about it: what
/// [`KafkaSourceBuilder::with_metadata`](crate::KafkaSourceBuilder::with_metadata)
/// deserializes into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaMessage<V> {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The Kafka timestamp in milliseconds.
    pub timestamp: Option<i64>,
    /// The headers.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The value, deserialized.
    pub value: V,
}

/// Turns a consumed record into a `T`, or says why it cannot (the record
/// then goes to the dead-letter output).
pub type DeserializeFn<T> = Arc<dyn Fn(&KafkaRecord<'_>) -> Result<T, String> + Send + Sync>;

/// The value as JSON of type `T`.
pub(crate) fn json<T: DeserializeOwned>() -> DeserializeFn<T> {
    Arc::new(|record: &KafkaRecord<'_>| {
        serde_json::from_slice(record.payload_or_err()?).map_err(|e| {
            format!(
                "cannot decode the value as JSON of type `{}`: {e}",
                std::any::type_name::<T>()
            )
        })
    })
}

/// The value as UTF-8 text.
pub(crate) fn utf8() -> DeserializeFn<String> {
    Arc::new(|record: &KafkaRecord<'_>| {
        std::str::from_utf8(record.payload_or_err()?)
            .map(str::to_string)
            .map_err(|e| format!("the value is not UTF-8: {e}"))
    })
}

/// The value's bytes (a tombstone is empty).
pub(crate) fn bytes() -> DeserializeFn<Vec<u8>> {
    Arc::new(|record: &KafkaRecord<'_>| Ok(record.payload.unwrap_or_default().to_vec()))
}

/// `inner`'s value with the record's metadata.
pub(crate) fn with_metadata<V: 'static>(inner: DeserializeFn<V>) -> DeserializeFn<KafkaMessage<V>> {
    Arc::new(move |record: &KafkaRecord<'_>| {
        Ok(KafkaMessage {
            topic: record.topic.to_string(),
            partition: record.partition,
            offset: record.offset,
            key: record.key.map(<[u8]>::to_vec),
            timestamp: record.timestamp,
            headers: record
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
                .collect(),
            value: inner(record)?,
        })
    })
}
