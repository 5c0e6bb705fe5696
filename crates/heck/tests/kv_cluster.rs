//! Three `heck kv` processes on loopback: concurrent puts become siblings everywhere, a later
//! put supersedes them everywhere, and a replica killed with SIGKILL and restarted catches up.
#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::wait_for;

mod common;

struct Replica {
    name: String,
    gossip: SocketAddr,
    http: SocketAddr,
    peers: Vec<SocketAddr>,
    child: Option<Child>,
}

impl Replica {
    fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_heck"));
        cmd.args([
            "kv",
            "--name",
            &self.name,
            "--listen",
            &self.gossip.to_string(),
            "--http",
            &self.http.to_string(),
        ])
        .args(["--gossip-interval", "50ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        for p in &self.peers {
            cmd.args(["--peer", &p.to_string()]);
        }
        self.child = Some(cmd.spawn().unwrap());
        let up = wait_for(Duration::from_secs(10), || {
            common::get(self.http, "/kv").0 == 200
        })
        .is_some();
        assert!(up, "{} did not start", self.name);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
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
    let p = common::free_ports(6);
    let addr = common::local;
    let gossip = [addr(p[0]), addr(p[1]), addr(p[2])];
    let mut reps: Vec<Replica> = (0..3)
        .map(|i| Replica {
            name: format!("kv{i}"),
            gossip: gossip[i],
            http: addr(p[3 + i]),
            peers: gossip.iter().copied().filter(|g| *g != gossip[i]).collect(),
            child: None,
        })
        .collect();
    for r in &mut reps {
        r.start();
    }

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
