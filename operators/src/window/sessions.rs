//! Session windows under the event-time trigger, all of a key's sessions in
//! one state value.
//!
//! Per key, a [`SessionBuffer`] (keyed state, namespace `()`) holds the open
//! sessions in start order, each with its accumulator. A record opens
//! `[ts, ts + gap)` and merges with every session it overlaps or touches, in
//! place. One timer per key, rescheduled lazily: when a session grows, its
//! old end timer is not moved; when that timer fires it finds the session
//! still open and asks for the new time. So extending a session (the common
//! case) costs one state lookup and no timer work.

use tideline_engine::{EventTime, Output, Result};
use tideline_state::ValueStateDescriptor;

use super::assigner::TimeWindow;
use super::panes::PaneHost;
use super::Firing;

#[derive(Clone, Debug)]
struct Open<Acc> {
    window: TimeWindow,
    acc: Acc,
    firings: u32,
    /// Whether the watermark has passed the end and the on-time result went out.
    fired_on_time: bool,
}

/// The open sessions of one key.
#[derive(Clone, Debug)]
pub(crate) struct SessionBuffer<Acc> {
    sessions: Vec<Open<Acc>>,
    timer_at: Option<i64>,
}

pub(crate) const fn session_buffers<Acc>() -> ValueStateDescriptor<SessionBuffer<Acc>> {
    ValueStateDescriptor::new("window-sessions")
}

/// What adding a record did.
pub(crate) struct Added {
    /// Sessions created minus sessions merged away.
    pub(crate) live_delta: i64,
    /// A timer to register.
    pub(crate) timer: Option<i64>,
}

impl<Acc: Clone> SessionBuffer<Acc> {
    pub(crate) fn new() -> Self {
        Self {
            sessions: Vec::new(),
            timer_at: None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    fn due(&self, s: &Open<Acc>, lateness: i64) -> i64 {
        let end = s.window.max_timestamp().millis();
        if s.fired_on_time {
            end.saturating_add(lateness)
        } else {
            end
        }
    }

    fn next_due(&self, lateness: i64) -> Option<i64> {
        self.sessions.iter().map(|s| self.due(s, lateness)).min()
    }

    fn schedule(&mut self, lateness: i64) -> Option<i64> {
        let due = self.next_due(lateness)?;
        if self.timer_at.is_none_or(|t| due < t) {
            self.timer_at = Some(due);
            return Some(due);
        }
        None
    }

    /// Whether `window` merges with nothing and is already past the lateness.
    pub(crate) fn is_late(&self, window: &TimeWindow, lateness: i64, watermark: EventTime) -> bool {
        window.max_timestamp().saturating_add_millis(lateness) <= watermark
            && !self
                .sessions
                .iter()
                .any(|s| s.window.overlaps_or_touches(window))
    }

    /// Adds a record (already accumulated into `single`, the accumulator of
    /// its own window `window`), merging sessions. Late-but-allowed sessions
    /// fire at once.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add<O, H: PaneHost<Acc, O>>(
        &mut self,
        host: &mut H,
        window: TimeWindow,
        single: Acc,
        lateness: i64,
        watermark: EventTime,
        out: &mut Output<O>,
    ) -> Result<Added> {
        let mut merged = Open {
            window,
            acc: single,
            firings: 0,
            fired_on_time: false,
        };
        let before = self.sessions.len();
        // Sessions are disjoint and sorted: the ones merging form one run.
        let mut kept = Vec::with_capacity(before + 1);
        for s in self.sessions.drain(..) {
            if s.window.overlaps_or_touches(&merged.window) {
                merged.window = merged.window.cover(&s.window);
                host.merge(&mut merged.acc, &s.acc);
                merged.firings = merged.firings.max(s.firings);
            } else {
                kept.push(s);
            }
        }
        let merged_away = before - kept.len();
        // A merged session whose end is still ahead fires on time (again);
        // one already behind the watermark fires now, as a late result.
        let late_now = merged.window.max_timestamp() <= watermark;
        if late_now {
            let update = merged.firings > 0;
            merged.firings += 1;
            merged.fired_on_time = true;
            host.emit(merged.window, merged.acc.clone(), Firing::Late, update, out)?;
        }
        let at = kept.partition_point(|s| s.window.start < merged.window.start);
        kept.insert(at, merged);
        self.sessions = kept;
        Ok(Added {
            live_delta: 1 - merged_away as i64,
            timer: self.schedule(lateness),
        })
    }

    /// The key's timer fired: on-time results for sessions whose end the
    /// watermark passed, then drop the ones past the lateness. Returns
    /// `(sessions dropped, next timer)`.
    pub(crate) fn on_timer<O, H: PaneHost<Acc, O>>(
        &mut self,
        host: &mut H,
        at: i64,
        lateness: i64,
        watermark: EventTime,
        out: &mut Output<O>,
    ) -> Result<(usize, Option<i64>)> {
        if self.timer_at == Some(at) {
            self.timer_at = None;
        }
        for s in &mut self.sessions {
            if !s.fired_on_time && s.window.max_timestamp() <= watermark {
                let update = s.firings > 0;
                s.firings += 1;
                s.fired_on_time = true;
                // A session dropped right after firing gives up its accumulator.
                let expired = s.window.max_timestamp().saturating_add_millis(lateness) <= watermark;
                let acc = if expired {
                    std::mem::replace(&mut s.acc, host.create())
                } else {
                    s.acc.clone()
                };
                host.emit(s.window, acc, Firing::OnTime, update, out)?;
            }
        }
        let before = self.sessions.len();
        self.sessions
            .retain(|s| s.window.max_timestamp().saturating_add_millis(lateness) > watermark);
        Ok((before - self.sessions.len(), self.schedule(lateness)))
    }
}
