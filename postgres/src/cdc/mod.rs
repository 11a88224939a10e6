//! [`PostgresCdcSource`]: change data capture from PostgreSQL's write-ahead
//! log through logical replication (`pgoutput`), with an initial snapshot.
//!
//! # How it reads
//!
//! The source is one partition: one replication slot is one ordered stream
//! of committed transactions. Its reader runs the connections on a thread
//! of its own (a current-thread tokio runtime) and hands decoded changes
//! to the task thread through a bounded channel, so a slow job holds the
//! stream back (and the server buffers WAL) without blocking the
//! replication session: the session keeps answering keepalives and
//! sending status updates while the job is backpressured.
//!
//! A fresh start with [`SnapshotMode::Initial`]:
//! 1. creates the publication if it is missing (`FOR TABLE` the tables);
//! 2. on a replication session, creates the slot with an exported snapshot
//!    (`CREATE_REPLICATION_SLOT ... LOGICAL pgoutput EXPORT_SNAPSHOT`; a
//!    slot of that name left by an earlier run is dropped first: without a
//!    checkpoint nothing read from it was committed);
//! 3. on a SQL connection, opens a `REPEATABLE READ` transaction on that
//!    snapshot and reads every table through a cursor in primary-key
//!    order (a table without a primary key the reader can order by, see
//!    "Resuming a snapshot", unordered), `snapshot_chunk` rows at a time (memory stays bounded by the
//!    chunk and the channel), as [`ChangeOp::Read`](tideline_operators::changelog::ChangeOp::Read) changes;
//! 4. starts streaming at the slot's consistent point, which is exactly
//!    where the snapshot stands: no change is missed or read twice.
//!
//! The publication must exist before the slot: the server decodes the
//! log with the catalog as it was when each change was written, so a
//! publication created after a slot cannot decode the slot's earlier WAL.
//! The source creates both in that order; a publication it would have to
//! create for a slot that already exists is refused with that reason.
//!
//! # Positions and exactly-once
//!
//! A stream position is `(resume LSN, changes to skip)`: the end LSN of
//! the last transaction read whole, and how many changes of the next one
//! were emitted. Checkpoints record it. The slot's confirmed LSN is
//! advanced to a checkpoint's resume LSN only in
//! [`Source::notify_checkpoint_complete`], so the server keeps all WAL a
//! restore may need. A restore starts streaming at the resume LSN (the
//! server skips transactions that committed before it) and skips the
//! changes already emitted of the first transaction: together with the
//! engine's exactly-once sinks, every change is delivered once. A restore
//! from a checkpoint older than the slot's confirmed LSN (the WAL is gone)
//! is refused, naming both positions. While the published tables are
//! idle, keepalives move the position (and so, after a checkpoint, the
//! slot) forward, so the server does not keep WAL of other tables' traffic
//! for it.
//!
//! # Resuming a snapshot
//!
//! A checkpoint taken during the snapshot records how far the copy got:
//! the tables before table `i` whole, and the rows of table `i` up to
//! primary key `k`, all as of a log position `p` (at first the slot's
//! consistent point). The exported snapshot is gone after a crash, so a
//! restore:
//! 1. creates a temporary slot with a new exported snapshot, at a later
//!    point `q`, and opens a transaction on it;
//! 2. streams the job's slot from `p` to `q`, emitting only what touches
//!    the copied rows (an update that moves a row out of them becomes a
//!    delete, one that moves a row in an insert): they are now as of `q`;
//! 3. copies the rest (table `i` after `k`, the tables after `i`) from the
//!    new snapshot, as of `q`;
//! 4. streams on from `q`.
//!
//! A checkpoint during step 2 or 3 records the same shape (copied rows as
//! of a position), so a restore from it works the same way. Keys must
//! order alike in SQL and in the reader: integer, `text`/`varchar`/`name`
//! (ordered `COLLATE "C"`) and `uuid` primary keys do. The resume needs a
//! free replication slot (`max_replication_slots`) for the temporary one,
//! and refuses a checkpoint of other tables or keys than the job's. A snapshot with a
//! table without such a key cannot be resumed: a restore from a checkpoint
//! taken during it is refused with a message saying so (start the job
//! without that checkpoint: it takes a new snapshot).

//! # What a change holds
//!
//! - `after`: the new row (inserts, updates, snapshot reads).
//! - `before`: with `REPLICA IDENTITY FULL`, the whole old row of updates
//!   and deletes. With `DEFAULT` (the primary key), deletes and updates
//!   that change the key carry the old key; the old row's other fields
//!   then hold their type's zero value ([`crate::row::decode_key_row`]),
//!   and updates that keep the key carry no `before`. `NOTHING`: none.
//! - Unchanged TOAST values (large values an update did not touch, which
//!   the server does not send) are taken from the old row when it has
//!   them (`FULL`); otherwise a field that reads one makes the change
//!   undecodable (a dead letter naming the column), never a wrong value.
//!   Structs without a field for the column are not affected.
//! - `TRUNCATE` has no rows: it goes to the dead-letter output, one per
//!   table, so it is never silently ignored, and is counted in
//!   [`CdcMetrics::truncates`].
//! - A `Relation` message whose columns differ from the table's earlier
//!   one in the same session (a schema change while the job runs) is
//!   counted in [`CdcMetrics::schema_changes`];
//!   rows that still decode go on, rows that do not go to the dead-letter
//!   output with the reason.
//!
//! Every change of a transaction carries its commit LSN, commit time and
//! transaction id. Event time is the commit time (in milliseconds) unless
//! [`PostgresCdcSource::event_time`] says otherwise.
//!
//! # Failure analysis
//!
//! - The job crashes: a restore resumes at its checkpoint's position (see
//!   above); the slot, confirmed only up to a completed checkpoint, still
//!   has the WAL. A connection of the crashed process may hold the slot
//!   until the server notices it is gone: the reader waits up to 90 s for
//!   it to be released (longer than the default `wal_sender_timeout`).
//! - The connection breaks or the server restarts: the reader fails, and
//!   with it the job, which restarts from its last checkpoint by its
//!   restart strategy.
//! - The job is stopped for long: the slot keeps WAL on the server
//!   (`pg_replication_slots`); watch [`CdcMetrics::slot_lag_bytes`], or
//!   drop the slot of a job that will not come back.
//! - A bounded job ends before its last checkpoint completes: that
//!   checkpoint confirms the slot at the next run's start (the server keeps
//!   the WAL since the one before until then; nothing is lost).
//! - The slot is dropped behind the job's back: a restore is refused
//!   ("slot ... does not exist"): the WAL since the checkpoint is gone.
//! - The job is backpressured: the channel fills, the reader's thread
//!   waits, and the replication session keeps answering the server's
//!   keepalives and sending status updates, so the server does not drop it
//!   (`wal_sender_timeout`) however long the job is blocked; the server
//!   buffers the stream.
//! - A crash during a snapshot: see "Resuming a snapshot". The temporary
//!   slot of a resume lives only as long as its session.

mod position;
mod pump;
mod reader;
mod snapshot;
mod stream;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tideline_engine::{Data, Error, ReaderContext, Result, Source, SourceOffset, SourceReader};
use tideline_operators::changelog::Change;
use tokio::sync::mpsc;

use crate::connect::{split_table, ConnectionSettings};
use position::Position;
use pump::{Pump, CHANNEL};
use reader::CdcReader;

/// How a fresh start (no checkpoint) begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Read every table in a consistent snapshot first, then stream the
    /// changes after it (the default). Creates the slot, dropping one of
    /// the same name an earlier run left.
    Initial,
    /// Stream only: from the slot's confirmed position when it exists
    /// (changes an earlier run did not confirm are read again), else from
    /// a new slot's start.
    Never,
}

/// Computes a change's event time in milliseconds.
pub(crate) type EventTimeFn<T> = Arc<dyn Fn(&Change<T>) -> i64 + Send + Sync>;

/// Settings of a [`PostgresCdcSource`]; see [`PostgresCdcSource::builder`].
#[derive(Debug, Clone)]
pub struct PostgresCdcBuilder {
    connection: String,
    slot: String,
    tables: Vec<String>,
    publication: Option<String>,
    snapshot: SnapshotMode,
    snapshot_chunk: usize,
    bounded: bool,
    until_lsn: Option<u64>,
    name: String,
}

/// Reads the changes of a set of tables of one PostgreSQL database, in
/// commit order, as [`Change<T>`] records (see the [module docs](self)).
pub struct PostgresCdcSource<T> {
    settings: Settings,
    event_time: EventTimeFn<T>,
    shared: Arc<SharedState>,
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    connection: ConnectionSettings,
    slot: String,
    /// `(schema, table)`.
    tables: Vec<(String, String)>,
    publication: String,
    snapshot: SnapshotMode,
    snapshot_chunk: usize,
    bounded: bool,
    name: String,
}

/// State the source shares with its reader's thread.
#[derive(Debug, Default)]
pub(crate) struct SharedState {
    /// The highest resume LSN of a completed checkpoint: the slot may be
    /// confirmed up to it.
    confirmable: AtomicU64,
    /// Where a bounded source ends ([`NO_BOUND`] until set).
    until: Arc<AtomicU64>,
    metrics: Arc<CdcMetricsInner>,
}

/// [`SharedState::until`] before a bound is set.
const NO_BOUND: u64 = u64::MAX;

impl<T> std::fmt::Debug for PostgresCdcSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCdcSource")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl PostgresCdcSource<()> {
    /// Settings for reading through replication slot `slot` of the
    /// database `connection` names (`host=... port=... user=...
    /// dbname=...` or a `postgresql://` URL). The user needs the
    /// `REPLICATION` attribute, and the server `wal_level = logical`.
    ///
    /// ```no_run
    /// use serde::Deserialize;
    /// use tideline_postgres::PostgresCdcSource;
    ///
    /// #[derive(Clone, Debug, Deserialize)]
    /// struct Order { id: i64, status: String, amount: f64 }
    ///
    /// let orders = PostgresCdcSource::builder("host=db user=cdc dbname=shop", "orders_job")
    ///     .table("public.orders")
    ///     .build::<Order>()?;
    /// # Ok::<(), tideline_engine::Error>(())
    /// ```
    pub fn builder(connection: impl Into<String>, slot: impl Into<String>) -> PostgresCdcBuilder {
        PostgresCdcBuilder {
            connection: connection.into(),
            slot: slot.into(),
            tables: Vec::new(),
            publication: None,
            snapshot: SnapshotMode::Initial,
            snapshot_chunk: 10_000,
            bounded: false,
            until_lsn: None,
            name: "postgres-cdc".into(),
        }
    }
}

impl PostgresCdcBuilder {
    /// Adds a table, as `schema.table` or `table` (in `public`).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.tables.push(table.into());
        self
    }

    /// The publication to stream (default: `<slot>_publication`). Created
    /// `FOR TABLE` the tables when missing; an existing one is used as it
    /// is, so it decides which tables' changes arrive.
    pub fn publication(mut self, publication: impl Into<String>) -> Self {
        self.publication = Some(publication.into());
        self
    }

    /// How a fresh start begins (default [`SnapshotMode::Initial`]).
    pub fn snapshot(mut self, mode: SnapshotMode) -> Self {
        self.snapshot = mode;
        self
    }

    /// Rows the snapshot fetches at a time (default 10,000).
    pub fn snapshot_chunk(mut self, rows: usize) -> Self {
        self.snapshot_chunk = rows.max(1);
        self
    }

    /// Makes the source bounded: it ends once it has read every
    /// transaction that committed before `lsn`. Take `lsn` from
    /// `pg_current_wal_insert_lsn()` or `pg_logical_emit_message(...)` once
    /// the history to replay is written: `pg_current_wal_lsn()` is where
    /// the WAL is *written* to, which can be before the last commit (with
    /// `synchronous_commit = off`), and would leave it out.
    pub fn until_lsn(mut self, lsn: u64) -> Self {
        self.bounded = true;
        self.until_lsn = Some(lsn);
        self
    }

    /// Makes the source bounded, ending where [`CdcBound::set`] says
    /// (see [`PostgresCdcSource::bound`]); until then it streams.
    pub fn bounded(mut self) -> Self {
        self.bounded = true;
        self
    }

    /// The source's name in errors and the job summary.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The source, decoding rows into `T` (column names are field names;
    /// see [`crate::row`] for how values are parsed).
    ///
    /// # Errors
    /// When the connection string does not parse, or no table or an
    /// invalid table or slot name was given.
    pub fn build<T: Data + DeserializeOwned>(self) -> Result<PostgresCdcSource<T>> {
        let connection =
            ConnectionSettings::parse(&self.connection, "PostgresCdcSource.connection")?;
        if self.tables.is_empty() {
            return Err(Error::config(
                "PostgresCdcSource.table",
                "no table to read: add one with .table(\"schema.table\")",
            ));
        }
        let valid_slot = !self.slot.is_empty()
            && self.slot.len() <= 63
            && self
                .slot
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid_slot {
            return Err(Error::config(
                "PostgresCdcSource.slot",
                format!(
                    "{:?} is not a replication slot name (1 to 63 of a-z, 0-9 and _)",
                    self.slot
                ),
            ));
        }
        let tables = self
            .tables
            .iter()
            .map(|t| split_table(t, "PostgresCdcSource.table"))
            .collect::<Result<Vec<_>>>()?;
        let publication = self
            .publication
            .unwrap_or_else(|| format!("{}_publication", self.slot));
        Ok(PostgresCdcSource {
            settings: Settings {
                connection,
                slot: self.slot,
                tables,
                publication,
                snapshot: self.snapshot,
                snapshot_chunk: self.snapshot_chunk,
                bounded: self.bounded,
                name: self.name,
            },
            event_time: Arc::new(|change: &Change<T>| change.commit_time.div_euclid(1000)),
            shared: Arc::new(SharedState {
                confirmable: AtomicU64::new(0),
                until: Arc::new(AtomicU64::new(self.until_lsn.unwrap_or(NO_BOUND))),
                metrics: Arc::default(),
            }),
        })
    }
}

impl<T> PostgresCdcSource<T> {
    /// Computes event time (milliseconds) from each change, instead of its
    /// commit time: e.g. from a column of the row.
    pub fn event_time(mut self, f: impl Fn(&Change<T>) -> i64 + Send + Sync + 'static) -> Self {
        self.event_time = Arc::new(f);
        self
    }

    /// Live figures of the source: lag, snapshot progress, schema changes.
    pub fn metrics(&self) -> CdcMetrics {
        CdcMetrics(Arc::clone(&self.shared.metrics))
    }

    /// Where a [`bounded`](PostgresCdcBuilder::bounded) source ends, to be
    /// set while it runs (e.g. once a writer is done, to the LSN
    /// `pg_logical_emit_message` or `pg_current_wal_insert_lsn()` returned;
    /// see [`PostgresCdcBuilder::until_lsn`]).
    pub fn bound(&self) -> CdcBound {
        CdcBound(Arc::clone(&self.shared.until))
    }
}

/// Sets where a bounded [`PostgresCdcSource`] ends; see
/// [`PostgresCdcSource::bound`].
#[derive(Clone, Debug)]
pub struct CdcBound(Arc<AtomicU64>);

impl CdcBound {
    /// The source ends once it has read every transaction that committed
    /// before `lsn`. A bound already set is lowered only, never raised.
    pub fn set(&self, lsn: u64) {
        self.0.fetch_min(lsn, Ordering::SeqCst);
    }
}

/// Live figures of a [`PostgresCdcSource`]; cheap to clone and read from
/// any thread.
#[derive(Clone, Debug)]
pub struct CdcMetrics(Arc<CdcMetricsInner>);

#[derive(Debug, Default)]
pub(crate) struct CdcMetricsInner {
    server_wal_end: AtomicU64,
    position: AtomicU64,
    confirmed: AtomicU64,
    last_commit_time: AtomicI64,
    snapshot_rows: AtomicU64,
    snapshot_rows_estimate: AtomicU64,
    snapshot_done: AtomicBool,
    schema_changes: AtomicU64,
    truncates: AtomicU64,
    last_schema_change: Mutex<Option<String>>,
}

impl CdcMetrics {
    /// Replication-slot lag in bytes: how far the server's WAL is ahead of
    /// what the job has read.
    pub fn slot_lag_bytes(&self) -> u64 {
        let end = self.0.server_wal_end.load(Ordering::Relaxed);
        end.saturating_sub(self.0.position.load(Ordering::Relaxed))
    }

    /// Replication lag in time: now minus the commit time of the last
    /// transaction read (zero before the first, and while caught up).
    pub fn lag(&self) -> Duration {
        if self.slot_lag_bytes() == 0 {
            return Duration::ZERO;
        }
        let last = self.0.last_commit_time.load(Ordering::Relaxed);
        if last == 0 {
            return Duration::ZERO;
        }
        let behind = crate::connect::now_micros().saturating_sub(last);
        Duration::from_micros(u64::try_from(behind).unwrap_or(0))
    }

    /// The LSN up to which the job has read.
    pub fn position(&self) -> u64 {
        self.0.position.load(Ordering::Relaxed)
    }

    /// The LSN the slot was last confirmed up to (a completed checkpoint's).
    pub fn confirmed_lsn(&self) -> u64 {
        self.0.confirmed.load(Ordering::Relaxed)
    }

    /// Rows read by the initial snapshot so far, and the tables' estimated
    /// row count (`pg_class.reltuples`; tables never analyzed count 0).
    pub fn snapshot_progress(&self) -> (u64, u64) {
        (
            self.0.snapshot_rows.load(Ordering::Relaxed),
            self.0.snapshot_rows_estimate.load(Ordering::Relaxed),
        )
    }

    /// Whether the initial snapshot is complete (or was not taken).
    pub fn snapshot_done(&self) -> bool {
        self.0.snapshot_done.load(Ordering::Relaxed)
    }

    /// How many times a table's columns changed while streaming.
    pub fn schema_changes(&self) -> u64 {
        self.0.schema_changes.load(Ordering::Relaxed)
    }

    /// The last schema change seen, described.
    pub fn last_schema_change(&self) -> Option<String> {
        self.0
            .last_schema_change
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many `TRUNCATE`s of a table were read (each a dead letter).
    pub fn truncates(&self) -> u64 {
        self.0.truncates.load(Ordering::Relaxed)
    }
}

impl<T: Data + DeserializeOwned> Source<Change<T>> for PostgresCdcSource<T> {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn partitions(&self) -> usize {
        1
    }

    fn is_bounded(&self) -> bool {
        self.settings.bounded
    }

    fn create_reader(
        &self,
        _partition: usize,
        _ctx: &ReaderContext,
    ) -> Result<Box<dyn SourceReader<Change<T>>>> {
        Ok(Box::new(self.spawn(None)?))
    }

    fn create_reader_at(
        &self,
        _partition: usize,
        _ctx: &ReaderContext,
        offset: &SourceOffset,
    ) -> Result<Box<dyn SourceReader<Change<T>>>> {
        let position = Position::from_offset(offset, &self.settings.name)?;
        if position == Position::NotStarted {
            return Ok(Box::new(self.spawn(None)?));
        }
        if let Position::UnresumableSnapshot { rows } = position {
            return Err(Error::config(
                format!("source '{}'.offset", self.settings.name),
                format!(
                    "the checkpoint was taken during the initial snapshot ({rows} rows read) \
                     of a table without a primary key the snapshot can order by (integer, \
                     text or uuid columns), which cannot be resumed. Start the job without \
                     this checkpoint: it takes a new snapshot"
                ),
            ));
        }
        Ok(Box::new(self.spawn(Some(position))?))
    }

    fn notify_checkpoint_complete(
        &self,
        _checkpoint: u64,
        offsets: &[(usize, SourceOffset)],
    ) -> Result<()> {
        for (_, offset) in offsets {
            if let Position::Stream { resume, .. } =
                Position::from_offset(offset, &self.settings.name)?
            {
                self.shared.confirmable.fetch_max(resume, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

impl<T: Data + DeserializeOwned> PostgresCdcSource<T> {
    fn spawn(&self, start: Option<Position>) -> Result<CdcReader<T>> {
        // At most CHANNEL × BATCH changes in flight between the threads.
        let (sender, receiver) = mpsc::channel(CHANNEL);
        let stop = Arc::new(AtomicBool::new(false));
        let pump = Pump {
            settings: self.settings.clone(),
            event_time: Arc::clone(&self.event_time),
            shared: Arc::clone(&self.shared),
            sender,
            stop: Arc::clone(&stop),
            relations: HashMap::new(),
        };
        let name = self.settings.name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-replication"))
            .spawn({
                let start = start.clone();
                move || pump.run(start)
            })
            .map_err(|e| Error::Internal(format!("cannot start the replication thread: {e}")))?;
        Ok(CdcReader {
            receiver,
            pending: VecDeque::new(),
            position: start.unwrap_or(Position::NotStarted),
            ended: false,
            stop,
            thread: Some(thread),
            shared: Arc::clone(&self.shared),
        })
    }
}
