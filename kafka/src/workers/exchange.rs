//! [`RepartitionCodec`]: how records and watermarks cross a keyed exchange
//! between workers, as Kafka records of one repartition topic.
//!
//! # Format
//! - **A record** ([`RemoteRecord`], as the engine encodes it): partition =
//!   the task owning its key group (the stable key hash the in-process
//!   exchange uses, so a key goes where it would go in one process); Kafka
//!   key = the key group, 2 bytes big-endian (the engine hashes keys, it
//!   does not keep their bytes); value = the record value's postcard
//!   bytes; headers `tl-ts` (event time), `tl-lw` (the lateness watermark
//!   of the partition-local rule) and `tl-from` (the upstream task),
//!   integers big-endian.
//! - **A control record:** no key, an empty value, header `tl-ctl`
//!   (`wm`, `idle` or `end`), `tl-from`, and for `wm` the watermark in
//!   `tl-ts`. An upstream task sends one to every partition.
//!
//! # Invariants
//! - Decoding gives back exactly what was encoded: partition, key group,
//!   timestamp, lateness watermark and value bytes of a record; sender and
//!   kind of a control record.
//! - A downstream task feeds control records to a
//!   [`WatermarkTracker`](tideline_engine::time::WatermarkTracker) with one
//!   input per upstream task, the rule channels follow in one process, so
//!   firing is the same (see the module docs of [`super`]).
//! - A Kafka record that is not of this format decodes to an error saying
//!   what is wrong with it (a dead letter naming topic, partition and
//!   offset), never to a guess.

use tideline_engine::{Error, EventTime, RemoteRecord, Result};

use crate::record::KafkaRecord;

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
pub enum Incoming {
    /// A record, as the upstream task had it.
    Record {
        /// The upstream task that sent it.
        from: usize,
        /// The record.
        record: RemoteRecord,
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
        Ok(Self { partitions })
    }

    /// The Kafka record for `record`, sent by upstream task `from`.
    ///
    /// # Errors
    /// A record routed to a partition the topic does not have (the engine
    /// and the topic disagree on the task count).
    pub fn record(&self, record: &RemoteRecord, from: usize) -> Result<Outgoing> {
        let partition = record.partition as usize;
        if partition >= self.partitions {
            return Err(Error::Internal(format!(
                "a record routed to partition {partition} of a repartition topic of {}",
                self.partitions
            )));
        }
        Ok(Outgoing {
            partition,
            key: Some(record.key_group.to_be_bytes().to_vec()),
            value: record.value.clone(),
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

    /// What a consumed Kafka record carries.
    ///
    /// # Errors
    /// A record without the headers of this format, with a header or key
    /// of the wrong size or an unknown control kind: the message says which.
    pub fn decode(&self, record: &KafkaRecord<'_>) -> std::result::Result<Incoming, String> {
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.unwrap_or_default())
        };
        let fixed = |name: &str, bytes: Option<&[u8]>| -> std::result::Result<[u8; 8], String> {
            let bytes = bytes.ok_or_else(|| not_ours(format!("no '{name}' header")))?;
            bytes
                .try_into()
                .map_err(|_| not_ours(format!("'{name}' is {} bytes, not 8", bytes.len())))
        };
        let time = |name: &str| -> std::result::Result<EventTime, String> {
            Ok(EventTime::from_millis(i64::from_be_bytes(fixed(
                name,
                header(name),
            )?)))
        };
        let from = header(FROM)
            .ok_or_else(|| not_ours(format!("no '{FROM}' header")))
            .and_then(|b| {
                let bytes: [u8; 4] = b
                    .try_into()
                    .map_err(|_| not_ours(format!("'{FROM}' is {} bytes, not 4", b.len())))?;
                Ok(u32::from_be_bytes(bytes) as usize)
            })?;
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
        let key = record.key.unwrap_or_default();
        let key_group: [u8; 2] = key
            .try_into()
            .map_err(|_| not_ours(format!("the key is {} bytes, not 2", key.len())))?;
        let partition = u32::try_from(record.partition)
            .map_err(|_| not_ours(format!("partition {}", record.partition)))?;
        Ok(Incoming::Record {
            from,
            record: RemoteRecord {
                partition,
                key_group: u16::from_be_bytes(key_group),
                timestamp: time(TIMESTAMP)?,
                lateness_watermark: time(LATENESS)?,
                value: record.payload_or_err().map_err(not_ours)?.to_vec(),
            },
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

fn not_ours(what: String) -> String {
    format!("not a record of a Tideline repartition topic: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tideline_engine::time::{Watermark, WatermarkTracker};

    /// `out` as a consumer would read it from `partition`.
    fn consumed(out: &Outgoing) -> KafkaRecord<'_> {
        KafkaRecord {
            topic: "t",
            partition: out.partition as i32,
            offset: 0,
            key: out.key.as_deref(),
            payload: Some(&out.value),
            timestamp: None,
            headers: out
                .headers
                .iter()
                .map(|(n, v)| (*n, Some(v.as_slice())))
                .collect(),
        }
    }

    #[test]
    fn records_come_back_as_sent() -> Result<()> {
        let codec = RepartitionCodec::new(128, 6)?;
        let record = RemoteRecord {
            partition: 4,
            key_group: 97,
            timestamp: EventTime::from_millis(1_000),
            lateness_watermark: EventTime::from_millis(950),
            value: vec![1, 2, 3],
        };
        let out = codec.record(&record, 3)?;
        assert_eq!(out.partition, 4);
        assert_eq!(
            codec.decode(&consumed(&out)),
            Ok(Incoming::Record { from: 3, record })
        );
        let astray = RemoteRecord {
            partition: 6,
            key_group: 1,
            timestamp: EventTime::MIN,
            lateness_watermark: EventTime::MIN,
            value: Vec::new(),
        };
        assert!(codec.record(&astray, 0).is_err());
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
            let Ok(Incoming::Control { from, control }) = codec.decode(&consumed(&outs[1])) else {
                return Err(Error::Internal(
                    "a control record decoded as something else".into(),
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
        let from = 1u32.to_be_bytes();
        let mut out = Outgoing {
            partition: 0,
            key: None,
            value: b"x".to_vec(),
            headers: vec![],
        };
        let text = |out: &Outgoing| codec.decode(&consumed(out)).err().unwrap_or_default();
        assert!(text(&out).contains("no 'tl-from' header"));
        out.headers = vec![(FROM, from.to_vec()), (CONTROL, b"stop".to_vec())];
        assert!(text(&out).contains("unknown control kind 'stop'"));
        out.headers = vec![(FROM, from[..2].to_vec())];
        assert!(text(&out).contains("2 bytes, not 4"));
        out.headers = vec![(FROM, from.to_vec())];
        out.key = Some(vec![1, 2, 3]);
        assert!(text(&out).contains("the key is 3 bytes, not 2"));
        out.key = Some(vec![0, 1]);
        assert!(text(&out).contains("no 'tl-ts' header"));
        assert!(RepartitionCodec::new(4, 5).is_err() && RepartitionCodec::new(4, 0).is_err());
        Ok(())
    }
}
