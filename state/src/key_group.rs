//! Key groups: the unit in which keyed state is partitioned and redistributed.
//!
//! A key's group is `xxh3_64(postcard(key)) % key_groups`, with XXH3's
//! default seed (0) and secret. Both halves are specified formats: postcard's
//! wire format is documented and stable within its major version, and XXH3 is
//! a published algorithm with reference implementations in many languages.
//! `std::hash::Hash` is deliberately not used: its impls are not a stable
//! format (`str` appends a `0xff` terminator, `usize` is platform-sized) and
//! hashers such as Fx may change between crate or compiler versions, which
//! would silently route keys away from the state a checkpoint restored for
//! them. The test vectors below were computed outside Rust, so a change to
//! either half fails them.
//!
//! Groups are spread over subtasks in contiguous ranges, as in Flink: group
//! `g` belongs to subtask `g * parallelism / key_groups`.
//!
//! Hashing allocates nothing: the encoding is written into a stack buffer and
//! hashed in one shot; a key longer than that buffer is streamed into an XXH3
//! state instead, which yields the same hash as hashing all the bytes at once.

use serde::Serialize;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::StateError;

/// The default number of key groups (Flink's default maximum parallelism is 128 too).
pub const DEFAULT_KEY_GROUPS: u16 = 128;

/// Keys whose encoding fits here are hashed without touching the streaming
/// state; 64 bytes covers integers, UUIDs, short strings and small tuples.
const INLINE_LEN: usize = 64;

/// The stable 64-bit hash of a key: XXH3-64 of its postcard encoding.
///
/// # Errors
///
/// [`StateError::KeyEncoding`] if the key's `Serialize` impl fails under
/// postcard (e.g. a sequence of unknown length). Keyed state could not store
/// such a key either.
pub fn key_hash<K: Serialize + ?Sized>(key: &K) -> Result<u64, StateError> {
    postcard::serialize_with_flavor(key, HashFlavor::new()).map_err(|e| StateError::KeyEncoding {
        key_type: std::any::type_name::<K>(),
        reason: e.to_string(),
    })
}

/// The key group of a key whose [`key_hash`] is `hash`.
///
/// `key_groups` must be at least 1 (the engine validates it before a job
/// starts); 0 is treated as 1 rather than dividing by zero.
pub fn key_group_of_hash(hash: u64, key_groups: u16) -> u16 {
    // The remainder is below `key_groups`, so it fits in a u16.
    (hash % u64::from(key_groups.max(1))) as u16
}

/// The key group of `key` among `key_groups` groups.
///
/// # Errors
///
/// As [`key_hash`].
pub fn key_group_of<K: Serialize + ?Sized>(key: &K, key_groups: u16) -> Result<u16, StateError> {
    Ok(key_group_of_hash(key_hash(key)?, key_groups))
}

/// The key group of a key given its postcard encoding (as keyed state
/// already has it in hand), equal to [`key_group_of`] of the key.
pub(crate) fn key_group_of_encoded(encoded: &[u8], key_groups: u16) -> u16 {
    key_group_of_hash(xxh3_64(encoded), key_groups)
}

/// The subtask (of `parallelism`) that owns key group `group`.
pub fn subtask_for_key_group(group: u16, key_groups: u16, parallelism: usize) -> usize {
    usize::from(group) * parallelism / usize::from(key_groups.max(1))
}

/// A postcard output that hashes instead of storing: bytes collect in
/// `inline` and spill into `stream` only for long keys.
struct HashFlavor {
    inline: [u8; INLINE_LEN],
    len: usize,
    stream: Option<Box<Xxh3>>,
}

impl HashFlavor {
    fn new() -> Self {
        Self {
            inline: [0; INLINE_LEN],
            len: 0,
            stream: None,
        }
    }
}

impl postcard::ser_flavors::Flavor for HashFlavor {
    type Output = u64;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.try_extend(&[byte])
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if let Some(room) = self.inline.get_mut(self.len..self.len + data.len()) {
            room.copy_from_slice(data);
            self.len += data.len();
            return Ok(());
        }
        // Boxed because the streaming state is several hundred bytes and only
        // long keys (rare, already costly to encode) need it.
        let stream = self.stream.get_or_insert_with(|| Box::new(Xxh3::new()));
        stream.update(&self.inline[..self.len]);
        self.len = 0;
        stream.update(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<u64> {
        let rest = &self.inline[..self.len];
        Ok(match self.stream {
            None => xxh3_64(rest),
            Some(mut stream) => {
                stream.update(rest);
                stream.digest()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Expected hashes were computed with the reference XXH3 implementation
    /// through Python's `xxhash` package (4.1.0, wrapping libxxhash 0.8.4), not
    /// with this crate: `xxhash.xxh3_64_intdigest(bytes)` with the default
    /// seed, where `bytes` is the postcard encoding written out below (and
    /// checked against postcard first, so the encoding is pinned too):
    ///
    /// ```text
    /// python3 -c 'import xxhash; print(hex(xxhash.xxh3_64_intdigest(bytes([0x2a]))))'
    /// ```
    ///
    /// The group is `hash % 128`.
    fn check<K: Serialize + ?Sized>(key: &K, encoding: &[u8], hash: u64, group: u16) {
        assert_eq!(postcard::to_stdvec(key).ok().as_deref(), Some(encoding));
        assert_eq!(key_hash(key).ok(), Some(hash));
        assert_eq!(key_group_of(key, 128).ok(), Some(group));
        assert_eq!(key_group_of_encoded(encoding, 128), group);
    }

    #[derive(Serialize)]
    struct Bid {
        auction: u64,
        bidder: String,
        price: i32,
    }

    #[test]
    fn hashes_match_independently_computed_vectors() {
        // u64 42 is the varint 0x2a.
        check(&42u64, &[0x2a], VECTORS[0].0, VECTORS[0].1);
        // u64 300 is the varint 0xac 0x02.
        check(&300u64, &[0xac, 0x02], VECTORS[1].0, VECTORS[1].1);
        // i64 -1 is zigzag 1, the varint 0x01.
        check(&-1i64, &[0x01], VECTORS[2].0, VECTORS[2].1);
        // A string is its varint length, then its UTF-8 bytes.
        check("user-1", b"\x06user-1", VECTORS[3].0, VECTORS[3].1);
        check(
            &"user-1".to_string(),
            b"\x06user-1",
            VECTORS[3].0,
            VECTORS[3].1,
        );
        // A tuple is its fields in order: u32 7, then "de".
        check(
            &(7u32, "de"),
            &[0x07, 0x02, b'd', b'e'],
            VECTORS[4].0,
            VECTORS[4].1,
        );
        // A struct is its fields in order, without names.
        let bid = Bid {
            auction: 1000,
            bidder: "ann".to_string(),
            price: -5,
        };
        check(
            &bid,
            &[0xe8, 0x07, 0x03, b'a', b'n', b'n', 0x09],
            VECTORS[5].0,
            VECTORS[5].1,
        );
    }

    #[test]
    fn long_keys_hash_like_their_whole_encoding() {
        // 200 'x' bytes overflow the inline buffer, so this exercises the
        // streaming path; the encoding is the varint 200 (0xc8 0x01) + bytes.
        let key = "x".repeat(200);
        let mut encoding = vec![0xc8, 0x01];
        encoding.extend(std::iter::repeat_n(b'x', 200));
        check(key.as_str(), &encoding, VECTORS[6].0, VECTORS[6].1);
    }

    /// `(hash, hash % 128)` per key above, from the Python run described at
    /// [`check`].
    const VECTORS: [(u64, u16); 7] = [
        (0x79d0_3016_b7ae_ed0d, 13),
        (0xa6b4_4aee_d67a_4fdf, 95),
        (0xe12e_f9d2_eb86_ceeb, 107),
        (0xcb47_9532_f0c8_cb5c, 92),
        (0x5129_8a66_6cf7_8ad7, 87),
        (0xbae2_f13c_db25_15fd, 125),
        (0xe429_be6a_3a01_fb1b, 27),
    ];

    #[test]
    fn sequences_of_unknown_length_are_an_error_not_a_panic() {
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                s.serialize_seq(None)?.end()
            }
        }
        let err = key_hash(&Unsized).err();
        assert!(
            matches!(&err, Some(StateError::KeyEncoding { key_type, .. }) if key_type.ends_with("Unsized")),
            "{err:?}"
        );
    }

    #[test]
    fn groups_are_balanced_for_sequential_keys() {
        let mut counts = [0u32; 128];
        for k in 0u64..128_000 {
            let group = key_group_of(&k, 128).ok().map(usize::from);
            counts[group.unwrap_or(usize::MAX)] += 1;
        }
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(min >= Some(&800) && max <= Some(&1200), "{min:?} {max:?}");
    }

    proptest! {
        #[test]
        fn ranges_cover_every_subtask_in_order(groups in 1u16..512, par in 1usize..64) {
            prop_assume!(par <= usize::from(groups));
            let owners: Vec<usize> = (0..groups).map(|g| subtask_for_key_group(g, groups, par)).collect();
            prop_assert!(owners.windows(2).all(|w| w[0] <= w[1]));
            prop_assert_eq!(owners.first().copied(), Some(0));
            prop_assert_eq!(owners.last().copied(), Some(par - 1));
            let mut distinct = owners.clone();
            distinct.dedup();
            prop_assert_eq!(distinct.len(), par);
        }

        #[test]
        fn streaming_and_one_shot_hashes_agree(s in ".{0,300}") {
            let encoding = postcard::to_stdvec(s.as_str()).ok();
            prop_assert_eq!(key_hash(s.as_str()).ok(), encoding.map(|e| xxh3_64(&e)));
        }
    }
}
