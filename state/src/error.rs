use std::any::type_name;

/// Errors of the state layer.
#[derive(Debug, thiserror::Error)]
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
}

impl StateError {
    pub(crate) fn type_mismatch<T>(name: &str) -> Self {
        StateError::TypeMismatch {
            name: name.to_string(),
            requested: type_name::<T>(),
        }
    }
}
