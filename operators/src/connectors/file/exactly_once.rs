//! Exactly-once file output: part files committed with checkpoints.
//!
//! See [`ExactlyOnceFileSink`] for how parts are written and committed.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tideline_engine::{Committer, Data, Error, Record, Result, Sink};

use super::sink::{CsvWriter, FileFormatWriter, FormatError, JsonLinesWriter, ParquetWriter};

/// The file name extension of a format's committed part files.
pub trait PartExtension {
    /// The extension, without the dot (`"csv"`).
    const EXTENSION: &'static str;
}

impl PartExtension for CsvWriter {
    const EXTENSION: &'static str = "csv";
}

impl PartExtension for JsonLinesWriter {
    const EXTENSION: &'static str = "jsonl";
}

impl PartExtension for ParquetWriter {
    const EXTENSION: &'static str = "parquet";
}

/// Exactly-once CSV part files (a header row in each part).
pub type ExactlyOnceCsvSink<T> = ExactlyOnceFileSink<T, CsvWriter>;
/// Exactly-once JSON-lines part files.
pub type ExactlyOnceJsonLinesSink<T> = ExactlyOnceFileSink<T, JsonLinesWriter>;
/// Exactly-once Parquet part files.
pub type ExactlyOnceParquetSink<T> = ExactlyOnceFileSink<T, ParquetWriter>;

const HIDDEN_PREFIX: &str = ".part-";
const IN_PROGRESS_SUFFIX: &str = ".inprogress";
const PENDING_SUFFIX: &str = ".pending";
const COMMITTED_PREFIX: &str = "part-";

/// Writer ids, unique in the process: two sink objects (by mistake) on one
/// directory still never share a file name.
static NEXT_WRITER: AtomicU32 = AtomicU32::new(0);

fn in_progress_name(writer: u32) -> String {
    format!("{HIDDEN_PREFIX}{writer:04}{IN_PROGRESS_SUFFIX}")
}

fn pending_name(checkpoint: u64, writer: u32) -> String {
    format!("{HIDDEN_PREFIX}{checkpoint:010}-{writer:04}{PENDING_SUFFIX}")
}

fn committed_name(checkpoint: u64, writer: u32, extension: &str) -> String {
    format!("{COMMITTED_PREFIX}{checkpoint:010}-{writer:04}.{extension}")
}

/// The checkpoint id of a committed part's name.
fn committed_checkpoint(name: &str) -> Option<u64> {
    if !is_committed_name(name) {
        return None;
    }
    let rest = name.strip_prefix(COMMITTED_PREFIX)?;
    rest.split_once('-')?.0.parse().ok()
}

/// Whether `name` is a committed part: `part-<digits>-<digits>.<ext>`.
fn is_committed_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(COMMITTED_PREFIX) else {
        return false;
    };
    let Some((stem, extension)) = rest.split_once('.') else {
        return false;
    };
    let Some((checkpoint, writer)) = stem.split_once('-') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(checkpoint)
        && digits(writer)
        && !extension.is_empty()
        && extension.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A pre-committed part: what [`Sink::pre_commit`] returns, serialized as
/// JSON. File names only (relative to the sink's directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Transaction {
    /// The hidden pending file.
    pending: String,
    /// The visible name it gets when committed.
    committed: String,
}

impl Transaction {
    fn parse(bytes: &[u8], dir: &Path) -> Result<Self> {
        let t: Transaction = serde_json::from_slice(bytes).map_err(|e| {
            Error::user(format!(
                "not a transaction of the exactly-once file sink in {}: {e} ({:?})",
                dir.display(),
                String::from_utf8_lossy(bytes)
            ))
        })?;
        // A checkpoint names files in the sink's directory, nothing else.
        let plain = |name: &str| {
            !name.is_empty()
                && !name.contains(['/', '\\'])
                && name != "."
                && name != ".."
                && Path::new(name).file_name().is_some()
        };
        let valid = plain(&t.pending)
            && plain(&t.committed)
            && t.pending.starts_with(HIDDEN_PREFIX)
            && t.pending.ends_with(PENDING_SUFFIX)
            && is_committed_name(&t.committed);
        if valid {
            Ok(t)
        } else {
            Err(Error::user(format!(
                "invalid transaction of the exactly-once file sink in {}: pending {:?}, committed {:?}",
                dir.display(),
                t.pending,
                t.committed
            )))
        }
    }
}

/// A committed part file that cannot be parsed as the sink's records.
fn unreadable(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::user(format!("cannot read {}: {e}", path.display()))
}

pub(crate) fn exists(path: &Path) -> Result<bool> {
    path.try_exists()
        .map_err(|e| Error::io("check for", path, e))
}

/// Syncs a file's contents to disk.
pub(crate) fn sync_file(path: &Path) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("sync", path, e))
}

/// Syncs a directory, so renames and deletions in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("sync directory", dir, e))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    // The source is named: it is the file that exists (or should).
    std::fs::rename(from, to).map_err(|e| Error::io("rename", from, e))
}

/// The file names in `dir` (not descending into subdirectories).
fn file_names(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let is_file = entry
            .file_type()
            .map_err(|e| Error::io("inspect", entry.path(), e))?
            .is_file();
        if let (true, Some(name)) = (is_file, entry.file_name().to_str()) {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// The state every clone of one sink shares; also its [`Committer`].
#[derive(Debug)]
struct Parts {
    dir: PathBuf,
    /// Set by `abort_uncommitted`: this job resumes from a checkpoint.
    restored: AtomicBool,
    /// Whether the directory was checked (and cleaned) before the first write.
    started: Mutex<bool>,
}

impl Parts {
    /// Runs once before the first in-progress file of this job is created.
    /// A new job (not restored) must not mix its output with committed parts
    /// already in the directory; it removes hidden leftovers of a run that
    /// never completed a checkpoint.
    fn start(&self) -> Result<()> {
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        if *started {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create", &self.dir, e))?;
        if !self.restored.load(Ordering::SeqCst) {
            if let Some(first) = file_names(&self.dir)?
                .into_iter()
                .find(|n| is_committed_name(n))
            {
                return Err(Error::user(format!(
                    "{} already holds committed output of an earlier job ({first}); \
                     a new job (not restored from a checkpoint) needs an empty directory",
                    self.dir.display()
                )));
            }
            self.remove_uncommitted(&HashSet::new())?;
        }
        *started = true;
        Ok(())
    }

    /// Deletes every in-progress file and every pending file not in `keep`.
    fn remove_uncommitted(&self, keep: &HashSet<String>) -> Result<()> {
        self.remove_files(|name| {
            name.starts_with(HIDDEN_PREFIX)
                && (name.ends_with(IN_PROGRESS_SUFFIX)
                    || (name.ends_with(PENDING_SUFFIX) && !keep.contains(name)))
        })
    }

    /// Deletes the files of the directory `doomed` picks, then syncs it.
    fn remove_files(&self, doomed: impl Fn(&str) -> bool) -> Result<()> {
        if !exists(&self.dir)? {
            return Ok(());
        }
        let mut removed = false;
        for name in file_names(&self.dir)? {
            if doomed(&name) {
                let path = self.dir.join(&name);
                std::fs::remove_file(&path).map_err(|e| Error::io("delete", &path, e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

impl Committer for Parts {
    fn commit(&self, transaction: &[u8]) -> Result<()> {
        let t = Transaction::parse(transaction, &self.dir)?;
        let pending = self.dir.join(&t.pending);
        let committed = self.dir.join(&t.committed);
        match (exists(&pending)?, exists(&committed)?) {
            (true, false) => {
                rename(&pending, &committed)?;
                sync_dir(&self.dir)
            }
            // Committed before (a commit repeated after a restore).
            (false, true) => Ok(()),
            (true, true) => Err(Error::user(format!(
                "cannot commit {}: {} already exists (written by another run into the same directory?)",
                pending.display(),
                committed.display()
            ))),
            (false, false) => Err(Error::user(format!(
                "cannot commit {}: the pre-committed file is missing and {} does not exist",
                pending.display(),
                committed.display()
            ))),
        }
    }

    fn abort_uncommitted(&self, restored: u64, keep: &[Vec<u8>]) -> Result<()> {
        self.restored.store(true, Ordering::SeqCst);
        let keep = keep
            .iter()
            .map(|t| Transaction::parse(t, &self.dir))
            .collect::<Result<Vec<Transaction>>>()?;
        let pending: HashSet<String> = keep.iter().map(|t| t.pending.clone()).collect();
        self.remove_uncommitted(&pending)?;
        // Parts committed for checkpoints after the restored one are replayed.
        let committed: HashSet<&str> = keep.iter().map(|t| t.committed.as_str()).collect();
        self.remove_files(|name| {
            committed_checkpoint(name).is_some_and(|c| c > restored) && !committed.contains(name)
        })
    }
}

/// Writes records into a directory of part files, exactly once with
/// checkpoints. Use [`ExactlyOnceCsvSink`], [`ExactlyOnceJsonLinesSink`] or
/// [`ExactlyOnceParquetSink`].
///
/// An [`ExactlyOnceFileSink`] writes a **directory** of part files with the
/// engine's two-phase commit (DESIGN.md, "State and checkpoints"):
///
/// 1. Each writer (one per subtask) appends records to a hidden in-progress
///    file, `.part-<writer>.inprogress`.
/// 2. When the barrier of checkpoint `n` reaches the subtask
///    ([`Sink::pre_commit`]), the writer completes the file (footer, flush),
///    syncs it to disk, renames it to the hidden pending name
///    `.part-<n>-<writer>.pending`, syncs the directory and returns the
///    transaction (the pending and the final names, stored in the checkpoint).
///    Nothing written since the last checkpoint: no transaction, no file.
/// 3. Once checkpoint `n` is complete, the [`Committer`] renames the pending
///    file to its visible name `part-<n>-<writer>.<ext>` (`n` zero-padded to
///    ten digits, so name order is checkpoint order). Committing again (after
///    a restore) finds the visible file and does nothing.
/// 4. Before a restored job starts, [`Committer::abort_uncommitted`] deletes
///    every in-progress file and every pending file the restored checkpoint
///    does not hold: what the failed run wrote after its last complete
///    checkpoint disappears, and the sources replay it. Parts committed for
///    checkpoints after the restored one (when the newest checkpoint was
///    corrupt and an older one is restored) are rolled back too.
///
/// So the visible `part-*` files hold every record's effect exactly once;
/// [`read_committed`] reads them back in name order and [`committed_files`]
/// lists them. Hidden files (`.` prefix) are never visible output.
///
/// **Writers.** Attach the sink with `stream.sink(sink.clone())`: each
/// subtask gets a clone, and a clone claims a writer id from a process-wide
/// counter when it first writes, so writers never share a file. Writer ids
/// are not subtask indices and may differ between runs; committed names stay
/// unique across a restore because they carry the checkpoint id, and
/// checkpoint ids only grow across restores.
///
/// **One job per directory.** Use one sink object (and its clones) per
/// directory. A new job (one that is not restored from a checkpoint) refuses
/// to write into a directory that already holds committed parts, instead of
/// mixing two runs' output; it deletes hidden leftovers of an earlier run
/// that never completed a checkpoint.
///
/// ```no_run
/// use serde::{Deserialize, Serialize};
/// use tideline_operators::connectors::file::{read_committed, ExactlyOnceCsvSink};
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// struct Count { key: i64, count: u64 }
///
/// let sink = ExactlyOnceCsvSink::<Count>::new("out/counts")?;
/// // counts.sink(sink.clone()); job.run()?;
/// let committed: Vec<Count> = read_committed("out/counts")?;
/// # Ok::<(), tideline_engine::Error>(())
/// ```
pub struct ExactlyOnceFileSink<T, F> {
    parts: Arc<Parts>,
    /// This clone's writer id, claimed at its first write.
    writer: Option<u32>,
    /// The open in-progress file: records written since the last pre-commit.
    open: Option<F>,
    _type: PhantomData<fn(T)>,
}

impl<T, F> std::fmt::Debug for ExactlyOnceFileSink<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactlyOnceFileSink")
            .field("dir", &self.parts.dir)
            .field("writer", &self.writer)
            .field("open", &self.open.is_some())
            .finish()
    }
}

impl<T, F> Clone for ExactlyOnceFileSink<T, F> {
    /// A clone shares the directory and committer but is a new writer, with
    /// its own part files (nothing written yet).
    fn clone(&self) -> Self {
        Self {
            parts: Arc::clone(&self.parts),
            writer: None,
            open: None,
            _type: PhantomData,
        }
    }
}

impl<T, F: FileFormatWriter<T> + PartExtension> ExactlyOnceFileSink<T, F> {
    /// A sink writing part files into `dir` (created with its parents).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        Ok(Self {
            parts: Arc::new(Parts {
                dir,
                restored: AtomicBool::new(false),
                started: Mutex::new(false),
            }),
            writer: None,
            open: None,
            _type: PhantomData,
        })
    }

    /// The directory the parts are written to.
    pub fn dir(&self) -> &Path {
        &self.parts.dir
    }

    /// This clone's writer id, claimed (after the directory is checked) at
    /// the first write.
    fn claim_writer(&mut self) -> Result<u32> {
        if let Some(id) = self.writer {
            return Ok(id);
        }
        self.parts.start()?;
        let id = NEXT_WRITER.fetch_add(1, Ordering::SeqCst);
        self.writer = Some(id);
        Ok(id)
    }

    fn in_progress_path(&self, writer: u32) -> PathBuf {
        self.parts.dir.join(in_progress_name(writer))
    }
}

impl<T: Data + Serialize, F: FileFormatWriter<T> + PartExtension> Sink<T>
    for ExactlyOnceFileSink<T, F>
{
    fn name(&self) -> &str {
        F::NAME
    }

    fn write_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let writer = self.claim_writer()?;
        let path = self.in_progress_path(writer);
        if self.open.is_none() {
            let file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
            self.open = Some(F::open(file)?);
        }
        let Some(format) = self.open.as_mut() else {
            return Err(Error::Internal(format!("{} is not open", path.display())));
        };
        let values: Vec<&T> = batch.iter().map(|r| &r.value).collect();
        format
            .write(&values)
            .map_err(|e| e.into_error("write", &path))
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        let (Some(format), Some(writer)) = (self.open.take(), self.writer) else {
            return Ok(None);
        };
        let dir = &self.parts.dir;
        let in_progress = dir.join(in_progress_name(writer));
        format
            .close(&in_progress)
            .map_err(|e| e.into_error("complete", &in_progress))?;
        if !exists(&in_progress)? {
            // The format wrote nothing worth a file.
            return Ok(None);
        }
        sync_file(&in_progress)?;
        let t = Transaction {
            pending: pending_name(checkpoint, writer),
            committed: committed_name(checkpoint, writer, F::EXTENSION),
        };
        for name in [&t.pending, &t.committed] {
            let taken = dir.join(name);
            if exists(&taken)? {
                return Err(Error::user(format!(
                    "cannot pre-commit {} for checkpoint {checkpoint}: {} already exists \
                     (checkpoint {checkpoint} pre-committed twice?)",
                    in_progress.display(),
                    taken.display()
                )));
            }
        }
        let pending = dir.join(&t.pending);
        rename(&in_progress, &pending)?;
        sync_dir(dir)?;
        serde_json::to_vec(&t).map(Some).map_err(|e| {
            Error::Internal(format!(
                "encoding the transaction of {}: {e}",
                pending.display()
            ))
        })
    }

    fn committer(&self) -> Option<Arc<dyn Committer>> {
        let parts: Arc<dyn Committer> = Arc::clone(&self.parts) as Arc<dyn Committer>;
        Some(parts)
    }

    /// The engine pre-commits the last records before it finishes the sink;
    /// records still open here would never become visible, so that is an
    /// error rather than silent loss.
    fn finish(&mut self) -> Result<()> {
        match (self.open.take(), self.writer) {
            (Some(format), Some(writer)) => {
                let path = self.in_progress_path(writer);
                let closed = format.close(&path);
                Err(Error::user(format!(
                    "{} finished with records that were never pre-committed (they stay in {}, not visible){}",
                    F::NAME,
                    path.display(),
                    closed.err().map(|e| format!("; closing it failed: {e}")).unwrap_or_default()
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The committed part files in `dir` (`part-<checkpoint>-<writer>.<ext>`),
/// in name order: checkpoint order, then writer. In-progress and pending
/// files are hidden and not listed.
///
/// # Errors
/// When the directory cannot be listed.
pub fn committed_files(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    Ok(file_names(dir)?
        .into_iter()
        .filter(|n| is_committed_name(n))
        .map(|n| dir.join(n))
        .collect())
}

/// Reads the records of every committed part file in `dir`, in name order
/// (see [`committed_files`]): CSV (with a header row), JSON lines and
/// Parquet parts, by extension.
///
/// # Errors
/// When a file cannot be read, has an unknown extension, or a row does not
/// deserialize (the error names the file and row).
pub fn read_committed<T: DeserializeOwned>(dir: impl AsRef<Path>) -> Result<Vec<T>> {
    let mut records = Vec::new();
    for path in committed_files(dir)? {
        match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => read_csv(&path, &mut records)?,
            Some("jsonl") => read_json_lines(&path, &mut records)?,
            Some("parquet") => read_parquet(&path, &mut records)?,
            _ => {
                return Err(Error::user(format!(
                    "cannot read {}: unknown part format (expected .csv, .jsonl or .parquet)",
                    path.display()
                )))
            }
        }
    }
    Ok(records)
}

fn read_csv<T: DeserializeOwned>(path: &Path, out: &mut Vec<T>) -> Result<()> {
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| FormatError::from(e).into_error("read", path))?;
    for (i, row) in reader.deserialize().enumerate() {
        // Row 1 is the header.
        let row = row.map_err(|e| unreadable(path, format!("row {}: {e}", i + 2)))?;
        out.push(row);
    }
    Ok(())
}

fn read_json_lines<T: DeserializeOwned>(path: &Path, out: &mut Vec<T>) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io("read", path, e))?;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io("read", path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let row = serde_json::from_str(&line)
            .map_err(|e| unreadable(path, format!("line {}: {e}", i + 1)))?;
        out.push(row);
    }
    Ok(())
}

fn read_parquet<T: DeserializeOwned>(path: &Path, out: &mut Vec<T>) -> Result<()> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = File::open(path).map_err(|e| Error::io("read", path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| FormatError::from(e).into_error("read", path))?;
    for batch in reader {
        let batch = batch.map_err(|e| unreadable(path, e))?;
        let rows: Vec<T> =
            serde_arrow::from_record_batch(&batch).map_err(|e| unreadable(path, e))?;
        out.extend(rows);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Row {
        key: i64,
        name: String,
    }

    fn rows(range: std::ops::Range<i64>) -> Vec<Row> {
        range
            .map(|key| Row {
                key,
                name: format!("n{key}"),
            })
            .collect()
    }

    fn batch(rows: &[Row]) -> Vec<Record<Row>> {
        rows.iter().map(|r| Record::new(r.key, r.clone())).collect()
    }

    fn committer_of<S: Sink<Row>>(sink: &S) -> Result<Arc<dyn Committer>> {
        sink.committer()
            .ok_or_else(|| Error::user("an exactly-once sink has a committer"))
    }

    fn hidden_files(dir: &Path) -> Result<Vec<String>> {
        Ok(file_names(dir)?
            .into_iter()
            .filter(|n| n.starts_with('.'))
            .collect())
    }

    fn tempdir() -> Result<tempfile::TempDir> {
        tempfile::tempdir().map_err(|e| Error::user(e.to_string()))
    }

    fn check(condition: bool, what: &str) -> Result<()> {
        if condition {
            Ok(())
        } else {
            Err(Error::user(format!("check failed: {what}")))
        }
    }

    #[test]
    fn pre_commit_then_commit_makes_records_visible() -> Result<()> {
        let tmp = tempdir()?;
        let dir = tmp.path().join("out");
        let mut sink = ExactlyOnceCsvSink::<Row>::new(&dir)?.clone();
        let committer = committer_of(&sink)?;
        sink.write_batch(batch(&rows(0..3)))?;
        sink.write_batch(batch(&rows(3..5)))?;
        check(
            committed_files(&dir)?.is_empty(),
            "nothing visible before pre-commit",
        )?;
        let txn = sink.pre_commit(1)?.ok_or_else(|| Error::user("no txn"))?;
        check(
            committed_files(&dir)?.is_empty(),
            "nothing visible before commit",
        )?;
        check(hidden_files(&dir)?.len() == 1, "one pending file")?;
        committer.commit(&txn)?;
        let files = committed_files(&dir)?;
        check(files.len() == 1, "one committed file")?;
        let name = files[0]
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        check(
            name.starts_with("part-0000000001-") && name.ends_with(".csv"),
            "committed name",
        )?;
        check(hidden_files(&dir)?.is_empty(), "no hidden files left")?;
        check(read_committed::<Row>(&dir)? == rows(0..5), "records")?;
        // Committing again (after a restore) does nothing.
        committer.commit(&txn)?;
        check(read_committed::<Row>(&dir)? == rows(0..5), "idempotent")?;
        sink.finish()
    }

    #[test]
    fn pre_commit_without_data_is_none() -> Result<()> {
        let tmp = tempdir()?;
        let mut sink = ExactlyOnceJsonLinesSink::<Row>::new(tmp.path())?.clone();
        check(sink.pre_commit(1)?.is_none(), "nothing written")?;
        sink.write_batch(Vec::new())?;
        check(sink.pre_commit(2)?.is_none(), "only an empty batch")?;
        sink.write_batch(batch(&rows(0..2)))?;
        check(sink.pre_commit(3)?.is_some(), "records written")?;
        check(sink.pre_commit(4)?.is_none(), "nothing since the last")?;
        check(file_names(tmp.path())?.len() == 1, "one file only")?;
        sink.finish()
    }

    #[test]
    fn restoring_an_older_checkpoint_rolls_back_later_commits() -> Result<()> {
        let tmp = tempdir()?;
        let original = ExactlyOnceJsonLinesSink::<Row>::new(tmp.path())?;
        let committer = committer_of(&original)?;
        let mut a = original.clone();
        let mut txns = Vec::new();
        for (checkpoint, keys) in [(1, 0..2), (2, 2..4), (3, 4..6)] {
            a.write_batch(batch(&rows(keys)))?;
            let t = a
                .pre_commit(checkpoint)?
                .ok_or_else(|| Error::user("no txn"))?;
            committer.commit(&t)?;
            txns.push(t);
        }
        // Checkpoint 3 turned out corrupt: restore from 2, whose records
        // after it (checkpoint 3's part) will be produced again.
        let restored = ExactlyOnceJsonLinesSink::<Row>::new(tmp.path())?;
        committer_of(&restored)?.abort_uncommitted(2, &txns[1..2])?;
        let mut visible = read_committed::<Row>(tmp.path())?;
        visible.sort_by_key(|r| r.key);
        check(visible == rows(0..4), "checkpoint 3's part rolled back")
    }

    #[test]
    fn crash_and_restore_keeps_exactly_the_restored_checkpoint() -> Result<()> {
        let tmp = tempdir()?;
        let dir = tmp.path().join("out");
        let original = ExactlyOnceJsonLinesSink::<Row>::new(&dir)?;
        let mut a = original.clone();
        let mut b = original.clone();
        let committer = committer_of(&original)?;
        // Checkpoint 1: both writers, committed.
        a.write_batch(batch(&rows(0..3)))?;
        b.write_batch(batch(&rows(10..12)))?;
        let mut txns1: Vec<Vec<u8>> = Vec::new();
        txns1.extend(a.pre_commit(1)?);
        txns1.extend(b.pre_commit(1)?);
        check(txns1.len() == 2, "two transactions")?;
        for t in &txns1 {
            committer.commit(t)?;
        }
        // Checkpoint 2 pre-committed but never completed, then more records
        // in progress: the crash.
        a.write_batch(batch(&rows(3..6)))?;
        let txn2 = a.pre_commit(2)?.ok_or_else(|| Error::user("no txn 2"))?;
        a.write_batch(batch(&rows(6..8)))?;
        b.write_batch(batch(&rows(12..14)))?;
        check(hidden_files(&dir)?.len() == 3, "pending + two in progress")?;
        drop((a, b, original));

        // Restore from checkpoint 1: a new sink object and committer.
        let restored = ExactlyOnceJsonLinesSink::<Row>::new(&dir)?;
        let committer = committer_of(&restored)?;
        committer.abort_uncommitted(1, &txns1)?;
        for t in &txns1 {
            committer.commit(t)?;
            committer.commit(t)?;
        }
        check(hidden_files(&dir)?.is_empty(), "leftovers gone")?;
        let mut visible = read_committed::<Row>(&dir)?;
        visible.sort_by_key(|r| r.key);
        let mut expected = rows(0..3);
        expected.extend(rows(10..12));
        check(visible == expected, "exactly checkpoint 1")?;
        // The aborted transaction cannot be committed; the error names the file.
        let err = committer.commit(&txn2).err().map(|e| e.to_string());
        check(
            err.is_some_and(|e| e.contains(".part-0000000002-") && e.contains("missing")),
            "missing pending file named",
        )?;

        // The restored job continues with checkpoint 2 without collisions.
        let mut c = restored.clone();
        c.write_batch(batch(&rows(3..8)))?;
        let t = c.pre_commit(2)?.ok_or_else(|| Error::user("no txn"))?;
        committer.commit(&t)?;
        let mut visible = read_committed::<Row>(&dir)?;
        visible.sort_by_key(|r| r.key);
        let mut expected = rows(0..8);
        expected.extend(rows(10..12));
        check(visible == expected, "restored run appends")?;
        Ok(())
    }

    #[test]
    fn abort_keeps_pending_of_the_restored_checkpoint() -> Result<()> {
        let tmp = tempdir()?;
        let mut sink = ExactlyOnceCsvSink::<Row>::new(tmp.path())?.clone();
        sink.write_batch(batch(&rows(0..2)))?;
        // Pre-committed, crash before the commit.
        let txn = sink.pre_commit(5)?.ok_or_else(|| Error::user("no txn"))?;
        drop(sink);
        let committer = committer_of(&ExactlyOnceCsvSink::<Row>::new(tmp.path())?)?;
        committer.abort_uncommitted(0, std::slice::from_ref(&txn))?;
        check(hidden_files(tmp.path())?.len() == 1, "pending kept")?;
        committer.commit(&txn)?;
        check(
            read_committed::<Row>(tmp.path())? == rows(0..2),
            "committed",
        )?;
        Ok(())
    }

    #[test]
    fn commit_of_a_missing_transaction_names_the_file() -> Result<()> {
        let tmp = tempdir()?;
        let sink = ExactlyOnceCsvSink::<Row>::new(tmp.path())?;
        let committer = committer_of(&sink)?;
        let txn = serde_json::to_vec(&Transaction {
            pending: pending_name(7, 3),
            committed: committed_name(7, 3, "csv"),
        })
        .map_err(|e| Error::user(e.to_string()))?;
        let err = committer.commit(&txn).err().map(|e| e.to_string());
        check(
            err.as_deref().is_some_and(|e| {
                e.contains(".part-0000000007-0003.pending")
                    && e.contains("part-0000000007-0003.csv")
            }),
            "error names the files",
        )?;
        let bad = committer.commit(b"{\"pending\":\"../x\",\"committed\":\"part-1-1.csv\"}");
        check(bad.is_err(), "path outside the directory rejected")?;
        check(committer.commit(b"garbage").is_err(), "garbage rejected")
    }

    #[test]
    fn records_without_field_names_read_back_complete() -> Result<()> {
        // Tuples and numbers have no field names: the part still gets a
        // header row, so reading it back (first row = header) loses nothing.
        let tmp = tempdir()?;
        let sink = ExactlyOnceCsvSink::<(u32, i64)>::new(tmp.path())?;
        let committer = sink
            .committer()
            .ok_or_else(|| Error::user("an exactly-once sink has a committer"))?;
        let mut w = sink.clone();
        let tuples: Vec<(u32, i64)> = (0..5).map(|i| (i, i64::from(i) * 10)).collect();
        w.write_batch(tuples.iter().map(|t| Record::untimed(*t)).collect())?;
        let t = w.pre_commit(1)?.ok_or_else(|| Error::user("no txn"))?;
        committer.commit(&t)?;
        let parts = committed_files(tmp.path())?;
        let text = std::fs::read_to_string(&parts[0]).map_err(|e| Error::user(e.to_string()))?;
        check(
            text.starts_with("field_0,field_1\n0,0\n"),
            "positional header",
        )?;
        check(
            read_committed::<(u32, i64)>(tmp.path())? == tuples,
            "every tuple back",
        )
    }

    #[test]
    fn read_committed_in_checkpoint_order() -> Result<()> {
        let tmp = tempdir()?;
        let sink = ExactlyOnceCsvSink::<Row>::new(tmp.path())?;
        let committer = committer_of(&sink)?;
        let mut w = sink.clone();
        for (checkpoint, range) in [(1, 0..4), (2, 4..5), (3, 5..9)] {
            w.write_batch(batch(&rows(range)))?;
            let t = w
                .pre_commit(checkpoint)?
                .ok_or_else(|| Error::user("no txn"))?;
            committer.commit(&t)?;
        }
        // A file that is not a part is ignored.
        std::fs::write(tmp.path().join("summary.csv"), "key,name\n99,x\n")
            .map_err(|e| Error::user(e.to_string()))?;
        check(committed_files(tmp.path())?.len() == 3, "three parts")?;
        check(
            read_committed::<Row>(tmp.path())? == rows(0..9),
            "exact order",
        )?;
        w.finish()
    }

    #[test]
    fn parquet_parts_read_back() -> Result<()> {
        let tmp = tempdir()?;
        let sink = ExactlyOnceParquetSink::<Row>::new(tmp.path())?;
        let committer = committer_of(&sink)?;
        let mut w = sink.clone();
        w.write_batch(batch(&rows(0..3)))?;
        let t = w.pre_commit(1)?.ok_or_else(|| Error::user("no txn"))?;
        committer.commit(&t)?;
        check(
            read_committed::<Row>(tmp.path())? == rows(0..3),
            "parquet rows",
        )
    }

    #[test]
    fn new_job_refuses_a_directory_with_committed_parts() -> Result<()> {
        let tmp = tempdir()?;
        let mut first = ExactlyOnceCsvSink::<Row>::new(tmp.path())?.clone();
        first.write_batch(batch(&rows(0..1)))?;
        let t = first.pre_commit(1)?.ok_or_else(|| Error::user("no txn"))?;
        committer_of(&first)?.commit(&t)?;
        let mut second = ExactlyOnceCsvSink::<Row>::new(tmp.path())?.clone();
        let err = second
            .write_batch(batch(&rows(0..1)))
            .err()
            .map(|e| e.to_string());
        check(
            err.is_some_and(|e| e.contains("part-0000000001-") && e.contains("empty directory")),
            "refused with the file named",
        )
    }

    #[test]
    fn finish_with_unpre_committed_records_is_an_error() -> Result<()> {
        let tmp = tempdir()?;
        let mut sink = ExactlyOnceCsvSink::<Row>::new(tmp.path())?.clone();
        sink.write_batch(batch(&rows(0..1)))?;
        check(sink.finish().is_err(), "records would be lost")
    }

    #[test]
    fn writers_never_share_a_file() -> Result<()> {
        let tmp = tempdir()?;
        let sink = ExactlyOnceCsvSink::<Row>::new(tmp.path())?;
        let mut writers: Vec<_> = (0..4).map(|_| sink.clone()).collect();
        for (i, w) in (0_i64..).zip(writers.iter_mut()) {
            w.write_batch(batch(&rows(i * 10..i * 10 + 2)))?;
        }
        let committer = committer_of(&sink)?;
        for w in &mut writers {
            let t = w.pre_commit(1)?.ok_or_else(|| Error::user("no txn"))?;
            committer.commit(&t)?;
        }
        check(
            committed_files(tmp.path())?.len() == 4,
            "one part per writer",
        )?;
        check(read_committed::<Row>(tmp.path())?.len() == 8, "all records")
    }
}
