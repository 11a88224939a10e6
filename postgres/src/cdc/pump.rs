//! The reader's thread: connections, slot, snapshot and stream in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgwire_replication::{Lsn, ReplicationClient};
use serde::de::DeserializeOwned;
use tideline_engine::{Data, Error, Record, Result};
use tideline_operators::changelog::Change;
use tokio::sync::mpsc;

use super::position::Position;
use super::reader::{Event, Item};
use super::snapshot::{self, Copied, TableInfo};
use super::stream::StreamEnd;
use super::{EventTimeFn, Settings, SharedState, SnapshotMode};
use crate::connect::{quote_ident, quote_literal, quoted_table};
use crate::pgoutput::{format_lsn, parse_lsn, Relation};

/// How many changes go to the task thread at a time (at most).
pub(super) const BATCH: usize = 512;

/// How many batches the channel between the threads holds: at most
/// `CHANNEL × BATCH` changes are in flight between the threads.
pub(super) const CHANNEL: usize = 32;

/// The reader's thread: connections, snapshot, stream, decoding.
pub(super) struct Pump<T> {
    pub(super) settings: Settings,
    pub(super) event_time: EventTimeFn<T>,
    pub(super) shared: Arc<SharedState>,
    pub(super) sender: mpsc::Sender<Event<T>>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) relations: HashMap<u32, Relation>,
}

impl<T: Data + DeserializeOwned> Pump<T> {
    pub(super) fn run(mut self, start: Option<Position>) {
        let runtime = match crate::connect::runtime() {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = self.sender.blocking_send(Event::Failed(error));
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

    pub(super) fn external(
        &self,
        action: impl Into<String>,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::external(self.system(), action, e)
    }

    /// Sends `event`; `false` when the reader is gone.
    pub(super) async fn send(&self, event: Event<T>) -> bool {
        self.sender.send(event).await.is_ok()
    }

    async fn read(&mut self, start: Option<Position>) -> Result<()> {
        let sql = self.settings.connection.connect().await?;
        let created_publication = self.ensure_publication(&sql).await?;
        let slot = self.slot_state(&sql).await?;
        let fresh_snapshot = matches!(start, None | Some(Position::NotStarted))
            && self.settings.snapshot == SnapshotMode::Initial;
        if created_publication && slot.is_some() && !fresh_snapshot {
            // The server decodes the log with the catalog as it was then:
            // a publication made now does not exist for the WAL before.
            return Err(Error::config(
                "PostgresCdcSource.publication",
                format!(
                    "publication {} did not exist and was created now, after slot {}: the \
                     slot's WAL from before cannot be decoded with it. Create the publication \
                     before the slot (the source does so when it creates both), or drop the slot",
                    self.settings.publication, self.settings.slot
                ),
            ));
        }
        let slot_name = self.settings.slot.clone();
        let checkpointed = |resume: u64| -> Result<()> {
            match &slot {
                None => Err(Error::config(
                    format!("source '{}'.offset", self.settings.name),
                    format!(
                        "replication slot {slot_name} does not exist: it was dropped, and the \
                         WAL since the checkpoint with it; start the job without the checkpoint"
                    ),
                )),
                Some(slot) if resume < slot.confirmed => Err(Error::config(
                    format!("source '{}'.offset", self.settings.name),
                    format!(
                        "the checkpoint resumes at LSN {} but slot {slot_name} was already \
                         confirmed up to {}: the WAL in between is gone (restore from the \
                         latest checkpoint)",
                        format_lsn(resume),
                        format_lsn(slot.confirmed)
                    ),
                )),
                Some(_) => Ok(()),
            }
        };
        let (mut client, from, skip, first) = match start {
            Some(Position::Stream { resume, skip }) => {
                checkpointed(resume)?;
                self.wait_until_released(&sql).await?;
                (self.start_stream(resume).await?, resume, skip, None)
            }
            Some(Position::Snapshot {
                resume,
                skip,
                table,
                key,
                layout,
            }) => {
                checkpointed(resume)?;
                self.wait_until_released(&sql).await?;
                // The rows copied before the checkpoint are brought up to
                // date from the log to a new snapshot's point, then the
                // rest is copied from that snapshot.
                let temporary = format!(
                    "{}_resume",
                    self.settings.slot.chars().take(55).collect::<String>()
                );
                // A crashed run's resume session may still hold it.
                self.wait_for_slot(&sql, &temporary).await?;
                let consistent_point = self.export_snapshot(&sql, &temporary, true).await?;
                self.mark_the_log().await;
                let tables = TableInfo::load(&sql, &self.settings.tables, |what, e| {
                    self.external(what, e)
                })
                .await?;
                let mut client = self.start_stream(resume).await?;
                if snapshot::layout(&tables) != layout {
                    return Err(Error::config(
                        format!("source '{}'.offset", self.settings.name),
                        "the checkpoint was taken during a snapshot of other tables, or of \
                         tables with other primary keys, than the job's now: it cannot be \
                         resumed. Start the job without it: it takes a new snapshot",
                    ));
                }
                let copied = Copied {
                    tables: tables.clone(),
                    table,
                    key: key.clone(),
                    layout,
                };
                let first = match self
                    .stream(
                        &mut client,
                        resume,
                        skip,
                        Some((&copied, consistent_point)),
                        None,
                    )
                    .await?
                {
                    StreamEnd::Reached(first) => first,
                    StreamEnd::Stopped => return Ok(()),
                };
                self.copy_tables(&sql, &tables, (table, key), consistent_point)
                    .await?;
                self.end_snapshot(&sql, consistent_point).await?;
                (client, consistent_point, 0, first)
            }
            Some(Position::UnresumableSnapshot { .. }) => {
                return Err(Error::Internal(
                    "an unresumable snapshot position reached the reader".into(),
                ));
            }
            None | Some(Position::NotStarted) => match self.settings.snapshot {
                SnapshotMode::Never => {
                    let resume = match slot {
                        Some(slot) => {
                            self.wait_until_released(&sql).await?;
                            slot.confirmed
                        }
                        None => self.create_slot_without_snapshot(&sql).await?,
                    };
                    self.moved(Position::Stream { resume, skip: 0 }).await;
                    (self.start_stream(resume).await?, resume, 0, None)
                }
                SnapshotMode::Initial => {
                    if slot.is_some() {
                        self.wait_until_released(&sql).await?;
                        sql.execute("SELECT pg_drop_replication_slot($1)", &[&slot_name])
                            .await
                            .map_err(|e| self.external(format!("drop slot {slot_name}"), e))?;
                    }
                    self.estimate_rows(&sql).await;
                    let consistent_point = self.export_snapshot(&sql, &slot_name, false).await?;
                    let tables = TableInfo::load(&sql, &self.settings.tables, |what, e| {
                        self.external(what, e)
                    })
                    .await?;
                    self.copy_tables(&sql, &tables, (0, None), consistent_point)
                        .await?;
                    self.end_snapshot(&sql, consistent_point).await?;
                    (
                        self.start_stream(consistent_point).await?,
                        consistent_point,
                        0,
                        None,
                    )
                }
            },
        };
        drop(sql);
        let result = self.stream(&mut client, from, skip, None, first).await;
        // Ends the session cleanly, so the server releases the slot now
        // rather than when it notices the connection is gone.
        let _ = tokio::time::timeout(Duration::from_secs(5), client.shutdown()).await;
        result.map(|_| ())
    }

    /// Creates slot `slot` (a temporary one: `temporary`) with an exported
    /// snapshot and opens a `REPEATABLE READ` transaction on `sql` in that
    /// snapshot; returns the slot's consistent point, where the snapshot
    /// stands in the log.
    async fn export_snapshot(
        &self,
        sql: &tokio_postgres::Client,
        slot: &str,
        temporary: bool,
    ) -> Result<u64> {
        let config = self
            .settings
            .connection
            .replication(slot, &self.settings.publication);
        let mut session = ReplicationClient::connect_gated(config)
            .await
            .map_err(|e| self.external("open a replication session", e))?;
        let rows = session
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {}{} LOGICAL pgoutput EXPORT_SNAPSHOT",
                quote_ident(slot),
                if temporary { " TEMPORARY" } else { "" }
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
        // The snapshot is imported: the exporting session may go (a
        // temporary slot with it).
        drop(session);
        Ok(consistent_point)
    }

    /// Writes a logical decoding message, so that the stream passes the
    /// current point even when the tables are idle (catching up waits for
    /// that). Best effort: without it, the server's next keepalive does.
    async fn mark_the_log(&self) {
        if let Ok(client) = self.settings.connection.connect().await {
            let _ = client
                .batch_execute("SELECT pg_logical_emit_message(false, 'tideline', 'resume')")
                .await;
        }
    }

    async fn end_snapshot(
        &self,
        sql: &tokio_postgres::Client,
        consistent_point: u64,
    ) -> Result<()> {
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
        Ok(())
    }

    /// Creates the publication when it is missing; says whether it did.
    async fn ensure_publication(&self, sql: &tokio_postgres::Client) -> Result<bool> {
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
            return Ok(false);
        }
        let tables: Vec<String> = self
            .settings
            .tables
            .iter()
            .map(|(schema, table)| quoted_table(schema, table))
            .collect();
        let create = format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            quote_ident(publication),
            tables.join(", ")
        );
        match sql.batch_execute(&create).await {
            Ok(()) => Ok(true),
            // Another reader created it in between.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) => {
                Ok(false)
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
        self.wait_for_slot(sql, &self.settings.slot).await
    }

    /// Waits until no session holds slot `slot` (a crashed run's session
    /// may, until the server notices it is gone: at the latest after
    /// `wal_sender_timeout`, 60 s by default, for a peer that vanished
    /// without closing its connection). Gives up after 90 s, or when the
    /// reader is dropped.
    async fn wait_for_slot(&self, sql: &tokio_postgres::Client, slot: &str) -> Result<()> {
        const PATIENCE: Duration = Duration::from_secs(90);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let active: Option<bool> = sql
                .query_opt(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await
                .map_err(|e| self.external("look up the replication slot", e))?
                .map(|row| row.get(0));
            if active != Some(true) {
                return Ok(());
            }
            if self.stop.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            if Instant::now() > deadline {
                return Err(self.external(
                    format!("acquire replication slot {slot}"),
                    format!(
                        "another session has held it for {} s (another job with the same slot?)",
                        PATIENCE.as_secs()
                    ),
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
        parse_lsn(&lsn).ok_or_else(|| {
            self.external(
                format!("create slot {}", self.settings.slot),
                format!("the server answered {lsn:?}, not an LSN"),
            )
        })
    }

    /// Publishes the tables' estimated row count for the snapshot's
    /// progress (outside the snapshot's transaction: a failure here must
    /// not abort it).
    async fn estimate_rows(&self, sql: &tokio_postgres::Client) {
        let mut estimate = 0u64;
        for (schema, table) in &self.settings.tables {
            let name = quoted_table(schema, table);
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

    pub(super) fn record(&self, change: Change<T>) -> Item<T> {
        let at = (self.event_time)(&change);
        Item::Change(Record::new(at, change))
    }

    pub(super) async fn moved(&self, position: Position) {
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
}

struct SlotState {
    confirmed: u64,
}
