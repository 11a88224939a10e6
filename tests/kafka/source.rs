//! `KafkaSource` against a real broker: start positions, bounded mode,
//! dead letters with their offsets, exact restores, bad configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use tideline::kafka::rdkafka::consumer::{CommitMode, Consumer};
use tideline::kafka::rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tideline::kafka::{Bound, Fallback, KafkaSource, StartOffset};
use tideline::prelude::*;
use tideline::{DeadLetter, ErrorDomain, FailurePolicy, RestoreFrom};

use super::{brokers, create_topic, produce, unique_topic, Click, Produce};

/// `n` clicks into each of 2 partitions: click `i` of partition `p` has
/// `seq = p * 1000 + i` and `ts = 1_000_000 + 1000 * i`.
fn two_partitions(brokers: &str, n: u64) -> String {
    let topic = unique_topic("positions");
    create_topic(brokers, &topic, 2);
    let records: Vec<Produce> = (0..n)
        .flat_map(|i| {
            (0..2).map(move |p| {
                Produce::click(
                    p,
                    &Click {
                        user: 1,
                        // Kafka reads timestamp 0 as "now".
                        ts: 1_000_000 + 1000 * i as i64,
                        seq: p as u64 * 1000 + i,
                    },
                )
            })
        })
        .collect();
    produce(brokers, &topic, &records);
    topic
}

/// The `seq`s a bounded run of `source` reads, sorted.
fn read_all(source: KafkaSource<Click>) -> Result<Vec<u64>> {
    let job = Job::new().mode(ExecutionMode::Bounded).parallelism(2);
    let out = CollectSink::new();
    job.source(source, WatermarkStrategy::none())
        .map(|c: Click| c.seq)
        .sink(out.clone());
    job.run()?;
    let mut seqs = out.values();
    seqs.sort_unstable();
    Ok(seqs)
}

fn seqs(p0: std::ops::Range<u64>, p1: std::ops::Range<u64>) -> Vec<u64> {
    let mut v: Vec<u64> = p0.chain(p1.map(|i| 1000 + i)).collect();
    v.sort_unstable();
    v
}

#[test]
fn start_positions_and_bounds() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let topic = two_partitions(&brokers, 10);
    let builder = || {
        KafkaSource::builder(&brokers)
            .topic(&topic)
            .bounded(Bound::EndOffsets)
    };
    assert_eq!(read_all(builder().json()?)?, seqs(0..10, 0..10), "earliest");
    assert_eq!(
        read_all(builder().start(StartOffset::Latest).json()?)?,
        Vec::<u64>::new(),
        "latest, bounded at the end offsets at start"
    );
    assert_eq!(
        read_all(builder().start(StartOffset::Timestamp(1_006_500)).json()?)?,
        seqs(7..10, 7..10),
        "from a timestamp"
    );
    let offsets = BTreeMap::from([((topic.clone(), 0), 4)]);
    assert_eq!(
        read_all(
            builder()
                .start(StartOffset::Offsets {
                    offsets,
                    fallback: Fallback::Latest
                })
                .json()?
        )?,
        seqs(4..10, 0..0),
        "explicit offsets, the other partition at its end"
    );
    assert_eq!(
        read_all(
            KafkaSource::builder(&brokers)
                .topic(&topic)
                .bounded(Bound::Timestamp(1_002_000))
                .json()?
        )?,
        seqs(0..3, 0..3),
        "bounded at a timestamp"
    );

    // The group's committed offsets, the other partition from its fallback.
    let group = unique_topic("group");
    let consumer: tideline::kafka::rdkafka::consumer::BaseConsumer =
        tideline::kafka::rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .create()
            .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 1, Offset::Offset(8))
        .expect("tpl");
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    assert_eq!(
        read_all(
            builder()
                .group_id(&group)
                .start(StartOffset::Committed {
                    fallback: Fallback::Earliest
                })
                .json()?
        )?,
        seqs(0..10, 8..10),
        "committed offsets"
    );
    Ok(())
}

#[test]
fn undecodable_records_become_dead_letters_with_their_offset() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let topic = unique_topic("dead-letters");
    create_topic(&brokers, &topic, 1);
    let mut records: Vec<Produce> = (0..5)
        .map(|i| {
            Produce::click(
                0,
                &Click {
                    user: 1,
                    ts: 1_000_000 + i,
                    seq: i as u64,
                },
            )
        })
        .collect();
    records.insert(
        2,
        Produce {
            partition: 0,
            key: None,
            value: b"{\"user\": \"not a number\"}".to_vec(),
            timestamp: 2,
        },
    );
    produce(&brokers, &topic, &records);

    let job = Job::new().mode(ExecutionMode::Bounded);
    let source = KafkaSource::builder(&brokers)
        .topic(&topic)
        .bounded(Bound::EndOffsets)
        .json::<Click>()?;
    let clicks = job.source(source, WatermarkStrategy::none());
    let out = CollectSink::new();
    let dead: CollectSink<DeadLetter> = CollectSink::new();
    clicks.dead_letters().sink(dead.clone());
    clicks.map(|c: Click| c.seq).sink(out.clone());
    job.run()?;
    assert_eq!(out.values(), vec![0, 1, 2, 3, 4]);
    let letters = dead.values();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0].offset.as_deref(),
        Some(format!("{topic}/0@2").as_str())
    );
    assert_eq!(letters[0].partition, Some(0));
    assert!(letters[0].reason.contains("Click"), "{}", letters[0].reason);
    assert!(letters[0].record.contains("not a number"));

    // Fail fast instead: the job fails naming the type it expected.
    let job = Job::new()
        .mode(ExecutionMode::Bounded)
        .failure_policy(FailurePolicy::FailFast);
    let source = KafkaSource::builder(&brokers)
        .topic(&topic)
        .bounded(Bound::EndOffsets)
        .json::<Click>()?;
    job.source(source, WatermarkStrategy::none())
        .sink(CollectSink::new());
    let err = job
        .run()
        .expect_err("a record of the wrong type fails the job");
    assert!(err.to_string().contains("Click"), "{err}");
    Ok(())
}

#[test]
fn bad_configuration_fails_at_build_naming_it() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let missing = unique_topic("missing");
    let err = KafkaSource::builder(&brokers)
        .topic(&missing)
        .json::<Click>()
        .expect_err("a missing topic");
    assert!(err.to_string().contains(&missing), "{err}");
    assert_eq!(err.domain(), ErrorDomain::User);

    let err = KafkaSource::builder("127.0.0.1:1")
        .topic("clicks")
        .property("socket.connection.setup.timeout.ms", "1000")
        .property("socket.timeout.ms", "2000")
        .json::<Click>()
        .expect_err("no broker there");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert_eq!(err.domain(), ErrorDomain::External);

    let err = KafkaSource::builder(&brokers)
        .topic("x")
        .property("no.such.property", "1")
        .json::<Click>()
        .expect_err("an unknown property");
    assert!(err.to_string().contains("no.such.property"), "{err}");

    let err = tideline::kafka::KafkaSink::<Click>::json(&brokers, &missing)
        .build()
        .expect_err("a missing output topic");
    assert!(err.to_string().contains(&missing), "{err}");
    Ok(())
}

#[test]
fn a_restore_continues_exactly_at_the_checkpointed_offsets() -> Result<()> {
    use tideline::connectors::file::{read_committed, ExactlyOnceCsvSink};
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let topic = unique_topic("restore");
    create_topic(&brokers, &topic, 3);
    let n = 60_000u64;
    let records: Vec<Produce> = (0..n)
        .map(|i| {
            Produce::click(
                (i % 3) as i32,
                &Click {
                    user: (i % 3) as u32,
                    ts: 1_000_000 + i as i64,
                    seq: i,
                },
            )
        })
        .collect();
    produce(&brokers, &topic, &records);
    let dir = tempfile::tempdir().map_err(|e| Error::io("create", "tempdir", e))?;
    let build = || -> Result<Job> {
        let job = Job::new()
            .parallelism(2)
            .mode(ExecutionMode::Bounded)
            .checkpointing(Duration::from_millis(30), dir.path().join("chk"))
            .restore(RestoreFrom::Latest);
        let source = KafkaSource::builder(&brokers)
            .topic(&topic)
            .bounded(Bound::EndOffsets)
            .json::<Click>()?;
        let seen = std::sync::atomic::AtomicU64::new(0);
        job.source(source, WatermarkStrategy::none())
            // Slow enough that the aborts below land mid-run.
            .inspect(move |_| {
                if seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .map(|c: Click| (c.seq, c.user))
            .sink(ExactlyOnceCsvSink::new(dir.path().join("out"))?);
        Ok(job)
    };
    // Abort the run at a random moment, again and again, until it ends;
    // each run restores the latest checkpoint.
    let mut rng = SmallRng::seed_from_u64(3);
    let mut crashes = 0;
    loop {
        let handle = build()?.spawn()?;
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..120)));
        if handle.is_finished() {
            handle.join()?;
            break;
        }
        handle.stop_handle().abort();
        match handle.join() {
            Ok(_) => break,
            Err(Error::Aborted) => crashes += 1,
            Err(e) => return Err(e),
        }
        assert!(crashes < 500, "the job makes no progress across restores");
    }
    let mut rows: Vec<(u64, u32)> = read_committed(dir.path().join("out"))?;
    rows.sort_unstable();
    assert!(
        crashes >= 2,
        "the job must have been restored: {crashes}, {} rows",
        rows.len()
    );
    let want: Vec<(u64, u32)> = (0..n).map(|i| (i, (i % 3) as u32)).collect();
    assert_eq!(rows.len(), want.len(), "no record lost or doubled");
    assert_eq!(rows, want);
    Ok(())
}

/// Where each partition stands, from the job's metrics: `(position, lag)`.
fn positions(metrics: &tideline::metrics::JobMetrics) -> Vec<(Option<u64>, Option<u64>)> {
    metrics
        .snapshot()
        .sources
        .iter()
        .map(|p| (p.position, p.lag))
        .collect()
}

#[test]
fn partition_positions_and_lag_reach_the_metrics() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let topic = two_partitions(&brokers, 30);
    // Bounded: the lag is what is left before the end offsets.
    let job = Job::new().mode(ExecutionMode::Bounded).parallelism(2);
    let metrics = job.metrics();
    job.source(
        KafkaSource::builder(&brokers)
            .topic(&topic)
            .bounded(Bound::EndOffsets)
            .json::<Click>()?,
        WatermarkStrategy::none(),
    )
    .sink(CollectSink::new());
    job.run()?;
    assert_eq!(
        positions(&metrics),
        [(Some(30), Some(0)), (Some(30), Some(0))]
    );

    // Live: the lag is to the high watermark the last fetch reported.
    let job = Job::new().parallelism(2);
    let metrics = job.metrics();
    job.source(
        KafkaSource::builder(&brokers)
            .topic(&topic)
            .json::<Click>()?,
        WatermarkStrategy::none(),
    )
    .sink(CollectSink::new());
    let handle = job.spawn()?;
    let caught_up = [(Some(30), Some(0)), (Some(30), Some(0))];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while positions(&metrics) != caught_up {
        assert!(
            std::time::Instant::now() < deadline,
            "the metrics never showed both partitions caught up: {:?}",
            positions(&metrics)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    handle.stop_and_drain();
    handle.join()?;
    Ok(())
}
