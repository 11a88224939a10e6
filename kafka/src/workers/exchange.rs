//! [`RepartitionCodec`]: how records and watermarks cross a keyed exchange
//! between workers, as Kafka records of one repartition topic.
//!
//! # Format
//! - **A record:** partition = the task owning its key group (the stable
//!   key hash the in-process exchange uses, so a key goes where it would
//!   go in one process); Kafka key = the key's postcard bytes; value = the
//!   record value's postcard bytes; headers `tl-ts` (event time),
//!   `tl-lw` (the lateness watermark of the partition-local rule) and
//!   `tl-from` (the upstream task), integers big-endian.
//! - **A control record:** no key, an empty value, header `tl-ctl`
//!   (`wm`, `idle` or `end`), `tl-from`, and for `wm` the watermark in
//!   `tl-ts`. An upstream task sends one to every partition.
//!
//! # Invariants
//! - Decoding gives back exactly what was encoded: timestamp, lateness
//!   watermark and value of a record; sender and kind of a control record.
//! - A downstream task feeds control records to a
//!   [`WatermarkTracker`](tideline_engine::time::WatermarkTracker) with one
//!   input per upstream task, the rule channels follow in one process, so
//!   firing is the same (see the module docs of [`super`]).
//! - A Kafka record that is not of this format decodes to an error saying
//!   what is wrong with it (for a dead letter naming topic, partition and
//!   offset), never to a guess.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tideline_engine::{Error, EventTime, Record, Result};
use tideline_state::key_group::{key_group_of_hash, key_hash, subtask_for_key_group};

/// Header names.
const TIMESTAMP: &str = "tl-ts";
const LATENESS: &str = "tl-lw";
const FROM: &str = "tl-from";
const CONTROL: &str = "tl-ctl";

/// What an upstream task tells every downstream partition about its
/// event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Its watermark moved to this.
    Watermark(EventTime),
    /// It has gone idle (no data for its idle timeout).
    Idle,
    /// Its input is finished: it counts as `+inf` from now on.
    End,
}

/// A Kafka record to produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The repartition topic's partition.
    pub partition: usize,
    /// The Kafka key (none for control records).
    pub key: Option<Vec<u8>>,
    /// The Kafka value.
    pub value: Vec<u8>,
    /// The headers, in this order.
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

/// A Kafka record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming<T> {
    /// A record, as the upstream task had it.
    Record {
        /// The upstream task that sent it.
        from: usize,
        /// The record.
        record: Record<T>,
    },
    /// A control record.
    Control {
        /// The upstream task that sent it.
        from: usize,
        /// What it says.
        control: Control,
    },
}

/// Encodes and decodes the records of one repartition topic.
#[derive(Clone, Copy, Debug)]
pub struct RepartitionCodec {
    key_groups: u16,
    partitions: usize,
}

impl RepartitionCodec {
    /// A codec for a topic of `partitions` partitions and a job of
    /// `key_groups` key groups.
    ///
    /// # Errors
    /// No partitions, or more partitions than key groups (a partition
    /// would own no keys, and its task never any state).
    pub fn new(key_groups: u16, partitions: usize) -> Result<Self> {
        if partitions == 0 || partitions > usize::from(key_groups) {
            return Err(Error::config(
                "workers.partitions",
                format!(
                    "a repartition topic needs between 1 and the job's {key_groups} key groups \
                     partitions, not {partitions}"
                ),
            ));
        }
        Ok(Self {
            key_groups,
            partitions,
        })
    }

    /// The Kafka record for `record` of key `key`, sent by upstream task `from`.
    ///
    /// # Errors
    /// A key or value that serde cannot encode.
    pub fn record<K: Serialize, T: Serialize>(
        &self,
        key: &K,
        record: &Record<T>,
        from: usize,
    ) -> Result<Outgoing> {
        let hash = key_hash(key).map_err(|e| Error::user(format!("a key to repartition: {e}")))?;
        let group = key_group_of_hash(hash, self.key_groups);
        let key = postcard::to_stdvec(key)
            .map_err(|e| Error::user(format!("a key to repartition: {e}")))?;
        let value = postcard::to_stdvec(&record.value)
            .map_err(|e| Error::user(format!("a record to repartition: {e}")))?;
        Ok(Outgoing {
            partition: subtask_for_key_group(group, self.key_groups, self.partitions),
            key: Some(key),
            value,
            headers: vec![
                (TIMESTAMP, record.timestamp.millis().to_be_bytes().to_vec()),
                (
                    LATENESS,
                    record.lateness_watermark.millis().to_be_bytes().to_vec(),
                ),
                (FROM, task_bytes(from)),
            ],
        })
    }

    /// The control records for `control` from upstream task `from`: one for
    /// every partition, in partition order.
    pub fn control(&self, control: Control, from: usize) -> Vec<Outgoing> {
        let (kind, at) = match control {
            Control::Watermark(w) => ("wm", Some(w)),
            Control::Idle => ("idle", None),
            Control::End => ("end", None),
        };
        (0..self.partitions)
            .map(|partition| {
                let mut headers = vec![
                    (CONTROL, kind.as_bytes().to_vec()),
                    (FROM, task_bytes(from)),
                ];
                if let Some(w) = at {
                    headers.push((TIMESTAMP, w.millis().to_be_bytes().to_vec()));
                }
                Outgoing {
                    partition,
                    key: None,
                    value: Vec::new(),
                    headers,
                }
            })
            .collect()
    }

    /// What a Kafka record with `headers` and `value` carries.
    ///
    /// # Errors
    /// A record without the headers of this format, with a header of the
    /// wrong size or an unknown control kind, or a value that does not
    /// decode as `T`: the message says which.
    pub fn decode<T: DeserializeOwned>(
        &self,
        headers: &[(&str, &[u8])],
        value: &[u8],
    ) -> Result<Incoming<T>> {
        let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let from = header(FROM)
            .ok_or_else(|| not_ours(format!("no '{FROM}' header")))
            .and_then(|b| {
                let bytes: [u8; 4] = b
                    .try_into()
                    .map_err(|_| not_ours(format!("'{FROM}' is {} bytes, not 4", b.len())))?;
                Ok(u32::from_be_bytes(bytes) as usize)
            })?;
        let time = |name: &str| -> Result<EventTime> {
            let bytes = header(name).ok_or_else(|| not_ours(format!("no '{name}' header")))?;
            let bytes: [u8; 8] = bytes
                .try_into()
                .map_err(|_| not_ours(format!("'{name}' is {} bytes, not 8", bytes.len())))?;
            Ok(EventTime::from_millis(i64::from_be_bytes(bytes)))
        };
        if let Some(kind) = header(CONTROL) {
            let control = match kind {
                b"wm" => Control::Watermark(time(TIMESTAMP)?),
                b"idle" => Control::Idle,
                b"end" => Control::End,
                other => {
                    return Err(not_ours(format!(
                        "unknown control kind '{}'",
                        String::from_utf8_lossy(other)
                    )))
                }
            };
            return Ok(Incoming::Control { from, control });
        }
        let value: T = match postcard::take_from_bytes(value) {
            Ok((value, [])) => value,
            Ok((_, rest)) => {
                return Err(not_ours(format!(
                    "the value does not decode as the record type: {} bytes left over",
                    rest.len()
                )))
            }
            Err(e) => {
                return Err(not_ours(format!(
                    "the value does not decode as the record type: {e}"
                )))
            }
        };
        Ok(Incoming::Record {
            from,
            record: Record::new(time(TIMESTAMP)?, value).with_lateness_watermark(time(LATENESS)?),
        })
    }
}

/// An upstream task's number as a header (tasks are partitions: `u32`).
fn task_bytes(task: usize) -> Vec<u8> {
    u32::try_from(task)
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec()
}

fn not_ours(what: String) -> Error {
    Error::user(format!(
        "not a record of a Tideline repartition topic: {what}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tideline_engine::time::{Watermark, WatermarkTracker};

    fn headers(out: &Outgoing) -> Vec<(&str, &[u8])> {
        out.headers
            .iter()
            .map(|(n, v)| (*n, v.as_slice()))
            .collect()
    }

    #[test]
    fn records_come_back_as_sent_and_go_where_their_key_group_is_owned() -> Result<()> {
        let codec = RepartitionCodec::new(128, 6)?;
        let record = Record::new(1_000, ("page".to_string(), 7u64))
            .with_lateness_watermark(EventTime::from_millis(950));
        let out = codec.record(&42u64, &record, 3)?;
        let group = key_group_of_hash(
            key_hash(&42u64).map_err(|e| Error::user(e.to_string()))?,
            128,
        );
        assert_eq!(out.partition, subtask_for_key_group(group, 128, 6));
        let back: Incoming<(String, u64)> = codec.decode(&headers(&out), &out.value)?;
        assert_eq!(back, Incoming::Record { from: 3, record });
        Ok(())
    }

    #[test]
    fn control_records_reach_every_partition_and_drive_the_tracker() -> Result<()> {
        let codec = RepartitionCodec::new(128, 3)?;
        // Partition 1's task, fed by two upstream tasks.
        let mut tracker = WatermarkTracker::new(2);
        let mut fired = Vec::new();
        for (from, control) in [
            (0, Control::Watermark(EventTime::from_millis(10))),
            (1, Control::Watermark(EventTime::from_millis(4))),
            (1, Control::Idle),
            (0, Control::End),
            (1, Control::End),
        ] {
            let outs = codec.control(control, from);
            assert_eq!(
                outs.iter().map(|o| o.partition).collect::<Vec<_>>(),
                vec![0, 1, 2]
            );
            let Incoming::Control { from, control } =
                codec.decode::<u64>(&headers(&outs[1]), &outs[1].value)?
            else {
                return Err(Error::Internal(
                    "a control record decoded as a record".into(),
                ));
            };
            let emitted = match control {
                Control::Watermark(w) => tracker.on_watermark(from, w),
                Control::Idle => tracker.on_idle(from),
                Control::End => tracker.on_finished(from),
            };
            fired.extend(emitted);
        }
        let at = |ms| Watermark::EventTime(EventTime::from_millis(ms));
        // Upstream 0 ending while 1 is idle leaves only an idle input.
        assert_eq!(
            fired,
            vec![
                at(4),
                at(10),
                Watermark::Idle,
                Watermark::EventTime(EventTime::MAX)
            ]
        );
        Ok(())
    }

    #[test]
    fn foreign_records_are_refused_saying_why() -> Result<()> {
        let codec = RepartitionCodec::new(128, 2)?;
        let text = |r: Result<Incoming<u64>>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text(codec.decode(&[], b"x")).contains("no 'tl-from' header"));
        let from = 1u32.to_be_bytes();
        assert!(
            text(codec.decode(&[("tl-from", &from), ("tl-ctl", b"stop")], b""))
                .contains("unknown control kind 'stop'")
        );
        assert!(text(codec.decode(&[("tl-from", &from[..2])], b"")).contains("2 bytes, not 4"));
        let out = codec.record(&1u8, &Record::new(5, "text".to_string()), 0)?;
        assert!(text(codec.decode(&headers(&out), &out.value)).contains("does not decode"));
        assert!(RepartitionCodec::new(4, 5).is_err() && RepartitionCodec::new(4, 0).is_err());
        Ok(())
    }
}
