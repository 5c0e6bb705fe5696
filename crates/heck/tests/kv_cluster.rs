//! Three `heck kv` processes on loopback: concurrent puts become siblings everywhere, a later
//! put supersedes them everywhere, and a replica killed with SIGKILL and restarted catches up.
//! A replica with another key is never accepted.
#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Dir, wait_for};

mod common;

struct Replica {
    name: String,
    gossip: SocketAddr,
    http: SocketAddr,
    peers: Vec<SocketAddr>,
    key: PathBuf,
    /// Bind the gossip socket to 0.0.0.0 (and advertise `gossip`).
    unspecified: bool,
    child: Option<common::Started>,
}

/// A directory removed at the end of the test, holding key files.
/// A key file in `dir` whose one key is 32 bytes of `byte`.
fn key_file(dir: &Dir, name: &str, byte: u8) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, format!("{}\n", format!("{byte:02x}").repeat(32))).unwrap();
    path
}

fn replicas(n: usize, key: &Path) -> Vec<Replica> {
    let p = common::free_ports(2 * n);
    let gossip: Vec<SocketAddr> = (0..n).map(|i| common::local(p[i])).collect();
    (0..n)
        .map(|i| Replica {
            name: format!("kv{i}"),
            gossip: gossip[i],
            http: common::local(p[n + i]),
            peers: gossip.iter().copied().filter(|g| *g != gossip[i]).collect(),
            key: key.to_path_buf(),
            unspecified: false,
            child: None,
        })
        .collect()
}

/// Start every replica in turn. A replica whose gossip port was taken starts on another one;
/// the replicas started after it are told its new address (those started before learn it when
/// it dials them: a replica that proves the key is learnt as a peer).
fn start_all(reps: &mut [Replica]) {
    for i in 0..reps.len() {
        reps[i].start();
        let gossip: Vec<SocketAddr> = reps.iter().map(|r| r.gossip).collect();
        for r in reps.iter_mut() {
            r.peers = gossip.iter().copied().filter(|g| *g != r.gossip).collect();
        }
    }
}

impl Replica {
    /// Start the replica and wait until its API answers. Ports can be taken by another process
    /// between `free_ports` and the child's bind: then it starts again on fresh ports. Any
    /// other failure shows the child's exit status and the end of its stderr.
    fn start(&mut self) {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let http = self.http;
            let started = common::start(&mut self.command(), Duration::from_secs(10), || {
                common::get(http, "/kv").0 == 200
            });
            match started {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) if e.addr_in_use() && attempt < ATTEMPTS => {
                    let p = common::free_ports(2);
                    (self.gossip, self.http) = (common::local(p[0]), common::local(p[1]));
                }
                Err(e) => panic!("{} (attempt {attempt}) {e}", self.name),
            }
        }
    }

    fn command(&self) -> Command {
        let listen = if self.unspecified {
            format!("0.0.0.0:{}", self.gossip.port())
        } else {
            self.gossip.to_string()
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_heck"));
        cmd.args([
            "kv",
            "--name",
            &self.name,
            "--listen",
            &listen,
            "--http",
            &self.http.to_string(),
        ])
        .args(["--gossip-interval", "50ms"])
        .arg("--encrypt-key-file")
        .arg(&self.key)
        .stdout(Stdio::null());
        for p in &self.peers {
            cmd.args(["--peer", &p.to_string()]);
        }
        if self.unspecified {
            cmd.args(["--advertise-addr", &self.gossip.to_string()]);
        }
        cmd
    }

    /// SIGKILL (dropping the child kills and reaps it).
    fn kill(&mut self) {
        self.child = None;
    }

    fn values(&self, key: &str) -> Vec<String> {
        let (status, body) = common::get(self.http, &format!("/kv/{key}"));
        assert_eq!(status, 200, "{body}");
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

    /// `GET /kv` as JSON.
    fn dump(&self) -> serde_json::Value {
        let (status, body) = common::get(self.http, "/kv");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn put(&self, key: &str, value: &str) {
        assert_eq!(
            common::http(self.http, "PUT", &format!("/kv/{key}"), Some(value), None).0,
            204
        );
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn three_replicas_keep_siblings_supersede_them_and_catch_up_after_a_kill() {
    let dir = Dir::new("kv-cluster");
    let mut reps = replicas(3, &key_file(&dir, "key", 0x42));
    start_all(&mut reps);

    // Concurrent puts on two replicas: both values kept, everywhere. Two puts a few
    // microseconds apart are concurrent unless a gossip round slips between them; if one
    // does, try a fresh key (the assertion is about what concurrency produces).
    let mut key = String::new();
    for attempt in 0..10 {
        key = format!("k{attempt}");
        let (a, b) = (&reps[0], &reps[1]);
        std::thread::scope(|s| {
            s.spawn(|| a.put(&key, "from-0"));
            s.spawn(|| b.put(&key, "from-1"));
        });
        let settled = wait_for(Duration::from_secs(10), || {
            reps.iter().all(|r| {
                r.values(&key).len() == reps[2].values(&key).len() && !r.values(&key).is_empty()
            }) && reps.iter().all(|r| r.values(&key) == reps[0].values(&key))
        })
        .is_some();
        assert!(settled, "replicas did not agree on {key}");
        if reps[0].values(&key).len() == 2 {
            break;
        }
    }
    for r in &reps {
        assert_eq!(
            r.values(&key),
            ["from-0", "from-1"],
            "{} keeps both siblings",
            r.name
        );
    }

    // A later put (which has seen both) supersedes them everywhere.
    reps[2].put(&key, "final");
    assert!(
        wait_for(Duration::from_secs(10), || reps
            .iter()
            .all(|r| r.values(&key) == ["final"]))
        .is_some()
    );

    // Kill replica 1 hard, write while it is down, restart it: it catches up.
    reps[1].kill();
    reps[0].put("while-down", "yes");
    assert_eq!(
        common::http(reps[0].http, "DELETE", &format!("/kv/{key}"), None, None).0,
        204
    );
    reps[1].start();
    let caught_up = wait_for(Duration::from_secs(15), || {
        reps[1].values("while-down") == ["yes"] && reps[1].values(&key).is_empty()
    })
    .is_some();
    assert!(
        caught_up,
        "restarted replica has {:?} and {:?}",
        reps[1].values("while-down"),
        reps[1].values(&key)
    );
    // And it ends up having seen exactly what replica 0 has seen.
    let vv = |r: &Replica| -> serde_json::Value {
        let (_, dump) = common::get(r.http, "/kv");
        serde_json::from_str::<serde_json::Value>(&dump).unwrap()["version_vector"].clone()
    };
    assert!(
        wait_for(Duration::from_secs(15), || vv(&reps[1]) == vv(&reps[0])).is_some(),
        "{} vs {}",
        vv(&reps[1]),
        vv(&reps[0])
    );
    assert!(vv(&reps[0]).as_object().unwrap().len() >= 3);
}

#[test]
fn a_replica_with_another_key_is_not_accepted() {
    let dir = Dir::new("kv-wrong-key");
    let mut reps = replicas(3, &key_file(&dir, "key", 0x42));
    reps[2].key = key_file(&dir, "wrong", 0x24);
    start_all(&mut reps);
    // The impostor dials both others (and they dial it): every handshake fails.
    assert!(
        common::wait_for(Duration::from_secs(10), || {
            reps[0].dump()["stream"]["rejected"]["unauthenticated"]
                .as_u64()
                .unwrap()
                > 0
        })
        .is_some(),
        "kv0 refused the impostor: {}",
        reps[0].dump()
    );
    reps[2].put("from-impostor", "x");
    reps[1].put("from-friend", "y");
    assert!(
        wait_for(Duration::from_secs(10), || reps[0].values("from-friend")
            == ["y"])
        .is_some(),
        "the two with the key replicate"
    );
    // Give the impostor's write the time the friend's took, and then some.
    std::thread::sleep(Duration::from_millis(500));
    assert!(reps[0].values("from-impostor").is_empty());
    assert!(reps[1].values("from-impostor").is_empty());
    let peers = reps[0].dump()["peers"].clone();
    assert_eq!(peers.as_object().unwrap().len(), 1, "only kv1: {peers}");
    assert!(peers.get("kv1").is_some(), "{peers}");
    let impostor_peers = reps[2].dump()["peers"].clone();
    assert_eq!(
        impostor_peers.as_object().unwrap().len(),
        0,
        "{impostor_peers}"
    );
}

#[test]
fn replicas_bound_to_the_unspecified_address_are_acknowledged_and_collect_their_buffers() {
    // Review K3: when the listen address was the identity, a replica bound to 0.0.0.0 was
    // named 0.0.0.0:port by its peers, their acks never matched, and no delta was ever
    // collected. Now the name is the handshake's and the address the advertised one.
    let dir = Dir::new("kv-unspecified");
    let mut reps = replicas(2, &key_file(&dir, "key", 0x42));
    for r in &mut reps {
        r.unspecified = true;
    }
    start_all(&mut reps);
    // Once kv0 has a peer, a write stays buffered until every peer has acknowledged it.
    assert!(
        wait_for(Duration::from_secs(10), || !reps[0].dump()["peers"]["kv1"]
            .is_null())
        .is_some()
    );
    reps[0].put("k", "v");
    assert!(
        wait_for(Duration::from_secs(10), || reps[1].values("k") == ["v"]).is_some(),
        "replicated"
    );
    assert!(
        wait_for(
            Duration::from_secs(10),
            || reps[0].dump()["buffered_deltas"] == 0
        )
        .is_some(),
        "kv1's ack reached kv0, which dropped the acknowledged delta: {}",
        reps[0].dump()
    );
    assert_eq!(
        reps[0].dump()["peers"]["kv1"],
        reps[1].gossip.to_string(),
        "kv1 is known at its advertised address"
    );
}

#[test]
fn a_replica_whose_port_was_taken_before_it_bound_starts_on_fresh_ports() {
    // What made this file flaky: a port found free is taken by another process before the
    // child binds it. Take the gossip port on purpose, after free_ports said it was free.
    // If another test takes the port first, the race itself happened: pick others until this
    // test holds one.
    let dir = Dir::new("kv-port-taken");
    let key = key_file(&dir, "key", 0x42);
    let (mut reps, taken) = (0..20)
        .find_map(|_| {
            let reps = replicas(1, &key);
            let taken = std::net::TcpListener::bind(reps[0].gossip).ok()?;
            Some((reps, taken))
        })
        .expect("a free port to take within 20 tries");
    reps[0].start();
    assert_ne!(reps[0].gossip, taken.local_addr().unwrap());
    assert_eq!(common::get(reps[0].http, "/kv").0, 200);
}

#[test]
fn a_child_that_dies_at_start_is_reported_with_its_status_and_stderr() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_heck"));
    cmd.args(["kv", "--name", "x", "--listen", "127.0.0.1:0", "--http"])
        .arg(common::local(common::free_ports(1)[0]).to_string())
        .arg("--insecure-default-key");
    let failure = match common::start(&mut cmd, Duration::from_secs(10), || false) {
        Ok(_) => panic!("a listen port of 0 is refused"),
        Err(e) => e,
    };
    let shown = failure.to_string();
    assert!(shown.starts_with("exited (exit status: 1)"), "{shown}");
    assert!(shown.contains("has port 0"), "{shown}");
    assert!(!failure.addr_in_use());
}
