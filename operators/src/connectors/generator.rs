use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::{partition_len, RateLimit};
use tideline_engine::{
    Data, Error, ReaderContext, Record, Result, Source, SourceOffset, SourceOutput, SourceReader,
    SourceStatus,
};

/// A deterministic generator: record `i` of partition `p` is
/// `f(index, rng)` where `index = p + i * partitions` (so the indices of all
/// partitions together are `0, 1, 2, ...`) and `rng` is a `SmallRng` seeded
/// from `(seed, p)`. The same seed, count and partitions give the same records.
///
/// ```
/// use tideline_operators::connectors::{GeneratorSource, Rng, SmallRng};
/// let clicks = GeneratorSource::new(|i: u64, rng: &mut SmallRng| (i % 10, rng.gen_range(0..100u32)))
///     .with_count(1_000)
///     .with_partitions(2)
///     .with_seed(7);
/// # let _ = clicks;
/// ```
pub struct GeneratorSource<F> {
    f: Arc<F>,
    count: Option<u64>,
    partitions: usize,
    seed: u64,
    rate: Option<f64>,
}

impl<F> std::fmt::Debug for GeneratorSource<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratorSource")
            .field("count", &self.count)
            .field("partitions", &self.partitions)
            .field("seed", &self.seed)
            .field("rate", &self.rate)
            .finish()
    }
}

impl<F> GeneratorSource<F> {
    /// An unbounded generator with one partition, seed 0, at full speed.
    pub fn new(f: F) -> Self {
        Self {
            f: Arc::new(f),
            count: None,
            partitions: 1,
            seed: 0,
            rate: None,
        }
    }

    /// Ends after `count` records in total.
    pub fn with_count(mut self, count: u64) -> Self {
        self.count = Some(count);
        self
    }

    /// Generates in `n` partitions.
    pub fn with_partitions(mut self, n: usize) -> Self {
        self.partitions = n;
        self
    }

    /// Seeds the random generators.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Paces generation to `records_per_second` in total, by the job's clock.
    pub fn with_rate(mut self, records_per_second: f64) -> Self {
        self.rate = Some(records_per_second);
        self
    }
}

impl<T, F> Source<T> for GeneratorSource<F>
where
    T: Data,
    F: Fn(u64, &mut SmallRng) -> T + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        "generator"
    }

    fn partitions(&self) -> usize {
        self.partitions
    }

    fn is_bounded(&self) -> bool {
        self.count.is_some()
    }

    fn create_reader_at(
        &self,
        partition: usize,
        ctx: &ReaderContext,
        offset: &SourceOffset,
    ) -> Result<Box<dyn SourceReader<T>>> {
        let produced = match offset.0.as_slice() {
            [produced] => *produced,
            _ => {
                return Err(Error::config(
                    "generator.offset",
                    format!("{offset:?} is not a generator offset"),
                ))
            }
        };
        let mut reader = self.reader(partition, ctx, produced)?;
        // The random sequence is replayed to the same point.
        for _ in 0..produced {
            let _ = (reader.f)(reader.next_index, &mut reader.rng);
            reader.next_index += reader.stride;
        }
        reader.produced = produced;
        Ok(Box::new(reader))
    }

    fn create_reader(
        &self,
        partition: usize,
        ctx: &ReaderContext,
    ) -> Result<Box<dyn SourceReader<T>>> {
        Ok(Box::new(self.reader(partition, ctx, 0)?))
    }
}

impl<F> GeneratorSource<F> {
    fn reader(
        &self,
        partition: usize,
        ctx: &ReaderContext,
        produced: u64,
    ) -> Result<GeneratorReader<F>> {
        let pacing = self
            .rate
            .map(|rate| {
                RateLimit::new(
                    "generator.rate",
                    rate,
                    self.partitions,
                    Arc::clone(&ctx.clock),
                    produced,
                )
            })
            .transpose()?;
        let stride = self.partitions as u64;
        let first = partition as u64;
        Ok(GeneratorReader {
            f: Arc::clone(&self.f),
            rng: SmallRng::seed_from_u64(self.seed ^ (first.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
            next_index: first,
            stride,
            produced: 0,
            limit: self
                .count
                .map(|c| partition_len(c, partition, self.partitions)),
            pacing,
        })
    }
}

struct GeneratorReader<F> {
    f: Arc<F>,
    rng: SmallRng,
    next_index: u64,
    stride: u64,
    produced: u64,
    limit: Option<u64>,
    pacing: Option<RateLimit>,
}

impl<T, F> SourceReader<T> for GeneratorReader<F>
where
    T: Data,
    F: Fn(u64, &mut SmallRng) -> T + Send + Sync + 'static,
{
    fn poll(&mut self, out: &mut SourceOutput<T>) -> Result<SourceStatus> {
        let mut budget = out.remaining() as u64;
        if let Some(limit) = self.limit {
            budget = budget.min(limit - self.produced);
        }
        if let Some(pacing) = &mut self.pacing {
            budget = budget.min(pacing.allowed(self.produced));
        }
        for _ in 0..budget {
            let value = (self.f)(self.next_index, &mut self.rng);
            out.push(Record::untimed(value));
            self.next_index += self.stride;
        }
        self.produced += budget;
        Ok(match self.limit {
            Some(limit) if self.produced >= limit => SourceStatus::Finished,
            _ if budget == 0 => SourceStatus::Pending,
            _ => SourceStatus::Ready,
        })
    }

    fn offset(&self) -> Option<SourceOffset> {
        Some(SourceOffset(vec![self.produced]))
    }

    fn progress(&self) -> Option<tideline_engine::PartitionProgress> {
        Some(tideline_engine::PartitionProgress {
            position: self.produced,
            lag: self.limit.map(|l| l.saturating_sub(self.produced)),
            bounded: self.limit.is_some(),
        })
    }
}
