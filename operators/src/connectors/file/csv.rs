//! CSV with a header row, parsed row by row into records.

use std::fs::File;
use std::io::BufReader;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use csv::{ErrorKind, StringRecord};
use serde::de::DeserializeOwned;
use tideline_engine::{Data, Error, Record, Result, SourceOutput};

use super::{location, Columns, FileRows};

pub(crate) struct CsvRows<T> {
    path: PathBuf,
    reader: csv::Reader<BufReader<File>>,
    /// The header with columns renamed to the fields they fill.
    fields: StringRecord,
    /// Values of partition columns, appended to every row.
    partition: Vec<String>,
    record: StringRecord,
    /// Data rows consumed (good or bad).
    consumed: u64,
    _type: PhantomData<fn() -> T>,
}

/// Opens an input file. A failure is [`Error::Io`], not a configuration
/// error: the file was listed when the job was planned, so the file system
/// (permissions, a concurrent delete) is at fault.
pub(crate) fn open_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::io("open", path, e))
}

impl<T: Data + DeserializeOwned> CsvRows<T> {
    pub(crate) fn open(path: &Path, columns: &Columns) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(BufReader::new(open_file(path)?));
        let header = reader
            .headers()
            .map_err(|e| {
                Error::config(
                    "file_source.input",
                    format!("cannot read the header of {}: {e}", path.display()),
                )
            })?
            .clone();
        if header.is_empty() {
            return Err(Error::config(
                "file_source.input",
                format!("{} is empty: a CSV file needs a header row", path.display()),
            ));
        }
        let available: Vec<String> = header.iter().map(str::to_string).collect();
        columns.check_present(path, &available)?;
        let mut fields: StringRecord = header
            .iter()
            .map(|c| columns.record_name(c))
            .collect::<Vec<_>>()
            .iter()
            .map(|c| c.as_ref())
            .collect();
        let mut partition = Vec::new();
        for (field, value) in columns.partition_fields() {
            // A column the file has wins over its folder name.
            if fields.iter().any(|f| f == field) {
                continue;
            }
            fields.push_field(field);
            partition.push(value.to_string());
        }
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            fields,
            partition,
            record: StringRecord::new(),
            consumed: 0,
            _type: PhantomData,
        })
    }
}

impl<T: Data + DeserializeOwned> FileRows<T> for CsvRows<T> {
    fn read(&mut self, out: &mut SourceOutput<T>) -> Result<bool> {
        while out.remaining() > 0 {
            match self.reader.read_record(&mut self.record) {
                Ok(false) => return Ok(false),
                Ok(true) => {
                    self.consumed += 1;
                    let line = self.record.position().map_or(0, csv::Position::line);
                    for value in &self.partition {
                        self.record.push_field(value);
                    }
                    match self.record.deserialize::<T>(Some(&self.fields)) {
                        Ok(value) => out.push(Record::untimed(value)),
                        Err(e) => {
                            let at = location(&self.path, line);
                            let row = self.record.iter().collect::<Vec<_>>().join(",");
                            out.dead_letter_at(e, format!("{at}: {row}"), at);
                        }
                    }
                }
                Err(e) => {
                    let line = e.position().map_or(0, csv::Position::line);
                    if let ErrorKind::Io(io) = e.kind() {
                        return Err(Error::user(format!(
                            "reading {}: {io}",
                            self.path.display()
                        )));
                    }
                    // A malformed row (wrong field count, bad UTF-8): reject it and go on.
                    self.consumed += 1;
                    let at = location(&self.path, line);
                    out.dead_letter_at(&e, at.clone(), at);
                }
            }
        }
        Ok(true)
    }

    fn position(&self) -> u64 {
        self.consumed
    }

    fn skip(&mut self, rows: u64) -> Result<()> {
        for _ in 0..rows {
            match self.reader.read_record(&mut self.record) {
                Ok(false) => break,
                Ok(true) => self.consumed += 1,
                Err(e) => {
                    if let ErrorKind::Io(io) = e.kind() {
                        return Err(Error::user(format!(
                            "reading {}: {io}",
                            self.path.display()
                        )));
                    }
                    self.consumed += 1;
                }
            }
        }
        Ok(())
    }
}
