use std::fmt::Debug;
use std::io::Write;

use tideline_engine::{Error, Record, Result, Sink};

/// Prints each record as `prefix timestamp value` on stdout.
#[derive(Clone, Debug, Default)]
pub struct PrintSink {
    prefix: String,
}

impl PrintSink {
    /// A printer whose lines start with `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }
}

impl<T: Debug + Send + 'static> Sink<T> for PrintSink {
    fn name(&self) -> &str {
        "print"
    }

    fn write_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let space = if self.prefix.is_empty() { "" } else { " " };
        for r in batch {
            writeln!(out, "{}{space}{} {:?}", self.prefix, r.timestamp, r.value)
                .map_err(Error::user)?;
        }
        Ok(())
    }
}
