//! Kafka throughput on this machine, against the broker `scripts/kafka.sh
//! start` runs (`TIDELINE_KAFKA_BROKERS`, default 127.0.0.1:19092):
//!
//! - **raw**: a bare rdkafka consumer reading the input topic to its end
//!   (the limit: nothing is decoded);
//! - **pipeline**: topic → JSON decode → key_by → tumbling 1 s counts →
//!   topic, bounded, at parallelism 1 and 2, at least once and exactly once
//!   (checkpoints every second).
//!
//! Each figure is the input records per second, with its ratio to the raw
//! rate (the best of three reads) measured in the same run: the machine is
//! shared, with the broker on the same 2 cores, so ratios are what count.
//!
//! `cargo bench --features kafka --bench kafka` (2 M records; `-- --quick`,
//! and `cargo test`, use 100 k). Without a broker it says so and does
//! nothing, unless `CI` is set: then it fails.

#[path = "common/kafka.rs"]
mod kafka_common;

use std::time::{Duration, Instant};

use kafka_common::{
    admin, clicks_per_user, create_topic, fail, quick, reachable_brokers, write_input, Row,
};
use tideline::kafka::rdkafka::admin::AdminOptions;
use tideline::kafka::rdkafka::config::ClientConfig;
use tideline::kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use tideline::kafka::rdkafka::error::KafkaError;
use tideline::kafka::rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tideline::kafka::KafkaSink;
use tideline::prelude::*;

/// Records per second of a bare consumer reading `topic` to its end.
fn raw_consume(brokers: &str, topic: &str, records: u64) -> Result<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tideline-bench-raw")
        .set("enable.auto.commit", "false")
        // The fetch settings KafkaSource uses: librdkafka's default 1 s
        // fetch backoff after a full queue throttles a fast reader.
        .set("queued.max.messages.kbytes", "8192")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .map_err(|e| fail("consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| fail("tpl", e))?;
    }
    consumer.assign(&tpl).map_err(|e| fail("assign", e))?;
    let started = Instant::now();
    let mut read = 0;
    let mut bytes = 0usize;
    while read < records {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                use tideline::kafka::rdkafka::message::Message;
                bytes += m.payload().map_or(0, <[u8]>::len);
                read += 1;
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => return Err(fail("consume", e)),
            None => return Err(fail("consume", "no record for 10 s")),
        }
    }
    std::hint::black_box(bytes);
    Ok(records as f64 / started.elapsed().as_secs_f64())
}

/// Records per second of the windows pipeline over `input` into `output`.
fn pipeline(
    brokers: &str,
    input: &str,
    output: &str,
    parallelism: usize,
    exactly_once: bool,
    records: u64,
) -> Result<f64> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("create", "tempdir", e))?;
    let job = Job::new()
        .parallelism(parallelism)
        .mode(ExecutionMode::Bounded)
        .checkpointing(Duration::from_secs(1), dir.path().join("chk"));
    let sink = KafkaSink::<Row>::json(brokers, output)
        .key(|r: &Row| Some(r.user.to_string().into_bytes()));
    let sink = if exactly_once {
        sink.exactly_once(format!("{output}-{parallelism}"))
    } else {
        sink.at_least_once()
    };
    let job = clicks_per_user(job, brokers, input, sink.build()?)?;
    let started = Instant::now();
    let summary = job.run()?;
    let seconds = started.elapsed().as_secs_f64();
    let read = summary.operator("kafka").map_or(0, |o| o.records_out);
    if read != records {
        return Err(Error::Internal(format!("read {read} of {records} records")));
    }
    Ok(records as f64 / seconds)
}

fn main() -> Result<()> {
    let records: u64 = if quick() { 100_000 } else { 6_000_000 };
    let Some(brokers) = reachable_brokers("kafka")? else {
        return Ok(());
    };
    let admin = admin(&brokers)?;
    let run = std::process::id();
    let input = format!("bench-in-{run}");
    create_topic(&admin, &input, 2)?;
    write_input(&brokers, &input, records, 2)?;
    println!(
        "kafka bench: {records} JSON clicks in 2 partitions, events/s (input records per second)"
    );
    // The raw rate is noisy here (the broker shares the 2 cores): the best
    // of three reads is the reference.
    let mut raw: f64 = 0.0;
    for _ in 0..3 {
        raw = raw.max(raw_consume(&brokers, &input, records)?);
    }
    println!("  raw rdkafka consumer (best of 3) {raw:>10.0}");
    for parallelism in [1, 2] {
        for exactly_once in [false, true] {
            let output = format!("bench-out-{run}-{parallelism}-{exactly_once}");
            create_topic(&admin, &output, 2)?;
            let rate = pipeline(
                &brokers,
                &input,
                &output,
                parallelism,
                exactly_once,
                records,
            )?;
            let mode = if exactly_once {
                "exactly once "
            } else {
                "at least once"
            };
            println!(
                "  pipeline p={parallelism} {mode}       {rate:>12.0}   {:>5.2} x raw",
                rate / raw
            );
        }
    }
    let topics: Vec<String> = std::iter::once(input)
        .chain([1, 2].iter().flat_map(|p| {
            [false, true]
                .iter()
                .map(move |e| format!("bench-out-{run}-{p}-{e}"))
        }))
        .collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let _ = futures_executor::block_on(admin.delete_topics(&names, &AdminOptions::new()));
    Ok(())
}
