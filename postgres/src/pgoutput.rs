//! A decoder of PostgreSQL's `pgoutput` logical replication messages,
//! protocol version 1 (PostgreSQL 10 and later).
//!
//! Every message is one `XLogData` payload: a tag byte, then big-endian
//! integers, NUL-terminated strings and tuple data
//! (<https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>).
//! Decoding borrows nothing: column values are [`Bytes`] slices of the
//! payload, so a decoded change costs no copy of its text.
//!
//! Invariants: a malformed or truncated message is a [`DecodeError`], never
//! a panic or a wrong value; tags this decoder does not need (origin, type,
//! logical messages) decode to [`Message::Other`].

use bytes::Bytes;

/// A message the payload could not be decoded as: the server (or whatever
/// produced the bytes) is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput message (tag {tag:?}): {reason}")]
pub struct DecodeError {
    /// The message's tag byte, as a character.
    pub tag: char,
    /// What was wrong.
    pub reason: String,
}

/// A column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Whether the column is part of the replica identity (the key).
    pub key: bool,
    /// The column's name.
    pub name: String,
    /// The column type's OID (`pg_type.oid`).
    pub type_oid: u32,
    /// The type modifier (`atttypmod`).
    pub type_mod: i32,
}

/// What the server logs of a row's old version (`REPLICA IDENTITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `DEFAULT`: the primary key's columns.
    Default,
    /// `NOTHING`: nothing.
    Nothing,
    /// `FULL`: every column.
    Full,
    /// `USING INDEX`: the columns of that index.
    Index,
}

/// The description of a table, sent before its first change in a session
/// and again when its columns change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The table's OID.
    pub oid: u32,
    /// Its schema.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// What old rows carry.
    pub replica_identity: ReplicaIdentity,
    /// The columns, in table order (the order of tuple values).
    pub columns: Vec<Column>,
}

impl Relation {
    /// `schema.name`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    /// SQL `NULL`.
    Null,
    /// A TOASTed value the update did not change, so the server did not
    /// send it.
    UnchangedToast,
    /// The value in PostgreSQL's text output format.
    Text(Bytes),
}

/// Which old row an update or delete carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldRow {
    /// `K`: only the replica identity's columns (others are `NULL`).
    Key,
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full,
}

/// A decoded `pgoutput` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A transaction starts.
    Begin {
        /// The LSN of its commit record.
        final_lsn: u64,
        /// Its commit time, in microseconds since 2000-01-01.
        commit_time: i64,
        /// Its transaction id.
        xid: u32,
    },
    /// A transaction committed.
    Commit {
        /// The LSN of the commit record.
        commit_lsn: u64,
        /// The LSN just after it: where a restart continues.
        end_lsn: u64,
        /// The commit time, in microseconds since 2000-01-01.
        commit_time: i64,
    },
    /// A table's description.
    Relation(Relation),
    /// A row was inserted.
    Insert {
        /// The table's OID.
        relation: u32,
        /// The new row.
        new: Vec<Datum>,
    },
    /// A row was updated.
    Update {
        /// The table's OID.
        relation: u32,
        /// The old row (only when the key changed, or with `FULL`).
        old: Option<(OldRow, Vec<Datum>)>,
        /// The new row.
        new: Vec<Datum>,
    },
    /// A row was deleted.
    Delete {
        /// The table's OID.
        relation: u32,
        /// The old row (its key, or all of it with `FULL`).
        old: (OldRow, Vec<Datum>),
    },
    /// Tables were truncated.
    Truncate {
        /// Their OIDs.
        relations: Vec<u32>,
        /// `TRUNCATE ... CASCADE`.
        cascade: bool,
        /// `TRUNCATE ... RESTART IDENTITY`.
        restart_identity: bool,
    },
    /// A message this decoder does not need (origin, type, logical
    /// decoding message), by tag.
    Other(u8),
}

/// Decodes one `pgoutput` message.
///
/// # Errors
/// When the payload is empty, truncated or otherwise malformed.
pub fn decode(payload: &Bytes) -> Result<Message, DecodeError> {
    let Some(&tag) = payload.first() else {
        return Err(DecodeError {
            tag: '?',
            reason: "empty message".into(),
        });
    };
    let mut r = Reader {
        data: payload,
        at: 1,
        tag,
    };
    let message = match tag {
        b'B' => Message::Begin {
            final_lsn: r.u64()?,
            commit_time: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => {
            let _flags = r.u8()?;
            Message::Commit {
                commit_lsn: r.u64()?,
                end_lsn: r.u64()?,
                commit_time: r.i64()?,
            }
        }
        b'R' => {
            let oid = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let replica_identity = match r.u8()? {
                b'd' => ReplicaIdentity::Default,
                b'n' => ReplicaIdentity::Nothing,
                b'f' => ReplicaIdentity::Full,
                b'i' => ReplicaIdentity::Index,
                other => {
                    return Err(r.error(format!("unknown replica identity {:?}", other as char)))
                }
            };
            let count = r.u16()?;
            let mut columns = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                columns.push(Column {
                    key: r.u8()? & 1 == 1,
                    name: r.string()?,
                    type_oid: r.u32()?,
                    type_mod: r.i32()?,
                });
            }
            Message::Relation(Relation {
                // The server sends an empty namespace for pg_catalog.
                namespace: if namespace.is_empty() {
                    "pg_catalog".into()
                } else {
                    namespace
                },
                oid,
                name,
                replica_identity,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N')?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let old = match r.u8()? {
                b'N' => None,
                kind @ (b'K' | b'O') => {
                    let old = (old_row(kind), r.tuple()?);
                    r.expect(b'N')?;
                    Some(old)
                }
                other => return Err(r.error(format!("unexpected tuple kind {:?}", other as char))),
            };
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let kind = match r.u8()? {
                kind @ (b'K' | b'O') => kind,
                other => return Err(r.error(format!("unexpected tuple kind {:?}", other as char))),
            };
            Message::Delete {
                relation,
                old: (old_row(kind), r.tuple()?),
            }
        }
        b'T' => {
            let count = r.u32()?;
            let options = r.u8()?;
            let mut relations = Vec::with_capacity(count.min(1024) as usize);
            for _ in 0..count {
                relations.push(r.u32()?);
            }
            Message::Truncate {
                relations,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
            }
        }
        other => return Ok(Message::Other(other)),
    };
    if r.at != payload.len() {
        return Err(r.error(format!(
            "{} bytes left over after the message",
            payload.len() - r.at
        )));
    }
    Ok(message)
}

fn old_row(kind: u8) -> OldRow {
    if kind == b'O' {
        OldRow::Full
    } else {
        OldRow::Key
    }
}

struct Reader<'a> {
    data: &'a Bytes,
    at: usize,
    tag: u8,
}

impl Reader<'_> {
    fn error(&self, reason: impl Into<String>) -> DecodeError {
        DecodeError {
            tag: self.tag as char,
            reason: reason.into(),
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self
            .data
            .get(self.at..self.at + N)
            .and_then(|b| <[u8; N]>::try_from(b).ok())
            .ok_or_else(|| self.error(format!("truncated at byte {}", self.at)))?;
        self.at += N;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    fn expect(&mut self, wanted: u8) -> Result<(), DecodeError> {
        let got = self.u8()?;
        if got == wanted {
            Ok(())
        } else {
            Err(self.error(format!(
                "expected {:?}, found {:?}",
                wanted as char, got as char
            )))
        }
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take()?))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let rest = self.data.get(self.at..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.error("string without its NUL terminator"))?;
        let text = std::str::from_utf8(&rest[..len])
            .map_err(|e| self.error(format!("string is not UTF-8: {e}")))?
            .to_owned();
        self.at += len + 1;
        Ok(text)
    }

    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let count = self.u16()?;
        let mut values = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            values.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::UnchangedToast,
                b't' => {
                    let len = self.u32()? as usize;
                    let end = self.at + len;
                    if end > self.data.len() {
                        return Err(self.error(format!(
                            "a {len}-byte value at byte {} runs past the message's end",
                            self.at
                        )));
                    }
                    let value = self.data.slice(self.at..end);
                    self.at = end;
                    Datum::Text(value)
                }
                b'b' => return Err(self.error("binary tuple data (the source asks for text)")),
                other => return Err(self.error(format!("unknown value kind {:?}", other as char))),
            });
        }
        Ok(values)
    }
}

/// Type OIDs (`pg_type.oid`) of the built-in types the connectors treat
/// specially.
pub(crate) mod oid {
    pub(crate) const BOOL: u32 = 16;
    pub(crate) const BYTEA: u32 = 17;
    pub(crate) const NAME: u32 = 19;
    pub(crate) const INT8: u32 = 20;
    pub(crate) const INT2: u32 = 21;
    pub(crate) const INT4: u32 = 23;
    pub(crate) const TEXT: u32 = 25;
    pub(crate) const OID: u32 = 26;
    pub(crate) const JSON: u32 = 114;
    pub(crate) const FLOAT4: u32 = 700;
    pub(crate) const FLOAT8: u32 = 701;
    pub(crate) const BPCHAR: u32 = 1042;
    pub(crate) const VARCHAR: u32 = 1043;
    pub(crate) const TIMESTAMP: u32 = 1114;
    pub(crate) const TIMESTAMPTZ: u32 = 1184;
    pub(crate) const UUID: u32 = 2950;
    pub(crate) const JSONB: u32 = 3802;
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// A PostgreSQL timestamp (microseconds since 2000-01-01) as microseconds
/// since the Unix epoch.
pub fn pg_to_unix_micros(pg_micros: i64) -> i64 {
    pg_micros.saturating_add(PG_EPOCH_OFFSET_MICROS)
}

/// An LSN in PostgreSQL's `X/X` notation.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses PostgreSQL's `X/X` notation of an LSN.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    (high <= u64::from(u32::MAX) && low <= u64::from(u32::MAX)).then_some(high << 32 | low)
}

#[cfg(test)]
// Tests fail by panicking, on the value that was wrong.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Bytes {
        let clean: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        clean
            .chunks(2)
            .map(|pair| {
                let s = std::str::from_utf8(pair).unwrap_or("00");
                u8::from_str_radix(s, 16).unwrap_or(0)
            })
            .collect::<Vec<u8>>()
            .into()
    }

    #[test]
    fn lsn_round_trips() {
        assert_eq!(format_lsn(0x1_6B37_4D48), "1/6B374D48");
        assert_eq!(parse_lsn("1/6B374D48"), Some(0x1_6B37_4D48));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("nonsense"), None);
        assert_eq!(parse_lsn("1FFFFFFFF/0"), None);
    }

    #[test]
    fn truncated_and_trailing_bytes_are_errors() {
        assert!(decode(&Bytes::new()).is_err());
        assert!(decode(&hex("42 00 00")).is_err());
        // An insert whose value claims more bytes than there are.
        let err = decode(&hex("49 00000001 4e 0001 74 000000ff 41")).unwrap_err();
        assert!(err.reason.contains("runs past"), "{err}");
        let mut begin = hex("42 0000000000000010 0000000000000020 00000005").to_vec();
        begin.push(0);
        assert!(decode(&begin.into())
            .unwrap_err()
            .reason
            .contains("left over"));
    }
}
