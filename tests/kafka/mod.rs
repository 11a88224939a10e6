//! Tests against a real Kafka broker: the one `scripts/test.sh` starts
//! (its address in `TIDELINE_KAFKA_BROKERS`). Each test makes its own
//! uniquely named topics. Without a broker a test says so and passes, unless
//! `CI` is set: then it fails, loudly.

// Test setup (topics, producers, child processes) fails by panicking, with
// the step that failed.
#![allow(clippy::expect_used)]

mod checkpoint_store;
mod discovery;
mod exactly_once;
mod live_and_replay;
mod sink;
mod source;
mod workers;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tideline::kafka::rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use tideline::kafka::rdkafka::client::DefaultClientContext;
use tideline::kafka::rdkafka::config::ClientConfig;
use tideline::kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use tideline::kafka::rdkafka::error::KafkaError;
use tideline::kafka::rdkafka::message::Message;
use tideline::kafka::rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tideline::kafka::rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// The broker's address, or `None` (after saying why) when there is none
/// and `CI` is not set.
pub(crate) fn brokers() -> Option<String> {
    let ci = std::env::var_os("CI").is_some();
    let brokers = match std::env::var("TIDELINE_KAFKA_BROKERS") {
        Ok(b) if !b.is_empty() => b,
        _ if ci => panic!(
            "CI is set but TIDELINE_KAFKA_BROKERS is not: the Kafka tests need the broker \
             scripts/test.sh starts"
        ),
        _ => "127.0.0.1:19092".to_string(),
    };
    let reachable = brokers.split(',').any(|b| {
        b.parse()
            .ok()
            .and_then(|addr| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()
            })
            .is_some()
    });
    if reachable {
        return Some(brokers);
    }
    if ci {
        panic!("CI is set but no Kafka broker answers at {brokers}");
    }
    eprintln!("no Kafka broker at {brokers}: test not run (scripts/test.sh starts one)");
    None
}

/// A topic name no other test (or earlier run) uses.
pub(crate) fn unique_topic(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000);
    format!(
        "{name}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures_executor::block_on(f)
}

/// Creates `topic` with `partitions` partitions.
pub(crate) fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results =
        block_on(admin.create_topics([&new], &AdminOptions::new())).expect("create topic");
    for r in results {
        r.expect("topic created");
    }
    wait_for_partitions(brokers, topic, partitions);
}

/// Waits until `topic`'s metadata shows `partitions` partitions, all led.
fn wait_for_partitions(brokers: &str, topic: &str, partitions: i32) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    for _ in 0..100 {
        if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            if md.topics().iter().any(|t| {
                t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            }) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("topic {topic} has no leaders");
}

/// Adds partitions to `topic` so it has `total`.
pub(crate) fn add_partitions(brokers: &str, topic: &str, total: usize) {
    use tideline::kafka::rdkafka::admin::NewPartitions;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new = NewPartitions::new(topic, total);
    for r in
        block_on(admin.create_partitions([&new], &AdminOptions::new())).expect("add partitions")
    {
        r.expect("partitions added");
    }
    wait_for_partitions(
        brokers,
        topic,
        i32::try_from(total).expect("a partition count"),
    );
}

/// A click: the tests' input records.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct Click {
    pub(crate) user: u32,
    pub(crate) ts: i64,
    pub(crate) seq: u64,
}

/// One record to produce: partition, key, value, Kafka timestamp.
pub(crate) struct Produce {
    pub(crate) partition: i32,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Vec<u8>,
    pub(crate) timestamp: i64,
}

impl Produce {
    /// `click` as JSON into `partition`, its `ts` as the Kafka timestamp.
    pub(crate) fn click(partition: i32, click: &Click) -> Self {
        Self {
            partition,
            key: Some(click.user.to_string().into_bytes()),
            value: serde_json::to_vec(click).expect("json"),
            timestamp: click.ts,
        }
    }
}

/// Writes `records` to `topic`, in order, and waits until they are acknowledged.
pub(crate) fn produce(brokers: &str, topic: &str, records: &[Produce]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for r in records {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition(r.partition)
            .payload(&r.value[..])
            .timestamp(r.timestamp);
        if let Some(key) = &r.key {
            record = record.key(&key[..]);
        }
        let mut pending = record;
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(_), back)) => {
                    producer.poll(Duration::from_millis(10));
                    pending = back;
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// A consumed record's value.
#[derive(Debug)]
pub(crate) struct Consumed {
    pub(crate) key: Option<Vec<u8>>,
    /// Empty for a tombstone.
    pub(crate) value: Vec<u8>,
    /// A record without a value.
    pub(crate) tombstone: bool,
}

/// Everything committed in `topic` (read_committed), to the end offsets it
/// has now, in partition order.
pub(crate) fn consume_all(brokers: &str, topic: &str) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tideline-tests-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut out = Vec::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "reading {topic}/{p} timed out"
            );
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.push(Consumed {
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().unwrap_or_default().to_vec(),
                    tombstone: m.payload().is_none(),
                }),
                Some(Err(KafkaError::PartitionEOF(_))) | None => {
                    let position = consumer.position().expect("position");
                    let at = position
                        .find_partition(topic, p)
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        })
                        .unwrap_or(0);
                    if at >= high {
                        break;
                    }
                }
                Some(Err(e)) => panic!("consume {topic}/{p}: {e}"),
            }
        }
    }
    out
}

/// The values of `topic` decoded from JSON.
pub(crate) fn consume_json<T: serde::de::DeserializeOwned>(brokers: &str, topic: &str) -> Vec<T> {
    consume_all(brokers, topic)
        .into_iter()
        .map(|c| serde_json::from_slice(&c.value).expect("json"))
        .collect()
}

#[allow(dead_code)]
#[path = "../../examples/kafka_windows.rs"]
mod kafka_windows;

#[test]
fn example_kafka_windows_runs_bounded() -> tideline::Result<()> {
    use clap::Parser;
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let topic = unique_topic("example");
    let dir = tempfile::tempdir().map_err(|e| tideline::Error::io("create", "tempdir", e))?;
    let chk = dir.path().join("chk");
    let args = kafka_windows::Args::parse_from([
        "kafka_windows",
        "--brokers",
        &brokers,
        "--clicks",
        &format!("{topic}-clicks"),
        "--results",
        &format!("{topic}-results"),
        "--late",
        &format!("{topic}-late"),
        "--dead-letters",
        &format!("{topic}-dlq"),
        "--transactional-id",
        &topic,
        "--checkpoint-dir",
        &chk.display().to_string(),
        "--create-topics",
        "--generate",
        "5000",
        "--bounded",
    ]);
    kafka_windows::run(&args)?;
    let results: Vec<kafka_windows::UserClicks> =
        consume_json(&brokers, &format!("{topic}-results"));
    let late = consume_all(&brokers, &format!("{topic}-late")).len();
    let dead = consume_all(&brokers, &format!("{topic}-dlq")).len();
    let counted: u64 = results.iter().map(|r| r.clicks).sum();
    // 1 in 1,000 malformed; every other click counted or late.
    assert_eq!(dead, 5);
    assert!(late > 0, "the sample has late clicks");
    assert_eq!(counted as usize + late + dead, 5000);
    Ok(())
}
