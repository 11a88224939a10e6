//! Stateless operators, chained into the task of their input: no channel hop,
//! one call per batch. [`StreamExt`] adds them to every [`Stream`].

mod filter;
mod flat_map;
mod inspect;
mod map;
mod try_map;

use std::fmt::{Debug, Display};
use std::sync::Arc;

use tideline_engine::{Data, Stream};

pub use filter::Filter;
pub use flat_map::FlatMap;
pub use inspect::Inspect;
pub use map::Map;
pub use try_map::TryMap;

/// Stateless transformations of a stream.
pub trait StreamExt<T: Data> {
    /// Applies `f` to every record (timestamps are kept).
    ///
    /// ```
    /// use tideline_operators::prelude::*;
    /// let job = Job::new();
    /// let out = CollectSink::new();
    /// job.source(VecSource::new(vec![1, 2, 3]), WatermarkStrategy::none())
    ///     .map(|x: i32| x * 10)
    ///     .sink(out.clone());
    /// job.run()?;
    /// assert_eq!(out.values(), vec![10, 20, 30]);
    /// # Ok::<(), tideline_engine::Error>(())
    /// ```
    fn map<O: Data, F: Fn(T) -> O + Send + Sync + 'static>(&self, f: F) -> Stream<O>;

    /// Keeps the records for which `f` is true.
    fn filter<F: Fn(&T) -> bool + Send + Sync + 'static>(&self, f: F) -> Stream<T>;

    /// Replaces every record by zero or more records (same timestamp).
    fn flat_map<O, I, F>(&self, f: F) -> Stream<O>
    where
        O: Data,
        I: IntoIterator<Item = O>,
        F: Fn(T) -> I + Send + Sync + 'static;

    /// Calls `f` on every record and passes it on unchanged.
    fn inspect<F: Fn(&T) + Send + Sync + 'static>(&self, f: F) -> Stream<T>;

    /// Applies a fallible `f`; a record for which it fails goes to the
    /// dead-letter output with the error (or stops the job under
    /// `FailurePolicy::FailFast`). Read them with `.dead_letters()` on the
    /// returned stream.
    fn try_map<O, E, F>(&self, f: F) -> Stream<O>
    where
        T: Debug,
        O: Data,
        E: Display,
        F: Fn(&T) -> Result<O, E> + Send + Sync + 'static;
}

impl<T: Data> StreamExt<T> for Stream<T> {
    fn map<O: Data, F: Fn(T) -> O + Send + Sync + 'static>(&self, f: F) -> Stream<O> {
        let f = Arc::new(f);
        self.transform("map", move |_| Ok(Map::new(Arc::clone(&f))))
    }

    fn filter<F: Fn(&T) -> bool + Send + Sync + 'static>(&self, f: F) -> Stream<T> {
        let f = Arc::new(f);
        self.transform("filter", move |_| Ok(Filter::new(Arc::clone(&f))))
    }

    fn flat_map<O, I, F>(&self, f: F) -> Stream<O>
    where
        O: Data,
        I: IntoIterator<Item = O>,
        F: Fn(T) -> I + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.transform("flat_map", move |_| Ok(FlatMap::new(Arc::clone(&f))))
    }

    fn inspect<F: Fn(&T) + Send + Sync + 'static>(&self, f: F) -> Stream<T> {
        let f = Arc::new(f);
        self.transform("inspect", move |_| Ok(Inspect::new(Arc::clone(&f))))
    }

    fn try_map<O, E, F>(&self, f: F) -> Stream<O>
    where
        T: Debug,
        O: Data,
        E: Display,
        F: Fn(&T) -> Result<O, E> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.transform("try_map", move |_| Ok(TryMap::new(Arc::clone(&f))))
    }
}
