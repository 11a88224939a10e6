//! The binary codec of state: serde through `postcard` (varint integers,
//! no field names), so encoded keys and values are compact and stable.
//!
//! A stored key is `key group (u16, big endian) | postcard((key, namespace))`:
//! the key-group prefix makes one contiguous range per group, which is what
//! a restore at another parallelism scans.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::key_group::key_group_of;
use crate::{Result, StateError};

/// Appends the encoding of `value` to `buf`.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    name: &str,
    what: &'static str,
    value: &T,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(value, taken).map_err(|e| StateError::Codec {
        name: name.to_string(),
        action: "encode",
        what,
        reason: e.to_string(),
    })?;
    Ok(())
}

/// Decodes a whole buffer.
pub(crate) fn decode<T: DeserializeOwned>(
    name: &str,
    what: &'static str,
    bytes: &[u8],
) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| StateError::Codec {
        name: name.to_string(),
        action: "decode",
        what,
        reason: e.to_string(),
    })
}

/// Writes the stored form of `(key, namespace)` into `buf` (cleared first)
/// and returns the key's group.
pub(crate) fn encode_state_key<K: Serialize + std::hash::Hash, N: Serialize>(
    name: &str,
    key: &K,
    namespace: &N,
    key_groups: u16,
    buf: &mut Vec<u8>,
) -> Result<u16> {
    let group = key_group_of(key, key_groups);
    buf.clear();
    buf.extend_from_slice(&group.to_be_bytes());
    encode_into(name, "key", &(key, namespace), buf)?;
    Ok(group)
}

/// The key group of a stored key (its first two bytes).
pub(crate) fn group_of_stored_key(bytes: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
}

/// Decodes the `(key, namespace)` of a stored key.
pub(crate) fn decode_state_key<K: DeserializeOwned, N: DeserializeOwned>(
    name: &str,
    bytes: &[u8],
) -> Result<(K, N)> {
    decode(name, "key", bytes.get(2..).unwrap_or_default())
}
