//! The replication stream: transactions decoded into changes, each with
//! the position after it.
//!
//! Two modes. Streaming: every change is emitted. Catching up (resuming a
//! snapshot, see [`Copied`]): only the parts of changes that touch rows
//! the snapshot had copied are emitted, up to the new snapshot's
//! consistent point, since the new snapshot holds the others as they are
//! there; an update that moves a row out of the copied rows becomes a
//! delete, one that moves a row in becomes an insert.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::Duration;

use bytes::Bytes;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use serde::de::DeserializeOwned;
use tideline_engine::{Data, Rejected, Result};
use tideline_operators::changelog::{Change, ChangeOp};

use super::position::Position;
use super::pump::{Pump, BATCH};
use super::reader::{Event, Item};
use super::snapshot::Copied;
use crate::pgoutput::{self, format_lsn, Datum, Message, OldRow, Relation};
use crate::row::{decode_key_row, decode_row, render_row};

/// The transaction being read.
struct Transaction {
    xid: u32,
    commit_lsn: u64,
    commit_time: i64,
    /// Changes of it seen so far (emitted, rejected or skipped).
    seen: u64,
}

/// Why [`Pump::stream`] returned.
pub(super) enum StreamEnd {
    /// Catching up reached its point: the event at it, not handled yet,
    /// if there was one.
    Reached(Option<ReplicationEvent>),
    /// The reader is gone, or the bound was reached (and said).
    Stopped,
}

impl<T: Data + DeserializeOwned> Pump<T> {
    /// Reads the stream, which starts after the transaction ending at
    /// `start` (skipping `skip` changes of the next): catching up to a
    /// point with `catch_up`, else streaming until the reader goes or the
    /// bound is reached. `first` is an event read before, handled first.
    pub(super) async fn stream(
        &mut self,
        client: &mut ReplicationClient,
        start: u64,
        mut skip: u64,
        catch_up: Option<(&Copied, u64)>,
        mut first: Option<ReplicationEvent>,
    ) -> Result<StreamEnd> {
        let mut transaction: Option<Transaction> = None;
        let mut batch: Vec<(Item<T>, Position)> = Vec::new();
        let mut resume = start;
        let position = |resume: u64, skip: u64| match catch_up {
            Some((copied, _)) => Position::Snapshot {
                resume,
                skip,
                table: copied.table,
                key: copied.key.clone(),
                layout: copied.layout,
            },
            None => Position::Stream { resume, skip },
        };
        let until = catch_up.map(|(_, until)| until);
        let mut confirmed_sent = 0u64;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(StreamEnd::Stopped);
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
            let event = match first.take() {
                Some(event) => event,
                None => match tokio::time::timeout(Duration::from_millis(200), client.recv()).await
                {
                    Err(_elapsed) => {
                        // A bound set after the stream went quiet.
                        if until.is_none() && transaction.is_none() && self.reached_bound(resume) {
                            let _ = self.send(Event::End).await;
                            return Ok(StreamEnd::Stopped);
                        }
                        continue;
                    }
                    Ok(Ok(Some(event))) => event,
                    Ok(Ok(None)) => {
                        return Err(self
                            .external("stream changes", "the server ended the replication stream"))
                    }
                    Ok(Err(e)) => return Err(self.external("stream changes", e)),
                },
            };
            match event {
                ReplicationEvent::Begin {
                    final_lsn,
                    xid,
                    commit_time_micros,
                } => {
                    if until.is_some_and(|until| final_lsn.as_u64() >= until) {
                        return Ok(StreamEnd::Reached(Some(ReplicationEvent::Begin {
                            final_lsn,
                            xid,
                            commit_time_micros,
                        })));
                    }
                    // Committed at or after the bound: not part of a
                    // bounded read, however it is reached.
                    if until.is_none() && self.reached_bound(final_lsn.as_u64()) {
                        let _ = self.send(Event::End).await;
                        return Ok(StreamEnd::Stopped);
                    }
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
                    let copied = catch_up.map(|(copied, _)| copied);
                    let Some(tx) = transaction.as_mut() else {
                        // Relation messages may come outside a transaction.
                        self.decode(&data, None, copied, &mut batch, |_| position(resume, 0))?;
                        continue;
                    };
                    self.decode(&data, Some((tx, &mut skip)), copied, &mut batch, |seen| {
                        position(resume, seen)
                    })?;
                    if batch.len() >= BATCH
                        && !self.send(Event::Items(std::mem::take(&mut batch))).await
                    {
                        return Ok(StreamEnd::Stopped);
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
                    resume = end;
                    self.shared.metrics.last_commit_time.store(
                        pgoutput::pg_to_unix_micros(commit_time_micros),
                        Ordering::Relaxed,
                    );
                    self.shared
                        .metrics
                        .server_wal_end
                        .fetch_max(end, Ordering::Relaxed);
                    let after = position(end, 0);
                    if let Some(last) = batch.last_mut() {
                        // The last change of the transaction carries the
                        // position after the whole transaction.
                        last.1 = after;
                        if !self.send(Event::Items(std::mem::take(&mut batch))).await {
                            return Ok(StreamEnd::Stopped);
                        }
                    } else if !self.send(Event::Moved(after)).await {
                        return Ok(StreamEnd::Stopped);
                    }
                    if until.is_none() && self.reached_bound(end) {
                        let _ = self.send(Event::End).await;
                        return Ok(StreamEnd::Stopped);
                    }
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    let end = wal_end.as_u64();
                    self.shared
                        .metrics
                        .server_wal_end
                        .fetch_max(end, Ordering::Relaxed);
                    if transaction.is_some() || end <= resume {
                        continue;
                    }
                    if until.is_some_and(|until| end >= until) {
                        return Ok(StreamEnd::Reached(None));
                    }
                    resume = end;
                    // `skip` still counts the changes of the next
                    // transaction emitted before a restore: it is the next
                    // one after `end` too.
                    if !self.send(Event::Moved(position(end, skip))).await {
                        return Ok(StreamEnd::Stopped);
                    }
                    if until.is_none() && self.reached_bound(end) {
                        let _ = self.send(Event::End).await;
                        return Ok(StreamEnd::Stopped);
                    }
                }
                ReplicationEvent::Message {
                    transactional, lsn, ..
                } => {
                    // The marker a resumed snapshot writes after its point.
                    if !transactional
                        && transaction.is_none()
                        && until.is_some_and(|until| lsn.as_u64() >= until)
                    {
                        return Ok(StreamEnd::Reached(None));
                    }
                }
                ReplicationEvent::StoppedAt { .. } => {
                    let _ = self.send(Event::End).await;
                    return Ok(StreamEnd::Stopped);
                }
            }
        }
    }

    fn reached_bound(&self, end: u64) -> bool {
        self.settings.bounded && end >= self.shared.until.load(Ordering::SeqCst)
    }

    /// Decodes one message; what it emits goes into `batch`, each item
    /// with `position(changes of the transaction seen)`. `tx` is the open
    /// transaction and the number of its changes still to skip; `copied`,
    /// when catching up, the rows whose changes are emitted.
    fn decode(
        &mut self,
        data: &Bytes,
        tx: Option<(&mut Transaction, &mut u64)>,
        copied: Option<&Copied>,
        batch: &mut Vec<(Item<T>, Position)>,
        position: impl Fn(u64) -> Position,
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
        let position = position(tx.seen);
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
                    position.clone(),
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
        let mut change = change;
        if let RawChange::Update(Some((OldRow::Full, old)), new) = &mut change {
            // Unchanged TOAST values, from the old row that carries them.
            for (value, old) in new.iter_mut().zip(old.iter()) {
                if *value == Datum::UnchangedToast {
                    *value = old.clone();
                }
            }
        }
        if let Some(copied) = copied {
            match restrict_to_copied(change, relation, copied) {
                Some(restricted) => change = restricted,
                None => return Ok(()),
            }
        }
        let table = relation.qualified_name();
        let columns = &relation.columns;
        let decoded = match &change {
            RawChange::Insert(new) => {
                decode_row::<T>(columns, new).map(|after| (ChangeOp::Insert, None, Some(after)))
            }
            RawChange::Update(old, new) => {
                let before = match old {
                    Some((OldRow::Full, old)) => decode_row::<T>(columns, old).map(Some),
                    Some((OldRow::Key, old)) => decode_key_row::<T>(columns, old).map(Some),
                    None => Ok(None),
                };
                before.and_then(|before| {
                    decode_row::<T>(columns, new)
                        .map(|after| (ChangeOp::Update, before, Some(after)))
                })
            }
            RawChange::Delete((kind, old)) => match kind {
                OldRow::Full => decode_row::<T>(columns, old),
                OldRow::Key => decode_key_row::<T>(columns, old),
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
            Err(e) => {
                let record = match &change {
                    RawChange::Insert(new) => format!("INSERT {}", render_row(columns, new)),
                    RawChange::Update(None, new) => {
                        format!("UPDATE {}", render_row(columns, new))
                    }
                    RawChange::Update(Some((_, old)), new) => format!(
                        "UPDATE {} TO {}",
                        render_row(columns, old),
                        render_row(columns, new)
                    ),
                    RawChange::Delete((_, old)) => format!("DELETE {}", render_row(columns, old)),
                    RawChange::Truncate(_) => String::new(),
                };
                Item::Rejected(Rejected {
                    reason: format!("cannot decode a change of {table}: {e}"),
                    record: format!("{table}: {record}"),
                    offset: Some(at),
                })
            }
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

/// A change as the stream carries it, before decoding.
enum RawChange {
    Insert(Vec<Datum>),
    Update(Option<(OldRow, Vec<Datum>)>, Vec<Datum>),
    Delete((OldRow, Vec<Datum>)),
    Truncate(Vec<u32>),
}

/// The part of `change` that touches rows `copied` holds (see the module
/// docs); `None` when it touches none.
fn restrict_to_copied(
    change: RawChange,
    relation: &Relation,
    copied: &Copied,
) -> Option<RawChange> {
    match change {
        RawChange::Insert(new) => copied
            .contains(relation, &new)
            .then_some(RawChange::Insert(new)),
        RawChange::Delete(old) => copied
            .contains(relation, &old.1)
            .then_some(RawChange::Delete(old)),
        RawChange::Update(old, new) => {
            let before_copied = copied.contains(relation, old.as_ref().map_or(&new, |(_, o)| o));
            let after_copied = copied.contains(relation, &new);
            match (before_copied, after_copied) {
                (true, true) => Some(RawChange::Update(old, new)),
                (true, false) => Some(RawChange::Delete(old.unwrap_or((OldRow::Full, new)))),
                (false, true) => Some(RawChange::Insert(new)),
                (false, false) => None,
            }
        }
        truncate @ RawChange::Truncate(_) => Some(truncate),
    }
}
