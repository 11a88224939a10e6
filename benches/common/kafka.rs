//! What the Kafka benchmarks share: topics, input, and the broker check.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tideline::kafka::rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use tideline::kafka::rdkafka::client::DefaultClientContext;
use tideline::kafka::rdkafka::config::ClientConfig;
use tideline::kafka::rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tideline::kafka::{Bound, KafkaSink, KafkaSource};
use tideline::prelude::*;

/// An input record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Click {
    pub(crate) user: u32,
    pub(crate) ts: i64,
}

/// A window's count, as the pipelines write it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Row {
    pub(crate) user: u32,
    pub(crate) start: i64,
    pub(crate) count: u64,
}

pub(crate) fn fail(what: &str, e: impl std::fmt::Display) -> Error {
    Error::external("Kafka", what, e.to_string())
}

pub(crate) fn admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| fail("admin", e))
}

pub(crate) fn create_topic(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    partitions: i32,
) -> Result<()> {
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for r in futures_executor::block_on(admin.create_topics([&new], &AdminOptions::new()))
        .map_err(|e| fail("create topic", e))?
    {
        r.map_err(|(t, e)| fail(&format!("create topic {t}"), e))?;
    }
    // Metadata propagates to the broker's cache before the topic is usable.
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

/// `records` JSON clicks of 1,000 users, 20 per ms of event time, spread
/// round robin over `partitions` partitions of `topic`.
pub(crate) fn write_input(brokers: &str, topic: &str, records: u64, partitions: u64) -> Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()
        .map_err(|e| fail("producer", e))?;
    for i in 0..records {
        // 20 clicks per ms: a 1 s window holds 20 per user.
        let value = format!(
            "{{\"user\":{},\"ts\":{}}}",
            i * 7 % 1000,
            1_000_000 + i as i64 / 20
        );
        let key = (i % 1000).to_string();
        let mut record = BaseRecord::to(topic)
            .partition((i % partitions) as i32)
            .key(&key)
            .payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(5));
                    record = back;
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| fail("flush", e))
}

/// The brokers of `TIDELINE_KAFKA_BROKERS` if one answers; `None` after
/// saying so when none does, an error when `CI` is set.
pub(crate) fn reachable_brokers(bench: &str) -> Result<Option<String>> {
    let brokers =
        std::env::var("TIDELINE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into());
    let reachable = brokers
        .split(',')
        .filter_map(|b| b.parse().ok())
        .any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if reachable {
        return Ok(Some(brokers));
    }
    if std::env::var_os("CI").is_some() {
        return Err(fail(
            "reach the broker",
            format!("CI is set but nothing answers at {brokers}"),
        ));
    }
    println!("{bench} bench: no broker at {brokers} (scripts/kafka.sh start); nothing measured");
    Ok(None)
}

/// Whether this is a short run: `cargo test`, or `cargo bench -- --quick`.
pub(crate) fn quick() -> bool {
    std::env::args().all(|a| a != "--bench")
        || std::env::args().any(|a| a == "--quick" || a == "--test")
}

/// The benchmarks' job: the JSON clicks of `input` (to its end) →
/// `key_by(user)` → tumbling 1 s counts → `sink`.
pub(crate) fn clicks_per_user(
    job: Job,
    brokers: &str,
    input: &str,
    sink: KafkaSink<Row>,
) -> Result<Job> {
    let source = KafkaSource::builder(brokers)
        .topic(input)
        .bounded(Bound::EndOffsets)
        .json::<Click>()?;
    job.source(
        source,
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(100))
            .with_timestamps(|c: &Click| c.ts),
    )
    .key_by(|c: &Click| c.user)
    .window(Tumbling::of(Duration::from_secs(1)))
    .aggregate(tideline::window::Count)
    .uid("counts")
    .map(|r| Row {
        user: r.key,
        start: r.window.start,
        count: r.value,
    })
    .sink(sink)
    .uid("rows");
    Ok(job)
}
