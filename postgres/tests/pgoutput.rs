//! The `pgoutput` decoder on real messages: `fixtures/pgoutput_v1.txt`,
//! captured from PostgreSQL 15 by `fixtures/capture.sh` running
//! `fixtures/pgoutput_v1.sql`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Value};
use tideline_postgres::pgoutput::{decode, Datum, Message, OldRow, Relation, ReplicaIdentity};
use tideline_postgres::row::{decode_key_row, decode_row};

/// Every message of the fixture, with the comment above it.
fn fixture() -> Vec<(String, Message)> {
    let text = include_str!("fixtures/pgoutput_v1.txt");
    let mut comment = String::new();
    let mut messages = Vec::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# ") {
            comment = c.to_string();
        } else if !line.trim().is_empty() && !line.starts_with('#') {
            let bytes: Vec<u8> = (0..line.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap())
                .collect();
            let message = decode(&Bytes::from(bytes)).unwrap_or_else(|e| panic!("{comment}: {e}"));
            messages.push((comment.clone(), message));
        }
    }
    messages
}

/// The messages whose comment starts with `kind` and mentions `step`.
fn find<'a>(all: &'a [(String, Message)], kind: &str, step: &str) -> Vec<&'a Message> {
    all.iter()
        .filter(|(c, _)| c.starts_with(kind) && c.contains(&format!("-- step {step},")))
        .map(|(_, m)| m)
        .collect()
}

fn relations(all: &[(String, Message)]) -> HashMap<String, Relation> {
    all.iter()
        .filter_map(|(_, m)| match m {
            Message::Relation(r) => Some((r.name.clone(), r.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn every_captured_message_decodes() {
    let all = fixture();
    assert_eq!(all.len(), 54);
    let begins = all
        .iter()
        .filter(|(_, m)| matches!(m, Message::Begin { .. }))
        .count();
    let commits = all
        .iter()
        .filter(|(_, m)| matches!(m, Message::Commit { .. }))
        .count();
    assert_eq!((begins, commits), (15, 15));
    // Begin's final LSN is its Commit's commit LSN.
    let mut open = None;
    for (_, message) in &all {
        match message {
            Message::Begin { final_lsn, .. } => open = Some(*final_lsn),
            Message::Commit {
                commit_lsn,
                end_lsn,
                ..
            } => {
                assert_eq!(Some(*commit_lsn), open.take());
                assert!(end_lsn > commit_lsn);
            }
            _ => {}
        }
    }
}

#[test]
fn relations_describe_columns_keys_and_replica_identity() {
    let all = fixture();
    let first = find(&all, "Relation cap_default", "1");
    let Message::Relation(default) = first[0] else {
        panic!()
    };
    assert_eq!(default.namespace, "public");
    assert_eq!(default.replica_identity, ReplicaIdentity::Default);
    let names: Vec<(&str, bool, u32)> = default
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.key, c.type_oid))
        .collect();
    assert_eq!(
        names,
        vec![
            ("id", true, 23),
            ("big", false, 20),
            ("name", false, 25),
            ("amount", false, 1700),
            ("flag", false, 16),
            ("at", false, 1184),
            ("doc", false, 3802),
        ]
    );
    let Message::Relation(full) = find(&all, "Relation cap_full", "8")[0] else {
        panic!()
    };
    assert_eq!(full.replica_identity, ReplicaIdentity::Full);
    // ALTER TABLE ADD COLUMN: a new description with one more column.
    let Message::Relation(altered) = find(&all, "Relation cap_default", "13")[0] else {
        panic!()
    };
    assert_eq!(altered.oid, default.oid);
    assert_eq!(altered.columns.len(), default.columns.len() + 1);
}

#[test]
fn inserts_updates_and_deletes_decode_into_rows() {
    let all = fixture();
    let rels = relations(&all);
    let default = &find(&all, "Relation cap_default", "1")
        .into_iter()
        .find_map(|m| match m {
            Message::Relation(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    let Message::Insert { new, .. } = find(&all, "Insert", "1")[0] else {
        panic!()
    };
    let row: Value = decode_row(&default.columns, new).unwrap();
    assert_eq!(
        row,
        json!({"id": 1, "big": 9_000_000_000_i64, "name": "one", "amount": "12.345",
               "flag": true, "at": "2024-01-02 03:04:05.123456+00", "doc": {"a": [1, 2.5], "b": null}})
    );
    let Message::Insert { new, .. } = find(&all, "Insert", "2")[0] else {
        panic!()
    };
    assert_eq!(new.iter().filter(|d| **d == Datum::Null).count(), 6);

    // Key unchanged under DEFAULT: no old row.
    let Message::Update { old, .. } = find(&all, "Update", "4")[0] else {
        panic!()
    };
    assert_eq!(*old, None);
    // Key changed: the old key.
    let Message::Update {
        old: Some((OldRow::Key, old)),
        new,
        ..
    } = find(&all, "Update", "5")[0]
    else {
        panic!()
    };
    let old_key: Value = decode_key_row(&default.columns, old).unwrap();
    let new_row: Value = decode_row(&default.columns, new).unwrap();
    assert_ne!(old_key["id"], new_row["id"]);
    let Message::Delete {
        old: (OldRow::Key, old),
        ..
    } = find(&all, "Delete", "7")[0]
    else {
        panic!()
    };
    assert_eq!(old[0], Datum::Text(Bytes::from_static(b"10")));
    assert!(old[1..].iter().all(|d| *d == Datum::Null));

    // FULL: the whole old row.
    let full = &rels["cap_full"];
    let Message::Update {
        old: Some((OldRow::Full, old)),
        new,
        ..
    } = find(&all, "Update", "9")[0]
    else {
        panic!()
    };
    let before: Value = decode_row(&full.columns, old).unwrap();
    let after: Value = decode_row(&full.columns, new).unwrap();
    assert_eq!(before["id"], after["id"]);
    assert_eq!(after["name"], json!("A"));
    assert_ne!(before["name"], after["name"]);
    let Message::Delete {
        old: (OldRow::Full, old),
        ..
    } = find(&all, "Delete", "10")[0]
    else {
        panic!()
    };
    assert!(old.contains(&Datum::Null));
}

#[test]
fn an_update_that_keeps_a_toasted_value_does_not_send_it() {
    let all = fixture();
    let rels = relations(&all);
    let toast = &rels["cap_toast"];
    let Message::Insert { new, .. } = find(&all, "Insert", "11")[0] else {
        panic!()
    };
    let Datum::Text(big) = &new[2] else { panic!() };
    assert_eq!(big.len(), 10240);
    let Message::Update { old: None, new, .. } = find(&all, "Update", "12")[0] else {
        panic!()
    };
    assert_eq!(new[2], Datum::UnchangedToast);
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct WithBig {
        id: i32,
        big: String,
    }
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct WithoutBig {
        id: i32,
        n: i32,
    }
    let err = decode_row::<WithBig>(&toast.columns, new).unwrap_err();
    assert!(
        err.0.contains("column `big`") && err.0.contains("TOAST"),
        "{err}"
    );
    let row: WithoutBig = decode_row(&toast.columns, new).unwrap();
    assert_eq!(row.id, 1);
}

#[test]
fn truncates_name_their_tables_and_options() {
    let all = fixture();
    let Message::Truncate {
        relations,
        cascade,
        restart_identity,
    } = find(&all, "Truncate", "14")[0]
    else {
        panic!()
    };
    assert_eq!(
        (relations.len(), *cascade, *restart_identity),
        (2, false, false)
    );
    let Message::Truncate {
        relations,
        cascade,
        restart_identity,
    } = find(&all, "Truncate", "15")[0]
    else {
        panic!()
    };
    assert_eq!(
        (relations.len(), *cascade, *restart_identity),
        (1, true, true)
    );
}

#[test]
fn every_cut_of_a_real_message_is_an_error_not_a_panic() {
    let text = include_str!("fixtures/pgoutput_v1.txt");
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let bytes: Vec<u8> = (0..line.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap())
            .collect();
        for cut in 0..bytes.len().min(64) {
            let _ = decode(&Bytes::copy_from_slice(&bytes[..cut]));
        }
        let short = &bytes[..bytes.len() - 1];
        assert!(decode(&Bytes::copy_from_slice(short)).is_err(), "{line}");
    }
}
