mod backpressure;
mod exchanges;
mod failures;
mod parallelism;
mod sources;
mod timers;
mod validation;
mod watermarks;
