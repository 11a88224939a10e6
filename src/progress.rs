//! Progress of a running job on the terminal, read from its metrics
//! ([`Job::metrics`](crate::Job::metrics)): records read, the event-time
//! position (the smallest watermark over the source partitions that are
//! neither idle nor finished), the rate and, when every partition is
//! bounded and knows how much it has left (Parquet files, bounded
//! generators, bounded Kafka reads), a bar with a percentage and an ETA.
//! The bar counts from where each partition stood when it was first
//! seen, so a resumed replay shows what is left of this run.
//!
//! On a terminal it is an `indicatif` bar on stderr, redrawn a few times a
//! second; otherwise (a log file, CI) a plain line every
//! [`ProgressOptions::line_interval`] (default 10 s). It reads a metrics
//! snapshot per redraw and never touches the job's threads.
//!
//! ```
//! use tideline::progress::Progress;
//! let job = tideline::Job::new();
//! let progress = Progress::start(job.metrics());
//! // job.run()?;
//! drop(progress); // the last line stays
//! ```

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tideline_engine::metrics::{JobMetrics, MetricsSnapshot, PartitionStatus};
use tideline_engine::EventTime;

/// How progress is shown.
#[derive(Clone, Copy, Debug)]
pub struct ProgressOptions {
    terminal: Option<bool>,
    line_interval: Duration,
}

impl Default for ProgressOptions {
    fn default() -> Self {
        Self {
            terminal: None,
            line_interval: Duration::from_secs(10),
        }
    }
}

impl ProgressOptions {
    /// A bar (`true`) or plain lines (`false`); by default a bar when
    /// stderr is a terminal.
    pub fn terminal(mut self, terminal: bool) -> Self {
        self.terminal = Some(terminal);
        self
    }

    /// Time between plain lines (default 10 s).
    pub fn line_interval(mut self, interval: Duration) -> Self {
        self.line_interval = interval;
        self
    }

    /// Shows the progress of the job whose metrics are `metrics` until the
    /// returned guard is dropped.
    pub fn start(self, metrics: Arc<JobMetrics>) -> Progress {
        let (stop, stopped) = mpsc::channel();
        let stopped = Stop(stopped);
        let terminal = self
            .terminal
            .unwrap_or_else(|| std::io::stderr().is_terminal());
        let interval = self.line_interval;
        let thread = std::thread::Builder::new()
            .name("tideline:progress".into())
            .spawn(move || {
                if terminal {
                    draw_bar(&metrics, &stopped);
                } else {
                    print_lines(&metrics, &stopped, interval);
                }
            })
            .ok();
        Progress {
            stop: Some(stop),
            thread,
        }
    }
}

/// Shows progress until dropped (see the module docs).
#[derive(Debug)]
pub struct Progress {
    /// Dropped to stop the thread, which wakes at once (a job's process
    /// should not wait a redraw interval to exit).
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The drawing thread's end of [`Progress::stop`].
struct Stop(Receiver<()>);

impl Stop {
    /// Whether the guard was dropped.
    fn is_set(&self) -> bool {
        matches!(self.0.try_recv(), Err(mpsc::TryRecvError::Disconnected))
    }

    /// Waits `timeout` or until the guard is dropped; whether it was.
    fn wait(&self, timeout: Duration) -> bool {
        matches!(
            self.0.recv_timeout(timeout),
            Err(RecvTimeoutError::Disconnected)
        )
    }
}

impl Progress {
    /// Progress with the default options: a bar on a terminal, plain lines
    /// every 10 s otherwise.
    pub fn start(metrics: Arc<JobMetrics>) -> Self {
        ProgressOptions::default().start(metrics)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What one redraw shows.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressLine {
    /// Records the sources emitted.
    pub records: u64,
    /// Input consumed and input in all (the sources' units) since the
    /// partitions were first seen, when every partition is bounded and
    /// knows how much it has left.
    pub done_of: Option<(u64, u64)>,
    /// The smallest watermark of the partitions neither idle nor finished.
    pub event_time: Option<EventTime>,
}

/// Turns snapshots into [`ProgressLine`]s, remembering where each
/// partition stood when it was first seen.
#[derive(Clone, Debug, Default)]
pub struct ProgressTracker {
    starts: HashMap<(String, usize), u64>,
}

impl ProgressTracker {
    /// A tracker that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// What `snapshot` shows.
    pub fn line(&mut self, snapshot: &MetricsSnapshot) -> ProgressLine {
        let parts = &snapshot.sources;
        let mut done_of = (!parts.is_empty()).then_some((0u64, 0u64));
        for p in parts {
            let (Some(position), Some(lag), true) = (p.position, p.lag, p.bounded) else {
                done_of = None;
                continue;
            };
            let start = *self
                .starts
                .entry((p.source.clone(), p.partition))
                .or_insert(position);
            let done = position.saturating_sub(start);
            done_of = done_of.map(|(d, all)| (d + done, all + done + lag));
        }
        let event_time = parts
            .iter()
            .filter(|p| p.status == PartitionStatus::Active)
            .filter_map(|p| p.watermark_ms)
            .min()
            .map(EventTime::from_millis);
        ProgressLine {
            records: snapshot.records_read(),
            done_of,
            event_time,
        }
    }
}

impl ProgressLine {
    /// `N records, event time T`.
    pub fn message(&self) -> String {
        let at = self
            .event_time
            .and_then(EventTime::to_datetime)
            .map_or_else(
                || "-".to_string(),
                |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
            );
        format!("{} records, event time {at}", self.records)
    }
}

fn draw_bar(metrics: &JobMetrics, stop: &Stop) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
    let with_total = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{bar:32}] {percent:>3}% {msg}  {per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "));
    let without_total =
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}  {per_sec}");
    if let Ok(style) = &without_total {
        bar.set_style(style.clone());
    }
    let mut tracker = ProgressTracker::new();
    let mut shown_total = None;
    loop {
        let done = stop.is_set();
        let line = tracker.line(&metrics.snapshot());
        match line.done_of {
            Some((position, total)) => {
                if shown_total.is_none() {
                    if let Ok(style) = &with_total {
                        bar.set_style(style.clone());
                    }
                }
                if shown_total != Some(total) {
                    shown_total = Some(total);
                    bar.set_length(total);
                }
                bar.set_position(position);
            }
            None => {
                if shown_total.take().is_some() {
                    if let Ok(style) = &without_total {
                        bar.set_style(style.clone());
                    }
                }
                bar.set_position(line.records);
            }
        }
        bar.set_message(line.message());
        if done {
            bar.abandon();
            return;
        }
        stop.wait(Duration::from_millis(200));
    }
}

fn print_lines(metrics: &JobMetrics, stop: &Stop, interval: Duration) {
    let started = Instant::now();
    let mut next = started + interval;
    let mut tracker = ProgressTracker::new();
    loop {
        // The last line is printed when the guard is dropped.
        let last = stop.wait(next.saturating_duration_since(Instant::now()));
        if !last {
            next += interval;
        }
        let line = tracker.line(&metrics.snapshot());
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let rate = line.records as f64 / secs;
        let share = line.done_of.map_or(String::new(), |(done, all)| {
            // At the rate the input went so far.
            let eta = if done > 0 {
                let left = all.saturating_sub(done) as f64 * secs / done as f64;
                format!(", eta {left:.0} s")
            } else {
                String::new()
            };
            format!(" ({:.1}%{eta})", 100.0 * done as f64 / all.max(1) as f64)
        });
        eprintln!("progress: {}{share}, {rate:.0} records/s", line.message());
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tideline_engine::metrics::PartitionMetrics;

    fn partition(partition: usize, position: u64, lag: u64, bounded: bool) -> PartitionMetrics {
        PartitionMetrics {
            source: "files".into(),
            partition,
            position: Some(position),
            lag: Some(lag),
            watermark_ms: Some(1_000 * partition as i64),
            status: PartitionStatus::Active,
            bounded,
        }
    }

    #[test]
    fn bounded_partitions_count_from_where_they_were_first_seen() {
        let mut snapshot = JobMetrics::default().snapshot();
        let mut tracker = ProgressTracker::new();
        assert_eq!(tracker.line(&snapshot).done_of, None, "no partition yet");
        snapshot.sources = vec![partition(0, 100, 900, true), partition(1, 0, 500, true)];
        let line = tracker.line(&snapshot);
        assert_eq!(line.done_of, Some((0, 1_400)));
        assert_eq!(line.event_time, Some(EventTime::from_millis(0)));
        snapshot.sources = vec![partition(0, 600, 400, true), partition(1, 250, 250, true)];
        snapshot.sources[0].status = PartitionStatus::Idle;
        let line = tracker.line(&snapshot);
        assert_eq!(line.done_of, Some((750, 1_400)));
        assert_eq!(
            line.event_time,
            Some(EventTime::from_millis(1_000)),
            "idle partitions are left out"
        );
        // One unbounded partition: no total (its lag is not what is left).
        snapshot.sources.push(partition(2, 5, 7, false));
        assert_eq!(tracker.line(&snapshot).done_of, None);
    }
}
