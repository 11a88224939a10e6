//! Tideline's PostgreSQL connectors.

mod connect;
pub mod pgoutput;
pub mod row;
