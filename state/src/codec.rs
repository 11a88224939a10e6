//! The binary codec of state: serde through `postcard` (varint integers,
//! no field names), so encoded keys and values are compact and stable.
//!
//! A stored key is `key group (u16, big endian) | postcard((key, namespace))`:
//! the key-group prefix makes one contiguous range per group, which is what
//! a restore at another parallelism scans.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::key_group::key_group_of_encoded;
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
///
/// The group is hashed from the key's bytes as they are written: postcard
/// encodes a tuple as its fields back to back, so those bytes are exactly
/// the key's own encoding that [`key_group_of`](crate::key_group::key_group_of)
/// hashes, and the key is serialized once.
pub(crate) fn encode_state_key<K: Serialize, N: Serialize>(
    name: &str,
    key: &K,
    namespace: &N,
    key_groups: u16,
    buf: &mut Vec<u8>,
) -> Result<u16> {
    buf.clear();
    buf.extend_from_slice(&[0, 0]);
    encode_into(name, "key", key, buf)?;
    let group = key_group_of_encoded(buf.get(2..).unwrap_or_default(), key_groups);
    if let Some(prefix) = buf.get_mut(..2) {
        prefix.copy_from_slice(&group.to_be_bytes());
    }
    encode_into(name, "key", namespace, buf)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_group::key_group_of;

    #[test]
    fn stored_key_is_group_then_the_tuple_encoding() {
        let mut buf = Vec::new();
        let key = ("user-1".to_string(), 7u64);
        let group = encode_state_key("s", &key, &3i32, 128, &mut buf).ok();
        // Keyed state and the exchange must agree on the group, or records
        // would reach a subtask that does not hold their state.
        assert_eq!(group, key_group_of(&key, 128).ok());
        let mut expected = group
            .map(u16::to_be_bytes)
            .map(Vec::from)
            .unwrap_or_default();
        expected.extend(postcard::to_stdvec(&(&key, &3i32)).unwrap_or_default());
        assert_eq!(buf, expected);
        assert_eq!(group_of_stored_key(&buf), group);
        let decoded = decode_state_key::<(String, u64), i32>("s", &buf).ok();
        assert_eq!(decoded, Some((key, 3)));
    }
}
