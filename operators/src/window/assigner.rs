//! Windows and window assigners (DESIGN.md "Time semantics"):
//!
//! - a window is `[start, end)`, its `max_timestamp` is `end - 1`;
//! - tumbling(size, offset): the one window with
//!   `start = ts - floor_mod(ts - offset, size)` (floor also for negative `ts`);
//! - sliding(size, slide, offset): every window with `start` on the slide grid
//!   and `start <= ts < start + size`;
//! - session(gap): each record opens `[ts, ts + gap)`; windows of a key that
//!   overlap or touch merge (Flink's rule), so a session is `[first, last + gap)`;
//! - global: one window per key, from `-inf` to `+inf`, fired by its trigger.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tideline_engine::{Error, EventTime, Result};

/// A time interval `[start, end)` in event-time milliseconds.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct TimeWindow {
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after the window.
    pub end: i64,
}

impl TimeWindow {
    /// The window `[start, end)`.
    pub const fn new(start: i64, end: i64) -> Self {
        Self { start, end }
    }

    /// The global window (`[-inf, +inf)`).
    pub const GLOBAL: TimeWindow = TimeWindow {
        start: i64::MIN,
        end: i64::MAX,
    };

    /// The last timestamp inside the window: `end - 1`.
    pub const fn max_timestamp(&self) -> EventTime {
        EventTime::from_millis(self.end.saturating_sub(1))
    }

    /// Whether `ts` lies in the window.
    pub const fn contains(&self, ts: i64) -> bool {
        self.start <= ts && ts < self.end
    }

    /// Whether the two windows overlap or touch (the session merge rule).
    pub const fn overlaps_or_touches(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow::new(self.start.min(other.start), self.end.max(other.end))
    }
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// A length of event time, from `std::time::Duration`, `chrono::TimeDelta`
/// or raw milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span(i64);

impl Span {
    /// `millis` milliseconds.
    pub const fn millis(millis: i64) -> Self {
        Span(millis)
    }

    /// The length in milliseconds.
    pub const fn as_millis(self) -> i64 {
        self.0
    }
}

impl From<Duration> for Span {
    fn from(d: Duration) -> Self {
        Span(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

impl From<chrono::TimeDelta> for Span {
    fn from(d: chrono::TimeDelta) -> Self {
        Span(d.num_milliseconds())
    }
}

/// A duration text that is not a [`Span`]; the message names the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseSpanError(String);

impl std::str::FromStr for Span {
    type Err = ParseSpanError;

    /// `250ms`, `10s`, `5m`, `1h`, or plain milliseconds (surrounding
    /// whitespace is ignored).
    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        let text = text.trim();
        let (number, unit) = text.split_at(
            text.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len()),
        );
        let n: i64 = number.parse().map_err(|_| {
            ParseSpanError(format!("'{text}' is not a duration like 10s, 500ms or 2m"))
        })?;
        let factor = match unit {
            "" | "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => {
                return Err(ParseSpanError(format!(
                    "'{text}': unknown unit '{unit}' (use ms, s, m or h)"
                )))
            }
        };
        n.checked_mul(factor)
            .map(Span)
            .ok_or_else(|| ParseSpanError(format!("'{text}' is too large")))
    }
}

/// Tumbling windows: fixed size, no overlap.
#[derive(Clone, Copy, Debug)]
pub struct Tumbling {
    size: i64,
    offset: i64,
}

impl Tumbling {
    /// Windows of `size`, aligned to the epoch.
    pub fn of(size: impl Into<Span>) -> Self {
        Self {
            size: size.into().as_millis(),
            offset: 0,
        }
    }

    /// Shifts the window grid by `offset` (e.g. time zones for daily windows).
    pub fn with_offset(mut self, offset: impl Into<Span>) -> Self {
        self.offset = offset.into().as_millis();
        self
    }
}

/// Sliding windows: `size` long, one starting every `slide`.
#[derive(Clone, Copy, Debug)]
pub struct Sliding {
    size: i64,
    slide: i64,
    offset: i64,
}

impl Sliding {
    /// Windows of `size`, a new one every `slide`.
    pub fn of(size: impl Into<Span>, slide: impl Into<Span>) -> Self {
        Self {
            size: size.into().as_millis(),
            slide: slide.into().as_millis(),
            offset: 0,
        }
    }

    /// Shifts the window grid by `offset`.
    pub fn with_offset(mut self, offset: impl Into<Span>) -> Self {
        self.offset = offset.into().as_millis();
        self
    }
}

/// The gap of a session window, fixed or computed from the record.
pub enum Gap<T> {
    /// The same gap for every record.
    Fixed(i64),
    /// A gap per record (milliseconds; must be positive).
    Dynamic(Arc<dyn Fn(&T) -> i64 + Send + Sync>),
}

impl<T> fmt::Debug for Gap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gap::Fixed(g) => write!(f, "Fixed({g}ms)"),
            Gap::Dynamic(_) => f.write_str("Dynamic"),
        }
    }
}

impl<T> Clone for Gap<T> {
    fn clone(&self) -> Self {
        match self {
            Gap::Fixed(g) => Gap::Fixed(*g),
            Gap::Dynamic(f) => Gap::Dynamic(Arc::clone(f)),
        }
    }
}

/// Session windows: close after a gap without records.
#[derive(Debug)]
pub struct Session<T> {
    gap: Gap<T>,
}

impl<T> Session<T> {
    /// Sessions that close after `gap` without records.
    pub fn with_gap(gap: impl Into<Span>) -> Self {
        Self {
            gap: Gap::Fixed(gap.into().as_millis()),
        }
    }

    /// Sessions whose gap each record chooses (in milliseconds).
    pub fn with_dynamic_gap(gap: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Self {
        Self {
            gap: Gap::Dynamic(Arc::new(gap)),
        }
    }
}

/// One window per key over all time; needs a trigger (e.g. `CountTrigger`).
#[derive(Clone, Copy, Debug, Default)]
pub struct GlobalWindows;

/// The assigners, as the window operator sees them.
pub enum WindowKind<T> {
    /// See [`Tumbling`].
    Tumbling {
        /// Window length (ms).
        size: i64,
        /// Grid offset (ms).
        offset: i64,
    },
    /// See [`Sliding`]; records are kept in panes of `gcd(size, slide)`.
    Sliding {
        /// Window length (ms).
        size: i64,
        /// Distance between window starts (ms).
        slide: i64,
        /// Grid offset (ms).
        offset: i64,
    },
    /// See [`Session`].
    Session(Gap<T>),
    /// See [`GlobalWindows`].
    Global,
}

impl<T> Clone for WindowKind<T> {
    fn clone(&self) -> Self {
        match self {
            WindowKind::Tumbling { size, offset } => WindowKind::Tumbling {
                size: *size,
                offset: *offset,
            },
            WindowKind::Sliding {
                size,
                slide,
                offset,
            } => WindowKind::Sliding {
                size: *size,
                slide: *slide,
                offset: *offset,
            },
            WindowKind::Session(g) => WindowKind::Session(g.clone()),
            WindowKind::Global => WindowKind::Global,
        }
    }
}

impl<T> fmt::Debug for WindowKind<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowKind::Tumbling { size, offset } => {
                write!(f, "Tumbling({size}ms, offset {offset}ms)")
            }
            WindowKind::Sliding {
                size,
                slide,
                offset,
            } => write!(f, "Sliding({size}ms, {slide}ms, offset {offset}ms)"),
            WindowKind::Session(Gap::Fixed(g)) => write!(f, "Session({g}ms)"),
            WindowKind::Session(Gap::Dynamic(_)) => f.write_str("Session(dynamic gap)"),
            WindowKind::Global => f.write_str("Global"),
        }
    }
}

impl<T> From<Tumbling> for WindowKind<T> {
    fn from(t: Tumbling) -> Self {
        WindowKind::Tumbling {
            size: t.size,
            offset: t.offset,
        }
    }
}

impl<T> From<Sliding> for WindowKind<T> {
    fn from(s: Sliding) -> Self {
        // A slide equal to the size is a tumbling window (and cheaper).
        if s.slide == s.size {
            return WindowKind::Tumbling {
                size: s.size,
                offset: s.offset,
            };
        }
        WindowKind::Sliding {
            size: s.size,
            slide: s.slide,
            offset: s.offset,
        }
    }
}

impl<T> From<Session<T>> for WindowKind<T> {
    fn from(s: Session<T>) -> Self {
        WindowKind::Session(s.gap)
    }
}

impl<T> From<GlobalWindows> for WindowKind<T> {
    fn from(_: GlobalWindows) -> Self {
        WindowKind::Global
    }
}

fn positive(field: &str, v: i64) -> Result<()> {
    if v <= 0 {
        return Err(Error::config(
            field,
            format!("must be positive, got {v} ms"),
        ));
    }
    Ok(())
}

fn offset_in_range(field: &str, offset: i64, size: i64) -> Result<()> {
    if offset.checked_abs().is_none_or(|o| o >= size) {
        return Err(Error::config(
            field,
            format!("|offset| must be smaller than the window size ({size} ms), got {offset} ms"),
        ));
    }
    Ok(())
}

/// `floor_mod(a - b, m)` without overflow, for `m > 0` (128-bit arithmetic
/// only when `a - b` overflows, since it is a slow software division).
pub(crate) fn floor_mod_diff(a: i64, b: i64, m: i64) -> i64 {
    match a.checked_sub(b) {
        Some(d) => d.rem_euclid(m),
        None => ((i128::from(a) - i128::from(b)).rem_euclid(i128::from(m))) as i64,
    }
}

/// Greatest common divisor (for pane sizes).
pub(crate) fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl<T> WindowKind<T> {
    /// Rejects zero sizes, slides larger than the size, out-of-range offsets.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        match self {
            WindowKind::Tumbling { size, offset } => {
                positive("window.size", *size)?;
                offset_in_range("window.offset", *offset, *size)
            }
            WindowKind::Sliding {
                size,
                slide,
                offset,
            } => {
                positive("window.size", *size)?;
                positive("window.slide", *slide)?;
                if slide > size {
                    return Err(Error::config(
                        "window.slide",
                        format!("slide ({slide} ms) must not exceed the size ({size} ms)"),
                    ));
                }
                offset_in_range("window.offset", *offset, *slide)
            }
            WindowKind::Session(Gap::Fixed(gap)) => positive("window.gap", *gap),
            WindowKind::Session(Gap::Dynamic(_)) | WindowKind::Global => Ok(()),
        }
    }

    /// The tumbling window of `ts`.
    pub fn tumbling_window(size: i64, offset: i64, ts: i64) -> TimeWindow {
        let start = ts - floor_mod_diff(ts, offset, size);
        TimeWindow::new(start, start.saturating_add(size))
    }

    /// Every window `ts` belongs to (sessions: the record's own
    /// `[ts, ts + gap)` before merging; global: [`TimeWindow::GLOBAL`]).
    pub fn assign(&self, ts: i64, value: &T, out: &mut Vec<TimeWindow>) {
        match self {
            WindowKind::Tumbling { size, offset } => {
                out.push(Self::tumbling_window(*size, *offset, ts))
            }
            WindowKind::Sliding {
                size,
                slide,
                offset,
            } => {
                let mut start = ts - floor_mod_diff(ts, *offset, *slide);
                while start > ts.saturating_sub(*size) {
                    out.push(TimeWindow::new(start, start.saturating_add(*size)));
                    match start.checked_sub(*slide) {
                        Some(s) => start = s,
                        None => break,
                    }
                }
            }
            WindowKind::Session(gap) => out.push(TimeWindow::new(
                ts,
                ts.saturating_add(self.gap_of(gap, value)),
            )),
            WindowKind::Global => out.push(TimeWindow::GLOBAL),
        }
    }

    pub(crate) fn gap_of(&self, gap: &Gap<T>, value: &T) -> i64 {
        match gap {
            Gap::Fixed(g) => *g,
            Gap::Dynamic(f) => f(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_with_units_and_name_bad_text() {
        let ms = |t: &str| t.parse::<Span>().map(Span::as_millis);
        assert_eq!(ms("250ms"), Ok(250));
        assert_eq!(ms(" 10s "), Ok(10_000));
        assert_eq!(ms("2m"), Ok(120_000));
        assert_eq!(ms("1h"), Ok(3_600_000));
        assert_eq!(ms("15"), Ok(15));
        let err = |t: &str| ms(t).map_err(|e| e.to_string()).err().unwrap_or_default();
        assert!(err("10x").contains("unknown unit 'x'"), "{}", err("10x"));
        assert!(err("s").contains("'s' is not a duration"), "{}", err("s"));
        assert!(
            err("-5s").contains("'-5s' is not a duration"),
            "{}",
            err("-5s")
        );
        assert!(err("9999999999999999h").contains("too large"));
    }
    use proptest::prelude::*;

    fn assign(kind: &WindowKind<()>, ts: i64) -> Vec<TimeWindow> {
        let mut out = Vec::new();
        kind.assign(ts, &(), &mut out);
        out
    }

    #[test]
    fn tumbling_floors_negative_timestamps() {
        let k: WindowKind<()> = Tumbling::of(Span::millis(10)).into();
        assert_eq!(assign(&k, -1), vec![TimeWindow::new(-10, 0)]);
        assert_eq!(assign(&k, -10), vec![TimeWindow::new(-10, 0)]);
        assert_eq!(assign(&k, 9), vec![TimeWindow::new(0, 10)]);
        let k: WindowKind<()> = Tumbling::of(Span::millis(10))
            .with_offset(Span::millis(3))
            .into();
        assert_eq!(assign(&k, 2), vec![TimeWindow::new(-7, 3)]);
        assert_eq!(assign(&k, 3), vec![TimeWindow::new(3, 13)]);
    }

    #[test]
    fn sliding_windows_of_a_timestamp() {
        let k: WindowKind<()> = Sliding::of(Span::millis(10), Span::millis(4)).into();
        assert_eq!(
            assign(&k, 5),
            vec![
                TimeWindow::new(4, 14),
                TimeWindow::new(0, 10),
                TimeWindow::new(-4, 6)
            ]
        );
    }

    #[test]
    fn validation_names_the_field() {
        let bad: Vec<(WindowKind<()>, &str)> = vec![
            (Tumbling::of(Duration::ZERO).into(), "window.size"),
            (
                Sliding::of(Span::millis(10), Span::millis(20)).into(),
                "window.slide",
            ),
            (
                Sliding::of(Span::millis(10), Span::millis(0)).into(),
                "window.slide",
            ),
            (
                Tumbling::of(Span::millis(10))
                    .with_offset(Span::millis(10))
                    .into(),
                "window.offset",
            ),
            (
                Session::with_gap(chrono::TimeDelta::milliseconds(-5)).into(),
                "window.gap",
            ),
        ];
        for (kind, field) in bad {
            match kind.validate() {
                Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{kind:?}: {other:?}"),
            }
        }
    }

    proptest! {
        /// Assigned windows are exactly those on the grid with start <= ts < end.
        #[test]
        fn assigned_windows_are_exactly_the_containing_ones(
            ts in -1_000_000i64..1_000_000,
            size in 1i64..500,
            slide_frac in 1i64..=100,
            offset_frac in 0i64..100,
        ) {
            let slide = (size * slide_frac / 100).max(1);
            let offset = slide * offset_frac / 100;
            let kind: WindowKind<()> = Sliding::of(Span::millis(size), Span::millis(slide)).with_offset(Span::millis(offset)).into();
            let got = assign(&kind, ts);
            // Brute force: every grid start in (ts - size, ts].
            let mut expected = Vec::new();
            let mut start = ts - size - slide;
            start -= (start - offset).rem_euclid(slide);
            while start <= ts {
                let w = TimeWindow::new(start, start + size);
                if w.contains(ts) { expected.push(w); }
                start += slide;
            }
            let mut got_sorted = got.clone();
            got_sorted.sort();
            prop_assert_eq!(got_sorted, expected);
            prop_assert!(got.iter().all(|w| w.contains(ts) && (w.start - offset).rem_euclid(slide) == 0));
            if slide == size {
                prop_assert_eq!(got.len(), 1);
            }
        }
    }
}
