//! Text in the `u64` words of a [`SourceOffset`](tideline_engine::SourceOffset):
//! its byte length, then its bytes, eight to a word, big-endian, the last
//! word padded with zeros.

/// Appends `text` to `words`.
pub(crate) fn pack_text(text: &str, words: &mut Vec<u64>) {
    let bytes = text.as_bytes();
    words.push(bytes.len() as u64);
    words.extend(bytes.chunks(8).map(|chunk| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        u64::from_be_bytes(word)
    }));
}

/// Reads what [`pack_text`] wrote at the front of `words`: the text and
/// the words after it; `None` when the words are too few or not UTF-8.
pub(crate) fn unpack_text(words: &[u64]) -> Option<(String, &[u64])> {
    let (&len, rest) = words.split_first()?;
    let len = usize::try_from(len).ok()?;
    let count = len.div_ceil(8);
    if rest.len() < count {
        return None;
    }
    let mut bytes: Vec<u8> = rest[..count].iter().flat_map(|w| w.to_be_bytes()).collect();
    bytes.truncate(len);
    Some((String::from_utf8(bytes).ok()?, &rest[count..]))
}

#[cfg(test)]
// Tests fail by panicking, on the value that was wrong.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_short_words_are_refused() {
        for text in ["", "a", "exactly8", "naïve, over eight bytes"] {
            let mut words = vec![7];
            pack_text(text, &mut words);
            words.push(9);
            let (back, rest) = unpack_text(&words[1..]).unwrap();
            assert_eq!((back.as_str(), rest), (text, &[9][..]));
        }
        assert_eq!(unpack_text(&[9, 0]), None);
        assert_eq!(unpack_text(&[]), None);
    }
}
