//! Which records are late: the partition-local rule.
//!
//! # The rule
//!
//! Every source partition `p` has its own watermark generator. Let `W_p(r)`
//! be `p`'s watermark **just before record `r`**: after every earlier
//! record of `p` (for bounded out-of-orderness `d`, `max(ts of earlier
//! records of p) - d - 1`, or the partition's explicit watermark if larger).
//! The source writes it into [`Record::lateness_watermark`](crate::Record),
//! and it travels with the record through chains and exchanges. A record is
//! **late for a window `w`** with allowed lateness `L` iff
//! `w.end - 1 + L <= W_p(r)`. Firing and state cleanup still follow the
//! operator's watermark `W_op`, the minimum over its inputs.
//!
//! # Why this is sound and deterministic
//!
//! - *A record that is not late finds its window's state.* Every watermark on
//!   the path from `p` to the operator is a minimum that includes `p`'s
//!   watermark at the time it was sent, and channels are FIFO, so at `r`'s
//!   arrival `W_op <= W_p(r)`. Not late means `end - 1 + L > W_p(r) >= W_op`:
//!   the window has not been cleaned up.
//! - *With `L = 0` a window fires once, with exactly its non-late records.*
//!   It fires when `W_op >= end - 1`, which needs every partition's watermark
//!   to have passed `end - 1`; for `p` that happens after every record of `p`
//!   that is not late for the window, since those came before `p`'s
//!   watermark reached `end - 1`.
//! - So the late output and every window's final value are a pure function
//!   of each partition's own record sequence: the same across runs, thread
//!   timings, parallelism, live versus replay. With `L > 0` every window's
//!   final value is deterministic; how many intermediate updates are emitted
//!   depends on when watermarks arrive.
//!
//! This holds for windows that do not change shape: tumbling, sliding and
//! global windows. Session windows merge with the sessions still open when a
//! record arrives, and when a session closes follows the operator's
//! watermark: which records are late is deterministic (a record is late when
//! its own window `[ts, ts + gap)` is), but how sessions merge can depend on
//! arrival order. (Example: gap 10; partition q sends 0, then 20; partition p
//! sends 15, then 10. Reading q first closes `[0, 10)` before 10 arrives:
//! `[0, 10)` and `[10, 30)`. Reading p first: one session `[0, 30)`.)
//! Interval-join results carry the larger lateness watermark of their two
//! records, so windows downstream of a join are judged the same in every run.
//!
//! The operator judges with `max(W_p(r), W_op)`
//! ([`LatenessRule::judge`]). For records from a source the two agree
//! (`W_op <= W_p(r)`), except in the cases outside the guarantee, where the
//! operator's watermark decides, Flink's way, so that a record whose state
//! is gone is always late:
//!
//! - **idleness** is a processing-time decision: a partition marked idle is
//!   left out of the minimum, and may resume behind the operator's watermark.
//!   Its records whose windows are already gone are late with the reason
//!   [`LateReason::OperatorWatermark`] (counted apart in the job summary).
//!   Determinism holds when no partition goes idle;
//! - records made downstream of the source without an input record to take
//!   the watermark from (window results, timer output) carry
//!   [`EventTime::MIN`], and watermarks assigned mid-stream
//!   (`assign_timestamps` after an exchange) depend on how the exchange
//!   interleaved its inputs. Both are outside the guarantee.
//!
//! [`LatenessRule::OperatorWatermark`] is Flink's rule (the operator's
//! watermark at arrival, which depends on how fast the other partitions
//! were read), for users who want it.

use super::EventTime;

/// How operators decide that a record is late (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LatenessRule {
    /// A record is late when its source partition's watermark just before
    /// it had passed the window's cleanup time (deterministic; the default).
    #[default]
    PartitionLocal,
    /// A record is late when the operator's watermark at its arrival had
    /// passed the window's cleanup time (Flink's rule; depends on timing).
    OperatorWatermark,
}

/// Why a record went to the late output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LateReason {
    /// Its source partition's watermark had passed (the partition-local rule).
    PartitionWatermark,
    /// The operator's watermark had passed, though the record's partition's
    /// had not: the partition had been idle, or the record was made
    /// downstream (or the job uses [`LatenessRule::OperatorWatermark`]).
    OperatorWatermark,
}

impl LatenessRule {
    /// The watermark a record is judged by: `max(lateness watermark,
    /// operator watermark)` under the partition-local rule, the operator's
    /// watermark under Flink's.
    #[inline]
    pub fn judge(self, lateness_watermark: EventTime, operator_watermark: EventTime) -> EventTime {
        match self {
            LatenessRule::PartitionLocal => lateness_watermark.max(operator_watermark),
            LatenessRule::OperatorWatermark => operator_watermark,
        }
    }

    /// Why a record judged by [`LatenessRule::judge`] is late for a window
    /// whose cleanup time is `cleanup`.
    pub fn reason(self, lateness_watermark: EventTime, cleanup: EventTime) -> LateReason {
        if self == LatenessRule::PartitionLocal && cleanup <= lateness_watermark {
            LateReason::PartitionWatermark
        } else {
            LateReason::OperatorWatermark
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> EventTime {
        EventTime::from_millis(ms)
    }

    #[test]
    fn partition_local_takes_the_larger_watermark() {
        let rule = LatenessRule::PartitionLocal;
        assert_eq!(rule.judge(t(10), t(5)), t(10));
        assert_eq!(rule.judge(t(3), t(5)), t(5));
        assert_eq!(rule.judge(EventTime::MIN, t(5)), t(5));
        assert_eq!(LatenessRule::OperatorWatermark.judge(t(10), t(5)), t(5));
    }

    #[test]
    fn reason_names_the_watermark_that_decided() {
        let rule = LatenessRule::PartitionLocal;
        assert_eq!(rule.reason(t(10), t(9)), LateReason::PartitionWatermark);
        assert_eq!(rule.reason(t(3), t(4)), LateReason::OperatorWatermark);
        assert_eq!(
            LatenessRule::OperatorWatermark.reason(t(10), t(9)),
            LateReason::OperatorWatermark
        );
    }
}
