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
//!    snapshot and reads every table through a cursor, `snapshot_chunk`
//!    rows at a time (memory stays bounded by the chunk and the channel),
//!    as [`ChangeOp::Read`] changes;
//! 4. starts streaming at the slot's consistent point, which is exactly
//!    where the snapshot stands: no change is missed or read twice.
//!
//! # Positions and exactly-once
//!
//! A position is `(resume LSN, changes to skip)`: the end LSN of the last
//! transaction read whole, and how many changes of the next one were
//! emitted. Checkpoints record it. The slot's confirmed LSN is advanced to
//! a checkpoint's resume LSN only in [`Source::notify_checkpoint_complete`],
//! so the server keeps all WAL a restore may need. A restore starts
//! streaming at the resume LSN (the server skips transactions that
//! committed before it) and skips the changes already emitted of the first
//! transaction: together with the engine's exactly-once sinks, every change
//! is delivered once. A restore from a checkpoint older than the slot's
//! confirmed LSN (the WAL is gone) is refused, naming both positions.
//! While the published tables are idle, keepalives move the position (and
//! so, after a checkpoint, the slot) forward, so the server does not keep
//! WAL of other tables' traffic for it.
//!
//! Limit: a checkpoint taken during the initial snapshot cannot be resumed
//! (the exported snapshot ends with the session that made it); a restore
//! from one is refused with a message saying so. Restart such a job
//! without the checkpoint: it takes a new snapshot.
//!
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
//!   one (a schema change) is counted in [`CdcMetrics::schema_changes`];
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
//!   for a moment: the reader waits up to 30 s for it to be released.
//! - The connection breaks or the server restarts: the reader fails, and
//!   with it the job, which restarts from its last checkpoint by its
//!   restart strategy.
//! - The job is stopped for long: the slot keeps WAL on the server
//!   (`pg_replication_slots`); watch [`CdcMetrics::slot_lag_bytes`], or
//!   drop the slot of a job that will not come back.
//! - The slot is dropped behind the job's back: a restore is refused
//!   ("slot ... does not exist"): the WAL since the checkpoint is gone.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use serde::de::DeserializeOwned;
use tideline_engine::{
    Data, Error, ReaderContext, Record, Rejected, Result, Source, SourceOffset, SourceOutput,
    SourceReader, SourceStatus,
};
use tideline_operators::changelog::{Change, ChangeOp};
use tokio::sync::mpsc;

use crate::connect::{quote_ident, quote_literal, split_table, table_columns, ConnectionSettings};
use crate::pgoutput::{self, format_lsn, parse_lsn, Datum, Message, OldRow, Relation};
use crate::row::{decode_key_row, decode_row, render_row, text_datums};

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
type EventTimeFn<T> = Arc<dyn Fn(&Change<T>) -> i64 + Send + Sync>;

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
struct Settings {
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
struct SharedState {
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
    /// transaction that committed before `lsn` (e.g. `pg_current_wal_lsn()`
    /// read when the history to replay was written).
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
    /// `pg_logical_emit_message` or `pg_current_wal_lsn()` returned).
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
struct CdcMetricsInner {
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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        Duration::from_micros(u64::try_from(now.saturating_sub(last)).unwrap_or(0))
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
    /// row count (`pg_class.reltuples`).
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

/// Where the reader stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// In the initial snapshot, which a restore cannot resume.
    Snapshot { consistent_point: u64, rows: u64 },
    /// Streaming: after the transaction ending at `resume` and `skip`
    /// changes of the next.
    Stream { resume: u64, skip: u64 },
}

const SNAPSHOT_TAG: u64 = 0;
const STREAM_TAG: u64 = 1;

impl Position {
    fn to_offset(self) -> SourceOffset {
        match self {
            Position::Snapshot {
                consistent_point,
                rows,
            } => SourceOffset(vec![SNAPSHOT_TAG, consistent_point, rows]),
            Position::Stream { resume, skip } => SourceOffset(vec![STREAM_TAG, resume, skip]),
        }
    }

    fn from_offset(offset: &SourceOffset, source: &str) -> Result<Self> {
        match offset.0.as_slice() {
            &[STREAM_TAG, resume, skip] => Ok(Position::Stream { resume, skip }),
            &[SNAPSHOT_TAG, consistent_point, rows] => Ok(Position::Snapshot {
                consistent_point,
                rows,
            }),
            other => Err(Error::config(
                format!("source '{source}'.offset"),
                format!("{other:?} is not a position of a PostgreSQL CDC source"),
            )),
        }
    }
}

/// What the reader's thread sends the task thread.
enum Event<T> {
    /// Changes (or dead letters), each with the position after it.
    Items(Vec<(Item<T>, Position)>),
    /// Nothing to emit, but the position moved (a transaction without
    /// changes of ours, a keepalive, the snapshot's end).
    Moved(Position),
    /// The bound was reached.
    End,
    /// The thread failed.
    Failed(Error),
}

enum Item<T> {
    Change(Record<Change<T>>),
    Rejected(Rejected),
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
        if let Position::Snapshot { rows, .. } = position {
            return Err(Error::config(
                format!("source '{}'.offset", self.settings.name),
                format!(
                    "the checkpoint was taken during the initial snapshot ({rows} rows read), \
                     which cannot be resumed: its exported snapshot ended with the session \
                     that made it. Start the job without this checkpoint: it takes a new \
                     snapshot"
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
        let (sender, receiver) = mpsc::channel(64);
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
            .spawn(move || pump.run(start))
            .map_err(|e| Error::Internal(format!("cannot start the replication thread: {e}")))?;
        let position = start.unwrap_or(Position::Stream { resume: 0, skip: 0 });
        Ok(CdcReader {
            receiver,
            pending: VecDeque::new(),
            position: if start.is_some() {
                Some(position)
            } else {
                None
            },
            ended: false,
            stop,
            thread: Some(thread),
            shared: Arc::clone(&self.shared),
        })
    }
}

/// The task thread's side: drains the channel into the engine's batches.
struct CdcReader<T> {
    receiver: mpsc::Receiver<Event<T>>,
    /// Items of a batch that did not fit the engine's last batch.
    pending: VecDeque<(Item<T>, Position)>,
    /// After the last item emitted; `None` before anything is known.
    position: Option<Position>,
    ended: bool,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    shared: Arc<SharedState>,
}

impl<T> CdcReader<T> {
    fn set_position(&mut self, position: Position) {
        self.position = Some(position);
        if let Position::Stream { resume, .. } = position {
            self.shared
                .metrics
                .position
                .store(resume, Ordering::Relaxed);
        }
    }
}

impl<T: Data> SourceReader<Change<T>> for CdcReader<T> {
    fn poll(&mut self, out: &mut SourceOutput<Change<T>>) -> Result<SourceStatus> {
        loop {
            while out.remaining() > 0 {
                let Some((item, position)) = self.pending.pop_front() else {
                    break;
                };
                match item {
                    Item::Change(record) => out.push(record),
                    Item::Rejected(rejected) => out.reject(rejected),
                }
                self.set_position(position);
            }
            if out.remaining() == 0 {
                return Ok(SourceStatus::Ready);
            }
            if self.ended {
                return Ok(SourceStatus::Finished);
            }
            match self.receiver.try_recv() {
                Ok(Event::Items(items)) => self.pending.extend(items),
                Ok(Event::Moved(position)) => self.set_position(position),
                Ok(Event::End) => self.ended = true,
                Ok(Event::Failed(error)) => return Err(error),
                Err(mpsc::error::TryRecvError::Empty) => {
                    return Ok(if out.is_empty() {
                        SourceStatus::Pending
                    } else {
                        SourceStatus::Ready
                    });
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err(Error::Internal(
                        "the replication thread ended without saying why".into(),
                    ));
                }
            }
        }
    }

    fn offset(&self) -> Option<SourceOffset> {
        self.position.map(Position::to_offset)
    }
}

impl<T> Drop for CdcReader<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Unblocks a thread waiting for channel space.
        self.receiver.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How many changes go to the task thread at a time (at most).
const BATCH: usize = 512;

/// The reader's thread: connections, snapshot, stream, decoding.
struct Pump<T> {
    settings: Settings,
    event_time: EventTimeFn<T>,
    shared: Arc<SharedState>,
    sender: mpsc::Sender<Event<T>>,
    stop: Arc<AtomicBool>,
    relations: HashMap<u32, Relation>,
}

/// The transaction being read.
struct Transaction {
    xid: u32,
    commit_lsn: u64,
    commit_time: i64,
    /// Changes of it seen so far (emitted, rejected or skipped).
    seen: u64,
}

impl<T: Data + DeserializeOwned> Pump<T> {
    fn run(mut self, start: Option<Position>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = self
                    .sender
                    .blocking_send(Event::Failed(Error::Internal(format!(
                        "cannot start a tokio runtime: {e}"
                    ))));
                return;
            }
        };
        let sender = self.sender.clone();
        let result = runtime.block_on(self.read(start));
        if let Err(error) = result {
            let _ = sender.blocking_send(Event::Failed(error));
        }
    }

    fn system(&self) -> String {
        self.settings.connection.system()
    }

    fn external(
        &self,
        action: impl Into<String>,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::external(self.system(), action, e)
    }

    /// Sends `event`; `false` when the reader is gone.
    async fn send(&self, event: Event<T>) -> bool {
        self.sender.send(event).await.is_ok()
    }

    async fn read(&mut self, start: Option<Position>) -> Result<()> {
        let sql = self.settings.connection.connect().await?;
        self.ensure_publication(&sql).await?;
        let slot = self.slot_state(&sql).await?;
        let slot_name = self.settings.slot.clone();
        let (mut client, skip) = match (start, slot) {
            (Some(Position::Stream { resume, skip }), Some(slot)) => {
                if resume < slot.confirmed {
                    return Err(Error::config(
                        format!("source '{}'.offset", self.settings.name),
                        format!(
                            "the checkpoint resumes at LSN {} but slot {slot_name} was already \
                             confirmed up to {}: the WAL in between is gone (restore from the \
                             latest checkpoint)",
                            format_lsn(resume),
                            format_lsn(slot.confirmed)
                        ),
                    ));
                }
                self.wait_until_released(&sql).await?;
                (self.start_stream(resume).await?, skip)
            }
            (Some(Position::Stream { .. }), None) => {
                return Err(Error::config(
                    format!("source '{}'.offset", self.settings.name),
                    format!(
                        "replication slot {slot_name} does not exist: it was dropped, and the \
                         WAL since the checkpoint with it; start the job without the checkpoint"
                    ),
                ));
            }
            (Some(Position::Snapshot { .. }), _) => {
                return Err(Error::Internal(
                    "a snapshot position reached the reader".into(),
                ));
            }
            (None, slot) => match self.settings.snapshot {
                SnapshotMode::Never => {
                    let resume = match slot {
                        Some(slot) => {
                            self.wait_until_released(&sql).await?;
                            slot.confirmed
                        }
                        None => self.create_slot_without_snapshot(&sql).await?,
                    };
                    self.moved(Position::Stream { resume, skip: 0 }).await;
                    (self.start_stream(resume).await?, 0)
                }
                SnapshotMode::Initial => {
                    if slot.is_some() {
                        self.wait_until_released(&sql).await?;
                        sql.execute("SELECT pg_drop_replication_slot($1)", &[&slot_name])
                            .await
                            .map_err(|e| self.external(format!("drop slot {slot_name}"), e))?;
                    }
                    let resume = self.snapshot(&sql).await?;
                    (self.start_stream(resume).await?, 0)
                }
            },
        };
        drop(sql);
        self.stream(&mut client, skip).await
    }

    async fn ensure_publication(&self, sql: &tokio_postgres::Client) -> Result<()> {
        let publication = &self.settings.publication;
        let exists = sql
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[publication],
            )
            .await
            .map_err(|e| self.external("look up the publication", e))?
            .is_some();
        if exists {
            return Ok(());
        }
        let tables: Vec<String> = self
            .settings
            .tables
            .iter()
            .map(|(schema, table)| format!("{}.{}", quote_ident(schema), quote_ident(table)))
            .collect();
        let create = format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            quote_ident(publication),
            tables.join(", ")
        );
        match sql.batch_execute(&create).await {
            Ok(()) => Ok(()),
            // Another reader created it in between.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) => {
                Ok(())
            }
            Err(e) => Err(self.external(format!("create publication {publication}"), e)),
        }
    }

    async fn slot_state(&self, sql: &tokio_postgres::Client) -> Result<Option<SlotState>> {
        let row = sql
            .query_opt(
                "SELECT plugin, confirmed_flush_lsn::text, database FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&self.settings.slot],
            )
            .await
            .map_err(|e| self.external("look up the replication slot", e))?;
        let Some(row) = row else { return Ok(None) };
        let plugin: Option<String> = row.get(0);
        if plugin.as_deref() != Some("pgoutput") {
            return Err(Error::config(
                "PostgresCdcSource.slot",
                format!(
                    "slot {} exists with plugin {plugin:?}, not pgoutput: it is not this \
                     source's; choose another slot name",
                    self.settings.slot
                ),
            ));
        }
        let confirmed: Option<String> = row.get(1);
        let confirmed = confirmed.as_deref().and_then(parse_lsn).unwrap_or(0);
        self.shared
            .metrics
            .confirmed
            .store(confirmed, Ordering::Relaxed);
        Ok(Some(SlotState { confirmed }))
    }

    /// Waits until no session holds the slot (a crashed run's session may,
    /// until the server notices it is gone).
    async fn wait_until_released(&self, sql: &tokio_postgres::Client) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let active: Option<bool> = sql
                .query_opt(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                    &[&self.settings.slot],
                )
                .await
                .map_err(|e| self.external("look up the replication slot", e))?
                .map(|row| row.get(0));
            if active != Some(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.external(
                    format!("acquire replication slot {}", self.settings.slot),
                    "another session has held it for 30 s (another job with the same slot?)",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn create_slot_without_snapshot(&self, sql: &tokio_postgres::Client) -> Result<u64> {
        let row = sql
            .query_one(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&self.settings.slot],
            )
            .await
            .map_err(|e| self.external(format!("create slot {}", self.settings.slot), e))?;
        let lsn: String = row.get(0);
        Ok(parse_lsn(&lsn).unwrap_or(0))
    }

    /// Creates the slot with an exported snapshot and reads every table in
    /// it; returns the slot's consistent point.
    async fn snapshot(&mut self, sql: &tokio_postgres::Client) -> Result<u64> {
        let slot = self.settings.slot.clone();
        let config = self
            .settings
            .connection
            .replication(&slot, &self.settings.publication);
        let mut session = ReplicationClient::connect_gated(config)
            .await
            .map_err(|e| self.external("open a replication session", e))?;
        let rows = session
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                quote_ident(&slot)
            ))
            .await
            .map_err(|e| self.external(format!("create slot {slot}"), e))?;
        let text = |i: usize| -> Option<String> {
            rows.first()
                .and_then(|row| row.get(i).cloned().flatten())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let consistent_point = text(1).as_deref().and_then(parse_lsn).ok_or_else(|| {
            self.external(
                format!("create slot {slot}"),
                "no consistent point in the answer",
            )
        })?;
        let snapshot_name = text(2).ok_or_else(|| {
            self.external(
                format!("create slot {slot}"),
                "no exported snapshot in the answer",
            )
        })?;
        sql.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(&snapshot_name)
        ))
        .await
        .map_err(|e| self.external("open the snapshot transaction", e))?;
        // The snapshot is imported: the exporting session may go (it has
        // to run no other command while the snapshot is in use).
        drop(session);
        let snapshot_time = now_micros();
        self.estimate_rows(sql).await;
        let mut rows_read = 0;
        let tables = self.settings.tables.clone();
        for (schema, table) in &tables {
            rows_read = self
                .snapshot_table(
                    sql,
                    schema,
                    table,
                    consistent_point,
                    snapshot_time,
                    rows_read,
                )
                .await?;
        }
        sql.batch_execute("COMMIT")
            .await
            .map_err(|e| self.external("end the snapshot transaction", e))?;
        self.shared
            .metrics
            .snapshot_done
            .store(true, Ordering::Relaxed);
        self.moved(Position::Stream {
            resume: consistent_point,
            skip: 0,
        })
        .await;
        Ok(consistent_point)
    }

    async fn estimate_rows(&self, sql: &tokio_postgres::Client) {
        let mut estimate = 0u64;
        for (schema, table) in &self.settings.tables {
            let name = format!("{}.{}", quote_ident(schema), quote_ident(table));
            if let Ok(row) = sql
                .query_one(
                    "SELECT reltuples::float8 FROM pg_class WHERE oid = $1::text::regclass",
                    &[&name],
                )
                .await
            {
                let tuples: f64 = row.get(0);
                estimate += tuples.max(0.0) as u64;
            }
        }
        self.shared
            .metrics
            .snapshot_rows_estimate
            .store(estimate, Ordering::Relaxed);
    }

    async fn snapshot_table(
        &mut self,
        sql: &tokio_postgres::Client,
        schema: &str,
        table: &str,
        consistent_point: u64,
        snapshot_time: i64,
        mut rows_read: u64,
    ) -> Result<u64> {
        let qualified = format!("{}.{}", quote_ident(schema), quote_ident(table));
        let columns = table_columns(sql, schema, table)
            .await
            .map_err(|e| self.external(format!("read the columns of {schema}.{table}"), e))?
            .into_iter()
            .map(|c| c.column)
            .collect::<Vec<_>>();
        let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        sql.batch_execute(&format!(
            "DECLARE tideline_snapshot NO SCROLL CURSOR FOR SELECT {} FROM {qualified}",
            names.join(", ")
        ))
        .await
        .map_err(|e| self.external(format!("read {schema}.{table}"), e))?;
        let fetch = format!(
            "FETCH {} FROM tideline_snapshot",
            self.settings.snapshot_chunk
        );
        let table_name = format!("{schema}.{table}");
        loop {
            let messages = sql
                .simple_query(&fetch)
                .await
                .map_err(|e| self.external(format!("read {table_name}"), e))?;
            let mut items = Vec::with_capacity(messages.len());
            for message in &messages {
                let tokio_postgres::SimpleQueryMessage::Row(row) = message else {
                    continue;
                };
                let values = text_datums((0..row.len()).map(|i| row.get(i)));
                rows_read += 1;
                let position = Position::Snapshot {
                    consistent_point,
                    rows: rows_read,
                };
                let change = decode_row::<T>(&columns, &values).map(|after| Change {
                    op: ChangeOp::Read,
                    before: None,
                    after: Some(after),
                    table: table_name.clone(),
                    lsn: 0,
                    commit_time: snapshot_time,
                    tx_id: 0,
                });
                let item = match change {
                    Ok(change) => self.record(change),
                    Err(e) => Item::Rejected(Rejected {
                        reason: format!("cannot decode a row of {table_name}: {e}"),
                        record: render_row(&columns, &values),
                        offset: Some(format!("{table_name} snapshot row {rows_read}")),
                    }),
                };
                items.push((item, position));
            }
            self.shared
                .metrics
                .snapshot_rows
                .store(rows_read, Ordering::Relaxed);
            let done = items.len() < self.settings.snapshot_chunk;
            if !items.is_empty() && !self.send(Event::Items(items)).await {
                return Err(Error::Cancelled);
            }
            if done {
                break;
            }
        }
        sql.batch_execute("CLOSE tideline_snapshot")
            .await
            .map_err(|e| self.external(format!("read {table_name}"), e))?;
        Ok(rows_read)
    }

    fn record(&self, change: Change<T>) -> Item<T> {
        let at = (self.event_time)(&change);
        Item::Change(Record::new(at, change))
    }

    async fn moved(&self, position: Position) {
        let _ = self.send(Event::Moved(position)).await;
    }

    async fn start_stream(&self, resume: u64) -> Result<ReplicationClient> {
        let config = self
            .settings
            .connection
            .replication(&self.settings.slot, &self.settings.publication)
            .with_start_lsn(Lsn::from_u64(resume));
        let mut client = ReplicationClient::connect(config)
            .await
            .map_err(|e| self.external("open a replication session", e))?;
        client.wait_started().await.map_err(|e| {
            self.external(
                format!("start replication on slot {}", self.settings.slot),
                e,
            )
        })?;
        Ok(client)
    }

    /// Streams changes until the bound, the reader's end, or a failure.
    async fn stream(&mut self, client: &mut ReplicationClient, mut skip: u64) -> Result<()> {
        let mut transaction: Option<Transaction> = None;
        let mut batch: Vec<(Item<T>, Position)> = Vec::new();
        let mut resume = match self.shared.metrics.position.load(Ordering::Relaxed) {
            0 => None,
            lsn => Some(lsn),
        };
        let mut confirmed_sent = 0u64;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let confirmable = self.shared.confirmable.load(Ordering::SeqCst);
            if confirmable > confirmed_sent {
                client.update_applied_lsn(Lsn::from_u64(confirmable));
                self.shared
                    .metrics
                    .confirmed
                    .fetch_max(confirmable, Ordering::Relaxed);
                confirmed_sent = confirmable;
            }
            let event =
                match tokio::time::timeout(Duration::from_millis(200), client.recv()).await {
                    Err(_elapsed) => {
                        // A bound set after the stream went quiet.
                        if transaction.is_none() && resume.is_some_and(|r| self.reached_bound(r)) {
                            let _ = self.send(Event::End).await;
                            return Ok(());
                        }
                        continue;
                    }
                    Ok(Ok(Some(event))) => event,
                    Ok(Ok(None)) => {
                        return Err(self
                            .external("stream changes", "the server ended the replication stream"))
                    }
                    Ok(Err(e)) => return Err(self.external("stream changes", e)),
                };
            match event {
                ReplicationEvent::Begin {
                    final_lsn,
                    xid,
                    commit_time_micros,
                } => {
                    transaction = Some(Transaction {
                        xid,
                        commit_lsn: final_lsn.as_u64(),
                        commit_time: pgoutput::pg_to_unix_micros(commit_time_micros),
                        seen: 0,
                    });
                }
                ReplicationEvent::XLogData { data, wal_end, .. } => {
                    self.shared
                        .metrics
                        .server_wal_end
                        .fetch_max(wal_end.as_u64(), Ordering::Relaxed);
                    let Some(tx) = transaction.as_mut() else {
                        // Relation messages may come outside a transaction.
                        self.decode(&data, None, &mut batch, resume.unwrap_or(0))?;
                        continue;
                    };
                    self.decode(
                        &data,
                        Some((tx, &mut skip)),
                        &mut batch,
                        resume.unwrap_or(0),
                    )?;
                    if batch.len() >= BATCH
                        && !self.send(Event::Items(std::mem::take(&mut batch))).await
                    {
                        return Ok(());
                    }
                }
                ReplicationEvent::Commit {
                    end_lsn,
                    commit_time_micros,
                    ..
                } => {
                    transaction = None;
                    skip = 0;
                    let end = end_lsn.as_u64();
                    resume = Some(end);
                    self.shared.metrics.last_commit_time.store(
                        pgoutput::pg_to_unix_micros(commit_time_micros),
                        Ordering::Relaxed,
                    );
                    self.shared
                        .metrics
                        .server_wal_end
                        .fetch_max(end, Ordering::Relaxed);
                    let position = Position::Stream {
                        resume: end,
                        skip: 0,
                    };
                    if !batch.is_empty() {
                        // The last change of the transaction carries the
                        // position after the whole transaction.
                        if let Some(last) = batch.last_mut() {
                            last.1 = position;
                        }
                        if !self.send(Event::Items(std::mem::take(&mut batch))).await {
                            return Ok(());
                        }
                    } else if !self.send(Event::Moved(position)).await {
                        return Ok(());
                    }
                    if self.reached_bound(end) {
                        let _ = self.send(Event::End).await;
                        return Ok(());
                    }
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    let end = wal_end.as_u64();
                    self.shared
                        .metrics
                        .server_wal_end
                        .fetch_max(end, Ordering::Relaxed);
                    if transaction.is_none() && resume.is_none_or(|r| end > r) {
                        resume = Some(end);
                        if !self
                            .send(Event::Moved(Position::Stream {
                                resume: end,
                                skip: 0,
                            }))
                            .await
                        {
                            return Ok(());
                        }
                        if self.reached_bound(end) {
                            let _ = self.send(Event::End).await;
                            return Ok(());
                        }
                    }
                }
                ReplicationEvent::Message { .. } => {}
                ReplicationEvent::StoppedAt { .. } => {
                    let _ = self.send(Event::End).await;
                    return Ok(());
                }
            }
        }
    }

    fn reached_bound(&self, end: u64) -> bool {
        self.settings.bounded && end >= self.shared.until.load(Ordering::SeqCst)
    }

    /// Decodes one message; changes go into `batch`. `tx` is the open
    /// transaction and the number of its changes still to skip.
    fn decode(
        &mut self,
        data: &Bytes,
        tx: Option<(&mut Transaction, &mut u64)>,
        batch: &mut Vec<(Item<T>, Position)>,
        resume: u64,
    ) -> Result<()> {
        let message = pgoutput::decode(data).map_err(|e| self.external("decode the stream", e))?;
        let (relation_oid, change) = match message {
            Message::Relation(relation) => {
                self.relation(relation);
                return Ok(());
            }
            Message::Insert { relation, new } => (relation, RawChange::Insert(new)),
            Message::Update { relation, old, new } => (relation, RawChange::Update(old, new)),
            Message::Delete { relation, old } => (relation, RawChange::Delete(old)),
            Message::Truncate { relations, .. } => (0, RawChange::Truncate(relations)),
            Message::Begin { .. } | Message::Commit { .. } | Message::Other(_) => return Ok(()),
        };
        let Some((tx, skip)) = tx else {
            return Err(self.external("decode the stream", "a change outside a transaction"));
        };
        tx.seen += 1;
        let position = Position::Stream {
            resume,
            skip: tx.seen,
        };
        if *skip > 0 {
            // Emitted before the checkpoint this run restored from.
            *skip -= 1;
            return Ok(());
        }
        let at = format!(
            "lsn {} tx {} change {}",
            format_lsn(tx.commit_lsn),
            tx.xid,
            tx.seen
        );
        if let RawChange::Truncate(oids) = change {
            for oid in oids {
                let table = self
                    .relations
                    .get(&oid)
                    .map_or_else(|| format!("relation {oid}"), Relation::qualified_name);
                self.shared
                    .metrics
                    .truncates
                    .fetch_add(1, Ordering::Relaxed);
                batch.push((
                    Item::Rejected(Rejected {
                        reason: format!(
                            "TRUNCATE of {table}: all its rows were removed without a delete \
                             per row, which a change stream cannot carry"
                        ),
                        record: format!("TRUNCATE {table}"),
                        offset: Some(at.clone()),
                    }),
                    position,
                ));
            }
            return Ok(());
        }
        let Some(relation) = self.relations.get(&relation_oid) else {
            return Err(self.external(
                "decode the stream",
                format!("a change of relation {relation_oid} before its description"),
            ));
        };
        let table = relation.qualified_name();
        let columns = &relation.columns;
        let decoded = match change {
            RawChange::Insert(new) => {
                decode_row::<T>(columns, &new).map(|after| (ChangeOp::Insert, None, Some(after)))
            }
            RawChange::Update(old, mut new) => {
                if let Some((OldRow::Full, old)) = &old {
                    for (value, old) in new.iter_mut().zip(old) {
                        if *value == Datum::UnchangedToast {
                            *value = old.clone();
                        }
                    }
                }
                let before = match &old {
                    Some((OldRow::Full, old)) => decode_row::<T>(columns, old).map(Some),
                    Some((OldRow::Key, old)) => decode_key_row::<T>(columns, old).map(Some),
                    None => Ok(None),
                };
                before.and_then(|before| {
                    decode_row::<T>(columns, &new)
                        .map(|after| (ChangeOp::Update, before, Some(after)))
                })
            }
            RawChange::Delete((kind, old)) => match kind {
                OldRow::Full => decode_row::<T>(columns, &old),
                OldRow::Key => decode_key_row::<T>(columns, &old),
            }
            .map(|before| (ChangeOp::Delete, Some(before), None)),
            RawChange::Truncate(_) => return Ok(()),
        };
        let item = match decoded {
            Ok((op, before, after)) => self.record(Change {
                op,
                before,
                after,
                table,
                lsn: tx.commit_lsn,
                commit_time: tx.commit_time,
                tx_id: tx.xid,
            }),
            Err(e) => Item::Rejected(Rejected {
                reason: format!("cannot decode a change of {table}: {e}"),
                record: format!("{table} change"),
                offset: Some(at),
            }),
        };
        batch.push((item, position));
        Ok(())
    }

    fn relation(&mut self, relation: Relation) {
        if let Some(known) = self.relations.get(&relation.oid) {
            if known.columns != relation.columns {
                let describe = |r: &Relation| {
                    r.columns
                        .iter()
                        .map(|c| format!("{} ({})", c.name, c.type_oid))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let change = format!(
                    "the columns of {} changed from [{}] to [{}]",
                    relation.qualified_name(),
                    describe(known),
                    describe(&relation)
                );
                self.shared
                    .metrics
                    .schema_changes
                    .fetch_add(1, Ordering::Relaxed);
                *self
                    .shared
                    .metrics
                    .last_schema_change
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(change);
            }
        }
        self.relations.insert(relation.oid, relation);
    }
}

enum RawChange {
    Insert(Vec<Datum>),
    Update(Option<(OldRow, Vec<Datum>)>, Vec<Datum>),
    Delete((OldRow, Vec<Datum>)),
    Truncate(Vec<u32>),
}

struct SlotState {
    confirmed: u64,
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
