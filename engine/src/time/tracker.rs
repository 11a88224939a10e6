//! The minimum-over-inputs rule, used wherever several watermarks meet: the
//! partitions of a source subtask and the channels of an input gate.
//!
//! - the combined watermark is the minimum over *active* inputs;
//! - an idle input is left out until it sends data or a watermark;
//! - a finished input counts as `+inf`;
//! - when every unfinished input is idle, the tracker itself reports idle;
//! - what it emits never goes backwards (an input returning from idleness
//!   behind the current watermark holds it where it is until it catches up).

use super::{EventTime, Watermark};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Active,
    Idle,
    Finished,
}

#[derive(Clone, Copy, Debug)]
struct Input {
    watermark: EventTime,
    status: Status,
}

/// Combines the watermarks of `n` inputs.
///
/// ```
/// use tideline_engine::time::{EventTime, Watermark, WatermarkTracker};
/// let mut t = WatermarkTracker::new(2);
/// assert_eq!(t.on_watermark(0, EventTime::from_millis(10)), None);
/// assert_eq!(t.on_watermark(1, EventTime::from_millis(5)), Some(Watermark::EventTime(EventTime::from_millis(5))));
/// assert_eq!(t.on_idle(1), Some(Watermark::EventTime(EventTime::from_millis(10))));
/// ```
#[derive(Clone, Debug)]
pub struct WatermarkTracker {
    inputs: Vec<Input>,
    current: EventTime,
    idle: bool,
}

impl WatermarkTracker {
    /// A tracker over `inputs` inputs, all active at `-inf`. With zero inputs
    /// it is finished from the start.
    pub fn new(inputs: usize) -> Self {
        Self {
            inputs: vec![
                Input {
                    watermark: EventTime::MIN,
                    status: Status::Active,
                };
                inputs
            ],
            current: EventTime::MIN,
            idle: false,
        }
    }

    /// Adds an input, active at `-inf` (a partition discovered while the job
    /// runs): nothing is emitted until it catches up, goes idle or ends.
    /// Returns its number.
    pub fn add_input(&mut self) -> usize {
        self.inputs.push(Input {
            watermark: EventTime::MIN,
            status: Status::Active,
        });
        self.inputs.len() - 1
    }

    /// The last watermark emitted.
    pub fn current(&self) -> EventTime {
        self.current
    }

    /// Starts from watermark `watermark` (restored from a checkpoint):
    /// nothing at or below it is emitted again.
    pub fn restore(&mut self, watermark: EventTime) {
        self.current = self.current.max(watermark);
    }

    /// Whether every input has finished.
    pub fn all_finished(&self) -> bool {
        self.inputs.iter().all(|i| i.status == Status::Finished)
    }

    /// Input `input` reports watermark `wm` (this also makes it active again).
    pub fn on_watermark(&mut self, input: usize, wm: EventTime) -> Option<Watermark> {
        let slot = self.inputs.get_mut(input)?;
        if slot.status == Status::Finished {
            return None;
        }
        slot.status = Status::Active;
        slot.watermark = slot.watermark.max(wm);
        self.recompute()
    }

    /// Whether input `input` is idle now.
    pub fn is_idle(&self, input: usize) -> bool {
        self.inputs
            .get(input)
            .is_some_and(|i| i.status == Status::Idle)
    }

    /// Input `input` delivered records: an idle input becomes active again.
    pub fn on_data(&mut self, input: usize) -> Option<Watermark> {
        match self.inputs.get_mut(input) {
            Some(slot) if slot.status == Status::Idle => {
                slot.status = Status::Active;
                self.recompute()
            }
            _ => None,
        }
    }

    /// Input `input` went idle.
    pub fn on_idle(&mut self, input: usize) -> Option<Watermark> {
        match self.inputs.get_mut(input) {
            Some(slot) if slot.status == Status::Active => {
                slot.status = Status::Idle;
                self.recompute()
            }
            _ => None,
        }
    }

    /// Input `input` ended: it counts as `+inf` from now on.
    pub fn on_finished(&mut self, input: usize) -> Option<Watermark> {
        let slot = self.inputs.get_mut(input)?;
        slot.status = Status::Finished;
        slot.watermark = EventTime::MAX;
        self.recompute()
    }

    fn recompute(&mut self) -> Option<Watermark> {
        let mut min_active: Option<EventTime> = None;
        let mut any_idle = false;
        for input in &self.inputs {
            match input.status {
                Status::Active => {
                    min_active =
                        Some(min_active.map_or(input.watermark, |m| m.min(input.watermark)))
                }
                Status::Idle => any_idle = true,
                Status::Finished => {}
            }
        }
        let candidate = match min_active {
            Some(m) => m,
            None if any_idle => {
                if self.idle {
                    return None;
                }
                self.idle = true;
                return Some(Watermark::Idle);
            }
            None => EventTime::MAX,
        };
        let was_idle = std::mem::replace(&mut self.idle, false);
        if candidate > self.current {
            self.current = candidate;
            Some(Watermark::EventTime(candidate))
        } else if was_idle && self.current.is_set() {
            // Tell downstream we are active again, at the watermark we hold.
            Some(Watermark::EventTime(self.current))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wm(ms: i64) -> Option<Watermark> {
        Some(Watermark::EventTime(EventTime::from_millis(ms)))
    }

    #[test]
    fn minimum_idle_and_finished() {
        let mut t = WatermarkTracker::new(3);
        assert_eq!(t.on_watermark(0, EventTime::from_millis(30)), None);
        assert_eq!(t.on_watermark(1, EventTime::from_millis(20)), None);
        assert_eq!(t.on_watermark(2, EventTime::from_millis(10)), wm(10));
        assert_eq!(t.on_idle(2), wm(20));
        assert_eq!(t.on_finished(1), wm(30));
        assert_eq!(t.on_idle(0), Some(Watermark::Idle));
        assert_eq!(t.on_idle(0), None);
        // Input 2 returns behind the current watermark: no regression, but
        // downstream learns we are active again.
        assert_eq!(t.on_data(2), wm(30));
        assert_eq!(t.on_watermark(2, EventTime::from_millis(25)), None);
        // Input 0 is still idle, so input 2 alone decides.
        assert_eq!(t.on_watermark(2, EventTime::from_millis(35)), wm(35));
        assert_eq!(t.on_finished(2), Some(Watermark::Idle));
        assert!(!t.all_finished());
        assert_eq!(t.on_finished(0), Some(Watermark::EventTime(EventTime::MAX)));
        assert!(t.all_finished());
    }

    #[test]
    fn zero_inputs_is_finished() {
        assert!(WatermarkTracker::new(0).all_finished());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Wm(usize, i64),
        Data(usize),
        Idle(usize),
        Finish(usize),
    }

    fn op(n: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..n, -1_000i64..1_000).prop_map(|(i, w)| Op::Wm(i, w)),
            1 => (0..n).prop_map(Op::Data),
            1 => (0..n).prop_map(Op::Idle),
            1 => (0..n).prop_map(Op::Finish),
        ]
    }

    proptest! {
        /// Emitted watermarks strictly increase, never exceed the minimum of
        /// the non-finished inputs' own watermarks... unless they are idle,
        /// and reach +inf exactly when all inputs finished.
        #[test]
        fn watermarks_are_monotone_and_bounded(ops in prop::collection::vec(op(4), 0..200)) {
            let mut t = WatermarkTracker::new(4);
            let mut own = [EventTime::MIN; 4];
            let mut finished = [false; 4];
            let mut last = EventTime::MIN;
            for o in ops {
                let out = match o {
                    Op::Wm(i, w) => {
                        if !finished[i] { own[i] = own[i].max(EventTime::from_millis(w)); }
                        t.on_watermark(i, EventTime::from_millis(w))
                    }
                    Op::Data(i) => t.on_data(i),
                    Op::Idle(i) => t.on_idle(i),
                    Op::Finish(i) => { finished[i] = true; t.on_finished(i) }
                };
                if let Some(Watermark::EventTime(w)) = out {
                    prop_assert!(w >= last, "went backwards: {w} < {last}");
                    let advanced = w > last;
                    last = w;
                    // An advance never goes beyond the largest watermark a live
                    // input asserted (re-announcing the held one after idleness is not an advance).
                    if advanced && !finished.iter().all(|f| *f) {
                        let max_live = (0..4).filter(|i| !finished[*i]).map(|i| own[i]).max();
                        prop_assert!(Some(w) <= max_live);
                    }
                }
                prop_assert_eq!(t.current(), last);
            }
            if finished.iter().all(|f| *f) {
                prop_assert_eq!(t.current(), EventTime::MAX);
            }
        }
    }
}
