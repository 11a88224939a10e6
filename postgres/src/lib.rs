//! Tideline's PostgreSQL connectors.
//!
//! - [`PostgresCdcSource`]: log-based change data capture: an initial
//!   snapshot of a set of tables, then their changes from the write-ahead
//!   log through logical replication (`pgoutput`), exactly once with
//!   checkpoints.
//! - [`PostgresQuerySource`]: query-based ("batch") change capture for
//!   tables without logical replication: polls rows changed since a
//!   checkpointed `(updated_at, key)` cursor.
//!
//! Connections take a libpq-style string (`host=... port=... user=...
//! dbname=...` or a `postgresql://` URL). With the `tls` feature,
//! `sslmode=verify-full sslrootcert=PATH` encrypts both the SQL and the
//! replication connection and verifies the server (see `tls.rs`'s docs);
//! modes that encrypt without verifying are refused.
//!
//! Both produce [`Change<T>`](tideline_operators::changelog::Change)
//! records for the changelog operators of
//! [`tideline_operators::changelog`].

pub mod cdc;
mod connect;
pub mod pgoutput;
pub mod query;
pub mod row;
mod tls;
mod words;

pub use cdc::{CdcBound, CdcMetrics, PostgresCdcBuilder, PostgresCdcSource, SnapshotMode};
pub use connect::{execute_batch, query_text};
pub use query::{PostgresQueryBuilder, PostgresQuerySource, QueryMetrics};
