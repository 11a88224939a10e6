//! The engine's one error type.
//!
//! Variants say who is at fault ([`Error::domain`]): the job's configuration or
//! code (`User`), an external system (`External`), or Tideline itself
//! (`Internal`, a bug).

use std::fmt;

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

    /// Wraps an error from user code.
    pub fn user(e: impl Into<BoxError>) -> Self {
        Error::User(e.into())
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
            | Error::State(_)
            | Error::Aborted => ErrorDomain::User,
            Error::Operator { source, .. } => source.domain(),
            Error::Checkpoint { .. } => ErrorDomain::External,
            Error::Cancelled | Error::Internal(_) => ErrorDomain::Internal,
        }
    }

    pub(crate) fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Self {
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

/// Runs `f`, turning a panic into [`Error::Panic`] and attributing any error to `operator`.
pub(crate) fn guarded<R>(operator: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.in_operator(operator)),
        Err(payload) => Err(Error::from_panic(payload).in_operator(operator)),
    }
}
