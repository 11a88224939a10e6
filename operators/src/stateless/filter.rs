use std::sync::Arc;

use tideline_engine::{Data, Operator, Output, Record, Result};

/// Keeps the records a predicate accepts.
#[derive(Debug)]
pub struct Filter<F>(Arc<F>);

impl<F> Filter<F> {
    /// A filter with `f`.
    pub fn new(f: Arc<F>) -> Self {
        Self(f)
    }
}

impl<T: Data, F: Fn(&T) -> bool + Send + Sync + 'static> Operator<T, T> for Filter<F> {
    fn process_batch(&mut self, mut batch: Vec<Record<T>>, out: &mut Output<T>) -> Result<()> {
        let f = &*self.0;
        batch.retain(|r| f(&r.value));
        out.push_batch(batch);
        Ok(())
    }
}
