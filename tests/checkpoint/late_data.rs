//! Recovery with real late data. Lateness is judged per source partition,
//! so a run with late records is deterministic and a crashed-and-restored
//! run must give exactly the windows *and* the late records of an
//! uninterrupted one, also at another parallelism. Sliding windows over a
//! partition that lags the others keep partial panes in their state (records
//! late for some of their windows), which the checkpoints must carry.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tideline::connectors::file::{read_committed, ExactlyOnceCsvSink};
use tideline::prelude::*;
use tideline::window::Span;

use super::{drive, sink_windows, stepped_job, tempdir, Ev, Out};

const EVENTS: u64 = 6_000;

/// How [`lagging`] events are out of order.
#[derive(Clone, Copy)]
struct Disorder {
    /// One record in this many is held up to `late_max` ms.
    late_one_in: u32,
    late_max: i64,
    /// The others up to this many ms.
    jitter: i64,
    /// The last partition runs this far behind in event time.
    behind: i64,
}

/// `EVENTS` events at 20,000/s over `partitions` partitions, 1 ms of event
/// time apart, out of order as `d` says.
fn lagging(
    partitions: usize,
    seed: u64,
    d: Disorder,
) -> GeneratorSource<impl Fn(u64, &mut SmallRng) -> Ev + Send + Sync + 'static> {
    let last = partitions as u64 - 1;
    GeneratorSource::new(move |i: u64, rng: &mut SmallRng| {
        let delay = if rng.gen_ratio(1, d.late_one_in) {
            rng.gen_range(0..d.late_max)
        } else {
            rng.gen_range(0..d.jitter)
        };
        let behind = if i % partitions as u64 == last {
            d.behind
        } else {
            0
        };
        Ev {
            key: rng.gen_range(0..20),
            value: rng.gen_range(0..1_000),
            ts: i as i64 - delay - behind,
        }
    })
    .with_count(EVENTS)
    .with_partitions(partitions)
    .with_seed(seed)
    .with_rate(20_000.0)
}

/// Windows into `dir/out`, late records (`late`) into `dir/late`, exactly once.
fn sink_with_late(
    results: &Stream<WindowResult<u32, (u64, i64)>>,
    late: &OutputTag<Ev>,
    dir: &Path,
) -> Result<()> {
    sink_windows(results, dir)?;
    results
        .side_output(late)
        .sink(ExactlyOnceCsvSink::new(dir.join("late"))?);
    Ok(())
}

/// 3 partitions; partition 2 runs 1.5 s behind in event time; 1 record in
/// 10 up to 1.5 s out of order against a 100 ms bound: late, or late for
/// some of its windows.
pub(crate) fn job(
    dir: &Path,
    clock: &Arc<ManualClock>,
    parallelism: usize,
    checkpoints: bool,
) -> Result<Job> {
    let job = stepped_job(dir, clock, parallelism, checkpoints);
    let source = lagging(
        3,
        5,
        Disorder {
            late_one_in: 10,
            late_max: 1_500,
            jitter: 100,
            behind: 1_500,
        },
    );
    let late = OutputTag::<Ev>::new("late");
    let results = job
        .source(
            source,
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(100))
                .with_timestamps(|e: &Ev| e.ts),
        )
        .key_by(|e: &Ev| e.key)
        .window(Sliding::of(Span::millis(500), Span::millis(100)))
        .side_output_late_data(&late)
        .aggregate((Count, Sum::of(|e: &Ev| e.value)));
    sink_with_late(&results, &late, dir)?;
    Ok(job)
}

/// The windows and late records of an uninterrupted run of the job `build`
/// makes, which must have late data (else the comparisons prove little).
pub(crate) fn uninterrupted(
    build: impl Fn(&Path, &Arc<ManualClock>) -> Result<Job>,
) -> Result<(Vec<Out>, Vec<Ev>)> {
    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    drive(build(dir.path(), &clock)?, &clock, None)?;
    let (rows, late) = committed(dir.path())?;
    assert!(
        late.len() > 50,
        "the run must have late data: {}",
        late.len()
    );
    Ok((rows, late))
}

/// The committed windows and late records in `dir`, sorted.
pub(crate) fn committed(dir: &Path) -> Result<(Vec<Out>, Vec<Ev>)> {
    let mut rows: Vec<Out> = read_committed(dir.join("out"))?;
    let mut late: Vec<Ev> = read_committed(dir.join("late"))?;
    rows.sort();
    late.sort();
    Ok((rows, late))
}

#[test]
fn crash_and_restore_with_late_data_and_partial_panes_is_exact() -> Result<()> {
    let (rows, late) = uninterrupted(|dir, clock| job(dir, clock, 2, false))?;

    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    // Crash after 8, 15 and 22 rounds of 10 ms, restoring at parallelism
    // 3, 1, 2 and finishing at 2.
    let mut last = None;
    for (rounds, parallelism) in [(Some(8), 2), (Some(15), 3), (Some(22), 1), (None, 2)] {
        last = drive(job(dir.path(), &clock, parallelism, true)?, &clock, rounds)?;
    }
    let last = last.ok_or_else(|| Error::user("the last run did not finish"))?;
    assert!(last.restored_from.is_some(), "{last:?}");
    let (restored_rows, restored_late) = committed(dir.path())?;
    assert_eq!(restored_late, late, "the same late records");
    assert_eq!(restored_rows, rows, "the same windows");
    Ok(())
}

/// A late-data job with its timestamps and watermarks assigned after the
/// source by `assign_timestamps`: two partitions at parallelism 2, so each
/// assigner subtask sees one partition's records in order; partition 1
/// runs 1 s behind, so the window operator's watermark (the minimum) is far
/// below what partition 0's assigner judges its records by.
fn assigned_job(dir: &Path, clock: &Arc<ManualClock>, checkpoints: bool) -> Result<Job> {
    let job = stepped_job(dir, clock, 2, checkpoints);
    let source = lagging(
        2,
        9,
        Disorder {
            late_one_in: 8,
            late_max: 800,
            jitter: 50,
            behind: 1_000,
        },
    );
    let late = OutputTag::<Ev>::new("late");
    let results = job
        .source(source, WatermarkStrategy::none())
        .assign_timestamps(
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(50))
                .with_timestamps(|e: &Ev| e.ts),
        )
        .key_by(|e: &Ev| e.key)
        .window(Tumbling::of(Duration::from_millis(200)))
        .side_output_late_data(&late)
        .aggregate((Count, Sum::of(|e: &Ev| e.value)));
    sink_with_late(&results, &late, dir)?;
    Ok(job)
}

#[test]
fn assign_timestamps_keeps_its_watermarks_across_a_restore() -> Result<()> {
    let (rows, late) = uninterrupted(|dir, clock| assigned_job(dir, clock, false))?;

    let dir = tempdir()?;
    let clock = Arc::new(ManualClock::new(0));
    for rounds in [Some(9), Some(17), None] {
        drive(assigned_job(dir.path(), &clock, true)?, &clock, rounds)?;
    }
    let (restored_rows, restored_late) = committed(dir.path())?;
    assert_eq!(restored_late, late, "the same late records");
    assert_eq!(restored_rows, rows, "the same windows");
    Ok(())
}
