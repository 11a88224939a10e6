//! The engine's one error type.
//!
//! Variants say who is at fault ([`Error::domain`]): the job's configuration or
//! code (`User`), an external system (`External`), or Tideline itself
//! (`Internal`, a bug). The rules, so that a supervisor can decide whether to
//! retry (External), page the job's owner (User) or report a bug (Internal):
//!
//! - a failed file-system call anywhere (sinks, readers, checkpoint storage,
//!   state snapshots) is [`Error::Io`], External; it keeps the
//!   [`std::io::Error`], so its [`kind`](std::io::Error::kind) can be matched
//!   (see [`Error::io_kind`]) rather than parsed from a message;
//! - a checkpoint that is missing, truncated or altered is
//!   [`Error::Checkpoint`], External;
//! - [`Error::State`] is classified by the state error's own cause: a
//!   malformed snapshot, a file-system failure and a RocksDB failure are
//!   External; a state name bound to two types, and a key or value of the
//!   job's types that cannot be encoded or decoded (its serde impl fails, or
//!   the type changed since the checkpoint) are User;
//! - a connector's external system (a Kafka broker, a database) failing a
//!   request is [`Error::External`], External;
//! - configuration, graph and user-code errors (including panics) are User;
//! - [`Error::Cancelled`] (never a root cause) and [`Error::Internal`] are
//!   Internal.

use std::fmt;
use std::path::{Path, PathBuf};

use tideline_state::StateError;

/// A boxed error from user code or a connector.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result type of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who is at fault for an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorDomain {
    /// The job's configuration, graph or code.
    User,
    /// An external system (file, network, sink target).
    External,
    /// A bug in Tideline.
    Internal,
}

/// Errors raised while building or running a job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range; `field` names it.
    #[error("invalid configuration `{field}`: {reason}")]
    Config {
        /// The offending field, e.g. `parallelism` or `source 'clicks'.partitions`.
        field: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The job graph has no sink, so running it would compute nothing.
    #[error("the job has no sink: add `.sink(...)` to at least one stream")]
    NoSink,
    /// An operator's output is never consumed.
    #[error("the stream produced by operator '{operator}' is never consumed: give it a sink or remove it")]
    DanglingStream {
        /// The operator whose output nobody reads.
        operator: String,
    },
    /// A `Bounded` job was given an unbounded source.
    #[error("execution mode is Bounded but source '{source_name}' is unbounded")]
    UnboundedSource {
        /// The source's name.
        source_name: String,
    },
    /// User code or a connector reported an error.
    #[error(transparent)]
    User(BoxError),
    /// User code or an operator panicked.
    #[error("panicked: {message}")]
    Panic {
        /// The panic payload, if it was a string.
        message: String,
    },
    /// Keyed state failed.
    #[error(transparent)]
    State(#[from] tideline_state::StateError),
    /// An error inside a named operator.
    #[error("operator '{operator}' failed: {source}")]
    Operator {
        /// The operator's name.
        operator: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
    /// A checkpoint could not be written or read: missing, truncated or
    /// altered files, or a file-system error.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file or directory concerned.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The job was aborted through its [`StopHandle`](crate::StopHandle).
    #[error("the job was aborted (StopHandle::abort); nothing after its last completed checkpoint was committed")]
    Aborted,
    /// A file-system call failed. External: the disk, permissions or
    /// another process are at fault, not the job's code.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `create`, `write`, `read`.
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error; its `kind()` says why.
        #[source]
        source: std::io::Error,
    },
    /// An external system a connector talks to (a Kafka broker, a
    /// database) failed or refused a request. External.
    #[error("{system}: cannot {action}: {source}")]
    External {
        /// The system and where it is, e.g. `Kafka at 127.0.0.1:9092`.
        system: String,
        /// What was being done, e.g. `commit transaction tideline-out-0-1`.
        action: String,
        /// The client library's error.
        #[source]
        source: BoxError,
    },
    /// The job was cancelled because another task failed; never the root cause.
    #[error("cancelled because another task of the job failed")]
    Cancelled,
    /// An invariant of the engine was broken: a bug in Tideline.
    #[error("internal error (a bug in Tideline): {0}")]
    Internal(String),
}

impl Error {
    /// A configuration error naming `field`.
    pub fn config(field: impl Into<String>, reason: impl fmt::Display) -> Self {
        Error::Config {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    /// A failure of an external system: `action` on `system` (an
    /// [`Error::External`]).
    pub fn external(
        system: impl Into<String>,
        action: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::External {
            system: system.into(),
            action: action.into(),
            source: source.into(),
        }
    }

    /// Wraps an error from user code.
    pub fn user(e: impl Into<BoxError>) -> Self {
        Error::User(e.into())
    }

    /// A failed file-system call: `action` on `path` (an [`Error::Io`]).
    pub fn io(action: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// The kind of the I/O failure at the root of this error, if it is one
    /// ([`Error::Io`] or a state-file failure, attributed to an operator or not).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            Error::Io { source, .. } | Error::State(StateError::Io { source, .. }) => {
                Some(source.kind())
            }
            Error::Operator { source, .. } => source.io_kind(),
            _ => None,
        }
    }

    /// Attributes this error to `operator`, unless it already names one or is a
    /// cancellation (which is never the root cause).
    pub fn in_operator(self, operator: &str) -> Self {
        match self {
            e @ (Error::Operator { .. } | Error::Cancelled) => e,
            e => Error::Operator {
                operator: operator.to_string(),
                source: Box::new(e),
            },
        }
    }

    /// The operator this error is attributed to, if any.
    pub fn operator(&self) -> Option<&str> {
        match self {
            Error::Operator { operator, .. } => Some(operator),
            _ => None,
        }
    }

    /// Who is at fault.
    pub fn domain(&self) -> ErrorDomain {
        match self {
            Error::Config { .. }
            | Error::NoSink
            | Error::DanglingStream { .. }
            | Error::UnboundedSource { .. }
            | Error::User(_)
            | Error::Panic { .. }
            | Error::Aborted => ErrorDomain::User,
            Error::State(e) => state_domain(e),
            Error::Operator { source, .. } => source.domain(),
            Error::Checkpoint { .. } | Error::Io { .. } | Error::External { .. } => {
                ErrorDomain::External
            }
            Error::Cancelled | Error::Internal(_) => ErrorDomain::Internal,
        }
    }

    /// The error of a caught panic (user code's fault), with its message.
    pub fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_string()
        };
        Error::Panic { message }
    }
}

/// Who is at fault for a state error (see the module docs).
fn state_domain(e: &StateError) -> ErrorDomain {
    match e {
        StateError::TypeMismatch { .. }
        | StateError::Codec { .. }
        | StateError::KeyEncoding { .. } => ErrorDomain::User,
        StateError::Snapshot { .. } | StateError::Io { .. } => ErrorDomain::External,
        // RocksDB (`rocksdb` feature) and variants added later: the state
        // layer's own storage, not the job's code.
        _ => ErrorDomain::External,
    }
}

/// Runs `f`, turning a panic into [`Error::Panic`] and attributing any error to `operator`.
pub(crate) fn guarded<R>(operator: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.in_operator(operator)),
        Err(payload) => Err(Error::from_panic(payload).in_operator(operator)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    fn state_io(kind: ErrorKind) -> Error {
        Error::State(StateError::Io {
            path: "/state".to_string(),
            source: std::io::Error::from(kind),
        })
    }

    #[test]
    fn io_failures_are_external_and_keep_their_kind() {
        let e = Error::io(
            "write",
            "/out/x.csv",
            std::io::Error::from(ErrorKind::StorageFull),
        )
        .in_operator("sink");
        assert_eq!(e.domain(), ErrorDomain::External);
        assert_eq!(e.io_kind(), Some(ErrorKind::StorageFull));
        assert_eq!(
            e.to_string(),
            format!(
                "operator 'sink' failed: cannot write /out/x.csv: {}",
                std::io::Error::from(ErrorKind::StorageFull)
            )
        );
        let state = state_io(ErrorKind::PermissionDenied).in_operator("window");
        assert_eq!(state.domain(), ErrorDomain::External);
        assert_eq!(state.io_kind(), Some(ErrorKind::PermissionDenied));
    }

    #[test]
    fn state_errors_are_classified_by_cause() {
        let snapshot = Error::State(StateError::Snapshot {
            path: "/chk/state".to_string(),
            reason: "checksum mismatch".to_string(),
        });
        assert_eq!(snapshot.domain(), ErrorDomain::External);
        assert_eq!(snapshot.io_kind(), None);
        let codec = Error::State(StateError::Codec {
            name: "count".to_string(),
            action: "encode",
            what: "value",
            reason: "custom".to_string(),
        });
        assert_eq!(codec.domain(), ErrorDomain::User);
        let key = Error::State(StateError::KeyEncoding {
            key_type: "Key",
            reason: "unknown length".to_string(),
        });
        assert_eq!(key.domain(), ErrorDomain::User);
        let mismatch = Error::State(StateError::TypeMismatch {
            name: "count".to_string(),
            requested: "u64",
        });
        assert_eq!(mismatch.domain(), ErrorDomain::User);
    }

    #[test]
    fn a_user_error_is_user_and_has_no_io_kind() {
        let e = Error::user("bad record").in_operator("map");
        assert_eq!(e.domain(), ErrorDomain::User);
        assert_eq!(e.io_kind(), None);
    }
}
