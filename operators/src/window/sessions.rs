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

use smallvec::SmallVec;
use tideline_engine::{EventTime, Output, Result};
use tideline_state::ValueStateDescriptor;

use super::assigner::TimeWindow;
use super::panes::PaneHost;
use super::Firing;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Open<Acc> {
    window: TimeWindow,
    acc: Acc,
    firings: u32,
    /// Whether the watermark has passed the end and the on-time result went out.
    fired_on_time: bool,
}

/// The open sessions of one key: usually one or two, kept inline in the
/// state entry so a record costs one memory access, not two.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct SessionBuffer<Acc> {
    sessions: SmallVec<[Open<Acc>; 2]>,
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
            sessions: SmallVec::new(),
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

    /// Whether a record's own session `window` is already past the lateness
    /// by `judge` (and, with `alone_only`, merges with no open session).
    pub(crate) fn is_late(
        &self,
        window: &TimeWindow,
        lateness: i64,
        judge: EventTime,
        alone_only: bool,
    ) -> bool {
        window.max_timestamp().saturating_add_millis(lateness) <= judge
            && !(alone_only
                && self
                    .sessions
                    .iter()
                    .any(|s| s.window.overlaps_or_touches(window)))
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
        // Sessions are sorted, disjoint and not touching, so the ones the new
        // window overlaps or touches form one run `lo..hi`, and merging them
        // cannot reach any other session.
        let lo = self
            .sessions
            .partition_point(|s| s.window.end < window.start);
        let hi = self
            .sessions
            .partition_point(|s| s.window.start <= window.end);
        let merged_away = hi.saturating_sub(lo).saturating_sub(1);
        let index = if lo >= hi {
            self.sessions.insert(
                lo,
                Open {
                    window,
                    acc: single,
                    firings: 0,
                    fired_on_time: false,
                },
            );
            lo
        } else {
            let (head, tail) = self.sessions.split_at_mut(lo + 1);
            let target = &mut head[lo];
            target.window = target.window.cover(&window);
            host.merge(&mut target.acc, &single);
            for other in &tail[..hi - lo - 1] {
                target.window = target.window.cover(&other.window);
                host.merge(&mut target.acc, &other.acc);
                target.firings = target.firings.max(other.firings);
            }
            self.sessions.drain(lo + 1..hi);
            lo
        };
        let merged = &mut self.sessions[index];
        // A merged session whose end is still ahead fires on time (again);
        // one already behind the watermark fires now, as a late result.
        merged.fired_on_time = merged.window.max_timestamp() <= watermark;
        if merged.fired_on_time {
            let update = merged.firings > 0;
            merged.firings += 1;
            host.emit(merged.window, merged.acc.clone(), Firing::Late, update, out)?;
        }
        Ok(Added {
            live_delta: if lo >= hi { 1 } else { -(merged_away as i64) },
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
