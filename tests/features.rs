//! The default feature set stays light: `cargo tree` of the facade's
//! dependencies names none of the crates that need a C++ toolchain and
//! libclang (RocksDB, bindgen) or a SQL engine (DataFusion), and with
//! `--features full` it names all of them (so this test can fail).
//!
//! `-e normal` is what a build links; `bindgen` is a build dependency (of
//! `librocksdb-sys`), so it shows only with `-e normal,build`.

use std::process::Command;

/// Crates only optional features may bring in.
const HEAVY: [&str; 4] = ["librocksdb-sys", "rocksdb", "datafusion", "bindgen"];

/// The crate names in `cargo tree -e EDGES` of package `tideline` with
/// `extra` arguments (`--offline`: Cargo.lock is committed).
fn tree(edges: &str, extra: &[&str]) -> Vec<String> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-e", edges, "--prefix", "none"])
        .args(["--manifest-path", manifest, "-p", "tideline"])
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo tree: {e}"));
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn heavy_in(crates: &[String]) -> Vec<&'static str> {
    HEAVY
        .into_iter()
        .filter(|heavy| crates.iter().any(|c| c == heavy))
        .collect()
}

#[test]
fn default_features_pull_in_no_native_or_sql_crates() {
    for edges in ["normal", "normal,build"] {
        let crates = tree(edges, &[]);
        assert!(crates.iter().any(|c| c == "tideline-state"), "{crates:?}");
        assert_eq!(heavy_in(&crates), Vec::<&str>::new(), "-e {edges}");
        // The web UI's HTTP stack comes with the `web` feature only.
        assert!(!crates.iter().any(|c| c == "axum"), "-e {edges}: axum");
    }
}

#[test]
fn full_features_do_pull_them_in() {
    let crates = tree("normal", &["--features", "full"]);
    assert!(crates.iter().any(|c| c == "axum"), "--features full: axum");
    assert_eq!(
        heavy_in(&crates),
        ["librocksdb-sys", "rocksdb", "datafusion"],
        "-e normal --features full"
    );
    let crates = tree("normal,build", &["--features", "full"]);
    assert_eq!(heavy_in(&crates), HEAVY, "-e normal,build --features full");
}
