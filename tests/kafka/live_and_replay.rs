//! Per-partition watermarks over real Kafka partitions: the late records
//! and windows of a bounded replay of a topic are those the partition-local
//! lateness rule gives (computed here independently), at parallelism 1 and
//! 3, and a live run over the same topic, with the records arriving while
//! it runs, gives exactly the same.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tideline::kafka::{Bound, KafkaSource};
use tideline::prelude::*;
use tideline::Data;

use super::{brokers, create_topic, produce, unique_topic, Click, Produce};

/// Window size and out-of-orderness bound of the workload.
const WINDOW: i64 = 500;
const BOUND: i64 = 100;

/// Per-user count of one tumbling window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Count {
    pub(crate) user: u32,
    pub(crate) start: i64,
    pub(crate) count: u64,
}

/// Clicks over `partitions` partitions, each out of order its own way;
/// partition `p` runs `p * 700` ms behind in event time, and one click in 7
/// is held up to 450 ms: late under the 100 ms bound, or not, depending on
/// its own partition only.
pub(crate) fn workload(partitions: i32, per_partition: u64) -> Vec<(i32, Click)> {
    let mut out = Vec::new();
    let mut seq = 0;
    for i in 0..per_partition {
        for p in 0..partitions {
            let base = i as i64 * 10 - i64::from(p) * 700 + 10_000;
            let held = if (i + p as u64) % 7 == 3 {
                ((i * 37) % 450) as i64
            } else {
                ((i * 13) % 60) as i64
            };
            seq += 1;
            out.push((
                p,
                Click {
                    user: ((i * 7 + p as u64) % 5) as u32,
                    ts: base - held,
                    seq,
                },
            ));
        }
    }
    out
}

/// The windows and late clicks the partition-local rule gives, computed
/// from the input alone: a click is late when its window's last
/// millisecond is at or below its own partition's watermark just before it
/// (`max earlier ts - BOUND - 1`).
pub(crate) fn expected(input: &[(i32, Click)]) -> (Vec<Count>, Vec<Click>) {
    let mut max_ts: BTreeMap<i32, i64> = BTreeMap::new();
    let mut counts: BTreeMap<(u32, i64), u64> = BTreeMap::new();
    let mut late = Vec::new();
    for (p, click) in input {
        let watermark = max_ts.get(p).map_or(i64::MIN, |m| m - BOUND - 1);
        let start = click.ts.div_euclid(WINDOW) * WINDOW;
        if start + WINDOW - 1 <= watermark {
            late.push(click.clone());
        } else {
            *counts.entry((click.user, start)).or_default() += 1;
        }
        let m = max_ts.entry(*p).or_insert(i64::MIN);
        *m = (*m).max(click.ts);
    }
    let counts = counts
        .into_iter()
        .map(|((user, start), count)| Count { user, start, count })
        .collect();
    late.sort();
    (counts, late)
}

/// Writes `input` to `topic`, each click into its partition, its `ts` as
/// the Kafka timestamp.
pub(crate) fn write(brokers: &str, topic: &str, input: &[(i32, Click)]) {
    let records: Vec<Produce> = input.iter().map(|(p, c)| Produce::click(*p, c)).collect();
    produce(brokers, topic, &records);
}

/// Per-user tumbling counts over `source` (event time from the Kafka
/// timestamp), late clicks to `late`; every click read counts into `read`.
pub(crate) fn windows_job(
    job: &Job,
    source: KafkaSource<Click>,
    read: Arc<AtomicUsize>,
) -> (CollectSink<Count>, CollectSink<Click>) {
    let late_tag = OutputTag::<Click>::new("late");
    let results = job
        .source(
            source,
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(BOUND as u64)),
        )
        .inspect(move |_| {
            read.fetch_add(1, Ordering::Relaxed);
        })
        .key_by(|c: &Click| c.user)
        .window(Tumbling::of(Duration::from_millis(WINDOW as u64)))
        .side_output_late_data(&late_tag)
        .aggregate(tideline::window::Count);
    let counts = CollectSink::new();
    let late = CollectSink::new();
    results
        .map(|r| Count {
            user: r.key,
            start: r.window.start,
            count: r.value,
        })
        .sink(counts.clone());
    results.side_output(&late_tag).sink(late.clone());
    (counts, late)
}

fn sorted<T: Ord + Clone + Data>(sink: &CollectSink<T>) -> Vec<T> {
    let mut v = sink.values();
    v.sort();
    v
}

/// A bounded replay of `topic` at `parallelism`.
fn replay(brokers: &str, topic: &str, parallelism: usize) -> Result<(Vec<Count>, Vec<Click>)> {
    let job = Job::new()
        .parallelism(parallelism)
        .mode(ExecutionMode::Bounded);
    let source = KafkaSource::builder(brokers)
        .topic(topic)
        .bounded(Bound::EndOffsets)
        .json::<Click>()?;
    let (counts, late) = windows_job(&job, source, Arc::new(AtomicUsize::new(0)));
    job.run()?;
    Ok((sorted(&counts), sorted(&late)))
}

#[test]
fn bounded_replay_judges_lateness_per_kafka_partition() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let topic = unique_topic("replay");
    create_topic(&brokers, &topic, 3);
    let input = workload(3, 400);
    write(&brokers, &topic, &input);
    let (counts, late) = expected(&input);
    assert!(
        late.len() > 30,
        "the workload must have late clicks: {}",
        late.len()
    );
    for parallelism in [1, 3] {
        let (got_counts, got_late) = replay(&brokers, &topic, parallelism)?;
        assert_eq!(got_late, late, "late clicks at parallelism {parallelism}");
        assert_eq!(got_counts, counts, "windows at parallelism {parallelism}");
        let total: u64 = got_counts.iter().map(|c| c.count).sum();
        assert_eq!(total as usize + got_late.len(), input.len());
    }
    Ok(())
}

#[test]
fn a_live_run_gives_what_the_replay_gives() -> Result<()> {
    let Some(brokers) = brokers() else {
        return Ok(());
    };
    let topic = unique_topic("live");
    let input = workload(3, 400);
    for parallelism in [1, 3] {
        let topic = format!("{topic}-{parallelism}");
        create_topic(&brokers, &topic, 3);
        let read = Arc::new(AtomicUsize::new(0));
        let job = Job::new().parallelism(parallelism);
        let source = KafkaSource::builder(&brokers)
            .topic(&topic)
            .json::<Click>()?;
        let (counts, late) = windows_job(&job, source, Arc::clone(&read));
        let handle = job.spawn()?;
        // The clicks arrive while the job runs, in chunks.
        for chunk in input.chunks(97) {
            write(&brokers, &topic, chunk);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while read.load(Ordering::Relaxed) < input.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "the live job did not read everything"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        handle.stop_and_drain();
        handle.join()?;
        let (want_counts, want_late) = replay(&brokers, &topic, parallelism)?;
        assert_eq!(
            sorted(&late),
            want_late,
            "late clicks at parallelism {parallelism}"
        );
        assert_eq!(
            sorted(&counts),
            want_counts,
            "windows at parallelism {parallelism}"
        );
        assert_eq!(expected(&input), (want_counts, want_late));
    }
    Ok(())
}
