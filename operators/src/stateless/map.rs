use std::sync::Arc;

use tideline_engine::{Data, Operator, Output, Record, Result};

/// Applies a function to every record.
#[derive(Debug)]
pub struct Map<F>(Arc<F>);

impl<F> Map<F> {
    /// A map with `f`.
    pub fn new(f: Arc<F>) -> Self {
        Self(f)
    }
}

impl<I: Data, O: Data, F: Fn(I) -> O + Send + Sync + 'static> Operator<I, O> for Map<F> {
    fn process_batch(&mut self, batch: Vec<Record<I>>, out: &mut Output<O>) -> Result<()> {
        let f = &*self.0;
        // Collecting reuses the input allocation when I and O have the same layout.
        out.push_batch(batch.into_iter().map(|r| r.map(f)).collect());
        Ok(())
    }
}
