//! The partition-local lateness rule: with several source partitions read at
//! different speeds, the late set and every window are what a brute-force
//! evaluation of the rule over each partition's own sequence gives, at
//! parallelism 1, 2 and 4 and with any batch size or flush interval.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tideline::prelude::*;
use tideline::prelude::{Rng, SeedableRng, SmallRng};
use tideline::window::Span;
use tideline::{ReaderContext, Record, SourceOutput, SourceReader, SourceStatus};

use super::{add, count_sum_min_max, to_table, Event, Table};

const BOUND: i64 = 100;

/// A source whose partition 0 is slow: its reader answers `Pending` on all
/// but every `every`-th poll, so the other partitions run far ahead of it in
/// processing time (and so in the operator's watermark, were it the judge).
struct SlowFirstPartition {
    inner: VecSource<Event>,
    every: usize,
}

struct SlowReader {
    inner: Box<dyn SourceReader<Event>>,
    every: usize,
    polls: AtomicUsize,
}

impl SourceReader<Event> for SlowReader {
    fn poll(&mut self, out: &mut SourceOutput<Event>) -> Result<SourceStatus> {
        if self.polls.fetch_add(1, Ordering::Relaxed) % self.every != 0 {
            return Ok(SourceStatus::Pending);
        }
        self.inner.poll(out)
    }
}

impl Source<Event> for SlowFirstPartition {
    fn partitions(&self) -> usize {
        self.inner.partitions()
    }
    fn is_bounded(&self) -> bool {
        true
    }
    fn create_reader(
        &self,
        partition: usize,
        ctx: &ReaderContext,
    ) -> Result<Box<dyn SourceReader<Event>>> {
        let inner = self.inner.create_reader(partition, ctx)?;
        Ok(if partition == 0 {
            Box::new(SlowReader {
                inner,
                every: self.every,
                polls: AtomicUsize::new(0),
            })
        } else {
            inner
        })
    }
}

/// Seeded partitions: each advances ~`step` ms per event with disorder up to
/// twice the bound; the last one runs `behind` ms behind the others.
pub(super) fn partitions(
    seed: u64,
    count: usize,
    per_partition: usize,
    behind: i64,
) -> Vec<Vec<Event>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..count)
        .map(|p| {
            let shift = if p + 1 == count { -behind } else { 0 };
            let step = rng.gen_range(2..6);
            (0..per_partition)
                .map(|i| {
                    (
                        rng.gen_range(0..7u64),
                        i as i64 * step - rng.gen_range(0..=2 * BOUND) + shift,
                        rng.gen_range(-50..50),
                    )
                })
                .collect()
        })
        .collect()
}

/// The rule by brute force: per partition, the watermark just before each
/// record is `max(earlier ts) - BOUND - 1`; a record counts in each of its
/// windows with `end - 1 > W`, and is late when that leaves none.
fn reference(
    parts: &[Vec<Event>],
    windows_of: impl Fn(i64) -> Vec<TimeWindow>,
) -> (Table, Vec<Event>) {
    let (mut table, mut late) = (Table::new(), Vec::new());
    for part in parts {
        let mut max_ts = i64::MIN;
        for e in part {
            let w = if max_ts == i64::MIN {
                i64::MIN
            } else {
                max_ts - BOUND - 1
            };
            let live: Vec<TimeWindow> = windows_of(e.1)
                .into_iter()
                .filter(|win| win.end - 1 > w)
                .collect();
            if live.is_empty() {
                late.push(*e);
            }
            for win in live {
                add(&mut table, e.0, win, e.2);
            }
            max_ts = max_ts.max(e.1);
        }
    }
    late.sort();
    (table, late)
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    Tumbling,
    Sliding,
    Session,
}

const GAP: i64 = 50;

const SIZE: i64 = 200;
const SLIDE: i64 = 50;

fn windows_of(kind: Kind, ts: i64) -> Vec<TimeWindow> {
    match kind {
        Kind::Tumbling => {
            let start = ts - ts.rem_euclid(SIZE);
            vec![TimeWindow::new(start, start + SIZE)]
        }
        Kind::Sliding => {
            let last = ts - ts.rem_euclid(SLIDE);
            (0..SIZE / SLIDE)
                .map(|k| last - k * SLIDE)
                .map(|s| TimeWindow::new(s, s + SIZE))
                .collect()
        }
        // A session record's own window: what its lateness is judged by.
        Kind::Session => vec![TimeWindow::new(ts, ts + GAP)],
    }
}

/// Every window result in emission order, the late records (sorted), and
/// the count of records late by the operator's watermark.
type Outcome = (
    Vec<WindowResult<u64, (u64, i64, i64, i64)>>,
    Vec<Event>,
    u64,
);

/// One run over `parts` (partition 0 slowed), with allowed lateness `lateness` ms.
fn run_with(
    kind: Kind,
    parts: &[Vec<Event>],
    config: (usize, usize, u64),
    lateness: i64,
) -> Result<Outcome> {
    let (results, late, by_operator, _) =
        run_aggregate(kind, parts, config, lateness, count_sum_min_max())?;
    Ok((results, late, by_operator))
}

/// What [`run_aggregate`] returns: the results, the late records (sorted),
/// the count late by the operator's watermark, and how many records (or
/// pre-aggregated partials) the window operator received.
pub(super) type AggregateOutcome<R> = (Vec<WindowResult<u64, R>>, Vec<Event>, u64, u64);

/// As [`run_with`], aggregating with `agg`.
pub(super) fn run_aggregate<A>(
    kind: Kind,
    parts: &[Vec<Event>],
    (parallelism, batch, flush_ms): (usize, usize, u64),
    lateness: i64,
    agg: A,
) -> Result<AggregateOutcome<A::Out>>
where
    A: tideline::window::AggregateFunction<Event>,
{
    let job = Job::new()
        .parallelism(parallelism)
        .batch_size(batch)
        .flush_interval(Duration::from_millis(flush_ms))
        .mode(ExecutionMode::Bounded);
    let late_tag = OutputTag::<Event>::new("late");
    let source = SlowFirstPartition {
        inner: VecSource::partitioned(
            parts
                .iter()
                .map(|p| p.iter().map(|e| Record::new(e.1, *e)).collect())
                .collect(),
        ),
        every: 7,
    };
    let keyed = job
        .source(
            source,
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(BOUND as u64)),
        )
        .key_by(|e: &Event| e.0);
    let windowed = match kind {
        Kind::Tumbling => keyed.window(Tumbling::of(Span::millis(SIZE))),
        Kind::Sliding => keyed.window(Sliding::of(Span::millis(SIZE), Span::millis(SLIDE))),
        Kind::Session => keyed.window(Session::with_gap(Span::millis(GAP))),
    };
    let results = windowed
        .allowed_lateness(Span::millis(lateness))
        .side_output_late_data(&late_tag)
        .aggregate(agg);
    let (out, late) = (CollectSink::new(), CollectSink::new());
    results.sink(out.clone());
    results.side_output(&late_tag).sink(late.clone());
    let metrics = job.metrics();
    let summary = job.run()?;
    let mut late = late.values();
    late.sort();
    let window_input = metrics
        .snapshot()
        .operator("window_aggregate")
        .map_or(0, |o| o.total().records_in);
    Ok((
        out.values(),
        late,
        summary.late_by_operator_watermark,
        window_input,
    ))
}

/// One run without allowed lateness: windows (each fired once) and late records.
fn run(
    kind: Kind,
    parts: &[Vec<Event>],
    parallelism: usize,
    batch: usize,
    flush_ms: u64,
) -> Result<(Table, Vec<Event>, u64)> {
    let (results, late, by_operator) = run_with(kind, parts, (parallelism, batch, flush_ms), 0)?;
    Ok((to_table(results), late, by_operator))
}

fn check(kind: Kind, seed: u64, count: usize, behind: i64) -> Result<()> {
    let parts = partitions(seed, count, 600, behind);
    let (want_windows, want_late) = reference(&parts, |ts| windows_of(kind, ts));
    let total: usize = parts.iter().map(Vec::len).sum();
    for (parallelism, batch, flush) in [(1, 1024, 50), (2, 7, 1), (4, 64, 5)] {
        let (windows, late, by_operator) = run(kind, &parts, parallelism, batch, flush)?;
        assert_eq!(
            late, want_late,
            "{kind:?} p={parallelism} batch={batch}: late set"
        );
        assert_eq!(
            windows, want_windows,
            "{kind:?} p={parallelism} batch={batch}: windows"
        );
        assert_eq!(
            by_operator, 0,
            "no partition idles, so only the rule decides"
        );
        if let Kind::Tumbling = kind {
            let counted: u64 = windows.values().map(|v| v.0).sum();
            assert_eq!(counted as usize + late.len(), total, "conservation");
        }
    }
    Ok(())
}

#[test]
fn tumbling_late_set_and_windows_follow_the_rule() -> Result<()> {
    // A fixed case with a partition far behind: under the operator-watermark
    // rule most of its records would be late, depending on timing.
    let parts = partitions(3, 3, 600, 5_000);
    let (_, late) = reference(&parts, |ts| windows_of(Kind::Tumbling, ts));
    assert!(late.len() > 20, "the case must exercise lateness");
    check(Kind::Tumbling, 3, 3, 5_000)
}

#[test]
fn sliding_windows_count_records_only_where_they_are_not_late() -> Result<()> {
    check(Kind::Sliding, 5, 3, 5_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, .. ProptestConfig::default() })]

    #[test]
    fn random_partitions_give_the_rule_at_any_parallelism(
        seed in 0u64..1_000,
        count in 2usize..5,
        behind in 0i64..3_000,
        sliding in any::<bool>(),
    ) {
        let kind = if sliding { Kind::Sliding } else { Kind::Tumbling };
        check(kind, seed, count, behind).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}

/// With allowed lateness `L`, a record counts in each of its windows with
/// `end - 1 + L > W_p(r)`: every window's *final* value (its last firing)
/// follows the rule at any parallelism, partial panes included.
#[test]
fn allowed_lateness_final_values_follow_the_rule() -> Result<()> {
    const L: i64 = 120;
    let parts = partitions(13, 3, 600, 3_000);
    let total: usize = parts.iter().map(Vec::len).sum();
    for kind in [Kind::Tumbling, Kind::Sliding] {
        // The reference with the cleanup time `end - 1 + L` in place of `end - 1`.
        let (want, want_late) = reference(&parts, |ts| {
            windows_of(kind, ts)
                .into_iter()
                .map(|w| TimeWindow::new(w.start, w.end + L))
                .collect()
        });
        let want: Table = want
            .into_iter()
            .map(|((k, start, end), v)| ((k, start, end - L), v))
            .collect();
        for config in [(1, 1024, 50), (2, 7, 1), (4, 64, 5)] {
            let parallelism = config.0;
            let (results, late, _) = run_with(kind, &parts, config, L)?;
            // The last firing of each window is its final value.
            let mut last = Table::new();
            for r in results {
                last.insert((r.key, r.window.start, r.window.end), r.value);
            }
            assert_eq!(late, want_late, "{kind:?} p={parallelism}: late set");
            assert_eq!(last, want, "{kind:?} p={parallelism}: final values");
            if let Kind::Tumbling = kind {
                let counted: u64 = last.values().map(|v| v.0).sum();
                assert_eq!(counted as usize + late.len(), total, "conservation");
            }
        }
    }
    Ok(())
}

/// Sessions: the late set follows the rule (a record is late when its own
/// window `[ts, ts + gap)` is) at every parallelism and batch size, and
/// every record is counted or late; how sessions merge may differ, so only
/// the counts' total is compared.
#[test]
fn session_late_set_follows_the_rule() -> Result<()> {
    let parts = partitions(9, 3, 600, 2_000);
    let (_, want_late) = reference(&parts, |ts| windows_of(Kind::Session, ts));
    assert!(want_late.len() > 20, "the case must exercise lateness");
    for (parallelism, batch, flush) in [(1, 1024, 50), (2, 7, 1), (4, 64, 5)] {
        let (windows, late, _) = run(Kind::Session, &parts, parallelism, batch, flush)?;
        assert_eq!(late, want_late, "p={parallelism} batch={batch}: late set");
        let counted: u64 = windows.values().map(|v| v.0).sum();
        assert_eq!(counted as usize + late.len(), 1_800, "conservation");
    }
    Ok(())
}

/// Flink's rule stays available, and differs: it judges by the operator's
/// watermark at arrival. Here each partition fits one batch, and the source
/// reads its partitions round-robin, so every record arrives before the
/// first watermark and none is late, where the partition-local rule finds
/// the records behind their own partition's watermark.
#[test]
fn operator_watermark_rule_is_an_option() -> Result<()> {
    let parts = partitions(3, 3, 600, 5_000);
    let (_, rule_late) = reference(&parts, |ts| windows_of(Kind::Tumbling, ts));
    assert!(rule_late.len() > 20);
    let job = Job::new()
        .lateness_rule(tideline::time::LatenessRule::OperatorWatermark)
        .batch_size(1024)
        .mode(ExecutionMode::Bounded);
    let late_tag = OutputTag::<Event>::new("late");
    let results = job
        .source(
            VecSource::partitioned(
                parts
                    .iter()
                    .map(|p| p.iter().map(|e| Record::new(e.1, *e)).collect())
                    .collect(),
            ),
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(BOUND as u64)),
        )
        .key_by(|e: &Event| e.0)
        .window(Tumbling::of(Span::millis(SIZE)))
        .side_output_late_data(&late_tag)
        .aggregate(Count);
    let (out, late) = (CollectSink::new(), CollectSink::new());
    results.sink(out.clone());
    results.side_output(&late_tag).sink(late.clone());
    let summary = job.run()?;
    let counted: u64 = out.values().iter().map(|r| r.value).sum();
    assert_eq!(
        counted, 1_800,
        "nothing is late by the operator's watermark"
    );
    assert!(late.is_empty());
    assert_eq!(summary.late_records, 0);
    Ok(())
}

/// A partition that was idle resumes behind the operator's watermark: its
/// records whose window already fired are late for the "operator
/// watermark" reason (the rule's guarantee does not cover idleness), they
/// are counted apart, and nothing is lost.
#[test]
fn idle_partition_resuming_behind_is_late_for_its_own_reason() -> Result<()> {
    use tideline::testing::TestJob;
    let t = TestJob::new();
    let clock = t.clock();
    let (source, handles) = PushSource::<Event>::with_partitions(2, None);
    let strategy = WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO)
        .with_idleness(Duration::from_millis(100));
    let late_tag = OutputTag::<Event>::new("late");
    let counts = t
        .job()
        .source(source, strategy)
        .key_by(|e: &Event| e.0)
        .window(Tumbling::of(Span::millis(SIZE)))
        .side_output_late_data(&late_tag)
        .aggregate(Count);
    let out = t.collect(&counts);
    let late = t.collect(&counts.side_output(&late_tag));
    let mut run = t.start()?;
    handles[0].send_at(100, (1, 100, 1))?;
    run.step()?;
    clock.set(150); // partition 1 never sent anything: idle
    handles[0].send_at(1_000, (1, 1_000, 2))?;
    run.step()?;
    // The operator's watermark is 999: window [0, 200) fired with one record.
    assert_eq!(out.values().len(), 1);
    // Partition 1 resumes: its own watermark is -inf, so by the rule alone
    // nothing of it is late, but [0, 200) is gone.
    handles[1].send_at(150, (1, 150, 3))?;
    handles[1].send_at(1_100, (1, 1_100, 4))?;
    run.step()?;
    let summary = run.finish()?;
    assert_eq!(late.values(), vec![(1, 150, 3)]);
    assert_eq!(summary.late_records, 1);
    assert_eq!(summary.late_by_operator_watermark, 1);
    let counted: u64 = out.values().iter().map(|r| r.value).sum();
    assert_eq!(counted + 1, 4, "every record counted or late");
    Ok(())
}
