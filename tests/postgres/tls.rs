//! `sslmode=verify-full` against the test cluster, which serves a
//! certificate for `localhost` signed by a throwaway CA
//! (`scripts/postgres.sh`; `TIDELINE_POSTGRES_CA` names the CA file).

use std::time::Duration;

use tideline::operators::changelog::Change;
use tideline::postgres::PostgresCdcSource;
use tideline::prelude::*;

use super::cdc::{create_orders, drop_slot, Order};
use super::{marker_lsn, postgres_url, psql, wait_for};

/// The test CA, or `None` (after saying why) without one, unless `CI` is
/// set: then a panic.
fn test_ca() -> Option<String> {
    let path = std::env::var("TIDELINE_POSTGRES_CA")
        .unwrap_or_else(|_| "/tmp/tideline-postgres-15432/ca.pem".to_string());
    if std::path::Path::new(&path).exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but the test cluster's CA {path} is missing (scripts/postgres.sh makes it)"
    );
    eprintln!("no test CA at {path}: TLS test not run");
    None
}

/// The connection string over TLS: `localhost` (the name in the
/// certificate), verified against `ca`.
fn tls_url(url: &str, ca: &str) -> String {
    format!(
        "{} sslmode=verify-full sslrootcert='{ca}'",
        url.replace("host=127.0.0.1", "host=localhost")
    )
}

fn run(url: &str, table: &str, slot: &str, write: impl FnOnce()) -> Result<Vec<Change<Order>>> {
    let source = PostgresCdcSource::builder(url, slot)
        .table(table)
        .bounded()
        .build::<Order>()?;
    let (bound, metrics) = (source.bound(), source.metrics());
    let job = Job::new();
    let changes = CollectSink::new();
    job.source(source, WatermarkStrategy::none())
        .sink(changes.clone());
    let running = job.spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !metrics.snapshot_done() && !running.is_finished() {
        assert!(std::time::Instant::now() < deadline, "no snapshot");
        std::thread::sleep(Duration::from_millis(20));
    }
    if metrics.snapshot_done() {
        write();
        bound.set(marker_lsn(url));
    }
    running.join()?;
    Ok(changes.values())
}

#[test]
fn both_connections_verify_the_server_and_encrypt() {
    let (Some(url), Some(ca)) = (postgres_url(), test_ca()) else {
        return;
    };
    let (table, slot) = create_orders(&url, 10);
    let tls = tls_url(&url, &ca);
    let changes = run(&tls, &table, &slot, || {
        psql(
            &url,
            &format!("INSERT INTO {table} SELECT g, 'new', g FROM generate_series(11, 15) g;"),
        );
        // The job's replication session is encrypted.
        let ssl = psql(
            &url,
            &format!(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_replication_slots r ON s.pid = r.active_pid \
                 WHERE r.slot_name = '{slot}'"
            ),
        );
        assert_eq!(ssl.trim(), "t", "the replication session uses TLS");
    })
    .expect("the job over TLS");
    assert_eq!(changes.len(), 15);
    wait_for("the slot to be released", || {
        psql(
            &url,
            &format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        )
        .trim()
            != "t"
    });
    drop_slot(&url, &slot);
}

#[test]
fn a_server_whose_certificate_the_ca_did_not_sign_is_refused() {
    let (Some(url), Some(_)) = (postgres_url(), test_ca()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let other_ca = dir.path().join("other-ca.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=another CA", "-keyout"])
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "openssl: {made:?}");
    let (table, slot) = create_orders(&url, 1);
    let err = run(
        &tls_url(&url, &other_ca.display().to_string()),
        &table,
        &slot,
        || {},
    )
    .expect_err("an unverified server is refused");
    let text = format!("{err}");
    assert!(
        text.contains("certificate") || text.contains("Certificate"),
        "the error says why: {text}"
    );
}
