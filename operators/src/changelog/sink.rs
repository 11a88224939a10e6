//! [`ChangelogTableSink`]: a changelog applied as upserts and deletes by
//! key, the resulting table written as a CSV and/or Parquet snapshot.
//!
//! # How it commits
//!
//! The sink takes part in the engine's two-phase commit (DESIGN.md, "State
//! and checkpoints"), so its files show every change's effect exactly once:
//!
//! 1. Each subtask collects the changes it receives since its last
//!    pre-commit, the last one per key (`+I`/`+U`: upsert the row, `-U`/`-D`:
//!    delete its key).
//! 2. At the barrier of checkpoint `n` ([`Sink::pre_commit`]) it hands them
//!    over as its transaction, stored in the checkpoint.
//! 3. Once `n` is complete, the committer applies every subtask's changes
//!    to the committed table and writes the snapshot files: each to a
//!    hidden temporary file in the same directory, synced, then renamed
//!    over the visible one (readers see the old snapshot or the new one,
//!    never a partial file), the table sorted by key. Next to the first file
//!    a hidden state file, `.<file name>.state`, holds the same table for
//!    restores. A job without checkpointing commits at the end of its
//!    input and writes the files once, when the last subtask has ended.
//!
//! So the files always hold the table exactly as of the last completed
//! checkpoint (or the end of a bounded job), and
//! [`ChangelogTableSink::values`] shows the same table in memory.
//!
//! # Restores
//!
//! Before a restored job starts, the committer loads the table from the
//! state file and commits the restored checkpoint's transactions again,
//! skipping those the state file already holds; the sources then replay
//! what came after the checkpoint. Upserts and deletes are idempotent per
//! key, so a change delivered again cannot count twice. A restore that
//! needs a table the state file does not hold (deleted, or a sink without
//! files restored by a new process) is refused with an error rather than
//! starting from a wrong table. Restoring an older checkpoint than the one
//! the state file holds (the newest checkpoint was corrupt) keeps the newer
//! table and lets the replay bring it up to date: every key's final row is
//! exact, as the replay delivers every change after the restored
//! checkpoint again, but until the replay passes the newer checkpoint the
//! files may show some of its rows.
//!
//! # Requirements
//!
//! - Each key's rows must reach one subtask of the sink, in order: attach
//!   the sink right after the operator that emits the changelog keyed by
//!   the sink's key ([`to_table`](super::ToTableExt::to_table) by its primary
//!   key, [`aggregate_changelog`](super::AggregateChangelogExt::aggregate_changelog)
//!   by its group), or after `key_by(key)` of the same key.
//! - Attach it with `stream.sink(table.clone())`: the clones share the
//!   table and the committer. One sink per set of files.
//! - Rows are `Serialize` for the files and `DeserializeOwned` for
//!   transactions and restores (the state file is `postcard`, exact for
//!   any serde type).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tideline_engine::{Committer, Data, Error, Record, Result, Sink, SubtaskInfo};

use super::{ChangelogRow, RowKind};
use crate::connectors::file::{
    exists, rename, sync_dir, sync_file, CsvWriter, FileFormatWriter, FormatError, ParquetWriter,
};
use crate::connectors::upsert::SharedTable;

/// Version of the transaction and state-file encodings.
const FORMAT: u8 = 1;
const NAME: &str = "changelog_table_sink";

type KeyFn<K, V> = Arc<dyn Fn(&V) -> K + Send + Sync>;

/// A file format of the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Csv,
    Parquet,
}

impl Format {
    fn field(self) -> &'static str {
        match self {
            Format::Csv => "changelog_table_sink.csv",
            Format::Parquet => "changelog_table_sink.parquet",
        }
    }
}

#[derive(Clone, Debug)]
struct OutputFile {
    path: PathBuf,
    format: Format,
}

/// One change, the last of its key since the previous pre-commit.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Op<V> {
    /// Insert or replace the row under its key.
    Upsert(V),
    /// Remove the row under this row's key.
    Delete(V),
}

impl<V> Op<V> {
    fn row(&self) -> &V {
        match self {
            Op::Upsert(v) | Op::Delete(v) => v,
        }
    }
}

/// What [`Sink::pre_commit`] returns, `postcard`-encoded.
#[derive(Debug, Serialize, Deserialize)]
struct Transaction<V> {
    format: u8,
    /// The checkpoint pre-committed (0: end of input without checkpointing).
    checkpoint: u64,
    subtask: u32,
    parallelism: u32,
    /// The checkpoint of the last snapshot written when this was
    /// pre-committed: the table these changes apply to holds at least it.
    base: u64,
    changes: Vec<Op<V>>,
}

/// The committer's progress.
#[derive(Debug)]
struct Progress {
    /// The last checkpoint whose changes the table holds (0: none).
    checkpoint: u64,
    /// The checkpoint of the last snapshot written (files and state).
    written: u64,
    /// The table changed since the last snapshot was written.
    dirty: bool,
    /// Set by `abort_uncommitted`: this job resumes from a checkpoint.
    restored: bool,
    /// Between `abort_uncommitted` and the restored checkpoint's
    /// `checkpoint_committed`: the checkpoint the loaded table holds.
    restoring: Option<u64>,
    /// Whether the first write of this job checked the directory.
    started: bool,
    /// Without checkpointing: the subtasks whose final changes are committed.
    ended: BTreeSet<u32>,
}

/// What every clone of one sink shares; also its [`Committer`].
struct Shared<K, V> {
    key: KeyFn<K, V>,
    outputs: Vec<OutputFile>,
    table: SharedTable<K, V>,
    progress: Mutex<Progress>,
}

impl<K, V> std::fmt::Debug for Shared<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("outputs", &self.outputs)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// The hidden files next to `path`: `.<name><suffix>`.
fn hidden(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{suffix}"))
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn remove_if_exists(path: &Path) -> Result<bool> {
    if exists(path)? {
        std::fs::remove_file(path).map_err(|e| Error::io("delete", path, e))?;
        return Ok(true);
    }
    Ok(false)
}

/// Writes `path` atomically: `write` fills a temporary file next to it,
/// which is synced and renamed over `path`. `write` returning `false` means
/// there is nothing to show (a Parquet table without a schema): `path` is
/// removed.
fn replace_file(
    path: &Path,
    write: impl FnOnce(File, &Path) -> std::result::Result<bool, FormatError>,
) -> Result<()> {
    let dir = parent(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let tmp = hidden(path, ".tmp");
    let file = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    let written = write(file, &tmp).map_err(|e| e.into_error("write", &tmp))?;
    if written && exists(&tmp)? {
        sync_file(&tmp)?;
        rename(&tmp, path)?;
    } else {
        remove_if_exists(&tmp)?;
        remove_if_exists(path)?;
    }
    sync_dir(dir)
}

impl<K, V> Shared<K, V>
where
    K: Ord + Clone + Send + 'static,
    V: Data + Serialize + DeserializeOwned,
{
    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state file: next to the first output; none without outputs.
    fn state_path(&self) -> Option<PathBuf> {
        self.outputs.first().map(|o| hidden(&o.path, ".state"))
    }

    /// Every hidden temporary file a crashed write may have left.
    fn remove_leftovers(&self) -> Result<()> {
        let state = self.state_path();
        for path in self.outputs.iter().map(|o| &o.path).chain(state.as_ref()) {
            remove_if_exists(&hidden(path, ".tmp"))?;
        }
        Ok(())
    }

    /// Runs once, before this job's first write or pre-commit. A new job
    /// (not restored) starts from an empty table: the state file of an
    /// earlier job in the same place must never be restored into it.
    fn start(&self) -> Result<()> {
        let mut progress = self.lock();
        if progress.started {
            return Ok(());
        }
        if !progress.restored {
            self.remove_leftovers()?;
            if let Some(state) = self.state_path() {
                if remove_if_exists(&state)? {
                    sync_dir(parent(&state))?;
                }
            }
        }
        progress.started = true;
        Ok(())
    }

    /// Writes the snapshot files and the state file of checkpoint
    /// `checkpoint` from the table.
    fn write_snapshot(&self, progress: &mut Progress, checkpoint: u64) -> Result<()> {
        let table = self.table.lock();
        let rows: Vec<&V> = table.rows.values().collect();
        for output in &self.outputs {
            match output.format {
                Format::Csv => replace_file(&output.path, |file, tmp| {
                    let mut writer = <CsvWriter as FileFormatWriter<V>>::open(file)
                        .map_err(|e| FormatError::Encode(e.to_string()))?;
                    writer.write(&rows)?;
                    FileFormatWriter::<V>::close(writer, tmp)?;
                    Ok(true)
                })?,
                Format::Parquet => replace_file(&output.path, |file, tmp| {
                    let mut writer = <ParquetWriter as FileFormatWriter<V>>::open(file)
                        .map_err(|e| FormatError::Encode(e.to_string()))?;
                    let traced = writer.use_schema_of::<V>();
                    if traced || !rows.is_empty() {
                        writer.write(&rows)?;
                    }
                    FileFormatWriter::<V>::close(writer, tmp)?;
                    Ok(traced || !rows.is_empty())
                })?,
            }
        }
        if let Some(state) = self.state_path() {
            let bytes = postcard::to_allocvec(&(FORMAT, checkpoint, &rows)).map_err(|e| {
                Error::user(format!(
                    "cannot encode the table of {}: {e}",
                    state.display()
                ))
            })?;
            replace_file(&state, |mut file, _| {
                use std::io::Write;
                file.write_all(&bytes)?;
                Ok(true)
            })?;
        }
        progress.written = checkpoint;
        progress.dirty = false;
        Ok(())
    }

    /// The table the state file holds, and its checkpoint.
    fn read_state(&self, path: &Path) -> Result<Option<(u64, Vec<V>)>> {
        if !exists(path)? {
            return Ok(None);
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        let (format, checkpoint, rows): (u8, u64, Vec<V>) = postcard::from_bytes(&bytes)
            .map_err(|e| {
                Error::user(format!(
                    "cannot restore the table from {}: {e} (not a state file of {NAME}, or rows of another type)",
                    path.display()
                ))
            })?;
        if format != FORMAT {
            return Err(Error::user(format!(
                "cannot restore the table from {}: format {format}, expected {FORMAT}",
                path.display()
            )));
        }
        Ok(Some((checkpoint, rows)))
    }

    fn decode(&self, bytes: &[u8]) -> Result<Transaction<V>> {
        let txn: Transaction<V> = postcard::from_bytes(bytes).map_err(|e| {
            Error::user(format!(
                "not a transaction of {NAME} ({e}); was the sink's uid given to another sink?"
            ))
        })?;
        if txn.format != FORMAT {
            return Err(Error::user(format!(
                "a transaction of {NAME} in format {}, expected {FORMAT}",
                txn.format
            )));
        }
        Ok(txn)
    }

    /// Applies changes to the committed table; `true` if there were any.
    fn apply(&self, changes: Vec<Op<V>>) -> bool {
        if changes.is_empty() {
            return false;
        }
        // Keys computed outside the lock: user code does not hold it.
        let keyed: Vec<(K, Op<V>)> = changes
            .into_iter()
            .map(|op| ((self.key)(op.row()), op))
            .collect();
        let mut table = self.table.lock();
        for (key, op) in keyed {
            match op {
                Op::Upsert(row) => {
                    table.rows.insert(key, row);
                }
                Op::Delete(_) => {
                    table.rows.remove(&key);
                }
            }
        }
        true
    }
}

impl<K, V> Committer for Shared<K, V>
where
    K: Ord + Clone + Send + 'static,
    V: Data + Serialize + DeserializeOwned,
{
    fn commit(&self, transaction: &[u8]) -> Result<()> {
        let txn = self.decode(transaction)?;
        let mut progress = self.lock();
        if let Some(loaded) = progress.restoring {
            if txn.base > loaded {
                let held = match (self.state_path(), loaded) {
                    (None, _) => "the sink has no file, and a new sink object keeps no table \
                                  from an earlier run"
                        .to_string(),
                    (Some(path), 0) => format!("{} does not exist", path.display()),
                    (Some(path), c) => format!("{} holds checkpoint {c}", path.display()),
                };
                return Err(Error::user(format!(
                    "cannot restore {NAME}: checkpoint {}'s changes apply to the table as of \
                     checkpoint {}, but {held}",
                    txn.checkpoint, txn.base
                )));
            }
            if txn.checkpoint != 0 && txn.checkpoint <= loaded {
                // Already in the loaded table (or superseded by it).
                return Ok(());
            }
        }
        if self.apply(txn.changes) {
            progress.dirty = true;
        }
        if txn.checkpoint == 0 {
            // Without checkpointing: the files are written once, when every
            // subtask's last changes are in.
            progress.ended.insert(txn.subtask);
            if progress.ended.len() >= txn.parallelism as usize {
                self.write_snapshot(&mut progress, 0)?;
            }
        }
        Ok(())
    }

    fn checkpoint_committed(&self, checkpoint: u64) -> Result<()> {
        let mut progress = self.lock();
        progress.restoring = None;
        // Ids grow within a run, and a restored run's ids exceed the
        // restored checkpoint's.
        progress.checkpoint = checkpoint;
        if progress.dirty {
            let id = progress.checkpoint;
            self.write_snapshot(&mut progress, id)?;
        }
        Ok(())
    }

    fn abort_uncommitted(&self, restored: u64, keep: &[Vec<u8>]) -> Result<()> {
        let _ = (restored, keep);
        let mut progress = self.lock();
        progress.restored = true;
        if let Some(state) = self.state_path() {
            self.remove_leftovers()?;
            let loaded = self.read_state(&state)?;
            let (checkpoint, rows) = loaded.unwrap_or_default();
            let keyed: Vec<(K, V)> = rows.into_iter().map(|v| ((self.key)(&v), v)).collect();
            let mut table = self.table.lock();
            table.rows = keyed.into_iter().collect();
            progress.checkpoint = checkpoint;
            progress.written = checkpoint;
        }
        // Otherwise the table lives in this object's memory only: as
        // committed so far in this process (nothing, in a new one).
        progress.restoring = Some(progress.written);
        // The restored checkpoint's commit rewrites the files.
        progress.dirty = true;
        Ok(())
    }
}

/// Applies a changelog as upserts (`+I`, `+U`) and deletes (`-U`, `-D`) by
/// `key`, and writes the table as a CSV and/or Parquet snapshot, exactly
/// once with checkpoints: see the [module docs](self).
///
/// ```
/// use tideline_operators::changelog::{ChangelogRow, ChangelogTableSink};
/// use tideline_operators::prelude::*;
///
/// let dir = tempfile::tempdir().map_err(Error::user)?;
/// let path = dir.path().join("users.csv");
/// let table = ChangelogTableSink::new(|u: &(u32, String)| u.0).csv(&path);
/// let job = Job::new();
/// job.source(
///     VecSource::new(vec![
///         ChangelogRow::insert((1, "ada".to_string())),
///         ChangelogRow::insert((2, "alan".to_string())),
///         ChangelogRow::update_before((1, "ada".to_string())),
///         ChangelogRow::update_after((1, "ada l.".to_string())),
///         ChangelogRow::delete((2, "alan".to_string())),
///     ]),
///     WatermarkStrategy::none(),
/// )
/// .sink(table.clone());
/// job.run()?;
/// assert_eq!(table.values(), vec![(1, "ada l.".to_string())]);
/// let text = std::fs::read_to_string(&path).map_err(Error::user)?;
/// assert_eq!(text, "field_0,field_1\n1,ada l.\n");
/// # Ok::<(), tideline_engine::Error>(())
/// ```
pub struct ChangelogTableSink<K, V> {
    shared: Arc<Shared<K, V>>,
    subtask: SubtaskInfo,
    /// Changes since the last pre-commit, the last one per key.
    pending: BTreeMap<K, Op<V>>,
}

impl<K, V> std::fmt::Debug for ChangelogTableSink<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangelogTableSink")
            .field("shared", &self.shared)
            .field("subtask", &self.subtask)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl<K, V> Clone for ChangelogTableSink<K, V> {
    /// A clone shares the table, the files and the committer; it has no
    /// pending changes of its own yet.
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            subtask: self.subtask,
            pending: BTreeMap::new(),
        }
    }
}

impl<K, V> ChangelogTableSink<K, V>
where
    K: Ord + Clone + Send + 'static,
    V: Data + Serialize + DeserializeOwned,
{
    /// An empty table keyed by `key`, kept in memory only; add files with
    /// [`ChangelogTableSink::csv`] and [`ChangelogTableSink::parquet`]
    /// (needed to restore a job in a new process).
    pub fn new(key: impl Fn(&V) -> K + Send + Sync + 'static) -> Self {
        Self::with_outputs(Arc::new(key), Vec::new())
    }

    fn with_outputs(key: KeyFn<K, V>, outputs: Vec<OutputFile>) -> Self {
        Self {
            shared: Arc::new(Shared {
                key,
                outputs,
                table: SharedTable::new(),
                progress: Mutex::new(Progress {
                    checkpoint: 0,
                    written: 0,
                    // A new job's first commit replaces an earlier job's files.
                    dirty: true,
                    restored: false,
                    restoring: None,
                    started: false,
                    ended: BTreeSet::new(),
                }),
            }),
            subtask: SubtaskInfo {
                subtask: 0,
                parallelism: 1,
                isolated: false,
            },
            pending: BTreeMap::new(),
        }
    }

    fn add_output(self, path: &Path, format: Format) -> Self {
        let mut outputs = self.shared.outputs.clone();
        outputs.push(OutputFile {
            path: path.to_path_buf(),
            format,
        });
        // Configured before use: a new, empty table.
        Self::with_outputs(Arc::clone(&self.shared.key), outputs)
    }

    /// Also writes the table as a CSV file at `path` (parent directories
    /// are created), with a header row from the rows' field names (see
    /// [`CsvWriter`]); an empty table is an empty file. Configure the sink
    /// before cloning it.
    pub fn csv(self, path: impl AsRef<Path>) -> Self {
        self.add_output(path.as_ref(), Format::Csv)
    }

    /// Also writes the table as a Parquet file at `path` (parent
    /// directories are created), its schema from the rows' type (see
    /// [`ParquetWriter`]); an empty table of a type whose schema cannot be
    /// traced leaves no file. Configure the sink before cloning it.
    pub fn parquet(self, path: impl AsRef<Path>) -> Self {
        self.add_output(path.as_ref(), Format::Parquet)
    }

    /// The committed rows, sorted by key: the table as of the last
    /// completed checkpoint (or the end of a bounded job), as the files
    /// show it.
    pub fn values(&self) -> Vec<V> {
        self.shared.table.values()
    }

    /// The committed `(key, row)` pairs, sorted by key.
    pub fn entries(&self) -> Vec<(K, V)> {
        self.shared.table.entries()
    }

    /// The committed row of `key`.
    pub fn get(&self, key: &K) -> Option<V> {
        self.shared.table.get(key)
    }

    /// How many rows the committed table holds.
    pub fn len(&self) -> usize {
        self.shared.table.len()
    }

    /// Whether the committed table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many changelog rows this sink received in this process,
    /// redeliveries included.
    pub fn received(&self) -> u64 {
        self.shared.table.received()
    }

    /// The last checkpoint whose changes the committed table holds (0
    /// before the first, and without checkpointing).
    pub fn committed_checkpoint(&self) -> u64 {
        self.shared.lock().checkpoint
    }

    fn check_outputs(&self) -> Result<()> {
        let outputs = &self.shared.outputs;
        for (i, output) in outputs.iter().enumerate() {
            if output.path.file_name().is_none() {
                return Err(Error::config(
                    output.format.field(),
                    format!("{} names no file", output.path.display()),
                ));
            }
            if outputs[..i].iter().any(|o| o.path == output.path) {
                return Err(Error::config(
                    output.format.field(),
                    format!("{} is given twice", output.path.display()),
                ));
            }
        }
        Ok(())
    }
}

impl<K, V> Sink<ChangelogRow<V>> for ChangelogTableSink<K, V>
where
    K: Ord + Clone + Send + 'static,
    V: Data + Serialize + DeserializeOwned,
{
    fn name(&self) -> &str {
        NAME
    }

    fn open(&mut self, subtask: SubtaskInfo) -> Result<()> {
        self.subtask = subtask;
        self.check_outputs()
    }

    fn write_batch(&mut self, batch: Vec<Record<ChangelogRow<V>>>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.shared.start()?;
        self.shared.table.count_received(batch.len());
        for record in batch {
            let ChangelogRow { kind, row } = record.value;
            let key = (self.shared.key)(&row);
            let op = match kind {
                RowKind::Insert | RowKind::UpdateAfter => Op::Upsert(row),
                RowKind::UpdateBefore | RowKind::Delete => Op::Delete(row),
            };
            self.pending.insert(key, op);
        }
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        self.shared.start()?;
        let base = self.shared.lock().written;
        let txn = Transaction {
            format: FORMAT,
            checkpoint,
            subtask: u32::try_from(self.subtask.subtask).unwrap_or(u32::MAX),
            parallelism: u32::try_from(self.subtask.parallelism).unwrap_or(u32::MAX),
            base,
            changes: std::mem::take(&mut self.pending).into_values().collect(),
        };
        // Always a transaction, even without changes: it tells a restore
        // which table the checkpoint builds on, and the end of input
        // without checkpointing counts the subtasks that ended.
        postcard::to_allocvec(&txn).map(Some).map_err(|e| {
            Error::user(format!(
                "{NAME} cannot encode its changes for checkpoint {checkpoint}: {e}"
            ))
        })
    }

    fn committer(&self) -> Option<Arc<dyn Committer>> {
        let shared: Arc<dyn Committer> = Arc::clone(&self.shared) as Arc<dyn Committer>;
        Some(shared)
    }

    /// The engine pre-commits the last changes before it finishes the
    /// sink; changes still pending here would never be committed, so that
    /// is an error rather than silent loss.
    fn finish(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        Err(Error::user(format!(
            "{NAME} finished with {} changes that were never pre-committed",
            self.pending.len()
        )))
    }
}
