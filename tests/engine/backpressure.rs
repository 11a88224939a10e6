//! Backpressure: a fast unbounded source feeding a slow consumer stays within
//! the channel and batch bounds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tideline::prelude::*;

#[test]
fn queued_records_never_exceed_channel_capacity_times_batch_size() -> Result<()> {
    const BATCH: usize = 64;
    const CAPACITY: usize = 4;
    let produced = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&produced);
    let job = Job::new().batch_size(BATCH).channel_capacity(CAPACITY);
    // A rendezvous channel: the job can hand over a record only when the test takes it.
    let (tx, rx) = crossbeam_channel::bounded(0);
    job.source(
        GeneratorSource::new(move |i: u64, _: &mut SmallRng| {
            counter.fetch_add(1, Ordering::SeqCst);
            i
        }),
        WatermarkStrategy::none(),
    )
    .key_by(|i| *i % 16)
    .partitioned()
    .map(|i| i * 2)
    .sink(ChannelSink::new(tx));
    let handle = job.spawn()?;

    // In flight at most: the batch the source is generating, the exchange
    // buffer, CAPACITY batches in the channel, and the batch the sink task holds.
    let bound = ((CAPACITY + 3) * BATCH) as u64;
    let mut received = 0u64;
    let mut max_in_flight = 0;
    while received < 200_000 {
        rx.recv()
            .map_err(|_| Error::Internal("job ended early".into()))?;
        received += 1;
        let in_flight = produced.load(Ordering::SeqCst) - received;
        max_in_flight = max_in_flight.max(in_flight);
        assert!(
            in_flight <= bound,
            "{in_flight} records in flight, bound {bound}"
        );
    }
    handle.stop_and_drain();
    // Drain until the job has finished and dropped its sinks.
    let drained = rx.iter().count() as u64;
    let summary = handle.join()?;
    let generated = produced.load(Ordering::SeqCst);
    assert_eq!(
        received + drained,
        generated,
        "every generated record reached the sink"
    );
    assert_eq!(
        summary.operator("channel").map(|o| o.records_in),
        Some(generated)
    );
    assert!(max_in_flight > 0);
    Ok(())
}
