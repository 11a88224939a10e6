//! The job's Prometheus registry (`prometheus-client`), one per web UI,
//! published from each sample: counters advance by what the snapshot adds
//! to the value last published (the snapshot's counts are cumulative over
//! restarts, so they never go down); gauges are set.
//!
//! Names and labels (all prefixed `tideline_`):
//! - `job_status{status}` (1 for the current one), `job_uptime_seconds`,
//!   `job_restarts_total`;
//! - per `operator`, `subtask`: `operator_records_in_total`,
//!   `operator_records_out_total`, `operator_late_records_total`,
//!   `operator_blocked_seconds_total` (backpressure: time blocked sending
//!   downstream), `operator_backpressure_ratio`,
//!   `operator_input_queue_fill_ratio`, `operator_watermark_milliseconds`,
//!   `operator_watermark_lag_seconds`, `operator_state_entries`,
//!   `operator_state_bytes`;
//! - `dead_letters_total{operator, reason}`, `late_records_total`;
//! - per `source`, `partition`: `source_partition_position`,
//!   `source_partition_lag`, `source_partition_watermark_milliseconds`,
//!   `source_partition_idle`;
//! - `checkpoints_completed_total`, `checkpoints_failed_total`,
//!   `checkpoint_last_id`, `checkpoint_last_duration_seconds`,
//!   `checkpoint_last_alignment_seconds`, `checkpoint_last_size_bytes`,
//!   `checkpoint_last_age_seconds`.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tideline_engine::metrics::{JobStatus, MetricsSnapshot, PartitionStatus};

type Labels = Vec<(&'static str, String)>;
type CounterFamily = Family<Labels, Counter>;
type GaugeFamily = Family<Labels, Gauge>;
type RatioFamily = Family<Labels, Gauge<f64, AtomicU64>>;

/// The registry and the families in it.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    status: GaugeFamily,
    uptime: Gauge<f64, AtomicU64>,
    restarts: Counter,
    records_in: CounterFamily,
    records_out: CounterFamily,
    late: CounterFamily,
    blocked: Family<Labels, Counter<f64, AtomicU64>>,
    backpressure: RatioFamily,
    queue_fill: RatioFamily,
    watermark: GaugeFamily,
    watermark_lag: RatioFamily,
    state_entries: GaugeFamily,
    state_bytes: GaugeFamily,
    dead_letters: CounterFamily,
    late_total: Counter,
    position: GaugeFamily,
    lag: GaugeFamily,
    partition_watermark: GaugeFamily,
    partition_idle: GaugeFamily,
    checkpoints: Counter,
    checkpoints_failed: Counter,
    checkpoint_id: Gauge,
    checkpoint_duration: Gauge<f64, AtomicU64>,
    checkpoint_alignment: Gauge<f64, AtomicU64>,
    checkpoint_size: Gauge,
    checkpoint_age: Gauge<f64, AtomicU64>,
    /// The value each counter series was last advanced to.
    published: HashMap<(&'static str, Labels), f64>,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `value` as a label value of the text format: prometheus-client writes
/// label values as they are, and names and reasons are free text (a quote
/// or a newline would break the scrape, or forge lines in it).
fn label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Advances the counter `counter` (series `key`, `labels`) to `value`.
fn advance<N, A>(
    published: &mut HashMap<(&'static str, Labels), f64>,
    key: &'static str,
    labels: &Labels,
    counter: &Counter<N, A>,
    value: f64,
) where
    N: prometheus_client::encoding::EncodeCounterValue,
    A: prometheus_client::metrics::counter::Atomic<N>,
    N: FromDelta,
{
    let last = published.entry((key, labels.clone())).or_insert(0.0);
    // Never backwards: what was published stays counted.
    let delta = (value - *last).max(0.0);
    *last = last.max(value);
    counter.inc_by(N::from_delta(delta));
}

/// Sets the gauge at `labels` to `value`, or removes the series when the
/// value is unknown now (a watermark after the input ended, say): a stale
/// value would read as current.
fn set_or_remove<N, A>(family: &Family<Labels, Gauge<N, A>>, labels: &Labels, value: Option<N>)
where
    N: prometheus_client::encoding::EncodeGaugeValue,
    A: prometheus_client::metrics::gauge::Atomic<N> + Default,
{
    match value {
        Some(v) => {
            family.get_or_create(labels).set(v);
        }
        None => {
            family.remove(labels);
        }
    }
}

/// A counter increment from a non-negative `f64` delta.
trait FromDelta {
    fn from_delta(delta: f64) -> Self;
}

impl FromDelta for u64 {
    fn from_delta(delta: f64) -> Self {
        delta as u64
    }
}

impl FromDelta for f64 {
    fn from_delta(delta: f64) -> Self {
        delta
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("tideline");
        macro_rules! register {
            ($name:literal, $help:literal, $metric:expr) => {{
                let m = $metric;
                registry.register($name, $help, m.clone());
                m
            }};
            ($name:literal, $help:literal, $unit:expr, $metric:expr) => {{
                let m = $metric;
                registry.register_with_unit($name, $help, $unit, m.clone());
                m
            }};
        }
        Self {
            status: register!(
                "job_status",
                "1 for the job's current status",
                GaugeFamily::default()
            ),
            uptime: register!(
                "job_uptime",
                "Since the job first started",
                Unit::Seconds,
                Gauge::default()
            ),
            restarts: register!(
                "job_restarts",
                "Restarts after a failure",
                Counter::default()
            ),
            records_in: register!(
                "operator_records_in",
                "Records an operator subtask received",
                CounterFamily::default()
            ),
            records_out: register!(
                "operator_records_out",
                "Records an operator subtask emitted on its main output",
                CounterFamily::default()
            ),
            late: register!(
                "operator_late_records",
                "Records an operator subtask found too late",
                CounterFamily::default()
            ),
            blocked: register!(
                "operator_blocked",
                "Time the subtask's task spent blocked sending downstream",
                Unit::Seconds,
                Family::default()
            ),
            backpressure: register!(
                "operator_backpressure_ratio",
                "Share of the last interval blocked sending downstream",
                RatioFamily::default()
            ),
            queue_fill: register!(
                "operator_input_queue_fill_ratio",
                "How full the task's input channels are",
                RatioFamily::default()
            ),
            watermark: register!(
                "operator_watermark_milliseconds",
                "The task's input watermark (ms since the epoch)",
                GaugeFamily::default()
            ),
            watermark_lag: register!(
                "operator_watermark_lag",
                "Processing time minus the watermark",
                Unit::Seconds,
                RatioFamily::default()
            ),
            state_entries: register!(
                "operator_state_entries",
                "Keyed state entries",
                GaugeFamily::default()
            ),
            state_bytes: register!(
                "operator_state",
                "Keyed state on disk (RocksDB)",
                Unit::Bytes,
                GaugeFamily::default()
            ),
            dead_letters: register!(
                "dead_letters",
                "Records rejected into dead-letter outputs, by operator and reason",
                CounterFamily::default()
            ),
            late_total: register!(
                "late_records",
                "Records too late for every window they belonged to",
                Counter::default()
            ),
            position: register!(
                "source_partition_position",
                "Where the partition's reader stands (the source's unit)",
                GaugeFamily::default()
            ),
            lag: register!(
                "source_partition_lag",
                "What is left to read in the partition (the source's unit)",
                GaugeFamily::default()
            ),
            partition_watermark: register!(
                "source_partition_watermark_milliseconds",
                "The partition's watermark (ms since the epoch)",
                GaugeFamily::default()
            ),
            partition_idle: register!(
                "source_partition_idle",
                "1 while the partition is idle",
                GaugeFamily::default()
            ),
            checkpoints: register!(
                "checkpoints_completed",
                "Checkpoints completed",
                Counter::default()
            ),
            checkpoints_failed: register!(
                "checkpoints_failed",
                "Checkpoints given up",
                Counter::default()
            ),
            checkpoint_id: register!(
                "checkpoint_last_id",
                "The id of the latest completed checkpoint",
                Gauge::default()
            ),
            checkpoint_duration: register!(
                "checkpoint_last_duration",
                "Duration of the latest completed checkpoint",
                Unit::Seconds,
                Gauge::default()
            ),
            checkpoint_alignment: register!(
                "checkpoint_last_alignment",
                "Longest barrier alignment of the latest checkpoint",
                Unit::Seconds,
                Gauge::default()
            ),
            checkpoint_size: register!(
                "checkpoint_last_size",
                "Bytes the latest checkpoint references",
                Unit::Bytes,
                Gauge::default()
            ),
            checkpoint_age: register!(
                "checkpoint_last_age",
                "Time since the latest checkpoint completed",
                Unit::Seconds,
                Gauge::default()
            ),
            registry,
            published: HashMap::new(),
        }
    }

    /// Publishes `snapshot`; `backpressure` by (operator, subtask).
    pub(crate) fn publish(
        &mut self,
        s: &MetricsSnapshot,
        backpressure: &HashMap<(String, usize), f64>,
    ) {
        for status in JobStatus::ALL {
            self.status
                .get_or_create(&vec![("status", status.as_str().to_string())])
                .set(i64::from(status == s.job.status));
        }
        self.uptime.set(s.job.uptime_ms as f64 / 1_000.0);
        let none = Vec::new();
        let p = &mut self.published;
        advance(p, "restarts", &none, &self.restarts, s.job.restarts as f64);
        for op in &s.operators {
            for st in &op.subtasks {
                let labels: Labels = vec![
                    ("operator", label(&op.name)),
                    ("subtask", st.subtask.to_string()),
                ];
                let series = |f: &CounterFamily| f.get_or_create(&labels).clone();
                advance(
                    p,
                    "in",
                    &labels,
                    &series(&self.records_in),
                    st.records_in as f64,
                );
                advance(
                    p,
                    "out",
                    &labels,
                    &series(&self.records_out),
                    st.records_out as f64,
                );
                advance(
                    p,
                    "late",
                    &labels,
                    &series(&self.late),
                    st.late_records as f64,
                );
                let blocked = self.blocked.get_or_create(&labels).clone();
                advance(
                    p,
                    "blocked",
                    &labels,
                    &blocked,
                    st.blocked_ms as f64 / 1_000.0,
                );
                self.backpressure.get_or_create(&labels).set(
                    backpressure
                        .get(&(op.name.clone(), st.subtask))
                        .copied()
                        .unwrap_or(0.0),
                );
                let watermark = st.watermark_ms.filter(|w| *w != i64::MAX);
                set_or_remove(&self.queue_fill, &labels, st.queue_fill);
                set_or_remove(&self.watermark, &labels, watermark);
                set_or_remove(
                    &self.watermark_lag,
                    &labels,
                    st.watermark_lag_ms.map(|lag| lag as f64 / 1_000.0),
                );
                set_or_remove(&self.state_entries, &labels, st.state_entries.map(i64_of));
                set_or_remove(&self.state_bytes, &labels, st.state_bytes.map(i64_of));
            }
        }
        for d in &s.dead_letters_by_reason {
            let labels: Labels = vec![
                ("operator", label(&d.operator)),
                ("reason", label(&d.reason)),
            ];
            let counter = self.dead_letters.get_or_create(&labels).clone();
            advance(p, "dead", &labels, &counter, d.count as f64);
        }
        advance(
            p,
            "late_total",
            &none,
            &self.late_total,
            s.late_records as f64,
        );
        for p in &s.sources {
            let labels: Labels = vec![
                ("source", label(&p.source)),
                ("partition", p.partition.to_string()),
            ];
            let watermark = p.watermark_ms.filter(|w| *w != i64::MAX);
            set_or_remove(&self.position, &labels, p.position.map(i64_of));
            set_or_remove(&self.lag, &labels, p.lag.map(i64_of));
            set_or_remove(&self.partition_watermark, &labels, watermark);
            self.partition_idle
                .get_or_create(&labels)
                .set(i64::from(p.status == PartitionStatus::Idle));
        }
        let c = &s.checkpoints;
        advance(
            p,
            "checkpoints",
            &none,
            &self.checkpoints,
            c.completed as f64,
        );
        advance(
            p,
            "failed",
            &none,
            &self.checkpoints_failed,
            c.failed as f64,
        );
        if let Some(last) = c.last() {
            self.checkpoint_id.set(i64_of(last.id));
            self.checkpoint_duration
                .set(last.duration_ms as f64 / 1_000.0);
            self.checkpoint_alignment
                .set(last.alignment_ms as f64 / 1_000.0);
            self.checkpoint_size.set(i64_of(last.size_bytes));
            self.checkpoint_age.set(last.age_ms as f64 / 1_000.0);
        }
    }

    /// The registry in the OpenMetrics text format.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
