//! SWIM push-pull over the authenticated stream, in the agent: a joiner learns the whole
//! cluster from its join push-pull even when one join reply cannot carry it, and two agents
//! that only ever joined a third which then died still come to know each other.
#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Dir, Killed, get, wait_for};
use heck_node::membership::{self, MembershipConfig, MembershipView};
use tokio_util::sync::CancellationToken;

mod common;

/// One in-process member: its view and how to stop it.
struct Member {
    name: String,
    addr: SocketAddr,
    view: Arc<MembershipView>,
    task: tokio::task::JoinHandle<()>,
}

/// Names this long make one member ~120 bytes on the wire, so a join reply within a 512-byte
/// budget carries the seed and at most two others.
fn long_name(i: usize) -> String {
    format!("member-{i:02}-{}", "x".repeat(90))
}

async fn start_member(
    name: String,
    join: Vec<SocketAddr>,
    swim: heck_swim::Config,
    shutdown: &CancellationToken,
) -> Member {
    // UDP on a free port, then TCP on the same number: that TCP port can be in use already
    // (another process's connection), which is no fault of the code under test. Try others.
    let mut sockets = membership::bind(common::local(0)).await;
    for _ in 0..20 {
        match &sockets {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                sockets = membership::bind(common::local(0)).await;
            }
            _ => break,
        }
    }
    let sockets = sockets.unwrap();
    let addr = sockets.local_addr().unwrap();
    let view = Arc::new(MembershipView::default());
    let config = MembershipConfig {
        node_name: heck_check::NodeName::new(&name).unwrap(),
        gossip_addr: addr,
        advertise_addr: addr,
        join,
        cluster: heck_cluster::Config {
            swim,
            ..heck_cluster::Config::lan()
        },
        keyring: heck_swim::Keyring::new("push-pull-test", &[[0x5a; 32]]),
        data_dir: None,
    };
    let task = tokio::spawn(membership::run(
        config,
        sockets,
        view.clone(),
        shutdown.child_token(),
    ));
    Member {
        name,
        addr,
        view,
        task,
    }
}

fn alive(view: &MembershipView) -> usize {
    view.members().iter().filter(|m| m.state == "alive").count()
}

async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_learns_every_member_from_its_join_push_pull_when_one_join_reply_cannot_hold_them()
{
    const N: usize = 12;
    // Periodic push-pull far beyond the test: the only full-state exchanges are the joins'.
    // The small budget makes a join reply a sample of at most three members.
    let swim = heck_swim::Config {
        packet_budget: 512,
        push_pull_interval: Duration::from_secs(3600),
        ..heck_swim::Config::fast()
    };
    // A join reply holds the seed's name twice (sender and member) and each other member's
    // name once, plus more bytes for each: an upper bound on the others it can carry.
    let name = long_name(0).len();
    let others_per_reply = (swim.packet_budget - heck_swim::wire::OVERHEAD - 2 * name) / name;
    assert!(
        others_per_reply + 1 < N,
        "a join reply must not hold the cluster for this test to mean anything"
    );
    let shutdown = CancellationToken::new();
    let mut cluster = vec![start_member(long_name(0), vec![], swim, &shutdown).await];
    let seed = cluster[0].addr;
    for i in 1..N {
        cluster.push(start_member(long_name(i), vec![seed], swim, &shutdown).await);
    }
    let formed = until(Duration::from_secs(30), || {
        cluster.iter().all(|m| alive(&m.view) == N)
    })
    .await;
    assert!(
        formed,
        "the cluster forms: {:?}",
        cluster.iter().map(|m| alive(&m.view)).collect::<Vec<_>>()
    );
    // Let every update's retransmissions run out (λ·log n sends at 50 ms gossip rounds), so
    // gossip no longer carries the old members' news: a newcomer can learn them only from a
    // join reply sample or a push-pull.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let joiner = start_member("joiner".into(), vec![seed], swim, &shutdown).await;
    let learnt = until(Duration::from_secs(10), || alive(&joiner.view) == N + 1).await;
    let names: Vec<String> = joiner.view.members().into_iter().map(|m| m.name).collect();
    assert!(learnt, "the joiner knows all {} members: {names:?}", N + 1);
    for m in &cluster {
        assert!(names.contains(&m.name), "{} is known", m.name);
    }
    let pushed = joiner.view.push_pull_stats();
    assert!(pushed.succeeded >= 1, "{pushed:?}");
    assert!(joiner.view.swim_stats().join_push_pulls >= 1);
    assert_eq!(
        joiner.view.swim_stats().push_pulls,
        0,
        "no periodic one ran"
    );
    // The seed answered join push-pulls and merged their states, counted as joins.
    let seed_view = &cluster[0].view;
    assert!(
        seed_view.push_pull_stats().served >= 1,
        "{:?}",
        seed_view.push_pull_stats()
    );
    assert!(seed_view.swim_stats().join_push_pulls >= 1);
    for m in cluster.iter().chain([&joiner]) {
        let s = m.view.push_pull_stats();
        assert_eq!(
            (s.malformed, s.too_many_members, s.wrong_sender),
            (0, 0, 0),
            "nothing refused at {}",
            m.name
        );
    }

    shutdown.cancel();
    for m in cluster.into_iter().chain([joiner]) {
        tokio::time::timeout(Duration::from_secs(5), m.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// (name, state) of every member `api` lists.
fn members(api: SocketAddr) -> Vec<(String, String)> {
    let (status, body) = get(api, "/v1/members");
    if status != 200 {
        return vec![];
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    let s = |k: &str| m[k].as_str().unwrap_or("").to_string();
                    (s("name"), s("state"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn lists_alive(api: SocketAddr, name: &str) -> bool {
    members(api).iter().any(|(n, s)| n == name && s == "alive")
}

#[test]
fn two_agents_that_joined_only_a_third_know_each_other_after_it_is_killed() {
    let dir = Dir::new("push-pull");
    let config = dir.0.join("heck.toml");
    std::fs::write(&config, "# no targets: this test is about membership\n").unwrap();
    let key = dir.0.join("key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    let p = common::free_ports(6);
    let api = |i: usize| common::local(p[2 * i]);
    let gossip = |i: usize| common::local(p[2 * i + 1]);
    let start = |i: usize, join: Option<SocketAddr>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_heck"));
        cmd.arg("agent")
            .arg("--config")
            .arg(&config)
            .args(["--api-addr", &api(i).to_string()])
            .args(["--gossip-addr", &gossip(i).to_string()])
            .args(["--node-name", &format!("n{i}"), "--gossip-profile", "fast"])
            .arg("--encrypt-key-file")
            .arg(&key)
            .env_remove("HECK_API_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(seed) = join {
            cmd.args(["--join", &seed.to_string()]);
        }
        Killed(cmd.spawn().unwrap())
    };
    // n2 is the only seed; n0 joins it, then n1 joins it.
    let mut seed = start(2, None);
    let _n0 = start(0, Some(gossip(2)));
    assert!(
        wait_for(Duration::from_secs(20), || lists_alive(api(2), "n0")).is_some(),
        "n0 joined n2: {:?}",
        members(api(2))
    );
    let _n1 = start(1, Some(gossip(2)));
    assert!(
        wait_for(Duration::from_secs(20), || lists_alive(api(2), "n1")).is_some(),
        "n1 joined n2: {:?}",
        members(api(2))
    );
    // Kill the seed at once: its gossip about n1 may not have reached n0 yet.
    let _ = seed.0.kill();
    let _ = seed.0.wait();
    let met = wait_for(Duration::from_secs(40), || {
        lists_alive(api(0), "n1")
            && lists_alive(api(1), "n0")
            && !lists_alive(api(0), "n2")
            && !lists_alive(api(1), "n2")
    });
    assert!(
        met.is_some(),
        "n0 and n1 know each other, and n2 is gone: {:?} / {:?}",
        members(api(0)),
        members(api(1))
    );
}
