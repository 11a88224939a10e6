//! [`KafkaSource`]: Kafka partitions as Tideline source partitions.
//!
//! # Invariants
//! - Each Kafka partition is one source partition, with its own watermark
//!   generator and idleness: the partition-local lateness rule judges a
//!   record by the watermark of its own Kafka partition just before it, so a
//!   live run and a bounded replay of the same topic make the same late-data
//!   decisions whatever the read speeds.
//! - The partitions are the subscribed topics' partitions, sorted by topic
//!   name, then partition number; source subtask `s` of `n` reads the
//!   partitions `s, s + n, …` of that list.
//! - A running unbounded source looks for new partitions every 30 s (see
//!   [`KafkaSourceBuilder::partition_discovery`]): partitions added to its
//!   topics, and the partitions of new topics a pattern matches. They are
//!   appended to the list (sorted among themselves), so no partition changes
//!   number, and each is read from its start by the subtask that owns its
//!   number. A bounded source reads the partitions it had at start.
//! - A checkpointed offset carries a fingerprint of its topic and partition.
//!   A restore numbers the partitions as the checkpoint did (the appended
//!   ones included), then the partitions it did not know, sorted; a
//!   checkpointed partition whose topic is gone fails the restore.
//! - A reader's offset is the offset after the last record it emitted; a
//!   restore assigns exactly that offset. The start position is turned into
//!   a concrete offset when a reader is created, and a bounded reader's end
//!   offset is fixed then and stored with every checkpointed offset, so a
//!   restored bounded job ends exactly where the original would have.
//! - Offsets are committed to the consumer group (if one is set) only when a
//!   checkpoint completes, for monitoring; restores never read them.
//!
//! # Failure analysis
//! - **Broker unreachable, topic missing** at build: an error naming the
//!   brokers or the topic; the job does not start.
//! - **Broker lost while running**: librdkafka reconnects and retries by
//!   itself; the reader just sees no records (the partition may go idle).
//! - **Offset out of range** (a restore offset deleted by retention):
//!   `auto.offset.reset` is `error`, so the reader fails the job rather than
//!   skip or re-read data silently.
//! - **Undecodable record**: a dead letter with `topic/partition@offset` and
//!   the reason; the job goes on, or fails under `FailurePolicy::FailFast`.
//! - **Backpressure**: the source task stops polling when downstream is
//!   full; librdkafka stops fetching a partition once its queue holds
//!   `queued.max.messages.kbytes` (8 MiB by default here), so memory stays
//!   bounded however far behind the job is; it fetches again 10 ms after
//!   the queue has room (`fetch.queue.backoff.ms`, 1 s in librdkafka).
//! - **Transactions**: the consumer reads with `isolation.level =
//!   read_committed` by default, so an exactly-once producer's aborted
//!   records are never seen.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use regex::Regex;
use serde::de::DeserializeOwned;
use tideline_engine::{
    Data, Error, EventTime, ReaderContext, Record, Result, Source, SourceOffset, SourceOutput,
    SourceReader, SourceStatus,
};

use crate::client::{invalid_property, ClientSettings, REQUEST_TIMEOUT};
use crate::record::{self, DeserializeFn, KafkaMessage, KafkaRecord};

/// Where a partition is read from when the job does not restore it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartOffset {
    /// The oldest record still in the partition.
    Earliest,
    /// The end of the partition at start: only records written later.
    Latest,
    /// The consumer group's committed offset, or `fallback` where the group
    /// has none (needs [`KafkaSourceBuilder::group_id`]).
    Committed {
        /// Used for partitions without a committed offset.
        fallback: Fallback,
    },
    /// The first record whose Kafka timestamp is at or after this many
    /// milliseconds since the epoch.
    Timestamp(i64),
    /// Explicit offsets per `(topic, partition)`; partitions not listed
    /// start from `fallback`.
    Offsets {
        /// The offsets.
        offsets: BTreeMap<(String, i32), i64>,
        /// Used for partitions not listed.
        fallback: Fallback,
    },
}

/// Where a partition without a committed or explicit offset starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// At its oldest record.
    Earliest,
    /// At its end.
    Latest,
}

/// Where a bounded source stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// At the end offsets each partition had when its reader was created:
    /// a backfill of everything written so far.
    EndOffsets,
    /// Before the first record whose Kafka timestamp is after this many
    /// milliseconds since the epoch (among the records present at start).
    Timestamp(i64),
}

/// The subscribed topics.
#[derive(Clone, Debug)]
enum Topics {
    Names(Vec<String>),
    Pattern(String),
}

/// The subscribed topics, as a running source resolves them.
#[derive(Debug)]
enum Subscription {
    /// These topics (sorted, without duplicates).
    Names(Vec<String>),
    /// Every topic whose whole name matches.
    Pattern(String, Regex),
}

impl Subscription {
    /// Every partition of the subscribed topics, sorted by topic, then
    /// partition; a named topic that is missing, or a pattern that matches
    /// none, is an error.
    fn partitions(
        &self,
        settings: &ClientSettings,
        metadata: &Metadata,
        field: &str,
    ) -> Result<Vec<(String, i32)>> {
        let matched;
        let topics = match self {
            Subscription::Names(names) => names,
            Subscription::Pattern(pattern, regex) => {
                let mut names: Vec<String> = metadata
                    .topics()
                    .iter()
                    .map(|t| t.name().to_string())
                    .filter(|name| !name.starts_with("__") && regex.is_match(name))
                    .collect();
                names.sort();
                if names.is_empty() {
                    return Err(Error::config(
                        format!("{field}.topic_pattern"),
                        format!("no topic on {} matches '{pattern}'", settings.system()),
                    ));
                }
                matched = names;
                &matched
            }
        };
        let counts = settings.partition_counts(metadata, topics, &format!("{field}.topic"))?;
        Ok(topics
            .iter()
            .zip(counts)
            .flat_map(|(topic, n)| (0..n as i32).map(move |p| (topic.clone(), p)))
            .collect())
    }
}

/// Configures a [`KafkaSource`]; the last call names the value type and
/// builds it (connecting to the cluster to read the partitions).
#[derive(Clone, Debug)]
pub struct KafkaSourceBuilder {
    settings: ClientSettings,
    topics: Topics,
    name: String,
    group_id: Option<String>,
    start: StartOffset,
    bound: Option<Bound>,
    discovery: Option<Duration>,
}

/// How often a running source looks for new partitions by default.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);

/// How long a look for new partitions may wait for the cluster: a look that
/// fails is tried again at the next interval.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads Kafka topics: each partition a source partition with its own
/// watermark (see the [module docs](self) for the guarantees).
///
/// ```no_run
/// use std::time::Duration;
/// use tideline_engine::time::WatermarkStrategy;
/// use tideline_engine::Job;
/// use tideline_kafka::{KafkaSource, StartOffset};
/// # #[derive(Clone, Debug, serde::Deserialize)] struct Click { user: String, at: i64 }
/// let clicks = KafkaSource::builder("127.0.0.1:9092")
///     .topic("clicks")
///     .group_id("click-counts")
///     .start(StartOffset::Earliest)
///     .json::<Click>()?;
/// let job = Job::new();
/// let stream = job.source(
///     clicks,
///     WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(5))
///         .with_timestamps(|c: &Click| c.at),
/// );
/// # Ok::<(), tideline_engine::Error>(())
/// ```
pub struct KafkaSource<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for KafkaSource<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> std::fmt::Debug for KafkaSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("name", &self.inner.name)
            .field("partitions", &*self.inner.layout())
            .finish_non_exhaustive()
    }
}

struct Inner<T> {
    settings: ClientSettings,
    name: String,
    group_id: Option<String>,
    start: StartOffset,
    bound: Option<Bound>,
    subscription: Subscription,
    /// How often running subtasks look for new partitions.
    discovery: Option<Duration>,
    /// Asks the cluster for its metadata when looking.
    metadata: Mutex<BaseConsumer>,
    /// `(topic, partition)` of every source partition, in order: sorted at
    /// build, partitions found later appended, renumbered as the checkpoint
    /// says on restore.
    layout: Mutex<Vec<(String, i32)>>,
    deserialize: DeserializeFn<T>,
    /// One consumer per source subtask: its readers share it.
    consumers: Mutex<HashMap<usize, Arc<BaseConsumer>>>,
    /// Commits group offsets when checkpoints complete.
    committer: OnceLock<BaseConsumer>,
    /// The last failed group-offset commit (they never fail the job).
    last_commit_error: Mutex<Option<String>>,
}

impl KafkaSource<()> {
    /// A source reading from the cluster at `brokers` (`host:port,…`).
    pub fn builder(brokers: impl Into<String>) -> KafkaSourceBuilder {
        KafkaSourceBuilder {
            settings: ClientSettings::new(brokers),
            topics: Topics::Names(Vec::new()),
            name: "kafka".to_string(),
            group_id: None,
            start: StartOffset::Earliest,
            bound: None,
            discovery: Some(DISCOVERY_INTERVAL),
        }
    }
}

impl KafkaSourceBuilder {
    /// Subscribes to `topic` (call again for more).
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        match &mut self.topics {
            Topics::Names(names) => names.push(topic.into()),
            Topics::Pattern(_) => self.topics = Topics::Names(vec![topic.into()]),
        }
        self
    }

    /// Subscribes to every topic whose whole name matches the regular
    /// expression `pattern` when the source is built.
    pub fn topic_pattern(mut self, pattern: impl Into<String>) -> Self {
        self.topics = Topics::Pattern(pattern.into());
        self
    }

    /// The source's name in errors and the job summary (default `kafka`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The consumer group: completed checkpoints commit their offsets to
    /// it (for monitoring with standard tools), and
    /// [`StartOffset::Committed`] starts from it.
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self
    }

    /// Where partitions start when the job does not restore them (default
    /// [`StartOffset::Earliest`]).
    pub fn start(mut self, start: StartOffset) -> Self {
        self.start = start;
        self
    }

    /// Makes the source bounded: every partition ends at `bound`, and the
    /// job ends like a file replay does.
    pub fn bounded(mut self, bound: Bound) -> Self {
        self.bound = Some(bound);
        self
    }

    /// How often a running (unbounded) source looks for partitions added to
    /// its topics, or to a pattern's new topics (default every 30 s; `None`:
    /// never). A new partition is read from its start, by the subtask that
    /// owns its number, with a watermark of its own.
    pub fn partition_discovery(mut self, interval: Option<Duration>) -> Self {
        self.discovery = interval;
        self
    }

    /// Sets a librdkafka consumer property (it wins over the connector's
    /// defaults), e.g. `isolation.level` = `read_uncommitted`.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.properties.insert(key.into(), value.into());
        self
    }

    /// Builds a source of values decoded from JSON.
    ///
    /// # Errors
    /// See [`KafkaSourceBuilder::deserialize`].
    pub fn json<T: Data + DeserializeOwned>(self) -> Result<KafkaSource<T>> {
        self.build(record::json())
    }

    /// Builds a source of values as UTF-8 text.
    ///
    /// # Errors
    /// See [`KafkaSourceBuilder::deserialize`].
    pub fn utf8(self) -> Result<KafkaSource<String>> {
        self.build(record::utf8())
    }

    /// Builds a source of the values' bytes.
    ///
    /// # Errors
    /// See [`KafkaSourceBuilder::deserialize`].
    pub fn bytes(self) -> Result<KafkaSource<Vec<u8>>> {
        self.build(record::bytes())
    }

    /// Builds a source of JSON values with their key, headers, partition,
    /// offset and timestamp.
    ///
    /// # Errors
    /// See [`KafkaSourceBuilder::deserialize`].
    pub fn with_metadata<V: Data + DeserializeOwned>(self) -> Result<KafkaSource<KafkaMessage<V>>> {
        self.build(record::with_metadata(record::json::<V>()))
    }

    /// Builds a source whose values `f` makes from each record; an `Err`
    /// sends the record to the dead-letter output with that reason.
    ///
    /// # Errors
    /// No topic, a bad pattern, a property librdkafka refuses, brokers that
    /// cannot be reached, a topic that does not exist, or
    /// [`StartOffset::Committed`] without a group id.
    pub fn deserialize<T, F>(self, f: F) -> Result<KafkaSource<T>>
    where
        T: Data,
        F: Fn(&KafkaRecord<'_>) -> std::result::Result<T, String> + Send + Sync + 'static,
    {
        self.build(Arc::new(f))
    }

    fn build<T: Data>(self, deserialize: DeserializeFn<T>) -> Result<KafkaSource<T>> {
        let field = format!("kafka source '{}'", self.name);
        if matches!(self.start, StartOffset::Committed { .. }) && self.group_id.is_none() {
            return Err(Error::config(
                format!("{field}.start"),
                "StartOffset::Committed needs a consumer group (KafkaSourceBuilder::group_id)",
            ));
        }
        let subscription = match self.topics {
            Topics::Names(names) if names.is_empty() => {
                return Err(Error::config(
                    format!("{field}.topics"),
                    "no topic: call KafkaSourceBuilder::topic or topic_pattern",
                ))
            }
            Topics::Names(mut names) => {
                names.sort();
                names.dedup();
                Subscription::Names(names)
            }
            Topics::Pattern(pattern) => {
                let regex = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                    Error::config(
                        format!("{field}.topic_pattern"),
                        format!("'{pattern}': {e}"),
                    )
                })?;
                Subscription::Pattern(pattern, regex)
            }
        };
        let consumer = self.settings.metadata_consumer(None)?;
        let metadata = self.settings.metadata(&consumer)?;
        let layout = subscription.partitions(&self.settings, &metadata, &field)?;
        Ok(KafkaSource {
            inner: Arc::new(Inner {
                settings: self.settings,
                name: self.name,
                group_id: self.group_id,
                start: self.start,
                bound: self.bound,
                subscription,
                discovery: self.discovery,
                metadata: Mutex::new(consumer),
                layout: Mutex::new(layout),
                deserialize,
                consumers: Mutex::new(HashMap::new()),
                committer: OnceLock::new(),
                last_commit_error: Mutex::new(None),
            }),
        })
    }
}

impl<T> KafkaSource<T> {
    /// The `(topic, partition)` of each source partition, in order.
    pub fn partition_layout(&self) -> Vec<(String, i32)> {
        self.inner.layout().clone()
    }

    /// Why the last commit of offsets to the consumer group failed, if it
    /// did (such commits are for monitoring and never fail the job).
    pub fn last_offset_commit_error(&self) -> Option<String> {
        self.inner
            .last_commit_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A stable fingerprint of a topic partition (FNV-1a, 64 bits), stored with
/// checkpointed offsets.
fn fingerprint(topic: &str, partition: i32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in topic.bytes().chain(partition.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// "No end offset" in a checkpointed offset.
const UNBOUNDED: u64 = u64::MAX;

impl<T> Inner<T> {
    fn layout(&self) -> MutexGuard<'_, Vec<(String, i32)>> {
        self.layout.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Data> Inner<T> {
    fn field(&self) -> String {
        format!("kafka source '{}'", self.name)
    }

    fn topic_partition(&self, partition: usize) -> Result<(String, i32)> {
        let layout = self.layout();
        layout.get(partition).cloned().ok_or_else(|| {
            Error::Internal(format!(
                "{}: partition {partition} of {}",
                self.field(),
                layout.len()
            ))
        })
    }

    /// Appends the subscription's partitions the layout does not have yet
    /// (sorted), and returns the layout's length. A cluster that does not
    /// answer in time is asked again at the next look.
    fn discover(&self) -> usize {
        let found = {
            let consumer = self.metadata.lock().unwrap_or_else(PoisonError::into_inner);
            consumer
                .fetch_metadata(None, DISCOVERY_TIMEOUT)
                .ok()
                .and_then(|md| self.subscription.partitions(&self.settings, &md, "").ok())
        };
        let mut layout = self.layout();
        if let Some(found) = found {
            let known: std::collections::HashSet<&(String, i32)> = layout.iter().collect();
            let new: Vec<(String, i32)> =
                found.into_iter().filter(|tp| !known.contains(tp)).collect();
            layout.extend(new);
        }
        layout.len()
    }

    /// Numbers the partitions as the checkpoint did: each offset's
    /// fingerprint names its partition; the rest follow, sorted.
    fn renumber(&self, offsets: &[(usize, SourceOffset)]) -> Result<()> {
        let mut layout = self.layout();
        let mut remaining: Vec<(String, i32)> = layout.clone();
        remaining.sort();
        let mut numbered: BTreeMap<usize, (String, i32)> = BTreeMap::new();
        for (partition, offset) in offsets {
            let print = offset.0.get(1).copied();
            let position = remaining
                .iter()
                .position(|(t, p)| Some(fingerprint(t, *p)) == print)
                .ok_or_else(|| {
                    Error::config(
                        format!("{}.offset", self.field()),
                        format!(
                            "the checkpoint's partition {partition} is in none of the \
                             subscribed topics now (was its topic deleted?)"
                        ),
                    )
                })?;
            numbered.insert(*partition, remaining.remove(position));
        }
        let total = remaining.len() + numbered.len();
        let mut rest = remaining.into_iter();
        *layout = (0..total)
            .filter_map(|i| numbered.remove(&i).or_else(|| rest.next()))
            .collect();
        if !numbered.is_empty() {
            return Err(Error::config(
                format!("{}.offset", self.field()),
                format!(
                    "the checkpoint numbers partitions {:?}, beyond the {total} the \
                     subscribed topics have",
                    numbered.keys().collect::<Vec<_>>()
                ),
            ));
        }
        Ok(())
    }

    fn consumer(&self, subtask: usize) -> Result<Arc<BaseConsumer>> {
        let mut consumers = self
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(consumer) = consumers.get(&subtask) {
            return Ok(Arc::clone(consumer));
        }
        let mut config = self.settings.config(&[
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
            ("isolation.level", "read_committed"),
            // Never skip or re-read silently: a restore offset that is gone
            // is an error.
            ("auto.offset.reset", "error"),
            ("queued.max.messages.kbytes", "8192"),
            // librdkafka waits 1 s (its default) before fetching again for a
            // partition whose queue was full: a job that drains fast would
            // read in bursts with second-long gaps.
            ("fetch.queue.backoff.ms", "10"),
            ("fetch.wait.max.ms", "100"),
        ]);
        // librdkafka assigns partitions only to a consumer with a group id;
        // the consumer never joins the group (offsets are assigned, not
        // subscribed) and commits only to the user's group, if any.
        let group = self
            .group_id
            .clone()
            .unwrap_or_else(|| format!("tideline-source-{}", self.name));
        config.set("group.id", group);
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| invalid_property(&self.settings, e))?;
        let consumer = Arc::new(consumer);
        consumers.insert(subtask, Arc::clone(&consumer));
        Ok(consumer)
    }

    /// The low and high watermarks of a partition.
    fn watermarks(
        &self,
        consumer: &BaseConsumer,
        topic: &str,
        partition: i32,
    ) -> Result<(i64, i64)> {
        let query = || consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT);
        query()
            .or_else(|e| match e.rdkafka_error_code() {
                // A partition added since the consumer last asked for the
                // topic's metadata (one found by discovery): ask, then again.
                Some(rdkafka::types::RDKafkaErrorCode::UnknownPartition) => {
                    consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
                    query()
                }
                _ => Err(e),
            })
            .map_err(|e| {
                self.settings
                    .error(format!("read the offsets of {topic}/{partition}"), e)
            })
    }

    /// The first offset at or after Kafka timestamp `ts`, if any record is.
    fn offset_for_time(
        &self,
        consumer: &BaseConsumer,
        topic: &str,
        partition: i32,
        ts: i64,
    ) -> Result<Option<i64>> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(ts))
            .map_err(|e| self.settings.error("look up an offset by time", e))?;
        let found = consumer
            .offsets_for_times(tpl, REQUEST_TIMEOUT)
            .map_err(|e| {
                self.settings
                    .error(format!("look up {topic}/{partition} by timestamp {ts}"), e)
            })?;
        Ok(found
            .find_partition(topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            }))
    }

    fn fallback(&self, fallback: Fallback, low: i64, high: i64) -> i64 {
        match fallback {
            Fallback::Earliest => low,
            Fallback::Latest => high,
        }
    }

    /// The concrete start offset of a partition that is not restored, whose
    /// offsets run from `low` to `high`.
    fn start_offset(
        &self,
        consumer: &BaseConsumer,
        topic: &str,
        partition: i32,
        (low, high): (i64, i64),
    ) -> Result<i64> {
        Ok(match &self.start {
            StartOffset::Earliest => low,
            StartOffset::Latest => high,
            StartOffset::Timestamp(ts) => self
                .offset_for_time(consumer, topic, partition, *ts)?
                .unwrap_or(high),
            StartOffset::Offsets { offsets, fallback } => {
                match offsets.get(&(topic.to_string(), partition)) {
                    Some(offset) if (low..=high).contains(offset) => *offset,
                    Some(offset) => {
                        return Err(Error::config(
                            format!("{}.start", self.field()),
                            format!(
                                "offset {offset} of {topic}/{partition} is outside the \
                                 partition's range {low}..={high}"
                            ),
                        ))
                    }
                    None => self.fallback(*fallback, low, high),
                }
            }
            StartOffset::Committed { fallback } => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(topic, partition);
                let group = self.group_consumer()?;
                let committed = group.committed_offsets(tpl, REQUEST_TIMEOUT).map_err(|e| {
                    self.settings.error(
                        format!("read the group's committed offset of {topic}/{partition}"),
                        e,
                    )
                })?;
                match committed
                    .find_partition(topic, partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) if (low..=high).contains(&o) => o,
                    _ => self.fallback(*fallback, low, high),
                }
            }
        })
    }

    /// The offset a bounded partition whose offsets end at `high` ends at
    /// (exclusive).
    fn end_offset(
        &self,
        consumer: &BaseConsumer,
        topic: &str,
        partition: i32,
        high: i64,
    ) -> Result<u64> {
        let Some(bound) = self.bound else {
            return Ok(UNBOUNDED);
        };
        let end = match bound {
            Bound::EndOffsets => high,
            Bound::Timestamp(ts) => self
                .offset_for_time(consumer, topic, partition, ts.saturating_add(1))?
                .map_or(high, |o| o.min(high)),
        };
        Ok(end.max(0) as u64)
    }

    fn group_consumer(&self) -> Result<&BaseConsumer> {
        if let Some(c) = self.committer.get() {
            return Ok(c);
        }
        let consumer = self.settings.metadata_consumer(self.group_id.as_deref())?;
        Ok(self.committer.get_or_init(|| consumer))
    }

    fn open(
        self: &Arc<Self>,
        partition: usize,
        ctx: &ReaderContext,
        resume: Option<(i64, u64)>,
    ) -> Result<KafkaReader<T>> {
        let (topic, kafka_partition) = self.topic_partition(partition)?;
        let topic = topic.as_str();
        let consumer = self.consumer(ctx.subtask.subtask)?;
        let (next, end) = match resume {
            Some(resume) => resume,
            None => {
                let range = self.watermarks(&consumer, topic, kafka_partition)?;
                (
                    self.start_offset(&consumer, topic, kafka_partition, range)?,
                    self.end_offset(&consumer, topic, kafka_partition, range.1)?,
                )
            }
        };
        let finished = end != UNBOUNDED && next as u64 >= end;
        // Split the partition's queue off before assigning it, so no record
        // of it is ever delivered through the consumer's main queue.
        let queue = consumer
            .split_partition_queue(topic, kafka_partition)
            .ok_or_else(|| {
                Error::config(
                    format!("{}.topic", self.field()),
                    format!("invalid topic name '{topic}'"),
                )
            })?;
        if !finished {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, kafka_partition, Offset::Offset(next))
                .map_err(|e| self.settings.error("assign a partition", e))?;
            consumer.incremental_assign(&tpl).map_err(|e| {
                self.settings
                    .error(format!("assign {topic}/{kafka_partition}"), e)
            })?;
        }
        Ok(KafkaReader {
            inner: Arc::clone(self),
            topic: topic.to_string(),
            partition: kafka_partition,
            consumer,
            queue,
            next,
            end,
            assigned: !finished,
            finished,
        })
    }
}

impl<T: Data> Source<T> for KafkaSource<T> {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn partitions(&self) -> usize {
        self.inner.layout().len()
    }

    fn partition_discovery_interval(&self) -> Option<Duration> {
        self.inner.discovery
    }

    fn discover_partitions(&self) -> Result<usize> {
        Ok(self.inner.discover())
    }

    fn restore_partitions(&self, offsets: &[(usize, SourceOffset)]) -> Result<()> {
        self.inner.renumber(offsets)
    }

    fn is_bounded(&self) -> bool {
        self.inner.bound.is_some()
    }

    fn create_reader(
        &self,
        partition: usize,
        ctx: &ReaderContext,
    ) -> Result<Box<dyn SourceReader<T>>> {
        Ok(Box::new(self.inner.open(partition, ctx, None)?))
    }

    fn create_reader_at(
        &self,
        partition: usize,
        ctx: &ReaderContext,
        offset: &SourceOffset,
    ) -> Result<Box<dyn SourceReader<T>>> {
        let (topic, kafka_partition) = self.inner.topic_partition(partition)?;
        let topic = topic.as_str();
        let [next, print, end] = offset.0[..] else {
            return Err(Error::config(
                format!("{}.offset", self.inner.field()),
                format!("checkpointed offset {:?} is not a Kafka offset", offset.0),
            ));
        };
        if print != fingerprint(topic, kafka_partition) {
            return Err(Error::config(
                format!("{}.offset", self.inner.field()),
                format!(
                    "the checkpoint's partition {partition} is not {topic}/{kafka_partition}: \
                     the subscribed topics or their partitions changed since the checkpoint"
                ),
            ));
        }
        let end = if self.inner.bound.is_some() {
            end
        } else {
            UNBOUNDED
        };
        Ok(Box::new(self.inner.open(
            partition,
            ctx,
            Some((next as i64, end)),
        )?))
    }

    fn notify_checkpoint_complete(
        &self,
        _checkpoint: u64,
        offsets: &[(usize, SourceOffset)],
    ) -> Result<()> {
        let inner = &self.inner;
        if inner.group_id.is_none() || offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (partition, offset) in offsets {
            let (topic, p) = inner.topic_partition(*partition)?;
            if let Some(next) = offset.0.first() {
                // An error here is a bug in this file (a valid offset).
                tpl.add_partition_offset(&topic, p, Offset::Offset(*next as i64))
                    .map_err(|e| Error::Internal(e.to_string()))?;
            }
        }
        let result = inner.group_consumer().and_then(|c| {
            c.commit(&tpl, CommitMode::Sync)
                .map_err(|e| inner.settings.error("commit group offsets", e))
        });
        let mut last = inner
            .last_commit_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *last = result.err().map(|e| e.to_string());
        Ok(())
    }
}

/// Reads one Kafka partition through its own queue of the subtask's consumer.
struct KafkaReader<T> {
    inner: Arc<Inner<T>>,
    topic: String,
    partition: i32,
    consumer: Arc<BaseConsumer>,
    queue:
        rdkafka::consumer::base_consumer::PartitionQueue<rdkafka::consumer::DefaultConsumerContext>,
    /// The offset after the last record emitted.
    next: i64,
    /// Where a bounded partition ends (exclusive), or [`UNBOUNDED`].
    end: u64,
    assigned: bool,
    finished: bool,
}

impl<T> KafkaReader<T> {
    fn reached_end(&self) -> bool {
        self.end != UNBOUNDED && self.next as u64 >= self.end
    }

    /// At the end of what is fetched: transaction markers may fill the
    /// offsets up to the end, which the consumer's position has passed.
    fn position_reached_end(&mut self) -> Result<bool> {
        if self.end == UNBOUNDED {
            return Ok(false);
        }
        let position = self
            .consumer
            .position()
            .map_err(|e| self.inner.settings.error("read the consumer position", e))?;
        if let Some(Offset::Offset(p)) = position
            .find_partition(&self.topic, self.partition)
            .map(|e| e.offset())
        {
            if p as u64 >= self.end {
                self.next = self.next.max(self.end as i64);
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn unassign(&mut self) {
        if self.assigned {
            self.assigned = false;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.topic, self.partition);
            // Best effort: the consumer goes away with the job anyway.
            let _ = self.consumer.incremental_unassign(&tpl);
        }
    }
}

impl<T> Drop for KafkaReader<T> {
    fn drop(&mut self) {
        self.unassign();
    }
}

impl<T: Data> SourceReader<T> for KafkaReader<T> {
    fn poll(&mut self, out: &mut SourceOutput<T>) -> Result<SourceStatus> {
        if self.finished {
            return Ok(SourceStatus::Finished);
        }
        // Serves the consumer's callbacks and surfaces client-wide errors.
        if let Some(Err(e)) = self.consumer.poll(std::time::Duration::ZERO) {
            if is_fatal(&e) {
                return Err(self.inner.settings.error("consume", e));
            }
        }
        let mut status = SourceStatus::Ready;
        while out.remaining() > 0 {
            let Some(message) = self.queue.poll(std::time::Duration::ZERO) else {
                status = SourceStatus::Pending;
                break;
            };
            let message = match message {
                Ok(message) => message,
                Err(KafkaError::PartitionEOF(_)) => {
                    if self.position_reached_end()? {
                        self.finished = true;
                    } else {
                        status = SourceStatus::Pending;
                    }
                    break;
                }
                Err(e) => {
                    return Err(self
                        .inner
                        .settings
                        .error(format!("consume {}/{}", self.topic, self.partition), e))
                }
            };
            let record = KafkaRecord::from_message(&message);
            if record.offset < self.next {
                continue;
            }
            if self.end != UNBOUNDED && record.offset as u64 >= self.end {
                self.finished = true;
                break;
            }
            match (self.inner.deserialize)(&record) {
                Ok(value) => {
                    let ts = record
                        .timestamp
                        .map_or(EventTime::MIN, EventTime::from_millis);
                    out.push(Record::new(ts, value));
                }
                Err(reason) => out.dead_letter_at(reason, record.payload_text(), record.position()),
            }
            self.next = record.offset + 1;
            if self.reached_end() {
                self.finished = true;
                break;
            }
        }
        if self.finished {
            self.unassign();
            return Ok(SourceStatus::Finished);
        }
        Ok(status)
    }

    /// The offset after the last record emitted, and the lag: to the end
    /// of a bounded partition, else to the partition's high watermark as
    /// the last fetch response reported it (librdkafka's cached value: no
    /// request to the broker). On a transactionally written topic the lag
    /// of a caught-up reader is the commit markers after its last record
    /// (usually 1), not 0.
    fn progress(&self) -> Option<tideline_engine::PartitionProgress> {
        let position = self.next.max(0) as u64;
        let end = if self.end != UNBOUNDED {
            Some(self.end)
        } else {
            cached_high_watermark(&self.consumer, &self.topic, self.partition)
        };
        Some(tideline_engine::PartitionProgress {
            position,
            lag: end.map(|end| end.saturating_sub(position)),
            bounded: self.end != UNBOUNDED,
        })
    }

    fn offset(&self) -> Option<SourceOffset> {
        Some(SourceOffset(vec![
            self.next.max(0) as u64,
            fingerprint(&self.topic, self.partition),
            self.end,
        ]))
    }
}

/// The high watermark of `topic`/`partition` as the last fetch response
/// reported it. rdkafka exposes only the variant that asks the broker
/// (`fetch_watermarks`, a network round trip); metrics are sampled on the
/// reader's thread several times a second, so they read librdkafka's cache.
fn cached_high_watermark(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<u64> {
    use rdkafka::bindings::{rd_kafka_get_watermark_offsets, rd_kafka_resp_err_t};
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` is borrowed, the
    // topic is a NUL-terminated string that outlives the call, and the call
    // writes only the two integers (it reads librdkafka's partition cache
    // under its own lock, creating the partition's entry if missing).
    let err = unsafe {
        rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
        .then_some(high)
        .and_then(|h| u64::try_from(h).ok())
}

/// Errors the client does not recover from by itself.
fn is_fatal(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        e.rdkafka_error_code(),
        Some(
            Code::Fatal
                | Code::Fenced
                | Code::OffsetOutOfRange
                | Code::TopicAuthorizationFailed
                | Code::GroupAuthorizationFailed
                | Code::ClusterAuthorizationFailed
                | Code::Authentication
                | Code::SaslAuthenticationFailed
        )
    )
}
