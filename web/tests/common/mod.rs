//! What the web UI tests share: a running job with late data and dead
//! letters, a plain HTTP client, and waiting for a condition.

#![allow(dead_code)]

pub(crate) mod cdp;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tideline_engine::time::{Clock, SystemClock};
use tideline_engine::{Job, JobHandle, Result};
use tideline_operators::connectors::SmallRng;
use tideline_operators::prelude::*;
use tideline_operators::window::{Count, Span, Tumbling, WindowExt, WindowResult};

/// `(key, event time ms, ok)`: every 500th record cannot be parsed, every
/// 700th is 5 s behind (late for its window).
pub(crate) type Event = (u32, i64, bool);

/// A streaming job (parallelism 2): a generator over 2 partitions paced
/// at `rate` records/s in all →
/// `parse` (dead letters) → key_by → 100 ms tumbling count with a late
/// side output → two sinks. Runs until stopped.
pub(crate) fn running_job(rate: f64) -> Result<(Job, CollectSink<u64>, CollectSink<Event>)> {
    let job = Job::new().parallelism(2);
    let late_tag = OutputTag::<Event>::new("late");
    // Event time keeps pace with the wall clock, so watermark lags look
    // like a live job's.
    let start = SystemClock.now_millis();
    let per_ms = (rate / 1_000.0).max(1.0);
    let events = job.source(
        GeneratorSource::new(move |i: u64, _: &mut SmallRng| {
            let ts = start + (i as f64 / per_ms) as i64;
            let ts = if i % 700 == 699 { ts - 5_000 } else { ts };
            ((i % 16) as u32, ts, i % 500 != 499)
        })
        .with_partitions(2)
        .with_rate(rate),
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(50))
            .with_timestamps(|e: &Event| e.1),
    );
    let windowed = events
        .named("events")
        .try_map(|e: &Event| {
            if e.2 {
                Ok(*e)
            } else {
                // Quotes, markup and a newline: free text as serde writes it.
                Err(format!(
                    "unparsable \"event\" <x-injected>for</x-injected> key {}\nsee the schema",
                    e.0
                ))
            }
        })
        .named("parse")
        .key_by(|e: &Event| e.0)
        .window(Tumbling::of(Span::millis(100)))
        .side_output_late_data(&late_tag);
    let counts = windowed.aggregate(Count).named("count");
    let results = CollectSink::new();
    let late = CollectSink::new();
    counts
        .map(|w: WindowResult<u32, u64>| w.value)
        .named("value")
        .sink(results.clone());
    counts.side_output(&late_tag).sink(late.clone());
    Ok((job, results, late))
}

/// Stops `handle` with a drain and waits for the end.
pub(crate) fn drain(handle: JobHandle) -> Result<()> {
    handle.stop_and_drain();
    handle.join().map(|_| ())
}

/// An HTTP response.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: String,
    pub(crate) body: String,
}

/// `GET path` on `address` with extra header lines.
pub(crate) fn get(address: SocketAddr, path: &str, headers: &[&str]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Response {
        status,
        headers: head.to_string(),
        body,
    })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Calls `check` until it returns `Some` or `timeout` passes (then panics
/// with `what`): waiting for a running job to reach a state, not a sleep
/// that hopes it did.
pub(crate) fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the series `name{labels}` in an OpenMetrics text.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
