//! On-disk layout of keyed-state snapshots.
//!
//! A snapshot directory written by [`crate::KeyedState::snapshot_to`] holds
//! exactly one of:
//! - [`MEMORY_FILE`] (memory backend): `magic | version u32 | key_groups u16`,
//!   then records tagged by one byte — `1`: start of a state (`u32` name
//!   length, UTF-8 name), `2`: an entry of the current state (`u32` key
//!   length, stored key, `u32` value length, stored value) — and a footer
//!   `0 | entry count u64 | CRC-32 of every byte before it`. All integers are
//!   little endian except the key-group prefix of stored keys.
//! - [`ROCKS_META_FILE`] (`magic | version u32 | key_groups u16 | CRC-32`) next
//!   to a RocksDB checkpoint in the directory [`ROCKS_DIR`].
//!
//! A file is accepted only when its magic, length, footer and checksum agree,
//! so a truncated or corrupt snapshot is an error, never a partial restore.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{Result, StateError};

/// The file of a memory-backend snapshot.
pub(crate) const MEMORY_FILE: &str = "memory-state.bin";
/// The metadata file of a RocksDB-backend snapshot.
pub(crate) const ROCKS_META_FILE: &str = "rocksdb-state.meta";
/// The directory of the RocksDB checkpoint inside a snapshot directory.
#[cfg(feature = "rocksdb")]
pub(crate) const ROCKS_DIR: &str = "rocksdb";

const MEMORY_MAGIC: &[u8; 8] = b"TDLMEMS\x01";
#[cfg(feature = "rocksdb")]
const ROCKS_MAGIC: &[u8; 8] = b"TDLROCK\x01";
/// The snapshot format. 2: operator state changed layout with the
/// partition-local lateness rule (sliding windows' partial panes), so a
/// version-1 snapshot is refused with a clear error rather than misread.
/// 3: key groups are hashed from the key's postcard encoding with XXH3
/// instead of `std::hash::Hash` with Fx, so every key's group changed; an
/// older snapshot would put keys in groups no subtask looks them up in.
const VERSION: u32 = 3;
const TAG_END: u8 = 0;
const TAG_STATE: u8 = 1;
const TAG_ENTRY: u8 = 2;
const HEADER_LEN: usize = 8 + 4 + 2;
const FOOTER_LEN: usize = 1 + 8 + 4;

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

/// CRC-32 (IEEE 802.3, as in zlib), table driven.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Crc32(u32);

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32 {
    pub(crate) fn new() -> Self {
        Crc32(0xffff_ffff)
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        for &b in bytes {
            c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    pub(crate) fn finish(self) -> u32 {
        self.0 ^ 0xffff_ffff
    }

    pub(crate) fn of(bytes: &[u8]) -> u32 {
        let mut crc = Crc32::new();
        crc.update(bytes);
        crc.finish()
    }
}

fn len_u32(path: &Path, len: usize) -> Result<[u8; 4]> {
    u32::try_from(len)
        .map(u32::to_le_bytes)
        .map_err(|_| StateError::snapshot(path, format!("record of {len} bytes is too large")))
}

/// Streams a memory-backend snapshot to [`MEMORY_FILE`].
pub(crate) struct MemoryWriter {
    out: BufWriter<File>,
    crc: Crc32,
    path: PathBuf,
    entries: u64,
}

impl MemoryWriter {
    /// Creates the file in `dir` (which must exist) and writes the header.
    pub(crate) fn create(dir: &Path, key_groups: u16) -> Result<Self> {
        let path = dir.join(MEMORY_FILE);
        let file = File::create_new(&path).map_err(|e| StateError::io(&path, e))?;
        let mut writer = Self {
            out: BufWriter::with_capacity(1 << 16, file),
            crc: Crc32::new(),
            path,
            entries: 0,
        };
        writer.put(MEMORY_MAGIC)?;
        writer.put(&VERSION.to_le_bytes())?;
        writer.put(&key_groups.to_le_bytes())?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc.update(bytes);
        self.out
            .write_all(bytes)
            .map_err(|e| StateError::io(&self.path, e))
    }

    /// Starts the entries of state `name`.
    pub(crate) fn begin_state(&mut self, name: &str) -> Result<()> {
        let len = len_u32(&self.path, name.len())?;
        self.put(&[TAG_STATE])?;
        self.put(&len)?;
        self.put(name.as_bytes())
    }

    /// Writes one entry (stored key and value) of the current state.
    pub(crate) fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let key_len = len_u32(&self.path, key.len())?;
        let value_len = len_u32(&self.path, value.len())?;
        self.put(&[TAG_ENTRY])?;
        self.put(&key_len)?;
        self.put(key)?;
        self.put(&value_len)?;
        self.put(value)?;
        self.entries += 1;
        Ok(())
    }

    /// Writes the footer and syncs the file to disk.
    pub(crate) fn finish(mut self) -> Result<()> {
        let entries = self.entries.to_le_bytes();
        self.put(&[TAG_END])?;
        self.put(&entries)?;
        let crc = self.crc.finish().to_le_bytes();
        self.out
            .write_all(&crc)
            .map_err(|e| StateError::io(&self.path, e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| StateError::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| StateError::io(&self.path, e))
    }
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

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn block(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

/// Reads the memory snapshot at `path`, checks it (magic, key groups,
/// checksum, structure) and calls `f(state, stored key, stored value)` for
/// every entry.
pub(crate) fn read_memory(
    path: &Path,
    key_groups: u16,
    mut f: impl FnMut(&str, &[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| StateError::io(path, e))?;
    if bytes.len() < HEADER_LEN + FOOTER_LEN || !bytes.starts_with(MEMORY_MAGIC) {
        return Err(StateError::snapshot(
            path,
            "not a keyed-state snapshot file (bad magic or too short)",
        ));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored_crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if Crc32::of(body) != stored_crc {
        return Err(StateError::snapshot(
            path,
            "checksum mismatch (the file is truncated or corrupt)",
        ));
    }
    let records_end = body.len() - (FOOTER_LEN - 4);
    let mut cursor = Cursor {
        bytes: body,
        pos: MEMORY_MAGIC.len(),
        path,
    };
    let version = cursor.u32()?;
    if version != VERSION {
        return Err(StateError::snapshot(
            path,
            format!("format version {version} is not supported (expected {VERSION}): it was written by another version of Tideline"),
        ));
    }
    let file_groups = cursor.u16()?;
    check_key_groups(path, file_groups, key_groups)?;
    let mut state: Option<&str> = None;
    let mut entries = 0u64;
    while cursor.pos < records_end {
        match cursor.u8()? {
            TAG_STATE => {
                let name = std::str::from_utf8(cursor.block()?)
                    .map_err(|_| StateError::snapshot(path, "a state name is not UTF-8"))?;
                state = Some(name);
            }
            TAG_ENTRY => {
                let key = cursor.block()?;
                let value = cursor.block()?;
                let Some(name) = state else {
                    return Err(StateError::snapshot(
                        path,
                        "an entry precedes every state name",
                    ));
                };
                if key.len() < 2 {
                    return Err(StateError::snapshot(
                        path,
                        "a stored key lacks its key group",
                    ));
                }
                entries += 1;
                f(name, key, value)?;
            }
            tag => {
                return Err(StateError::snapshot(
                    path,
                    format!("unknown record tag {tag} at byte {}", cursor.pos - 1),
                ))
            }
        }
    }
    if cursor.pos != records_end || cursor.u8()? != TAG_END {
        return Err(StateError::snapshot(path, "records overrun the footer"));
    }
    let b = cursor.take(8)?;
    let count = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    if count != entries {
        return Err(StateError::snapshot(
            path,
            format!("footer counts {count} entries, the file holds {entries}"),
        ));
    }
    Ok(())
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

/// Writes [`ROCKS_META_FILE`] into `dir`.
#[cfg(feature = "rocksdb")]
pub(crate) fn write_rocks_meta(dir: &Path, key_groups: u16) -> Result<()> {
    let path = dir.join(ROCKS_META_FILE);
    let mut bytes = Vec::with_capacity(HEADER_LEN + 4);
    bytes.extend_from_slice(ROCKS_MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&key_groups.to_le_bytes());
    let crc = Crc32::of(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let mut file = File::create_new(&path).map_err(|e| StateError::io(&path, e))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| StateError::io(&path, e))
}

/// Reads and checks [`ROCKS_META_FILE`] in `dir`.
#[cfg(feature = "rocksdb")]
pub(crate) fn read_rocks_meta(dir: &Path, key_groups: u16) -> Result<()> {
    let path = dir.join(ROCKS_META_FILE);
    let bytes = std::fs::read(&path).map_err(|e| StateError::io(&path, e))?;
    if bytes.len() != HEADER_LEN + 4 || !bytes.starts_with(ROCKS_MAGIC) {
        return Err(StateError::snapshot(
            &path,
            "malformed RocksDB snapshot metadata",
        ));
    }
    let (body, crc) = bytes.split_at(HEADER_LEN);
    if Crc32::of(body).to_le_bytes() != crc {
        return Err(StateError::snapshot(&path, "checksum mismatch"));
    }
    let version = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
    if version != VERSION {
        return Err(StateError::snapshot(
            &path,
            format!("format version {version} is not supported (expected {VERSION}): it was written by another version of Tideline"),
        ));
    }
    check_key_groups(&path, u16::from_le_bytes([body[12], body[13]]), key_groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_reference_value() {
        assert_eq!(Crc32::of(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn a_version_2_snapshot_is_refused_because_its_key_groups_changed() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let dir = dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"));
        let written = MemoryWriter::create(dir, 128).and_then(MemoryWriter::finish);
        assert!(written.is_ok(), "{written:?}");
        let path = dir.join(MEMORY_FILE);
        let mut bytes = std::fs::read(&path).unwrap_or_default();
        // Rewrite the version field and the checksum, as version 2 wrote them.
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        let body_len = bytes.len() - 4;
        let crc = Crc32::of(&bytes[..body_len]);
        bytes[body_len..].copy_from_slice(&crc.to_le_bytes());
        assert!(std::fs::write(&path, &bytes).is_ok());
        let err = read_memory(&path, 128, |_, _, _| Ok(())).err();
        assert!(
            matches!(&err, Some(StateError::Snapshot { reason, .. })
                if reason.starts_with("format version 2 is not supported (expected 3)")),
            "{err:?}"
        );
    }
}
