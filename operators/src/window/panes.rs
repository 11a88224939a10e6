//! Sliding windows computed from panes, all of a key's panes in one state
//! value.
//!
//! A pane is a slice of `gcd(size, slide)`; each record updates exactly one
//! pane accumulator, and a window's result is the merge of its panes. Per key
//! the panes sit in time order in one [`PaneBuffer`] (keyed state, namespace
//! `()`), with one timer at a time: the next window end to fire, or the next
//! pane to expire, whichever comes first. So a record costs one state lookup,
//! and firing a window costs one lookup and one timer, whatever `size/slide` is.
//!
//! A record can be late for some of its pane's windows and not for the
//! others (the partition-local lateness rule judges by the record's own
//! partition's watermark, which may be ahead of the operator's, so those
//! windows have not fired yet). Such a record goes to a *partial pane*: the
//! same slice, counted only in windows ending at or after its `from_end`.
//! Partial panes are kept apart from the full ones (usually there are none,
//! and full panes stay as compact as before), and fire and expire like them.

use smallvec::SmallVec;

use tideline_engine::{EventTime, Output, Result};
use tideline_state::ValueStateDescriptor;

use super::assigner::{floor_mod_diff, TimeWindow};
use super::Firing;

/// A partial pane: records of the slice at `start` counted only in windows
/// ending at or after `from_end`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Partial<Acc> {
    start: i64,
    from_end: i64,
    acc: Acc,
}

/// The `from_end` of a full pane: it counts in every window holding its slice.
pub(crate) const FULL: i64 = i64::MIN;

/// The panes of one key, and where its on-time firings have got to.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct PaneBuffer<Acc> {
    /// Full panes, `(start, accumulator)`, sorted by start. Inline: a key's
    /// panes are read where the state table holds the buffer (one cache
    /// miss per firing, not two); a sliding window of size/slide up to 7
    /// rarely holds more. (Serialized as a sequence, like a `VecDeque`.)
    panes: SmallVec<[(i64, Acc); 8]>,
    /// Partial panes, sorted by `(start, from_end)`; usually empty.
    partials: Vec<Partial<Acc>>,
    /// The pending timer of this key, if any.
    timer_at: Option<i64>,
    /// Every window ending at or before this has had its on-time firing.
    fired_through: i64,
}

pub(crate) const fn pane_buffers<Acc>() -> ValueStateDescriptor<PaneBuffer<Acc>> {
    ValueStateDescriptor::new("window-panes")
}

/// The geometry of a sliding assigner.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    pub(crate) size: i64,
    pub(crate) slide: i64,
    pub(crate) offset: i64,
    pub(crate) pane: i64,
    pub(crate) lateness: i64,
    /// Window ends lie on `phase` modulo `slide`.
    phase: i64,
}

impl Grid {
    /// The panes of tumbling (each window one pane) and sliding windows;
    /// `None` for the other kinds.
    pub(crate) fn of<T>(kind: &super::assigner::WindowKind<T>, lateness: i64) -> Option<Self> {
        use super::assigner::WindowKind;
        match *kind {
            WindowKind::Tumbling { size, offset } => Some(Self::new(size, size, offset, lateness)),
            WindowKind::Sliding {
                size,
                slide,
                offset,
            } => Some(Self::new(size, slide, offset, lateness)),
            _ => None,
        }
    }

    pub(crate) fn new(size: i64, slide: i64, offset: i64, lateness: i64) -> Self {
        let phase = (floor_mod_diff(offset, 0, slide) + floor_mod_diff(size, 0, slide)) % slide;
        Self {
            size,
            slide,
            offset,
            pane: super::assigner::gcd(size, slide),
            lateness,
            phase,
        }
    }

    pub(crate) fn pane_start(&self, ts: i64) -> i64 {
        ts - floor_mod_diff(ts, self.offset, self.pane)
    }

    /// The smallest window end `>= x`: ends lie on `offset + size` modulo
    /// `slide`, and `size` is a multiple of the pane, so of `gcd`; the phase is
    /// `offset + size` reduced modulo `slide`.
    fn end_at_or_after(&self, x: i64) -> i64 {
        x.saturating_add(floor_mod_diff(self.phase, x, self.slide))
    }

    /// The end of the first window holding the pane at `start`.
    pub(crate) fn first_end_of_pane(&self, start: i64) -> i64 {
        self.end_at_or_after(start.saturating_add(self.pane))
    }

    /// The end of the last window holding the pane at `start`.
    pub(crate) fn last_end_of_pane(&self, start: i64) -> i64 {
        let last_start = start - floor_mod_diff(start, self.offset, self.slide);
        last_start.saturating_add(self.size)
    }

    /// The smallest pane start whose last window ends at or after `end`:
    /// pane `s` has such a window iff `s >= ` this (the last window of a
    /// pane starts at the window start at or before it, which grows with
    /// `s`). One division, where testing each pane would take one each.
    ///
    /// `None` within a window and a slide of the ends of time, where the
    /// per-pane answers saturate: callers then test each pane.
    fn first_start_ending_from(&self, end: i64) -> Option<i64> {
        let margin = self.size.saturating_add(self.slide);
        if end <= i64::MIN.saturating_add(margin) || end >= i64::MAX.saturating_sub(margin) {
            return None;
        }
        let earliest = end - self.size;
        Some(earliest + floor_mod_diff(self.offset, earliest, self.slide))
    }

    /// The ends of the first and last windows holding the pane at `start`.
    pub(crate) fn ends_of_pane(&self, start: i64) -> (i64, i64) {
        (self.first_end_of_pane(start), self.last_end_of_pane(start))
    }

    /// The first window end of a pane whose windows end at `first..=last`
    /// that a record judged by watermark `judge` is not late for (`end - 1 + L > judge`): [`FULL`]
    /// when it is late for none, `None` when it is late for all.
    pub(crate) fn first_live_end(
        &self,
        (first, last): (i64, i64),
        judge: EventTime,
    ) -> Option<i64> {
        let expired = |end: i64| {
            EventTime::from_millis(end.saturating_sub(1)).saturating_add_millis(self.lateness)
                <= judge
        };
        if expired(last) {
            return None;
        }
        if !expired(first) {
            return Some(FULL);
        }
        // The smallest end on the grid with `end >= judge - L + 2`.
        let bound = judge
            .millis()
            .saturating_sub(self.lateness)
            .saturating_add(2);
        Some(self.end_at_or_after(bound).max(first))
    }

    /// The ends of the first and last windows a pane entry counts in.
    fn ends_of(&self, start: i64, from_end: i64) -> (i64, i64) {
        let (first, last) = self.ends_of_pane(start);
        (first.max(from_end), last)
    }

    /// When the pane at `start` can be dropped: its last window is past the lateness.
    fn expiry(&self, start: i64) -> i64 {
        self.ends_of_pane(start)
            .1
            .saturating_sub(1)
            .saturating_add(self.lateness)
    }

    /// The last window end `e` with `e - 1 <= watermark` (its on-time moment has passed).
    fn last_end_due(&self, watermark: EventTime) -> i64 {
        if watermark == EventTime::MIN {
            return i64::MIN;
        }
        let due = watermark.millis().saturating_add(1);
        let next = self.end_at_or_after(due);
        if next == due {
            next
        } else {
            next.saturating_sub(self.slide)
        }
    }

    fn window(&self, end: i64) -> TimeWindow {
        TimeWindow::new(end.saturating_sub(self.size), end)
    }
}

/// What the window operator supplies to the pane logic.
pub(crate) trait PaneHost<Acc, O> {
    fn create(&self) -> Acc;
    fn merge(&self, acc: &mut Acc, other: &Acc);
    fn emit(
        &mut self,
        window: TimeWindow,
        acc: Acc,
        firing: Firing,
        update: bool,
        out: &mut Output<O>,
    ) -> Result<()>;
}

impl<Acc: Clone> PaneBuffer<Acc> {
    /// A buffer for a key seen first (or again, after all its panes expired)
    /// at `watermark`: windows already due then are not due again.
    pub(crate) fn new(grid: &Grid, watermark: EventTime) -> Self {
        Self {
            panes: SmallVec::new(),
            partials: Vec::new(),
            timer_at: None,
            fired_through: grid.last_end_due(watermark),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.panes.is_empty() && self.partials.is_empty()
    }

    /// Every window due by `watermark` has had its on-time moment (its timer,
    /// if it had data, fired before this record): mark them so.
    pub(crate) fn catch_up(&mut self, grid: &Grid, watermark: EventTime) {
        self.fired_through = self.fired_through.max(grid.last_end_due(watermark));
    }

    /// The accumulator of the pane at `start` counting from window end
    /// `from_end` ([`FULL`] for all its windows), created if missing; `true`
    /// if created.
    pub(crate) fn pane_mut(
        &mut self,
        start: i64,
        from_end: i64,
        create: impl FnOnce() -> Acc,
    ) -> (&mut Acc, bool) {
        if from_end != FULL {
            return self.partial_mut(start, from_end, create);
        }
        // Records mostly go to the newest pane: search from the back.
        let pos = self.panes.iter().rposition(|(s, _)| *s <= start);
        let (index, created) = match pos {
            Some(i) if self.panes[i].0 == start => (i, false),
            Some(i) => {
                self.panes.insert(i + 1, (start, create()));
                (i + 1, true)
            }
            None => {
                self.panes.insert(0, (start, create()));
                (0, true)
            }
        };
        (&mut self.panes[index].1, created)
    }

    fn partial_mut(
        &mut self,
        start: i64,
        from_end: i64,
        create: impl FnOnce() -> Acc,
    ) -> (&mut Acc, bool) {
        let key = (start, from_end);
        let (index, created) = match self
            .partials
            .binary_search_by_key(&key, |p| (p.start, p.from_end))
        {
            Ok(i) => (i, false),
            Err(i) => {
                let acc = create();
                self.partials.insert(
                    i,
                    Partial {
                        start,
                        from_end,
                        acc,
                    },
                );
                (i, true)
            }
        };
        (&mut self.partials[index].acc, created)
    }

    /// The merged accumulator of the window ending at `end`, and whether a
    /// pane entry other than `except` (`(start, from_end)`) contributed.
    fn window_acc<O, H: PaneHost<Acc, O>>(
        &self,
        host: &H,
        grid: &Grid,
        end: i64,
        except: Option<(i64, i64)>,
    ) -> Option<(Acc, bool)> {
        let start = end.saturating_sub(grid.size);
        let mut acc: Option<Acc> = None;
        let mut others = false;
        let full = self
            .panes
            .iter()
            .filter(|(s, _)| *s >= start && *s < end)
            .map(|(s, a)| ((*s, FULL), a));
        let partial = self
            .partials
            .iter()
            .filter(|p| p.start >= start && p.start < end && p.from_end <= end)
            .map(|p| ((p.start, p.from_end), &p.acc));
        for (id, pane) in full.chain(partial) {
            others |= Some(id) != except;
            match &mut acc {
                Some(a) => host.merge(a, pane),
                None => acc = Some(pane.clone()),
            }
        }
        acc.map(|a| (a, others))
    }

    /// Re-fires the windows the pane entry `(start, from_end)` counts in
    /// that already fired but are within the allowed lateness (a late record
    /// just landed there).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fire_late<O, H: PaneHost<Acc, O>>(
        &self,
        host: &mut H,
        grid: &Grid,
        start: i64,
        from_end: i64,
        created: bool,
        watermark: EventTime,
        out: &mut Output<O>,
    ) -> Result<()> {
        let (first, last) = grid.ends_of(start, from_end);
        let mut end = first;
        while end <= last && EventTime::from_millis(end - 1) <= watermark {
            if EventTime::from_millis(end - 1).saturating_add_millis(grid.lateness) > watermark {
                let except = created.then_some((start, from_end));
                if let Some((acc, others)) = self.window_acc(host, grid, end, except) {
                    host.emit(grid.window(end), acc, Firing::Late, others, out)?;
                }
            }
            end = end.saturating_add(grid.slide);
        }
        Ok(())
    }

    /// The earliest window end at or after `from` that some pane counts in.
    fn next_end_from(&self, grid: &Grid, from: i64) -> Option<i64> {
        // Full panes' first ends grow with their start: the first that
        // reaches `from` is the earliest.
        let full = match grid.first_start_ending_from(from) {
            Some(reaching) => self
                .panes
                .iter()
                .find(|(s, _)| *s >= reaching)
                .map(|(s, _)| grid.first_end_of_pane(*s).max(from)),
            None => self
                .panes
                .iter()
                .map(|(s, _)| grid.ends_of_pane(*s))
                .find(|(_, last)| *last >= from)
                .map(|(first, _)| first.max(from)),
        };
        let partial = self
            .partials
            .iter()
            .map(|p| grid.ends_of(p.start, p.from_end))
            .filter(|(_, last)| *last >= from)
            .map(|(first, _)| first.max(from))
            .min();
        match (full, partial) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next time this key needs its timer: the next on-time window end
    /// holding data, or the next pane expiry.
    fn next_due(&self, grid: &Grid) -> Option<i64> {
        let oldest = match (self.panes.first(), self.partials.first()) {
            (Some((a, _)), Some(b)) => (*a).min(b.start),
            (Some((a, _)), None) => *a,
            (None, Some(b)) => b.start,
            (None, None) => return None,
        };
        let expiry = grid.expiry(oldest);
        let next_end = self.next_end_from(grid, self.fired_through.saturating_add(grid.slide));
        Some(next_end.map_or(expiry, |e| (e - 1).min(expiry)))
    }

    /// After adding a pane: the time to register a timer at, if the key's
    /// pending timer is later than what it needs now.
    pub(crate) fn reschedule(&mut self, grid: &Grid) -> Option<i64> {
        let due = self.next_due(grid)?;
        if self.timer_at.is_none_or(|t| due < t) {
            self.timer_at = Some(due);
            return Some(due);
        }
        None
    }

    /// The key's timer fired: fire every window due by `watermark` that has
    /// not fired on time, drop expired panes, and say when to wake next.
    /// Returns `(panes dropped, next timer)`.
    pub(crate) fn on_timer<O, H: PaneHost<Acc, O>>(
        &mut self,
        host: &mut H,
        grid: &Grid,
        at: i64,
        watermark: EventTime,
        out: &mut Output<O>,
    ) -> Result<(usize, Option<i64>)> {
        if self.timer_at == Some(at) {
            self.timer_at = None;
        }
        let wm = watermark.millis();
        // Windows ending at `e` with `e - 1 <= wm`, in order, skipping gaps.
        let last_due = wm.saturating_add(1);
        let mut candidate = self.next_end_from(grid, self.fired_through.saturating_add(grid.slide));
        while let Some(end) = candidate {
            if end > last_due {
                break;
            }
            if let Some((acc, _)) = self.window_acc(host, grid, end, None) {
                host.emit(grid.window(end), acc, Firing::OnTime, false, out)?;
            }
            self.fired_through = end;
            let next = end.saturating_add(grid.slide);
            // Jump over windows without panes.
            candidate = self.next_end_from(grid, next);
        }
        // Everything due is done, whether it had data or not.
        self.fired_through = self.fired_through.max(grid.last_end_due(watermark));
        let before = self.panes.len() + self.partials.len();
        let expired = |start: i64| EventTime::from_millis(grid.expiry(start)) <= watermark;
        // A pane expires when its last window ends at or before
        // `watermark + 1 - lateness`: the ones before the first that does not.
        let kept_from = watermark
            .millis()
            .checked_add(2)
            .and_then(|b| b.checked_sub(grid.lateness))
            .and_then(|b| grid.first_start_ending_from(b));
        let gone = match kept_from {
            Some(kept_from) => self
                .panes
                .iter()
                .take_while(|(s, _)| *s < kept_from)
                .count(),
            // At the ends of time (the last watermark, say), pane by pane.
            None => self.panes.iter().take_while(|(s, _)| expired(*s)).count(),
        };
        self.panes.drain(..gone);
        if !self.partials.is_empty() {
            self.partials.retain(|p| !expired(p.start));
        }
        let dropped = before - self.panes.len() - self.partials.len();
        let next = self.next_due(grid);
        if let Some(n) = next {
            if self.timer_at.is_none_or(|t| n < t) {
                self.timer_at = Some(n);
                return Ok((dropped, Some(n)));
            }
        }
        Ok((dropped, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-division bound agrees with asking each pane, and declines
    /// at the ends of time.
    #[test]
    fn first_start_ending_from_matches_each_panes_last_end() {
        for (size, slide, offset) in [(10, 2, 0), (10, 2, 1), (9, 3, -4), (6, 4, 5), (5, 5, 2)] {
            let grid = Grid::new(size, slide, offset, 0);
            assert_eq!(grid.first_start_ending_from(i64::MAX), None);
            assert_eq!(grid.first_start_ending_from(i64::MIN + 3), None);
            for end in -40..40 {
                let Some(bound) = grid.first_start_ending_from(end) else {
                    panic!("no bound for end {end}");
                };
                for start in (-60..60).map(|s| grid.pane_start(s)) {
                    assert_eq!(
                        start >= bound,
                        grid.last_end_of_pane(start) >= end,
                        "size {size} slide {slide} offset {offset} end {end} start {start}"
                    );
                }
            }
        }
    }
}
