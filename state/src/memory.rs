//! The in-memory keyed state backend.
//!
//! Each state name owns one typed hash table keyed by `(key, namespace)`.
//! Tables are found by name once per access (a short linear scan over the
//! operator's few states plus one `TypeId` check), then used without boxing
//! or serialization, which keeps the per-record path allocation-free.

use std::any::Any;
use std::hash::{Hash, Hasher};

use hashbrown::{Equivalent, HashMap};
use rustc_hash::FxBuildHasher;

use crate::{
    ListStateDescriptor, MapStateDescriptor, Result, StateError, StateKey, StateValue,
    ValueStateDescriptor,
};

/// Per `(key, namespace)`, one value.
pub type ValueTable<K, N, V> = HashMap<(K, N), V, FxBuildHasher>;
/// Per `(key, namespace)`, a map.
pub type MapTable<K, N, MK, MV> = HashMap<(K, N), HashMap<MK, MV, FxBuildHasher>, FxBuildHasher>;
/// Per `(key, namespace)`, a list.
pub type ListTable<K, N, V> = HashMap<(K, N), Vec<V>, FxBuildHasher>;

/// A borrowed `(key, namespace)` that looks up a `(K, N)` table entry without
/// cloning the key. It hashes exactly like the tuple does (fields in order).
#[derive(Debug)]
pub(crate) struct KeyNs<'a, K, N>(pub &'a K, pub &'a N);

impl<K: Hash, N: Hash> Hash for KeyNs<'_, K, N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl<K: Eq, N: Eq> Equivalent<(K, N)> for KeyNs<'_, K, N> {
    fn equivalent(&self, other: &(K, N)) -> bool {
        *self.0 == other.0 && *self.1 == other.1
    }
}

struct Table {
    name: &'static str,
    data: Box<dyn Any + Send>,
}

/// In-memory keyed state of one operator subtask, for keys of type `K`.
pub struct MemoryKeyedState<K> {
    tables: Vec<Table>,
    _key: std::marker::PhantomData<fn() -> K>,
}

impl<K> std::fmt::Debug for MemoryKeyedState<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.tables.iter().map(|t| t.name).collect();
        f.debug_struct("MemoryKeyedState")
            .field("states", &names)
            .finish()
    }
}

impl<K> Default for MemoryKeyedState<K> {
    fn default() -> Self {
        Self {
            tables: Vec::new(),
            _key: std::marker::PhantomData,
        }
    }
}

impl<K: StateKey> MemoryKeyedState<K> {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn table<T: Default + Send + 'static>(&mut self, name: &'static str) -> Result<&mut T> {
        let index = match self.tables.iter().position(|t| t.name == name) {
            Some(i) => i,
            None => {
                self.tables.push(Table {
                    name,
                    data: Box::<T>::default(),
                });
                self.tables.len() - 1
            }
        };
        self.tables[index]
            .data
            .downcast_mut::<T>()
            .ok_or_else(|| StateError::type_mismatch::<T>(name))
    }

    /// The value state named by `descriptor`, bound to `key` and `namespace`.
    ///
    /// # Errors
    /// [`StateError::TypeMismatch`] when the name is already used with another type.
    pub fn value<'a, N: StateKey, V: StateValue>(
        &'a mut self,
        descriptor: &ValueStateDescriptor<V>,
        key: &'a K,
        namespace: &'a N,
    ) -> Result<ValueState<'a, K, N, V>> {
        let table = self.table::<ValueTable<K, N, V>>(descriptor.name())?;
        Ok(ValueState {
            table,
            key,
            namespace,
        })
    }

    /// The map state named by `descriptor`, bound to `key` and `namespace`.
    ///
    /// # Errors
    /// [`StateError::TypeMismatch`] when the name is already used with another type.
    pub fn map<'a, N: StateKey, MK: StateKey, MV: StateValue>(
        &'a mut self,
        descriptor: &MapStateDescriptor<MK, MV>,
        key: &'a K,
        namespace: &'a N,
    ) -> Result<MapState<'a, K, N, MK, MV>> {
        let table = self.table::<MapTable<K, N, MK, MV>>(descriptor.name())?;
        Ok(MapState {
            table,
            key,
            namespace,
        })
    }

    /// The list state named by `descriptor`, bound to `key` and `namespace`.
    ///
    /// # Errors
    /// [`StateError::TypeMismatch`] when the name is already used with another type.
    pub fn list<'a, N: StateKey, V: StateValue>(
        &'a mut self,
        descriptor: &ListStateDescriptor<V>,
        key: &'a K,
        namespace: &'a N,
    ) -> Result<ListState<'a, K, N, V>> {
        let table = self.table::<ListTable<K, N, V>>(descriptor.name())?;
        Ok(ListState {
            table,
            key,
            namespace,
        })
    }

    /// The whole value table of a state, for operators that scan or drop many
    /// entries at once (window cleanup).
    ///
    /// # Errors
    /// [`StateError::TypeMismatch`] when the name is already used with another type.
    pub fn value_table<N: StateKey, V: StateValue>(
        &mut self,
        descriptor: &ValueStateDescriptor<V>,
    ) -> Result<&mut ValueTable<K, N, V>> {
        self.table::<ValueTable<K, N, V>>(descriptor.name())
    }
}

/// One value for the current key and namespace.
#[derive(Debug)]
pub struct ValueState<'a, K, N, V> {
    table: &'a mut ValueTable<K, N, V>,
    key: &'a K,
    namespace: &'a N,
}

impl<K: StateKey, N: StateKey, V: StateValue> ValueState<'_, K, N, V> {
    /// The stored value, if any.
    pub fn get(&self) -> Option<&V> {
        self.table.get(&KeyNs(self.key, self.namespace))
    }

    /// The stored value for in-place update, if any.
    pub fn get_mut(&mut self) -> Option<&mut V> {
        self.table.get_mut(&KeyNs(self.key, self.namespace))
    }

    /// The stored value, inserting `default()` first when there is none.
    pub fn get_or_insert_with(&mut self, default: impl FnOnce() -> V) -> &mut V {
        let (key, namespace) = (self.key, self.namespace);
        self.table
            .entry((key.clone(), namespace.clone()))
            .or_insert_with(default)
    }

    /// Replaces the stored value.
    pub fn set(&mut self, value: V) {
        match self.table.get_mut(&KeyNs(self.key, self.namespace)) {
            Some(slot) => *slot = value,
            None => {
                self.table
                    .insert((self.key.clone(), self.namespace.clone()), value);
            }
        }
    }

    /// Removes and returns the stored value.
    pub fn take(&mut self) -> Option<V> {
        self.table.remove(&KeyNs(self.key, self.namespace))
    }
}

/// A map for the current key and namespace.
#[derive(Debug)]
pub struct MapState<'a, K, N, MK, MV> {
    table: &'a mut MapTable<K, N, MK, MV>,
    key: &'a K,
    namespace: &'a N,
}

impl<K: StateKey, N: StateKey, MK: StateKey, MV: StateValue> MapState<'_, K, N, MK, MV> {
    /// The value under `map_key`.
    pub fn get(&self, map_key: &MK) -> Option<&MV> {
        self.table
            .get(&KeyNs(self.key, self.namespace))
            .and_then(|m| m.get(map_key))
    }

    /// Inserts or replaces the value under `map_key`; returns the previous one.
    pub fn insert(&mut self, map_key: MK, value: MV) -> Option<MV> {
        self.entries_mut().insert(map_key, value)
    }

    /// Removes the value under `map_key`.
    pub fn remove(&mut self, map_key: &MK) -> Option<MV> {
        let map = self.table.get_mut(&KeyNs(self.key, self.namespace))?;
        let removed = map.remove(map_key);
        if map.is_empty() {
            self.table.remove(&KeyNs(self.key, self.namespace));
        }
        removed
    }

    /// All entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&MK, &MV)> {
        self.table
            .get(&KeyNs(self.key, self.namespace))
            .into_iter()
            .flat_map(|m| m.iter())
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.table.remove(&KeyNs(self.key, self.namespace));
    }

    fn entries_mut(&mut self) -> &mut HashMap<MK, MV, FxBuildHasher> {
        let (key, namespace) = (self.key, self.namespace);
        self.table
            .entry((key.clone(), namespace.clone()))
            .or_default()
    }
}

/// A list for the current key and namespace.
#[derive(Debug)]
pub struct ListState<'a, K, N, V> {
    table: &'a mut ListTable<K, N, V>,
    key: &'a K,
    namespace: &'a N,
}

impl<K: StateKey, N: StateKey, V: StateValue> ListState<'_, K, N, V> {
    /// Appends a value.
    pub fn push(&mut self, value: V) {
        match self.table.get_mut(&KeyNs(self.key, self.namespace)) {
            Some(list) => list.push(value),
            None => {
                self.table
                    .insert((self.key.clone(), self.namespace.clone()), vec![value]);
            }
        }
    }

    /// The values, oldest first (empty when none).
    pub fn get(&self) -> &[V] {
        self.table
            .get(&KeyNs(self.key, self.namespace))
            .map_or(&[], Vec::as_slice)
    }

    /// Removes and returns all values.
    pub fn take(&mut self) -> Vec<V> {
        self.table
            .remove(&KeyNs(self.key, self.namespace))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("count");
    const SAME_NAME: ValueStateDescriptor<String> = ValueStateDescriptor::new("count");
    const SEEN: MapStateDescriptor<String, u32> = MapStateDescriptor::new("seen");
    const LOG: ListStateDescriptor<i64> = ListStateDescriptor::new("log");

    #[test]
    fn value_state_is_scoped_by_key_and_namespace() -> Result<()> {
        let mut s = MemoryKeyedState::<String>::new();
        let (a, b) = ("a".to_string(), "b".to_string());
        s.value(&COUNT, &a, &1u8)?.set(1);
        s.value(&COUNT, &a, &2u8)?.set(2);
        *s.value(&COUNT, &b, &1u8)?.get_or_insert_with(|| 10) += 1;
        assert_eq!(s.value(&COUNT, &a, &1u8)?.get(), Some(&1));
        assert_eq!(s.value(&COUNT, &a, &2u8)?.get(), Some(&2));
        assert_eq!(s.value(&COUNT, &b, &1u8)?.get(), Some(&11));
        assert_eq!(s.value(&COUNT, &b, &2u8)?.take(), None);
        assert_eq!(s.value(&COUNT, &a, &1u8)?.take(), Some(1));
        assert_eq!(s.value(&COUNT, &a, &1u8)?.get(), None);
        assert_eq!(s.value_table::<u8, u64>(&COUNT)?.len(), 2);
        Ok(())
    }

    #[test]
    fn reusing_a_name_with_another_type_is_an_error() {
        let mut s = MemoryKeyedState::<u32>::new();
        assert!(s.value(&COUNT, &1, &()).is_ok());
        let err = s.value(&SAME_NAME, &1, &()).err();
        assert!(matches!(err, Some(StateError::TypeMismatch { ref name, .. }) if name == "count"));
    }

    #[test]
    fn map_and_list_state() -> Result<()> {
        let mut s = MemoryKeyedState::<u32>::new();
        let mut m = s.map(&SEEN, &7, &())?;
        assert_eq!(m.insert("x".into(), 1), None);
        assert_eq!(m.insert("x".into(), 2), Some(1));
        assert_eq!(m.get(&"x".to_string()), Some(&2));
        assert_eq!(m.iter().count(), 1);
        assert_eq!(m.remove(&"x".to_string()), Some(2));
        assert_eq!(m.iter().count(), 0);
        let mut l = s.list(&LOG, &7, &())?;
        l.push(3);
        l.push(1);
        assert_eq!(l.get(), &[3, 1]);
        assert_eq!(l.take(), vec![3, 1]);
        assert!(l.get().is_empty());
        Ok(())
    }
}
