//! JSON lines: one object per line, parsed line by line into records.

use std::io::{BufRead, BufReader, Lines};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use tideline_engine::{Data, Error, Record, Result, SourceOutput};

use super::csv::open_file;
use super::{location, Columns, FileRows};

/// How much of a rejected line a dead letter keeps.
const SHOWN: usize = 200;

pub(crate) struct JsonRows<T> {
    path: PathBuf,
    lines: Lines<BufReader<std::fs::File>>,
    line: u64,
    /// `(column, field)` renames to apply to each object.
    renames: Vec<(String, String)>,
    /// `(field, value)` of partition columns, added to each object.
    partition: Vec<(String, serde_json::Value)>,
    _type: PhantomData<fn() -> T>,
}

impl<T: Data + DeserializeOwned> JsonRows<T> {
    pub(crate) fn open(path: &Path, columns: &Columns) -> Result<Self> {
        let renames = columns
            .mapping
            .iter()
            .filter(|(f, c)| f != c)
            .map(|(f, c)| (c.clone(), f.clone()))
            .collect();
        let partition = columns
            .partition_fields()
            .map(|(field, value)| {
                let json = match value.parse::<i64>() {
                    Ok(n) if columns.is_integer(field) => serde_json::Value::from(n),
                    _ => serde_json::Value::from(value),
                };
                (field.to_string(), json)
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            lines: BufReader::new(open_file(path)?).lines(),
            line: 0,
            renames,
            partition,
            _type: PhantomData,
        })
    }

    fn parse(&self, text: &str) -> std::result::Result<T, serde_json::Error> {
        if self.renames.is_empty() && self.partition.is_empty() {
            return serde_json::from_str(text);
        }
        let mut value: serde_json::Value = serde_json::from_str(text)?;
        if let Some(object) = value.as_object_mut() {
            for (column, field) in &self.renames {
                if let Some(v) = object.remove(column) {
                    object.insert(field.clone(), v);
                }
            }
            for (field, v) in &self.partition {
                object.entry(field.clone()).or_insert_with(|| v.clone());
            }
        }
        serde_json::from_value(value)
    }
}

impl<T: Data + DeserializeOwned> FileRows<T> for JsonRows<T> {
    fn read(&mut self, out: &mut SourceOutput<T>) -> Result<bool> {
        while out.remaining() > 0 {
            let Some(next) = self.lines.next() else {
                return Ok(false);
            };
            self.line += 1;
            let text = match next {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    let at = location(&self.path, self.line);
                    out.dead_letter_at(e, at.clone(), at);
                    continue;
                }
                Err(e) => return Err(Error::io("read", &self.path, e)),
            };
            if text.trim().is_empty() {
                continue;
            }
            match self.parse(&text) {
                Ok(value) => out.push(Record::untimed(value)),
                Err(e) => {
                    let shown: String = text.chars().take(SHOWN).collect();
                    let at = location(&self.path, self.line);
                    out.dead_letter_at(e, format!("{at}: {shown}"), at);
                }
            }
        }
        Ok(true)
    }

    fn position(&self) -> u64 {
        self.line
    }

    fn skip(&mut self, rows: u64) -> Result<()> {
        for _ in 0..rows {
            if self.lines.next().is_none() {
                break;
            }
            self.line += 1;
        }
        Ok(())
    }
}
