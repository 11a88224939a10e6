use std::sync::Arc;

use tideline_engine::{Data, Operator, Output, Record, Result};

/// Calls a function on each record and passes it on.
#[derive(Debug)]
pub struct Inspect<F>(Arc<F>);

impl<F> Inspect<F> {
    /// An inspector with `f`.
    pub fn new(f: Arc<F>) -> Self {
        Self(f)
    }
}

impl<T: Data, F: Fn(&T) + Send + Sync + 'static> Operator<T, T> for Inspect<F> {
    fn process_batch(&mut self, batch: Vec<Record<T>>, out: &mut Output<T>) -> Result<()> {
        batch.iter().for_each(|r| (self.0)(&r.value));
        out.push_batch(batch);
        Ok(())
    }
}
