//! Parallelism 1 and 4 give the same multiset of outputs; chaining fuses
//! stateless operators into one task.

use tideline::prelude::*;
use tideline::testing::TestJob;

const SUM: ValueStateDescriptor<u64> = ValueStateDescriptor::new("sum");

/// Emits `(key, value, false)` per record and `(key, sum, true)` at the end.
#[derive(Clone)]
struct RunningSum;

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64, bool)> for RunningSum {
    fn process_element(
        &mut self,
        (k, v): (u64, u64),
        ctx: &mut ProcessContext<'_, u64, (u64, u64, bool)>,
    ) -> Result<()> {
        *ctx.value_state(&SUM)?.get_or_insert_with(|| 0) += v;
        ctx.collect((k, v, false));
        ctx.register_event_time_timer(EventTime::MAX);
        Ok(())
    }

    fn on_timer(
        &mut self,
        _at: EventTime,
        ctx: &mut ProcessContext<'_, u64, (u64, u64, bool)>,
    ) -> Result<()> {
        let sum = ctx.value_state(&SUM)?.get().copied().unwrap_or(0);
        let key = *ctx.key();
        ctx.collect((key, sum, true));
        Ok(())
    }
}

type Outputs = Vec<(u64, u64, bool)>;

fn run(parallelism: usize) -> Result<(Outputs, JobSummary)> {
    let job = Job::new()
        .parallelism(parallelism)
        .batch_size(100)
        .mode(ExecutionMode::Bounded);
    let out = CollectSink::new();
    job.source(
        GeneratorSource::new(|i: u64, rng: &mut SmallRng| (rng.gen_range(0..50u64), i))
            .with_count(20_000)
            .with_partitions(4)
            .with_seed(9),
        WatermarkStrategy::none(),
    )
    .filter(|(_, i)| i % 3 != 0)
    .map(|(k, i)| (k, i % 10 + 1))
    .key_by(|(k, _)| *k)
    .process(RunningSum)
    .sink(out.clone());
    let summary = job.run()?;
    let mut values = out.values();
    values.sort();
    Ok((values, summary))
}

#[test]
fn parallelism_one_and_four_agree() -> Result<()> {
    let (one, s1) = run(1)?;
    let (four, s4) = run(4)?;
    assert_eq!(one, four, "same multiset of outputs");
    let finals = |v: &[(u64, u64, bool)]| v.iter().filter(|r| r.2).copied().collect::<Vec<_>>();
    assert_eq!(finals(&one).len(), 50);
    let expected_records = (0..20_000u64).filter(|i| i % 3 != 0).count() as u64;
    for s in [&s1, &s4] {
        assert_eq!(s.operator("generator").map(|o| o.records_out), Some(20_000));
        assert_eq!(
            s.operator("filter").map(|o| o.records_out),
            Some(expected_records)
        );
        assert_eq!(
            s.operator("process").map(|o| o.records_in),
            Some(expected_records)
        );
        assert_eq!(
            s.operator("process").map(|o| o.records_out),
            Some(expected_records + 50)
        );
    }
    assert_eq!(s4.operator("process").map(|o| o.parallelism), Some(4));
    let total: u64 = finals(&one).iter().map(|r| r.1).sum();
    let expected: u64 = (0..20_000u64)
        .filter(|i| i % 3 != 0)
        .map(|i| i % 10 + 1)
        .sum();
    assert_eq!(total, expected);
    Ok(())
}

#[test]
fn stateless_operators_are_chained_into_the_source_task() -> Result<()> {
    let t = TestJob::new();
    let (_input, stream) = t.push_source::<u64>(WatermarkStrategy::none());
    let _out = t.collect(&stream.map(|x| x + 1).filter(|x| x % 2 == 0).inspect(|_| {}));
    let run = t.start()?;
    assert_eq!(run.task_names(), vec!["push_source[0]"]);
    Ok(())
}
