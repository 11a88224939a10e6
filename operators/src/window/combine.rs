//! Pre-aggregation of tumbling and sliding windows before the keyed
//! exchange: the local half of a local-global aggregation (Flink's planner
//! does the same for `GROUP BY` aggregates).
//!
//! A [`WindowCombiner`] runs chained behind the source, where records are
//! read. It folds the records of each key and pane (a tumbling window is
//! its own pane; a sliding window's panes are slices of `gcd(size, slide)`)
//! into one partial accumulator and sends those partials through the
//! exchange instead of the records; the window operator merges them into
//! its state. So the exchange and the window operator see one entry per key
//! and pane rather than one per record, and the per-record work runs where
//! the records are decoded, in parallel with the other partitions.
//!
//! A pane's partials are held until the combiner's input watermark reaches
//! the end of the first window holding the pane (they are emitted before
//! that watermark is passed on, so they arrive before the window fires),
//! before a checkpoint
//! barrier ([`Operator::before_barrier`]), when the input goes idle, and at
//! the end. Nothing is held across a checkpoint, so the combiner has no
//! state. Held partials are about as many as the key-pane pairs open in
//! the window operator, up to [`MAX_HELD`]: past that, all are sent on
//! early (always safe, see below), so the combiner's memory is bounded
//! whatever the key space, and state that outgrows memory stays in the
//! window operator's backend (RocksDB).
//!
//! Why results do not change (the partition-local lateness rule, see
//! `tideline_engine::time`): the window operator judges a record by
//! `J = max(m, W_op)`, `m` its partition's watermark just before it, `W_op`
//! the operator's watermark at arrival. `W_op` never exceeds the last
//! watermark this combiner passed on, `W_c`, while that input is not idle:
//! channels are FIFO and a partial leaves before the watermark after it. So
//! for a record with `m >= W_c` the operator would judge it by `m` alone,
//! which the combiner can do: a record late by `m` for any window of its
//! pane goes on as itself (the window operator sends it to the late output
//! or counts it in the windows it is not late for), one late for none is
//! folded. A held partial of pane `p` leaves before the combiner passes on
//! a watermark reaching the end of `p`'s first window `w` (or, if `w`
//! already fired and has allowed lateness, at the next watermark), so the
//! operator's watermark at its arrival is still below `w`'s cleanup time,
//! as each of its records' `m` is: the operator finds it late for none of
//! the pane's windows, as it would each record, and it arrives in time for
//! the same on-time firings. Every
//! other record goes on as itself and is judged downstream as before:
//! - records without event time (the window operator dead-letters them);
//! - records behind `W_c` (`m < W_c`: a partition restored behind others);
//! - every record once the input has been idle, since the operator's
//!   watermark may then be ahead of anything the combiner has seen;
//! - every record under [`LatenessRule::OperatorWatermark`], which judges
//!   by the operator's watermark at arrival, unknown here.
//!
//! A checkpoint keeps `W_c` and whether the combiner went raw; a restored
//! combiner starts from the largest `W_c` and goes raw if any did, since
//! the restored window operators' watermark is bounded by those and not by
//! the watermark its own restored source replays. Should a partial still
//! arrive late (a bug), the window operator sends it to dead letters with
//! its key, window and accumulator rather than stop the job or drop it.
//!
//! The combiner is used only for the event-time trigger (which looks at no
//! record) and aggregates whose merge is exact
//! ([`AggregateFunction::EXACT_MERGE`]: integer counts, sums, minima,
//! maxima), so the window results are the same numbers to the last bit.
//! With allowed lateness, a partial re-fires a window once where its
//! records would each have re-fired it: every window's final value is the
//! same, the number of intermediate updates is not (it never was
//! deterministic with allowed lateness).

use std::collections::hash_map::Entry as Slot;
use std::collections::HashMap;

use rustc_hash::FxBuildHasher;
use tideline_engine::time::LatenessRule;
use tideline_engine::{
    Data, EventTime, KeySelector, Operator, Output, Record, RestoreContext, Result, SnapshotWriter,
};
use tideline_state::StateKey;

use super::aggregate::AggregateFunction;
use super::assigner::TimeWindow;
use super::panes::Grid;

/// What a checkpoint keeps of a combiner: `(W_c in ms, raw_only)`.
const BOUND: &str = "combiner-bound";

/// At most this many partials are held (about 5 MB for small keys and
/// accumulators), checked after each batch; reaching it sends them all on.
pub(crate) const MAX_HELD: usize = 65_536;

/// What crosses the keyed exchange of a pre-aggregated window aggregation.
#[derive(Clone, Debug)]
pub(crate) enum Combined<K, T, Acc> {
    /// A record the window operator judges itself.
    Raw(T),
    /// The records of one key and pane folded together; the record's
    /// lateness watermark is the smallest of theirs.
    Partial {
        /// The key.
        key: K,
        /// The window (sliding windows: the pane).
        window: TimeWindow,
        /// The folded records.
        acc: Acc,
    },
}

/// The partials of one pane, by key: one probe per record, in a table
/// that stays in cache. They leave in the order of their first records
/// (`order`), so the window operator makes their windows (and fires those
/// ending together) in the order it would have for the records.
struct Pending<K, Acc> {
    start: i64,
    /// The cleanup time of the pane's first window: a record whose lateness
    /// watermark reached it is late for that window.
    expires: EventTime,
    /// The last moment of that window: the partials leave before a
    /// watermark reaching it.
    deadline: EventTime,
    partials: Partials<K, Acc>,
    order: Vec<K>,
}

/// A pane's accumulators by key.
type Partials<K, Acc> = HashMap<K, Acc, FxBuildHasher>;

/// Folds records into partials per key and pane (see the module
/// docs for when a record is folded and when it goes on as itself).
pub(crate) struct WindowCombiner<K, T, A: AggregateFunction<T>> {
    key: KeySelector<K, T>,
    /// The panes records are folded in (a tumbling window is its own pane).
    grid: Grid,
    agg: A,
    /// Held panes, by start.
    panes: Vec<Pending<K, A::Acc>>,
    /// The pane the last record went to (records mostly go to the newest).
    last: usize,
    /// An emptied pane's table and list, kept for the next pane (their
    /// capacity is the point).
    spare_partials: Option<Partials<K, A::Acc>>,
    spare_order: Vec<K>,
    /// The last watermark passed on (`W_c`).
    passed_on: EventTime,
    /// Partials held, over all panes.
    held: usize,
    /// Folding is off for good: the input went idle once, or the job judges
    /// lateness by the operator's watermark.
    raw_only: bool,
}

impl<K: StateKey, T: Data, A: AggregateFunction<T>> WindowCombiner<K, T, A> {
    /// A combiner folding records into the panes of `grid`.
    pub(crate) fn new(key: KeySelector<K, T>, grid: Grid, agg: A, rule: LatenessRule) -> Self {
        Self {
            key,
            raw_only: rule == LatenessRule::OperatorWatermark,
            grid,
            agg,
            panes: Vec::new(),
            last: 0,
            spare_partials: None,
            spare_order: Vec::new(),
            passed_on: EventTime::MIN,
            held: 0,
        }
    }

    /// The index of the held pane holding `ts`, made if missing.
    fn pane_of(&mut self, ts: i64) -> usize {
        if let Some(p) = self.panes.get(self.last) {
            if p.start <= ts && ts.abs_diff(p.start) < self.grid.pane.unsigned_abs() {
                return self.last;
            }
        }
        let start = self.grid.pane_start(ts);
        let at = match self.panes.iter().rposition(|p| p.start <= start) {
            Some(i) if self.panes[i].start == start => i,
            found => {
                let at = found.map_or(0, |i| i + 1);
                let first_end = self.grid.first_end_of_pane(start);
                let last_moment = EventTime::from_millis(first_end.saturating_sub(1));
                let partials = self.spare_partials.take().unwrap_or_default();
                let order = std::mem::take(&mut self.spare_order);
                self.panes.insert(
                    at,
                    Pending {
                        start,
                        expires: last_moment.saturating_add_millis(self.grid.lateness),
                        deadline: last_moment,
                        partials,
                        order,
                    },
                );
                at
            }
        };
        self.last = at;
        at
    }

    /// Sends on the partials of every held pane whose deadline is at or
    /// before `up_to` (all of them for [`EventTime::MAX`]), oldest first.
    ///
    /// A partial's lateness watermark is the last watermark passed on: the
    /// operator's cannot be ahead of it, so it judges the partial as the
    /// combiner judged each record (by the records' own watermarks, all of
    /// them at least that one and below the pane's `expires`).
    fn emit_through(&mut self, up_to: EventTime, out: &mut Output<Combined<K, T, A::Acc>>) {
        let due = self
            .panes
            .iter()
            .take_while(|p| p.deadline <= up_to)
            .count();
        for pending in self.panes.drain(..due) {
            let window =
                TimeWindow::new(pending.start, pending.start.saturating_add(self.grid.pane));
            let (mut partials, mut order) = (pending.partials, pending.order);
            self.held -= partials.len();
            for key in order.drain(..) {
                if let Some(acc) = partials.remove(&key) {
                    let partial = Combined::Partial { key, window, acc };
                    out.push(
                        Record::new(window.start, partial).with_lateness_watermark(self.passed_on),
                    );
                }
            }
            self.spare_partials = Some(partials);
            self.spare_order = order;
        }
        self.last = 0;
    }
}

impl<K, T, A> Operator<T, Combined<K, T, A::Acc>> for WindowCombiner<K, T, A>
where
    K: StateKey,
    T: Data,
    A: AggregateFunction<T>,
{
    fn process_batch(
        &mut self,
        batch: Vec<Record<T>>,
        out: &mut Output<Combined<K, T, A::Acc>>,
    ) -> Result<()> {
        for record in batch {
            let (timestamp, mark) = (record.timestamp, record.lateness_watermark);
            if self.raw_only || !timestamp.is_set() || mark < self.passed_on {
                out.push(record.map(Combined::Raw));
                continue;
            }
            let at = self.pane_of(timestamp.millis());
            let pending = &mut self.panes[at];
            // Late by its own partition for one of its pane's windows: the
            // window operator judges it (a partial counts in all of them).
            if mark >= pending.expires {
                out.push(record.map(Combined::Raw));
                continue;
            }
            let key = (self.key)(&record.value);
            match pending.partials.entry(key) {
                Slot::Occupied(mut found) => self.agg.add(found.get_mut(), record.value),
                Slot::Vacant(vacant) => {
                    pending.order.push(vacant.key().clone());
                    let acc = vacant.insert(self.agg.create());
                    self.agg.add(acc, record.value);
                    self.held += 1;
                }
            }
        }
        // Records of windows that already fired (within the allowed
        // lateness) re-fire them now, as each record would have.
        let up_to = if self.held >= MAX_HELD {
            EventTime::MAX
        } else {
            self.passed_on
        };
        self.emit_through(up_to, out);
        Ok(())
    }

    fn snapshot_state(&mut self, snapshot: &mut SnapshotWriter<'_>) -> Result<()> {
        // Nothing is held at a barrier (`before_barrier` sent it all); what
        // a restored combiner needs is the bound it judges records by.
        snapshot.put(BOUND, &(self.passed_on.millis(), self.raw_only))
    }

    fn restore_state(&mut self, restore: &RestoreContext) -> Result<()> {
        // The restored window operators' watermark is at most the largest
        // watermark any old combiner passed on, and if any of them had gone
        // raw (an idle input: the operators' watermark may be ahead of its
        // records), all do, whichever subtask now reads which partitions.
        for (passed_on, raw_only) in restore.read_all::<(i64, bool)>(BOUND)? {
            self.passed_on = self.passed_on.max(EventTime::from_millis(passed_on));
            self.raw_only |= raw_only;
        }
        Ok(())
    }

    fn state_size(&mut self) -> Option<tideline_engine::StateSize> {
        Some(tideline_engine::StateSize {
            entries: self.held as u64,
            bytes: None,
        })
    }

    fn on_watermark(
        &mut self,
        watermark: EventTime,
        out: &mut Output<Combined<K, T, A::Acc>>,
    ) -> Result<()> {
        // Windows that fired before (allowed lateness) end before `passed_on`.
        self.emit_through(watermark.max(self.passed_on), out);
        self.passed_on = self.passed_on.max(watermark);
        Ok(())
    }

    fn before_barrier(&mut self, out: &mut Output<Combined<K, T, A::Acc>>) -> Result<()> {
        self.emit_through(EventTime::MAX, out);
        Ok(())
    }

    fn on_idle(&mut self, out: &mut Output<Combined<K, T, A::Acc>>) -> Result<()> {
        self.emit_through(EventTime::MAX, out);
        if !self.raw_only {
            // Said once: throughput changes, and an operator should know why.
            tracing::info!(
                "window pre-aggregation off for the rest of the run: its input went idle, \
                 so records may now arrive behind the window operator's watermark and go \
                 on one by one to be judged there"
            );
        }
        self.raw_only = true;
        Ok(())
    }

    fn finish(&mut self, out: &mut Output<Combined<K, T, A::Acc>>) -> Result<()> {
        self.emit_through(EventTime::MAX, out);
        Ok(())
    }
}
