//! [`KafkaSink`]: records to Kafka topics, at least once or exactly once.
//!
//! # Partitioning
//! Records with a key go to `murmur2(key) % partitions`, the partition
//! Kafka's Java clients choose (librdkafka's `murmur2_random`); records
//! without a key are spread at random.
//!
//! # At least once
//! Records are produced as they come; every checkpoint barrier (and the end
//! of input) flushes the producer and fails the checkpoint if any delivery
//! failed. The producer is idempotent, so retries inside the client do not
//! duplicate; a crash replays the records after the last checkpoint, which
//! may then appear twice.
//!
//! # Exactly once: a transaction per checkpoint per subtask
//! Subtask `s` owns the transactional ids `<prefix>-<s>-<slot>` for `slot`
//! in `0..max_open_transactions` (default 4). Records since the last
//! barrier go into a transaction of one of those producers; the barrier
//! *pre-commits* it: the producer is flushed, a **commit marker** is added
//! to the transaction, and the transaction's description goes into the
//! checkpoint. The subtask goes on in a transaction of another slot. When
//! the checkpoint is complete, the committer commits the transaction; its
//! slot is free again. A read_committed consumer sees a checkpoint's
//! records exactly when its transaction commits.
//!
//! **The commit marker** is a consumer-group offset committed inside the
//! transaction (`send_offsets_to_transaction`): group `<id>-marker`, the
//! sink's topic, partition 0, offset = the checkpoint id, metadata = the
//! job's *lineage* (a random token drawn at a fresh start and carried
//! through every checkpoint and restore). Kafka makes transactional offset
//! commits visible atomically with the transaction, so the marker says
//! durably whether that transaction committed.
//!
//! **The hard case: a crash after the checkpoint completed, before the
//! commit reached the broker.** Kafka aborts that transaction (its
//! coordinator does when a new producer with the same id initializes, or
//! when it times out), yet the restored source offsets are past its
//! records. librdkafka cannot resume another process's transaction, so the
//! checkpoint keeps, with each pre-committed transaction, **the records it
//! holds** (topic, key, value, headers, as produced). On restore the
//! committer handles every transaction of the restored checkpoint:
//! - its marker shows this lineage at that checkpoint or later: it
//!   committed; nothing to do;
//! - otherwise it never committed (and is aborted by now, see below): a
//!   producer with the same transactional id writes the stored records
//!   again, with the marker, in a new transaction, and commits it.
//!
//! Before that, every transactional id the sink may have used (all slots of
//! every subtask of the old and the new parallelism) is initialized once,
//! which fences zombies and aborts their open transactions, so
//! read_committed consumers are not blocked by an earlier run. At a fresh
//! start each subtask fences its first slot before it writes, and its other
//! slots (and subtask 0 the ids of [`KafkaSinkBuilder::fence_subtasks`]
//! subtasks) right after, in the background: none of those ids writes
//! before it is fenced, and a failure fails the sink's next transaction.
//!
//! Why nothing is lost or written twice, crash by crash:
//! - **before the barrier**: the open transaction is aborted by fencing; the
//!   restored offsets are before its records, which are read and written
//!   again;
//! - **after pre-commit, before the checkpoint completed**: the restore
//!   uses an older checkpoint, whose offsets again are before those
//!   records; the pre-committed transaction is aborted by fencing;
//! - **after completion, before the commit**: handled above (re-written
//!   once, from the checkpoint's copy; the marker is written with it, so a
//!   crash during the re-write is handled the same way on the next start);
//! - **after the commit**: the marker says so; nothing is written again.
//!
//! A restore from a checkpoint *older* than one whose transactions already
//! committed (an old savepoint, or a newer checkpoint that was corrupt)
//! would write the newer checkpoints' records again: the sink refuses to
//! start, naming the transaction and both checkpoints (start with a new
//! transactional id prefix to accept the duplicates).
//!
//! The price: a checkpoint holds the records produced since the previous
//! one (windowed results are usually small), and `transaction.timeout.ms`
//! (default 60 s here) must exceed the checkpoint interval plus the time a
//! checkpoint takes to complete.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use rdkafka::consumer::{Consumer, ConsumerGroupMetadata};
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tideline_engine::{Committer, Data, Error, Record, Result, Sink, SubtaskInfo};

use crate::client::{ClientSettings, REQUEST_TIMEOUT};
use crate::producer::{self, KafkaProducer, SharedProducer, StoredRecord, PRODUCE_TIMEOUT};

/// What a [`KafkaSink`] promises about its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    /// Every record at least once: flushed at every checkpoint, possibly
    /// written again after a crash.
    AtLeastOnce,
    /// Every record exactly once for read_committed consumers: a
    /// transaction per checkpoint per subtask (see the module docs).
    ExactlyOnce,
}

/// A record's value; `None` writes a tombstone.
type SerializeFn<T> = Arc<dyn Fn(&T) -> std::result::Result<Option<Vec<u8>>, String> + Send + Sync>;
type KeyFn<T> = Arc<dyn Fn(&T) -> Option<Vec<u8>> + Send + Sync>;
type HeadersFn<T> = Arc<dyn Fn(&T) -> Vec<(String, Vec<u8>)> + Send + Sync>;
type TopicFn<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;
type PartitionFn<T> = Arc<dyn Fn(&T) -> Option<i32> + Send + Sync>;
/// A fault-injection hook: called with a transactional id and a checkpoint
/// id right before that checkpoint's transaction commit is sent.
type BeforeCommitFn = Arc<dyn Fn(&str, u64) + Send + Sync>;

/// Configures a [`KafkaSink`].
pub struct KafkaSinkBuilder<T> {
    settings: ClientSettings,
    topic: String,
    name: String,
    serialize: SerializeFn<T>,
    key: Option<KeyFn<T>>,
    headers: Option<HeadersFn<T>>,
    topic_by: Option<TopicFn<T>>,
    partition_by: Option<PartitionFn<T>>,
    guarantee: DeliveryGuarantee,
    prefix: Option<String>,
    max_open: usize,
    fence_subtasks: usize,
    before_commit: Option<BeforeCommitFn>,
}

impl<T> std::fmt::Debug for KafkaSinkBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSinkBuilder")
            .field("topic", &self.topic)
            .field("guarantee", &self.guarantee)
            .finish_non_exhaustive()
    }
}

/// Writes records to Kafka (see the [module docs](self)). One value serves
/// every subtask of the sink: attach it with `Stream::sink`.
///
/// ```no_run
/// use tideline_kafka::KafkaSink;
/// # #[derive(Clone, Debug, serde::Serialize)] struct Count { user: String, n: u64 }
/// let counts = KafkaSink::<Count>::json("127.0.0.1:9092", "counts")
///     .key(|c: &Count| Some(c.user.clone().into_bytes()))
///     .exactly_once("click-counts")
///     .build()?;
/// # Ok::<(), tideline_engine::Error>(())
/// ```
pub struct KafkaSink<T> {
    fns: Arc<Fns<T>>,
    shared: Arc<Transactions>,
    subtask: SubtaskInfo,
    /// At least once: the producer, made at the first write.
    producer: Option<KafkaProducer>,
    /// Exactly once: the open transaction.
    open: Option<OpenTransaction>,
    /// Exactly once: the slots and fencing still being made; the first
    /// pre-commit waits for them, so no checkpoint completes before every
    /// id an earlier run may have left open is fenced.
    background: Option<Background>,
}

impl<T> Clone for KafkaSink<T> {
    fn clone(&self) -> Self {
        Self {
            fns: Arc::clone(&self.fns),
            shared: Arc::clone(&self.shared),
            subtask: self.subtask,
            producer: None,
            open: None,
            background: None,
        }
    }
}

impl<T> std::fmt::Debug for KafkaSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.shared.topic)
            .field("guarantee", &self.fns.guarantee)
            .field("subtask", &self.subtask)
            .finish_non_exhaustive()
    }
}

struct Fns<T> {
    name: String,
    serialize: SerializeFn<T>,
    key: Option<KeyFn<T>>,
    headers: Option<HeadersFn<T>>,
    topic_by: Option<TopicFn<T>>,
    partition_by: Option<PartitionFn<T>>,
    guarantee: DeliveryGuarantee,
}

impl<T: serde::Serialize + 'static> KafkaSink<T> {
    /// A sink writing each record as JSON to `topic` on `brokers`.
    pub fn json(brokers: impl Into<String>, topic: impl Into<String>) -> KafkaSinkBuilder<T> {
        Self::serialize(brokers, topic, |value: &T| {
            serde_json::to_vec(value).map_err(|e| e.to_string())
        })
    }
}

impl<K, V> KafkaSink<(K, Option<V>)>
where
    K: serde::Serialize + 'static,
    V: serde::Serialize + 'static,
{
    /// A sink of upserts, the records of a compacted topic: `(key,
    /// Some(row))` writes the row as JSON under the key (as JSON), `(key,
    /// None)` a tombstone for the key. A changelog becomes upserts with
    /// `ChangelogStreamExt::upserts` (in `tideline_operators::changelog`).
    pub fn json_upserts(
        brokers: impl Into<String>,
        topic: impl Into<String>,
    ) -> KafkaSinkBuilder<(K, Option<V>)> {
        Self::serialize_or_tombstone(brokers, topic, |(key, value): &(K, Option<V>)| {
            // A key that does not serialize fails the job here, rather than
            // writing a record without a key a compacted topic refuses.
            serde_json::to_vec(key).map_err(|e| format!("the key: {e}"))?;
            value
                .as_ref()
                .map(|v| serde_json::to_vec(v).map_err(|e| e.to_string()))
                .transpose()
        })
        .key(|(key, _): &(K, Option<V>)| serde_json::to_vec(key).ok())
    }
}

impl KafkaSink<Vec<u8>> {
    /// A sink writing each record's bytes as they are.
    pub fn bytes(
        brokers: impl Into<String>,
        topic: impl Into<String>,
    ) -> KafkaSinkBuilder<Vec<u8>> {
        Self::serialize(brokers, topic, |value: &Vec<u8>| Ok(value.clone()))
    }
}

impl<T> KafkaSink<T> {
    /// A sink writing what `serialize` makes of each record; an `Err` fails
    /// the job naming the record's position.
    pub fn serialize<F>(
        brokers: impl Into<String>,
        topic: impl Into<String>,
        serialize: F,
    ) -> KafkaSinkBuilder<T>
    where
        F: Fn(&T) -> std::result::Result<Vec<u8>, String> + Send + Sync + 'static,
    {
        Self::serialize_or_tombstone(brokers, topic, move |value: &T| serialize(value).map(Some))
    }

    /// Like [`KafkaSink::serialize`], where `Ok(None)` writes a tombstone
    /// (a record without a value, which deletes its key when the topic is
    /// compacted).
    pub fn serialize_or_tombstone<F>(
        brokers: impl Into<String>,
        topic: impl Into<String>,
        serialize: F,
    ) -> KafkaSinkBuilder<T>
    where
        F: Fn(&T) -> std::result::Result<Option<Vec<u8>>, String> + Send + Sync + 'static,
    {
        KafkaSinkBuilder {
            settings: ClientSettings::new(brokers),
            topic: topic.into(),
            name: "kafka".to_string(),
            serialize: Arc::new(serialize),
            key: None,
            headers: None,
            topic_by: None,
            partition_by: None,
            guarantee: DeliveryGuarantee::AtLeastOnce,
            prefix: None,
            max_open: 4,
            fence_subtasks: 8,
            before_commit: None,
        }
    }
}

impl<T> KafkaSinkBuilder<T> {
    /// The record key (partitioning follows it: murmur2, as Kafka's Java
    /// clients do).
    pub fn key(mut self, key: impl Fn(&T) -> Option<Vec<u8>> + Send + Sync + 'static) -> Self {
        self.key = Some(Arc::new(key));
        self
    }

    /// Headers for each record.
    pub fn headers(
        mut self,
        headers: impl Fn(&T) -> Vec<(String, Vec<u8>)> + Send + Sync + 'static,
    ) -> Self {
        self.headers = Some(Arc::new(headers));
        self
    }

    /// The topic of each record (instead of the sink's topic, which still
    /// holds the exactly-once commit markers). Topics must exist.
    pub fn topic_by(mut self, topic: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        self.topic_by = Some(Arc::new(topic));
        self
    }

    /// The partition of each record (`None`: the key's, as
    /// [`key`](KafkaSinkBuilder::key) says). The partition must exist.
    pub fn partition_by(
        mut self,
        partition: impl Fn(&T) -> Option<i32> + Send + Sync + 'static,
    ) -> Self {
        self.partition_by = Some(Arc::new(partition));
        self
    }

    /// The sink's name in errors and the job summary (default `kafka`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// At-least-once delivery (the default).
    pub fn at_least_once(mut self) -> Self {
        self.guarantee = DeliveryGuarantee::AtLeastOnce;
        self
    }

    /// Exactly-once delivery with transactional ids `<prefix>-<subtask>-<slot>`.
    /// The prefix must be unique to this sink of this job, and stay the same
    /// across restarts.
    pub fn exactly_once(mut self, transactional_id_prefix: impl Into<String>) -> Self {
        self.guarantee = DeliveryGuarantee::ExactlyOnce;
        self.prefix = Some(transactional_id_prefix.into());
        self
    }

    /// How many transactions a subtask may have open or awaiting commit at
    /// once (default 4); a subtask whose slots all await commit waits.
    pub fn max_open_transactions(mut self, n: usize) -> Self {
        self.max_open = n;
        self
    }

    /// At a fresh start (no checkpoint), the transactional ids of this many
    /// subtasks are fenced, even beyond the parallelism, so an earlier run
    /// with more subtasks leaves no open transaction behind (default 8).
    pub fn fence_subtasks(mut self, n: usize) -> Self {
        self.fence_subtasks = n;
        self
    }

    /// Sets a librdkafka producer property (it wins over the connector's
    /// defaults), e.g. `transaction.timeout.ms`.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.properties.insert(key.into(), value.into());
        self
    }

    /// Fault injection for tests: `hook` runs with the transactional id and
    /// the checkpoint id right before each transaction commit is sent (after
    /// the checkpoint completed). A test kills the process there.
    #[doc(hidden)]
    pub fn before_commit(mut self, hook: impl Fn(&str, u64) + Send + Sync + 'static) -> Self {
        self.before_commit = Some(Arc::new(hook));
        self
    }

    /// Checks the configuration and that the topic exists.
    ///
    /// # Errors
    /// An empty prefix, no slots, a property librdkafka refuses, brokers
    /// that cannot be reached, or a topic that does not exist.
    pub fn build(self) -> Result<KafkaSink<T>> {
        let field = format!("kafka sink '{}'", self.name);
        let prefix = match (self.guarantee, &self.prefix) {
            (DeliveryGuarantee::ExactlyOnce, Some(p)) if p.is_empty() => {
                return Err(Error::config(
                    format!("{field}.transactional_id_prefix"),
                    "must not be empty",
                ))
            }
            (_, p) => p.clone().unwrap_or_default(),
        };
        if self.max_open < 2 {
            return Err(Error::config(
                format!("{field}.max_open_transactions"),
                format!(
                    "{} is too few: one is open while another awaits its commit",
                    self.max_open
                ),
            ));
        }
        let consumer = self.settings.metadata_consumer(None)?;
        let metadata = self.settings.metadata(&consumer)?;
        self.settings.partition_counts(
            &metadata,
            std::slice::from_ref(&self.topic),
            &format!("{field}.topic"),
        )?;
        Ok(KafkaSink {
            fns: Arc::new(Fns {
                name: self.name,
                serialize: self.serialize,
                key: self.key,
                headers: self.headers,
                topic_by: self.topic_by,
                partition_by: self.partition_by,
                guarantee: self.guarantee,
            }),
            shared: Arc::new(Transactions {
                settings: self.settings,
                topic: self.topic,
                prefix,
                max_open: self.max_open,
                fence_subtasks: self.fence_subtasks,
                before_commit: self.before_commit,
                parallelism: AtomicUsize::new(0),
                isolated: Mutex::new(None),
                lineage: Mutex::new(None),
                state: Mutex::new(SlotState::default()),
                freed: Condvar::new(),
                background_error: Mutex::new(None),
            }),
            subtask: SubtaskInfo {
                subtask: 0,
                parallelism: 1,
                isolated: false,
            },
            producer: None,
            open: None,
            background: None,
        })
    }
}

/// A transactional producer of one slot, with its commit-marker group.
struct Slot {
    id: String,
    subtask: usize,
    producer: SharedProducer,
    marker: ConsumerGroupMetadata,
}

/// The background making of a subtask's other slots (and fencing).
type Background = std::thread::JoinHandle<Result<()>>;

/// The transaction a subtask is writing.
struct OpenTransaction {
    slot: Arc<Slot>,
    records: Vec<StoredRecord>,
}

/// A pre-committed transaction, as the checkpoint stores it.
#[derive(Debug, Serialize, Deserialize)]
struct TransactionRecord {
    /// The transactional id.
    id: String,
    /// The sink's parallelism and slots when it was written: a restore
    /// fences every id they name.
    parallelism: usize,
    max_open: usize,
    checkpoint: u64,
    lineage: u64,
    records: Vec<StoredRecord>,
}

/// Starts a [`TransactionRecord`] blob of this version (records may name
/// their partition). A blob of the first version (before tombstones)
/// starts with the varint length of its id, which is never ten `0xFF`
/// bytes; the second version (tombstones, no partitions) with these ten
/// and a 2.
const TRANSACTION_V3: [u8; 11] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 3,
];
const TRANSACTION_V2: [u8; 11] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 2,
];

impl TransactionRecord {
    fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_extend(self, TRANSACTION_V3.to_vec())
            .map_err(|e| Error::Internal(format!("encode a Kafka transaction: {e}")))
    }

    /// Decodes a blob of any version; `topic` names the sink in errors.
    fn decode(blob: &[u8], topic: &str) -> Result<Self> {
        let corrupt = |e: postcard::Error| Error::Checkpoint {
            path: format!("kafka sink transaction on topic '{topic}'"),
            reason: format!("cannot decode: {e}"),
        };
        if let Some(body) = blob.strip_prefix(&TRANSACTION_V3[..]) {
            return postcard::from_bytes(body).map_err(corrupt);
        }
        let old: OldTransactionRecord<StoredRecordV2> = match blob.strip_prefix(&TRANSACTION_V2[..])
        {
            Some(body) => postcard::from_bytes(body).map_err(corrupt)?,
            None => {
                let v1: OldTransactionRecord<StoredRecordV1> =
                    postcard::from_bytes(blob).map_err(corrupt)?;
                v1.map_records(|r| StoredRecordV2 {
                    topic: r.topic,
                    key: r.key,
                    value: Some(r.value),
                    headers: r.headers,
                })
            }
        };
        Ok(old.map_records(|r| StoredRecord {
            topic: r.topic,
            key: r.key,
            value: r.value,
            headers: r.headers,
            partition: None,
        }))
    }
}

/// A transaction as checkpoints of the first two versions stored it, with
/// records of that version.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct OldTransactionRecord<R> {
    id: String,
    parallelism: usize,
    max_open: usize,
    checkpoint: u64,
    lineage: u64,
    records: Vec<R>,
}

impl<R> OldTransactionRecord<R> {
    fn map_records<S, Out: From<OldTransactionRecord<S>>>(self, f: impl FnMut(R) -> S) -> Out {
        OldTransactionRecord {
            id: self.id,
            parallelism: self.parallelism,
            max_open: self.max_open,
            checkpoint: self.checkpoint,
            lineage: self.lineage,
            records: self.records.into_iter().map(f).collect(),
        }
        .into()
    }
}

impl From<OldTransactionRecord<StoredRecord>> for TransactionRecord {
    fn from(old: OldTransactionRecord<StoredRecord>) -> Self {
        Self {
            id: old.id,
            parallelism: old.parallelism,
            max_open: old.max_open,
            checkpoint: old.checkpoint,
            lineage: old.lineage,
            records: old.records,
        }
    }
}

/// A record as the first version stored it (no tombstones).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct StoredRecordV1 {
    topic: String,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

/// A record as the second version stored it (no partition).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct StoredRecordV2 {
    topic: String,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
}

#[derive(Default)]
struct SlotState {
    /// Free slots per subtask (made at the subtask's first transaction).
    idle: HashMap<usize, Vec<Arc<Slot>>>,
    /// Pre-committed slots by transactional id, with their checkpoint.
    pending: HashMap<String, (u64, Arc<Slot>)>,
    /// Subtasks whose slots exist.
    opened: Vec<usize>,
}

/// What every subtask of an exactly-once sink shares with its committer.
struct Transactions {
    settings: ClientSettings,
    topic: String,
    prefix: String,
    max_open: usize,
    fence_subtasks: usize,
    before_commit: Option<BeforeCommitFn>,
    parallelism: AtomicUsize,
    /// The subtask, when it runs on its own (worker mode): fencing and
    /// restores then touch only its ids.
    isolated: Mutex<Option<usize>>,
    /// The lineage of this job's markers: restored, or drawn at the first
    /// transaction of a fresh start.
    lineage: Mutex<Option<u64>>,
    state: Mutex<SlotState>,
    /// Signalled when a slot becomes free.
    freed: Condvar,
    /// Why making slots or fencing in the background failed.
    background_error: Mutex<Option<Error>>,
}

impl Transactions {
    fn id(&self, subtask: usize, slot: usize) -> String {
        format!("{}-{subtask}-{slot}", self.prefix)
    }

    fn marker_group(id: &str) -> String {
        format!("{id}-marker")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lineage(&self) -> u64 {
        let mut lineage = self.lineage.lock().unwrap_or_else(PoisonError::into_inner);
        *lineage.get_or_insert_with(new_lineage)
    }

    /// A transactional producer for `id`, initialized: this fences every
    /// earlier producer with that id and aborts its open transaction.
    fn init_producer(&self, id: &str) -> Result<KafkaProducer> {
        producer::transactional(&self.settings, id, "60000")
    }

    /// Initializes a producer for each of `ids` (in parallel: each is a
    /// round trip to the transaction coordinator), fencing them all.
    fn fence_all(&self, ids: &[String]) -> Result<()> {
        in_parallel(ids, |id| self.init_producer(id).map(drop)).map(drop)
    }

    /// The commit-marker group metadata of `id`.
    fn marker_metadata(&self, id: &str) -> Result<ConsumerGroupMetadata> {
        let group = Self::marker_group(id);
        let consumer = self.settings.metadata_consumer(Some(&group))?;
        consumer.group_metadata().ok_or_else(|| {
            Error::Internal(format!("no group metadata for consumer group '{group}'"))
        })
    }

    /// The last committed marker of `id`: `(checkpoint, lineage)`.
    fn read_marker(&self, id: &str) -> Result<Option<(u64, u64)>> {
        let consumer = self
            .settings
            .metadata_consumer(Some(&Self::marker_group(id)))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, 0);
        let committed = consumer
            .committed_offsets(tpl, REQUEST_TIMEOUT)
            .map_err(|e| {
                self.settings
                    .error(format!("read the commit marker of '{id}'"), e)
            })?;
        let Some(entry) = committed.find_partition(&self.topic, 0) else {
            return Ok(None);
        };
        Ok(match entry.offset() {
            Offset::Offset(checkpoint) => u64::from_str_radix(entry.metadata(), 16)
                .ok()
                .map(|lineage| (checkpoint.max(0) as u64, lineage)),
            _ => None,
        })
    }

    /// Adds the commit marker of `checkpoint` to `slot`'s open transaction.
    fn add_marker(
        &self,
        producer: &KafkaProducer,
        marker: &ConsumerGroupMetadata,
        id: &str,
        checkpoint: u64,
        lineage: u64,
    ) -> Result<()> {
        let mut offsets = TopicPartitionList::new();
        let mut entry = offsets.add_partition(&self.topic, 0);
        entry
            .set_offset(Offset::Offset(checkpoint as i64))
            .map_err(|e| Error::Internal(e.to_string()))?;
        entry.set_metadata(format!("{lineage:016x}"));
        producer
            .send_offsets_to_transaction(&offsets, marker, PRODUCE_TIMEOUT)
            .map_err(|e| {
                self.settings
                    .error(format!("add the commit marker to transaction '{id}'"), e)
            })
    }

    /// Makes the slots of `subtask` (once), fencing their ids; subtask 0 of
    /// a fresh start also fences the ids of subtasks beyond the parallelism.
    fn open_slots(
        self: &Arc<Self>,
        subtask: usize,
        parallelism: usize,
    ) -> Result<Option<Background>> {
        if self.state().opened.contains(&subtask) {
            return Ok(None);
        }
        let first = self.make_slot(subtask, 0)?;
        {
            let mut state = self.state();
            state.opened.push(subtask);
            state.idle.insert(subtask, vec![first]);
        }
        // The other slots, and the ids beyond the parallelism, are not
        // needed to start writing, only to abort what an earlier run left
        // open: each is a round trip to the transaction coordinator, so
        // they are made in the background (a failure fails the next
        // transaction of any subtask).
        let isolated = self
            .isolated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        let others: Vec<String> = if subtask == 0 && !isolated {
            (parallelism..self.fence_subtasks.max(parallelism))
                .flat_map(|other| (0..self.max_open).map(move |slot| (other, slot)))
                .map(|(other, slot)| self.id(other, slot))
                .collect()
        } else {
            Vec::new()
        };
        let this = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("tideline:kafka-fence".into())
            .spawn(move || {
                let slots: Vec<usize> = (1..this.max_open).collect();
                let result = in_parallel(&slots, |&slot| this.make_slot(subtask, slot))
                    .map(|slots| {
                        this.state().idle.entry(subtask).or_default().extend(slots);
                        // A subtask may be waiting for one already.
                        this.freed.notify_all();
                    })
                    .and_then(|()| this.fence_all(&others));
                if let Err(e) = &result {
                    // A subtask waiting for a slot hears of it too.
                    *this
                        .background_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Error::external(
                        this.settings.system(),
                        "make transactional producers",
                        e.to_string(),
                    ));
                }
                this.freed.notify_all();
                result
            });
        spawned
            .map(Some)
            .map_err(|e| Error::Internal(format!("cannot start a thread: {e}")))
    }

    /// Slot `slot` of `subtask`: its producer initialized (fencing its id)
    /// and its commit-marker group.
    fn make_slot(&self, subtask: usize, slot: usize) -> Result<Arc<Slot>> {
        let id = self.id(subtask, slot);
        let producer = Arc::new(self.init_producer(&id)?);
        let marker = self.marker_metadata(&id)?;
        Ok(Arc::new(Slot {
            id,
            subtask,
            producer,
            marker,
        }))
    }

    /// The error of the background slot making and fencing, once.
    fn background_failure(&self) -> Result<()> {
        match self
            .background_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn take_slot(&self, subtask: usize) -> Result<Arc<Slot>> {
        let deadline = std::time::Instant::now() + PRODUCE_TIMEOUT;
        let mut state = self.state();
        loop {
            if let Some(slot) = state.idle.get_mut(&subtask).and_then(Vec::pop) {
                return Ok(slot);
            }
            self.background_failure()?;
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(Error::external(
                    self.settings.system(),
                    format!("begin a transaction of subtask {subtask}"),
                    format!(
                        "all {} transactional producers await the commit of their checkpoint \
                         (checkpoints are not completing)",
                        self.max_open
                    ),
                ));
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn release(&self, slot: Arc<Slot>) {
        let mut state = self.state();
        state.idle.entry(slot.subtask).or_default().push(slot);
        self.freed.notify_all();
    }

    /// Writes a transaction that never committed again, from the
    /// checkpoint's copy, with its marker, and commits it.
    fn rewrite(&self, txn: &TransactionRecord) -> Result<()> {
        let producer = self.init_producer(&txn.id)?;
        let marker = self.marker_metadata(&txn.id)?;
        producer.begin_transaction().map_err(|e| {
            self.settings
                .error(format!("begin transaction '{}'", txn.id), e)
        })?;
        for record in &txn.records {
            producer::send(&producer, &self.settings, record)?;
        }
        self.add_marker(&producer, &marker, &txn.id, txn.checkpoint, txn.lineage)?;
        producer::flush(
            &producer,
            &self.settings,
            &format!("transaction '{}'", txn.id),
        )?;
        if let Some(hook) = &self.before_commit {
            hook(&txn.id, txn.checkpoint);
        }
        producer.commit_transaction(PRODUCE_TIMEOUT).map_err(|e| {
            self.settings
                .error(format!("commit transaction '{}'", txn.id), e)
        })
    }
}

/// `f` of every item, each on its own thread (they are round trips to the
/// broker), or the first error.
fn in_parallel<I: Sync, R: Send>(
    items: &[I],
    f: impl Fn(&I) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items
            .iter()
            .map(|item| scope.spawn(move || f(item)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Internal("a Kafka client thread panicked".into()))
                })
            })
            .collect()
    })
}

/// A lineage token: unique enough across fresh starts of one job.
fn new_lineage() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = nanos ^ (u64::from(std::process::id()) << 32);
    // splitmix64, so close starts differ in every bit.
    let mut z = mixed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Committer for Transactions {
    fn commit(&self, transaction: &[u8]) -> Result<()> {
        let txn = TransactionRecord::decode(transaction, &self.topic)?;
        let live = {
            let mut state = self.state();
            match state.pending.get(&txn.id) {
                Some((checkpoint, _)) if *checkpoint == txn.checkpoint => {
                    state.pending.remove(&txn.id).map(|(_, slot)| slot)
                }
                // The slot already moved on to a later transaction, which
                // it can only do after this one committed.
                Some((checkpoint, _)) if *checkpoint > txn.checkpoint => return Ok(()),
                _ => None,
            }
        };
        match live {
            Some(slot) => {
                if let Some(hook) = &self.before_commit {
                    hook(&slot.id, txn.checkpoint);
                }
                slot.producer
                    .commit_transaction(PRODUCE_TIMEOUT)
                    .map_err(|e| {
                        self.settings
                            .error(format!("commit transaction '{}'", slot.id), e)
                    })?;
                self.release(slot);
                Ok(())
            }
            None => match self.read_marker(&txn.id)? {
                Some((checkpoint, lineage))
                    if lineage == txn.lineage && checkpoint >= txn.checkpoint =>
                {
                    Ok(())
                }
                _ => self.rewrite(&txn),
            },
        }
    }

    fn abort_uncommitted(&self, restored: u64, keep: &[Vec<u8>]) -> Result<()> {
        let mut parallelism = self.parallelism.load(Ordering::Relaxed);
        let mut max_open = self.max_open;
        for blob in keep {
            let txn = TransactionRecord::decode(blob, &self.topic)?;
            parallelism = parallelism.max(txn.parallelism);
            max_open = max_open.max(txn.max_open);
            *self.lineage.lock().unwrap_or_else(PoisonError::into_inner) = Some(txn.lineage);
        }
        let lineage = self.lineage();
        // A subtask running on its own (worker mode) fences only its own
        // ids: the others belong to live tasks elsewhere.
        let subtasks = match *self.isolated.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(subtask) => subtask..subtask + 1,
            None => 0..parallelism.max(1),
        };
        let ids: Vec<String> = subtasks
            .flat_map(|subtask| (0..max_open).map(move |slot| (subtask, slot)))
            .map(|(subtask, slot)| self.id(subtask, slot))
            .collect();
        self.fence_all(&ids)?;
        for id in &ids {
            if let Some((checkpoint, marked)) = self.read_marker(id)? {
                if marked == lineage && checkpoint > restored {
                    return Err(Error::config(
                        "kafka sink restore",
                        format!(
                            "transaction '{id}' already committed the output of checkpoint \
                             {checkpoint}, which is after checkpoint {restored} being restored: \
                             its records would be written twice. Restore checkpoint {checkpoint} \
                             or later, or use a new transactional id prefix to accept duplicates"
                        ),
                    ));
                }
            }
        }
        // The restored job's own subtasks fence and open their slots again.
        self.state().opened.clear();
        Ok(())
    }
}

impl<T: Data> KafkaSink<T> {
    fn stored(&self, record: &T) -> Result<StoredRecord> {
        let value = (self.fns.serialize)(record).map_err(|reason| {
            Error::user(format!(
                "kafka sink '{}': cannot serialize a record for topic '{}': {reason}",
                self.fns.name, self.shared.topic
            ))
        })?;
        Ok(StoredRecord {
            topic: self
                .fns
                .topic_by
                .as_ref()
                .map_or_else(|| self.shared.topic.clone(), |f| f(record)),
            key: self.fns.key.as_ref().and_then(|f| f(record)),
            value,
            headers: self
                .fns
                .headers
                .as_ref()
                .map(|f| f(record))
                .unwrap_or_default(),
            partition: self.fns.partition_by.as_ref().and_then(|f| f(record)),
        })
    }

    fn plain_producer(&mut self) -> Result<&KafkaProducer> {
        let producer = match self.producer.take() {
            Some(producer) => producer,
            None => producer::create(&self.shared.settings, &[])?,
        };
        Ok(self.producer.insert(producer))
    }

    fn open_transaction(&mut self) -> Result<&mut OpenTransaction> {
        if let Some(open) = self.open.take() {
            return Ok(self.open.insert(open));
        }
        let shared = &self.shared;
        if let Some(background) =
            shared.open_slots(self.subtask.subtask, self.subtask.parallelism)?
        {
            self.background = Some(background);
        }
        let slot = shared.take_slot(self.subtask.subtask)?;
        slot.producer.begin_transaction().map_err(|e| {
            shared
                .settings
                .error(format!("begin transaction '{}'", slot.id), e)
        })?;
        Ok(self.open.insert(OpenTransaction {
            slot,
            records: Vec::new(),
        }))
    }
}

impl<T: Data> Sink<T> for KafkaSink<T> {
    fn name(&self) -> &str {
        &self.fns.name
    }

    fn open(&mut self, subtask: SubtaskInfo) -> Result<()> {
        self.subtask = subtask;
        if subtask.isolated {
            *self
                .shared
                .isolated
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(subtask.subtask);
        }
        self.shared
            .parallelism
            .fetch_max(subtask.parallelism, Ordering::Relaxed);
        Ok(())
    }

    fn write_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        let records = batch
            .iter()
            .map(|r| self.stored(&r.value))
            .collect::<Result<Vec<_>>>()?;
        // The Arc, not the settings: a clone per batch would copy strings.
        let shared = Arc::clone(&self.shared);
        let settings = &shared.settings;
        match self.fns.guarantee {
            DeliveryGuarantee::AtLeastOnce => {
                let producer = self.plain_producer()?;
                for record in &records {
                    producer::send(producer, settings, record)?;
                }
                producer.poll(std::time::Duration::ZERO);
                producer::take_failure(producer, settings, "the sink")
            }
            DeliveryGuarantee::ExactlyOnce => {
                let open = self.open_transaction()?;
                for record in &records {
                    producer::send(&open.slot.producer, settings, record)?;
                }
                open.slot.producer.poll(std::time::Duration::ZERO);
                open.records.extend(records);
                Ok(())
            }
        }
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        // The Arc, not the settings: a clone per batch would copy strings.
        let shared = Arc::clone(&self.shared);
        let settings = &shared.settings;
        match self.fns.guarantee {
            DeliveryGuarantee::AtLeastOnce => {
                if let Some(producer) = &self.producer {
                    producer::flush(producer, settings, &format!("checkpoint {checkpoint}"))?;
                }
                Ok(None)
            }
            DeliveryGuarantee::ExactlyOnce => {
                if let Some(background) = self.background.take() {
                    background.join().unwrap_or_else(|_| {
                        Err(Error::Internal("a Kafka client thread panicked".into()))
                    })?;
                }
                let Some(open) = self.open.take() else {
                    return Ok(None);
                };
                let lineage = shared.lineage();
                let slot = open.slot;
                shared.add_marker(&slot.producer, &slot.marker, &slot.id, checkpoint, lineage)?;
                producer::flush(
                    &slot.producer,
                    settings,
                    &format!("transaction '{}'", slot.id),
                )?;
                let txn = TransactionRecord {
                    id: slot.id.clone(),
                    parallelism: self.subtask.parallelism,
                    max_open: shared.max_open,
                    checkpoint,
                    lineage,
                    records: open.records,
                };
                let blob = txn.encode()?;
                shared
                    .state()
                    .pending
                    .insert(slot.id.clone(), (checkpoint, slot));
                Ok(Some(blob))
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(producer) = &self.producer {
            producer::flush(producer, &self.shared.settings, "the sink")?;
        }
        Ok(())
    }

    fn committer(&self) -> Option<Arc<dyn Committer>> {
        match self.fns.guarantee {
            DeliveryGuarantee::ExactlyOnce => Some(Arc::clone(&self.shared) as Arc<dyn Committer>),
            DeliveryGuarantee::AtLeastOnce => None,
        }
    }
}

#[cfg(test)]
// Tests fail by panicking, on the value that was wrong.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn transactions_of_both_versions_decode() {
        let txn = TransactionRecord {
            id: "p-0-1".into(),
            parallelism: 2,
            max_open: 4,
            checkpoint: 7,
            lineage: 9,
            records: vec![
                StoredRecord {
                    topic: "t".into(),
                    key: Some(b"k".to_vec()),
                    value: None,
                    headers: vec![],
                    partition: None,
                },
                StoredRecord {
                    topic: "t".into(),
                    key: None,
                    value: Some(b"v".to_vec()),
                    headers: vec![("h".into(), b"x".to_vec())],
                    partition: Some(3),
                },
            ],
        };
        let decoded = TransactionRecord::decode(&txn.encode().unwrap(), "t").unwrap();
        assert_eq!(decoded.records, txn.records);
        // Written before tombstones: every record has a value.
        // Written before partitions: tombstones, no partition.
        let v2 = postcard::to_extend(
            &OldTransactionRecord {
                id: "p-0-1".into(),
                parallelism: 2,
                max_open: 4,
                checkpoint: 7,
                lineage: 9,
                records: vec![StoredRecordV2 {
                    topic: "t".into(),
                    key: None,
                    value: None,
                    headers: vec![],
                }],
            },
            TRANSACTION_V2.to_vec(),
        )
        .unwrap();
        let decoded = TransactionRecord::decode(&v2, "t").unwrap();
        assert_eq!(decoded.checkpoint, 7);
        assert_eq!(
            (
                decoded.records[0].value.clone(),
                decoded.records[0].partition
            ),
            (None, None)
        );
        let v1 = postcard::to_allocvec(&OldTransactionRecord {
            id: "p-0-1".into(),
            parallelism: 2,
            max_open: 4,
            checkpoint: 7,
            lineage: 9,
            records: vec![StoredRecordV1 {
                topic: "t".into(),
                key: None,
                value: b"v".to_vec(),
                headers: vec![],
            }],
        })
        .unwrap();
        let decoded = TransactionRecord::decode(&v1, "t").unwrap();
        assert_eq!((decoded.id.as_str(), decoded.checkpoint), ("p-0-1", 7));
        assert_eq!(decoded.records[0].value, Some(b"v".to_vec()));
        assert!(TransactionRecord::decode(&[0xFF; 3], "t").is_err());
    }
}
