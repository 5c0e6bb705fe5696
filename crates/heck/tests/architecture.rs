//! The architecture documents are part of the code: this test reads ARCHITECTURE.md,
//! CONTRIBUTING.md and README.md next to the crate manifests and fails when they disagree.
//!
//! What it checks (each claim is written in ARCHITECTURE.md):
//! - every crate under `crates/` has a row in ARCHITECTURE.md's code map, and every `heck-*`
//!   crate the docs name exists;
//! - every crate the code map calls *pure* has a `clippy.toml` that bans both clocks and says
//!   whose file it is, and no runtime or socket crate among its dependencies;
//! - the pure crates listed in the architecture invariant and in CONTRIBUTING.md are exactly the
//!   code map's pure rows;
//! - `heck-probe` never spawns a task (only the node decides concurrency);
//! - `heck-testkit` is never a normal dependency (test support only).
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Crates that would give a pure core IO, a runtime or an ambient source of entropy.
const IO_CRATES: &[&str] = &[
    "tokio",
    "tokio-util",
    "tokio-rustls",
    "hyper",
    "hyper-util",
    "axum",
    "socket2",
    "getrandom",
    "tonic",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Crate directories under `crates/`.
fn crate_dirs() -> BTreeSet<String> {
    fs::read_dir(root().join("crates"))
        .expect("crates/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The code map's rows: (crate, kind), from lines like "| `heck-check` | pure | ... |".
fn code_map() -> Vec<(String, String)> {
    let text = read(&root().join("ARCHITECTURE.md"));
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // ["", "`name`", "kind", "what", ""]
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = cells.get(2)?;
            (name.starts_with("heck")).then(|| (name.to_string(), kind.to_string()))
        })
        .collect()
}

fn pure_crates() -> BTreeSet<String> {
    code_map()
        .into_iter()
        .filter(|(_, kind)| kind == "pure")
        .map(|(name, _)| name)
        .collect()
}

/// Every `heck-xyz` word in `text` (backquoted or not).
fn crate_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("heck-") {
        if i > 0 {
            let before = text.as_bytes()[i - 1];
            if before.is_ascii_alphanumeric() || before == b'_' || before == b'-' || before == b'/'
            {
                continue;
            }
        }
        let word: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        let word = word.trim_end_matches('-');
        if word.len() > "heck-".len() {
            names.insert(word.to_string());
        }
    }
    names
}

/// The names of a manifest's `[dependencies]` (not dev-, not build-dependencies).
fn normal_dependencies(manifest: &str) -> BTreeSet<String> {
    let mut in_deps = false;
    let mut deps = BTreeSet::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            let name = line
                .split(['=', '.', ' '])
                .next()
                .unwrap_or_default()
                .trim();
            deps.insert(name.to_string());
        }
    }
    deps
}

#[test]
fn every_crate_has_a_row_in_the_code_map_and_every_row_is_a_crate() {
    let dirs = crate_dirs();
    let rows: BTreeSet<String> = code_map().into_iter().map(|(name, _)| name).collect();
    let missing: Vec<_> = dirs.difference(&rows).collect();
    let phantom: Vec<_> = rows.difference(&dirs).collect();
    assert!(
        missing.is_empty(),
        "crates without a row in ARCHITECTURE.md's code map: {missing:?}"
    );
    assert!(
        phantom.is_empty(),
        "code-map rows without a crate: {phantom:?}"
    );
}

#[test]
fn every_crate_the_docs_name_exists() {
    let dirs = crate_dirs();
    for doc in ["ARCHITECTURE.md", "CONTRIBUTING.md", "README.md"] {
        let named = crate_names_in(&read(&root().join(doc)));
        let unknown: Vec<_> = named.difference(&dirs).collect();
        assert!(
            unknown.is_empty(),
            "{doc} names crates that do not exist: {unknown:?}"
        );
    }
}

#[test]
fn pure_crates_ban_both_clocks_in_their_own_clippy_toml() {
    let pure = pure_crates();
    assert!(pure.len() >= 5, "the code map lists pure crates: {pure:?}");
    for name in &pure {
        let path = root().join("crates").join(name).join("clippy.toml");
        assert!(path.is_file(), "{name} is pure but has no clippy.toml");
        let text = read(&path);
        for banned in ["std::time::Instant::now", "std::time::SystemTime::now"] {
            assert!(
                text.contains(banned),
                "{name}/clippy.toml does not ban {banned}"
            );
        }
        let header = text.lines().next().unwrap_or_default();
        assert!(
            header.contains(&format!("{name} ")),
            "{name}/clippy.toml's first line should say whose file it is: {header:?}"
        );
    }
}

#[test]
fn pure_crates_depend_on_no_runtime_or_socket_crate() {
    for name in pure_crates() {
        let manifest = read(&root().join("crates").join(&name).join("Cargo.toml"));
        let deps = normal_dependencies(&manifest);
        let io: Vec<_> = deps
            .iter()
            .filter(|d| IO_CRATES.contains(&d.as_str()))
            .collect();
        assert!(io.is_empty(), "{name} is pure but depends on {io:?}");
    }
}

#[test]
fn the_invariant_and_contributing_list_exactly_the_pure_crates() {
    let pure = pure_crates();
    let arch = read(&root().join("ARCHITECTURE.md"));
    let invariant = arch
        .split("*Architecture Invariant:*")
        .find(|p| p.contains("no tokio dependency"))
        .expect("ARCHITECTURE.md states which crates have no tokio dependency");
    let invariant = invariant
        .split("no tokio dependency")
        .next()
        .unwrap_or_default();
    assert_eq!(
        crate_names_in(invariant),
        pure,
        "ARCHITECTURE.md's invariant"
    );

    let contributing = read(&root().join("CONTRIBUTING.md"));
    let rule = contributing
        .split("**Pure cores are sans-IO.**")
        .nth(1)
        .expect("CONTRIBUTING.md has the sans-IO rule")
        .split("\n- ")
        .next()
        .unwrap_or_default();
    assert_eq!(crate_names_in(rule), pure, "CONTRIBUTING.md's sans-IO rule");
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// ARCHITECTURE.md: "every queue between tasks is bounded". No crate that heck ships makes an
/// unbounded channel (tokio's `unbounded_channel`, std's `mpsc::channel`, which has no bound).
/// heck-bench, the benchmark driver, is not part of what runs in production.
#[test]
fn no_crate_makes_an_unbounded_channel() {
    let mut files = Vec::new();
    for dir in crate_dirs().into_iter().filter(|d| d != "heck-bench") {
        rust_files(&root().join("crates").join(dir).join("src"), &mut files);
    }
    assert!(files.len() > 20, "found the sources: {}", files.len());
    for path in files {
        let text = read(&path);
        for banned in ["unbounded_channel", "std::sync::mpsc::channel"] {
            assert!(
                !text.contains(banned),
                "{} makes an unbounded queue ({banned}): bound it and count what is dropped",
                path.display()
            );
        }
    }
}

/// ARCHITECTURE.md: `heck-testkit` is "a dev-dependency only": no crate ships with it.
#[test]
fn the_testkit_is_only_ever_a_dev_dependency() {
    let dirs = crate_dirs();
    assert!(dirs.contains("heck-testkit"), "{dirs:?}");
    for name in dirs {
        let manifest = read(&root().join("crates").join(&name).join("Cargo.toml"));
        assert!(
            !normal_dependencies(&manifest).contains("heck-testkit"),
            "{name} depends on heck-testkit outside [dev-dependencies]"
        );
    }
}

#[test]
fn the_probe_crate_never_spawns_a_task() {
    let src = root().join("crates/heck-probe/src");
    for entry in fs::read_dir(&src).expect("heck-probe/src") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = read(&path);
            assert!(
                !text.contains("spawn("),
                "{} spawns a task; only heck-node decides concurrency",
                path.display()
            );
        }
    }
}

#[test]
fn the_crate_name_scanner_finds_names_and_ignores_paths_and_suffixes() {
    let names =
        crate_names_in("use `heck-swim` and heck-crdt, not crates/heck-x or my-heck-y, heck_z.");
    assert_eq!(
        names,
        BTreeSet::from(["heck-swim".to_string(), "heck-crdt".to_string()])
    );
}
