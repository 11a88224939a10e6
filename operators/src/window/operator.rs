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
//! - a record late for every window it belongs to (`max_timestamp + L <= W`)
//!   goes to the late output and the late count, and touches no state;
//! - a window fires on time when the watermark reaches `max_timestamp`, and
//!   again for each record arriving before `W >= max_timestamp + L`;
//! - every window's (or pane's) state and timers are gone once the watermark
//!   passes `max_timestamp + L` — the live-window gauge returns to 0.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tideline_engine::time::TimerService;
use tideline_engine::{Data, EventTime, KeySelector, Operator, Output, OutputTag, Record, Result};
use tideline_state::{MemoryKeyedState, StateKey, ValueStateDescriptor};

use super::aggregate::AggregateFunction;
use super::assigner::{gcd, TimeWindow, WindowKind};
use super::trigger::{Trigger, TriggerContext};
use super::{Firing, ProcessWindowFunction, WindowCollector, WindowInfo};

/// The contents of one window (or pane).
#[derive(Clone, Debug)]
pub(crate) struct Slot<Acc, S> {
    acc: Acc,
    trigger: S,
    /// Whether records were added since the last purge.
    has_data: bool,
    firings: u32,
}

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
    pub(crate) state: MemoryKeyedState<K>,
    pub(crate) event_timers: TimerService<K, TimeWindow>,
    pub(crate) processing_timers: TimerService<K, TimeWindow>,
    pub(crate) watermark: EventTime,
    pub(crate) processing_time: i64,
    pub(crate) live: Arc<AtomicI64>,
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

    fn is_late(&self, window: &TimeWindow) -> bool {
        self.cleanup_time(window) <= self.watermark
    }

    fn pane_len(&self) -> i64 {
        match self.kind {
            WindowKind::Sliding { size, slide, .. } => gcd(size, slide),
            _ => 0,
        }
    }

    fn late<O: Data>(&self, timestamp: EventTime, value: T, out: &mut Output<O>) {
        out.count_late(1);
        if let Some(tag) = &self.late_tag {
            out.emit_to(tag, timestamp, value);
        }
    }

    fn emit<O>(
        function: &mut P,
        agg: &A,
        key: &K,
        window: TimeWindow,
        acc: A::Acc,
        firing: Firing,
        update: bool,
        out: &mut Output<O>,
    ) -> Result<()>
    where
        O: Data,
        P: ProcessWindowFunction<K, A::Out, O>,
    {
        let info = WindowInfo {
            window,
            firing,
            update,
        };
        let mut collector = WindowCollector {
            out,
            timestamp: window.max_timestamp(),
        };
        function.process(key, &info, agg.result(acc), &mut collector)
    }

    /// Adds a record to a (non-sliding) window and applies the trigger.
    fn add_to_window<O>(
        &mut self,
        key: &K,
        window: TimeWindow,
        timestamp: EventTime,
        value: T,
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
            live.fetch_add(1, Ordering::Relaxed);
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
        let decision = trigger.on_element(&value, timestamp, &window, &mut ctx);
        agg.add(&mut slot.acc, value);
        slot.has_data = true;
        if decision.fires() {
            let firing = if *watermark >= window.max_timestamp() {
                Firing::Late
            } else {
                Firing::Early
            };
            let update = slot.firings > 0;
            slot.firings += 1;
            let acc = if decision.purges() {
                slot.has_data = false;
                std::mem::replace(&mut slot.acc, agg.create())
            } else {
                slot.acc.clone()
            };
            Self::emit(function, agg, key, window, acc, firing, update, out)?;
        } else if decision.purges() {
            slot.acc = agg.create();
            slot.has_data = false;
        }
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
        timestamp: EventTime,
        value: T,
        out: &mut Output<O>,
    ) -> Result<()>
    where
        O: Data,
        P: ProcessWindowFunction<K, A::Out, O>,
    {
        let mut sessions = self
            .state
            .value(&SESSIONS, key, &())?
            .take()
            .unwrap_or_default();
        let (merging, mut keep): (Vec<TimeWindow>, Vec<TimeWindow>) = sessions
            .drain(..)
            .partition(|w| w.overlaps_or_touches(&window));
        let merged = merging.iter().fold(window, |acc, w| acc.cover(w));
        if merging.is_empty() && self.is_late(&merged) {
            if !keep.is_empty() {
                self.state.value(&SESSIONS, key, &())?.set(keep);
            }
            self.late(timestamp, value, out);
            return Ok(());
        }
        if !(merging.len() == 1 && merging[0] == merged) && !merging.is_empty() {
            self.merge_sessions(key, &merging, merged)?;
        }
        keep.push(merged);
        self.state.value(&SESSIONS, key, &())?.set(keep);
        self.add_to_window(key, merged, timestamp, value, out)
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
            self.live.fetch_add(-1, Ordering::Relaxed);
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
        self.live.fetch_add(1, Ordering::Relaxed);
        self.state.value(&desc, key, &merged)?.set(combined);
        Ok(())
    }

    /// The windows of a sliding assigner that contain `pane`, latest first.
    fn windows_of_pane(&self, pane: &TimeWindow, out: &mut Vec<TimeWindow>) {
        if let WindowKind::Sliding {
            size,
            slide,
            offset,
        } = self.kind
        {
            let mut start = pane.start
                - (i128::from(pane.start) - i128::from(offset)).rem_euclid(i128::from(slide))
                    as i64;
            while start > pane.start.saturating_sub(size) {
                out.push(TimeWindow::new(start, start.saturating_add(size)));
                start = start.saturating_sub(slide);
            }
        }
    }

    fn add_to_pane<O>(
        &mut self,
        key: &K,
        timestamp: EventTime,
        value: T,
        out: &mut Output<O>,
    ) -> Result<()>
    where
        O: Data,
        P: ProcessWindowFunction<K, A::Out, O>,
    {
        let WindowKind::Sliding { offset, .. } = self.kind else {
            return Ok(());
        };
        let pane = WindowKind::<T>::tumbling_window(self.pane_len(), offset, timestamp.millis());
        let mut windows = Vec::new();
        self.windows_of_pane(&pane, &mut windows);
        // The latest window holding the pane decides whether it is late for all.
        let Some(latest) = windows.first().copied() else {
            return Ok(());
        };
        if self.is_late(&latest) {
            self.late(timestamp, value, out);
            return Ok(());
        }
        let desc = slots::<A::Acc, Tr::State>();
        let mut stored = self.state.value(&desc, key, &pane)?;
        let is_new = match stored.get_mut() {
            Some(slot) => {
                self.agg.add(&mut slot.acc, value);
                false
            }
            None => {
                let mut acc = self.agg.create();
                self.agg.add(&mut acc, value);
                stored.set(Slot {
                    acc,
                    trigger: Tr::State::default(),
                    has_data: true,
                    firings: 0,
                });
                true
            }
        };
        if is_new {
            self.live.fetch_add(1, Ordering::Relaxed);
            for w in &windows {
                if w.max_timestamp() > self.watermark {
                    self.event_timers.register(key, w, w.max_timestamp());
                }
            }
            // The pane lives until its latest window expires.
            let cleanup_at = self.cleanup_time(&latest);
            self.event_timers.register(key, &pane, cleanup_at);
        }
        // Windows already fired but within the allowed lateness fire again.
        for w in windows {
            if w.max_timestamp() <= self.watermark && !self.is_late(&w) {
                let fresh_pane = if is_new { Some(pane) } else { None };
                self.fire_from_panes(key, w, Firing::Late, fresh_pane, out)?;
            }
        }
        Ok(())
    }

    /// Emits sliding window `window` as the merge of its panes. `fresh_pane`
    /// (just created by a late record) does not count as earlier data.
    fn fire_from_panes<O>(
        &mut self,
        key: &K,
        window: TimeWindow,
        firing: Firing,
        fresh_pane: Option<TimeWindow>,
        out: &mut Output<O>,
    ) -> Result<()>
    where
        O: Data,
        P: ProcessWindowFunction<K, A::Out, O>,
    {
        let pane_len = self.pane_len();
        let desc = slots::<A::Acc, Tr::State>();
        let mut acc: Option<A::Acc> = None;
        let mut had_data = false;
        let mut start = window.start;
        while start < window.end {
            let pane = TimeWindow::new(start, start + pane_len);
            if let Some(slot) = self.state.value(&desc, key, &pane)?.get() {
                had_data |= Some(pane) != fresh_pane;
                match &mut acc {
                    Some(a) => self.agg.merge(a, &slot.acc),
                    None => acc = Some(slot.acc.clone()),
                }
            }
            start += pane_len;
        }
        match acc {
            Some(acc) => {
                let update = firing == Firing::Late && had_data;
                Self::emit(
                    &mut self.function,
                    &self.agg,
                    key,
                    window,
                    acc,
                    firing,
                    update,
                    out,
                )
            }
            None => Ok(()),
        }
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
        if let WindowKind::Sliding { size, .. } = self.kind {
            if window.end - window.start == size {
                return self.fire_from_panes(&key, window, Firing::OnTime, None, out);
            }
            // A pane whose last window expired.
            if self
                .state
                .value(&slots::<A::Acc, Tr::State>(), &key, &window)?
                .take()
                .is_some()
            {
                self.live.fetch_add(-1, Ordering::Relaxed);
            }
            return Ok(());
        }
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
        let mut ctx = TriggerContext {
            key: &key,
            window,
            watermark: *watermark,
            processing_time: *processing_time,
            state: &mut slot.trigger,
            event_timers,
            processing_timers,
        };
        let decision = trigger.on_event_time(at, &window, &mut ctx);
        if decision.fires() && slot.has_data {
            let firing = match at.cmp(&window.max_timestamp()) {
                std::cmp::Ordering::Less => Firing::Early,
                std::cmp::Ordering::Equal => Firing::OnTime,
                std::cmp::Ordering::Greater => Firing::Late,
            };
            let update = slot.firings > 0;
            slot.firings += 1;
            let acc = if decision.purges() {
                slot.has_data = false;
                std::mem::replace(&mut slot.acc, agg.create())
            } else {
                slot.acc.clone()
            };
            Self::emit(function, agg, &key, window, acc, firing, update, out)?;
        } else if decision.purges() {
            slot.acc = agg.create();
            slot.has_data = false;
        }
        if at >= cleanup_at {
            trigger.clear(
                &window,
                &mut ctx_for_clear(
                    &key,
                    window,
                    *watermark,
                    *processing_time,
                    &mut slot.trigger,
                    event_timers,
                    processing_timers,
                ),
            );
            stored.take();
            live.fetch_add(-1, Ordering::Relaxed);
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

    fn on_processing_timer<O>(
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
        let Self {
            state,
            event_timers,
            processing_timers,
            agg,
            trigger,
            function,
            watermark,
            ..
        } = self;
        let desc = slots::<A::Acc, Tr::State>();
        let mut stored = state.value(&desc, &key, &window)?;
        let Some(slot) = stored.get_mut() else {
            return Ok(());
        };
        let mut ctx = TriggerContext {
            key: &key,
            window,
            watermark: *watermark,
            processing_time: at.millis(),
            state: &mut slot.trigger,
            event_timers,
            processing_timers,
        };
        let decision = trigger.on_processing_time(at.millis(), &window, &mut ctx);
        if decision.fires() && slot.has_data {
            let firing = if *watermark >= window.max_timestamp() {
                Firing::Late
            } else {
                Firing::Early
            };
            let update = slot.firings > 0;
            slot.firings += 1;
            let acc = if decision.purges() {
                slot.has_data = false;
                std::mem::replace(&mut slot.acc, agg.create())
            } else {
                slot.acc.clone()
            };
            Self::emit(function, agg, &key, window, acc, firing, update, out)?;
        } else if decision.purges() {
            slot.acc = agg.create();
            slot.has_data = false;
        }
        Ok(())
    }
}

fn ctx_for_clear<'a, K, S>(
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
        for Record { timestamp, value } in batch {
            if !timestamp.is_set() {
                out.dead_letter(
                    timestamp,
                    "record has no event time: give its source a watermark strategy with timestamps",
                    &std::any::type_name::<T>(),
                )?;
                continue;
            }
            let key = (self.key)(&value);
            match &self.kind {
                WindowKind::Tumbling { size, offset } => {
                    let window =
                        WindowKind::<T>::tumbling_window(*size, *offset, timestamp.millis());
                    if self.is_late(&window) {
                        self.late(timestamp, value, out);
                    } else {
                        self.add_to_window(&key, window, timestamp, value, out)?;
                    }
                }
                WindowKind::Global => {
                    self.add_to_window(&key, TimeWindow::GLOBAL, timestamp, value, out)?
                }
                WindowKind::Sliding { .. } => self.add_to_pane(&key, timestamp, value, out)?,
                WindowKind::Session(gap) => {
                    let gap = self.kind.gap_of(gap, &value);
                    if gap <= 0 {
                        out.dead_letter(
                            timestamp,
                            format!("session gap must be positive, got {gap} ms"),
                            &std::any::type_name::<T>(),
                        )?;
                        continue;
                    }
                    let window =
                        TimeWindow::new(timestamp.millis(), timestamp.millis().saturating_add(gap));
                    self.add_to_session(&key, window, timestamp, value, out)?;
                }
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: EventTime, out: &mut Output<O>) -> Result<()> {
        self.watermark = watermark;
        while let Some((at, key, window)) = self.event_timers.pop_due(watermark) {
            self.on_event_timer(at, key, window, out)?;
        }
        Ok(())
    }

    fn on_processing_time(&mut self, now: i64, out: &mut Output<O>) -> Result<()> {
        self.processing_time = now;
        while let Some((at, key, window)) =
            self.processing_timers.pop_due(EventTime::from_millis(now))
        {
            self.on_processing_timer(at, key, window, out)?;
        }
        Ok(())
    }
}
