//! Keyed state for Tideline.
//!
//! Operators that run after a `key_by` keep their state here, never in ad-hoc
//! fields, so that a checkpoint sees all of it. State is addressed by
//! *(state name, key, namespace)*: the key is the record's key, the namespace
//! is `()` for plain keyed state and the window for window state.
//!
//! Invariants:
//! - a state name is bound to exactly one value type per backend; asking for
//!   the same name with another type is a [`StateError::TypeMismatch`];
//! - every key belongs to exactly one key group ([`key_group::key_group_of`]),
//!   a pure function of the key's hash, so state can be redistributed when a
//!   job is restored at another parallelism.

mod descriptor;
mod error;
pub mod key_group;
mod memory;

pub use descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
pub use error::StateError;
pub use memory::{
    ListState, ListTable, MapState, MapTable, MemoryKeyedState, ValueState, ValueTable,
};

/// What a key of keyed state must provide: hashing for key groups and lookup,
/// equality, cloning to store it, and thread mobility.
pub trait StateKey: std::hash::Hash + Eq + Clone + Send + 'static {}
impl<T: std::hash::Hash + Eq + Clone + Send + 'static> StateKey for T {}

/// What a stored state value must provide.
pub trait StateValue: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> StateValue for T {}

/// Result type of the state crate.
pub type Result<T, E = StateError> = std::result::Result<T, E>;
