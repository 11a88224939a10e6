//! How long a task's checkpoint store takes to open on a worker that
//! takes the task over (issue 16): with and without a standby replica.
//! Against the broker `scripts/kafka.sh start` runs
//! (`TIDELINE_KAFKA_BROKERS`, default 127.0.0.1:19092).
//!
//! A task's checkpoint partition is filled as a RocksDB task's would be:
//! state files of 16 MiB (`shared/<n>.sst`, stored once each) and a
//! checkpoint's metadata; then the owner adds one more checkpoint (two
//! 1 MiB files and its metadata). A new owner then opens the store:
//!
//! - **cold**: it replays the whole partition (what a task moved to a
//!   worker without a replica reads);
//! - **warm**: it starts from a replica that had caught up before the
//!   last checkpoint (what a standby replica gives), so it reads only that
//!   checkpoint's records.
//!
//! Times include fencing the earlier owner (a transactional id's
//! initialization) and exclude the engine's own restore from the files
//! (the same either way). Each figure is the median of 3 rounds; each
//! round makes a new replica, adds a checkpoint, opens warm, then cold.
//!
//! `cargo bench --features kafka --bench standby` (256 and 1,024 MiB of
//! state; `-- --quick` and `cargo test` use 32 MiB). Without a broker it
//! says so and does nothing, unless `CI` is set: then it fails.

#[path = "common/kafka.rs"]
#[allow(dead_code)]
mod kafka_common;

use std::path::Path;
use std::time::{Duration, Instant};

use kafka_common::{quick, reachable_brokers};
use tideline::kafka::workers::{CheckpointReplica, InternalTopics, KafkaCheckpointStore};
use tideline::prelude::*;
use tideline::CheckpointStore;

/// One state file's size.
const FILE: usize = 16 << 20;

/// Bytes that do not compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| Error::io("create", "tempdir", e))
}

/// Stores `len` bytes as `key` through a staged file in `dir`.
fn store(owner: &KafkaCheckpointStore, dir: &Path, key: &str, len: usize, seed: u64) -> Result<()> {
    let staged = dir.join("staged");
    std::fs::write(&staged, noise(len, seed)).map_err(|e| Error::io("write", &staged, e))?;
    owner.store(&staged, key)?;
    Ok(())
}

/// The median of `times`.
fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn main() -> Result<()> {
    let sizes: &[usize] = if quick() {
        &[32 << 20]
    } else {
        &[256 << 20, 1 << 30]
    };
    let Some(brokers) = reachable_brokers("standby")? else {
        return Ok(());
    };
    println!(
        "standby bench: opening a task's checkpoint store on a new owner (fencing included), \
         median of 3"
    );
    for &size in sizes {
        let app = format!("bench-standby-{}-{}", std::process::id(), size >> 20);
        let topics = InternalTopics::new(&brokers, &app, 1);
        topics.ensure_checkpoint_topics(&[1])?;
        let topic = topics.checkpoint_topic(0);
        let txn = format!("{app}-checkpoints-0-0");
        let (owner_dir, replica_dir, open_dir) = (tempdir()?, tempdir()?, tempdir()?);
        let mut owner = KafkaCheckpointStore::open(&brokers, &topic, 0, &txn, owner_dir.path())?;
        let started = Instant::now();
        for n in 0..size.div_ceil(FILE) {
            store(
                &owner,
                owner_dir.path(),
                &format!("shared/{n}.sst"),
                FILE,
                n as u64,
            )?;
        }
        owner.write("chk-0000000001/_metadata", b"{\"checkpoint\":1}")?;
        let written = started.elapsed();
        let (mut cold, mut warm, mut caught_up) = (Vec::new(), Vec::new(), Duration::ZERO);
        let (mut cold_stats, mut warm_stats) = (None, None);
        for round in 0..3u64 {
            // A standby's replica, caught up before the owner's next
            // checkpoint.
            let mut replica = CheckpointReplica::new(&topic, 0, &replica_dir.path().join("r"))?;
            let started = Instant::now();
            replica.catch_up(&brokers)?;
            caught_up = started.elapsed();
            let checkpoint = round + 2;
            for n in 0..2 {
                let key = format!("shared/{checkpoint}-{n}.sst");
                store(&owner, owner_dir.path(), &key, 1 << 20, checkpoint * 10 + n)?;
            }
            owner.write(
                &format!("chk-{checkpoint:010}/_metadata"),
                format!("{{\"checkpoint\":{checkpoint}}}").as_bytes(),
            )?;
            let started = Instant::now();
            let taker = KafkaCheckpointStore::open_from(
                &brokers,
                &topic,
                0,
                &txn,
                &open_dir.path().join(format!("warm-{round}")),
                Some(replica),
            )?;
            warm.push(started.elapsed());
            warm_stats = Some(taker.replayed());
            let started = Instant::now();
            // It fences the warm one, and owns the next round.
            owner = KafkaCheckpointStore::open(
                &brokers,
                &topic,
                0,
                &txn,
                &open_dir.path().join(format!("cold-{round}")),
            )?;
            cold.push(started.elapsed());
            cold_stats = Some(owner.replayed());
            drop(taker);
        }
        let (cold, warm) = (median(cold), median(warm));
        let (Some(cold_stats), Some(warm_stats)) = (cold_stats, warm_stats) else {
            return Err(Error::user("no round ran"));
        };
        let mib = size as f64 / f64::from(1 << 20);
        println!(
            "  {mib:>6.0} MiB of state: written in {:.1} s; a replica caught up from nothing in {:.2} s",
            written.as_secs_f64(),
            caught_up.as_secs_f64()
        );
        println!(
            "    cold (whole partition, {} records)   {:>8.3} s   {:>6.2} s per GiB",
            cold_stats.records,
            cold.as_secs_f64(),
            cold.as_secs_f64() * 1024.0 / mib
        );
        println!(
            "    warm (standby replica, {} records)     {:>8.3} s   {:>6.1} x faster",
            warm_stats.records,
            warm.as_secs_f64(),
            cold.as_secs_f64() / warm.as_secs_f64()
        );
        if !warm_stats.from_replica || warm_stats.records >= cold_stats.records {
            return Err(Error::user(format!(
                "the warm opening did not start from its replica: {warm_stats:?}"
            )));
        }
    }
    Ok(())
}
