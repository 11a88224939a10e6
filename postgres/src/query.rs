//! [`PostgresQuerySource`]: query-based ("batch") change capture, for
//! databases or tables without logical replication.
//!
//! # How it reads
//!
//! The table must have a *cursor* column (`timestamp` or `timestamptz`,
//! e.g. `updated_at`) that every write sets, and *key* columns that are
//! unique and `NOT NULL` (the primary key). The source is one partition.
//! It polls
//!
//! ```sql
//! SELECT (extract(epoch FROM updated_at) * 1000000)::int8, <every column>
//! FROM <table>
//! WHERE updated_at <= <cutoff> AND (updated_at, id) > (<position>)
//! ORDER BY updated_at, id
//! LIMIT <chunk>
//! ```
//!
//! - **Keyset pagination.** The position is the `(cursor, key)` pair of
//!   the last row emitted, and each query continues strictly after it, so
//!   a backlog of any size is read one chunk
//!   ([`PostgresQueryBuilder::chunk_size`]) at a time, in bounded memory,
//!   and rows that share a cursor value are neither skipped nor repeated
//!   at a chunk boundary. An index on `(cursor, key)` lets each query start
//!   where the last one ended instead of sorting the table.
//! - **The cutoff** is `now - safety lag` ([`PostgresQueryBuilder::safety_lag`]),
//!   with `now` taken from the job's processing-time clock
//!   ([`ReaderContext::clock`]), never from the database's `now()`: rows
//!   whose cursor is later than the cutoff wait for a later query. (The
//!   clock must show Unix time, as the system clock does; tests drive a
//!   `ManualClock` set to one.)
//! - **Polling.** A query that returns a full chunk is followed right
//!   away by the next one (a backlog); one that returns less means the
//!   reader has caught up with the cutoff, and the next query waits for
//!   the poll interval ([`PostgresQueryBuilder::poll_interval`], on the job's
//!   clock) after the start of the last one.
//! - **Threading.** The queries run on a thread of the reader's own (a
//!   current-thread tokio runtime with one connection), which also decodes
//!   the rows; the task thread only hands it a request (position, cutoff)
//!   and later takes the answer from a channel, so
//!   [`SourceReader::poll`] never waits for the database, and a slow query
//!   delays neither checkpoint barriers nor the job's other partitions.
//!   (A runtime on the task thread would need a query timeout short enough
//!   not to stall the task, yet a chunk of a large backlog on a table
//!   without the index can take seconds: the timeout would fail healthy
//!   jobs, or be too long to protect the task.) One query is in flight at a time, and the next is sent once every row
//!   of the last one was emitted: at most one chunk is held in memory. All
//!   decisions about time (when to query, the cutoff, when a bounded source
//!   ends) are taken on the task thread from the job's clock, so they are
//!   deterministic under a manual clock.
//!
//! # Positions
//!
//! The offset is the position after the last row emitted (dead letters
//! included): `[0]` before any row, else `[1, cursor µs, number of keys,
//! key...]`, each key `[0, integer]` or `[1, byte length, bytes in
//! big-endian 8-byte words...]` (integer and text keys).
//! [`Source::create_reader_at`] resumes strictly after it. A checkpoint
//! therefore records exactly which rows were read, and with the engine's
//! exactly-once sinks each row version the source can see (see the limits)
//! is delivered once across failures and restores.
//!
//! # What a change holds
//!
//! Every row read becomes [`ChangeOp::Update`] with `after` the row and no
//! `before`: query-based capture sees the current version of a row, not
//! what the write did, so it cannot tell inserts from updates, and every
//! change is an upsert by key (apply it as "insert or replace"). `table` is
//! `schema.name`, `lsn` and `tx_id` are 0 (no log position or transaction
//! is known), `commit_time` is the cursor value (µs since the Unix epoch;
//! for a `timestamp` column, read as UTC), and event time is that value in
//! milliseconds unless [`PostgresQuerySource::event_time`] says otherwise.
//! Rows that do not decode into `T` go to the dead-letter output with the
//! reason, the row as text and its `(cursor, key)`; so do rows whose cursor
//! is `-infinity` (they have no time). Rows with a `NULL` cursor are never
//! read.
//!
//! # Limits
//!
//! These are the limits of the method, not of this implementation; log-based
//! capture ([`PostgresCdcSource`](crate::PostgresCdcSource)) has none of them.
//!
//! - **Deletes are invisible.** A deleted row is simply no longer there.
//!   Use soft deletes (a `deleted_at` or `deleted` column, set together with
//!   the cursor), or log-based capture. `TRUNCATE` is invisible too.
//! - **The cursor must be set on every write, and move forward.** A write
//!   that leaves `updated_at` as it was, or sets it to a value at or before
//!   the source's position, is never read. Set it in the application on
//!   every `INSERT` and `UPDATE`, or with a trigger:
//!   `NEW.updated_at := clock_timestamp()` in a `BEFORE INSERT OR UPDATE`
//!   trigger. Several writes of one row between two polls are read as one
//!   (its latest version): intermediate versions are not seen.
//! - **Late commits and the safety lag.** A row becomes visible when its
//!   transaction commits, which can be well after the cursor value it was
//!   given (`now()` is the *start* of the transaction). Once the source has
//!   read past a cursor value, a row committed later with an earlier value
//!   is behind the position and never read. The safety lag is the defence:
//!   only rows with `cursor <= now - lag` are read, so a row whose
//!   transaction commits less than `lag` after its cursor value is always
//!   read. Size it above the longest write transaction (see
//!   `pg_stat_activity.xact_start`) plus the clock skew between the
//!   database and the job (a database clock behind the job's shrinks the
//!   effective lag by the skew). With lag 0, any concurrency at all can
//!   lose rows; the tests show both cases. The price of the lag is latency:
//!   every change arrives at least `lag` after its cursor value.
//!
//! # Bounded runs
//!
//! [`PostgresQueryBuilder::until_micros`] makes the source bounded for
//! replays: it reads the rows whose cursor is at or before the bound, and
//! ends once the cutoff has reached the bound (the clock shows
//! `bound + lag`) and a query up to it came back short. Its output depends
//! only on the table and the bound, not on when the job ran.
//!
//! # Failure analysis
//!
//! - The job crashes: a restore resumes strictly after its checkpoint's
//!   position; rows emitted after the checkpoint are read again, as the
//!   exactly-once sinks expect. Nothing is kept on the server.
//! - The connection breaks, the server restarts, a query fails (a column
//!   dropped or renamed, permissions): the reader fails with
//!   [`Error::External`], and with it the job, which restarts from its
//!   last checkpoint by its restart strategy (queries are read-only and
//!   idempotent, so retrying loses nothing). The columns are looked up when
//!   a reader starts: columns added later are read after a restart.
//! - Rows that do not decode: dead letters (or a failed job under
//!   `FailurePolicy::FailFast`); the position moves past them.
//! - A commit later than the lag, or a cursor value not moved forward:
//!   the row is missed, silently, as the source cannot know it exists. This
//!   is the documented limit above; no retry can recover it.
//! - The job's clock jumps backwards: the cutoff moves back, so queries
//!   return nothing new until it catches up; the position never moves back,
//!   so nothing is read twice.
//! - The reader is dropped (the job stops) during a query: the query's
//!   thread stops waiting and closes its connection, so stopping is prompt.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{Datelike, Timelike};
use serde::de::DeserializeOwned;
use tideline_engine::time::Clock;
use tideline_engine::{
    Data, Error, ReaderContext, Record, Rejected, Result, Source, SourceOffset, SourceOutput,
    SourceReader, SourceStatus,
};
use tideline_operators::changelog::{Change, ChangeOp};
use tokio::sync::mpsc;

use crate::connect::{
    quote_ident, quote_literal, split_table, table_columns, CatalogColumn, ConnectionSettings,
};
use crate::pgoutput::{oid, Column, Datum};
use crate::row::{decode_row, render_row, text_datums};
use crate::words::{pack_text, unpack_text};

/// Computes a change's event time in milliseconds.
type EventTimeFn<T> = Arc<dyn Fn(&Change<T>) -> i64 + Send + Sync>;

/// Settings of a [`PostgresQuerySource`]; see [`PostgresQuerySource::builder`].
#[derive(Debug, Clone)]
pub struct PostgresQueryBuilder {
    connection: String,
    table: String,
    cursor: Option<String>,
    keys: Vec<String>,
    poll_interval: Duration,
    chunk_size: usize,
    safety_lag: Duration,
    until_micros: Option<i64>,
    name: String,
}

/// Reads the rows of one PostgreSQL table changed since a checkpointed
/// `(cursor, key)` position, by polling, as [`Change<T>`] upserts (see the
/// [module docs](self) for how, and for the limits of the method).
pub struct PostgresQuerySource<T> {
    settings: Arc<Settings>,
    event_time: EventTimeFn<T>,
    metrics: QueryMetrics,
}

impl<T> std::fmt::Debug for PostgresQuerySource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresQuerySource")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Settings {
    connection: ConnectionSettings,
    schema: String,
    table: String,
    cursor: String,
    keys: Vec<String>,
    poll_interval_millis: i64,
    chunk_size: usize,
    safety_lag_micros: i64,
    until_micros: Option<i64>,
    name: String,
}

impl Settings {
    /// `schema.table`, as changes name it.
    fn table_name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    fn offset_field(&self) -> String {
        format!("source '{}'.offset", self.name)
    }
}

impl PostgresQuerySource<()> {
    /// Settings for polling `table` (`schema.table`, or `table` in
    /// `public`) of the database `connection` names (`host=... port=...
    /// user=... dbname=...` or a `postgresql://` URL). Name the cursor and
    /// key columns before building; the user needs `SELECT` on the table
    /// only.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use serde::Deserialize;
    /// use tideline_postgres::PostgresQuerySource;
    ///
    /// #[derive(Clone, Debug, Deserialize)]
    /// struct Order { id: i64, status: String, amount: f64 }
    ///
    /// let orders = PostgresQuerySource::builder("host=db user=reader dbname=shop", "public.orders")
    ///     .cursor_column("updated_at")
    ///     .key_column("id")
    ///     .safety_lag(Duration::from_secs(30))
    ///     .build::<Order>()?;
    /// # Ok::<(), tideline_engine::Error>(())
    /// ```
    pub fn builder(
        connection: impl Into<String>,
        table: impl Into<String>,
    ) -> PostgresQueryBuilder {
        PostgresQueryBuilder {
            connection: connection.into(),
            table: table.into(),
            cursor: None,
            keys: Vec::new(),
            poll_interval: Duration::from_secs(1),
            chunk_size: 10_000,
            safety_lag: Duration::from_secs(5),
            until_micros: None,
            name: "postgres-query".into(),
        }
    }
}

/// Most key columns a source may have.
const MAX_KEYS: usize = 8;

impl PostgresQueryBuilder {
    /// The cursor column (required): `timestamp` or `timestamptz`, set by
    /// every write (`updated_at`); a `timestamp` column is read as UTC.
    pub fn cursor_column(mut self, column: impl Into<String>) -> Self {
        self.cursor = Some(column.into());
        self
    }

    /// Adds a key column (at least one is required; call again for a
    /// composite key, in the key's order). Together the key columns must be
    /// unique and each `NOT NULL`; integer (`smallint`, `integer`,
    /// `bigint`) and text (`text`, `varchar`, `char`, `uuid`) columns are
    /// supported.
    pub fn key_column(mut self, column: impl Into<String>) -> Self {
        self.keys.push(column.into());
        self
    }

    /// How long to wait, on the job's clock, from the start of a query
    /// that caught up until the next one (default 1 s). A query that
    /// returns a full chunk is followed at once.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Rows per query (default 10,000): what one query reads and the
    /// reader holds in memory.
    pub fn chunk_size(mut self, rows: usize) -> Self {
        self.chunk_size = rows;
        self
    }

    /// Only rows with `cursor <= now - lag` are read (default 5 s), `now`
    /// being the job's clock: a row whose transaction commits less than
    /// `lag` after its cursor value is not missed. See the module docs'
    /// limits for how to size it; zero reads rows as soon as they are
    /// visible and can miss rows that commit late.
    pub fn safety_lag(mut self, lag: Duration) -> Self {
        self.safety_lag = lag;
        self
    }

    /// Makes the source bounded: it reads the rows whose cursor is at or
    /// before `micros` (µs since the Unix epoch) and ends once the clock
    /// shows `micros + lag` and a query up to `micros` came back short.
    pub fn until_micros(mut self, micros: i64) -> Self {
        self.until_micros = Some(micros);
        self
    }

    /// The source's name in errors and the job summary.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The source, decoding rows into `T` (column names are field names;
    /// see [`crate::row`] for how values are parsed). The table and its
    /// columns are looked up when a reader starts.
    ///
    /// # Errors
    /// When the connection string or table name does not parse, no cursor
    /// or key column is named (or a key twice, or more than 8), or the poll
    /// interval or chunk size is zero.
    pub fn build<T: Data + DeserializeOwned>(self) -> Result<PostgresQuerySource<T>> {
        let connection =
            ConnectionSettings::parse(&self.connection, "PostgresQuerySource.connection")?;
        let (schema, table) = split_table(&self.table, "PostgresQuerySource.table")?;
        let cursor = self.cursor.ok_or_else(|| {
            Error::config(
                "PostgresQuerySource.cursor_column",
                "no cursor column: name the timestamp column every write sets with \
                 .cursor_column(\"updated_at\")",
            )
        })?;
        if self.keys.is_empty() {
            return Err(Error::config(
                "PostgresQuerySource.key_column",
                "no key column: name the (primary) key with .key_column(\"id\")",
            ));
        }
        if self.keys.len() > MAX_KEYS {
            return Err(Error::config(
                "PostgresQuerySource.key_column",
                format!("{} key columns; at most {MAX_KEYS}", self.keys.len()),
            ));
        }
        for (i, key) in self.keys.iter().enumerate() {
            if self.keys[..i].contains(key) {
                return Err(Error::config(
                    "PostgresQuerySource.key_column",
                    format!("key column {key:?} is named twice"),
                ));
            }
        }
        if self.poll_interval.is_zero() {
            return Err(Error::config(
                "PostgresQuerySource.poll_interval",
                "must be positive (a zero interval would query without pause)",
            ));
        }
        if self.chunk_size == 0 {
            return Err(Error::config(
                "PostgresQuerySource.chunk_size",
                "must be at least 1 row",
            ));
        }
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Ok(PostgresQuerySource {
            settings: Arc::new(Settings {
                connection,
                schema,
                table,
                cursor,
                keys: self.keys,
                poll_interval_millis: millis(self.poll_interval).max(1),
                chunk_size: self.chunk_size,
                safety_lag_micros: micros(self.safety_lag),
                until_micros: self.until_micros,
                name: self.name,
            }),
            event_time: Arc::new(|change: &Change<T>| change.commit_time.div_euclid(1000)),
            metrics: QueryMetrics::default(),
        })
    }
}

impl<T> PostgresQuerySource<T> {
    /// Computes event time (milliseconds) from each change, instead of its
    /// cursor value: e.g. from another column of the row.
    pub fn event_time(mut self, f: impl Fn(&Change<T>) -> i64 + Send + Sync + 'static) -> Self {
        self.event_time = Arc::new(f);
        self
    }

    /// Live figures of the source: queries, rows, position.
    pub fn metrics(&self) -> QueryMetrics {
        self.metrics.clone()
    }
}

/// Live figures of a [`PostgresQuerySource`]; cheap to clone and read from
/// any thread.
#[derive(Clone, Debug, Default)]
pub struct QueryMetrics(Arc<Mutex<Figures>>);

#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    queries: u64,
    rows: u64,
    cursor: Option<i64>,
    caught_up_to: Option<i64>,
}

impl QueryMetrics {
    fn figures(&self) -> Figures {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut Figures)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// How many queries were answered.
    pub fn queries(&self) -> u64 {
        self.figures().queries
    }

    /// How many rows were emitted (changes and dead letters).
    pub fn rows(&self) -> u64 {
        self.figures().rows
    }

    /// The cursor value (µs since the Unix epoch) of the last row emitted.
    pub fn cursor_micros(&self) -> Option<i64> {
        self.figures().cursor
    }

    /// The cutoff (µs since the Unix epoch) of the last query that caught
    /// up, once all its rows were emitted: every row that was visible to
    /// that query with a cursor at or before it has been emitted.
    pub fn caught_up_to_micros(&self) -> Option<i64> {
        self.figures().caught_up_to
    }
}

impl<T: Data + DeserializeOwned> Source<Change<T>> for PostgresQuerySource<T> {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn partitions(&self) -> usize {
        1
    }

    fn is_bounded(&self) -> bool {
        self.settings.until_micros.is_some()
    }

    fn create_reader(
        &self,
        _partition: usize,
        ctx: &ReaderContext,
    ) -> Result<Box<dyn SourceReader<Change<T>>>> {
        Ok(Box::new(self.spawn(ctx, Position::Start)?))
    }

    fn create_reader_at(
        &self,
        _partition: usize,
        ctx: &ReaderContext,
        offset: &SourceOffset,
    ) -> Result<Box<dyn SourceReader<Change<T>>>> {
        let position = Position::from_offset(offset, &self.settings.offset_field())?;
        Ok(Box::new(self.spawn(ctx, position)?))
    }
}

impl<T: Data + DeserializeOwned> PostgresQuerySource<T> {
    fn spawn(&self, ctx: &ReaderContext, position: Position) -> Result<QueryReader<T>> {
        let (requests, request_receiver) = mpsc::channel(1);
        let (response_sender, responses) = mpsc::channel(1);
        let worker = Worker {
            settings: Arc::clone(&self.settings),
            event_time: Arc::clone(&self.event_time),
            requests: request_receiver,
            responses: response_sender,
        };
        let thread = std::thread::Builder::new()
            .name(format!("{}-query", self.settings.name))
            .spawn(move || worker.run())
            .map_err(|e| Error::Internal(format!("cannot start the query thread: {e}")))?;
        Ok(QueryReader {
            settings: Arc::clone(&self.settings),
            clock: Arc::clone(&ctx.clock),
            requests,
            responses,
            position,
            pending: VecDeque::new(),
            in_flight: false,
            next_query_at: i64::MIN,
            caught_up: None,
            ended: false,
            thread: Some(thread),
            metrics: self.metrics.clone(),
        })
    }
}

/// The value of one key column in a position.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyValue {
    Int(i64),
    Text(String),
}

impl KeyValue {
    fn kind(&self) -> KeyKind {
        match self {
            KeyValue::Int(_) => KeyKind::Int,
            KeyValue::Text(_) => KeyKind::Text,
        }
    }
}

/// Where the reader stands: before every row, or right after a row.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Position {
    Start,
    After { cursor: i64, keys: Vec<KeyValue> },
}

const START_TAG: u64 = 0;
const AFTER_TAG: u64 = 1;
const INT_KEY: u64 = 0;
const TEXT_KEY: u64 = 1;

impl Position {
    fn to_offset(&self) -> SourceOffset {
        let Position::After { cursor, keys } = self else {
            return SourceOffset(vec![START_TAG]);
        };
        let mut words = vec![AFTER_TAG, *cursor as u64, keys.len() as u64];
        for key in keys {
            match key {
                KeyValue::Int(v) => words.extend([INT_KEY, *v as u64]),
                KeyValue::Text(text) => {
                    words.push(TEXT_KEY);
                    pack_text(text, &mut words);
                }
            }
        }
        SourceOffset(words)
    }

    fn from_offset(offset: &SourceOffset, field: &str) -> Result<Self> {
        let invalid = || {
            Error::config(
                field,
                format!(
                    "{:?} is not a position of a PostgreSQL query source",
                    offset.0
                ),
            )
        };
        let words = offset.0.as_slice();
        match words {
            [START_TAG] => return Ok(Position::Start),
            [AFTER_TAG, _, count, ..] if (1..=MAX_KEYS as u64).contains(count) => {}
            _ => return Err(invalid()),
        }
        let (cursor, count) = (words[1] as i64, words[2]);
        let mut rest = &words[3..];
        let mut keys = Vec::new();
        for _ in 0..count {
            match rest {
                [INT_KEY, v, tail @ ..] => {
                    keys.push(KeyValue::Int(*v as i64));
                    rest = tail;
                }
                [TEXT_KEY, tail @ ..] => {
                    let (text, tail) = unpack_text(tail).ok_or_else(invalid)?;
                    keys.push(KeyValue::Text(text));
                    rest = tail;
                }
                _ => return Err(invalid()),
            }
        }
        if !rest.is_empty() {
            return Err(invalid());
        }
        Ok(Position::After { cursor, keys })
    }

    fn cursor(&self) -> Option<i64> {
        match self {
            Position::Start => None,
            Position::After { cursor, .. } => Some(*cursor),
        }
    }
}

/// What the task thread asks the query thread.
#[derive(Debug)]
struct Request {
    after: Position,
    /// Rows with a cursor at or before it (µs).
    cutoff: i64,
}

/// The query thread's answer.
enum Response<T> {
    /// The rows of one query, each with the position after it; `full` when
    /// the query returned a whole chunk (more may follow at once).
    Rows {
        items: Vec<(Item<T>, Position)>,
        cutoff: i64,
        full: bool,
    },
    Failed(Error),
}

enum Item<T> {
    Change(Record<Change<T>>),
    Rejected(Rejected),
}

/// The task thread's side: decides when to query and emits the answers.
struct QueryReader<T> {
    settings: Arc<Settings>,
    clock: Arc<dyn Clock>,
    requests: mpsc::Sender<Request>,
    responses: mpsc::Receiver<Response<T>>,
    /// After the last row emitted.
    position: Position,
    /// Rows of the last answer not emitted yet.
    pending: VecDeque<(Item<T>, Position)>,
    in_flight: bool,
    /// When (on the clock, ms) the next query may be sent.
    next_query_at: i64,
    /// The cutoff of an answer that caught up, until its rows are emitted.
    caught_up: Option<i64>,
    ended: bool,
    thread: Option<std::thread::JoinHandle<()>>,
    metrics: QueryMetrics,
}

impl<T: Data> SourceReader<Change<T>> for QueryReader<T> {
    fn poll(&mut self, out: &mut SourceOutput<Change<T>>) -> Result<SourceStatus> {
        loop {
            let mut emitted = 0;
            while out.remaining() > 0 {
                let Some((item, position)) = self.pending.pop_front() else {
                    break;
                };
                match item {
                    Item::Change(record) => out.push(record),
                    Item::Rejected(rejected) => out.reject(rejected),
                }
                self.position = position;
                emitted += 1;
            }
            if emitted > 0 {
                let cursor = self.position.cursor();
                self.metrics.update(|f| {
                    f.rows += emitted;
                    f.cursor = cursor;
                });
            }
            if !self.pending.is_empty() {
                return Ok(SourceStatus::Ready);
            }
            if let Some(cutoff) = self.caught_up.take() {
                self.metrics.update(|f| f.caught_up_to = Some(cutoff));
                if self
                    .settings
                    .until_micros
                    .is_some_and(|until| cutoff >= until)
                {
                    self.ended = true;
                }
            }
            if self.ended {
                return Ok(SourceStatus::Finished);
            }
            let idle = if out.is_empty() {
                SourceStatus::Pending
            } else {
                SourceStatus::Ready
            };
            if self.in_flight {
                match self.responses.try_recv() {
                    Ok(Response::Rows {
                        items,
                        cutoff,
                        full,
                    }) => {
                        self.in_flight = false;
                        self.metrics.update(|f| f.queries += 1);
                        self.pending.extend(items);
                        if full {
                            self.next_query_at = i64::MIN;
                        } else {
                            self.caught_up = Some(cutoff);
                        }
                        continue;
                    }
                    Ok(Response::Failed(error)) => return Err(error),
                    Err(mpsc::error::TryRecvError::Empty) => return Ok(idle),
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        return Err(Error::Internal(
                            "the query thread ended without saying why".into(),
                        ))
                    }
                }
            }
            let now = self.clock.now_millis();
            if now < self.next_query_at {
                return Ok(idle);
            }
            let mut cutoff = now
                .saturating_mul(1000)
                .saturating_sub(self.settings.safety_lag_micros);
            if let Some(until) = self.settings.until_micros {
                cutoff = cutoff.min(until);
            }
            // A failed send means the thread has ended: its answer (the
            // failure) is in the channel.
            let _ = self.requests.try_send(Request {
                after: self.position.clone(),
                cutoff,
            });
            self.in_flight = true;
            self.next_query_at = now.saturating_add(self.settings.poll_interval_millis);
        }
    }

    fn offset(&self) -> Option<SourceOffset> {
        Some(self.position.to_offset())
    }
}

impl<T> Drop for QueryReader<T> {
    fn drop(&mut self) {
        // The query thread stops waiting (for a request or a query) once
        // the answers' channel is closed.
        self.responses.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The kind of a key column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Int,
    Text,
}

/// The table as the query thread reads it.
struct Table {
    /// `schema.table`.
    name: String,
    columns: Vec<Column>,
    /// `SELECT <cursor µs>, <columns> FROM <table>`.
    select: String,
    cursor: String,
    /// The cursor column's index in `columns`.
    cursor_at: usize,
    cursor_tz: bool,
    /// Quoted name, index in `columns`, kind, the type text values are
    /// cast to.
    keys: Vec<(String, usize, KeyKind, &'static str)>,
    /// `"cursor", "key", ...`.
    order: String,
}

impl Table {
    fn describe(settings: &Settings, catalog: Vec<CatalogColumn>) -> Result<Self> {
        let name = settings.table_name();
        let find = |column: &str, field: &str| {
            catalog
                .iter()
                .position(|c| c.column.name == column)
                .ok_or_else(|| {
                    Error::config(field, format!("table {name} has no column {column:?}"))
                })
        };
        let cursor_at = find(&settings.cursor, "PostgresQuerySource.cursor_column")?;
        let cursor = &catalog[cursor_at];
        let cursor_tz = match cursor.column.type_oid {
            oid::TIMESTAMPTZ => true,
            oid::TIMESTAMP => false,
            _ => {
                return Err(Error::config(
                    "PostgresQuerySource.cursor_column",
                    format!(
                        "column {:?} of {name} is {}, not timestamp or timestamptz",
                        cursor.column.name, cursor.type_name
                    ),
                ))
            }
        };
        let mut keys = Vec::new();
        for key in &settings.keys {
            let at = find(key, "PostgresQuerySource.key_column")?;
            let column = &catalog[at];
            // Text values are compared as literals cast to the column's
            // type, without modifiers (`bpchar`, not `character`, which is
            // `char(1)`).
            let (kind, cast) = match column.column.type_oid {
                oid::INT2 | oid::INT4 | oid::INT8 => (KeyKind::Int, ""),
                oid::TEXT => (KeyKind::Text, "text"),
                oid::VARCHAR => (KeyKind::Text, "varchar"),
                oid::BPCHAR => (KeyKind::Text, "bpchar"),
                oid::UUID => (KeyKind::Text, "uuid"),
                _ => {
                    return Err(Error::config(
                        "PostgresQuerySource.key_column",
                        format!(
                            "column {key:?} of {name} is {}; key columns must be integers \
                             (smallint, integer, bigint) or text (text, varchar, char, uuid)",
                            column.type_name
                        ),
                    ))
                }
            };
            if !column.not_null {
                return Err(Error::config(
                    "PostgresQuerySource.key_column",
                    format!(
                        "column {key:?} of {name} may be NULL: key columns must be NOT NULL \
                         (a row with a NULL key could never be placed after a position)"
                    ),
                ));
            }
            keys.push((quote_ident(key), at, kind, cast));
        }
        let cursor_sql = quote_ident(&settings.cursor);
        let columns: Vec<Column> = catalog.into_iter().map(|c| c.column).collect();
        let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let select = format!(
            "SELECT CASE WHEN {cursor_sql} = '-infinity' THEN {min} \
             ELSE (extract(epoch FROM {cursor_sql}) * 1000000)::int8 END, {} \
             FROM {}.{}",
            names.join(", "),
            quote_ident(&settings.schema),
            quote_ident(&settings.table),
            min = i64::MIN,
        );
        let order = std::iter::once(cursor_sql.clone())
            .chain(keys.iter().map(|k| k.0.clone()))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Self {
            name,
            columns,
            select,
            cursor: cursor_sql,
            cursor_at,
            cursor_tz,
            keys,
            order,
        })
    }

    /// The query for `request`.
    fn query(&self, request: &Request, chunk: usize, field: &str) -> Result<String> {
        let mut sql = format!(
            "{} WHERE {} <= {}",
            self.select,
            self.cursor,
            timestamp_literal(request.cutoff, self.cursor_tz)?
        );
        if let Position::After { cursor, keys } = &request.after {
            let fits = keys.len() == self.keys.len()
                && keys
                    .iter()
                    .zip(&self.keys)
                    .all(|(value, key)| value.kind() == key.2);
            if !fits {
                return Err(Error::config(
                    field,
                    format!(
                        "the position's key ({}) does not fit the key columns of {} ({})",
                        kind_names(keys.iter().map(KeyValue::kind)),
                        self.name,
                        kind_names(self.keys.iter().map(|k| k.2)),
                    ),
                ));
            }
            let values: Vec<String> = keys
                .iter()
                .zip(&self.keys)
                .map(|(value, key)| match value {
                    KeyValue::Int(v) => v.to_string(),
                    KeyValue::Text(text) => format!("{}::{}", quote_literal(text), key.3),
                })
                .collect();
            sql.push_str(&format!(
                " AND ({}) > ({}, {})",
                self.order,
                timestamp_literal(*cursor, self.cursor_tz)?,
                values.join(", ")
            ));
        }
        sql.push_str(&format!(" ORDER BY {} LIMIT {chunk}", self.order));
        Ok(sql)
    }
}

/// `int, text` for errors.
fn kind_names(kinds: impl Iterator<Item = KeyKind>) -> String {
    kinds
        .map(|kind| match kind {
            KeyKind::Int => "int",
            KeyKind::Text => "text",
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `micros` (since the Unix epoch) as a `timestamptz` (`tz`) or `timestamp`
/// literal, exact to the microsecond; `i64::MIN` is `-infinity`.
fn timestamp_literal(micros: i64, tz: bool) -> Result<String> {
    let ty = if tz { "timestamptz" } else { "timestamp" };
    if micros == i64::MIN {
        return Ok(format!("'-infinity'::{ty}"));
    }
    let t = chrono::DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| {
            Error::Internal(format!(
                "{micros} µs is outside the timestamps Tideline can write"
            ))
        })?
        .naive_utc();
    // Year 0 is 1 BC in PostgreSQL's notation.
    let (year, era) = match t.year() {
        y if y <= 0 => (1 - y, " BC"),
        y => (y, ""),
    };
    Ok(format!(
        "'{year:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}{}{era}'::{ty}",
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 1000,
        if tz { "+00" } else { "" },
    ))
}

/// The query thread: one connection, one query at a time.
struct Worker<T> {
    settings: Arc<Settings>,
    event_time: EventTimeFn<T>,
    requests: mpsc::Receiver<Request>,
    responses: mpsc::Sender<Response<T>>,
}

impl<T: Data + DeserializeOwned> Worker<T> {
    fn run(mut self) {
        let runtime = match crate::connect::runtime() {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = self.responses.blocking_send(Response::Failed(error));
                return;
            }
        };
        let responses = self.responses.clone();
        if let Err(error) = runtime.block_on(self.serve()) {
            let _ = responses.blocking_send(Response::Failed(error));
        }
    }

    fn external(
        &self,
        action: impl Into<String>,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::external(self.settings.connection.system(), action, e)
    }

    async fn serve(&mut self) -> Result<()> {
        let settings = Arc::clone(&self.settings);
        let table_name = settings.table_name();
        let closed = self.responses.clone();
        let connected = tokio::select! {
            connected = async {
                let sql = settings.connection.connect().await?;
                let catalog = table_columns(&sql, &settings.schema, &settings.table)
                    .await
                    .map_err(|e| self.external(format!("read the columns of {table_name}"), e))?;
                Ok::<_, Error>((sql, catalog))
            } => connected,
            () = closed.closed() => return Ok(()),
        };
        let (sql, catalog) = connected?;
        let table = Table::describe(&settings, catalog)?;
        let field = settings.offset_field();
        loop {
            let request = tokio::select! {
                request = self.requests.recv() => request,
                () = closed.closed() => None,
            };
            let Some(request) = request else {
                return Ok(());
            };
            let query = table.query(&request, settings.chunk_size, &field)?;
            let messages = tokio::select! {
                messages = sql.simple_query(&query) => messages
                    .map_err(|e| self.external(format!("read {table_name}"), e))?,
                () = closed.closed() => return Ok(()),
            };
            let mut items = Vec::new();
            for message in &messages {
                let tokio_postgres::SimpleQueryMessage::Row(row) = message else {
                    continue;
                };
                items.push(self.item(&table, row)?);
            }
            let full = items.len() >= settings.chunk_size;
            let response = Response::Rows {
                items,
                cutoff: request.cutoff,
                full,
            };
            if self.responses.send(response).await.is_err() {
                return Ok(());
            }
        }
    }

    /// One row as a change or dead letter, with the position after it.
    fn item(
        &self,
        table: &Table,
        row: &tokio_postgres::SimpleQueryRow,
    ) -> Result<(Item<T>, Position)> {
        let unexpected = |what: String| self.external(format!("read {}", table.name), what);
        let text = (0..row.len())
            .map(|i| row.try_get(i))
            .collect::<std::result::Result<Vec<Option<&str>>, _>>()
            .map_err(|e| self.external(format!("read {}", table.name), e))?;
        let Some((Some(cursor), values)) = text.split_first() else {
            return Err(unexpected("a row without its cursor value".into()));
        };
        let cursor: i64 = cursor
            .parse()
            .map_err(|e| unexpected(format!("cursor value {cursor:?}: {e}")))?;
        let values = text_datums(values.iter().copied());
        if values.len() != table.columns.len() {
            return Err(unexpected(format!(
                "{} values for {} columns",
                values.len(),
                table.columns.len()
            )));
        }
        let mut keys = Vec::with_capacity(table.keys.len());
        let mut shown = vec![format!(
            "{}={}",
            self.settings.cursor,
            match values.get(table.cursor_at) {
                Some(Datum::Text(bytes)) => String::from_utf8_lossy(bytes),
                _ => "NULL".into(),
            }
        )];
        for (_, at, kind, _) in &table.keys {
            let name = &table.columns[*at].name;
            let Some(Datum::Text(bytes)) = values.get(*at) else {
                return Err(unexpected(format!("a NULL value in key column {name:?}")));
            };
            let text = String::from_utf8_lossy(bytes).into_owned();
            shown.push(format!("{name}={text}"));
            keys.push(match kind {
                KeyKind::Int => KeyValue::Int(
                    text.parse()
                        .map_err(|e| unexpected(format!("key {name:?} value {text:?}: {e}")))?,
                ),
                KeyKind::Text => KeyValue::Text(text),
            });
        }
        let position = Position::After { cursor, keys };
        let at = format!("{} ({})", table.name, shown.join(", "));
        if cursor == i64::MIN {
            let rejected = Rejected {
                reason: format!(
                    "the cursor {} of a row of {} is -infinity, which is no time",
                    self.settings.cursor, table.name
                ),
                record: render_row(&table.columns, &values),
                offset: Some(at),
            };
            return Ok((Item::Rejected(rejected), position));
        }
        let item = match decode_row::<T>(&table.columns, &values) {
            Ok(after) => {
                let change = Change {
                    op: ChangeOp::Update,
                    before: None,
                    after: Some(after),
                    table: table.name.clone(),
                    lsn: 0,
                    commit_time: cursor,
                    tx_id: 0,
                };
                Item::Change(Record::new((self.event_time)(&change), change))
            }
            Err(e) => Item::Rejected(Rejected {
                reason: format!("cannot decode a row of {}: {e}", table.name),
                record: render_row(&table.columns, &values),
                offset: Some(at),
            }),
        };
        Ok((item, position))
    }
}

#[cfg(test)]
// Tests fail by panicking.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_offsets() {
        let positions = [
            Position::Start,
            Position::After {
                cursor: 1_700_000_000_123_456,
                keys: vec![KeyValue::Int(-5)],
            },
            Position::After {
                cursor: -1,
                keys: vec![
                    KeyValue::Text(String::new()),
                    KeyValue::Text("exactly8".into()),
                    KeyValue::Text("naïve, longer than eight bytes".into()),
                    KeyValue::Int(i64::MAX),
                ],
            },
        ];
        for position in positions {
            let offset = position.to_offset();
            assert_eq!(Position::from_offset(&offset, "f").unwrap(), position);
        }
        let after = Position::After {
            cursor: 7,
            keys: vec![KeyValue::Text("abcdefghij".into())],
        };
        assert_eq!(after.to_offset().0, {
            let mut w = vec![1, 7, 1, 1, 10];
            w.push(u64::from_be_bytes(*b"abcdefgh"));
            w.push(u64::from_be_bytes(*b"ij\0\0\0\0\0\0"));
            w
        });
    }

    #[test]
    fn malformed_offsets_are_refused_naming_the_field() {
        for words in [
            vec![],
            vec![2],
            vec![1, 5],
            vec![1, 5, 0],
            vec![1, 5, 1],
            vec![1, 5, 1, 0],
            vec![1, 5, 1, 2, 3],
            vec![1, 5, 1, 1, 9, 0],
            vec![1, 5, 1, 0, 3, 4],
            vec![1, 5, 1, 1, 1, 0xff00_0000_0000_0000],
        ] {
            let err = Position::from_offset(&SourceOffset(words.clone()), "source 'q'.offset")
                .unwrap_err();
            assert!(
                err.to_string().contains("source 'q'.offset"),
                "{words:?}: {err}"
            );
        }
    }

    #[test]
    fn timestamp_literals_are_exact() {
        assert_eq!(
            timestamp_literal(0, true).unwrap(),
            "'1970-01-01 00:00:00.000000+00'::timestamptz"
        );
        assert_eq!(
            timestamp_literal(1_704_067_201_000_001, false).unwrap(),
            "'2024-01-01 00:00:01.000001'::timestamp"
        );
        assert_eq!(
            timestamp_literal(-1, true).unwrap(),
            "'1969-12-31 23:59:59.999999+00'::timestamptz"
        );
        // PostgreSQL's own value for '0001-12-31 23:59:59.000001+00 BC'.
        assert_eq!(
            timestamp_literal(-62_135_596_800_999_999, true).unwrap(),
            "'0001-12-31 23:59:59.000001+00 BC'::timestamptz"
        );
        assert_eq!(
            timestamp_literal(i64::MIN, false).unwrap(),
            "'-infinity'::timestamp"
        );
    }

    #[test]
    fn the_builder_names_the_missing_or_wrong_setting() {
        let url = "host=127.0.0.1 user=u dbname=d";
        let err = |b: PostgresQueryBuilder| b.build::<serde_json::Value>().unwrap_err().to_string();
        let base = || PostgresQuerySource::builder(url, "t");
        assert!(err(base().key_column("id")).contains("cursor_column"));
        assert!(err(base().cursor_column("u")).contains("key_column"));
        let ok = || base().cursor_column("u").key_column("id");
        assert!(err(ok().key_column("id")).contains("named twice"));
        assert!(err(ok().chunk_size(0)).contains("chunk_size"));
        assert!(err(ok().poll_interval(Duration::ZERO)).contains("poll_interval"));
        assert!(err(PostgresQuerySource::builder(url, "a.b.c")
            .cursor_column("u")
            .key_column("id"))
        .contains("PostgresQuerySource.table"));
        let source = ok().build::<serde_json::Value>().unwrap();
        assert!(!source.is_bounded());
        assert!(ok()
            .until_micros(5)
            .build::<serde_json::Value>()
            .unwrap()
            .is_bounded());
    }

    fn catalog(columns: &[(&str, u32, &str, bool)]) -> Vec<CatalogColumn> {
        columns
            .iter()
            .map(|(name, type_oid, type_name, not_null)| CatalogColumn {
                column: Column {
                    key: false,
                    name: (*name).into(),
                    type_oid: *type_oid,
                    type_mod: -1,
                },
                type_name: (*type_name).into(),
                not_null: *not_null,
            })
            .collect()
    }

    fn settings(keys: &[&str]) -> Settings {
        let built = PostgresQuerySource::builder("host=h user=u dbname=d", "shop.orders")
            .cursor_column("updated_at");
        let built = keys
            .iter()
            .fold(built, |b, k| b.key_column(*k))
            .build::<serde_json::Value>()
            .unwrap();
        Arc::try_unwrap(built.settings).unwrap()
    }

    #[test]
    fn queries_paginate_by_cursor_and_key() {
        let columns = catalog(&[
            ("id", oid::INT8, "bigint", true),
            ("region", oid::TEXT, "text", true),
            (
                "updated_at",
                oid::TIMESTAMPTZ,
                "timestamp with time zone",
                false,
            ),
        ]);
        let table = Table::describe(&settings(&["region", "id"]), columns).unwrap();
        let first = table
            .query(
                &Request {
                    after: Position::Start,
                    cutoff: 1_000_000,
                },
                100,
                "f",
            )
            .unwrap();
        assert_eq!(
            first,
            "SELECT CASE WHEN \"updated_at\" = '-infinity' THEN -9223372036854775808 \
             ELSE (extract(epoch FROM \"updated_at\") * 1000000)::int8 END, \
             \"id\", \"region\", \"updated_at\" FROM \"shop\".\"orders\" \
             WHERE \"updated_at\" <= '1970-01-01 00:00:01.000000+00'::timestamptz \
             ORDER BY \"updated_at\", \"region\", \"id\" LIMIT 100"
        );
        let next = table
            .query(
                &Request {
                    after: Position::After {
                        cursor: 500_000,
                        keys: vec![KeyValue::Text("it's".into()), KeyValue::Int(7)],
                    },
                    cutoff: 1_000_000,
                },
                100,
                "f",
            )
            .unwrap();
        assert!(
            next.contains(
                " AND (\"updated_at\", \"region\", \"id\") > \
                 ('1970-01-01 00:00:00.500000+00'::timestamptz, 'it''s'::text, 7) ORDER BY"
            ),
            "{next}"
        );
        let err = table
            .query(
                &Request {
                    after: Position::After {
                        cursor: 0,
                        keys: vec![KeyValue::Int(1)],
                    },
                    cutoff: 0,
                },
                1,
                "source 'q'.offset",
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("source 'q'.offset") && err.contains("(int)"),
            "{err}"
        );
    }

    #[test]
    fn text_keys_are_cast_to_their_type_without_a_length() {
        let columns = catalog(&[
            ("code", oid::BPCHAR, "character", true),
            (
                "updated_at",
                oid::TIMESTAMP,
                "timestamp without time zone",
                true,
            ),
        ]);
        let table = Table::describe(&settings(&["code"]), columns).unwrap();
        let request = Request {
            after: Position::After {
                cursor: 0,
                keys: vec![KeyValue::Text("ab  ".into())],
            },
            cutoff: 0,
        };
        let sql = table.query(&request, 10, "f").unwrap();
        assert!(
            sql.contains("> ('1970-01-01 00:00:00.000000'::timestamp, 'ab  '::bpchar)"),
            "{sql}"
        );
    }

    #[test]
    fn unsuitable_columns_are_refused() {
        let describe = |columns: &[(&str, u32, &str, bool)]| {
            Table::describe(&settings(&["id"]), catalog(columns))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let err = describe(&[("id", oid::INT8, "bigint", true)]);
        assert!(err.contains("no column \"updated_at\""), "{err}");
        let err = describe(&[
            ("id", oid::INT8, "bigint", true),
            ("updated_at", oid::INT8, "bigint", false),
        ]);
        assert!(err.contains("not timestamp or timestamptz"), "{err}");
        let err = describe(&[
            ("id", oid::INT8, "bigint", false),
            (
                "updated_at",
                oid::TIMESTAMP,
                "timestamp without time zone",
                false,
            ),
        ]);
        assert!(err.contains("may be NULL"), "{err}");
        let err = describe(&[
            ("id", 700, "real", true),
            (
                "updated_at",
                oid::TIMESTAMP,
                "timestamp without time zone",
                false,
            ),
        ]);
        assert!(err.contains("is real; key columns must be"), "{err}");
    }
}
