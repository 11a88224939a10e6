//! [`KafkaCheckpointStore`]: a task's checkpoint files in a partition of a
//! compacted topic, so a task restores on any worker and no worker needs a
//! directory another one reaches.
//!
//! Stage `s` has the topic `<application-id>-stage-<s>-checkpoints`, one
//! partition per task, `cleanup.policy=compact`; task `t` keeps its files
//! in partition `t`, written by the transactional id
//! `<application-id>-checkpoints-<s>-<t>`. Each file is one or more
//! records (chunks of at most 512 KiB, below the broker's default message
//! size), keyed `<file key>\0<chunk index>`; deleting a file writes a
//! tombstone per chunk. The worker keeps a local copy of every file (the
//! cache, in the task's staging directory), rebuilt from the partition
//! when the store opens; reads are served from it.
//!
//! # Invariants
//! - Every [`write`](CheckpointStore::write), [`store`](CheckpointStore::store)
//!   and [`delete`](CheckpointStore::delete) is one Kafka transaction,
//!   committed before it returns and before the cache changes: a file is
//!   in the partition whole or not at all, and the cache never holds what
//!   the partition does not.
//! - Only the last opener of a task's store can write it: opening
//!   initializes the transactional id, which fences every earlier producer
//!   with it and aborts its open transaction, *before* the partition is
//!   read. A zombie (a worker paused past its session timeout whose task
//!   moved) fails at its next write, so it can neither complete a
//!   checkpoint nor delete one the new owner restores.
//! - Compaction keeps, per record key, the newest record, and never
//!   reorders: the chunks of a file's newest version (written together,
//!   in order, by the only writer) all survive, after whatever stale
//!   chunks of older versions remain. A replay in log order assembles a
//!   version only from a chunk 0 followed by every other chunk of the same
//!   write, so stale fragments are passed over.
//!
//! # Failure analysis
//! - **Crash during a write:** the transaction never commits; read_committed
//!   replays skip it, and a new owner's initialization aborts it.
//! - **A zombie's write after the task moved:** fenced (an error); the
//!   zombie's task fails and the partition holds only the new owner's
//!   files.
//! - **A chunk missing or out of order** (another program wrote to the
//!   topic): the replay keeps the last complete version of each file; the
//!   checkpoint's checksums then decide, as for a damaged directory.
//! - **Broker unreachable:** every call fails with an error naming the
//!   brokers; the task fails and restarts elsewhere, as with a full disk.
//! - **Restore time** grows with the partition's size: the files of the
//!   retained checkpoints, plus what compaction has not yet removed
//!   (`segment.ms` of 10 minutes bounds how long superseded data stays
//!   in the uncleaned tail). A standby replica on the new owner's worker
//!   ([`CheckpointReplica`], `KafkaWorkers::standby_replicas`) cuts it to
//!   the records written since the replica's last read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::producer::Producer;
use tideline_engine::{
    CheckpointStore, Error, FileSum, LocalDirectory, Result, TaskCheckpointStores,
};

use super::replica::{checkpoints_in, chunk_key, chunk_value, remove_dir, CheckpointReplica};
use super::standby::Standbys;
use super::topics::checkpoint_topic;
use crate::client::ClientSettings;
use crate::producer::{self, KafkaProducer, StoredRecord, PRODUCE_TIMEOUT};

/// The largest chunk of a file one record carries.
const CHUNK: usize = 512 * 1024;

/// Where the cache lives inside the task's staging directory.
const CACHE_DIR: &str = ".kafka-store";

/// Where a staged file waits in the cache while it is written to Kafka.
const INCOMING: &str = ".incoming";

/// One task's checkpoint files in one partition of a compacted topic (see
/// the module docs).
#[derive(Debug)]
pub struct KafkaCheckpointStore {
    settings: ClientSettings,
    topic: String,
    partition: i32,
    cache: LocalDirectory,
    replayed: ReplayStats,
    writer: Mutex<Writer>,
}

/// What a write needs, behind one lock: transactions are one at a time.
struct Writer {
    producer: KafkaProducer,
    transactional_id: String,
    /// The chunk count of every file held, to tombstone them all.
    chunks: BTreeMap<String, u32>,
    /// Distinguishes this writer's versions of a file from earlier ones.
    next_write: u64,
    /// Why a write or delete failed: the partition, the cache and the
    /// chunk counts may disagree (or the producer be fenced), so every
    /// later call fails until the store is opened again.
    broken: Option<String>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("transactional_id", &self.transactional_id)
            .field("files", &self.chunks.len())
            .finish_non_exhaustive()
    }
}

impl KafkaCheckpointStore {
    /// Opens the store in partition `partition` of `topic` on the cluster
    /// at `brokers` (the topic must exist, compacted), writing as
    /// `transactional_id`, with its cache under `staging`: fences every
    /// earlier writer with that id, then replays the partition into the
    /// cache. Any job can keep its checkpoints there
    /// ([`Job::checkpoint_store`](tideline_engine::Job::checkpoint_store));
    /// worker mode opens one per task through [`KafkaTaskStores`].
    ///
    /// The partition must have one writer at a time, and every writer of
    /// it must use the same transactional id: that is what fences the
    /// earlier ones (two ids on one partition are neither fenced nor
    /// safe). A write or delete that fails leaves the store unusable
    /// (every later call fails) until it is opened again: the partition,
    /// the cache and the producer may disagree by then.
    ///
    /// # Errors
    /// A cluster that cannot be reached, a transactional id that cannot be
    /// initialized, a record that is not a chunk of this format, or a
    /// cache that cannot be written.
    pub fn open(
        brokers: impl Into<String>,
        topic: &str,
        partition: i32,
        transactional_id: &str,
        staging: &Path,
    ) -> Result<Self> {
        Self::open_from(brokers, topic, partition, transactional_id, staging, None)
    }

    /// [`open`](Self::open), starting from `replica`, a copy of the same
    /// partition kept up to date elsewhere on this machine (a standby
    /// replica): its files move into the cache and only the records
    /// written past its position are read. A replica of another
    /// partition, one that has not caught up for
    /// [`MAX_STANDBY_LAG`](super::MAX_STANDBY_LAG), or one that cannot be
    /// read on from, is dropped and the whole partition replayed.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_from(
        brokers: impl Into<String>,
        topic: &str,
        partition: i32,
        transactional_id: &str,
        staging: &Path,
        replica: Option<CheckpointReplica>,
    ) -> Result<Self> {
        let settings = ClientSettings::new(brokers);
        // Fence first: nothing an earlier owner writes after this is read.
        // One file's upload is one transaction: a large snapshot may take
        // minutes (15 is the broker's default ceiling).
        let producer = producer::transactional(&settings, transactional_id, "900000")?;
        let root = staging.join(CACHE_DIR);
        let started = Instant::now();
        let warm = match replica {
            Some(replica) if replica.source() == (topic, partition) && replica.is_fresh() => {
                replica
                    .move_to(&root)
                    .map_err(|e| {
                        tracing::warn!(topic, partition, error = %e, "a standby replica cannot be used");
                    })
                    .ok()
            }
            Some(replica) => {
                replica.discard();
                None
            }
            None => None,
        };
        let from_replica = warm.is_some();
        let mut replica = match warm {
            Some(replica) => replica,
            None => CheckpointReplica::new(topic, partition, &root)?,
        };
        let from_offset = replica.position();
        let records = match replica.catch_up_with(&settings) {
            Ok(records) => records,
            Err(e) if from_replica => {
                tracing::warn!(topic, partition, error = %e, "reading on from a standby replica failed: replaying the whole partition");
                replica = CheckpointReplica::new(topic, partition, &root)?;
                replica.catch_up_with(&settings)?
            }
            Err(e) => return Err(e),
        };
        let replayed = ReplayStats {
            records,
            from_offset,
            from_replica,
            took: started.elapsed(),
        };
        tracing::info!(
            topic,
            partition,
            records,
            from_offset = replayed.from_offset,
            standby = from_replica,
            files = replica.file_chunks().len(),
            took_ms = replayed.took.as_millis() as u64,
            "checkpoint store replayed"
        );
        Ok(Self {
            settings,
            topic: topic.to_string(),
            partition,
            cache: replica.cache().clone(),
            replayed,
            writer: Mutex::new(Writer {
                producer,
                transactional_id: transactional_id.to_string(),
                chunks: replica.file_chunks().clone(),
                next_write: replica.highest_write() + 1,
                broken: None,
            }),
        })
    }

    /// What opening it read.
    pub fn replayed(&self) -> ReplayStats {
        self.replayed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the writer unless an earlier write broke the store;
    /// an error of `f` breaks it.
    fn using<T>(&self, f: impl FnOnce(&mut Writer) -> Result<T>) -> Result<T> {
        let mut writer = self.lock();
        self.check(&writer)?;
        let result = f(&mut writer);
        if let Err(e) = &result {
            writer.broken = Some(e.to_string());
        }
        result
    }

    /// Refuses every use once a write failed: the cache may no longer
    /// say what the partition holds.
    fn check(&self, writer: &Writer) -> Result<()> {
        match &writer.broken {
            Some(why) => Err(Error::external(
                self.settings.system(),
                format!("use {}", self.what()),
                format!("an earlier write failed ({why}); open the store again"),
            )),
            None => Ok(()),
        }
    }

    fn what(&self) -> String {
        checkpoints_in(&self.topic, self.partition)
    }

    /// Chunk `index` of `name` (`None`: its tombstone).
    fn chunk_record(&self, name: &str, index: u32, value: Option<Vec<u8>>) -> StoredRecord {
        StoredRecord {
            topic: self.topic.clone(),
            key: Some(chunk_key(name, index)),
            value,
            headers: Vec::new(),
            partition: Some(self.partition),
        }
    }

    /// Runs the records `fill` sends (chunks and tombstones) as one
    /// transaction, committed when this returns `Ok`.
    fn transaction(
        &self,
        producer: &KafkaProducer,
        action: &str,
        fill: impl FnOnce(&mut dyn FnMut(StoredRecord) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        let what = format!("{action} in {}", self.what());
        producer.begin_transaction().map_err(|e| {
            self.settings
                .error(format!("begin a transaction to {what}"), e)
        })?;
        let result = fill(&mut |record| producer::send(producer, &self.settings, &record))
            .and_then(|()| producer::flush(producer, &self.settings, &what))
            .and_then(|()| {
                producer.commit_transaction(PRODUCE_TIMEOUT).map_err(|e| {
                    self.settings
                        .error(format!("commit a transaction to {what}"), e)
                })
            });
        if result.is_err() {
            // Fenced or failed: nothing of it is visible; the task fails.
            let _ = producer.abort_transaction(PRODUCE_TIMEOUT);
        }
        result
    }

    /// Writes a new version of `name` from `bytes` (`len` of them), one
    /// transaction, and tombstones the chunks of its older version past
    /// the new one's end. Returns the new chunk count.
    fn put(&self, writer: &mut Writer, name: &str, len: u64, mut bytes: impl Read) -> Result<u32> {
        let count = u32::try_from(len.div_ceil(CHUNK as u64).max(1)).map_err(|_| {
            Error::config(
                "checkpoint.store",
                format!("'{name}' is too large to store in Kafka"),
            )
        })?;
        let old = writer.chunks.get(name).copied().unwrap_or(0);
        let write = writer.next_write;
        let record = |index: u32, value: Option<Vec<u8>>| self.chunk_record(name, index, value);
        let mut buf = vec![0u8; CHUNK];
        self.transaction(&writer.producer, &format!("write '{name}'"), |send| {
            let mut left = len;
            for index in 0..count {
                let n = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
                bytes
                    .read_exact(&mut buf[..n])
                    .map_err(|e| Error::io("read the bytes to store as", Path::new(name), e))?;
                left -= n as u64;
                send(record(index, Some(chunk_value(write, count, &buf[..n]))))?;
            }
            (count..old).try_for_each(|index| send(record(index, None)))
        })?;
        writer.next_write += 1;
        writer.chunks.insert(name.to_string(), count);
        Ok(count)
    }
}

/// What opening a [`KafkaCheckpointStore`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayStats {
    /// The records read.
    pub records: u64,
    /// The offset the reading started at: 0 for a whole replay, a
    /// standby replica's position otherwise.
    pub from_offset: i64,
    /// Whether it started from a standby replica's files.
    pub from_replica: bool,
    /// How long it took, fencing excluded.
    pub took: Duration,
}

impl CheckpointStore for KafkaCheckpointStore {
    fn location(&self) -> String {
        format!(
            "kafka://{}/{}/{}",
            self.settings.brokers, self.topic, self.partition
        )
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.using(|writer| {
            Ok(writer
                .chunks
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect())
        })
    }

    fn exists(&self, key: &str) -> Result<bool> {
        self.using(|writer| Ok(writer.chunks.contains_key(key)))
    }

    fn read(&self, key: &str) -> Result<Vec<u8>> {
        self.check(&self.lock())?;
        self.cache.read(key)
    }

    fn write(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.using(|writer| {
            self.put(writer, key, bytes.len() as u64, bytes)?;
            self.cache.write(key, bytes)
        })
    }

    fn store(&self, staged: &Path, key: &str) -> Result<bool> {
        self.using(|writer| {
            if writer.chunks.contains_key(key) {
                return Ok(false);
            }
            // Into the cache's directory first (a rename, or a copy from
            // another file system), so that after the commit only a
            // rename inside the cache is left to do.
            let incoming = self.cache.root().join(INCOMING);
            if std::fs::rename(staged, &incoming).is_err() {
                std::fs::copy(staged, &incoming).map_err(|e| Error::io("copy", staged, e))?;
            }
            let file = File::open(&incoming).map_err(|e| Error::io("open", &incoming, e))?;
            let len = file
                .metadata()
                .map_err(|e| Error::io("read", &incoming, e))?
                .len();
            self.put(writer, key, len, std::io::BufReader::new(file))?;
            self.cache.store(&incoming, key)
        })
    }

    fn checksum(&self, key: &str) -> Result<FileSum> {
        self.check(&self.lock())?;
        self.cache.checksum(key)
    }

    fn fetch(&self, key: &str, local: &Path) -> Result<()> {
        self.check(&self.lock())?;
        self.cache.fetch(key, local)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.delete_all(&[key.to_string()])
    }

    /// One transaction for all of them: pruning a checkpoint costs one
    /// round of commits, not one per file.
    fn delete_all(&self, keys: &[String]) -> Result<()> {
        self.using(|writer| {
            let held: Vec<(&String, u32)> = keys
                .iter()
                .filter_map(|key| Some((key, *writer.chunks.get(key)?)))
                .collect();
            if held.is_empty() {
                return Ok(());
            }
            let action = format!("delete {} files", held.len());
            self.transaction(&writer.producer, &action, |send| {
                held.iter().try_for_each(|(key, count)| {
                    (0..*count).try_for_each(|index| send(self.chunk_record(key, index, None)))
                })
            })?;
            for (key, _) in &held {
                writer.chunks.remove(*key);
            }
            held.iter().try_for_each(|(key, _)| self.cache.delete(key))
        })
    }
}

/// The checkpoint stores of an application's tasks: task `t` of stage `s`
/// in partition `t` of `<application-id>-stage-<s>-checkpoints` (made by
/// [`InternalTopics::ensure_checkpoint_topics`](super::InternalTopics::ensure_checkpoint_topics)).
/// [`KafkaWorkers`](super::KafkaWorkers) uses it for every task it runs.
#[derive(Clone, Debug)]
pub struct KafkaTaskStores {
    settings: ClientSettings,
    application_id: String,
    /// The standby replicas this worker keeps, which a task opened here
    /// starts from.
    standbys: Option<Arc<Standbys>>,
}

impl KafkaTaskStores {
    /// The stores of `application_id`'s tasks on the cluster at `brokers`.
    pub fn new(brokers: impl Into<String>, application_id: impl Into<String>) -> Self {
        Self {
            settings: ClientSettings::new(brokers),
            application_id: application_id.into(),
            standbys: None,
        }
    }

    /// Tasks opened start from the replicas of `standbys` when it keeps
    /// theirs.
    pub(crate) fn with_standbys(mut self, standbys: Arc<Standbys>) -> Self {
        self.standbys = Some(standbys);
        self
    }
}

impl TaskCheckpointStores for KafkaTaskStores {
    /// Empties `staging` (scratch: what matters is in Kafka), then opens
    /// the task's store, fencing its earlier owners.
    fn open(&self, stage: usize, task: usize, staging: &Path) -> Result<Arc<dyn CheckpointStore>> {
        let partition = i32::try_from(task).map_err(|_| {
            Error::config(
                "workers.tasks",
                format!("task {task} is past Kafka's partitions"),
            )
        })?;
        remove_dir(staging)?;
        let replica = self
            .standbys
            .as_ref()
            .and_then(|standbys| standbys.take((stage, task)));
        let store = KafkaCheckpointStore::open_from(
            self.settings.brokers.clone(),
            &checkpoint_topic(&self.application_id, stage),
            partition,
            &format!("{}-checkpoints-{stage}-{task}", self.application_id),
            staging,
            replica,
        )?;
        Ok(Arc::new(store))
    }
}
