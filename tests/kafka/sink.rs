//! `KafkaSink` against a real broker: an earlier run's open transaction is
//! aborted when an exactly-once sink with the same prefix starts.

use std::time::Duration;

use tideline::kafka::rdkafka::config::ClientConfig;
use tideline::kafka::rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tideline::kafka::KafkaSink;
use tideline::prelude::*;

use tideline::operators::changelog::{ChangelogRow, ChangelogStreamExt};

use super::{brokers, consume_all, consume_json, create_topic, unique_topic, Click};

#[test]
fn an_earlier_runs_open_transaction_is_aborted_on_start() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let output = unique_topic("lingering");
    create_topic(&brokers, &output, 1);
    let prefix = unique_topic("linger-txn");
    // An earlier run at parallelism 6 left the transaction of subtask 5,
    // slot 2 open on the output topic; it would block read_committed
    // consumers for 10 minutes.
    let zombie: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("transactional.id", format!("{prefix}-5-2"))
        .set("transaction.timeout.ms", "600000")
        .create()
        .expect("producer");
    zombie
        .init_transactions(Duration::from_secs(30))
        .expect("init");
    zombie.begin_transaction().expect("begin");
    let stale = serde_json::to_vec(&Click {
        user: 0,
        ts: 1,
        seq: 999,
    })
    .expect("json");
    zombie
        .send(BaseRecord::<[u8], [u8]>::to(&output).payload(&stale[..]))
        .map_err(|(e, _)| e)
        .expect("send");
    zombie.flush(Duration::from_secs(30)).expect("flush");

    let clicks: Vec<Click> = (0..100)
        .map(|seq| Click {
            user: 1,
            ts: 1_000_000 + seq as i64,
            seq,
        })
        .collect();
    let job = Job::new().mode(ExecutionMode::Bounded);
    job.source(VecSource::new(clicks.clone()), WatermarkStrategy::none())
        .sink(
            KafkaSink::<Click>::json(&brokers, &output)
                .exactly_once(&prefix)
                .build()?,
        );
    job.run()?;

    // Reading to the end works (the open transaction is aborted), and only
    // the job's records are there.
    let mut read: Vec<Click> = consume_json(&brokers, &output);
    read.sort();
    assert_eq!(read, clicks);
    drop(zombie);
    Ok(())
}

#[test]
fn a_changelog_becomes_upserts_and_tombstones_of_a_compacted_topic() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let output = unique_topic("upserts");
    create_topic(&brokers, &output, 1);
    let job = Job::new().parallelism(1).mode(ExecutionMode::Bounded);
    job.source(
        VecSource::new(vec![
            ChangelogRow::insert((1u32, "ada".to_string())),
            ChangelogRow::insert((2, "bob".to_string())),
            ChangelogRow::update_before((1, "ada".to_string())),
            ChangelogRow::update_after((1, "ada l.".to_string())),
            ChangelogRow::delete((2, "bob".to_string())),
        ]),
        WatermarkStrategy::none(),
    )
    .upserts(|row: &(u32, String)| row.0)
    .sink(
        KafkaSink::<(u32, Option<(u32, String)>)>::json_upserts(&brokers, &output)
            .exactly_once(unique_topic("upserts-txn"))
            .build()?,
    );
    job.run()?;
    let records: Vec<(String, Option<String>)> = consume_all(&brokers, &output)
        .into_iter()
        .map(|c| {
            let key = String::from_utf8(c.key.expect("a key")).expect("utf-8");
            let value = (!c.tombstone).then(|| String::from_utf8(c.value).expect("utf-8"));
            (key, value)
        })
        .collect();
    assert_eq!(
        records,
        vec![
            ("1".to_string(), Some(r#"[1,"ada"]"#.to_string())),
            ("2".to_string(), Some(r#"[2,"bob"]"#.to_string())),
            ("1".to_string(), Some(r#"[1,"ada l."]"#.to_string())),
            // A tombstone: a compacted topic forgets key 2.
            ("2".to_string(), None),
        ]
    );
    Ok(())
}
