//! What the PostgreSQL tests share: where the cluster is (the one
//! `scripts/test.sh` starts with `scripts/postgres.sh`, its connection string
//! in `TIDELINE_POSTGRES_URL`), SQL through `psql` to set up tables, and
//! unique names for tables, slots and publications. Without a cluster a test
//! says so and passes, unless `CI` is set: then it fails, loudly.
//!
//! Standard library only: it works before the crate under test connects.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `scripts/postgres.sh`'s cluster on its default port, in the libpq
/// key=value form it prints (and tokio-postgres accepts).
pub(crate) const DEFAULT_URL: &str = "host=127.0.0.1 port=15432 user=postgres dbname=tideline";

/// The cluster's connection string, or `None` (after saying why) when no
/// server answers and `CI` is not set. Without `TIDELINE_POSTGRES_URL` it
/// tries [`DEFAULT_URL`] (a cluster started by hand); with `CI` set a missing
/// variable or a server that does not answer is a panic.
pub(crate) fn postgres_url() -> Option<String> {
    let ci = std::env::var_os("CI").is_some();
    let url = match std::env::var("TIDELINE_POSTGRES_URL") {
        Ok(u) if !u.trim().is_empty() => u,
        _ if ci => panic!(
            "CI is set but TIDELINE_POSTGRES_URL is not: the PostgreSQL tests need the cluster \
             scripts/test.sh starts (scripts/postgres.sh)"
        ),
        _ => DEFAULT_URL.to_string(),
    };
    if reachable(&url) {
        return Some(url);
    }
    if ci {
        panic!("CI is set but no PostgreSQL server answers at '{url}'");
    }
    eprintln!(
        "no PostgreSQL server at '{url}': test not run (scripts/test.sh starts one; \
         by hand: scripts/postgres.sh start)"
    );
    None
}

/// Whether something listens where `url` points: a TCP connection, or the
/// socket file of a Unix-socket host.
fn reachable(url: &str) -> bool {
    let (host, port) = host_port(url);
    if host.starts_with('/') {
        return Path::new(&host).join(format!(".s.PGSQL.{port}")).exists();
    }
    (host.as_str(), port)
        .to_socket_addrs()
        .is_ok_and(|mut addrs| {
            addrs.any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
        })
}

/// The (first) host and port of a connection string, key=value
/// (`host=127.0.0.1 port=15432 ...`) or URL (`postgresql://u@h:p/db`); libpq's
/// defaults (localhost, 5432) for what it does not say.
fn host_port(url: &str) -> (String, u16) {
    let mut host = "localhost".to_string();
    let mut port = "5432".to_string();
    let url = url.trim();
    if let Some(rest) = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
    {
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let first = hosts.split(',').next().unwrap_or_default();
        let (h, p) = match first.strip_prefix('[') {
            // [IPv6]:port
            Some(v6) => match v6.split_once(']') {
                Some((h, p)) => (h, p.strip_prefix(':').unwrap_or_default()),
                None => (v6, ""),
            },
            None => first.split_once(':').unwrap_or((first, "")),
        };
        if !h.is_empty() {
            host = h.to_string();
        }
        if !p.is_empty() {
            port = p.to_string();
        }
    } else {
        for pair in url.split_whitespace() {
            if let Some((key, value)) = pair.split_once('=') {
                let value = value.trim_matches('\'');
                let first = value.split(',').next().unwrap_or_default().to_string();
                match key {
                    "host" | "hostaddr" if !first.is_empty() => host = first,
                    "port" if !first.is_empty() => port = first,
                    _ => {}
                }
            }
        }
    }
    (host, port.parse().unwrap_or(5432))
}

/// The `psql` binary: the first on `PATH`, else the newest
/// `/usr/lib/postgresql/*/bin/psql` (Debian's, which `scripts/setup.sh`
/// installs).
fn psql_binary() -> &'static Path {
    static PSQL: OnceLock<PathBuf> = OnceLock::new();
    PSQL.get_or_init(|| {
        let on_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("psql"))
                .find(|p| p.is_file())
        });
        if let Some(p) = on_path {
            return p;
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                let psql = entry.path().join("bin/psql");
                psql.is_file().then_some((version, psql))
            })
            .collect();
        versions.sort();
        match versions.pop() {
            Some((_, p)) => p,
            None => panic!(
                "no psql on PATH nor in /usr/lib/postgresql/*/bin (scripts/setup.sh installs \
                 Debian's postgresql package)"
            ),
        }
    })
}

/// Runs the SQL batch `sql` (any number of statements, each in its own
/// transaction unless it says `BEGIN`) against `url` with `psql -X -q -v
/// ON_ERROR_STOP=1 -At` and returns its standard output: the rows of the
/// queries, one a line, columns separated by `|`. Panics with psql's
/// standard error when a statement fails.
pub(crate) fn psql(url: &str, sql: &str) -> String {
    let psql = psql_binary();
    let mut child = Command::new(psql)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"])
        .args(["-d", url, "-f", "-"])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", psql.display()));
    // Written from another thread: psql's output could fill its pipe while
    // a long batch is still being written.
    let writer = child.stdin.take().map(|mut stdin| {
        let sql = sql.to_string();
        std::thread::spawn(move || stdin.write_all(sql.as_bytes()))
    });
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {}: {e}", psql.display()));
    let written = writer.map(|w| w.join());
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let shown: String = sql.chars().take(2000).collect();
        let cut = if shown.len() < sql.len() { "\n..." } else { "" };
        panic!(
            "psql against '{url}' failed ({}) on:\n{shown}{cut}\n--- psql's stderr:\n{stderr}",
            output.status
        );
    }
    match written {
        Some(Ok(Ok(()))) | None => {}
        Some(Ok(Err(e))) => panic!("writing the SQL to psql: {e}\n--- psql's stderr:\n{stderr}"),
        Some(Err(_)) => panic!("the thread writing the SQL to psql panicked"),
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A transaction left open in a `psql` session of its own, to be committed
/// later (see [`begin`]). Dropped without [`OpenTransaction::commit`], its
/// session reads the end of its input and rolls back.
pub(crate) struct OpenTransaction {
    child: Child,
}

/// Starts a `psql` session against `url`, runs `BEGIN` and `sql` (which must
/// write) in it, and returns once `sql` has run, with the transaction still
/// open: its session shows in `pg_stat_activity` as idle in a transaction
/// that holds a transaction id.
pub(crate) fn begin(url: &str, sql: &str) -> OpenTransaction {
    let binary = psql_binary();
    let name = unique_name("open_tx");
    let mut child = Command::new(binary)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"])
        .args(["-d", url, "-f", "-"])
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGAPPNAME", &name)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    if let Some(stdin) = child.stdin.as_mut() {
        stdin
            .write_all(format!("BEGIN;\n{sql}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to psql: {e}"));
    }
    let open = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{name}' \
         AND state = 'idle in transaction' AND backend_xid IS NOT NULL"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while psql(url, &open).trim() != "1" {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
            }
            panic!("psql ended ({status}) before its transaction was open:\n{sql}\n{stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "timed out opening a transaction for:\n{sql}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    OpenTransaction { child }
}

impl OpenTransaction {
    /// Commits the transaction and waits for its session to end.
    pub(crate) fn commit(self) {
        let mut child = self.child;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(b"COMMIT;\n")
                .unwrap_or_else(|e| panic!("writing to psql: {e}"));
        }
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for psql: {e}"));
        assert!(
            output.status.success(),
            "the commit failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A name no other test (or earlier run) uses, valid unquoted as a table,
/// publication or replication slot name: `prefix` lowercased (other
/// characters than `a-z`, `0-9` and `_` become `_`), then the process id, a
/// counter and the time's nanoseconds, at most 63 bytes.
pub(crate) fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000);
    let suffix = format!(
        "_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut name: String = prefix
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect();
    // An identifier starts with a letter or an underscore.
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        name.insert(0, 't');
    }
    // NAMEDATALEN is 64: longer names are cut (identifiers) or refused (slots).
    name.truncate(63usize.saturating_sub(suffix.len()));
    name + &suffix
}
