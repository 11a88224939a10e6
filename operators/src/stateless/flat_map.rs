use std::sync::Arc;

use tideline_engine::{Data, Operator, Output, Record, Result};

/// Replaces each record by the records a function returns.
#[derive(Debug)]
pub struct FlatMap<F>(Arc<F>);

impl<F> FlatMap<F> {
    /// A flat map with `f`.
    pub fn new(f: Arc<F>) -> Self {
        Self(f)
    }
}

impl<T, O, I, F> Operator<T, O> for FlatMap<F>
where
    T: Data,
    O: Data,
    I: IntoIterator<Item = O>,
    F: Fn(T) -> I + Send + Sync + 'static,
{
    fn process_batch(&mut self, batch: Vec<Record<T>>, out: &mut Output<O>) -> Result<()> {
        for r in batch {
            let (timestamp, mark) = (r.timestamp, r.lateness_watermark);
            for value in (self.0)(r.value) {
                out.push(Record::new(timestamp, value).with_lateness_watermark(mark));
            }
        }
        Ok(())
    }
}
