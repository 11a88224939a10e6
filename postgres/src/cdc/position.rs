//! Where a CDC reader stands, and how a checkpoint stores it.
//!
//! A stream position is `(resume, skip)`: the end LSN of the last
//! transaction read whole, and how many changes of the next one were
//! emitted. A snapshot position adds how far the copy of the tables got:
//! the tables before `table` were copied whole, and the rows of `table`
//! up to `key` (in primary-key order). Together they say exactly which
//! rows downstream has seen, and as of which point of the log: a restore
//! brings those rows up to date from the log, then copies the rest (see
//! the [module docs](super)).

use std::sync::Arc;

use tideline_engine::{Error, Result, SourceOffset};

use crate::words::{pack_text, unpack_text};

/// Where the reader stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Position {
    /// Nothing read yet: a restore starts afresh.
    NotStarted,
    /// In the initial snapshot: the tables before `table`, and the rows of
    /// `table` with a primary key up to `key` (none: no row yet), were
    /// emitted, brought up to date to the stream position `(resume,
    /// skip)`.
    Snapshot {
        /// The stream position the copied rows are as of.
        resume: u64,
        /// Changes of the transaction after `resume` applied to them.
        skip: u64,
        /// The table being copied (an index into the source's tables).
        table: u64,
        /// The primary key of the last row copied of `table`, as text.
        key: Option<Arc<[String]>>,
        /// A fingerprint of the tables and their keys (a restore refuses
        /// to resume a snapshot of other tables or keys).
        layout: u64,
    },
    /// In an initial snapshot that a restore cannot resume (a table has no
    /// primary key of a type the reader can order by).
    UnresumableSnapshot {
        /// Rows read so far.
        rows: u64,
    },
    /// Streaming: after the transaction ending at `resume` and `skip`
    /// changes of the next.
    Stream {
        /// The end LSN of the last transaction read whole.
        resume: u64,
        /// Changes of the next transaction emitted.
        skip: u64,
    },
}

const SNAPSHOT_TAG: u64 = 0;
const STREAM_TAG: u64 = 1;
const NOT_STARTED_TAG: u64 = 2;
const UNRESUMABLE_TAG: u64 = 3;

impl Position {
    /// As a checkpoint stores it.
    pub(super) fn to_offset(&self) -> SourceOffset {
        match self {
            Position::NotStarted => SourceOffset(vec![NOT_STARTED_TAG]),
            Position::Stream { resume, skip } => SourceOffset(vec![STREAM_TAG, *resume, *skip]),
            Position::UnresumableSnapshot { rows } => SourceOffset(vec![UNRESUMABLE_TAG, *rows]),
            Position::Snapshot {
                resume,
                skip,
                table,
                key,
                layout,
            } => {
                let mut words = vec![SNAPSHOT_TAG, *resume, *skip, *table, *layout];
                let key = key.as_deref().unwrap_or_default();
                words.push(key.len() as u64);
                for column in key {
                    pack_text(column, &mut words);
                }
                SourceOffset(words)
            }
        }
    }

    /// Reads what [`Position::to_offset`] wrote; `source` names the source
    /// in errors.
    pub(super) fn from_offset(offset: &SourceOffset, source: &str) -> Result<Self> {
        let invalid = || {
            Error::config(
                format!("source '{source}'.offset"),
                format!(
                    "{:?} is not a position of a PostgreSQL CDC source",
                    offset.0
                ),
            )
        };
        match offset.0.as_slice() {
            &[NOT_STARTED_TAG] => Ok(Position::NotStarted),
            &[STREAM_TAG, resume, skip] => Ok(Position::Stream { resume, skip }),
            &[UNRESUMABLE_TAG, rows] => Ok(Position::UnresumableSnapshot { rows }),
            [SNAPSHOT_TAG, resume, skip, table, layout, columns, rest @ ..] => {
                let mut rest = rest;
                let mut key = Vec::new();
                for _ in 0..*columns {
                    let (column, tail) = unpack_text(rest).ok_or_else(invalid)?;
                    key.push(column);
                    rest = tail;
                }
                if !rest.is_empty() {
                    return Err(invalid());
                }
                Ok(Position::Snapshot {
                    resume: *resume,
                    skip: *skip,
                    table: *table,
                    key: (!key.is_empty()).then(|| key.into()),
                    layout: *layout,
                })
            }
            _ => Err(invalid()),
        }
    }
}

#[cfg(test)]
// Tests fail by panicking, on the value that was wrong.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_position_round_trips_through_an_offset() {
        let positions = [
            Position::NotStarted,
            Position::Stream {
                resume: 0x1_0000_0010,
                skip: 3,
            },
            Position::UnresumableSnapshot { rows: 12 },
            Position::Snapshot {
                resume: 77,
                skip: 0,
                table: 1,
                key: None,
                layout: 5,
            },
            Position::Snapshot {
                resume: 77,
                skip: 2,
                table: 0,
                key: Some(
                    vec![
                        "42".to_string(),
                        "naïve, 9 bytes+".to_string(),
                        String::new(),
                    ]
                    .into(),
                ),
                layout: u64::MAX,
            },
        ];
        for position in positions {
            let offset = position.to_offset();
            assert_eq!(Position::from_offset(&offset, "s").unwrap(), position);
        }
    }

    #[test]
    fn malformed_offsets_are_refused() {
        for words in [vec![], vec![9], vec![0, 1, 2, 3, 4, 1, 20, 0], vec![1, 2]] {
            let err = Position::from_offset(&SourceOffset(words), "orders").unwrap_err();
            assert!(err.to_string().contains("orders"), "{err}");
        }
    }
}
