//! `heck demo --nodes N`: a local cluster of child agents comes up, every node answers for every
//! target, and SIGTERM ends the demo with all of its children (no orphans).
#![allow(clippy::unwrap_used)]
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Killed, exit_within, get, json, sigterm, wait_for};

mod common;

/// One node as the demo printed it: `  n1    http://127.0.0.1:40345  pid 4350  /tmp/…/n1.log`.
fn node_line(line: &str) -> Option<(SocketAddr, u32)> {
    let mut words = line.split_whitespace();
    let _name = words.next()?;
    let api = words.next()?.strip_prefix("http://")?.parse().ok()?;
    (words.next()? == "pid").then_some(())?;
    let pid = words.next()?.parse().ok()?;
    Some((api, pid))
}

/// Is process `pid` gone? A zombie counts as gone: it runs nothing, and whether it is reaped
/// after its parent exits depends on this machine's init, not on heck.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn a_three_node_demo_forms_one_cluster_every_node_lists_every_target_and_sigterm_ends_it_with_its_children()
 {
    let mut demo = Killed(
        Command::new(env!("CARGO_BIN_EXE_heck"))
            .args(["demo", "--nodes", "3", "--targets", "20"])
            .args(["--api-addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Read its guide on a thread, so a demo that prints nothing cannot hang the test.
    let stdout = demo.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut nodes = Vec::new();
    let mut guide = String::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the demo stopped printing; so far:\n{guide}"));
        guide.push_str(&line);
        guide.push('\n');
        nodes.extend(node_line(&line));
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    assert_eq!(nodes.len(), 3, "three nodes in the guide:\n{guide}");
    for (_, pid) in &nodes {
        assert!(!gone(*pid), "node pid {pid} is running");
    }

    // They form one cluster: every node sees three live members and answers for all 20 targets
    // with the same owners, among n1..n3.
    let owners = |api: SocketAddr| -> Vec<String> {
        let (status, body) = get(api, "/v1/targets");
        if status != 200 {
            return vec![];
        }
        json(&body)
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| t["owner"].as_str().unwrap_or("-").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let live = |api: SocketAddr| {
        json(&get(api, "/v1/node").1)["gossip"]["cluster"]["live_members"].as_u64()
    };
    let agreed = wait_for(Duration::from_secs(20), || {
        let first = owners(nodes[0].0);
        first.len() == 20
            && first
                .iter()
                .all(|o| ["n1", "n2", "n3"].contains(&o.as_str()))
            && nodes
                .iter()
                .all(|(api, _)| owners(*api) == first && live(*api) == Some(3))
    });
    assert!(
        agreed.is_some(),
        "one cluster of three answering for 20 targets: {:?}",
        nodes
            .iter()
            .map(|(api, _)| owners(*api))
            .collect::<Vec<_>>()
    );

    sigterm(demo.0.id());
    let (exit, took) = exit_within(&mut demo.0, Duration::from_secs(15));
    let exit = exit.unwrap_or_else(|| panic!("the demo still runs {took:?} after SIGTERM"));
    assert!(exit.success(), "{exit}");
    for (api, pid) in &nodes {
        assert!(gone(*pid), "node {api} (pid {pid}) outlived the demo");
    }
}
