//! Triggers decide when a window emits (Flink's `Trigger`).
//!
//! A trigger is asked on every record of a window, when one of the timers it
//! registered fires, and when the window goes away (`clear`). It answers with
//! a [`TriggerResult`]. Per window it may keep a small state
//! ([`Trigger::State`]) and register event- or processing-time timers through
//! the [`TriggerContext`]. The window operator itself cleans a window up when
//! the watermark passes `max_timestamp + allowed_lateness`, whatever the
//! trigger did.

use tideline_engine::time::TimerService;
use tideline_engine::EventTime;

use super::TimeWindow;

/// What a trigger decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerResult {
    /// Nothing now.
    Continue,
    /// Emit the window's current result, keep its contents.
    Fire,
    /// Drop the window's contents without emitting.
    Purge,
    /// Emit, then drop the contents.
    FireAndPurge,
}

impl TriggerResult {
    pub(crate) fn fires(self) -> bool {
        matches!(self, TriggerResult::Fire | TriggerResult::FireAndPurge)
    }
    pub(crate) fn purges(self) -> bool {
        matches!(self, TriggerResult::Purge | TriggerResult::FireAndPurge)
    }
}

/// What a trigger can see and do for one window of one key.
#[derive(Debug)]
pub struct TriggerContext<'a, K, S> {
    pub(crate) key: &'a K,
    pub(crate) window: TimeWindow,
    pub(crate) watermark: EventTime,
    pub(crate) processing_time: i64,
    pub(crate) state: &'a mut S,
    pub(crate) event_timers: &'a mut TimerService<K, TimeWindow>,
    pub(crate) processing_timers: &'a mut TimerService<K, TimeWindow>,
}

impl<K: std::hash::Hash + Eq + Clone, S> TriggerContext<'_, K, S> {
    /// The operator's current watermark.
    pub fn current_watermark(&self) -> EventTime {
        self.watermark
    }

    /// The job clock's time, as last seen by the operator (ms).
    pub fn current_processing_time(&self) -> i64 {
        self.processing_time
    }

    /// This window's trigger state.
    pub fn state(&mut self) -> &mut S {
        self.state
    }

    /// Calls [`Trigger::on_event_time`] when the watermark reaches `at`.
    pub fn register_event_time_timer(&mut self, at: EventTime) {
        self.event_timers.register(self.key, &self.window, at);
    }

    /// Cancels an event-time timer of this window.
    pub fn delete_event_time_timer(&mut self, at: EventTime) {
        self.event_timers.delete(self.key, &self.window, at);
    }

    /// Calls [`Trigger::on_processing_time`] when the job clock reaches `at_millis`.
    pub fn register_processing_time_timer(&mut self, at_millis: i64) {
        self.processing_timers
            .register(self.key, &self.window, EventTime::from_millis(at_millis));
    }

    /// Cancels a processing-time timer of this window.
    pub fn delete_processing_time_timer(&mut self, at_millis: i64) {
        self.processing_timers
            .delete(self.key, &self.window, EventTime::from_millis(at_millis));
    }
}

/// Decides when windows emit.
pub trait Trigger<T>: Clone + Send + Sync + 'static {
    /// Per-window state (use `()` when none).
    type State: Default + tideline_state::StateValue;

    /// Whether this is the plain event-time trigger (the only one sliding
    /// windows support, since they are computed from shared panes). Leave
    /// it `false` in your own triggers: when it is `true`, the window
    /// operator decides as [`EventTimeTrigger`] does without calling
    /// `on_element`, and may pre-aggregate records before the exchange.
    const IS_EVENT_TIME: bool = false;

    /// A record was added to `window` (`ctx` has its state and timers).
    fn on_element<K: std::hash::Hash + Eq + Clone>(
        &self,
        value: &T,
        timestamp: EventTime,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K, Self::State>,
    ) -> TriggerResult;

    /// An event-time timer of `window` fired at `time`.
    fn on_event_time<K: std::hash::Hash + Eq + Clone>(
        &self,
        time: EventTime,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K, Self::State>,
    ) -> TriggerResult;

    /// A processing-time timer of `window` fired at `time` (ms).
    fn on_processing_time<K: std::hash::Hash + Eq + Clone>(
        &self,
        time: i64,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K, Self::State>,
    ) -> TriggerResult {
        let _ = (time, window, ctx);
        TriggerResult::Continue
    }

    /// Session windows merged into `window`; the state starts from default.
    /// Re-register the timers the merged window needs.
    fn on_merge<K: std::hash::Hash + Eq + Clone>(
        &self,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K, Self::State>,
    ) {
        // A merged window already behind the watermark fired as a late result.
        if window.max_timestamp() > ctx.watermark {
            ctx.register_event_time_timer(window.max_timestamp());
        }
    }

    /// The window is going away: delete timers you registered besides the
    /// end-of-window one (the operator removes the state).
    fn clear<K: std::hash::Hash + Eq + Clone>(
        &self,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K, Self::State>,
    ) {
        let _ = (window, ctx);
    }
}

/// The event-time trigger's decision: fire if the watermark reached the
/// window's end, else wait for the timer at that end (registered here when
/// `register`; the window operator skips it when the timer is known to be
/// pending).
pub(crate) fn fire_or_wait<K: std::hash::Hash + Eq + Clone, S>(
    window: &TimeWindow,
    ctx: &mut TriggerContext<'_, K, S>,
    register: bool,
) -> TriggerResult {
    if window.max_timestamp() <= ctx.watermark {
        return TriggerResult::Fire;
    }
    if register {
        ctx.register_event_time_timer(window.max_timestamp());
    }
    TriggerResult::Continue
}

/// The default: fires when the watermark passes the end of the window, and
/// again for every record that arrives within the allowed lateness.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventTimeTrigger;

impl<T> Trigger<T> for EventTimeTrigger {
    type State = ();
    const IS_EVENT_TIME: bool = true;

    fn on_element<K: std::hash::Hash + Eq + Clone>(
        &self,
        _value: &T,
        _timestamp: EventTime,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K, ()>,
    ) -> TriggerResult {
        fire_or_wait(window, ctx, true)
    }

    fn on_event_time<K: std::hash::Hash + Eq + Clone>(
        &self,
        time: EventTime,
        window: &TimeWindow,
        _ctx: &mut TriggerContext<'_, K, ()>,
    ) -> TriggerResult {
        if time == window.max_timestamp() {
            TriggerResult::Fire
        } else {
            TriggerResult::Continue
        }
    }
}

/// The event-time trigger plus early results while the window is open:
/// every `interval_ms` of processing time and/or every `records` records.
#[derive(Clone, Copy, Debug, Default)]
pub struct EarlyFiring {
    interval_ms: Option<i64>,
    records: Option<u64>,
}

/// Per-window state of [`EarlyFiring`]: records since the last early firing.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct EarlyFiringState {
    since_fire: u64,
    timer_at: Option<i64>,
}

impl EarlyFiring {
    /// Early results every `interval` of processing time (the job's clock).
    pub fn every(interval: std::time::Duration) -> Self {
        Self {
            interval_ms: Some(
                i64::try_from(interval.as_millis())
                    .unwrap_or(i64::MAX)
                    .max(1),
            ),
            records: None,
        }
    }

    /// Early results every `n` records (at least 1).
    pub fn every_records(n: u64) -> Self {
        Self {
            interval_ms: None,
            records: Some(n.max(1)),
        }
    }
}

impl<T> Trigger<T> for EarlyFiring {
    type State = EarlyFiringState;

    fn on_element<K: std::hash::Hash + Eq + Clone>(
        &self,
        value: &T,
        timestamp: EventTime,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K, EarlyFiringState>,
    ) -> TriggerResult {
        let on_time = <EventTimeTrigger as Trigger<T>>::on_element(
            &EventTimeTrigger,
            value,
            timestamp,
            window,
            &mut TriggerContext {
                key: ctx.key,
                window: ctx.window,
                watermark: ctx.watermark,
                processing_time: ctx.processing_time,
                state: &mut (),
                event_timers: ctx.event_timers,
                processing_timers: ctx.processing_timers,
            },
        );
        if on_time.fires() {
            return on_time;
        }
        if let Some(interval) = self.interval_ms {
            if ctx.state.timer_at.is_none() {
                let at = ctx.processing_time.saturating_add(interval);
                ctx.state.timer_at = Some(at);
                ctx.register_processing_time_timer(at);
            }
        }
        if let Some(n) = self.records {
            ctx.state.since_fire += 1;
            if ctx.state.since_fire >= n {
                ctx.state.since_fire = 0;
                return TriggerResult::Fire;
            }
        }
        TriggerResult::Continue
    }

    fn on_event_time<K: std::hash::Hash + Eq + Clone>(
        &self,
        time: EventTime,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K, EarlyFiringState>,
    ) -> TriggerResult {
        if time == window.max_timestamp() {
            if let Some(at) = ctx.state.timer_at.take() {
                ctx.delete_processing_time_timer(at);
            }
            TriggerResult::Fire
        } else {
            TriggerResult::Continue
        }
    }

    fn on_processing_time<K: std::hash::Hash + Eq + Clone>(
        &self,
        time: i64,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K, EarlyFiringState>,
    ) -> TriggerResult {
        if ctx.watermark >= window.max_timestamp() {
            ctx.state.timer_at = None;
            return TriggerResult::Continue;
        }
        // Re-arm for the next interval while the window is open.
        if let Some(interval) = self.interval_ms {
            let at = time.saturating_add(interval);
            ctx.state.timer_at = Some(at);
            ctx.register_processing_time_timer(at);
        }
        TriggerResult::Fire
    }

    fn on_merge<K: std::hash::Hash + Eq + Clone>(
        &self,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K, EarlyFiringState>,
    ) {
        // A merged window already behind the watermark fired as a late result.
        if window.max_timestamp() > ctx.watermark {
            ctx.register_event_time_timer(window.max_timestamp());
        }
    }

    fn clear<K: std::hash::Hash + Eq + Clone>(
        &self,
        _window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K, EarlyFiringState>,
    ) {
        if let Some(at) = ctx.state.timer_at.take() {
            ctx.delete_processing_time_timer(at);
        }
    }
}

/// Fires and purges every `n` records (Flink's `countWindow(n)`: a count
/// trigger wrapped in a purging trigger). At the end of input a window with
/// fewer than `n` records fires too, so no record is left unaccounted for.
#[derive(Clone, Copy, Debug)]
pub struct CountTrigger {
    n: u64,
}

impl CountTrigger {
    /// Every `n` records (at least 1).
    pub fn of(n: u64) -> Self {
        Self { n: n.max(1) }
    }
}

impl<T> Trigger<T> for CountTrigger {
    type State = u64;

    fn on_element<K: std::hash::Hash + Eq + Clone>(
        &self,
        _value: &T,
        _timestamp: EventTime,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K, u64>,
    ) -> TriggerResult {
        *ctx.state += 1;
        if *ctx.state >= self.n {
            *ctx.state = 0;
            return TriggerResult::FireAndPurge;
        }
        // A partial window fires at its end (for the global window: at the
        // end of input, when the watermark becomes +inf).
        ctx.register_event_time_timer(window.max_timestamp());
        TriggerResult::Continue
    }

    fn on_event_time<K: std::hash::Hash + Eq + Clone>(
        &self,
        _time: EventTime,
        _window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K, u64>,
    ) -> TriggerResult {
        if *ctx.state > 0 {
            *ctx.state = 0;
            TriggerResult::FireAndPurge
        } else {
            TriggerResult::Continue
        }
    }
}
