//! The window operator.
//!
//! Per key, window contents live in keyed state under the window as
//! namespace: one slot (accumulator, trigger state, firing count) per window
//! for tumbling, session and global windows, and one slot per *pane* of
//! `gcd(size, slide)` for sliding windows, whose results are the merge of
//! their panes at firing. So a record costs one accumulator update whatever
//! `size / slide` is, and window-end timers are registered once per new pane,
//! not per record.
//!
//! Invariants:
//! - lateness is judged by the record's judge watermark `J`: the larger of
//!   its source partition's watermark just before it and the operator's
//!   watermark (`tideline_engine::time::LatenessRule`; the partition-local
//!   rule makes the late set deterministic);
//! - a record late for every window it belongs to (`max_timestamp + L <= J`)
//!   goes to the late output and the late count, and touches no state; one
//!   late for only some of its sliding windows counts in the others only (a
//!   partial pane); a session record is late when its own window
//!   `[ts, ts + gap)` is (Flink's rule instead lets it merge into a live
//!   session; under it, and only then, such a record is kept);
//! - a window fires on time when the watermark reaches `max_timestamp`, and
//!   again for each record arriving before `W >= max_timestamp + L`;
//! - every window's (or pane's) state and timers are gone once the watermark
//!   passes `max_timestamp + L` — the live-window gauge returns to 0.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tideline_engine::time::{LateReason, LatenessRule, TimerService};
use tideline_engine::{
    Data, EventTime, KeySelector, Operator, Output, OutputTag, Record, RestoreContext, Result,
    SnapshotWriter,
};
use tideline_state::{KeyedState, StateKey, ValueStateDescriptor};

use super::aggregate::AggregateFunction;
use super::assigner::{TimeWindow, WindowKind};
use super::combine::Combined;
use super::panes::{pane_buffers, Grid, PaneBuffer, PaneHost, FULL};
use super::sessions::{session_buffers, SessionBuffer};
use super::trigger::{fire_or_wait, Trigger, TriggerContext, TriggerResult};
use super::{Firing, ProcessWindowFunction, WindowCollector, WindowInfo};
use crate::process::TimeDomain;

/// The contents of one window (or pane).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Slot<Acc, S> {
    acc: Acc,
    trigger: S,
    /// Whether records were added since the last purge.
    has_data: bool,
    firings: u32,
}

impl<Acc: Clone, S> Slot<Acc, S> {
    /// Carries out a trigger's decision: emit the window (if it holds
    /// records) as `firing`, and drop its contents if the trigger purges.
    fn apply<O, H: PaneHost<Acc, O>>(
        &mut self,
        decision: TriggerResult,
        firing: Firing,
        window: TimeWindow,
        host: &mut H,
        out: &mut Output<O>,
    ) -> Result<()> {
        if decision.fires() && self.has_data {
            let update = self.firings > 0;
            self.firings += 1;
            let acc = if decision.purges() {
                self.has_data = false;
                std::mem::replace(&mut self.acc, host.create())
            } else {
                self.acc.clone()
            };
            host.emit(window, acc, firing, update, out)?;
        } else if decision.purges() {
            self.acc = host.create();
            self.has_data = false;
        }
        Ok(())
    }
}

/// The live-window gauge shared by an operator's subtasks, and this
/// subtask's share of it (what a checkpoint keeps). Changes reach the shared
/// gauge once per batch or watermark ([`LiveCount::publish`]), not per
/// window: subtasks writing one atomic per window would contend for its
/// cache line.
#[derive(Debug)]
pub(crate) struct LiveCount {
    pub(crate) shared: Arc<AtomicI64>,
    pub(crate) local: i64,
    pub(crate) unpublished: i64,
}

impl LiveCount {
    fn add(&mut self, delta: i64) {
        self.local += delta;
        self.unpublished += delta;
    }

    fn publish(&mut self) {
        if self.unpublished != 0 {
            self.shared.fetch_add(self.unpublished, Ordering::Relaxed);
            self.unpublished = 0;
        }
    }
}

const LIVE: &str = "live-windows";

const fn slots<Acc, S>() -> ValueStateDescriptor<Slot<Acc, S>> {
    ValueStateDescriptor::new("window-contents")
}

const SESSIONS: ValueStateDescriptor<Vec<TimeWindow>> =
    ValueStateDescriptor::new("session-windows");

pub(crate) struct WindowOperator<K, T, A: AggregateFunction<T>, Tr: Trigger<T>, P> {
    pub(crate) key: KeySelector<K, T>,
    pub(crate) kind: WindowKind<T>,
    pub(crate) lateness: i64,
    pub(crate) late_tag: Option<OutputTag<T>>,
    pub(crate) agg: A,
    pub(crate) trigger: Tr,
    pub(crate) function: P,
    pub(crate) state: KeyedState<K>,
    pub(crate) event_timers: TimerService<K, TimeWindow>,
    pub(crate) processing_timers: TimerService<K, TimeWindow>,
    pub(crate) watermark: EventTime,
    pub(crate) processing_time: i64,
    pub(crate) live: LiveCount,
    /// Sliding windows' geometry, computed once.
    pub(crate) grid: Option<Grid>,
    pub(crate) rule: LatenessRule,
    /// Shows a record in dead letters (else its type and key).
    pub(crate) describe: Option<super::RecordText<T>>,
}

/// How a record is judged for lateness: by `judge`, the watermark the rule
/// picks; `mark` is its own lateness watermark (which names the reason).
#[derive(Clone, Copy, Debug)]
struct Arrival {
    judge: EventTime,
    mark: EventTime,
}

impl<K, T, A, Tr, P> WindowOperator<K, T, A, Tr, P>
where
    K: StateKey,
    T: Data,
    A: AggregateFunction<T>,
    Tr: Trigger<T>,
{
    fn cleanup_time(&self, window: &TimeWindow) -> EventTime {
        window.max_timestamp().saturating_add_millis(self.lateness)
    }

    /// A record as its dead letter shows it.
    fn record_text(&self, key: &K, record: &T) -> String {
        match &self.describe {
            Some(describe) => describe(record),
            None => {
                let key = json(key);
                format!("{} with key {key}", std::any::type_name::<T>())
            }
        }
    }

    /// Why a record that arrived as `arrival` is late for `window`, if it is.
    fn late_for(&self, window: &TimeWindow, arrival: Arrival) -> Option<LateReason> {
        let cleanup = self.cleanup_time(window);
        (cleanup <= arrival.judge).then(|| self.rule.reason(arrival.mark, cleanup))
    }

    fn late<O: Data>(&self, reason: LateReason, record: Record<T>, out: &mut Output<O>) {
        emit_late(&self.late_tag, reason, record, out);
    }

    /// Adds a record (or a pre-aggregated partial) to a (non-sliding)
    /// window and applies the trigger.
    fn add_to_window<O>(
        &mut self,
        key: &K,
        window: TimeWindow,
        timestamp: EventTime,
        addition: Addition<T, A::Acc>,
        out: &mut Output<O>,
    ) -> Result<()>
    where
        O: Data,
        P: ProcessWindowFunction<K, A::Out, O>,
    {
        let cleanup_at = self.cleanup_time(&window);
        let Self {
            state,
            event_timers,
            processing_timers,
            agg,
            trigger,
            function,
            watermark,
            processing_time,
            live,
            ..
        } = self;
        let desc = slots::<A::Acc, Tr::State>();
        let mut stored = state.value(&desc, key, &window)?;
        let mut fresh = None;
        let (slot, is_new) = match stored.get_mut() {
            Some(slot) => (slot, false),
            None => {
                let slot = fresh.insert(Slot {
                    acc: agg.create(),
                    trigger: Tr::State::default(),
                    has_data: false,
                    firings: 0,
                });
                (slot, true)
            }
        };
        if is_new {
            live.add(1);
            event_timers.register(key, &window, cleanup_at);
        }
        let mut ctx = TriggerContext {
            key,
            window,
            watermark: *watermark,
            processing_time: *processing_time,
            state: &mut slot.trigger,
            event_timers,
            processing_timers,
        };
        let decision = match addition {
            Addition::Record(value) => {
                let decision = if Tr::IS_EVENT_TIME {
                    event_time_decision(&window, cleanup_at, is_new, &mut ctx)
                } else {
                    trigger.on_element(&value, timestamp, &window, &mut ctx)
                };
                agg.add(&mut slot.acc, value);
                decision
            }
            // Partials come only with the event-time trigger (see `combine`).
            Addition::Partial(acc) => {
                let decision = event_time_decision(&window, cleanup_at, is_new, &mut ctx);
                agg.merge(&mut slot.acc, &acc);
                decision
            }
        };
        slot.has_data = true;
        let firing = if *watermark >= window.max_timestamp() {
            Firing::Late
        } else {
            Firing::Early
        };
        slot.apply(
            decision,
            firing,
            window,
            &mut Host::new(agg, function, key),
            out,
        )?;
        if let Some(slot) = fresh {
            stored.set(slot);
        }
        Ok(())
    }

    /// Merges the record's session `[ts, ts + gap)` with the key's sessions
    /// it overlaps or touches, then adds the record to the merged window.
    fn add_to_session<O>(
        &mut self,
        key: &K,
        window: TimeWindow,
        record: Record<T>,
        arrival: Arrival,
        out: &mut Output<O>,
    ) -> Result<()>
    where
        O: Data,
        P: ProcessWindowFunction<K, A::Out, O>,
    {
        if self.rule == LatenessRule::PartitionLocal {
            if let Some(reason) = self.late_for(&window, arrival) {
                self.late(reason, record, out);
                return Ok(());
            }
        }
        let mut sessions = self
            .state
            .value(&SESSIONS, key, &())?
            .take()
            .unwrap_or_default();
        let (merging, mut keep): (Vec<TimeWindow>, Vec<TimeWindow>) = sessions
            .drain(..)
            .partition(|w| w.overlaps_or_touches(&window));
        let merged = merging.iter().fold(window, |acc, w| acc.cover(w));
        if merging.is_empty() {
            if let Some(reason) = self.late_for(&merged, arrival) {
                if !keep.is_empty() {
                    self.state.value(&SESSIONS, key, &())?.set(keep);
                }
                self.late(reason, record, out);
                return Ok(());
            }
        }
        if !(merging.is_empty() || merging.len() == 1 && merging[0] == merged) {
            self.merge_sessions(key, &merging, merged)?;
        }
        keep.push(merged);
        self.state.value(&SESSIONS, key, &())?.set(keep);
        self.add_to_window(
            key,
            merged,
            record.timestamp,
            Addition::Record(record.value),
            out,
        )
    }

    fn merge_sessions(
        &mut self,
        key: &K,
        merging: &[TimeWindow],
        merged: TimeWindow,
    ) -> Result<()> {
        let desc = slots::<A::Acc, Tr::State>();
        let mut combined = Slot {
            acc: self.agg.create(),
            trigger: Tr::State::default(),
            has_data: false,
            firings: 0,
        };
        for w in merging {
            let Some(mut old) = self.state.value(&desc, key, w)?.take() else {
                continue;
            };
            self.live.add(-1);
            self.agg.merge(&mut combined.acc, &old.acc);
            combined.has_data |= old.has_data;
            combined.firings = combined.firings.max(old.firings);
            let mut ctx = TriggerContext {
                key,
                window: *w,
                watermark: self.watermark,
                processing_time: self.processing_time,
                state: &mut old.trigger,
                event_timers: &mut self.event_timers,
                processing_timers: &mut self.processing_timers,
            };
            self.trigger.clear(w, &mut ctx);
            self.event_timers.delete(key, w, w.max_timestamp());
            let cleanup_at = self.cleanup_time(w);
            self.event_timers.delete(key, w, cleanup_at);
        }
        let cleanup_at = self.cleanup_time(&merged);
        self.event_timers.register(key, &merged, cleanup_at);
        let mut ctx = TriggerContext {
            key,
            window: merged,
            watermark: self.watermark,
            processing_time: self.processing_time,
            state: &mut combined.trigger,
            event_timers: &mut self.event_timers,
            processing_timers: &mut self.processing_timers,
        };
        self.trigger.on_merge(&merged, &mut ctx);
        self.live.add(1);
        self.state.value(&desc, key, &merged)?.set(combined);
        Ok(())
    }

    /// Whether sessions use the per-key buffer (the event-time trigger).
    fn buffered_sessions(&self) -> bool {
        matches!(self.kind, WindowKind::Session(_)) && Tr::IS_EVENT_TIME
    }

    /// Adds a record (or a partial pane folded before the exchange) to its
    /// pane of a sliding window.
    fn add_to_panes<O>(
        &mut self,
        grid: Grid,
        key: &K,
        timestamp: EventTime,
        addition: Addition<Record<T>, A::Acc>,
        arrival: Arrival,
        out: &mut Output<O>,
    ) -> Result<()>
    where
        O: Data,
        P: ProcessWindowFunction<K, A::Out, O>,
    {
        let start = grid.pane_start(timestamp.millis());
        let rule = self.rule;
        let Self {
            state,
            event_timers,
            agg,
            function,
            watermark,
            live,
            late_tag,
            ..
        } = self;
        // Late for every window it belongs to: the pane's last window expired.
        let ends = grid.ends_of_pane(start);
        // Partials reach here late for none of the pane's windows
        // (`process_partial` checks): `from_end` is FULL for them.
        let Some(mut from_end) = grid.first_live_end(ends, arrival.judge) else {
            if let Addition::Record(record) = addition {
                let cleanup =
                    EventTime::from_millis(ends.1 - 1).saturating_add_millis(grid.lateness);
                emit_late(late_tag, rule.reason(arrival.mark, cleanup), record, out);
            }
            return Ok(());
        };
        // Windows the operator's watermark has expired never fire again, so a
        // record judged by that watermark needs no partial pane.
        if arrival.judge <= *watermark {
            from_end = FULL;
        }
        let mut stored = state.value(&pane_buffers::<A::Acc>(), key, &())?;
        let mut fresh = None;
        let buffer = match stored.get_mut() {
            Some(b) => b,
            None => fresh.insert(PaneBuffer::new(&grid, *watermark)),
        };
        let (acc, created) = buffer.pane_mut(start, from_end, || agg.create());
        match addition {
            Addition::Record(record) => agg.add(acc, record.value),
            Addition::Partial(partial) => agg.merge(acc, &partial),
        }
        if created {
            live.add(1);
        }
        // Windows of the pane that already fired on time fire again (the
        // pane's first window ending at or before the watermark says so).
        let first_end = ends.0.max(from_end);
        let refires = EventTime::from_millis(first_end - 1) <= *watermark;
        // Only a new pane or a late re-firing can leave the buffer's record of
        // fired windows behind the watermark; a record in a pane whose windows
        // are all ahead of it need not pay for the check.
        if created || refires {
            buffer.catch_up(&grid, *watermark);
        }
        if refires {
            let mut host = Host::new(agg, function, key);
            buffer.fire_late(&mut host, &grid, start, from_end, created, *watermark, out)?;
        }
        // A new pane may need the key's timer earlier; an existing one is covered.
        if created {
            if let Some(at) = buffer.reschedule(&grid) {
                event_timers.register(key, &TimeWindow::GLOBAL, EventTime::from_millis(at));
            }
        }
        if let Some(b) = fresh {
            stored.set(b);
        }
        Ok(())
    }

    fn add_to_session_buffer<O>(
        &mut self,
        key: &K,
        window: TimeWindow,
        record: Record<T>,
        arrival: Arrival,
        out: &mut Output<O>,
    ) -> Result<()>
    where
        O: Data,
        P: ProcessWindowFunction<K, A::Out, O>,
    {
        let Self {
            state,
            event_timers,
            agg,
            function,
            watermark,
            live,
            late_tag,
            lateness,
            rule,
            ..
        } = self;
        let mut stored = state.value(&session_buffers::<A::Acc>(), key, &())?;
        let mut fresh = None;
        let buffer = match stored.get_mut() {
            Some(b) => b,
            None => fresh.insert(SessionBuffer::new()),
        };
        let alone_only = *rule == LatenessRule::OperatorWatermark;
        if buffer.is_late(&window, *lateness, arrival.judge, alone_only) {
            let cleanup = window.max_timestamp().saturating_add_millis(*lateness);
            emit_late(late_tag, rule.reason(arrival.mark, cleanup), record, out);
            return Ok(());
        }
        let mut single = agg.create();
        agg.add(&mut single, record.value);
        let mut host = Host::new(agg, function, key);
        let added = buffer.add(&mut host, window, single, *lateness, *watermark, out)?;
        live.add(added.live_delta);
        if let Some(at) = added.timer {
            event_timers.register(key, &TimeWindow::GLOBAL, EventTime::from_millis(at));
        }
        if let Some(b) = fresh {
            stored.set(b);
        }
        Ok(())
    }

    /// A per-key timer of the pane or session buffers fired.
    fn on_buffer_timer<O>(&mut self, at: EventTime, key: K, out: &mut Output<O>) -> Result<()>
    where
        O: Data,
        P: ProcessWindowFunction<K, A::Out, O>,
    {
        let grid = self.grid;
        let Self {
            state,
            event_timers,
            agg,
            function,
            watermark,
            live,
            lateness,
            ..
        } = self;
        let mut host = Host::new(agg, function, &key);
        let (dropped, next, empty) = match grid {
            Some(grid) => {
                let mut stored = state.value(&pane_buffers::<A::Acc>(), &key, &())?;
                let Some(buffer) = stored.get_mut() else {
                    return Ok(());
                };
                let (dropped, next) =
                    buffer.on_timer(&mut host, &grid, at.millis(), *watermark, out)?;
                let empty = buffer.is_empty();
                if empty {
                    stored.take();
                }
                (dropped, next, empty)
            }
            None => {
                let mut stored = state.value(&session_buffers::<A::Acc>(), &key, &())?;
                let Some(buffer) = stored.get_mut() else {
                    return Ok(());
                };
                let (dropped, next) =
                    buffer.on_timer(&mut host, at.millis(), *lateness, *watermark, out)?;
                let empty = buffer.is_empty();
                if empty {
                    stored.take();
                }
                (dropped, next, empty)
            }
        };
        live.add(-(dropped as i64));
        if let (Some(next), false) = (next, empty) {
            event_timers.register(&key, &TimeWindow::GLOBAL, EventTime::from_millis(next));
        }
        Ok(())
    }

    fn on_event_timer<O>(
        &mut self,
        at: EventTime,
        key: K,
        window: TimeWindow,
        out: &mut Output<O>,
    ) -> Result<()>
    where
        O: Data,
        P: ProcessWindowFunction<K, A::Out, O>,
    {
        if matches!(self.kind, WindowKind::Sliding { .. }) || self.buffered_sessions() {
            return self.on_buffer_timer(at, key, out);
        }
        self.on_window_timer(TimeDomain::EventTime, at, key, window, out)
    }

    /// A timer of one window fired: ask the trigger, carry out its decision,
    /// and (event time) drop the window once the watermark passes its
    /// cleanup time.
    fn on_window_timer<O>(
        &mut self,
        domain: TimeDomain,
        at: EventTime,
        key: K,
        window: TimeWindow,
        out: &mut Output<O>,
    ) -> Result<()>
    where
        O: Data,
        P: ProcessWindowFunction<K, A::Out, O>,
    {
        let cleanup_at = self.cleanup_time(&window);
        let Self {
            state,
            event_timers,
            processing_timers,
            agg,
            trigger,
            function,
            watermark,
            processing_time,
            live,
            ..
        } = self;
        let desc = slots::<A::Acc, Tr::State>();
        let mut stored = state.value(&desc, &key, &window)?;
        let Some(slot) = stored.get_mut() else {
            return Ok(());
        };
        let now = match domain {
            TimeDomain::EventTime => *processing_time,
            TimeDomain::ProcessingTime => at.millis(),
        };
        let mut ctx = trigger_ctx(
            &key,
            window,
            *watermark,
            now,
            &mut slot.trigger,
            event_timers,
            processing_timers,
        );
        let (decision, firing) = match domain {
            TimeDomain::EventTime => (
                trigger.on_event_time(at, &window, &mut ctx),
                match at.cmp(&window.max_timestamp()) {
                    std::cmp::Ordering::Less => Firing::Early,
                    std::cmp::Ordering::Equal => Firing::OnTime,
                    std::cmp::Ordering::Greater => Firing::Late,
                },
            ),
            TimeDomain::ProcessingTime => (
                trigger.on_processing_time(at.millis(), &window, &mut ctx),
                if *watermark >= window.max_timestamp() {
                    Firing::Late
                } else {
                    Firing::Early
                },
            ),
        };
        slot.apply(
            decision,
            firing,
            window,
            &mut Host::new(agg, function, &key),
            out,
        )?;
        if domain == TimeDomain::EventTime && at >= cleanup_at {
            trigger.clear(
                &window,
                &mut trigger_ctx(
                    &key,
                    window,
                    *watermark,
                    now,
                    &mut slot.trigger,
                    event_timers,
                    processing_timers,
                ),
            );
            stored.take();
            live.add(-1);
            if matches!(self.kind, WindowKind::Session(_)) {
                let mut sessions = self.state.value(&SESSIONS, &key, &())?;
                if let Some(list) = sessions.get_mut() {
                    list.retain(|w| *w != window);
                    if list.is_empty() {
                        sessions.take();
                    }
                }
            }
        }
        Ok(())
    }

    /// Judges one record and adds it to its windows (or the late output, or
    /// dead letters).
    fn process_record<O>(&mut self, record: Record<T>, out: &mut Output<O>) -> Result<()>
    where
        O: Data,
        P: ProcessWindowFunction<K, A::Out, O>,
    {
        let timestamp = record.timestamp;
        let key = (self.key)(&record.value);
        if !timestamp.is_set() {
            let text = self.record_text(&key, &record.value);
            out.dead_letter_text(
                timestamp,
                "record has no event time: give its source a watermark strategy with timestamps",
                text,
            )?;
            return Ok(());
        }
        let arrival = Arrival {
            judge: self.rule.judge(record.lateness_watermark, self.watermark),
            mark: record.lateness_watermark,
        };
        match &self.kind {
            WindowKind::Tumbling { size, offset } => {
                let window = WindowKind::<T>::tumbling_window(*size, *offset, timestamp.millis());
                match self.late_for(&window, arrival) {
                    Some(reason) => self.late(reason, record, out),
                    None => self.add_to_window(
                        &key,
                        window,
                        timestamp,
                        Addition::Record(record.value),
                        out,
                    )?,
                }
            }
            WindowKind::Global => self.add_to_window(
                &key,
                TimeWindow::GLOBAL,
                timestamp,
                Addition::Record(record.value),
                out,
            )?,
            WindowKind::Sliding { .. } => {
                if let Some(grid) = self.grid {
                    self.add_to_panes(
                        grid,
                        &key,
                        timestamp,
                        Addition::Record(record),
                        arrival,
                        out,
                    )?;
                }
            }
            WindowKind::Session(gap) => {
                let gap = self.kind.gap_of(gap, &record.value);
                if gap <= 0 {
                    let text = self.record_text(&key, &record.value);
                    out.dead_letter_text(
                        timestamp,
                        format!("session gap must be positive, got {gap} ms"),
                        text,
                    )?;
                    return Ok(());
                }
                let window =
                    TimeWindow::new(timestamp.millis(), timestamp.millis().saturating_add(gap));
                if self.buffered_sessions() {
                    self.add_to_session_buffer(&key, window, record, arrival, out)?;
                } else {
                    self.add_to_session(&key, window, record, arrival, out)?;
                }
            }
        }
        Ok(())
    }

    /// Merges a partial of a tumbling window made before the exchange.
    fn process_partial<O>(
        &mut self,
        key: K,
        window: TimeWindow,
        acc: A::Acc,
        timestamp: EventTime,
        mark: EventTime,
        out: &mut Output<O>,
    ) -> Result<()>
    where
        O: Data,
        P: ProcessWindowFunction<K, A::Out, O>,
    {
        let arrival = Arrival {
            judge: self.rule.judge(mark, self.watermark),
            mark,
        };
        // The combiner folds only records late for none of the windows the
        // partial counts in (see `combine`).
        let late = match self.grid {
            Some(grid) => {
                let ends = grid.ends_of_pane(window.start);
                grid.first_live_end(ends, arrival.judge) != Some(FULL)
            }
            None => self.late_for(&window, arrival).is_some(),
        };
        if late {
            return self.dead_letter_partial(&key, &window, &acc, out);
        }
        match self.grid {
            Some(grid) => {
                self.add_to_panes(grid, &key, timestamp, Addition::Partial(acc), arrival, out)
            }
            None => self.add_to_window(&key, window, timestamp, Addition::Partial(acc), out),
        }
    }

    /// A partial the combiner should not have folded (a bug): its records
    /// cannot be told apart any more, so they go to dead letters together,
    /// with the key, window and accumulator, and the job goes on.
    fn dead_letter_partial<O: Data>(
        &self,
        key: &K,
        window: &TimeWindow,
        acc: &A::Acc,
        out: &mut Output<O>,
    ) -> Result<()> {
        let text = format!(
            "records of key {} pre-aggregated in {window:?}: {}",
            json(key),
            json(acc)
        );
        out.dead_letter_text(
            window.max_timestamp(),
            format!(
                "a pre-aggregated partial arrived after its window's cleanup (operator watermark \
                 {:?}): the combiner should have sent its records as they were",
                self.watermark
            ),
            text,
        )
    }
}

/// `value` as JSON, for dead letters (the error itself if it has none).
fn json<V: serde::Serialize + ?Sized>(value: &V) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("<{e}>"))
}

/// What is added to a window: a record, or records folded before the exchange.
enum Addition<T, Acc> {
    Record(T),
    Partial(Acc),
}

/// The event-time trigger's decision for a window a record (or partial) was
/// just added to: fire if the watermark passed its end, else wait for its
/// timer. The timer is registered once, when the window's slot is made (a
/// new window's cleanup timer is that same timer without allowed
/// lateness), and stays pending until the watermark reaches the end, so
/// later records need not probe the timer set again.
fn event_time_decision<K: std::hash::Hash + Eq + Clone, S>(
    window: &TimeWindow,
    cleanup_at: EventTime,
    is_new: bool,
    ctx: &mut TriggerContext<'_, K, S>,
) -> TriggerResult {
    fire_or_wait(window, ctx, is_new && cleanup_at != window.max_timestamp())
}

/// Counts a late record and sends it to the late output, if there is one.
fn emit_late<T: Data, O: Data>(
    tag: &Option<OutputTag<T>>,
    reason: LateReason,
    record: Record<T>,
    out: &mut Output<O>,
) {
    out.count_late_for(reason, 1);
    if let Some(tag) = tag {
        out.push_to(tag, record);
    }
}

/// Lends the aggregate and window function to the pane and session buffers.
struct Host<'a, K, T, A, P> {
    agg: &'a A,
    function: &'a mut P,
    key: &'a K,
    _input: std::marker::PhantomData<fn(T)>,
}

impl<'a, K, T, A, P> Host<'a, K, T, A, P> {
    fn new(agg: &'a A, function: &'a mut P, key: &'a K) -> Self {
        Self {
            agg,
            function,
            key,
            _input: std::marker::PhantomData,
        }
    }
}

impl<K, T, A, P, O> PaneHost<A::Acc, O> for Host<'_, K, T, A, P>
where
    K: StateKey,
    T: Data,
    O: Data,
    A: AggregateFunction<T>,
    P: ProcessWindowFunction<K, A::Out, O>,
{
    fn create(&self) -> A::Acc {
        self.agg.create()
    }

    fn merge(&self, acc: &mut A::Acc, other: &A::Acc) {
        self.agg.merge(acc, other);
    }

    fn emit(
        &mut self,
        window: TimeWindow,
        acc: A::Acc,
        firing: Firing,
        update: bool,
        out: &mut Output<O>,
    ) -> Result<()> {
        let info = WindowInfo {
            window,
            firing,
            update,
        };
        let mut collector = WindowCollector {
            out,
            timestamp: window.max_timestamp(),
        };
        self.function
            .process(self.key, &info, self.agg.result(acc), &mut collector)
    }
}

fn trigger_ctx<'a, K, S>(
    key: &'a K,
    window: TimeWindow,
    watermark: EventTime,
    processing_time: i64,
    state: &'a mut S,
    event_timers: &'a mut TimerService<K, TimeWindow>,
    processing_timers: &'a mut TimerService<K, TimeWindow>,
) -> TriggerContext<'a, K, S> {
    TriggerContext {
        key,
        window,
        watermark,
        processing_time,
        state,
        event_timers,
        processing_timers,
    }
}

impl<K, T, A, Tr, P, O> Operator<T, O> for WindowOperator<K, T, A, Tr, P>
where
    K: StateKey,
    T: Data,
    O: Data,
    A: AggregateFunction<T>,
    Tr: Trigger<T>,
    P: ProcessWindowFunction<K, A::Out, O>,
{
    fn process_batch(&mut self, batch: Vec<Record<T>>, out: &mut Output<O>) -> Result<()> {
        for record in batch {
            self.process_record(record, out)?;
        }
        self.live.publish();
        Ok(())
    }

    fn snapshot_state(&mut self, snapshot: &mut SnapshotWriter<'_>) -> Result<()> {
        crate::keyed_snapshot::snapshot_keyed(
            &mut self.state,
            &[&self.event_timers, &self.processing_timers],
            snapshot,
        )?;
        snapshot.put(LIVE, &self.live.local)
    }

    fn restore_state(&mut self, restore: &RestoreContext) -> Result<()> {
        crate::keyed_snapshot::restore_keyed(
            &mut self.state,
            &mut [&mut self.event_timers, &mut self.processing_timers],
            restore,
        )?;
        // The gauge counts every subtask's windows: the first subtask takes
        // over the old total, whichever subtasks now hold them.
        if restore.subtask() == 0 {
            let total: i64 = restore.read_all::<i64>(LIVE)?.into_iter().sum();
            self.live.add(total);
            self.live.publish();
        }
        Ok(())
    }

    fn state_size(&mut self) -> Option<tideline_engine::StateSize> {
        Some(self.state.size().into())
    }

    fn on_watermark(&mut self, watermark: EventTime, out: &mut Output<O>) -> Result<()> {
        // A restored task replays its watermark; it never goes backwards.
        let watermark = watermark.max(self.watermark);
        self.watermark = watermark;
        while let Some((at, key, window)) = self.event_timers.pop_due(watermark) {
            self.on_event_timer(at, key, window, out)?;
        }
        self.live.publish();
        Ok(())
    }

    fn on_processing_time(&mut self, now: i64, out: &mut Output<O>) -> Result<()> {
        self.processing_time = now;
        while let Some((at, key, window)) =
            self.processing_timers.pop_due(EventTime::from_millis(now))
        {
            self.on_window_timer(TimeDomain::ProcessingTime, at, key, window, out)?;
        }
        self.live.publish();
        Ok(())
    }
}

/// The window operator behind a [`super::combine::WindowCombiner`].
pub(crate) mod combined {
    use super::*;

    /// The window operator whose input is partials and the records the
    /// combiner passed on as they were. Its type is called `WindowOperator`
    /// too: checkpoints name operators by type, and its state is the plain
    /// window operator's, so a job's checkpoints restore whether or not it
    /// pre-aggregates.
    pub(crate) struct WindowOperator<K, T, A: AggregateFunction<T>, Tr: Trigger<T>, P>(
        pub(crate) super::WindowOperator<K, T, A, Tr, P>,
    );

    impl<K, T, A, Tr, P, O> Operator<Combined<K, T, A::Acc>, O> for WindowOperator<K, T, A, Tr, P>
    where
        K: StateKey,
        T: Data,
        O: Data,
        A: AggregateFunction<T>,
        Tr: Trigger<T>,
        P: ProcessWindowFunction<K, A::Out, O>,
    {
        fn process_batch(
            &mut self,
            batch: Vec<Record<Combined<K, T, A::Acc>>>,
            out: &mut Output<O>,
        ) -> Result<()> {
            for record in batch {
                let (timestamp, mark) = (record.timestamp, record.lateness_watermark);
                match record.value {
                    Combined::Raw(value) => {
                        let record = Record::new(timestamp, value).with_lateness_watermark(mark);
                        self.0.process_record(record, out)?;
                    }
                    Combined::Partial { key, window, acc } => {
                        self.0
                            .process_partial(key, window, acc, timestamp, mark, out)?;
                    }
                }
            }
            self.0.live.publish();
            Ok(())
        }

        fn snapshot_state(&mut self, snapshot: &mut SnapshotWriter<'_>) -> Result<()> {
            Operator::<T, O>::snapshot_state(&mut self.0, snapshot)
        }

        fn restore_state(&mut self, restore: &RestoreContext) -> Result<()> {
            Operator::<T, O>::restore_state(&mut self.0, restore)
        }

        fn state_size(&mut self) -> Option<tideline_engine::StateSize> {
            Operator::<T, O>::state_size(&mut self.0)
        }

        fn on_watermark(&mut self, watermark: EventTime, out: &mut Output<O>) -> Result<()> {
            self.0.on_watermark(watermark, out)
        }

        fn on_processing_time(&mut self, now: i64, out: &mut Output<O>) -> Result<()> {
            self.0.on_processing_time(now, out)
        }
    }
}
