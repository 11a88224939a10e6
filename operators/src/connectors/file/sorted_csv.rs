//! [`sort_committed_csv`]: the committed CSV parts of an exactly-once sink
//! merged into one file in a fixed order, without turning rows into records.
//!
//! A replay that must write the same file whatever the parallelism (and
//! however its subtasks interleaved) sorts what it committed. Doing that
//! through records parses every field, sorts wide values and formats every
//! field again; here the sort columns are parsed, the rows are sorted as
//! small entries pointing into the files' bytes (two halves on two
//! threads, merged as they are written), and each row is written back as
//! the sink wrote it.
//!
//! # Invariants
//! - The output is a function of the multiset of committed rows: rows are
//!   ordered by the sort columns as integers, in the order given, then
//!   field by field, then by their bytes (a total order), so no order the
//!   parts happened to have survives.
//! - The output is written to `<output>.tmp` and renamed, so a crashed
//!   process never leaves a half-written file under the output's name. It
//!   is not synced: the parts are the durable copy, and sorting them again
//!   rewrites it.
//! - Every part must start with the expected header; a part with another
//!   header, or a sort column that is not a 64-bit integer, fails with the
//!   file and row named (the parts are the job's, not user input, so this
//!   is corruption or a mismatched directory, never skipped).

use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::ops::Range;
use std::path::Path;

use tideline_engine::{Error, Result};

use super::exactly_once::{committed_files, rename};
use super::sink::create;

/// Below this many bytes of parts one thread sorts: a second costs more
/// than it saves.
const PARALLEL_SORT_BYTES: usize = 1 << 20;

/// One row: its sort columns and where its bytes are (newline excluded).
struct Row<const N: usize> {
    key: [i64; N],
    start: usize,
    end: usize,
}

impl<const N: usize> Row<N> {
    fn bytes<'a>(&self, all: &'a [u8]) -> &'a [u8] {
        &all[self.start..self.end]
    }
}

/// Merges the committed CSV part files in `dir` (see [`committed_files`])
/// into one CSV file at `output`: `header`, then every row of every part,
/// ordered by the integer columns `sort_columns` (0-based, compared in that
/// order), then by the whole row: field by field, integers by value (and
/// before other text), other text by its bytes. Rows keep the bytes the
/// sink wrote. Returns how many rows were written.
///
/// Only the sort columns are parsed for every row, so name few: the
/// leading ones of the order you want (the rest is the tie-break).
///
/// The parts must be the CSV a sink of this crate writes: one header row,
/// one line per row, fields without quotes, commas or line breaks inside
/// (numbers, plain words; a row with a `"` is refused, not guessed at). `header` is what each part's first row must be, and what
/// an output with no parts holds.
///
/// ```no_run
/// use tideline_operators::connectors::file::sort_committed_csv;
/// // The committed windows of a replay, by key, then start, then count.
/// let rows = sort_committed_csv("out.csv.parts", "out.csv", &["key", "start", "count"], [0, 1])?;
/// # Ok::<(), tideline_engine::Error>(())
/// ```
///
/// # Errors
/// A part that cannot be read or has another header or a non-integer sort
/// column (with the file and row), a sort column past the header's, or an
/// output that cannot be written.
pub fn sort_committed_csv<const N: usize>(
    dir: impl AsRef<Path>,
    output: impl AsRef<Path>,
    header: &[&str],
    sort_columns: [usize; N],
) -> Result<u64> {
    let output = output.as_ref();
    if let Some(&column) = sort_columns.iter().find(|&&c| c >= header.len()) {
        return Err(Error::config(
            "sort_committed_csv.sort_columns",
            format!(
                "column {column} is past the header's {} columns",
                header.len()
            ),
        ));
    }
    let header_line = header.join(",");
    let mut bytes = Vec::new();
    let mut parts = Vec::new();
    for path in committed_files(dir)? {
        if path.extension().and_then(|e| e.to_str()) != Some("csv") {
            return Err(Error::user(format!(
                "cannot sort {}: not a CSV part",
                path.display()
            )));
        }
        let begin = bytes.len();
        File::open(&path)
            .and_then(|mut f| {
                let size = f.metadata()?.len();
                bytes.reserve(usize::try_from(size).unwrap_or(0).saturating_add(1));
                f.read_to_end(&mut bytes)
            })
            .map_err(|e| Error::io("read", &path, e))?;
        // So no line runs from one part into the next.
        if bytes.len() > begin && bytes.last() != Some(&b'\n') {
            bytes.push(b'\n');
        }
        if let Some(body) = part_body(&path, &bytes, begin, &header_line)? {
            parts.push(Part { path, body });
        }
    }
    let order = |a: &Row<N>, b: &Row<N>| -> Ordering {
        a.key
            .cmp(&b.key)
            .then_with(|| compare_rows(a.bytes(&bytes), b.bytes(&bytes)))
            .then_with(|| a.bytes(&bytes).cmp(b.bytes(&bytes)))
    };
    // Two halves of the rows, each indexed and sorted on a thread of its own.
    let (low, high) = halves(&bytes, &parts);
    let sorted_half = |half: &[(usize, Range<usize>)]| -> Result<Vec<Row<N>>> {
        let mut rows = Vec::new();
        for (part, span) in half {
            index_rows(&parts[*part], &bytes, span.clone(), sort_columns, &mut rows)?;
        }
        rows.sort_unstable_by(order);
        Ok(rows)
    };
    let (first, second) = if bytes.len() >= PARALLEL_SORT_BYTES {
        std::thread::scope(|scope| {
            let second = scope.spawn(|| sorted_half(&high));
            let first = sorted_half(&low);
            let second = second
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("a sorting thread panicked".into())));
            (first, second)
        })
    } else {
        (sorted_half(&low), sorted_half(&high))
    };
    let (first, second) = (first?, second?);

    let tmp = output.with_file_name(format!(
        "{}.tmp",
        output
            .file_name()
            .map_or_else(|| "output".into(), |n| n.to_string_lossy())
    ));
    let failed = |e: std::io::Error| Error::io("write", &tmp, e);
    let mut out = BufWriter::with_capacity(1 << 20, create(&tmp)?);
    writeln!(out, "{header_line}").map_err(failed)?;
    let (mut a, mut b) = (first.iter().peekable(), second.iter().peekable());
    loop {
        let row = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if order(x, y) == Ordering::Greater => b.next(),
            (Some(_), _) => a.next(),
            (None, _) => b.next(),
        };
        let Some(row) = row else { break };
        out.write_all(row.bytes(&bytes)).map_err(failed)?;
        out.write_all(b"\n").map_err(failed)?;
    }
    out.flush().map_err(failed)?;
    drop(out);
    rename(&tmp, output)?;
    Ok((first.len() + second.len()) as u64)
}

/// A part's rows: where they are in the bytes of all parts.
struct Part {
    path: std::path::PathBuf,
    body: Range<usize>,
}

/// Checks the header of the part at `bytes[begin..]`: the range of its
/// rows, `None` for an empty part.
fn part_body(
    path: &Path,
    bytes: &[u8],
    begin: usize,
    header: &str,
) -> Result<Option<Range<usize>>> {
    match line_ranges(bytes, begin).next() {
        // An empty part (nothing committed in its interval) has no header.
        None => Ok(None),
        Some(first) if &bytes[first.clone()] == header.as_bytes() => {
            let after = memchr::memchr(b'\n', &bytes[first.end..])
                .map_or(bytes.len(), |n| first.end + n + 1);
            Ok(Some(after..bytes.len()))
        }
        Some(first) => Err(Error::user(format!(
            "cannot sort {}: its header is '{}', expected '{header}'",
            path.display(),
            String::from_utf8_lossy(&bytes[first])
        ))),
    }
}

/// The parts' rows cut in two at a line end near the middle of their
/// bytes: `(part, byte range)` pieces for each half.
#[allow(clippy::type_complexity)]
fn halves(
    bytes: &[u8],
    parts: &[Part],
) -> (Vec<(usize, Range<usize>)>, Vec<(usize, Range<usize>)>) {
    let middle = bytes.len() / 2;
    let (mut low, mut high) = (Vec::new(), Vec::new());
    for (i, part) in parts.iter().enumerate() {
        let Range { start, end } = part.body.clone();
        if end <= middle {
            low.push((i, start..end));
        } else if start >= middle {
            high.push((i, start..end));
        } else {
            // Parts end with a line end, so one is found before `end`.
            let cut = memchr::memchr(b'\n', &bytes[middle..end]).map_or(end, |n| middle + n + 1);
            low.push((i, start..cut));
            high.push((i, cut..end));
        }
    }
    (low, high)
}

/// Adds the rows in `span` (whole lines of `part`'s body) to `rows`.
fn index_rows<const N: usize>(
    part: &Part,
    bytes: &[u8],
    span: Range<usize>,
    sort_columns: [usize; N],
    rows: &mut Vec<Row<N>>,
) -> Result<()> {
    let text = &bytes[..span.end];
    // Counted only when reporting: the header is row 1.
    let row_of = |line: &Range<usize>| {
        2 + memchr::memchr_iter(b'\n', &bytes[part.body.start..line.start]).count()
    };
    for line in line_ranges(text, span.start) {
        // A quoted field may hold commas and line breaks, which the
        // splitting here would take for field and row ends.
        if memchr::memchr(b'"', &bytes[line.clone()]).is_some() {
            return Err(Error::user(format!(
                "cannot sort {}: row {} has a quoted field (only unquoted fields are sorted: \
                 read these parts with read_committed)",
                part.path.display(),
                row_of(&line)
            )));
        }
        let Some(key) = sort_key(&bytes[line.clone()], &sort_columns) else {
            return Err(Error::user(format!(
                "cannot sort {}: row {} has no 64-bit integer in one of the columns {sort_columns:?}",
                part.path.display(),
                row_of(&line)
            )));
        };
        rows.push(Row {
            key,
            start: line.start,
            end: line.end,
        });
    }
    Ok(())
}

/// The integers in `columns` of one row, or `None` if one is missing or
/// not an integer.
fn sort_key<const N: usize>(row: &[u8], columns: &[usize; N]) -> Option<[i64; N]> {
    let mut key = [0; N];
    let mut found = 0;
    for (index, field) in row.split(|&b| b == b',').enumerate() {
        for (slot, _) in columns.iter().enumerate().filter(|(_, &c)| c == index) {
            key[slot] = integer(field)?;
            found += 1;
        }
        if found == N {
            return Some(key);
        }
    }
    None
}

/// A field as a 64-bit integer: optional `-`, then digits only. (Bytes,
/// not text: std's `i64::from_ascii` is unstable, and `str::parse` would
/// need a UTF-8 check of every field first.)
fn integer(field: &[u8]) -> Option<i64> {
    let (negative, digits) = match field.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, field),
    };
    if digits.is_empty() {
        return None;
    }
    // Accumulated negatively, so i64::MIN parses too.
    let mut value: i64 = 0;
    for &b in digits {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_sub(i64::from(digit))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// Whole rows compared field by field: integers numerically and before any
/// other text, other text by its bytes, a row that runs out first first.
/// (Comparing integers and text by bytes when they meet would not be a
/// total order: `9 < 10` by value, `10 < 1a < 9` by bytes.)
fn compare_rows(a: &[u8], b: &[u8]) -> Ordering {
    let (mut a, mut b) = (a.split(|&c| c == b','), b.split(|&c| c == b','));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (integer(x), integer(y)) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// The lines of `bytes[begin..]`, without their `\n` (or `\r\n`); empty
/// lines (a trailing newline's) are left out.
fn line_ranges(bytes: &[u8], begin: usize) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut at = begin;
    std::iter::from_fn(move || {
        while at < bytes.len() {
            let start = at;
            let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |n| start + n);
            at = end + 1;
            let trimmed = if end > start && bytes[end - 1] == b'\r' {
                end - 1
            } else {
                end
            };
            if trimmed > start {
                return Some(start..trimmed);
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary directory with an empty `parts` folder in it.
    fn parts_dir() -> Result<(tempfile::TempDir, std::path::PathBuf)> {
        let dir = tempfile::tempdir().map_err(|e| Error::user(e.to_string()))?;
        let parts = dir.path().join("parts");
        std::fs::create_dir(&parts).map_err(|e| Error::io("create", &parts, e))?;
        Ok((dir, parts))
    }

    fn write_part(dir: &Path, name: &str, text: &str) -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Error::io("write", &path, e))
    }

    fn read(path: &Path) -> Result<String> {
        std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))
    }

    /// The error's text; an `Ok` is a test failure.
    fn error_text(result: Result<u64>) -> String {
        match result {
            Ok(rows) => format!("unexpectedly sorted {rows} rows"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn merges_parts_by_integer_columns_then_text() -> Result<()> {
        let (dir, parts) = parts_dir()?;
        // Numeric order, not text order: 10 after 9, -1 first.
        write_part(&parts, "part-0000000001-0000.csv", "k,t,v\n10,5,a\n9,5,b\n")?;
        write_part(
            &parts,
            "part-0000000001-0001.csv",
            "k,t,v\r\n-1,7,c\r\n9,5,a\r\n",
        )?;
        // Not committed: never read.
        write_part(&parts, ".part-0000000002-0000.csv.tmp", "k,t,v\n0,0,z\n")?;
        let out = dir.path().join("out.csv");
        let n = sort_committed_csv(&parts, &out, &["k", "t", "v"], [0, 1])?;
        assert_eq!(n, 4);
        assert_eq!(read(&out)?, "k,t,v\n-1,7,c\n9,5,a\n9,5,b\n10,5,a\n");
        Ok(())
    }

    #[test]
    fn ties_compare_whole_rows_integers_by_value_before_text() -> Result<()> {
        let (dir, parts) = parts_dir()?;
        write_part(
            &parts,
            "part-0000000001-0000.csv",
            "k,v,w\n1,x,0\n1,10,0\n1,9,1\n1,9,0\n0,z,0\n",
        )?;
        let out = dir.path().join("out.csv");
        sort_committed_csv(&parts, &out, &["k", "v", "w"], [0])?;
        assert_eq!(read(&out)?, "k,v,w\n0,z,0\n1,9,0\n1,9,1\n1,10,0\n1,x,0\n");
        Ok(())
    }

    #[test]
    fn integers_parse_to_the_edges_of_i64() {
        assert_eq!(integer(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(integer(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(integer(b"9223372036854775808"), None);
        assert_eq!(integer(b"007"), Some(7));
        for bad in [&b""[..], b"-", b"1.5", b" 1", b"+1", b"\"1\""] {
            assert_eq!(integer(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn large_inputs_sort_on_two_threads_to_the_same_order() -> Result<()> {
        let (dir, parts) = parts_dir()?;
        let rows = 200_003;
        let mut text = String::from("a,b\n");
        let mut expected = Vec::new();
        for i in 0..rows {
            // A permutation of 0..rows (the multiplier is prime to it).
            let a = (i * 7919) % rows;
            text.push_str(&format!("{a},{}\n", i % 3));
            expected.push(a.to_string());
        }
        write_part(&parts, "part-0000000001-0000.csv", &text)?;
        let out = dir.path().join("out.csv");
        sort_committed_csv(&parts, &out, &["a", "b"], [0])?;
        expected.sort_unstable_by_key(|a| a.parse::<usize>().unwrap_or(usize::MAX));
        let written = read(&out)?;
        let firsts: Vec<&str> = written
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap_or_default())
            .collect();
        assert_eq!(firsts, expected);
        Ok(())
    }

    #[test]
    fn no_parts_writes_the_header() -> Result<()> {
        let (dir, parts) = parts_dir()?;
        let out = dir.path().join("out.csv");
        assert_eq!(sort_committed_csv(&parts, &out, &["a"], [0])?, 0);
        assert_eq!(read(&out)?, "a\n");
        Ok(())
    }

    #[test]
    fn a_wrong_header_or_a_non_integer_names_the_file_and_row() -> Result<()> {
        let (dir, parts) = parts_dir()?;
        write_part(&parts, "part-0000000001-0000.csv", "a,b\n1,x\n")?;
        let out = dir.path().join("out.csv");
        let err = error_text(sort_committed_csv(&parts, &out, &["a", "b"], [1]));
        assert!(
            err.contains("part-0000000001-0000.csv") && err.contains("row 2"),
            "{err}"
        );
        let err = error_text(sort_committed_csv(&parts, &out, &["a", "c"], [0]));
        assert!(err.contains("its header is 'a,b', expected 'a,c'"), "{err}");
        let err = error_text(sort_committed_csv(&parts, &out, &["a", "b"], [2]));
        assert!(err.contains("past the header"), "{err}");
        write_part(&parts, "part-0000000002-0000.csv", "a,b\n1,\"x, y\"\n")?;
        let err = error_text(sort_committed_csv(&parts, &out, &["a", "b"], [0]));
        assert!(
            err.contains("part-0000000002-0000.csv") && err.contains("row 2 has a quoted field"),
            "{err}"
        );
        assert!(!out.exists());
        Ok(())
    }
}
