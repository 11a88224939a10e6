//! Stateless helpers on streams of [`ChangelogRow`]s: grouping by a
//! function of the row, and the upsert (compacted-topic) view.
//!
//! Grouping is how retraction reaches the right group: keyed by, say, an
//! order's status, the `-U` of an update that moves an order from
//! `pending` to `paid` carries the old row and so goes to `pending`, where
//! it retracts the order, and the `+U` goes to `paid`, where it adds it.

use std::hash::Hash;
use std::sync::Arc;

use serde::Serialize;
use tideline_engine::{Data, KeyedStream, Stream};

use super::{ChangelogRow, RowKind};
use crate::stateless::FlatMap;

/// Adds changelog helpers to streams of [`ChangelogRow`]s.
pub trait ChangelogStreamExt<T> {
    /// Keys the changelog by `key` of each row (`-U` and `-D` rows by the
    /// key of the row they retract), e.g. to aggregate it per group with
    /// [`aggregate_changelog`](super::AggregateChangelogExt::aggregate_changelog).
    ///
    /// ```
    /// use tideline_operators::changelog::{ChangelogRow, ChangelogStreamExt};
    /// use tideline_operators::prelude::*;
    ///
    /// let job = Job::new();
    /// let rows = job.source(
    ///     VecSource::new(vec![ChangelogRow::insert((1, "pending".to_string()))]),
    ///     WatermarkStrategy::none(),
    /// );
    /// let by_status = rows.key_by_row(|order: &(u32, String)| order.1.clone());
    /// # let _ = by_status;
    /// ```
    fn key_by_row<K, F>(&self, key: F) -> KeyedStream<K, ChangelogRow<T>>
    where
        K: Hash + Serialize + Eq + Clone + Send + 'static,
        F: Fn(&T) -> K + Send + Sync + 'static;

    /// The changelog as upserts, the form of a compacted Kafka topic:
    /// `(key, Some(row))` for `+I` and `+U`, `(key, None)` (a tombstone)
    /// for `-D`; `-U` rows are dropped, since the `+U` that follows
    /// replaces the row under the same key. That holds for changelogs whose
    /// updates keep the key, as those of
    /// [`to_table`](super::ToTableExt::to_table) (by its primary key) and
    /// [`aggregate_changelog`](super::AggregateChangelogExt::aggregate_changelog)
    /// (by its group) do.
    ///
    /// Compaction deletes a key on a record whose value is null; the Kafka
    /// sink writes what its serializer makes of every record, so write the
    /// key with the sink's `key` and a `None` as the serializer decides
    /// (JSON `null` is a value, not a tombstone, for the broker).
    ///
    /// ```
    /// use tideline_operators::changelog::{ChangelogRow, ChangelogStreamExt};
    /// use tideline_operators::prelude::*;
    ///
    /// let job = Job::new().parallelism(1);
    /// let out = CollectSink::new();
    /// job.source(
    ///     VecSource::new(vec![
    ///         ChangelogRow::insert((1, 10)),
    ///         ChangelogRow::update_before((1, 10)),
    ///         ChangelogRow::update_after((1, 11)),
    ///         ChangelogRow::delete((1, 11)),
    ///     ]),
    ///     WatermarkStrategy::none(),
    /// )
    /// .upserts(|r: &(u32, i64)| r.0)
    /// .sink(out.clone());
    /// job.run()?;
    /// assert_eq!(out.values(), vec![(1, Some((1, 10))), (1, Some((1, 11))), (1, None)]);
    /// # Ok::<(), tideline_engine::Error>(())
    /// ```
    fn upserts<K, F>(&self, key: F) -> Stream<(K, Option<T>)>
    where
        K: Data,
        F: Fn(&T) -> K + Send + Sync + 'static;
}

impl<T: Data> ChangelogStreamExt<T> for Stream<ChangelogRow<T>> {
    fn key_by_row<K, F>(&self, key: F) -> KeyedStream<K, ChangelogRow<T>>
    where
        K: Hash + Serialize + Eq + Clone + Send + 'static,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        self.key_by_local(move |r: &ChangelogRow<T>| key(&r.row))
    }

    fn upserts<K, F>(&self, key: F) -> Stream<(K, Option<T>)>
    where
        K: Data,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        let f = Arc::new(move |r: ChangelogRow<T>| match r.kind {
            RowKind::Insert | RowKind::UpdateAfter => Some((key(&r.row), Some(r.row))),
            RowKind::Delete => Some((key(&r.row), None)),
            RowKind::UpdateBefore => None,
        });
        self.transform("upserts", move |_| Ok(FlatMap::new(Arc::clone(&f))))
    }
}
