//! Checkpoint files in a compacted topic (`KafkaCheckpointStore`): what one
//! opener writes, the next one reads back byte for byte (files of several
//! chunks, rewritten shorter, deleted); opening fences the earlier opener;
//! tasks' partitions are apart; a foreign record is refused by name.

use std::path::Path;
use std::sync::Arc;

use tideline::kafka::workers::{
    CheckpointReplica, InternalTopics, KafkaCheckpointStore, KafkaTaskStores,
};
use tideline::prelude::*;
use tideline::{CheckpointStore, TaskCheckpointStores};

use super::{brokers, produce, unique_topic, Produce};

/// Bytes that differ everywhere, so a misplaced chunk shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + u64::from(seed) * 7 + (i as u64 >> 9)) as u8)
        .collect()
}

/// Every key of `store` with its bytes, sorted.
fn contents(store: &dyn CheckpointStore) -> Result<Vec<(String, Vec<u8>)>> {
    let mut keys = store.list("")?;
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let bytes = store.read(&k)?;
            Ok((k, bytes))
        })
        .collect()
}

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| Error::io("create", "tempdir", e))
}

fn open(stores: &KafkaTaskStores, task: usize, staging: &Path) -> Result<Arc<dyn CheckpointStore>> {
    stores.open(0, task, staging)
}

#[test]
fn files_survive_reopening_and_the_earlier_opener_is_fenced() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let app = unique_topic("store");
    InternalTopics::new(&brokers, &app, 1).ensure_checkpoint_topics(&[2])?;
    let stores = KafkaTaskStores::new(&brokers, &app);
    let (dir_a, dir_b, dir_c) = (tempdir()?, tempdir()?, tempdir()?);

    let first = open(&stores, 1, dir_a.path())?;
    assert!(first.list("")?.is_empty());
    // A staged file of three chunks (512 KiB each at most), stored once.
    let big = pattern(1_300_000, 1);
    let staged = dir_a.path().join("staged.sst");
    std::fs::write(&staged, &big).map_err(|e| Error::io("write", &staged, e))?;
    assert!(first.store(&staged, "shared/1.sst")?);
    std::fs::write(&staged, b"other").map_err(|e| Error::io("write", &staged, e))?;
    assert!(
        !first.store(&staged, "shared/1.sst")?,
        "shared files are immutable"
    );
    // A file rewritten with fewer chunks, one deleted, one kept.
    first.write("chk-0000000001/op/0/state", &pattern(1_100_000, 2))?;
    first.write("chk-0000000001/op/0/state", b"short now")?;
    first.write("chk-0000000001/_metadata", b"{\"first\":1}")?;
    first.write("chk-0000000002/op/0/state", &pattern(600_000, 3))?;
    first.delete_all(&["chk-0000000002/op/0/state".to_string()])?;
    first.write("chk-0000000002/_metadata", b"{\"second\":2}")?;
    let written = contents(first.as_ref())?;
    assert_eq!(
        written.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        [
            "chk-0000000001/_metadata",
            "chk-0000000001/op/0/state",
            "chk-0000000002/_metadata",
            "shared/1.sst"
        ]
    );
    assert_eq!(first.read("shared/1.sst")?, big);
    assert_eq!(first.read("chk-0000000001/op/0/state")?, b"short now");

    // The next opener (another worker) reads back exactly that, and fences
    // the first: its writes fail from now on.
    let second = open(&stores, 1, dir_b.path())?;
    assert_eq!(contents(second.as_ref())?, written);
    assert_eq!(
        second.checksum("shared/1.sst")?,
        first.checksum("shared/1.sst")?
    );
    let fetched = dir_b.path().join("restore/1.sst");
    second.fetch("shared/1.sst", &fetched)?;
    assert_eq!(
        std::fs::read(&fetched).map_err(|e| Error::io("read", &fetched, e))?,
        big
    );
    let zombie = first.write("chk-0000000003/_metadata", b"{\"zombie\":3}");
    assert!(zombie.is_err(), "the fenced opener wrote: {zombie:?}");
    let zombie = first.delete("chk-0000000001/_metadata");
    assert!(zombie.is_err(), "the fenced opener deleted: {zombie:?}");
    second.write("chk-0000000003/_metadata", b"{\"third\":3}")?;
    second.delete_all(&[
        "chk-0000000001/_metadata".to_string(),
        "chk-0000000001/op/0/state".to_string(),
    ])?;
    let after = contents(second.as_ref())?;

    // A third opener sees the second's files, none of the zombie's; the
    // other task's partition is empty.
    let third = open(&stores, 1, dir_c.path())?;
    assert_eq!(contents(third.as_ref())?, after);
    assert_eq!(third.read("chk-0000000003/_metadata")?, b"{\"third\":3}");
    let other = open(&stores, 0, &dir_c.path().join("other"))?;
    assert!(other.list("")?.is_empty());
    Ok(())
}

#[test]
fn a_record_that_is_not_a_checkpoint_file_is_refused_by_name() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let app = unique_topic("foreign");
    let topics = InternalTopics::new(&brokers, &app, 1);
    topics.ensure_checkpoint_topics(&[1])?;
    produce(
        &brokers,
        &topics.checkpoint_topic(0),
        &[Produce {
            partition: 0,
            key: Some(b"hello".to_vec()),
            value: b"world".to_vec(),
            timestamp: 0,
        }],
    );
    let dir = tempdir()?;
    let err = KafkaCheckpointStore::open(
        &brokers,
        &topics.checkpoint_topic(0),
        0,
        &format!("{app}-checkpoints-0-0"),
        dir.path(),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("offset 0") && err.contains("not a Tideline checkpoint file"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_checkpoint_topic_that_is_not_compacted_is_refused() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let app = unique_topic("uncompacted");
    let topics = InternalTopics::new(&brokers, &app, 1);
    // Made by hand with the broker's default policy (delete).
    super::create_topic(&brokers, &topics.checkpoint_topic(0), 1);
    let err = crate::error_text(topics.ensure_checkpoint_topics(&[1]));
    assert!(err.contains("cleanup.policy delete, not compact"), "{err}");
    Ok(())
}

/// A replica kept up to date as a standby would be: a store opened from
/// it reads only the records written past its position, and holds the
/// same files as a store that replays the whole partition. A replica of
/// another partition is not used.
#[test]
fn a_store_opened_from_a_replica_reads_only_the_tail() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let app = unique_topic("replica");
    let topics = InternalTopics::new(&brokers, &app, 1);
    topics.ensure_checkpoint_topics(&[2])?;
    let topic = topics.checkpoint_topic(0);
    let txn = format!("{app}-checkpoints-0-1");
    let (dir_a, dir_b, dir_c, dir_r) = (tempdir()?, tempdir()?, tempdir()?, tempdir()?);
    let owner = KafkaCheckpointStore::open(&brokers, &topic, 1, &txn, dir_a.path())?;
    owner.write("chk-0000000001/op/0/state", &pattern(1_200_000, 4))?;
    owner.write("chk-0000000001/_metadata", b"{\"first\":1}")?;
    owner.write("chk-0000000002/_metadata", b"{\"second\":2}")?;

    let mut replica = CheckpointReplica::new(&topic, 1, &dir_r.path().join("replica"))?;
    let read = replica.catch_up(&brokers)?;
    assert_eq!(read, 5, "3 chunks and 2 files");
    assert_eq!(
        replica.files().collect::<Vec<_>>(),
        [
            "chk-0000000001/_metadata",
            "chk-0000000001/op/0/state",
            "chk-0000000002/_metadata"
        ]
    );
    assert!(replica.is_fresh());
    assert_eq!(replica.catch_up(&brokers)?, 0, "nothing new");
    // The owner goes on: a rewrite with fewer chunks, a delete, a file of
    // two chunks.
    owner.write("chk-0000000001/op/0/state", b"short")?;
    owner.delete_all(&["chk-0000000001/_metadata".to_string()])?;
    owner.write("chk-0000000003/op/0/state", &pattern(700_000, 5))?;
    let written = contents(&owner)?;

    let other_partition = CheckpointReplica::new(&topic, 0, &dir_r.path().join("other"))?;
    let not_used = KafkaCheckpointStore::open_from(
        &brokers,
        &topic,
        1,
        &txn,
        dir_c.path(),
        Some(other_partition),
    )?;
    assert!(!not_used.replayed().from_replica);
    let whole = not_used.replayed().records;
    drop(not_used);

    let position = replica.position();
    let taker =
        KafkaCheckpointStore::open_from(&brokers, &topic, 1, &txn, dir_b.path(), Some(replica))?;
    let replayed = taker.replayed();
    assert!(replayed.from_replica, "{replayed:?}");
    assert_eq!(replayed.from_offset, position);
    // 1 chunk, 2 tombstones for the rewrite, 1 for the delete, 2 chunks.
    assert_eq!(
        replayed.records, 6,
        "{replayed:?} (a whole replay read {whole})"
    );
    assert!(whole > replayed.records);
    assert_eq!(contents(&taker)?, written);
    // The earlier owner is fenced as by any opening.
    assert!(owner.write("chk-0000000004/_metadata", b"{}").is_err());
    let fresh = open(&KafkaTaskStores::new(&brokers, &app), 1, dir_c.path())?;
    assert_eq!(contents(fresh.as_ref())?, written);
    Ok(())
}
