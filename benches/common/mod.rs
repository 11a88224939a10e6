//! What several benchmarks share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tideline::prelude::*;
use tideline::Data;

/// Counts records and drops them; clones share the count.
#[derive(Clone, Default)]
pub(crate) struct CountSink(pub(crate) Arc<AtomicU64>);

impl<T: Data> Sink<T> for CountSink {
    fn name(&self) -> &str {
        "count"
    }
    fn write_batch(&mut self, batch: Vec<Record<T>>) -> Result<()> {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
