//! `heck ownership`, run as a user would: the real binary, real files.
#![allow(clippy::unwrap_used)]
use std::path::PathBuf;
use std::process::{Command, Output};

fn heck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_heck"))
        .args(args)
        .output()
        .expect("run heck")
}

fn targets_file(name: &str, lines: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("heck-ownership-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("targets.txt");
    std::fs::write(&path, lines).unwrap();
    path
}

#[test]
fn json_lists_every_member_in_priority_order_for_every_target() {
    let f = targets_file(
        "json",
        "web-1\nweb-2 # trailing comment\n\n# only a comment\ndb\n",
    );
    let out = heck(&[
        "ownership",
        "--members",
        "a,b,c",
        "--targets",
        f.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["target"], "web-2");
    for row in rows {
        let mut owners: Vec<&str> = row["owners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        owners.sort();
        assert_eq!(owners, ["a", "b", "c"]);
    }
}

#[test]
fn without_prints_exactly_the_leavers_targets_and_where_they_go() {
    let lines: String = (0..100).map(|i| format!("t{i}\n")).collect();
    let f = targets_file("without", &lines);
    let path = f.to_str().unwrap();
    let listing = heck(&[
        "ownership",
        "--members",
        "a,b,c,d",
        "--targets",
        path,
        "--json",
    ]);
    let rows: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let owned_by_b: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["owners"][0] == "b")
        .map(|r| {
            (
                r["target"].as_str().unwrap().to_string(),
                r["owners"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();

    let out = heck(&[
        "ownership",
        "--members",
        "a,b,c,d",
        "--targets",
        path,
        "--without",
        "b",
        "--json",
    ]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut moves: Vec<(String, String)> = report["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["from"], "b");
            (
                m["target"].as_str().unwrap().to_string(),
                m["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    moves.sort();
    let mut expected = owned_by_b;
    expected.sort();
    assert!(!expected.is_empty());
    assert_eq!(
        moves, expected,
        "each of b's targets goes to its second in line"
    );
}

#[test]
fn summary_reports_load_per_member_and_reads_targets_from_a_config() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/heck.toml");
    let out = heck(&[
        "ownership",
        "--members",
        "a,b",
        "--weights",
        "a=3",
        "--config",
        config,
        "--summary",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &report["summary"];
    assert_eq!(s["targets"], 4);
    let owned: u64 = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["owned"].as_u64().unwrap())
        .sum();
    assert_eq!(owned, 4);
    assert_eq!(s["members"][0]["weight"], 3.0);
}

#[test]
fn bad_input_is_a_clear_error_and_a_non_zero_exit() {
    let f = targets_file("bad", "x\n");
    let path = f.to_str().unwrap();
    for (args, needle) in [
        (vec!["--members", "a,a"], "listed twice"),
        (
            vec!["--members", "a,b", "--weights", "a=zero"],
            "is not a number",
        ),
        (
            vec!["--members", "a,b", "--weights", "a=-1"],
            "greater than 0",
        ),
        (
            vec!["--members", "a,b", "--without", "q"],
            "not one of --members",
        ),
        (vec!["--members", "a", "--replicas", "0"], "at least 1"),
    ] {
        let mut all = vec!["ownership", "--targets", path];
        all.extend(args);
        let out = heck(&all);
        assert_eq!(out.status.code(), Some(1), "{all:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{all:?}: {err}");
    }
    let out = heck(&[
        "ownership",
        "--members",
        "a",
        "--targets",
        "/nonexistent/targets.txt",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/targets.txt"));
}
