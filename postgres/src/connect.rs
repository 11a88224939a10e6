//! Connection settings: one libpq-style string (`host=... port=... user=...
//! dbname=...` or a `postgresql://` URL) for both the SQL connection
//! (tokio-postgres) and the replication connection (pgwire-replication).

use std::str::FromStr;
use std::time::Duration;

use tideline_engine::{Error, Result};
use tokio_postgres::config::Host;

use crate::pgoutput::Column;

/// Parsed connection settings.
#[derive(Clone)]
pub(crate) struct ConnectionSettings {
    pub(crate) sql: tokio_postgres::Config,
    /// TLS (`sslmode=verify-full`): the CA certificates to verify against.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    root_certificates: Option<std::path::PathBuf>,
    host: String,
    port: u16,
    user: String,
    password: String,
    dbname: String,
}

impl std::fmt::Debug for ConnectionSettings {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.system())
    }
}

impl ConnectionSettings {
    /// Parses `text`; `field` names the setting in errors.
    pub(crate) fn parse(text: &str, field: &str) -> Result<Self> {
        let (text, tls) = crate::tls::split_tls_options(text, field)?;
        let sql = tokio_postgres::Config::from_str(&text).map_err(|e| {
            Error::config(field, format!("not a PostgreSQL connection string: {e}"))
        })?;
        let host = match sql.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_string(),
        };
        let port = sql.get_ports().first().copied().unwrap_or(5432);
        let user = sql
            .get_user()
            .ok_or_else(|| Error::config(field, "names no user (user=...)"))?
            .to_string();
        let password = match sql.get_password() {
            Some(bytes) => String::from_utf8(bytes.to_vec())
                .map_err(|_| Error::config(field, "the password is not UTF-8"))?,
            None => String::new(),
        };
        let dbname = sql.get_dbname().unwrap_or(&user).to_string();
        let mut sql = sql;
        sql.connect_timeout(Duration::from_secs(10));
        if tls.root_certificates.is_some() {
            sql.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        Ok(Self {
            sql,
            root_certificates: tls.root_certificates,
            host,
            port,
            user,
            password,
            dbname,
        })
    }

    /// `PostgreSQL at host:port/db` for errors.
    pub(crate) fn system(&self) -> String {
        format!("PostgreSQL at {}:{}/{}", self.host, self.port, self.dbname)
    }

    /// Settings of a replication session on `slot`, streaming `publication`.
    pub(crate) fn replication(
        &self,
        slot: &str,
        publication: &str,
    ) -> pgwire_replication::ReplicationConfig {
        let config = pgwire_replication::ReplicationConfig::new(
            self.host.clone(),
            self.user.clone(),
            self.password.clone(),
            self.dbname.clone(),
            slot,
            publication,
        )
        .with_port(self.port)
        .with_application_name("tideline-cdc")
        .with_status_interval(Duration::from_secs(1))
        .with_wakeup_interval(Duration::from_secs(1));
        #[cfg(feature = "tls")]
        let config = match &self.root_certificates {
            Some(path) => config.with_tls(pgwire_replication::TlsConfig::verify_full(Some(
                path.clone(),
            ))),
            None => config,
        };
        // The connection string's `options` (e.g. `-c wal_sender_timeout=10s`)
        // apply to the replication session too.
        match self.sql.get_options() {
            Some(options) => config.with_options(options),
            None => config,
        }
    }

    /// Opens a SQL connection, its driver spawned on the current runtime.
    pub(crate) async fn connect(&self) -> Result<tokio_postgres::Client> {
        #[cfg(feature = "tls")]
        if let Some(path) = &self.root_certificates {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(crate::tls::client_config(
                path,
                "connection.sslrootcert",
            )?);
            let (client, connection) = self
                .sql
                .connect(tls)
                .await
                // The handshake's reason (an unknown issuer, a name that
                // does not match) is in the error's sources.
                .map_err(|e| Error::external(self.system(), "connect (TLS)", with_sources(&e)))?;
            tokio::spawn(async move {
                // The client's next call reports a broken connection.
                let _ = connection.await;
            });
            return Ok(client);
        }
        let (client, connection) = self
            .sql
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| Error::external(self.system(), "connect", e))?;
        tokio::spawn(async move {
            // The client's next call reports a broken connection.
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// `error` and its sources, `: `-separated.
#[cfg(feature = "tls")]
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `name` as an SQL identifier, quoted.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as an SQL string literal.
pub(crate) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A table name given as `schema.name` or `name` (in `public`), split.
pub(crate) fn split_table(name: &str, field: &str) -> Result<(String, String)> {
    let (schema, table) = match name.split_once('.') {
        Some((schema, table)) => (schema, table),
        None => ("public", name),
    };
    if schema.is_empty() || table.is_empty() || table.contains('.') {
        return Err(Error::config(
            field,
            format!("{name:?} is not a table name (`schema.table` or `table`)"),
        ));
    }
    Ok((schema.to_string(), table.to_string()))
}

/// Runs a batch of SQL statements (separated by `;`) on the database
/// `connection` names, blocking: for setup in examples, tests and tools,
/// not for jobs' hot paths.
///
/// # Errors
/// When the connection string does not parse, the server cannot be
/// reached, or a statement fails.
pub fn execute_batch(connection: &str, sql: &str) -> Result<()> {
    let settings = ConnectionSettings::parse(connection, "connection")?;
    block_on(async {
        let client = settings.connect().await?;
        client
            .batch_execute(sql)
            .await
            .map_err(|e| Error::external(settings.system(), "run a SQL batch", e))
    })
}

/// Runs `sql` and returns the first column of its first row as text
/// (`None` for no row or `NULL`), blocking; see [`execute_batch`].
///
/// # Errors
/// As [`execute_batch`].
pub fn query_text(connection: &str, sql: &str) -> Result<Option<String>> {
    let settings = ConnectionSettings::parse(connection, "connection")?;
    block_on(async {
        let client = settings.connect().await?;
        let messages = client
            .simple_query(sql)
            .await
            .map_err(|e| Error::external(settings.system(), "run a query", e))?;
        Ok(messages
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some(row.get(0).map(str::to_string))
                }
                _ => None,
            })
            .flatten())
    })
}

fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    runtime()?.block_on(future)
}

/// A current-thread runtime, for a connector thread of its own.
///
/// # Errors
/// When the runtime cannot start (the process is out of threads or file
/// descriptors).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start a tokio runtime: {e}")))
}

/// `schema.table`, each part quoted, for SQL.
pub(crate) fn quoted_table(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// Now, in microseconds since the Unix epoch.
pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A column of a table, as the catalog (`pg_attribute`) describes it.
#[derive(Clone, Debug)]
pub(crate) struct CatalogColumn {
    /// Name, type and type modifier (`key` is false: the catalog's answer
    /// says nothing about replica identity).
    pub(crate) column: Column,
    /// The type's SQL name, without modifiers (`format_type(oid, NULL)`):
    /// `bigint`, `timestamp with time zone`.
    pub(crate) type_name: String,
    /// Whether the column is `NOT NULL`.
    pub(crate) not_null: bool,
}

/// The columns of `schema.table` in table order, dropped ones left out.
///
/// # Errors
/// When the table does not exist or the catalog cannot be read.
pub(crate) async fn table_columns(
    sql: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> std::result::Result<Vec<CatalogColumn>, tokio_postgres::Error> {
    let qualified = quoted_table(schema, table);
    let rows = sql
        .query(
            "SELECT attname::text, atttypid::oid, atttypmod, format_type(atttypid, NULL), \
             attnotnull FROM pg_attribute \
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped \
             ORDER BY attnum",
            &[&qualified],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(CatalogColumn {
                column: Column {
                    key: false,
                    name: row.try_get(0)?,
                    type_oid: row.try_get(1)?,
                    type_mod: row.try_get(2)?,
                },
                type_name: row.try_get(3)?,
                not_null: row.try_get(4)?,
            })
        })
        .collect()
}

#[cfg(test)]
// Tests fail by panicking, on the value that was wrong.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn key_value_and_url_forms_parse() {
        let kv = ConnectionSettings::parse(
            "host=127.0.0.1 port=15432 user=postgres dbname=tideline",
            "c",
        )
        .unwrap();
        assert_eq!(kv.system(), "PostgreSQL at 127.0.0.1:15432/tideline");
        let url = ConnectionSettings::parse("postgresql://bob:pw@db:5433/shop", "c").unwrap();
        assert_eq!(url.system(), "PostgreSQL at db:5433/shop");
        assert_eq!(url.password, "pw");
        assert!(!format!("{url:?}").contains("pw"));
        let err = ConnectionSettings::parse("host=x", "source.connection").unwrap_err();
        assert!(err.to_string().contains("source.connection"), "{err}");
    }

    #[test]
    fn names_are_split_and_quoted() {
        assert_eq!(
            split_table("orders", "t").unwrap(),
            ("public".into(), "orders".into())
        );
        assert_eq!(
            split_table("shop.orders", "t").unwrap(),
            ("shop".into(), "orders".into())
        );
        assert!(split_table("a.b.c", "t").is_err());
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
