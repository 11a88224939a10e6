//! [`CheckpointReplica`]: a local copy of one task's checkpoint partition
//! (see [`KafkaCheckpointStore`](super::KafkaCheckpointStore)), built by
//! replaying the partition in log order and brought up to date by reading
//! on from where it stopped. Opening a task's store replays into a fresh
//! replica; a standby replica ([`KafkaWorkers::standby_replicas`](super::KafkaWorkers::standby_replicas))
//! is one kept up to date on another worker, so that a task moved there
//! reads only the tail its owner wrote since.
//!
//! # Invariants
//! - The replica holds exactly the files that a replay of the partition's
//!   committed records up to its position (`resume`) yields: every record
//!   below `resume` is applied, none at or past it.
//! - Applying a record is idempotent in order: replaying any suffix of
//!   what was applied again leaves the same files. So a replica that read
//!   part of a file's chunks rewinds to that file's chunk 0 (`resume`
//!   stays there until the version is complete), and a catch-up never
//!   needs to know what happened mid-way.
//! - Compaction only removes records superseded by later ones, so reading
//!   on from `resume` after compaction ran still ends with the partition's
//!   files. Except tombstones: the broker drops them after
//!   `delete.retention.ms` (24 h by default), so a replica that has not
//!   caught up for [`MAX_STANDBY_LAG`] is thrown away, never read on.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tideline_engine::{CheckpointStore, Error, LocalDirectory, Result};

use crate::client::{ClientSettings, REQUEST_TIMEOUT};

/// The first byte of every chunk record's value.
const FORMAT: u8 = 1;

/// A chunk's value: format, write id, chunk count, then the bytes.
const HEADER: usize = 1 + 8 + 4;

/// The file a replay assembles a version in before it is complete.
const ASSEMBLING: &str = ".assembling";

/// How long a replica may go without catching up before it is no longer
/// trusted: far below the broker's default `delete.retention.ms` (24 h),
/// after which a tombstone it never read could be gone.
pub const MAX_STANDBY_LAG: Duration = Duration::from_secs(3_600);

/// A local copy of the checkpoint files in one partition of a task's
/// checkpoint topic, as of a position in it (see the module docs).
#[derive(Debug)]
pub struct CheckpointReplica {
    topic: String,
    partition: i32,
    cache: LocalDirectory,
    /// Every file held, with its chunk count.
    files: BTreeMap<String, u32>,
    highest_write: u64,
    /// The offset the next record read must come from for the invariant
    /// to hold: the start of the version being assembled, or past the
    /// last record applied.
    resume: i64,
    /// Past the last record applied.
    next: i64,
    assembly: Option<Assembly>,
    /// Records applied since the replica was made.
    records: u64,
    /// When it last reached the end of the partition.
    caught_up: Option<Instant>,
}

/// A version of a file being put together from its chunks.
#[derive(Debug)]
struct Assembly {
    name: String,
    write: u64,
    count: u32,
    next: u32,
    start: i64,
    file: File,
}

/// One chunk record as read back.
struct Chunk<'a> {
    write: u64,
    count: u32,
    bytes: &'a [u8],
}

impl CheckpointReplica {
    /// An empty replica of partition `partition` of `topic`, keeping its
    /// files in `dir` (emptied first).
    ///
    /// # Errors
    /// When `dir` cannot be emptied or made.
    pub fn new(topic: &str, partition: i32, dir: &Path) -> Result<Self> {
        remove_dir(dir)?;
        Ok(Self {
            topic: topic.to_string(),
            partition,
            cache: LocalDirectory::new(dir)?,
            files: BTreeMap::new(),
            highest_write: 0,
            resume: 0,
            next: 0,
            assembly: None,
            records: 0,
            caught_up: None,
        })
    }

    /// The topic and partition it copies.
    pub fn source(&self) -> (&str, i32) {
        (&self.topic, self.partition)
    }

    /// The files it holds, sorted.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The records it has applied since it was made: what a catch-up
    /// costs shows as the difference.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The offset its next catch-up reads from.
    pub fn position(&self) -> i64 {
        self.resume
    }

    /// Whether it caught up within [`MAX_STANDBY_LAG`], so reading on from
    /// its position is safe.
    pub fn is_fresh(&self) -> bool {
        self.caught_up
            .is_some_and(|at| at.elapsed() < MAX_STANDBY_LAG)
    }

    pub(crate) fn cache(&self) -> &LocalDirectory {
        &self.cache
    }

    pub(crate) fn file_chunks(&self) -> &BTreeMap<String, u32> {
        &self.files
    }

    pub(crate) fn highest_write(&self) -> u64 {
        self.highest_write
    }

    /// Moves its files to `dir` (a rename: same file system), keeping
    /// its position; the version being assembled starts over.
    pub(crate) fn move_to(mut self, dir: &Path) -> Result<Self> {
        self.rewind();
        remove_dir(dir)?;
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        std::fs::rename(self.cache.root(), dir).map_err(|e| Error::io("move", dir, e))?;
        self.cache = LocalDirectory::new(dir)?;
        Ok(self)
    }

    /// Deletes its files: it will not be used.
    pub(crate) fn discard(self) {
        let _ = std::fs::remove_dir_all(self.cache.root());
    }

    /// Drops a partly assembled version: the next read starts at its
    /// chunk 0 again.
    fn rewind(&mut self) {
        if let Some(assembly) = self.assembly.take() {
            self.next = assembly.start;
        }
        let _ = std::fs::remove_file(self.cache.root().join(ASSEMBLING));
        self.resume = self.next;
    }

    /// Marks that it read the whole partition as of now.
    pub(crate) fn reached_end(&mut self) {
        self.caught_up = Some(Instant::now());
    }

    /// Applies the record at `offset`: a chunk (`value`) or a tombstone.
    ///
    /// # Errors
    /// A record that is not a chunk of this format (the topic is another
    /// program's), or a cache that cannot be written.
    pub(crate) fn apply(
        &mut self,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<()> {
        if offset < self.next {
            return Ok(());
        }
        let (name, index) =
            parse_key(key).ok_or_else(|| self.foreign(offset, "its key is not a chunk's"))?;
        self.records += 1;
        self.next = offset + 1;
        match value {
            None => {
                // A delete tombstones chunk 0; a rewrite with fewer chunks
                // only the ones past its end.
                if index == 0 {
                    self.cache.delete(&name)?;
                    self.files.remove(&name);
                }
            }
            Some(value) => {
                let chunk = parse_value(value)
                    .ok_or_else(|| self.foreign(offset, "its value is not a chunk's"))?;
                self.highest_write = self.highest_write.max(chunk.write);
                self.add_chunk(offset, &name, index, &chunk)?;
            }
        }
        self.resume = self.assembly.as_ref().map_or(self.next, |a| a.start);
        Ok(())
    }

    /// Adds a chunk to the version being assembled; once a version is
    /// complete it replaces the file in the cache.
    fn add_chunk(&mut self, offset: i64, name: &str, index: u32, chunk: &Chunk<'_>) -> Result<()> {
        let path = self.cache.root().join(ASSEMBLING);
        if index == 0 {
            let file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
            self.assembly = Some(Assembly {
                name: name.to_string(),
                write: chunk.write,
                count: chunk.count,
                next: 0,
                start: offset,
                file,
            });
        }
        let Some(current) = self.assembly.as_mut() else {
            return Ok(());
        };
        if current.name != name || current.write != chunk.write || current.next != index {
            // A stale fragment of an older version: its newer one follows.
            self.assembly = None;
            return Ok(());
        }
        current
            .file
            .write_all(chunk.bytes)
            .map_err(|e| Error::io("write", &path, e))?;
        current.next += 1;
        if current.next < current.count {
            return Ok(());
        }
        let count = current.count;
        self.assembly = None;
        self.cache.delete(name)?;
        self.cache.store(&path, name)?;
        self.files.insert(name.to_string(), count);
        Ok(())
    }

    fn what(&self) -> String {
        checkpoints_in(&self.topic, self.partition)
    }

    fn foreign(&self, offset: i64, why: &str) -> Error {
        Error::config(
            "checkpoint.store",
            format!(
                "the record at offset {offset} of {} is not a Tideline checkpoint file ({why}): \
                 is the topic another program's?",
                self.what()
            ),
        )
    }

    /// Reads the partition on from the replica's position to its end
    /// (its committed records), on the cluster at `brokers`. Returns the
    /// records read.
    ///
    /// # Errors
    /// A cluster that cannot be reached, a position the partition no
    /// longer has (its start moved past it: the replica is useless, make a
    /// new one), a record that is not a chunk, a cache that cannot be
    /// written.
    pub fn catch_up(&mut self, brokers: &str) -> Result<u64> {
        self.catch_up_with(&ClientSettings::new(brokers))
    }

    pub(crate) fn catch_up_with(&mut self, settings: &ClientSettings) -> Result<u64> {
        self.rewind();
        let before = self.records;
        let group = format!("{}-{}-reader", self.topic, self.partition);
        // End of partition is reported at the last stable offset: commit
        // markers take offsets too, so neither the last record's offset
        // nor the position says reliably that the end is reached.
        let consumer: BaseConsumer = settings
            .config(&replica_reader_config(&group))
            .create()
            .map_err(|e| crate::client::invalid_property(settings, e))?;
        let (low, high) = consumer
            .fetch_watermarks(&self.topic, self.partition, REQUEST_TIMEOUT)
            .map_err(|e| settings.error(format!("read the offsets of {}", self.what()), e))?;
        if self.resume < low {
            return Err(Error::external(
                settings.system(),
                format!("read {}", self.what()),
                format!(
                    "the partition starts at offset {low} now, past this copy's position {}",
                    self.resume
                ),
            ));
        }
        if high <= self.resume {
            self.reached_end();
            return Ok(0);
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.topic, self.partition, self.start_offset())
            .map_err(|e| settings.error(format!("read {}", self.what()), e))?;
        consumer
            .assign(&assignment)
            .map_err(|e| settings.error(format!("read {}", self.what()), e))?;
        let mut quiet_since = Instant::now();
        loop {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    quiet_since = Instant::now();
                    self.apply(message.offset(), message.key(), message.payload())?;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(settings.error(format!("read {}", self.what()), e)),
                None if quiet_since.elapsed() > REQUEST_TIMEOUT => {
                    return Err(Error::external(
                        settings.system(),
                        format!("read {}", self.what()),
                        format!(
                            "no record and no end arrived for {REQUEST_TIMEOUT:?} (the end is \
                             near offset {high})"
                        ),
                    ));
                }
                None => {}
            }
        }
        self.reached_end();
        Ok(self.records - before)
    }

    /// Where a reader of the partition starts for this replica.
    pub(crate) fn start_offset(&self) -> Offset {
        if self.resume == 0 {
            Offset::Beginning
        } else {
            Offset::Offset(self.resume)
        }
    }
}

/// How errors name a task's checkpoint partition.
pub(crate) fn checkpoints_in(topic: &str, partition: i32) -> String {
    format!("the checkpoints in partition {partition} of '{topic}'")
}

/// Deletes `dir` and everything in it, if it is there.
pub(crate) fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("delete", dir, e)),
        _ => Ok(()),
    }
}

/// The settings of a consumer that reads checkpoint partitions for
/// replicas (`group` is never joined nor committed to).
pub(crate) fn replica_reader_config(group: &str) -> [(&str, &str); 6] {
    [
        ("group.id", group),
        ("enable.auto.commit", "false"),
        ("isolation.level", "read_committed"),
        ("enable.partition.eof", "true"),
        // A start that is out of range is an error, never a silent jump
        // to the end (an empty replay).
        ("auto.offset.reset", "error"),
        // The end is found by a fetch that returns nothing: the broker's
        // default wait (500 ms) would be the restore's floor.
        ("fetch.wait.max.ms", "10"),
    ]
}

/// `<file key>\0<chunk index, 4 bytes big-endian>`.
pub(crate) fn chunk_key(name: &str, index: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 5);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn parse_key(key: Option<&[u8]>) -> Option<(String, u32)> {
    let key = key?;
    let split = key.len().checked_sub(5)?;
    let (name, rest) = key.split_at(split);
    if rest[0] != 0 {
        return None;
    }
    let index = u32::from_be_bytes(rest[1..].try_into().ok()?);
    Some((String::from_utf8(name.to_vec()).ok()?, index))
}

pub(crate) fn chunk_value(write: u64, count: u32, bytes: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEADER + bytes.len());
    value.push(FORMAT);
    value.extend_from_slice(&write.to_be_bytes());
    value.extend_from_slice(&count.to_be_bytes());
    value.extend_from_slice(bytes);
    value
}

fn parse_value(value: &[u8]) -> Option<Chunk<'_>> {
    if value.len() < HEADER || value[0] != FORMAT {
        return None;
    }
    let write = u64::from_be_bytes(value[1..9].try_into().ok()?);
    let count = u32::from_be_bytes(value[9..13].try_into().ok()?);
    (count > 0).then_some(Chunk {
        write,
        count,
        bytes: &value[HEADER..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, index: u32, write: u64, count: u32, bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (chunk_key(name, index), chunk_value(write, count, bytes))
    }

    /// A log: `a` in two chunks, `b`, a stale fragment, `a` again in one
    /// chunk, `b` deleted.
    fn log() -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let chunk = |n, i, w, c, b: &[u8]| {
            let (k, v) = record(n, i, w, c, b);
            (k, Some(v))
        };
        vec![
            chunk("a", 0, 1, 2, b"he"),
            chunk("a", 1, 1, 2, b"llo"),
            chunk("b", 0, 2, 1, b"bee"),
            chunk("c", 1, 0, 3, b"stale"),
            chunk("a", 0, 3, 1, b"again"),
            (chunk_key("a", 1), None),
            (chunk_key("b", 0), None),
            chunk("d", 0, 4, 2, b"d0"),
            chunk("d", 1, 4, 2, b"d1"),
        ]
    }

    fn contents(replica: &CheckpointReplica) -> Vec<(String, Vec<u8>)> {
        replica
            .files()
            .map(|f| (f.to_string(), replica.cache().read(f).unwrap_or_default()))
            .collect()
    }

    /// Stopping anywhere, rewinding, and reading on gives what one pass
    /// gives; a position inside a file's chunks is that file's chunk 0.
    #[test]
    fn reading_on_from_any_stop_gives_the_files_of_one_pass() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("create", "tempdir", e))?;
        let log = log();
        let mut whole = CheckpointReplica::new("t", 0, &dir.path().join("whole"))?;
        for (offset, (key, value)) in log.iter().enumerate() {
            whole.apply(offset as i64, Some(key), value.as_deref())?;
        }
        assert_eq!(
            contents(&whole),
            [
                ("a".to_string(), b"again".to_vec()),
                ("d".to_string(), b"d0d1".to_vec())
            ]
        );
        assert_eq!(whole.highest_write(), 4);
        for stop in 0..=log.len() {
            let mut split = CheckpointReplica::new("t", 0, &dir.path().join(format!("s{stop}")))?;
            for (offset, (key, value)) in log.iter().enumerate().take(stop) {
                split.apply(offset as i64, Some(key), value.as_deref())?;
            }
            if stop == 8 {
                assert_eq!(split.position(), 7, "inside d's chunks: d's chunk 0");
            }
            let mut split = split.move_to(&dir.path().join(format!("m{stop}")))?;
            let from = usize::try_from(split.position()).unwrap_or(0);
            for (offset, (key, value)) in log.iter().enumerate().skip(from) {
                split.apply(offset as i64, Some(key), value.as_deref())?;
            }
            assert_eq!(contents(&split), contents(&whole), "stopped at {stop}");
        }
        Ok(())
    }

    #[test]
    fn a_foreign_record_is_refused_with_its_offset() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("create", "tempdir", e))?;
        let mut replica = CheckpointReplica::new("t", 3, dir.path())?;
        let err = replica
            .apply(7, Some(b"hello"), Some(b"world"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("offset 7 of the checkpoints in partition 3 of 't'"),
            "{err}"
        );
        Ok(())
    }
}
