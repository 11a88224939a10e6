//! Partitions added while a job runs are found and read, and a restore
//! numbers the partitions as the checkpoint did although a fresh source
//! would sort them differently.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tideline::kafka::KafkaSource;
use tideline::prelude::*;
use tideline::{JobHandle, RestoreFrom};

use super::{add_partitions, brokers, create_topic, produce, unique_topic, Click, Produce};

/// `n` clicks with `seq` from `first` into `topic`'s `partition`.
fn clicks(brokers: &str, topic: &str, partition: i32, first: u64, n: u64) {
    let records: Vec<Produce> = (first..first + n)
        .map(|seq| {
            Produce::click(
                partition,
                &Click {
                    user: 1,
                    ts: 1_000_000 + seq as i64,
                    seq,
                },
            )
        })
        .collect();
    produce(brokers, topic, &records);
}

fn wait_for(read: &AtomicUsize, n: usize, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while read.load(Ordering::SeqCst) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: read {} of {n}",
            read.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A live job over `a` and `b` at parallelism 2, looking for partitions
/// every 200 ms; it counts what it reads into `read` and collects the seqs.
fn start(
    brokers: &str,
    topics: [&str; 2],
    dir: &std::path::Path,
    restore: Option<std::path::PathBuf>,
    read: &Arc<AtomicUsize>,
) -> Result<(JobHandle, CollectSink<u64>, KafkaSource<Click>)> {
    let mut job = Job::new()
        .parallelism(2)
        .checkpointing(Duration::from_secs(3600), dir.join("chk"));
    if let Some(path) = restore {
        job = job.restore(RestoreFrom::Path(path));
    }
    let source = KafkaSource::builder(brokers)
        .topic(topics[0])
        .topic(topics[1])
        .partition_discovery(Some(Duration::from_millis(200)))
        .json::<Click>()?;
    let out = CollectSink::new();
    let counter = Arc::clone(read);
    job.source(source.clone(), WatermarkStrategy::none())
        .inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .map(|c: Click| c.seq)
        .sink(out.clone());
    Ok((job.spawn()?, out, source))
}

fn sorted(out: &CollectSink<u64>) -> Vec<u64> {
    let mut v = out.values();
    v.sort_unstable();
    v
}

#[test]
fn added_partitions_are_read_and_keep_their_numbers_across_a_restore() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let (a, b) = (unique_topic("discover-a"), unique_topic("discover-b"));
    create_topic(&brokers, &a, 1);
    create_topic(&brokers, &b, 1);
    clicks(&brokers, &a, 0, 0, 10);
    clicks(&brokers, &b, 0, 10, 10);
    let dir = tempfile::tempdir().map_err(|e| Error::io("create", "tempdir", e))?;

    let read = Arc::new(AtomicUsize::new(0));
    let (handle, out, source) = start(&brokers, [&a, &b], dir.path(), None, &read)?;
    wait_for(&read, 20, "before the new partition");
    add_partitions(&brokers, &a, 2);
    clicks(&brokers, &a, 1, 20, 10);
    wait_for(&read, 30, "the new partition");
    let appended = vec![(a.clone(), 0), (b.clone(), 0), (a.clone(), 1)];
    assert_eq!(
        source.partition_layout(),
        appended,
        "found partitions are appended"
    );
    handle.stop_with_savepoint(dir.path().join("savepoint"))?;
    let summary = handle.join()?;
    assert_eq!(sorted(&out), (0..30).collect::<Vec<_>>());
    let savepoint = summary.savepoint.expect("stopped with a savepoint");

    // More clicks in every partition, then resume with a fresh source,
    // which sorts the partitions as (a/0, a/1, b/0).
    clicks(&brokers, &a, 0, 30, 5);
    clicks(&brokers, &a, 1, 35, 5);
    clicks(&brokers, &b, 0, 40, 5);
    let read = Arc::new(AtomicUsize::new(0));
    let (handle, out, source) = start(&brokers, [&a, &b], dir.path(), Some(savepoint), &read)?;
    assert_eq!(
        source.partition_layout(),
        appended,
        "numbered as the checkpoint did"
    );
    wait_for(&read, 15, "after the restore");
    handle.stop_and_drain();
    handle.join()?;
    assert_eq!(
        sorted(&out),
        (30..45).collect::<Vec<_>>(),
        "each click once, none again"
    );
    Ok(())
}
