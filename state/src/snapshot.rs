//! On-disk layout of keyed-state snapshots.
//!
//! A snapshot directory written by [`crate::KeyedState::snapshot_to`] holds
//! exactly one of:
//! - [`MEMORY_FILE`] (memory backend), laid out so that a restoring subtask
//!   reads only the key groups it owns:
//!   - header: `magic | version u32 | key_groups u16`;
//!   - sections: per state, per non-empty key group in ascending order, that
//!     group's entry records `u32 key length | stored key | u32 value length
//!     | stored value`, back to back from the end of the header;
//!   - index: `u32 state count`, then per state `u32 name length | UTF-8
//!     name | u32 section count` and per section `group u16 | offset u64 |
//!     length u64 | entries u64 | CRC-32 of the section u32`;
//!   - footer: `index offset u64 | index length u64 | CRC-32 of header and
//!     index u32 | end magic`.
//!
//!   All integers are little endian except the key-group prefix of stored
//!   keys. A reader checks the header, footer and index (small) and then
//!   each section it reads against its own checksum: a corrupt section of a
//!   key group the reader does not own is never read, hence harmless, while
//!   a corrupt owned one is an error naming the group.
//! - [`ROCKS_META_FILE`] (`magic | version u32 | key_groups u16 | first group
//!   u16 | end group u16 | CRC-32`) next to a RocksDB checkpoint in the
//!   directory [`ROCKS_DIR`]; `first..end` covers every key group the
//!   checkpoint holds entries of, so a restore skips checkpoints that hold
//!   none of its groups without opening them.
//!
//! A snapshot is accepted only when its magic, version, key-group count,
//! lengths and checksums agree, so a truncated or corrupt snapshot is an
//! error, never a partial restore.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
#[cfg(feature = "rocksdb")]
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::codec::group_of_stored_key;
use crate::{Result, StateError};

/// The file of a memory-backend snapshot.
pub(crate) const MEMORY_FILE: &str = "memory-state.bin";
/// The metadata file of a RocksDB-backend snapshot.
pub(crate) const ROCKS_META_FILE: &str = "rocksdb-state.meta";
/// The directory of the RocksDB checkpoint inside a snapshot directory.
#[cfg(feature = "rocksdb")]
pub(crate) const ROCKS_DIR: &str = "rocksdb";

const MEMORY_MAGIC: &[u8; 8] = b"TDLMEMS\x01";
const FOOTER_MAGIC: &[u8; 8] = b"TDLMEME\x01";
#[cfg(feature = "rocksdb")]
const ROCKS_MAGIC: &[u8; 8] = b"TDLROCK\x01";
/// The snapshot format. 2: operator state changed layout with the
/// partition-local lateness rule (sliding windows' partial panes), so a
/// version-1 snapshot is refused with a clear error rather than misread.
/// 3: key groups are hashed from the key's postcard encoding with XXH3
/// instead of `std::hash::Hash` with Fx, so every key's group changed; an
/// older snapshot would put keys in groups no subtask looks them up in.
/// 4: memory snapshots are sectioned by key group with an index in a footer,
/// RocksDB metadata records the key groups present.
const VERSION: u32 = 4;
const HEADER_LEN: usize = 8 + 4 + 2;
const FOOTER_LEN: usize = 8 + 8 + 4 + 8;
#[cfg(feature = "rocksdb")]
const ROCKS_META_LEN: usize = HEADER_LEN + 2 + 2 + 4;

/// Which backend wrote a snapshot directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SnapshotKind {
    /// [`MEMORY_FILE`] is present.
    Memory,
    /// [`ROCKS_META_FILE`] is present. Known without the `rocksdb` feature
    /// too, so restoring such a snapshot is a clear error.
    RocksDb,
}

impl SnapshotKind {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            SnapshotKind::Memory => "the in-memory state backend",
            SnapshotKind::RocksDb if cfg!(feature = "rocksdb") => "the RocksDB state backend",
            SnapshotKind::RocksDb => {
                "the RocksDB state backend (not in this build: the `rocksdb` feature is off)"
            }
        }
    }
}

/// Tells which backend wrote the snapshot in `dir`.
pub(crate) fn kind_of(dir: &Path) -> Result<SnapshotKind> {
    if !dir.is_dir() {
        return Err(StateError::snapshot(dir, "no such snapshot directory"));
    }
    let memory = dir.join(MEMORY_FILE).is_file();
    let rocks = dir.join(ROCKS_META_FILE).is_file();
    match (memory, rocks) {
        (true, false) => Ok(SnapshotKind::Memory),
        (false, true) => Ok(SnapshotKind::RocksDb),
        (true, true) => Err(StateError::snapshot(
            dir,
            format!("holds both {MEMORY_FILE} and {ROCKS_META_FILE}"),
        )),
        (false, false) => Err(StateError::snapshot(
            dir,
            format!("not a keyed-state snapshot (neither {MEMORY_FILE} nor {ROCKS_META_FILE})"),
        )),
    }
}

fn len_u32(path: &Path, len: usize) -> Result<[u8; 4]> {
    u32::try_from(len)
        .map(u32::to_le_bytes)
        .map_err(|_| StateError::snapshot(path, format!("record of {len} bytes is too large")))
}

/// Streams a memory-backend snapshot to [`MEMORY_FILE`], one state at a
/// time: a state's entries are bucketed by key group in memory (encoded, so
/// at most one state's encoded entries are held at once) and written group by
/// group when the next state begins or the file is finished.
pub(crate) struct MemoryWriter {
    out: BufWriter<File>,
    path: PathBuf,
    key_groups: u16,
    /// Bytes written so far (the offset of the next section).
    offset: u64,
    /// The header bytes, covered by the index checksum.
    header: Vec<u8>,
    /// The current state's name and its entry records per key group.
    current: Option<String>,
    buckets: Vec<Bucket>,
    index: Vec<StateIndex>,
}

/// The encoded entry records of one key group of the current state.
#[derive(Default)]
struct Bucket {
    bytes: Vec<u8>,
    entries: u64,
}

impl MemoryWriter {
    /// Creates the file in `dir` (which must exist) and writes the header.
    pub(crate) fn create(dir: &Path, key_groups: u16) -> Result<Self> {
        let path = dir.join(MEMORY_FILE);
        let file = File::create_new(&path).map_err(|e| StateError::io(&path, e))?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MEMORY_MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&key_groups.to_le_bytes());
        let mut writer = Self {
            out: BufWriter::with_capacity(1 << 16, file),
            path,
            key_groups: key_groups.max(1),
            offset: 0,
            header: Vec::new(),
            current: None,
            buckets: Vec::new(),
            index: Vec::new(),
        };
        writer.put(&header)?;
        writer.header = header;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.offset += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .map_err(|e| StateError::io(&self.path, e))
    }

    /// Starts the entries of state `name` (each name once per snapshot).
    pub(crate) fn begin_state(&mut self, name: &str) -> Result<()> {
        self.end_state()?;
        if self.index.iter().any(|s| s.name == name) {
            return Err(StateError::snapshot(
                &self.path,
                format!("state '{name}' is written twice"),
            ));
        }
        self.current = Some(name.to_string());
        Ok(())
    }

    /// Adds one entry (stored key and value) of the current state.
    pub(crate) fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if self.current.is_none() {
            return Err(StateError::snapshot(
                &self.path,
                "an entry precedes every state name",
            ));
        }
        let group = match group_of_stored_key(key) {
            Some(g) if g < self.key_groups => usize::from(g),
            _ => {
                return Err(StateError::snapshot(
                    &self.path,
                    "a stored key lacks a valid key group",
                ))
            }
        };
        let key_len = len_u32(&self.path, key.len())?;
        let value_len = len_u32(&self.path, value.len())?;
        if self.buckets.len() <= group {
            self.buckets.resize_with(group + 1, Bucket::default);
        }
        let bucket = &mut self.buckets[group];
        bucket.bytes.extend_from_slice(&key_len);
        bucket.bytes.extend_from_slice(key);
        bucket.bytes.extend_from_slice(&value_len);
        bucket.bytes.extend_from_slice(value);
        bucket.entries += 1;
        Ok(())
    }

    /// Writes the current state's buckets as sections, in key-group order.
    fn end_state(&mut self) -> Result<()> {
        let Some(name) = self.current.take() else {
            return Ok(());
        };
        let mut buckets = std::mem::take(&mut self.buckets);
        let mut sections = Vec::new();
        for (group, bucket) in buckets.iter_mut().enumerate() {
            if bucket.entries == 0 {
                continue;
            }
            let section = Section {
                group: u16::try_from(group).unwrap_or(u16::MAX),
                offset: self.offset,
                len: bucket.bytes.len() as u64,
                entries: bucket.entries,
                crc: crc32fast::hash(&bucket.bytes),
            };
            self.put(&bucket.bytes)?;
            // Keep the allocation for the next state.
            bucket.bytes.clear();
            bucket.entries = 0;
            sections.push(section);
        }
        self.buckets = buckets;
        self.index.push(StateIndex { name, sections });
        Ok(())
    }

    /// Writes the index and the footer and syncs the file to disk.
    pub(crate) fn finish(mut self) -> Result<()> {
        self.end_state()?;
        let index_offset = self.offset;
        let mut index = Vec::new();
        put_u32(&self.path, &mut index, self.index.len())?;
        for state in &self.index {
            put_u32(&self.path, &mut index, state.name.len())?;
            index.extend_from_slice(state.name.as_bytes());
            put_u32(&self.path, &mut index, state.sections.len())?;
            for s in &state.sections {
                index.extend_from_slice(&s.group.to_le_bytes());
                index.extend_from_slice(&s.offset.to_le_bytes());
                index.extend_from_slice(&s.len.to_le_bytes());
                index.extend_from_slice(&s.entries.to_le_bytes());
                index.extend_from_slice(&s.crc.to_le_bytes());
            }
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.header);
        crc.update(&index);
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        footer.extend_from_slice(&index_offset.to_le_bytes());
        footer.extend_from_slice(&(index.len() as u64).to_le_bytes());
        footer.extend_from_slice(&crc.finalize().to_le_bytes());
        footer.extend_from_slice(FOOTER_MAGIC);
        self.put(&index)?;
        self.put(&footer)?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| StateError::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| StateError::io(&self.path, e))
    }
}

fn put_u32(path: &Path, out: &mut Vec<u8>, len: usize) -> Result<()> {
    out.extend_from_slice(&len_u32(path, len)?);
    Ok(())
}

/// One key group's entries of one state: a byte range of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) group: u16,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) entries: u64,
    /// CRC-32 of the section's bytes.
    pub(crate) crc: u32,
}

/// The sections of one state, in ascending key-group order.
#[derive(Clone, Debug)]
pub(crate) struct StateIndex {
    pub(crate) name: String,
    pub(crate) sections: Vec<Section>,
}

/// A bounds-checked reader over a snapshot file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let bytes: &'a [u8] = self.bytes;
                let out = &bytes[self.pos..end];
                self.pos = end;
                Ok(out)
            }
            None => Err(StateError::snapshot(
                self.path,
                format!("truncated record at byte {}", self.pos),
            )),
        }
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    fn block(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

fn read_at(file: &mut File, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let len = usize::try_from(len)
        .map_err(|_| StateError::snapshot(path, format!("a range of {len} bytes is too large")))?;
    let mut buf = vec![0; len];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(|e| StateError::io(path, e))?;
    Ok(buf)
}

/// Reads and checks the header, footer and index of the memory snapshot at
/// `path` — a few hundred bytes, not the entries. The index is checked
/// against the file: sections of a state are in strictly ascending key-group
/// order, every group is below `key_groups`, and the sections tile the bytes
/// between the header and the index exactly.
pub(crate) fn read_memory_index(path: &Path, key_groups: u16) -> Result<Vec<StateIndex>> {
    let mut file = File::open(path).map_err(|e| StateError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| StateError::io(path, e))?.len();
    if file_len < (HEADER_LEN + FOOTER_LEN) as u64 {
        return Err(StateError::snapshot(
            path,
            "not a keyed-state snapshot file (too short)",
        ));
    }
    let header = read_at(&mut file, path, 0, HEADER_LEN as u64)?;
    if !header.starts_with(MEMORY_MAGIC) {
        return Err(StateError::snapshot(
            path,
            "not a keyed-state snapshot file (bad magic)",
        ));
    }
    let mut cursor = Cursor {
        bytes: &header,
        pos: MEMORY_MAGIC.len(),
        path,
    };
    check_version(path, cursor.u32()?)?;
    check_key_groups(path, cursor.u16()?, key_groups)?;
    let footer = read_at(
        &mut file,
        path,
        file_len - FOOTER_LEN as u64,
        FOOTER_LEN as u64,
    )?;
    let mut cursor = Cursor {
        bytes: &footer,
        pos: 0,
        path,
    };
    let (index_offset, index_len) = (cursor.u64()?, cursor.u64()?);
    let index_crc = cursor.u32()?;
    if cursor.take(FOOTER_MAGIC.len())? != FOOTER_MAGIC
        || index_offset < HEADER_LEN as u64
        || index_offset.checked_add(index_len) != Some(file_len - FOOTER_LEN as u64)
    {
        return Err(StateError::snapshot(
            path,
            "bad footer (the file is truncated or corrupt)",
        ));
    }
    let index = read_at(&mut file, path, index_offset, index_len)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(&index);
    if crc.finalize() != index_crc {
        return Err(StateError::snapshot(
            path,
            "index checksum mismatch (the file is truncated or corrupt)",
        ));
    }
    let mut cursor = Cursor {
        bytes: &index,
        pos: 0,
        path,
    };
    let mut states: Vec<StateIndex> = Vec::new();
    let mut next_offset = HEADER_LEN as u64;
    for _ in 0..cursor.u32()? {
        let name = std::str::from_utf8(cursor.block()?)
            .map_err(|_| StateError::snapshot(path, "a state name is not UTF-8"))?
            .to_string();
        if states.iter().any(|s| s.name == name) {
            return Err(StateError::snapshot(
                path,
                format!("state '{name}' appears twice"),
            ));
        }
        let mut sections: Vec<Section> = Vec::new();
        for _ in 0..cursor.u32()? {
            let section = Section {
                group: cursor.u16()?,
                offset: cursor.u64()?,
                len: cursor.u64()?,
                entries: cursor.u64()?,
                crc: cursor.u32()?,
            };
            let ascending = sections.last().is_none_or(|s| s.group < section.group);
            if !ascending || section.group >= key_groups || section.offset != next_offset {
                return Err(StateError::snapshot(
                    path,
                    format!("malformed index entry for state '{name}'"),
                ));
            }
            next_offset = next_offset.saturating_add(section.len);
            sections.push(section);
        }
        states.push(StateIndex { name, sections });
    }
    if !cursor.at_end() || next_offset != index_offset {
        return Err(StateError::snapshot(
            path,
            "the index does not cover the file's entries",
        ));
    }
    Ok(states)
}

/// Entry records read from a snapshot and checked: `u32 key length | stored
/// key | u32 value length | stored value`, little endian, back to back.
/// Restored state keeps them in this form until first accessed.
#[derive(Debug, Default)]
pub(crate) struct RawChunk {
    bytes: Vec<u8>,
    entries: u64,
}

impl RawChunk {
    /// Number of entries.
    pub(crate) fn len(&self) -> u64 {
        self.entries
    }

    /// Calls `f(stored key, stored value)` for every entry, in file order.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        let mut cursor = Cursor {
            bytes: &self.bytes,
            pos: 0,
            path: Path::new(MEMORY_FILE),
        };
        while !cursor.at_end() {
            let key = cursor.block()?;
            let value = cursor.block()?;
            f(key, value)?;
        }
        Ok(())
    }
}

/// Reads `sections` — consecutive sections of one state, so one contiguous
/// byte range — from the snapshot at `path` with a single read, and checks
/// each section's checksum, its records and that every key carries the
/// section's key group. Bytes outside the range are never read.
pub(crate) fn read_sections(path: &Path, sections: &[Section]) -> Result<RawChunk> {
    let (Some(first), Some(last)) = (sections.first(), sections.last()) else {
        return Ok(RawChunk::default());
    };
    let end = last.offset.saturating_add(last.len);
    let mut file = File::open(path).map_err(|e| StateError::io(path, e))?;
    let bytes = read_at(
        &mut file,
        path,
        first.offset,
        end.saturating_sub(first.offset),
    )?;
    let mut start = 0usize;
    let mut entries = 0u64;
    for section in sections {
        let len = usize::try_from(section.len).unwrap_or(usize::MAX);
        let body = bytes
            .get(start..start.saturating_add(len))
            .ok_or_else(|| StateError::snapshot(path, "sections are not contiguous"))?;
        start += len;
        if crc32fast::hash(body) != section.crc {
            return Err(StateError::snapshot(
                path,
                format!(
                    "checksum mismatch in key group {} (bytes {}..{}): the file is corrupt",
                    section.group,
                    section.offset,
                    section.offset + section.len
                ),
            ));
        }
        let mut cursor = Cursor {
            bytes: body,
            pos: 0,
            path,
        };
        let mut count = 0u64;
        while !cursor.at_end() {
            let key = cursor.block()?;
            cursor.block()?;
            if group_of_stored_key(key) != Some(section.group) {
                return Err(StateError::snapshot(
                    path,
                    format!(
                        "an entry of key group {} has another key group",
                        section.group
                    ),
                ));
            }
            count += 1;
        }
        if count != section.entries {
            return Err(StateError::snapshot(
                path,
                format!(
                    "key group {} holds {count} entries, the index says {}",
                    section.group, section.entries
                ),
            ));
        }
        entries += count;
    }
    Ok(RawChunk { bytes, entries })
}

fn check_version(path: &Path, version: u32) -> Result<()> {
    if version == VERSION {
        Ok(())
    } else {
        Err(StateError::snapshot(
            path,
            format!("format version {version} is not supported (expected {VERSION}): it was written by another version of Tideline"),
        ))
    }
}

fn check_key_groups(path: &Path, found: u16, expected: u16) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(StateError::snapshot(
            path,
            format!(
                "written with {found} key groups, this job uses {expected}; \
                 the number of key groups cannot change across a restore"
            ),
        ))
    }
}

/// Writes [`ROCKS_META_FILE`] into `dir`; `groups` covers every key group
/// the checkpoint holds entries of.
#[cfg(feature = "rocksdb")]
pub(crate) fn write_rocks_meta(dir: &Path, key_groups: u16, groups: Range<u16>) -> Result<()> {
    let path = dir.join(ROCKS_META_FILE);
    let mut bytes = Vec::with_capacity(ROCKS_META_LEN);
    bytes.extend_from_slice(ROCKS_MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&key_groups.to_le_bytes());
    bytes.extend_from_slice(&groups.start.to_le_bytes());
    bytes.extend_from_slice(&groups.end.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let mut file = File::create_new(&path).map_err(|e| StateError::io(&path, e))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| StateError::io(&path, e))
}

/// Reads and checks [`ROCKS_META_FILE`] in `dir`; returns the key groups the
/// checkpoint holds entries of.
#[cfg(feature = "rocksdb")]
pub(crate) fn read_rocks_meta(dir: &Path, key_groups: u16) -> Result<Range<u16>> {
    let path = dir.join(ROCKS_META_FILE);
    let bytes = std::fs::read(&path).map_err(|e| StateError::io(&path, e))?;
    if bytes.len() < HEADER_LEN || !bytes.starts_with(ROCKS_MAGIC) {
        return Err(StateError::snapshot(
            &path,
            "malformed RocksDB snapshot metadata",
        ));
    }
    // The version first: an older file has another length.
    check_version(
        &path,
        u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
    )?;
    if bytes.len() != ROCKS_META_LEN {
        return Err(StateError::snapshot(
            &path,
            "malformed RocksDB snapshot metadata",
        ));
    }
    let (body, crc) = bytes.split_at(ROCKS_META_LEN - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(StateError::snapshot(&path, "checksum mismatch"));
    }
    check_key_groups(&path, u16::from_le_bytes([body[12], body[13]]), key_groups)?;
    let first = u16::from_le_bytes([body[14], body[15]]);
    let end = u16::from_le_bytes([body[16], body[17]]);
    if first > end || end > key_groups {
        return Err(StateError::snapshot(
            &path,
            format!("key groups {first}..{end} lie outside 0..{key_groups}"),
        ));
    }
    Ok(first..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_reference_value() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn a_version_3_snapshot_is_refused_because_its_layout_changed() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let dir = dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"));
        let written = MemoryWriter::create(dir, 128).and_then(MemoryWriter::finish);
        assert!(written.is_ok(), "{written:?}");
        let path = dir.join(MEMORY_FILE);
        let mut bytes = std::fs::read(&path).unwrap_or_default();
        // Rewrite the version field as version 3 wrote it: the version is
        // checked before anything else, so nothing of the older layout is read.
        bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert!(std::fs::write(&path, &bytes).is_ok());
        let err = read_memory_index(&path, 128).err();
        assert!(
            matches!(&err, Some(StateError::Snapshot { reason, .. })
                if reason.starts_with("format version 3 is not supported (expected 4)")),
            "{err:?}"
        );
    }
}
