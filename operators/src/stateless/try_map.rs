use std::fmt::{Debug, Display};
use std::sync::Arc;

use tideline_engine::{Data, Operator, Output, Record, Result};

/// Applies a fallible function; failures become dead letters.
#[derive(Debug)]
pub struct TryMap<F>(Arc<F>);

impl<F> TryMap<F> {
    /// A fallible map with `f`.
    pub fn new(f: Arc<F>) -> Self {
        Self(f)
    }
}

impl<I, O, E, F> Operator<I, O> for TryMap<F>
where
    I: Data + Debug,
    O: Data,
    E: Display,
    F: Fn(&I) -> Result<O, E> + Send + Sync + 'static,
{
    fn process_batch(&mut self, batch: Vec<Record<I>>, out: &mut Output<O>) -> Result<()> {
        for r in batch {
            match (self.0)(&r.value) {
                Ok(v) => out.push(r.map(|_| v)),
                Err(e) => out.dead_letter(r.timestamp, e, &r.value)?,
            }
        }
        Ok(())
    }
}
