use std::any::type_name;

/// Errors of the state layer.
///
/// Non-exhaustive: backends behind Cargo features (`rocksdb`) add variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The same state name was registered twice with different value types.
    /// This is a bug in the job's code (two descriptors share a name).
    #[error("state '{name}' is already registered with another type (asked for {requested})")]
    TypeMismatch {
        /// The state's name.
        name: String,
        /// The type the caller asked for.
        requested: &'static str,
    },
    /// A key, namespace or value could not be encoded or decoded.
    #[error("state '{name}': cannot {action} a {what}: {reason}")]
    Codec {
        /// The state's name.
        name: String,
        /// `encode` or `decode`.
        action: &'static str,
        /// `key` or `value`.
        what: &'static str,
        /// The codec's message.
        reason: String,
    },
    /// A key could not be hashed to its key group because its `Serialize`
    /// impl fails under postcard (e.g. a sequence of unknown length).
    #[error("cannot hash a key of type {key_type} to its key group: {reason}")]
    KeyEncoding {
        /// The key's Rust type.
        key_type: &'static str,
        /// The codec's message.
        reason: String,
    },
    /// RocksDB reported an error (`rocksdb` feature).
    #[cfg(feature = "rocksdb")]
    #[error("RocksDB state backend at {path}: {reason}")]
    RocksDb {
        /// The database directory.
        path: String,
        /// RocksDB's message.
        reason: String,
    },
    /// A state snapshot is malformed (truncated or from another format).
    #[error("state snapshot {path}: {reason}")]
    Snapshot {
        /// The snapshot file or directory.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file-system operation on state files failed.
    #[error("state files at {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl StateError {
    pub(crate) fn type_mismatch<T>(name: &str) -> Self {
        StateError::TypeMismatch {
            name: name.to_string(),
            requested: type_name::<T>(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        StateError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn snapshot(path: &std::path::Path, reason: impl Into<String>) -> Self {
        StateError::Snapshot {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}
