//! The same behaviour from every backend: handle semantics, scoping, type
//! checks, deletes through the RocksDB write-back cache, and a random-ops
//! model test; then snapshots, rescaling restores and broken snapshots.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tideline_state::key_group::{key_group_of, subtask_for_key_group};
use tideline_state::{
    KeyedState, ListStateDescriptor, MapStateDescriptor, Result, StateBackend, StateError,
    StateScope, ValueStateDescriptor,
};

const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("count");
const SAME_NAME: ValueStateDescriptor<String> = ValueStateDescriptor::new("count");
const SEEN: MapStateDescriptor<String, u32> = MapStateDescriptor::new("seen");
const LOG: ListStateDescriptor<i64> = ListStateDescriptor::new("log");

const VAL: ValueStateDescriptor<u64> = ValueStateDescriptor::new("val");
const MAP: MapStateDescriptor<u8, u32> = MapStateDescriptor::new("map");
const LIST: ListStateDescriptor<u16> = ListStateDescriptor::new("list");

fn value_state_is_scoped_by_key_and_namespace(backend: &StateBackend) -> Result<()> {
    let mut s = whole::<String>(backend)?;
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
    if let Some(v) = s.value(&COUNT, &a, &2u8)?.get_mut() {
        *v += 40;
    }
    assert_eq!(s.value(&COUNT, &a, &2u8)?.get(), Some(&42));
    assert_eq!(s.approximate_len()?, 2);
    Ok(())
}

fn reusing_a_name_with_another_type_is_an_error(backend: &StateBackend) -> Result<()> {
    let mut s = whole::<u32>(backend)?;
    s.value(&COUNT, &1, &())?.set(5);
    let err = s.value(&SAME_NAME, &1, &()).err();
    assert!(
        matches!(err, Some(StateError::TypeMismatch { ref name, .. }) if name == "count"),
        "{err:?}"
    );
    // Another namespace type is another table type too.
    assert!(matches!(
        s.value(&COUNT, &1, &7u8).err(),
        Some(StateError::TypeMismatch { .. })
    ));
    assert_eq!(s.value(&COUNT, &1, &())?.get(), Some(&5));
    Ok(())
}

fn map_and_list_state(backend: &StateBackend) -> Result<()> {
    let mut s = whole::<u32>(backend)?;
    let mut m = s.map(&SEEN, &7, &())?;
    assert_eq!(m.insert("x".into(), 1), None);
    assert_eq!(m.insert("x".into(), 2), Some(1));
    assert_eq!(m.insert("y".into(), 3), None);
    assert_eq!(m.get(&"x".to_string()), Some(&2));
    assert_eq!(m.iter().count(), 2);
    assert_eq!(m.remove(&"x".to_string()), Some(2));
    assert_eq!(m.remove(&"x".to_string()), None);
    assert_eq!(m.iter().count(), 1);
    m.clear();
    assert_eq!(m.iter().count(), 0);
    let mut l = s.list(&LOG, &7, &())?;
    l.push(3);
    l.push(1);
    assert_eq!(l.get(), &[3, 1]);
    assert_eq!(l.take(), vec![3, 1]);
    assert!(l.get().is_empty());
    assert!(l.take().is_empty());
    s.list(&LOG, &8, &())?.push(9);
    assert_eq!(s.list(&LOG, &8, &())?.get(), &[9]);
    assert_eq!(s.list(&LOG, &7, &())?.get(), &[] as &[i64]);
    assert_eq!(s.approximate_len()?, 1);
    Ok(())
}

/// Hundreds of keys: with a 4-entry cache every access evicts; deletes must
/// reach RocksDB (a stale value must never come back).
fn deletes_survive_eviction(backend: &StateBackend) -> Result<()> {
    let mut s = whole::<u32>(backend)?;
    for k in 0..500u32 {
        s.value(&VAL, &k, &())?.set(u64::from(k));
        s.map(&MAP, &k, &())?.insert((k % 7) as u8, k);
        s.list(&LIST, &k, &())?.push(k as u16);
    }
    assert_eq!(s.approximate_len()?, 1500);
    for k in (0..500u32).filter(|k| k % 3 == 0) {
        assert_eq!(s.value(&VAL, &k, &())?.take(), Some(u64::from(k)));
        assert_eq!(s.map(&MAP, &k, &())?.remove(&((k % 7) as u8)), Some(k));
        assert_eq!(s.list(&LIST, &k, &())?.take(), vec![k as u16]);
    }
    // Re-set some deleted keys: the newer value wins over the tombstone.
    for k in (0..500u32).filter(|k| k % 30 == 0) {
        s.value(&VAL, &k, &())?.set(7);
    }
    for k in 0..500u32 {
        let expected = if k % 30 == 0 {
            Some(7)
        } else if k % 3 == 0 {
            None
        } else {
            Some(u64::from(k))
        };
        assert_eq!(s.value(&VAL, &k, &())?.get().copied(), expected, "key {k}");
        let deleted = k % 3 == 0;
        assert_eq!(s.map(&MAP, &k, &())?.iter().count(), usize::from(!deleted));
        assert_eq!(s.list(&LIST, &k, &())?.get().is_empty(), deleted);
    }
    let kept = (0..500u32).filter(|k| k % 3 != 0).count() as u64;
    assert_eq!(s.approximate_len()?, 3 * kept + 17);
    Ok(())
}

/// One random operation of the model test.
#[derive(Clone, Debug)]
enum Op {
    Set(u32, u8, u64),
    Add(u32, u8, u64),
    Take(u32, u8),
    MapInsert(u32, u8, u8, u32),
    MapRemove(u32, u8, u8),
    MapClear(u32, u8),
    Push(u32, u8, u16),
    ListTake(u32, u8),
    Check(u32, u8),
    Snapshot,
}

fn op_strategy(keys: u32) -> impl Strategy<Value = Op> {
    let k = 0..keys;
    let n = 0u8..3;
    prop_oneof![
        3 => (k.clone(), n.clone(), any::<u64>()).prop_map(|(k, n, v)| Op::Set(k, n, v)),
        2 => (k.clone(), n.clone(), 0u64..100).prop_map(|(k, n, v)| Op::Add(k, n, v)),
        2 => (k.clone(), n.clone()).prop_map(|(k, n)| Op::Take(k, n)),
        3 => (k.clone(), n.clone(), 0u8..5, any::<u32>()).prop_map(|(k, n, m, v)| Op::MapInsert(k, n, m, v)),
        2 => (k.clone(), n.clone(), 0u8..5).prop_map(|(k, n, m)| Op::MapRemove(k, n, m)),
        1 => (k.clone(), n.clone()).prop_map(|(k, n)| Op::MapClear(k, n)),
        3 => (k.clone(), n.clone(), any::<u16>()).prop_map(|(k, n, v)| Op::Push(k, n, v)),
        1 => (k.clone(), n.clone()).prop_map(|(k, n)| Op::ListTake(k, n)),
        2 => (k, n).prop_map(|(k, n)| Op::Check(k, n)),
        1 => Just(Op::Snapshot),
    ]
}

#[derive(Default, Debug)]
struct Model {
    values: HashMap<(u32, u8), u64>,
    maps: HashMap<(u32, u8), BTreeMap<u8, u32>>,
    lists: HashMap<(u32, u8), Vec<u16>>,
}

impl Model {
    fn len(&self) -> u64 {
        (self.values.len() + self.maps.len() + self.lists.len()) as u64
    }
}

fn check_key(s: &mut KeyedState<u32>, model: &Model, k: u32, n: u8) {
    assert_eq!(
        s.value(&VAL, &k, &n).unwrap().get(),
        model.values.get(&(k, n)),
        "value {k}/{n}"
    );
    let map: BTreeMap<u8, u32> = s
        .map(&MAP, &k, &n)
        .unwrap()
        .iter()
        .map(|(a, b)| (*a, *b))
        .collect();
    assert_eq!(
        map,
        model.maps.get(&(k, n)).cloned().unwrap_or_default(),
        "map {k}/{n}"
    );
    assert_eq!(
        s.list(&LIST, &k, &n).unwrap().get(),
        model.lists.get(&(k, n)).map_or(&[][..], Vec::as_slice),
        "list {k}/{n}"
    );
}

fn check_all(s: &mut KeyedState<u32>, model: &Model, keys: u32) {
    for k in 0..keys {
        for n in 0..3 {
            check_key(s, model, k, n);
        }
    }
    assert_eq!(s.approximate_len().unwrap(), model.len());
}

fn apply(s: &mut KeyedState<u32>, model: &mut Model, op: &Op, env: &Env, snapshots: &mut usize) {
    match *op {
        Op::Set(k, n, v) => {
            s.value(&VAL, &k, &n).unwrap().set(v);
            model.values.insert((k, n), v);
        }
        Op::Add(k, n, v) => {
            let mut h = s.value(&VAL, &k, &n).unwrap();
            let slot = h.get_or_insert_with(|| 0);
            *slot = slot.wrapping_add(v);
            let m = model.values.entry((k, n)).or_insert(0);
            *m = m.wrapping_add(v);
        }
        Op::Take(k, n) => {
            assert_eq!(
                s.value(&VAL, &k, &n).unwrap().take(),
                model.values.remove(&(k, n))
            );
        }
        Op::MapInsert(k, n, mk, v) => {
            let prev = s.map(&MAP, &k, &n).unwrap().insert(mk, v);
            assert_eq!(prev, model.maps.entry((k, n)).or_default().insert(mk, v));
        }
        Op::MapRemove(k, n, mk) => {
            let got = s.map(&MAP, &k, &n).unwrap().remove(&mk);
            let expected = model.maps.get_mut(&(k, n)).and_then(|m| m.remove(&mk));
            if model.maps.get(&(k, n)).is_some_and(BTreeMap::is_empty) {
                model.maps.remove(&(k, n));
            }
            assert_eq!(got, expected);
        }
        Op::MapClear(k, n) => {
            s.map(&MAP, &k, &n).unwrap().clear();
            model.maps.remove(&(k, n));
        }
        Op::Push(k, n, v) => {
            s.list(&LIST, &k, &n).unwrap().push(v);
            model.lists.entry((k, n)).or_default().push(v);
        }
        Op::ListTake(k, n) => {
            assert_eq!(
                s.list(&LIST, &k, &n).unwrap().take(),
                model.lists.remove(&(k, n)).unwrap_or_default()
            );
        }
        Op::Check(k, n) => check_key(s, model, k, n),
        Op::Snapshot => {
            *snapshots += 1;
            let dir = env.snapshot_dir(&format!("mid-{snapshots}"));
            let files = s.snapshot_to(&dir).unwrap();
            assert!(!files.is_empty());
        }
    }
}

/// Random operations against a `HashMap` model; at the end, a snapshot
/// restored into a fresh state must equal the model too.
fn matches_a_model(make_backend: fn(&Env) -> StateBackend, cases: u32) {
    const KEYS: u32 = 120;
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    runner
        .run(&prop::collection::vec(op_strategy(KEYS), 1..600), |ops| {
            let env = Env::new();
            let backend = make_backend(&env);
            let mut s = whole::<u32>(&backend).unwrap();
            let mut model = Model::default();
            let mut snapshots = 0;
            for op in &ops {
                apply(&mut s, &mut model, op, &env, &mut snapshots);
            }
            check_all(&mut s, &model, KEYS);
            let dir = env.snapshot_dir("final");
            s.snapshot_to(&dir).unwrap();
            drop(s);
            let mut restored = whole::<u32>(&backend).unwrap();
            restored.restore_from(&[dir]).unwrap();
            check_all(&mut restored, &model, KEYS);
            Ok(())
        })
        .unwrap();
}

/// Fills a state with value, map and list entries for `keys`.
fn fill(s: &mut KeyedState<u64>, keys: impl Iterator<Item = u64>) -> Result<()> {
    for k in keys {
        s.value(&VAL, &k, &())?.set(k * 10);
        s.map(&MAP, &k, &1u8)?.insert(3, k as u32);
        let mut l = s.list(&LIST, &k, &())?;
        l.push(k as u16);
        l.push(1);
    }
    Ok(())
}

fn expect_key(s: &mut KeyedState<u64>, k: u64, present: bool) -> Result<()> {
    if present {
        assert_eq!(s.value(&VAL, &k, &())?.get(), Some(&(k * 10)), "key {k}");
        assert_eq!(s.map(&MAP, &k, &1u8)?.get(&3), Some(&(k as u32)));
        assert_eq!(s.list(&LIST, &k, &())?.get(), &[k as u16, 1]);
    } else {
        assert_eq!(s.value(&VAL, &k, &())?.get(), None, "key {k}");
        assert_eq!(s.map(&MAP, &k, &1u8)?.iter().count(), 0);
        assert!(s.list(&LIST, &k, &())?.get().is_empty());
    }
    Ok(())
}

const GROUPS: u16 = 128;
const RESCALE_KEYS: u64 = 2000;

fn owner(k: u64, parallelism: usize) -> usize {
    // A u64 always encodes; usize::MAX (no subtask) would fail the caller.
    key_group_of(&k, GROUPS).map_or(usize::MAX, |g| {
        subtask_for_key_group(g, GROUPS, parallelism)
    })
}

/// 1 → 2: every key ends up exactly in the subtask owning its group.
fn rescale_one_to_two(make_backend: fn(&Env) -> StateBackend) -> Result<()> {
    let env = Env::new();
    let backend = make_backend(&env);
    let dir = env.snapshot_dir("p1");
    {
        let mut s = open::<u64>(&backend, StateScope::for_subtask("op", 0, 1, GROUPS))?;
        fill(&mut s, 0..RESCALE_KEYS)?;
        let files = s.snapshot_to(&dir)?;
        for f in &files {
            assert!(dir.join(&f.name).is_file(), "{f:?} missing");
        }
        // Processing continues after a snapshot.
        s.value(&VAL, &RESCALE_KEYS, &())?.set(1);
        expect_key(&mut s, 5, true)?;
    } // the source state (and its working database) is gone
    let mut counts = Vec::new();
    for subtask in 0..2 {
        let scope = StateScope::for_subtask("op", subtask, 2, GROUPS);
        let mut s = open::<u64>(&backend, scope)?;
        s.restore_from(std::slice::from_ref(&dir))?;
        let len = s.approximate_len()?;
        for k in 0..RESCALE_KEYS {
            expect_key(&mut s, k, owner(k, 2) == subtask)?;
        }
        expect_key(&mut s, RESCALE_KEYS + 1, false)?;
        counts.push(len);
    }
    assert_eq!(counts.iter().sum::<u64>(), 3 * RESCALE_KEYS);
    assert!(counts.iter().all(|&c| c > RESCALE_KEYS), "{counts:?}");
    Ok(())
}

/// 2 → 1: the union of both snapshots.
fn rescale_two_to_one(make_backend: fn(&Env) -> StateBackend) -> Result<()> {
    let env = Env::new();
    let backend = make_backend(&env);
    let mut dirs = Vec::new();
    for subtask in 0..2 {
        let scope = StateScope::for_subtask("op", subtask, 2, GROUPS);
        let mut s = open::<u64>(&backend, scope)?;
        fill(
            &mut s,
            (0..RESCALE_KEYS).filter(|&k| owner(k, 2) == subtask),
        )?;
        let dir = env.snapshot_dir(&format!("p2-{subtask}"));
        s.snapshot_to(&dir)?;
        dirs.push(dir);
    }
    let mut s = open::<u64>(&backend, StateScope::for_subtask("op", 0, 1, GROUPS))?;
    s.restore_from(&dirs)?;
    assert_eq!(s.approximate_len()?, 3 * RESCALE_KEYS);
    for k in 0..RESCALE_KEYS {
        expect_key(&mut s, k, true)?;
    }
    Ok(())
}

/// `old` → `new`: every new subtask holds exactly the keys it owns, with
/// their values, and nothing else; together they hold every key once.
fn rescale(make_backend: fn(&Env) -> StateBackend, old: usize, new: usize) -> Result<()> {
    let env = Env::new();
    let backend = make_backend(&env);
    let mut dirs = Vec::new();
    for subtask in 0..old {
        let scope = StateScope::for_subtask("op", subtask, old, GROUPS);
        let mut s = open::<u64>(&backend, scope)?;
        fill(
            &mut s,
            (0..RESCALE_KEYS).filter(|&k| owner(k, old) == subtask),
        )?;
        let dir = env.snapshot_dir(&format!("p{old}-{subtask}"));
        s.snapshot_to(&dir)?;
        dirs.push(dir);
    }
    let mut total = 0;
    for subtask in 0..new {
        let scope = StateScope::for_subtask("op", subtask, new, GROUPS);
        let mut s = open::<u64>(&backend, scope)?;
        s.restore_from(&dirs)?;
        let owned = (0..RESCALE_KEYS)
            .filter(|&k| owner(k, new) == subtask)
            .count() as u64;
        let len = s.approximate_len()?;
        assert_eq!(len, 3 * owned, "subtask {subtask} of {new}");
        total += len;
        for k in 0..RESCALE_KEYS {
            expect_key(&mut s, k, owner(k, new) == subtask)?;
        }
        // The restored state keeps working and snapshots again.
        s.value(&VAL, &(RESCALE_KEYS + 7), &())?.set(1);
        s.snapshot_to(&env.snapshot_dir(&format!("again-{new}-{subtask}")))?;
    }
    assert_eq!(total, 3 * RESCALE_KEYS);
    Ok(())
}

/// A restored state that is snapshotted again before any access keeps its data.
fn untouched_restored_state_is_snapshotted(make_backend: fn(&Env) -> StateBackend) -> Result<()> {
    let env = Env::new();
    let backend = make_backend(&env);
    let (first, second) = (env.snapshot_dir("first"), env.snapshot_dir("second"));
    let mut s = whole::<u64>(&backend)?;
    fill(&mut s, 0..100)?;
    s.snapshot_to(&first)?;
    let mut s = whole::<u64>(&backend)?;
    s.restore_from(&[first])?;
    assert_eq!(s.approximate_len()?, 300);
    s.value(&VAL, &1000, &())?.set(10_000); // touches one state only
    s.snapshot_to(&second)?;
    let mut s = whole::<u64>(&backend)?;
    s.restore_from(&[second])?;
    fill_check(&mut s)?;
    Ok(())
}

fn fill_check(s: &mut KeyedState<u64>) -> Result<()> {
    for k in 0..100 {
        expect_key(s, k, true)?;
    }
    assert_eq!(s.value(&VAL, &1000, &())?.get(), Some(&10_000));
    Ok(())
}

macro_rules! backend_suite {
    ($module:ident, $backend:path, $cases:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn value_scoping() -> Result<()> {
                let env = Env::new();
                value_state_is_scoped_by_key_and_namespace(&$backend(&env))
            }

            #[test]
            fn type_mismatch() -> Result<()> {
                let env = Env::new();
                reusing_a_name_with_another_type_is_an_error(&$backend(&env))
            }

            #[test]
            fn map_and_list() -> Result<()> {
                let env = Env::new();
                map_and_list_state(&$backend(&env))
            }

            #[test]
            fn deletes() -> Result<()> {
                let env = Env::new();
                deletes_survive_eviction(&$backend(&env))
            }

            #[test]
            fn model() {
                matches_a_model($backend, $cases);
            }

            #[test]
            fn rescale_1_to_2() -> Result<()> {
                rescale_one_to_two($backend)
            }

            #[test]
            fn rescale_2_to_1() -> Result<()> {
                rescale_two_to_one($backend)
            }

            #[test]
            fn rescale_1_to_3() -> Result<()> {
                rescale($backend, 1, 3)
            }

            #[test]
            fn rescale_2_to_3() -> Result<()> {
                rescale($backend, 2, 3)
            }

            #[test]
            fn rescale_3_to_2() -> Result<()> {
                rescale($backend, 3, 2)
            }

            #[test]
            fn rescale_2_to_2() -> Result<()> {
                rescale($backend, 2, 2)
            }

            #[test]
            fn resnapshot_untouched() -> Result<()> {
                untouched_restored_state_is_snapshotted($backend)
            }
        }
    };
}

backend_suite!(memory, memory_backend, 64);
#[cfg(feature = "rocksdb")]
backend_suite!(rocksdb, rocks_backend, 16);
#[cfg(feature = "rocksdb")]
backend_suite!(rocksdb_tiny_cache, rocks_tiny_backend, 24);

// ---- broken snapshots ----------------------------------------------------

fn snapshot_of(backend: &StateBackend, env: &Env, name: &str) -> Result<std::path::PathBuf> {
    let dir = env.snapshot_dir(name);
    let mut s = whole::<u64>(backend)?;
    fill(&mut s, 0..500)?;
    s.snapshot_to(&dir)?;
    Ok(dir)
}

fn assert_snapshot_error(result: Result<()>, path_part: &str) {
    match result {
        Err(StateError::Snapshot { path, reason }) => {
            assert!(path.contains(path_part), "{path} / {reason}");
        }
        other => panic!("expected a snapshot error, got {other:?}"),
    }
}

#[test]
fn truncated_memory_snapshot_is_an_error() -> Result<()> {
    let env = Env::new();
    let dir = snapshot_of(&StateBackend::Memory, &env, "m")?;
    let file = dir.join("memory-state.bin");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let mut s = whole::<u64>(&StateBackend::Memory)?;
    assert_snapshot_error(
        s.restore_from(std::slice::from_ref(&dir)),
        "memory-state.bin",
    );
    std::fs::write(&file, &bytes[..10]).unwrap();
    assert_snapshot_error(s.restore_from(&[dir]), "memory-state.bin");
    Ok(())
}

#[test]
fn corrupt_memory_snapshot_is_an_error() -> Result<()> {
    let env = Env::new();
    let dir = snapshot_of(&StateBackend::Memory, &env, "m")?;
    let file = dir.join("memory-state.bin");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&file, &bytes).unwrap();
    let mut s = whole::<u64>(&StateBackend::Memory)?;
    assert_snapshot_error(s.restore_from(&[dir]), "memory-state.bin");
    Ok(())
}

/// The stored form of the value entry of `k` as a snapshot record starts:
/// key length, key group, the key's postcard encoding (namespace `()`
/// encodes to nothing).
fn value_record_prefix(k: u64) -> Vec<u8> {
    let mut key = key_group_of(&k, GROUPS).unwrap().to_be_bytes().to_vec();
    key.extend(postcard::to_stdvec(&k).unwrap());
    let mut record = (key.len() as u32).to_le_bytes().to_vec();
    record.extend(key);
    record
}

/// A memory restore reads only the sections of owned key groups: corrupting
/// a foreign group's bytes leaves it unharmed, while the owner of that group
/// gets an error naming it.
#[test]
fn a_memory_restore_reads_only_owned_key_groups() -> Result<()> {
    let env = Env::new();
    let dir = env.snapshot_dir("m");
    let mut s = whole::<u64>(&StateBackend::Memory)?;
    fill(&mut s, 0..RESCALE_KEYS)?;
    s.snapshot_to(&dir)?;
    let file = dir.join("memory-state.bin");
    let mut bytes = std::fs::read(&file).unwrap();
    // A key owned by subtask 1 of 2; flip a byte of its value's record.
    let k = (0..RESCALE_KEYS).find(|&k| owner(k, 2) == 1).unwrap();
    let group = key_group_of(&k, GROUPS).unwrap();
    let prefix = value_record_prefix(k);
    let at = bytes
        .windows(prefix.len())
        .position(|w| w == prefix.as_slice())
        .unwrap();
    bytes[at + prefix.len() + 4] ^= 0x5a;
    std::fs::write(&file, &bytes).unwrap();
    let mut s = open::<u64>(
        &StateBackend::Memory,
        StateScope::for_subtask("op", 0, 2, GROUPS),
    )?;
    s.restore_from(std::slice::from_ref(&dir))?;
    for k in 0..RESCALE_KEYS {
        expect_key(&mut s, k, owner(k, 2) == 0)?;
    }
    let mut s = open::<u64>(
        &StateBackend::Memory,
        StateScope::for_subtask("op", 1, 2, GROUPS),
    )?;
    match s.restore_from(&[dir]) {
        Err(StateError::Snapshot { path, reason }) => {
            assert!(path.contains("memory-state.bin"), "{path}");
            assert!(
                reason.contains(&format!("checksum mismatch in key group {group} ")),
                "{reason}"
            );
        }
        other => panic!("expected a snapshot error, got {other:?}"),
    }
    Ok(())
}

/// A RocksDB restore does not open checkpoints that hold none of its key
/// groups: with the other subtask's checkpoint destroyed, subtask 0 of 2
/// still restores, while a subtask that needs it fails.
#[cfg(feature = "rocksdb")]
#[test]
fn a_rocksdb_restore_skips_checkpoints_of_foreign_key_groups() -> Result<()> {
    let env = Env::new();
    let backend = rocks_backend(&env);
    let mut dirs = Vec::new();
    for subtask in 0..2 {
        let mut s = open::<u64>(&backend, StateScope::for_subtask("op", subtask, 2, GROUPS))?;
        fill(
            &mut s,
            (0..RESCALE_KEYS).filter(|&k| owner(k, 2) == subtask),
        )?;
        let dir = env.snapshot_dir(&format!("r{subtask}"));
        s.snapshot_to(&dir)?;
        dirs.push(dir);
    }
    for entry in std::fs::read_dir(dirs[1].join("rocksdb")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sst") {
            std::fs::write(&path, b"garbage").unwrap();
        }
    }
    let mut s = open::<u64>(&backend, StateScope::for_subtask("op", 0, 2, GROUPS))?;
    s.restore_from(&dirs)?;
    for k in 0..RESCALE_KEYS {
        expect_key(&mut s, k, owner(k, 2) == 0)?;
    }
    let mut s = whole::<u64>(&backend)?;
    match s.restore_from(&dirs) {
        Err(StateError::Snapshot { path, .. } | StateError::RocksDb { path, .. }) => {
            assert!(path.contains("r1"), "{path}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    Ok(())
}

/// Two new subtasks adopting the same checkpoint (1 → 2) report different
/// identities, so the shared names of their later SST files never collide.
#[cfg(feature = "rocksdb")]
#[test]
fn adopters_of_one_checkpoint_get_distinct_shared_names() -> Result<()> {
    let env = Env::new();
    let backend = rocks_backend(&env);
    let dir = snapshot_of(&backend, &env, "r")?;
    let mut names = Vec::new();
    for subtask in 0..2 {
        let mut s = open::<u64>(&backend, StateScope::for_subtask("op", subtask, 2, GROUPS))?;
        s.restore_from(std::slice::from_ref(&dir))?;
        fill(&mut s, 10_000..10_100)?;
        let files = s.snapshot_to(&env.snapshot_dir(&format!("again-{subtask}")))?;
        names.push(
            files
                .into_iter()
                .filter_map(|f| f.shared_name)
                .collect::<Vec<_>>(),
        );
    }
    assert!(!names[0].is_empty() && !names[1].is_empty());
    assert!(names[0].iter().all(|n| !names[1].contains(n)), "{names:?}");
    Ok(())
}

#[cfg(feature = "rocksdb")]
#[test]
fn truncated_rocksdb_snapshot_is_an_error() -> Result<()> {
    let env = Env::new();
    let backend = rocks_backend(&env);
    let dir = snapshot_of(&backend, &env, "r")?;
    let mut ssts = 0;
    for entry in std::fs::read_dir(dir.join("rocksdb")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sst") {
            // Replace the hard link by a truncated copy.
            let bytes = std::fs::read(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            ssts += 1;
        }
    }
    assert!(ssts > 0);
    let mut s = whole::<u64>(&backend)?;
    match s.restore_from(&[dir]) {
        Err(StateError::Snapshot { path, .. } | StateError::RocksDb { path, .. }) => {
            assert!(path.contains("rocksdb"), "{path}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    Ok(())
}

#[cfg(feature = "rocksdb")]
#[test]
fn snapshot_of_the_other_backend_is_an_error() -> Result<()> {
    let env = Env::new();
    let rocks = rocks_backend(&env);
    let memory_dir = snapshot_of(&StateBackend::Memory, &env, "m")?;
    let rocks_dir = snapshot_of(&rocks, &env, "r")?;
    let mut s = whole::<u64>(&rocks)?;
    let err = s.restore_from(&[memory_dir]).err();
    assert!(
        matches!(&err, Some(StateError::Snapshot { path, reason })
            if path.ends_with("m") && reason.contains("in-memory")),
        "{err:?}"
    );
    let mut s = whole::<u64>(&StateBackend::Memory)?;
    let err = s.restore_from(&[rocks_dir]).err();
    assert!(
        matches!(&err, Some(StateError::Snapshot { path, reason })
            if path.ends_with("r") && reason.contains("RocksDB")),
        "{err:?}"
    );
    assert_snapshot_error(s.restore_from(&[env.snapshot_dir("empty")]), "empty");
    assert_snapshot_error(s.restore_from(&[env.dir.path().join("missing")]), "missing");
    Ok(())
}

/// A RocksDB snapshot is recognised in every build, so restoring one into
/// memory (or without the `rocksdb` feature) is an error naming it.
#[test]
fn a_rocksdb_snapshot_is_named_when_restored_into_memory() -> Result<()> {
    let env = Env::new();
    let dir = env.snapshot_dir("r");
    std::fs::write(dir.join("rocksdb-state.meta"), b"").map_err(|e| StateError::Io {
        path: dir.display().to_string(),
        source: e,
    })?;
    let mut s = whole::<u64>(&StateBackend::Memory)?;
    let err = s.restore_from(&[dir]).err();
    assert!(
        matches!(&err, Some(StateError::Snapshot { path, reason })
            if path.ends_with("r") && reason.contains("RocksDB state backend")),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn another_number_of_key_groups_is_an_error() -> Result<()> {
    let env = Env::new();
    #[allow(unused_mut)]
    let mut backends = vec![("m", StateBackend::Memory)];
    #[cfg(feature = "rocksdb")]
    backends.push(("r", rocks_backend(&env)));
    for (name, backend) in backends {
        let dir = snapshot_of(&backend, &env, name)?;
        let mut s = open::<u64>(&backend, StateScope::for_subtask("op", 0, 1, 64))?;
        let err = s.restore_from(&[dir]).err();
        assert!(
            matches!(&err, Some(StateError::Snapshot { reason, .. }) if reason.contains("key groups")),
            "{err:?}"
        );
    }
    Ok(())
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_snapshot_lists_shared_sst_files() -> Result<()> {
    let env = Env::new();
    let backend = rocks_backend(&env);
    let mut s = whole::<u64>(&backend)?;
    fill(&mut s, 0..100)?;
    let first = s.snapshot_to(&env.snapshot_dir("1"))?;
    fill(&mut s, 100..200)?;
    let second = s.snapshot_to(&env.snapshot_dir("2"))?;
    let shared = |files: &[tideline_state::SnapshotFile]| -> Vec<String> {
        files.iter().filter_map(|f| f.shared_name.clone()).collect()
    };
    let (a, b) = (shared(&first), shared(&second));
    assert!(!a.is_empty());
    assert!(first
        .iter()
        .all(|f| f.shared_name.is_some() == f.name.ends_with(".sst")));
    // Incremental: the second checkpoint reuses the first one's SST files.
    assert!(a.iter().all(|n| b.contains(n)), "{a:?} vs {b:?}");
    assert!(b.len() > a.len());
    // Another database never produces the same shared names.
    let mut other = whole::<u64>(&backend)?;
    fill(&mut other, 0..100)?;
    let c = shared(&other.snapshot_to(&env.snapshot_dir("3"))?);
    assert!(c.iter().all(|n| !a.contains(n)));
    Ok(())
}

#[test]
fn scopes_split_the_key_groups() {
    for groups in [1u16, 7, 128, 1000] {
        for parallelism in 1..=usize::from(groups).min(9) {
            let mut next = 0;
            for subtask in 0..parallelism {
                let scope = StateScope::for_subtask("op", subtask, parallelism, groups);
                assert_eq!(scope.key_group_range.start, next);
                for g in scope.key_group_range.clone() {
                    assert_eq!(subtask_for_key_group(g, groups, parallelism), subtask);
                }
                next = scope.key_group_range.end;
            }
            assert_eq!(next, groups);
        }
    }
}
