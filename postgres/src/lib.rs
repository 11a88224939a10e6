//! Tideline's PostgreSQL connectors.
