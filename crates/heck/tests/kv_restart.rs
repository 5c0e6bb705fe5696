//! Review C1, with real processes: a `heck kv` replica killed and restarted at the same address
//! while another peer is down gets back what it wrote before, and the replicas converge.
//!
//! Before the fix, "never send a group back to where it came from" was keyed by the peer's
//! address: n1 never sent the restarted n2 the value its earlier incarnation had written, so n2
//! stayed empty, a later put there became a sibling at n1 (`[a, b]`) and n2 showed `[b]`
//! forever. The simulator reproduces the same run in `crates/heck-crdt/tests/restarts.rs`.
#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::wait_for;

mod common;

struct Kv {
    name: String,
    gossip: SocketAddr,
    http: SocketAddr,
    peers: Vec<SocketAddr>,
    child: Option<common::Started>,
}

impl Kv {
    /// Start it and wait until its API answers; on a port taken by another process since
    /// `free_ports`, start again on fresh ports if `may_move`. Otherwise a failure shows the
    /// child's exit status and stderr.
    fn start(&mut self, may_move: bool) {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_heck"));
            cmd.args(["kv", "--name", &self.name])
                .args(["--listen", &self.gossip.to_string()])
                .args(["--http", &self.http.to_string()])
                .args(["--gossip-interval", "50ms"])
                .arg("--insecure-default-key")
                .stdout(Stdio::null());
            for p in &self.peers {
                cmd.args(["--peer", &p.to_string()]);
            }
            let http = self.http;
            match common::start(&mut cmd, Duration::from_secs(10), || {
                common::get(http, "/kv").0 == 200
            }) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) if may_move && e.addr_in_use() && attempt < ATTEMPTS => {
                    let p = common::free_ports(2);
                    (self.gossip, self.http) = (common::local(p[0]), common::local(p[1]));
                }
                Err(e) => panic!("{} (attempt {attempt}) {e}", self.name),
            }
        }
    }

    /// SIGKILL: no goodbye, no flush (dropping the child kills and reaps it).
    fn kill(&mut self) {
        self.child = None;
    }

    fn values(&self, key: &str) -> Vec<String> {
        let (status, body) = common::get(self.http, &format!("/kv/{key}"));
        if status != 200 {
            return vec![format!("(HTTP {status})")];
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut out: Vec<String> = v["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        out.sort();
        out
    }

    fn put(&self, key: &str, value: &str) {
        let path = format!("/kv/{key}");
        let status = common::http(self.http, "PUT", &path, Some(value), None).0;
        assert_eq!(status, 204, "PUT {path} on {}", self.name);
    }
}

impl Drop for Kv {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn a_replica_restarted_while_a_peer_is_down_converges_with_the_others() {
    let p = common::free_ports(6);
    let gossip: Vec<SocketAddr> = p[..3].iter().map(|&port| common::local(port)).collect();
    let mut n: Vec<Kv> = (0..3)
        .map(|i| Kv {
            name: format!("n{}", i + 1),
            gossip: gossip[i],
            http: common::local(p[3 + i]),
            peers: gossip.iter().copied().filter(|g| *g != gossip[i]).collect(),
            child: None,
        })
        .collect();
    // In turn; a replica that had to move to fresh ports is announced to those after it
    // (those before learn it when it dials them).
    for i in 0..n.len() {
        n[i].start(true);
        let gossip: Vec<SocketAddr> = n.iter().map(|kv| kv.gossip).collect();
        for kv in &mut n {
            kv.peers = gossip.iter().copied().filter(|g| *g != kv.gossip).collect();
        }
    }
    let (n1, n2, n3) = (0, 1, 2);

    // n3 goes down and stays down: it pins nothing and gets nothing.
    n[n3].kill();
    n[n2].put("k", "a");
    assert!(
        wait_for(Duration::from_secs(15), || n[n1].values("k") == ["a"]).is_some(),
        "n1 never got a: {:?}",
        n[n1].values("k")
    );

    // n2 dies hard and comes back at the same address, as a new replica with nothing.
    n[n2].kill();
    n[n2].start(false);
    // It gets back what its earlier incarnation wrote (before the fix it never did). Waiting
    // for it here makes the next put causally after `a`, so the expected end is exactly [b];
    // a put before would be concurrent with `a`, and [a, b] everywhere would be right.
    assert!(
        wait_for(Duration::from_secs(15), || n[n2].values("k") == ["a"]).is_some(),
        "the restarted n2 never got back a: {:?} (n1 has {:?})",
        n[n2].values("k"),
        n[n1].values("k")
    );
    n[n2].put("k", "b");
    let converged = wait_for(Duration::from_secs(15), || {
        n[n1].values("k") == ["b"] && n[n2].values("k") == ["b"]
    });
    assert!(
        converged.is_some(),
        "n1 has {:?}, n2 has {:?}",
        n[n1].values("k"),
        n[n2].values("k")
    );
}
