//! Five real `heck agent` processes gossiping over loopback UDP (SWIM, fast profile, encrypted):
//! they find each other; one killed with SIGKILL is marked dead by the others; restarted, it
//! rejoins; a node with the wrong key never joins.
#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dir, get, wait_for};

mod common;

struct Node {
    name: String,
    api: SocketAddr,
    args: Vec<String>,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_heck"))
            .arg("agent")
            .args(&self.args)
            .env_remove("HECK_API_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        assert!(
            wait_for(Duration::from_secs(10), || get(self.api, "/v1/node").0
                == 200)
            .is_some(),
            "{} up",
            self.name
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// name → state, as this node sees the cluster.
    fn view(&self) -> Vec<(String, String)> {
        let (status, body) = get(self.api, "/v1/members");
        if status != 200 {
            return vec![];
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|m| {
                        (
                            m["name"].as_str().unwrap_or("").to_string(),
                            m["state"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn state_of(&self, name: &str) -> Option<String> {
        self.view()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn five_agents_detect_a_kill_readmit_a_restart_and_refuse_a_wrong_key() {
    let dir = Dir::new("cluster");
    let config = dir.0.join("heck.toml");
    std::fs::write(&config, "# no targets: this test is about membership\n").unwrap();
    let key = dir.0.join("key");
    std::fs::write(
        &key,
        "# the cluster key\n0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let wrong = dir.0.join("wrong-key");
    std::fs::write(
        &wrong,
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\n",
    )
    .unwrap();

    let p = common::free_ports(12);
    let addr = common::local;
    let seed = addr(p[1]);
    let mut nodes: Vec<Node> = (0..6)
        .map(|i| {
            let (api, gossip) = (addr(p[2 * i]), addr(p[2 * i + 1]));
            let name = format!("n{i}");
            let mut args: Vec<String> = vec![
                "--config".into(),
                config.display().to_string(),
                "--api-addr".into(),
                api.to_string(),
                "--gossip-addr".into(),
                gossip.to_string(),
                "--node-name".into(),
                name.clone(),
                "--gossip-profile".into(),
                "fast".into(),
                "--encrypt-key-file".into(),
                if i == 5 {
                    wrong.display().to_string()
                } else {
                    key.display().to_string()
                },
            ];
            if i > 0 {
                args.extend(["--join".into(), seed.to_string()]);
            }
            Node {
                name,
                api,
                args,
                child: None,
            }
        })
        .collect();
    for n in nodes.iter_mut().take(5) {
        n.start();
    }
    let all_alive = |nodes: &[Node], live: &[usize]| {
        live.iter().all(|&i| {
            let view = nodes[i].view();
            live.iter().all(|&j| {
                view.iter()
                    .any(|(n, s)| *n == nodes[j].name && s == "alive")
            })
        })
    };
    assert!(
        wait_for(Duration::from_secs(20), || all_alive(
            &nodes,
            &[0, 1, 2, 3, 4]
        ))
        .is_some(),
        "the five found each other"
    );

    // SIGKILL n3: the others mark it dead. Fast profile: suspicion min ≈ 0.8 s at n = 5, max 6×;
    // the bound here is generous for a loaded CI machine.
    nodes[3].kill();
    let killed = Instant::now();
    let dead = wait_for(Duration::from_secs(20), || {
        [0, 1, 2, 4]
            .iter()
            .all(|&i| nodes[i].state_of("n3").as_deref() == Some("dead"))
    })
    .is_some();
    assert!(
        dead,
        "n3 dead everywhere within 20 s; views: {:?}",
        nodes[0].view()
    );
    eprintln!("kill -9 → dead at every member: {:?}", killed.elapsed());

    // Restarted (a new incarnation: its start time), it rejoins.
    nodes[3].start();
    assert!(
        wait_for(Duration::from_secs(20), || all_alive(
            &nodes,
            &[0, 1, 2, 3, 4]
        ))
        .is_some(),
        "n3 rejoined"
    );

    // A node with the wrong key: its packets fail authentication; it never joins. Rather than
    // sleep and hope, wait until the seed has rejected several of its packets (counted), then
    // check that nobody let it in.
    let bad_packets = |n: &Node| -> u64 {
        let (_, info) = get(n.api, "/v1/node");
        serde_json::from_str::<serde_json::Value>(&info).unwrap()["gossip"]["dropped_bad_packets"]
            .as_u64()
            .unwrap()
    };
    let before = bad_packets(&nodes[0]);
    nodes[5].start();
    assert!(
        wait_for(Duration::from_secs(15), || bad_packets(&nodes[0])
            >= before + 2)
        .is_some(),
        "the seed never saw n5's packets"
    );
    for n in nodes.iter().take(5) {
        assert_eq!(n.state_of("n5"), None, "{} must not know n5", n.name);
    }
    let view5 = nodes[5].view();
    assert_eq!(view5.len(), 1, "n5 knows only itself: {view5:?}");

    // Garbage to a gossip port is dropped and counted too, and the agent lives on. (n5 goes
    // first, so its rejected joins cannot be what raises the count.)
    nodes[5].kill();
    std::thread::sleep(Duration::from_millis(300));
    let before = bad_packets(&nodes[0]);
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for len in [0usize, 1, 40, 1000] {
        junk.send_to(&vec![0xAB; len], seed).unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(5), || {
            let (_, info) = get(nodes[0].api, "/v1/node");
            let info: serde_json::Value = serde_json::from_str(&info).unwrap_or_default();
            info["gossip"]["dropped_bad_packets"].as_u64().unwrap_or(0) >= before + 3
        })
        .is_some()
    );

    // /v1/node shows the SWIM, push-pull and stream counters: the seed served the joins'
    // push-pulls over the stream.
    let (_, info) = get(nodes[0].api, "/v1/node");
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let gossip = &info["gossip"];
    assert!(gossip["swim"]["failed_probes"].is_u64(), "{info}");
    assert!(
        gossip["push_pull"]["served"].as_u64().unwrap() > 0,
        "{info}"
    );
    assert!(
        gossip["stream"]["received"]["push_pull"]["frames"]
            .as_u64()
            .unwrap()
            > 0,
        "{info}"
    );

    // `heck members` shows the cluster.
    let out = Command::new(env!("CARGO_BIN_EXE_heck"))
        .args(["members", "--addr", &format!("http://{}", nodes[0].api)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("n4") && text.contains("alive"),
        "{text}"
    );
}
