//! The HTTP endpoint of a running job: `/metrics` in the OpenMetrics
//! format with counters that increase, the health probes through the job's
//! life, `/api/job` matching the job's graph, the token, and refused
//! addresses.

mod common;

use std::time::Duration;

use common::{get, running_job, sample, wait_for};
use tideline_engine::Result;
use tideline_web::{WebUi, WebUiOptions};

const PATIENCE: Duration = Duration::from_secs(30);

fn ui_for(job: &tideline_engine::Job) -> Result<WebUi> {
    WebUiOptions::new("127.0.0.1:0")
        .sample_interval(Duration::from_millis(100))
        .start(job.metrics())
}

#[test]
fn metrics_health_and_the_job_api_of_a_running_job() -> Result<()> {
    let (job, results, late) = running_job(50_000.0)?;
    let metrics = job.metrics();
    let ui = ui_for(&job)?;
    let address = ui.local_addr();
    assert!(address.ip().is_loopback());

    let ready = get(address, "/readyz", &[]).map_err(io)?;
    assert_eq!((ready.status, ready.body.as_str()), (503, "created\n"));

    let handle = job.spawn()?;
    let series = r#"tideline_operator_records_in_total{operator="count",subtask="0"}"#;
    let first = wait_for("window records counted", PATIENCE, || {
        let text = get(address, "/metrics", &[]).ok()?.body;
        sample(&text, series)
            .filter(|v| *v > 0.0)
            .map(|v| (v, text))
    });
    let (first_count, text) = first;
    // Names, types, units and labels.
    for line in [
        "# TYPE tideline_operator_records_in counter",
        "# TYPE tideline_operator_watermark_lag_seconds gauge",
        "# UNIT tideline_operator_watermark_lag_seconds seconds",
        "# TYPE tideline_job_status gauge",
        r#"tideline_job_status{status="running"} 1"#,
        r#"tideline_job_status{status="failed"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
    for prefix in [
        r#"tideline_operator_records_out_total{operator="events",subtask="1"}"#,
        r#"tideline_operator_records_in_total{operator="parse",subtask="1"}"#,
        r#"tideline_operator_watermark_milliseconds{operator="count",subtask="1"}"#,
        r#"tideline_operator_backpressure_ratio{operator="events",subtask="0"}"#,
        r#"tideline_operator_input_queue_fill_ratio{operator="count",subtask="0"}"#,
        r#"tideline_operator_state_entries{operator="count",subtask="0"}"#,
        r#"tideline_source_partition_position{source="events",partition="1"}"#,
        r#"tideline_job_uptime_seconds"#,
        r#"tideline_checkpoints_completed_total"#,
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(prefix)),
            "no series {prefix} in:\n{text}"
        );
    }
    let content_type = get(address, "/metrics", &[]).map_err(io)?.headers;
    assert!(
        content_type.contains("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.ends_with("# EOF\n"));
    let forged = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.starts_with("tideline_"));
    assert_eq!(forged, None, "every line is a comment or a tideline series");

    // Counters increase while the job runs; dead letters and late records
    // show with their reasons.
    // The reason's quotes and newline are escaped in the label value.
    let dead = r#"tideline_dead_letters_total{operator="parse",reason="unparsable \"event\" <x-injected>for</x-injected> key 3\nsee the schema"}"#;
    wait_for(
        "counters to increase, dead letters and late records",
        PATIENCE,
        || {
            let text = get(address, "/metrics", &[]).ok()?.body;
            let now = sample(&text, series)?;
            let late = sample(&text, "tideline_late_records_total")?;
            (now > first_count && sample(&text, dead)? >= 1.0 && late >= 1.0).then_some(())
        },
    );

    let health = get(address, "/healthz", &[]).map_err(io)?;
    assert_eq!((health.status, health.body.as_str()), (200, "running\n"));
    let ready = get(address, "/readyz", &[]).map_err(io)?;
    assert_eq!((ready.status, ready.body.as_str()), (200, "running\n"));

    // /api/job is the job's graph.
    let api: serde_json::Value =
        serde_json::from_str(&get(address, "/api/job", &[]).map_err(io)?.body).map_err(json)?;
    let graph = serde_json::to_value(metrics.graph()).map_err(json)?;
    assert_eq!(api["operators"], graph["operators"]);
    assert_eq!(api["edges"], graph["edges"]);
    assert_eq!(api["status"], "running");
    let names: Vec<&str> = api["operators"]
        .as_array()
        .map(|ops| ops.iter().filter_map(|o| o["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        [
            "events",
            "parse",
            "window_combine",
            "count",
            "value",
            "collect",
            "collect#2"
        ]
    );
    let keyed: Vec<(u64, u64)> = api["edges"]
        .as_array()
        .map(|edges| {
            edges
                .iter()
                .filter(|e| e["kind"] == "keyed")
                .filter_map(|e| Some((e["from"].as_u64()?, e["to"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        keyed,
        [(2, 3)],
        "parse → window_combine (counts folded) → count through key_by"
    );

    // The live view has rates and the latest dead letters.
    let live: serde_json::Value =
        serde_json::from_str(&get(address, "/api/metrics", &[]).map_err(io)?.body).map_err(json)?;
    assert!(
        live["throughput"].as_f64().is_some_and(|t| t > 0.0),
        "{live}"
    );
    assert!(live["recent_dead_letters"][0]["reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("unparsable \"event\" <x-injected>for</x-injected> key")));
    let checkpoints = get(address, "/api/checkpoints", &[]).map_err(io)?;
    assert_eq!(checkpoints.status, 200);
    assert!(
        checkpoints.body.contains("\"completed\":0"),
        "{}",
        checkpoints.body
    );

    common::drain(handle)?;
    let ready = get(address, "/readyz", &[]).map_err(io)?;
    assert_eq!((ready.status, ready.body.as_str()), (503, "finished\n"));
    let health = get(address, "/healthz", &[]).map_err(io)?;
    assert_eq!(health.status, 200);
    // Conservation over the whole run, as the metrics count it.
    let s = metrics.snapshot();
    let read = s.records_read();
    let counted: u64 = results.values().iter().sum();
    assert_eq!(counted + s.late_records + s.dead_letters, read);
    assert_eq!(late.values().len() as u64, s.late_records);
    drop(ui);
    assert!(
        get(address, "/healthz", &[]).is_err(),
        "the server stopped with its WebUi"
    );
    Ok(())
}

#[test]
fn a_token_guards_everything_but_the_probes() -> Result<()> {
    let (job, _, _) = running_job(1_000.0)?;
    let ui = WebUiOptions::new("127.0.0.1:0")
        .token("s3cret")
        .start(job.metrics())?;
    let address = ui.local_addr();
    for path in ["/", "/metrics", "/api/job", "/api/metrics"] {
        assert_eq!(get(address, path, &[]).map_err(io)?.status, 401, "{path}");
        let wrong = get(address, path, &["Authorization: Bearer nope"]).map_err(io)?;
        assert_eq!(wrong.status, 401, "{path}");
        let right = get(address, path, &["Authorization: Bearer s3cret"]).map_err(io)?;
        assert_eq!(right.status, 200, "{path}");
    }
    // The page opened with ?token= sets a cookie its own requests carry.
    let page = get(address, "/?token=s3cret", &[]).map_err(io)?;
    assert_eq!(page.status, 200);
    assert!(
        page.headers.contains("tideline_token=s3cret"),
        "{}",
        page.headers
    );
    let with_cookie = get(address, "/api/job", &["Cookie: tideline_token=s3cret"]).map_err(io)?;
    assert_eq!(with_cookie.status, 200);
    assert_eq!(get(address, "/healthz", &[]).map_err(io)?.status, 200);
    assert_eq!(get(address, "/readyz", &[]).map_err(io)?.status, 503);
    Ok(())
}

#[test]
fn addresses_that_are_not_loopback_or_taken_are_refused() -> Result<()> {
    let (job, _, _) = running_job(1_000.0)?;
    let remote = WebUiOptions::new("0.0.0.0:0").start(job.metrics());
    let message = refusal(remote);
    assert!(message.contains("not a loopback address"), "{message}");
    let bad = WebUiOptions::new("localhost").start(job.metrics());
    let message = refusal(bad);
    assert!(message.contains("is not host:port"), "{message}");
    let first = WebUi::start("127.0.0.1:0", job.metrics())?;
    let taken = WebUi::start(&first.local_addr().to_string(), job.metrics());
    let message = refusal(taken);
    assert!(message.contains("bind"), "{message}");
    assert!(
        message.contains(&first.local_addr().to_string()),
        "{message}"
    );
    // Binding elsewhere is an explicit choice.
    let remote = WebUiOptions::new("0.0.0.0:0")
        .allow_remote(true)
        .token("t")
        .start(job.metrics())?;
    assert!(remote.local_addr().ip().is_unspecified());
    Ok(())
}

/// The error a start that must fail returned.
fn refusal(started: Result<WebUi>) -> String {
    match started {
        Ok(ui) => panic!("{} should have been refused", ui.local_addr()),
        Err(e) => e.to_string(),
    }
}

fn io(e: std::io::Error) -> tideline_engine::Error {
    tideline_engine::Error::Internal(format!("HTTP request failed: {e}"))
}

fn json(e: serde_json::Error) -> tideline_engine::Error {
    tideline_engine::Error::Internal(format!("bad JSON: {e}"))
}

#[test]
fn without_a_token_only_direct_host_names_are_served() -> Result<()> {
    let (job, _, _) = running_job(1_000.0)?;
    let ui = WebUi::start("127.0.0.1:0", job.metrics())?;
    let address = ui.local_addr();
    let port = address.port();
    // A page that rebound its own name to 127.0.0.1 sends that name.
    let rebound = get_with_host(address, "/api/job", "Host: attacker.example:8081").map_err(io)?;
    assert_eq!(rebound.status, 421, "{}", rebound.body);
    for host in [
        format!("Host: localhost:{port}"),
        format!("Host: 127.0.0.1:{port}"),
        format!("Host: [::1]:{port}"),
    ] {
        let direct = get_with_host(address, "/api/job", &host).map_err(io)?;
        assert_eq!(direct.status, 200, "{host}");
    }
    let page = get(address, "/", &[]).map_err(io)?;
    let headers = page.headers.to_ascii_lowercase();
    assert!(
        headers.contains("content-security-policy: default-src 'self'"),
        "{headers}"
    );
    assert!(
        headers.contains("x-content-type-options: nosniff"),
        "{headers}"
    );
    Ok(())
}

#[test]
fn tokens_that_cannot_travel_in_a_cookie_are_refused() -> Result<()> {
    let (job, _, _) = running_job(1_000.0)?;
    for token in ["", "a;b", "with space", "quote\""] {
        let refused = WebUiOptions::new("127.0.0.1:0")
            .token(token)
            .start(job.metrics());
        assert!(refusal(refused).contains("web_ui.token"), "{token:?}");
    }
    let short = WebUiOptions::new("127.0.0.1:0")
        .sample_interval(Duration::from_nanos(1))
        .start(job.metrics());
    assert!(refusal(short).contains("sample_interval"));
    Ok(())
}

/// `GET path` with exactly the Host header line `host`.
fn get_with_host(
    address: std::net::SocketAddr,
    path: &str,
    host: &str,
) -> std::io::Result<common::Response> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\n{host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(common::Response {
        status,
        headers: raw.clone(),
        body: raw,
    })
}
