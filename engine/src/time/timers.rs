//! Timers of keyed operators.
//!
//! Invariants: a timer is identified by `(key, namespace, timestamp)` and is
//! registered at most once; due timers come out in timestamp order, ties in
//! registration order (so firing order is deterministic for a deterministic
//! input); a deleted timer never fires. Timers live in an ordered map, so
//! firing after a large watermark jump costs `O(fired · log n)`, not a scan.

use std::collections::{BTreeMap, VecDeque};
use std::hash::Hash;
use std::ops::Bound;

use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;

use super::EventTime;

/// Timers for keys `K` in namespaces `N` (`()` for plain keyed timers, the
/// window for window timers).
///
/// Timers are bucketed by timestamp (many share one when data is dense), so
/// the ordered map holds one node per distinct time. A map of live timers
/// deduplicates registrations; each registration gets a new generation, so a
/// deleted timer's bucket entry is skipped when its time comes, even if the
/// same timer was registered again (which then fires in its new place).
#[derive(Debug)]
pub struct TimerService<K, N> {
    buckets: BTreeMap<EventTime, VecDeque<(K, N, u64)>>,
    live: HashMap<(K, N, EventTime), u64, FxBuildHasher>,
    next_generation: u64,
    /// Where the last [`TimerService::pop_due_before`] stopped, for its
    /// `limit`: buckets before it hold only newer timers.
    drain_cursor: Option<(u64, Bound<EventTime>)>,
}

impl<K, N> Default for TimerService<K, N> {
    fn default() -> Self {
        Self {
            buckets: BTreeMap::new(),
            live: HashMap::default(),
            next_generation: 0,
            drain_cursor: None,
        }
    }
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone> TimerService<K, N> {
    /// No timers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a timer; returns `false` if it was already registered.
    pub fn register(&mut self, key: &K, namespace: &N, at: EventTime) -> bool {
        let generation = self.next_generation;
        match self.live.entry((key.clone(), namespace.clone(), at)) {
            hashbrown::hash_map::Entry::Occupied(_) => return false,
            hashbrown::hash_map::Entry::Vacant(slot) => {
                slot.insert(generation);
            }
        }
        self.next_generation += 1;
        self.buckets
            .entry(at)
            .or_default()
            .push_back((key.clone(), namespace.clone(), generation));
        true
    }

    /// Deletes a timer; returns whether it existed.
    pub fn delete(&mut self, key: &K, namespace: &N, at: EventTime) -> bool {
        self.live
            .remove(&(key.clone(), namespace.clone(), at))
            .is_some()
    }

    /// Removes the timer `id` from the live set if its registration is
    /// `generation` (one probe), and returns it; a bucket entry of a timer
    /// deleted or registered again since gives `None`.
    fn take_live(
        live: &mut HashMap<(K, N, EventTime), u64, FxBuildHasher>,
        id: (K, N, EventTime),
        generation: u64,
    ) -> Option<(K, N, EventTime)> {
        match live.entry(id) {
            hashbrown::hash_map::Entry::Occupied(entry) if *entry.get() == generation => {
                Some(entry.remove_entry().0)
            }
            _ => None,
        }
    }

    /// Removes and returns the earliest timer with timestamp `<= up_to`.
    pub fn pop_due(&mut self, up_to: EventTime) -> Option<(EventTime, K, N)> {
        loop {
            let mut bucket = self.buckets.first_entry()?;
            let at = *bucket.key();
            if at > up_to {
                return None;
            }
            match bucket.get_mut().pop_front() {
                Some((key, namespace, generation)) => {
                    // Skip entries of timers deleted (and maybe registered again) since.
                    if let Some((key, namespace, at)) =
                        Self::take_live(&mut self.live, (key, namespace, at), generation)
                    {
                        return Some((at, key, namespace));
                    }
                }
                None => {
                    bucket.remove();
                }
            }
        }
    }

    /// Like [`TimerService::pop_due`], but only timers registered before
    /// generation `limit` (see [`TimerService::generation`]): timers
    /// registered while due timers fire are left for a later call.
    ///
    /// Draining `n` timers with repeated calls costs `O(n log n)`: emptied
    /// buckets are removed, and buckets holding only timers newer than
    /// `limit` are remembered as passed, so no call rescans what an earlier
    /// one already went through.
    pub fn pop_due_before(&mut self, up_to: EventTime, limit: u64) -> Option<(EventTime, K, N)> {
        // Buckets before the cursor hold no timer older than `limit`. That
        // stays true while every new registration is at least as new as
        // `limit`, which holds once `limit` is not ahead of the counter.
        let mut from = match self.drain_cursor {
            Some((cursor_limit, from)) if cursor_limit == limit => from,
            _ => Bound::Unbounded,
        };
        let result = loop {
            let passed_up_to = match from {
                Bound::Included(at) => at > up_to,
                Bound::Excluded(at) => at >= up_to,
                Bound::Unbounded => false,
            };
            if passed_up_to {
                break None;
            }
            let Some((&at, bucket)) = self
                .buckets
                .range_mut((from, Bound::Included(up_to)))
                .next()
            else {
                break None;
            };
            let mut fired = None;
            // Entries of a bucket are in registration order: stop at the first new one.
            while bucket
                .front()
                .is_some_and(|(_, _, generation)| *generation < limit)
            {
                let Some((key, namespace, generation)) = bucket.pop_front() else {
                    break;
                };
                fired = Self::take_live(&mut self.live, (key, namespace, at), generation);
                if fired.is_some() {
                    break;
                }
            }
            if bucket.is_empty() {
                self.buckets.remove(&at);
                from = Bound::Excluded(at);
            } else if fired.is_none() {
                // Only timers newer than `limit` are left here.
                from = Bound::Excluded(at);
            } else {
                from = Bound::Included(at);
            }
            if let Some((key, namespace, at)) = fired {
                break Some((at, key, namespace));
            }
        };
        self.drain_cursor = (limit <= self.next_generation).then_some((limit, from));
        result
    }

    /// Every registered timer, in firing order (timestamp, then
    /// registration): what a checkpoint keeps.
    pub fn snapshot(&self) -> Vec<(EventTime, K, N)> {
        let mut timers = Vec::with_capacity(self.live.len());
        for (&at, bucket) in &self.buckets {
            for (key, namespace, generation) in bucket {
                let id = (key.clone(), namespace.clone(), at);
                if self.live.get(&id) == Some(generation) {
                    timers.push((at, id.0, id.1));
                }
            }
        }
        timers
    }

    /// Registers timers taken from [`TimerService::snapshot`]s, in order.
    pub fn restore(&mut self, timers: impl IntoIterator<Item = (EventTime, K, N)>) {
        for (at, key, namespace) in timers {
            self.register(&key, &namespace, at);
        }
    }

    /// The generation the next registration will get.
    pub fn generation(&self) -> u64 {
        self.next_generation
    }

    /// How many timers are registered.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no timer is registered.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fire_in_order_once_and_not_after_delete() {
        let mut t = TimerService::<&str, ()>::new();
        let ms = EventTime::from_millis;
        assert!(t.register(&"a", &(), ms(20)));
        assert!(!t.register(&"a", &(), ms(20)));
        assert!(t.register(&"b", &(), ms(10)));
        assert!(t.register(&"c", &(), ms(20)));
        assert!(t.register(&"d", &(), ms(30)));
        assert!(t.delete(&"d", &(), ms(30)));
        assert_eq!(t.pop_due(ms(9)), None);
        assert_eq!(t.pop_due(ms(25)), Some((ms(10), "b", ())));
        assert_eq!(t.pop_due(ms(25)), Some((ms(20), "a", ())));
        assert_eq!(t.pop_due(ms(25)), Some((ms(20), "c", ())));
        assert_eq!(t.pop_due(EventTime::MAX), None);
        assert!(t.is_empty());
    }

    #[test]
    fn snapshot_restores_live_timers_in_firing_order() {
        let mut t = TimerService::<&str, u8>::new();
        let ms = EventTime::from_millis;
        t.register(&"b", &1, ms(20));
        t.register(&"a", &1, ms(10));
        t.register(&"c", &2, ms(20));
        t.register(&"d", &2, ms(30));
        t.delete(&"d", &2, ms(30));
        let snap = t.snapshot();
        assert_eq!(
            snap,
            vec![(ms(10), "a", 1), (ms(20), "b", 1), (ms(20), "c", 2)]
        );
        let mut restored = TimerService::new();
        restored.restore(snap.into_iter().filter(|(_, k, _)| *k != "a"));
        assert_eq!(restored.pop_due(ms(25)), Some((ms(20), "b", 1)));
        assert_eq!(restored.pop_due(ms(25)), Some((ms(20), "c", 2)));
        assert_eq!(restored.pop_due(EventTime::MAX), None);
    }

    #[test]
    fn a_timer_registered_again_after_delete_fires_in_its_new_place() {
        let mut t = TimerService::<&str, ()>::new();
        let at = EventTime::from_millis(10);
        t.register(&"a", &(), at);
        t.register(&"b", &(), at);
        t.delete(&"a", &(), at);
        t.register(&"a", &(), at);
        assert_eq!(t.pop_due(at), Some((at, "b", ())));
        assert_eq!(t.pop_due(at), Some((at, "a", ())));
        assert_eq!(t.pop_due(at), None);
    }

    #[test]
    fn draining_before_a_generation_keeps_order_deletes_and_re_registration() {
        let mut t = TimerService::<&str, ()>::new();
        let ms = EventTime::from_millis;
        t.register(&"late", &(), ms(30));
        t.register(&"gone", &(), ms(10));
        t.register(&"moved", &(), ms(20));
        t.register(&"tie", &(), ms(20));
        t.delete(&"moved", &(), ms(20));
        t.register(&"moved", &(), ms(20));
        t.delete(&"gone", &(), ms(10));
        let limit = t.generation();
        assert_eq!(
            t.pop_due_before(EventTime::MAX, limit),
            Some((ms(20), "tie", ()))
        );
        // Registered while firing: newer than `limit`, so not fired by this
        // drain, whether before or after the drain's position.
        t.register(&"new-early", &(), ms(5));
        t.register(&"new-tie", &(), ms(20));
        assert_eq!(
            t.pop_due_before(EventTime::MAX, limit),
            Some((ms(20), "moved", ()))
        );
        // A lower bound than already passed finds nothing, and loses nothing.
        assert_eq!(t.pop_due_before(ms(15), limit), None);
        assert!(t.delete(&"late", &(), ms(30)));
        assert!(t.register(&"late", &(), ms(30)));
        // Re-registered after `limit`: it is a new timer now.
        assert_eq!(t.pop_due_before(EventTime::MAX, limit), None);
        assert_eq!(t.len(), 3);
        let limit = t.generation();
        assert_eq!(
            t.pop_due_before(ms(20), limit),
            Some((ms(5), "new-early", ()))
        );
        assert_eq!(
            t.pop_due_before(ms(20), limit),
            Some((ms(20), "new-tie", ()))
        );
        assert_eq!(t.pop_due_before(ms(20), limit), None);
        assert_eq!(
            t.pop_due_before(EventTime::MAX, limit),
            Some((ms(30), "late", ()))
        );
        assert_eq!(t.pop_due_before(EventTime::MAX, limit), None);
        assert!(t.is_empty());
        assert!(t.buckets.is_empty(), "emptied buckets are removed");
    }

    proptest! {
        /// Against a model: the timers alive and older than `limit`, due
        /// by `up_to`, in (time, registration) order, while each firing
        /// registers another timer (as a self-rescheduling timer does).
        #[test]
        fn draining_before_a_generation_matches_a_model(
            ops in prop::collection::vec((0u8..6, -20i64..20, prop::bool::weighted(0.2)), 0..80),
            up_to in -25i64..25,
        ) {
            let mut t = TimerService::<u8, ()>::new();
            let mut model = BTreeMap::new();
            for (k, at, delete) in ops {
                let g = t.generation();
                if delete {
                    if t.delete(&k, &(), EventTime::from_millis(at)) {
                        model.retain(|_, v: &mut (u8, i64)| *v != (k, at));
                    }
                } else if t.register(&k, &(), EventTime::from_millis(at)) {
                    model.insert((at, g), (k, at));
                }
            }
            let limit = t.generation();
            let expected: Vec<(i64, u8)> =
                model.values().filter(|(_, at)| *at <= up_to).map(|&(k, at)| (at, k)).collect();
            let mut fired = Vec::new();
            while let Some((at, k, ())) = t.pop_due_before(EventTime::from_millis(up_to), limit) {
                fired.push((at.millis(), k));
                t.register(&k, &(), EventTime::from_millis(at.millis() - 1));
            }
            prop_assert_eq!(fired, expected);
        }

        #[test]
        fn pops_are_sorted_and_complete(ts in prop::collection::vec((0u8..8, -50i64..50), 0..100), wm in -60i64..60) {
            let mut t = TimerService::<u8, ()>::new();
            let mut expected = std::collections::BTreeSet::new();
            for (k, at) in &ts {
                t.register(k, &(), EventTime::from_millis(*at));
                expected.insert((*at, *k));
            }
            let mut fired = Vec::new();
            while let Some((at, k, ())) = t.pop_due(EventTime::from_millis(wm)) {
                fired.push((at.millis(), k));
            }
            prop_assert!(fired.windows(2).all(|w| w[0].0 <= w[1].0));
            let due = expected.iter().filter(|(at, _)| *at <= wm).count();
            prop_assert_eq!(fired.len(), due);
            prop_assert_eq!(t.len(), expected.len() - fired.len());
        }
    }
}
