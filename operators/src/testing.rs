//! Test harnesses for users' jobs and operators — what Kafka Streams'
//! `TopologyTestDriver` and Flink's operator harnesses give their users.
//!
//! Everything runs in the test's thread: push records and watermarks in,
//! call [`TestRun::step`] (which processes everything that can be processed),
//! then assert on what the sinks hold. Processing time is a [`ManualClock`]
//! that only moves when the test says so. Nothing sleeps; results do not
//! depend on thread timing.
//!
//! ```
//! use tideline_operators::prelude::*;
//! use tideline_operators::testing::TestJob;
//!
//! let t = TestJob::new();
//! let (input, numbers) = t.push_source::<i64>(WatermarkStrategy::none());
//! let doubled = t.collect(&numbers.map(|x| x * 2));
//! let mut run = t.start()?;
//! input.send_at(10, 21)?;
//! input.watermark(10)?;
//! run.step()?;
//! assert_eq!(doubled.values(), vec![42]);
//! assert_eq!(doubled.watermarks(), vec![EventTime::from_millis(10)]);
//! # Ok::<(), tideline_engine::Error>(())
//! ```

use std::sync::Arc;
use std::time::Duration;

use tideline_engine::time::{ManualClock, WatermarkStrategy};
use tideline_engine::{
    Data, Error, EventTime, Job, JobSummary, LocalRun, OutputTag, Record, Result, Stream,
};

use crate::connectors::{CollectSink, PushSource, SourceHandle};
use crate::process::{KeyedProcessExt, KeyedProcessFunction};

/// A job under test: a [`Job`] on a [`ManualClock`] (starting at 0), with
/// helpers to add push sources and collecting sinks.
#[derive(Debug)]
pub struct TestJob {
    job: Job,
    clock: Arc<ManualClock>,
}

impl Default for TestJob {
    fn default() -> Self {
        Self::new()
    }
}

impl TestJob {
    /// A streaming job at parallelism 1.
    pub fn new() -> Self {
        Self::from_job(Job::new())
    }

    /// Wraps `job` (keeping its configuration), replacing its clock.
    pub fn from_job(job: Job) -> Self {
        let clock = Arc::new(ManualClock::new(0));
        Self {
            job: job.clock(Arc::clone(&clock) as Arc<dyn tideline_engine::time::Clock>),
            clock,
        }
    }

    /// The job, to add other sources.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// The processing-time clock.
    pub fn clock(&self) -> Arc<ManualClock> {
        Arc::clone(&self.clock)
    }

    /// A one-partition push source; feed it through the returned handle.
    pub fn push_source<T: Data>(
        &self,
        strategy: WatermarkStrategy<T>,
    ) -> (SourceHandle<T>, Stream<T>) {
        let (source, handle) = PushSource::new();
        (handle, self.job.source(source, strategy))
    }

    /// Collects `stream` into a sink the test reads.
    pub fn collect<T: Data>(&self, stream: &Stream<T>) -> CollectSink<T> {
        let sink = CollectSink::new();
        stream.sink(sink.clone());
        sink
    }

    /// Validates the job and prepares it for stepping.
    ///
    /// # Errors
    /// A validation error.
    pub fn start(self) -> Result<TestRun> {
        Ok(TestRun {
            run: self.job.start_local()?,
            clock: self.clock,
        })
    }
}

/// A started [`TestJob`].
#[derive(Debug)]
pub struct TestRun {
    run: LocalRun,
    clock: Arc<ManualClock>,
}

impl TestRun {
    /// Processes everything that can be processed now.
    ///
    /// # Errors
    /// The job's first failure.
    pub fn step(&mut self) -> Result<()> {
        self.run.step()
    }

    /// Steps without flushing partial batches (see `LocalRun::step_unflushed`).
    ///
    /// # Errors
    /// The job's first failure.
    pub fn step_unflushed(&mut self) -> Result<()> {
        self.run.step_unflushed().map(|_| ())
    }

    /// Moves processing time forward by `d`, then steps (processing-time
    /// timers due by then fire).
    ///
    /// # Errors
    /// The job's first failure.
    pub fn advance_processing_time(&mut self, d: Duration) -> Result<()> {
        self.clock.advance(d);
        self.step()
    }

    /// Ends every source (watermark `+inf`: all timers fire) and runs to completion.
    ///
    /// # Errors
    /// The job's first failure.
    pub fn finish(self) -> Result<JobSummary> {
        self.run.finish()
    }

    /// The summary so far.
    pub fn summary(&self) -> JobSummary {
        self.run.summary()
    }

    /// The job's tasks (`source[0]`, `key_by[1]`...): chained operators share one.
    pub fn task_names(&self) -> Vec<String> {
        self.run.task_names()
    }
}

/// Drives one [`KeyedProcessFunction`] record by record.
///
/// ```
/// use tideline_operators::prelude::*;
/// use tideline_operators::testing::KeyedProcessHarness;
///
/// /// Emits the key one second (event time) after each record.
/// #[derive(Clone)]
/// struct Remind;
/// impl KeyedProcessFunction<u32, u32, u32> for Remind {
///     fn process_element(&mut self, _v: u32, ctx: &mut ProcessContext<'_, u32, u32>) -> Result<()> {
///         let at = ctx.timestamp().saturating_add_millis(1_000);
///         ctx.register_event_time_timer(at);
///         Ok(())
///     }
///     fn on_timer(&mut self, _at: EventTime, ctx: &mut ProcessContext<'_, u32, u32>) -> Result<()> {
///         let key = *ctx.key();
///         ctx.collect(key);
///         Ok(())
///     }
/// }
/// let mut h = KeyedProcessHarness::new(|v: &u32| *v, Remind);
/// h.process_element(0, 7)?;
/// h.process_watermark(999)?;
/// assert!(h.take_output().is_empty());
/// h.process_watermark(1_000)?;
/// assert_eq!(h.take_output(), vec![Record::new(1_000, 7)]);
/// # Ok::<(), tideline_engine::Error>(())
/// ```
pub struct KeyedProcessHarness<I, O> {
    pending: Option<TestJob>,
    run: Option<TestRun>,
    clock: Arc<ManualClock>,
    input: SourceHandle<I>,
    output_stream: Stream<O>,
    output: CollectSink<O>,
}

impl<I, O> std::fmt::Debug for KeyedProcessHarness<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedProcessHarness")
            .field("started", &self.run.is_some())
            .finish()
    }
}

impl<I: Data, O: Data> KeyedProcessHarness<I, O> {
    /// A harness keying input by `key` and running `function`.
    pub fn new<K, KF, F>(key: KF, function: F) -> Self
    where
        K: tideline_state::StateKey,
        KF: Fn(&I) -> K + Send + Sync + 'static,
        F: KeyedProcessFunction<K, I, O> + Clone,
    {
        let t = TestJob::new();
        let (input, stream) = t.push_source::<I>(WatermarkStrategy::none());
        let output_stream = stream.key_by_local(key).process(function);
        let output = t.collect(&output_stream);
        Self {
            clock: t.clock(),
            pending: Some(t),
            run: None,
            input,
            output_stream,
            output,
        }
    }

    /// Collects side output `tag`. Call before the first record.
    ///
    /// # Errors
    /// When the harness has already started.
    pub fn side_output<T: Data>(&mut self, tag: &OutputTag<T>) -> Result<CollectSink<T>> {
        match &self.pending {
            Some(t) => Ok(t.collect(&self.output_stream.side_output(tag))),
            None => Err(Error::config(
                "side_output",
                "register side outputs before the first record",
            )),
        }
    }

    fn run(&mut self) -> Result<&mut TestRun> {
        if let Some(t) = self.pending.take() {
            self.run = Some(t.start()?);
        }
        self.run
            .as_mut()
            .ok_or_else(|| Error::Internal("harness has no run".into()))
    }

    /// Processes `value` at `timestamp`.
    ///
    /// # Errors
    /// The function's error.
    pub fn process_element(&mut self, timestamp: impl Into<EventTime>, value: I) -> Result<()> {
        self.input.send_at(timestamp, value)?;
        self.run()?.step()
    }

    /// Advances the watermark to `watermark` (due event-time timers fire).
    ///
    /// # Errors
    /// The function's error.
    pub fn process_watermark(&mut self, watermark: impl Into<EventTime>) -> Result<()> {
        self.input.watermark(watermark)?;
        self.run()?.step()
    }

    /// Sets processing time to `millis` (due processing-time timers fire).
    ///
    /// # Errors
    /// The function's error.
    pub fn set_processing_time(&mut self, millis: i64) -> Result<()> {
        self.clock.set(millis);
        self.run()?.step()
    }

    /// Removes and returns the output so far.
    pub fn take_output(&mut self) -> Vec<Record<O>> {
        self.output.take()
    }

    /// Ends the input (watermark `+inf`) and returns the rest of the output.
    ///
    /// # Errors
    /// The function's error.
    pub fn finish(mut self) -> Result<Vec<Record<O>>> {
        self.run()?;
        if let Some(run) = self.run.take() {
            run.finish()?;
        }
        Ok(self.output.take())
    }
}
