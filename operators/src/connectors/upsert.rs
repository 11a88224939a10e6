//! An idempotent upsert-by-key sink for at-least-once pipelines.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use tideline_engine::{Data, Record, Result, Sink};

use super::file::write_csv;

/// The latest value per key, sorted by key, with a count of the records
/// received; shared by the clones of a sink (and its committer) that
/// materialize a table: [`UpsertSink`] and
/// [`ChangelogTableSink`](crate::changelog::ChangelogTableSink).
pub(crate) struct SharedTable<K, V> {
    inner: Arc<Mutex<Table<K, V>>>,
}

#[derive(Debug)]
pub(crate) struct Table<K, V> {
    pub(crate) rows: BTreeMap<K, V>,
    /// Records received, redeliveries included.
    pub(crate) received: u64,
}

impl<K, V> Clone for SharedTable<K, V> {
    /// A clone shares the same table.
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> std::fmt::Debug for SharedTable<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.lock();
        f.debug_struct("Table")
            .field("keys", &table.rows.len())
            .field("received", &table.received)
            .finish()
    }
}

impl<K, V> SharedTable<K, V> {
    /// An empty table.
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Table {
                rows: BTreeMap::new(),
                received: 0,
            })),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Table<K, V>> {
        // A panic elsewhere cannot leave the map half-written; keep reading.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Ord + Clone, V: Clone> SharedTable<K, V> {
    /// The latest value of every key, sorted by key.
    pub(crate) fn values(&self) -> Vec<V> {
        self.lock().rows.values().cloned().collect()
    }

    /// The latest `(key, value)` pairs, sorted by key.
    pub(crate) fn entries(&self) -> Vec<(K, V)> {
        self.lock()
            .rows
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The latest value of `key`.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.lock().rows.get(key).cloned()
    }

    /// How many keys the table holds.
    pub(crate) fn len(&self) -> usize {
        self.lock().rows.len()
    }

    /// Records received, redeliveries included.
    pub(crate) fn received(&self) -> u64 {
        self.lock().received
    }

    /// Counts `n` records received.
    pub(crate) fn count_received(&self, n: usize) {
        self.lock().received += n as u64;
    }
}

/// Keeps the latest value per key, in memory shared by every clone (clone
/// it before handing it to `sink` and read the clone afterwards, like
/// [`CollectSink`](super::CollectSink)).
///
/// Writing is idempotent: a record delivered again (replayed after a
/// restore from a checkpoint) overwrites its earlier version, so the final
/// contents are the same however often records are redelivered, as long as
/// the latest record of each key is the same in every delivery (a
/// deterministic replay). This makes an at-least-once pipeline's output
/// effectively exactly-once without two-phase commit.
///
/// ```
/// use tideline_engine::{Record, Sink};
/// use tideline_operators::connectors::UpsertSink;
///
/// let table = UpsertSink::new(|v: &(u32, i64)| v.0);
/// let mut sink = table.clone();
/// sink.write_batch(vec![Record::new(1, (7, 10)), Record::new(2, (8, 20))])?;
/// // Replayed after a restore: overwrites, no duplicate.
/// sink.write_batch(vec![Record::new(2, (8, 20))])?;
/// assert_eq!(table.values(), vec![(7, 10), (8, 20)]);
/// assert_eq!(table.received(), 3);
/// # Ok::<(), tideline_engine::Error>(())
/// ```
pub struct UpsertSink<K, V> {
    table: SharedTable<K, V>,
    key: Arc<dyn Fn(&V) -> K + Send + Sync>,
}

impl<K, V> std::fmt::Debug for UpsertSink<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.table.lock();
        f.debug_struct("UpsertSink")
            .field("keys", &table.rows.len())
            .field("received", &table.received)
            .finish()
    }
}

impl<K, V> Clone for UpsertSink<K, V> {
    /// A clone shares the same table.
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
            key: Arc::clone(&self.key),
        }
    }
}

impl<K: Ord + Clone + Send + 'static, V: Data> UpsertSink<K, V> {
    /// An empty table keyed by `key`.
    pub fn new(key: impl Fn(&V) -> K + Send + Sync + 'static) -> Self {
        Self {
            table: SharedTable::new(),
            key: Arc::new(key),
        }
    }

    /// The latest value of every key, sorted by key.
    pub fn values(&self) -> Vec<V> {
        self.table.values()
    }

    /// The latest `(key, value)` pairs, sorted by key.
    pub fn entries(&self) -> Vec<(K, V)> {
        self.table.entries()
    }

    /// The latest value of `key`.
    pub fn get(&self, key: &K) -> Option<V> {
        self.table.get(key)
    }

    /// How many keys the table holds.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many records were written, redeliveries included (at least
    /// [`UpsertSink::len`]).
    pub fn received(&self) -> u64 {
        self.table.received()
    }

    /// Writes the latest values, sorted by key, to a CSV file at `path`
    /// under `header` (see [`write_csv`](super::file::write_csv)).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_csv(&self, path: impl AsRef<Path>, header: &[&str]) -> Result<()>
    where
        V: Serialize,
    {
        let values = self.values();
        write_csv(path, header, &values)
    }
}

impl<K: Ord + Clone + Send + 'static, V: Data> Sink<V> for UpsertSink<K, V> {
    fn name(&self) -> &str {
        "upsert"
    }

    fn write_batch(&mut self, batch: Vec<Record<V>>) -> Result<()> {
        // Keys computed outside the lock: user code does not hold it.
        let keyed: Vec<(K, V)> = batch
            .into_iter()
            .map(|r| ((self.key)(&r.value), r.value))
            .collect();
        let mut table = self.table.lock();
        table.received += keyed.len() as u64;
        for (k, v) in keyed {
            table.rows.insert(k, v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tideline_engine::Error;

    #[derive(Clone, Debug, PartialEq, Serialize)]
    struct Count {
        key: String,
        window: i64,
        count: u64,
    }

    fn count(key: &str, window: i64, count: u64) -> Record<Count> {
        Record::new(
            window,
            Count {
                key: key.to_string(),
                window,
                count,
            },
        )
    }

    fn check(condition: bool, what: &str) -> Result<()> {
        if condition {
            Ok(())
        } else {
            Err(Error::user(format!("check failed: {what}")))
        }
    }

    fn key(c: &Count) -> (String, i64) {
        (c.key.clone(), c.window)
    }

    #[test]
    fn redelivered_records_overwrite() -> Result<()> {
        let table = UpsertSink::new(key);
        let mut a = table.clone();
        let mut b = table.clone();
        a.write_batch(vec![count("x", 0, 1), count("y", 0, 2)])?;
        b.write_batch(vec![count("x", 10, 3)])?;
        // A restore replays from the last checkpoint: the same results again.
        a.write_batch(vec![count("y", 0, 2)])?;
        b.write_batch(vec![count("x", 10, 3), count("z", 10, 4)])?;
        check(table.len() == 4, "one entry per key")?;
        check(table.received() == 6, "every delivery counted")?;
        check(
            table.values().iter().map(|c| c.count).collect::<Vec<_>>() == vec![1, 3, 2, 4],
            "sorted by key",
        )?;
        check(
            table.get(&("y".to_string(), 0)).map(|c| c.count) == Some(2),
            "get",
        )?;
        check(table.get(&("w".to_string(), 0)).is_none(), "absent key")?;
        // An update of a key replaces its value.
        a.write_batch(vec![count("x", 0, 9)])?;
        check(
            table.get(&("x".to_string(), 0)).map(|c| c.count) == Some(9),
            "updated",
        )?;
        check(table.len() == 4, "still one entry per key")
    }

    #[test]
    fn same_contents_however_often_redelivered() -> Result<()> {
        let records: Vec<Record<Count>> = (0..20)
            .map(|i| count(&format!("k{}", i % 5), i / 5, u64::try_from(i).unwrap_or(0)))
            .collect();
        let once = UpsertSink::new(key);
        once.clone().write_batch(records.clone())?;
        let replayed = UpsertSink::new(key);
        let mut sink = replayed.clone();
        // Delivered in full, then replays of every suffix (restores).
        for start in [0, 7, 3, 15, 0] {
            sink.write_batch(records[start..].to_vec())?;
        }
        check(once.entries() == replayed.entries(), "same contents")?;
        check(replayed.len() == 20, "exact count")
    }

    #[test]
    fn writes_csv_sorted_by_key() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| Error::user(e.to_string()))?;
        let path = tmp.path().join("out").join("counts.csv");
        let table = UpsertSink::new(key);
        table
            .clone()
            .write_batch(vec![count("b", 0, 2), count("a", 0, 1), count("b", 0, 2)])?;
        table.write_csv(&path, &["key", "window", "count"])?;
        let text = std::fs::read_to_string(&path).map_err(|e| Error::user(e.to_string()))?;
        check(text == "key,window,count\na,0,1\nb,0,2\n", "csv contents")
    }
}
