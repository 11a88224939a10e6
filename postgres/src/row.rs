//! Rows in PostgreSQL's text format, decoded into the user's serde types.
//!
//! Both the snapshot (a cursor over the simple query protocol) and the
//! replication stream (`pgoutput` tuples) deliver every column as text, so
//! one [`serde::Deserializer`] serves both: a row is a map from column
//! name to value, and a value is parsed as the field asks (`i64`, `f64`,
//! `bool`, `String`, `Option`, an enum's variant name), or, for fields that
//! take anything (`serde_json::Value`), by the column's type: integers,
//! floats and booleans as numbers and booleans, `json`/`jsonb` as JSON,
//! everything else as its text.
//!
//! Invariants: a value that does not parse as its field's type is an
//! error naming the column, never a default; an unchanged TOAST value
//! (not sent by the server) read by a field is an error, so the source
//! dead-letters the change instead of passing a wrong value on; columns
//! the struct has no field for are ignored, so a table may have more
//! columns than the struct.

use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::Deserializer;

use crate::pgoutput::{oid, Column, Datum};

/// Why a row did not decode into the user's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RowError(pub String);

impl de::Error for RowError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        RowError(msg.to_string())
    }
}

/// Decodes one row (`values`, in the order of `columns`) into `T`.
///
/// # Errors
/// When a value does not fit its field, a field has no column, or a field
/// reads an unchanged TOAST value.
pub fn decode_row<T: de::DeserializeOwned>(
    columns: &[Column],
    values: &[Datum],
) -> Result<T, RowError> {
    if columns.len() != values.len() {
        return Err(RowError(format!(
            "the row has {} values for {} columns",
            values.len(),
            columns.len()
        )));
    }
    T::deserialize(RowDeserializer {
        columns,
        values,
        key_only: false,
    })
}

/// Decodes an old row that carries only the replica identity's columns
/// (a delete or key-changing update under `REPLICA IDENTITY DEFAULT`):
/// the other fields take their type's zero value (`0`, `0.0`, `false`,
/// `""`, `None`, an empty sequence, an enum's first variant), as the
/// server did not send them.
///
/// # Errors
/// As [`decode_row`].
pub fn decode_key_row<T: de::DeserializeOwned>(
    columns: &[Column],
    values: &[Datum],
) -> Result<T, RowError> {
    if columns.len() != values.len() {
        return Err(RowError(format!(
            "the row has {} values for {} columns",
            values.len(),
            columns.len()
        )));
    }
    T::deserialize(RowDeserializer {
        columns,
        values,
        key_only: true,
    })
}

struct RowDeserializer<'a> {
    columns: &'a [Column],
    values: &'a [Datum],
    key_only: bool,
}

impl<'de> Deserializer<'de> for RowDeserializer<'_> {
    type Error = RowError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_map(RowMap {
            columns: self.columns,
            values: self.values,
            key_only: self.key_only,
            at: 0,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct RowMap<'a> {
    columns: &'a [Column],
    values: &'a [Datum],
    key_only: bool,
    at: usize,
}

impl<'de> MapAccess<'de> for RowMap<'_> {
    type Error = RowError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, RowError> {
        match self.columns.get(self.at) {
            Some(column) => seed
                .deserialize(column.name.as_str().into_deserializer())
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, RowError> {
        let at = self.at;
        self.at += 1;
        let (Some(column), Some(datum)) = (self.columns.get(at), self.values.get(at)) else {
            return Err(RowError("a value past the row's last column".into()));
        };
        if self.key_only && !column.key && *datum == Datum::Null {
            return seed.deserialize(ZeroValue);
        }
        seed.deserialize(DatumDeserializer { column, datum })
            .map_err(|e| RowError(format!("column `{}`: {}", column.name, e.0)))
    }
}

struct DatumDeserializer<'a> {
    column: &'a Column,
    datum: &'a Datum,
}

impl DatumDeserializer<'_> {
    fn text(&self) -> Result<&str, RowError> {
        match self.datum {
            Datum::Text(bytes) => std::str::from_utf8(bytes)
                .map_err(|e| RowError(format!("the value is not UTF-8: {e}"))),
            Datum::Null => Err(RowError("is NULL, and its field is not an Option".into())),
            Datum::UnchangedToast => Err(unchanged_toast()),
        }
    }

    fn parse<T: std::str::FromStr>(&self, what: &str) -> Result<T, RowError>
    where
        T::Err: fmt::Display,
    {
        let text = self.text()?;
        text.parse()
            .map_err(|e| RowError(format!("cannot read {text:?} as {what}: {e}")))
    }

    fn float(&self) -> Result<f64, RowError> {
        match self.text()? {
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => self.parse("a float"),
        }
    }

    fn is_json(&self) -> bool {
        matches!(self.column.type_oid, oid::JSON | oid::JSONB)
    }

    /// The value parsed as JSON (owned: the row's bytes do not outlive
    /// the decoding).
    fn json_value(&self) -> Result<serde_json::Value, RowError> {
        serde_json::from_str(self.text()?).map_err(|e| RowError(format!("invalid JSON: {e}")))
    }

    fn json<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, RowError> {
        self.json_value()?
            .deserialize_any(visitor)
            .map_err(|e| RowError(e.to_string()))
    }
}

macro_rules! parse_integer {
    ($($method:ident $visit:ident $ty:ty),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
            visitor.$visit(self.parse::<$ty>(stringify!($ty))?)
        }
    )*};
}

impl<'de> Deserializer<'de> for DatumDeserializer<'_> {
    type Error = RowError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        if let Datum::Null = self.datum {
            return visitor.visit_none();
        }
        match self.column.type_oid {
            oid::BOOL => self.deserialize_bool(visitor),
            oid::INT2 | oid::INT4 | oid::INT8 => visitor.visit_i64(self.parse("an integer")?),
            oid::OID => visitor.visit_u64(self.parse("an integer")?),
            oid::FLOAT4 | oid::FLOAT8 => visitor.visit_f64(self.float()?),
            oid::JSON | oid::JSONB => self.json(visitor),
            _ => visitor.visit_str(self.text()?),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        match self.text()? {
            "t" | "true" => visitor.visit_bool(true),
            "f" | "false" => visitor.visit_bool(false),
            other => Err(RowError(format!("cannot read {other:?} as a bool"))),
        }
    }

    parse_integer! {
        deserialize_i8 visit_i8 i8, deserialize_i16 visit_i16 i16,
        deserialize_i32 visit_i32 i32, deserialize_i64 visit_i64 i64,
        deserialize_i128 visit_i128 i128, deserialize_u8 visit_u8 u8,
        deserialize_u16 visit_u16 u16, deserialize_u32 visit_u32 u32,
        deserialize_u64 visit_u64 u64, deserialize_u128 visit_u128 u128,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_f64(self.float()?)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_f64(self.float()?)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_str(self.text()?)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_str(self.text()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_str(self.text()?)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        let text = self.text()?;
        if self.column.type_oid == oid::BYTEA {
            visitor.visit_byte_buf(decode_bytea(text)?)
        } else {
            visitor.visit_bytes(text.as_bytes())
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        match self.datum {
            Datum::Null => visitor.visit_none(),
            Datum::UnchangedToast => Err(unchanged_toast()),
            Datum::Text(_) => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, RowError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, RowError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        self.structured(visitor, "a sequence")
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, RowError> {
        self.structured(visitor, "a tuple")
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, RowError> {
        self.structured(visitor, "a tuple")
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        self.structured(visitor, "a map")
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RowError> {
        self.structured(visitor, "a struct")
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RowError> {
        if self.is_json() {
            return self
                .json_value()?
                .deserialize_enum(name, variants, visitor)
                .map_err(|e| RowError(e.to_string()));
        }
        // A PostgreSQL enum or text column: the variant's name.
        let text: de::value::StrDeserializer<'_, RowError> = self.text()?.into_deserializer();
        text.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_str(self.text()?)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_unit()
    }
}

fn unchanged_toast() -> RowError {
    RowError(
        "its value was not sent: an unchanged TOAST value (with REPLICA IDENTITY FULL the old \
         row carries it)"
            .into(),
    )
}

impl DatumDeserializer<'_> {
    /// A JSON column read by a structured field; other types cannot be.
    fn structured<'de, V: Visitor<'de>>(
        self,
        visitor: V,
        what: &str,
    ) -> Result<V::Value, RowError> {
        if self.is_json() {
            self.json(visitor)
        } else {
            self.text()?;
            Err(RowError(format!(
                "a column of type OID {} cannot be read as {what} (only json and jsonb can)",
                self.column.type_oid
            )))
        }
    }
}

/// The zero value of whatever type is asked for (see [`decode_key_row`]).
struct ZeroValue;

impl<'de> Deserializer<'de> for ZeroValue {
    type Error = RowError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_none()
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_bool(false)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_i64(0)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_u64(0)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_f64(0.0)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_str("")
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_seq(de::value::SeqDeserializer::<_, RowError>::new(
            std::iter::empty::<()>(),
        ))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RowError> {
        let first = variants
            .first()
            .ok_or_else(|| RowError(format!("enum {name} has no variant")))?;
        let text: de::value::StrDeserializer<'_, RowError> = first.into_deserializer();
        text.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, RowError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_i8(0)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_i16(0)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_i32(0)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_u8(0)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_u16(0)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_u32(0)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_f32(0.0)
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_str("")
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf option unit unit_struct tuple
        tuple_struct map struct identifier ignored_any
    }
}

/// `bytea` in its hex output format (`\x0123...`, the default since 9.0).
fn decode_bytea(text: &str) -> Result<Vec<u8>, RowError> {
    let hex = text
        .strip_prefix("\\x")
        .ok_or_else(|| RowError("bytea not in hex format (set bytea_output = 'hex')".into()))?;
    if hex.len() % 2 != 0 {
        return Err(RowError("bytea hex of odd length".into()));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| RowError(format!("invalid bytea hex at {i}")))
        })
        .collect()
}

/// A row's text values as [`Datum`]s (the snapshot's rows).
pub fn text_datums<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> Vec<Datum> {
    values
        .into_iter()
        .map(|value| match value {
            Some(text) => Datum::Text(Bytes::copy_from_slice(text.as_bytes())),
            None => Datum::Null,
        })
        .collect()
}

/// A row as `column=value` pairs (`NULL` for nulls), for dead letters.
pub(crate) fn render_row(columns: &[Column], values: &[Datum]) -> String {
    columns
        .iter()
        .zip(values)
        .map(|(column, value)| match value {
            Datum::Null => format!("{}=NULL", column.name),
            Datum::UnchangedToast => format!("{}=(unchanged TOAST)", column.name),
            // Long values (a TOASTed document) cut, with their length.
            Datum::Text(text) if text.len() > 200 => format!(
                "{}={}...({} bytes)",
                column.name,
                String::from_utf8_lossy(&text[..200]),
                text.len()
            ),
            Datum::Text(text) => format!("{}={}", column.name, String::from_utf8_lossy(text)),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
// Tests fail by panicking, on the value that was wrong.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn column(name: &str, type_oid: u32) -> Column {
        Column {
            key: false,
            name: name.into(),
            type_oid,
            type_mod: -1,
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    enum Status {
        #[serde(rename = "pending")]
        Pending,
        #[serde(rename = "paid")]
        Paid,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Order {
        id: i64,
        status: Status,
        amount: f64,
        note: Option<String>,
        paid: bool,
        tags: serde_json::Value,
    }

    fn order_columns() -> Vec<Column> {
        vec![
            column("id", oid::INT8),
            column("status", 1043),
            column("amount", 1700),
            column("note", 25),
            column("paid", oid::BOOL),
            column("tags", oid::JSONB),
            column("extra", 25),
        ]
    }

    #[test]
    fn a_row_decodes_into_a_struct_and_ignores_extra_columns() {
        let values = text_datums([
            Some("7"),
            Some("paid"),
            Some("12.50"),
            None,
            Some("t"),
            Some(r#"{"a": [1, 2]}"#),
            Some("ignored"),
        ]);
        let order: Order = decode_row(&order_columns(), &values).unwrap();
        assert_eq!(
            order,
            Order {
                id: 7,
                status: Status::Paid,
                amount: 12.5,
                note: None,
                paid: true,
                tags: serde_json::json!({"a": [1, 2]}),
            }
        );
    }

    #[test]
    fn bad_values_name_their_column() {
        let mut values = text_datums([
            Some("seven"),
            Some("paid"),
            Some("1"),
            None,
            Some("f"),
            Some("1"),
            None,
        ]);
        let err = decode_row::<Order>(&order_columns(), &values).unwrap_err();
        assert!(
            err.0.contains("column `id`") && err.0.contains("seven"),
            "{err}"
        );

        values[0] = Datum::Text(Bytes::from_static(b"7"));
        values[1] = Datum::Text(Bytes::from_static(b"refunded"));
        let err = decode_row::<Order>(&order_columns(), &values).unwrap_err();
        assert!(
            err.0.contains("column `status`") && err.0.contains("refunded"),
            "{err}"
        );

        values[1] = Datum::Text(Bytes::from_static(b"paid"));
        values[4] = Datum::Null;
        let err = decode_row::<Order>(&order_columns(), &values).unwrap_err();
        assert!(
            err.0.contains("column `paid`") && err.0.contains("NULL"),
            "{err}"
        );
    }

    #[test]
    fn an_unchanged_toast_value_is_an_error_only_when_a_field_reads_it() {
        #[derive(Debug, Deserialize)]
        struct Doc {
            #[allow(dead_code)]
            id: i32,
            #[allow(dead_code)]
            body: Option<String>,
        }
        #[derive(Debug, Deserialize, PartialEq)]
        struct IdOnly {
            id: i32,
        }
        let columns = vec![column("id", oid::INT4), column("body", 25)];
        let values = vec![Datum::Text(Bytes::from_static(b"1")), Datum::UnchangedToast];
        let err = decode_row::<Doc>(&columns, &values).unwrap_err();
        assert!(
            err.0.contains("column `body`") && err.0.contains("TOAST"),
            "{err}"
        );
        assert_eq!(
            decode_row::<IdOnly>(&columns, &values),
            Ok(IdOnly { id: 1 })
        );
    }

    #[test]
    fn a_key_only_row_fills_the_other_fields_with_zero_values() {
        let mut columns = order_columns();
        columns[0].key = true;
        let mut values = vec![Datum::Null; columns.len()];
        values[0] = Datum::Text(Bytes::from_static(b"9"));
        let order: Order = decode_key_row(&columns, &values).unwrap();
        assert_eq!(
            order,
            Order {
                id: 9,
                status: Status::Pending,
                amount: 0.0,
                note: None,
                paid: false,
                tags: serde_json::Value::Null,
            }
        );
        // A NULL key column is still an error.
        values[0] = Datum::Null;
        assert!(decode_key_row::<Order>(&columns, &values).is_err());
    }

    #[test]
    fn any_typed_values_follow_the_column_type() {
        let columns = vec![
            column("i", oid::INT4),
            column("f", oid::FLOAT8),
            column("b", oid::BOOL),
            column("t", 25),
            column("n", 25),
            column("bytes", oid::BYTEA),
        ];
        let values = text_datums([
            Some("-3"),
            Some("-Infinity"),
            Some("f"),
            Some("x"),
            None,
            Some("\\x00ff"),
        ]);
        let row: serde_json::Value = decode_row(&columns, &values).unwrap();
        assert_eq!(row["i"], serde_json::json!(-3));
        assert!(row["f"].is_null(), "JSON has no -inf: {row}");
        assert_eq!(row["b"], serde_json::json!(false));
        assert_eq!(row["t"], serde_json::json!("x"));
        assert!(row["n"].is_null());
        assert_eq!(decode_bytea("\\x00ff"), Ok(vec![0, 255]));
        assert!(decode_bytea("00ff").is_err());
    }
}
