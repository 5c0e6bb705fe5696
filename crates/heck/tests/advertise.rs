//! The gossip address is where sockets are bound, the advertised address what members tell
//! each other: two agents bound to 0.0.0.0 that advertise loopback addresses form a cluster,
//! and nobody advertises 0.0.0.0. And what the agent refuses before it starts.
#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Dir, Killed, get, wait_for};

mod common;

fn setup(test: &str) -> (Dir, PathBuf, PathBuf) {
    let dir = Dir::new(test);
    let config = dir.0.join("heck.toml");
    std::fs::write(&config, "# no targets: this test is about membership\n").unwrap();
    let key = dir.0.join("key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    (dir, config, key)
}

/// (name, addr) of every member `api` lists.
fn members(api: SocketAddr) -> Vec<(String, String, String)> {
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
                    (s("name"), s("addr"), s("state"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn agents_bound_to_the_unspecified_address_advertise_what_they_are_told() {
    let (_dir, config, key) = setup("advertise");
    let p = common::free_ports(4);
    let advertised = [common::local(p[1]), common::local(p[3])];
    let apis = [common::local(p[0]), common::local(p[2])];
    let agents: Vec<Killed> = (0..2)
        .map(|i| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_heck"));
            cmd.arg("agent")
                .arg("--config")
                .arg(&config)
                .args(["--api-addr", &apis[i].to_string()])
                .args([
                    "--gossip-addr",
                    &format!("0.0.0.0:{}", advertised[i].port()),
                ])
                .args(["--advertise-addr", &advertised[i].to_string()])
                .args(["--node-name", &format!("n{i}"), "--gossip-profile", "fast"])
                .arg("--encrypt-key-file")
                .arg(&key)
                .env_remove("HECK_API_TOKEN")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if i == 1 {
                cmd.args(["--join", &advertised[0].to_string()]);
            }
            Killed(cmd.spawn().unwrap())
        })
        .collect();
    let formed = wait_for(Duration::from_secs(20), || {
        apis.iter().all(|api| {
            let m = members(*api);
            m.len() == 2 && m.iter().all(|(_, _, s)| s == "alive")
        })
    });
    assert!(
        formed.is_some(),
        "cluster formed: {:?} / {:?}",
        members(apis[0]),
        members(apis[1])
    );
    for api in apis {
        let mut seen: Vec<(String, String)> = members(api)
            .into_iter()
            .map(|(name, addr, _)| (name, addr))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                ("n0".to_string(), advertised[0].to_string()),
                ("n1".to_string(), advertised[1].to_string())
            ],
            "every member is listed at its advertised address, none at 0.0.0.0"
        );
    }
    // The stream transport listens on the gossip port too (TCP next to UDP).
    for a in advertised {
        assert!(std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    }
    drop(agents);
}

/// Run `heck agent ARGS` and return (success, stderr); it must exit by itself.
fn refused(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_heck"))
        .arg("agent")
        .args(args)
        .env_remove("HECK_API_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_agent_bound_to_the_unspecified_address_without_an_advertised_one_refuses_to_start() {
    let (_dir, config, key) = setup("no-advertise");
    let p = common::free_ports(2);
    let (ok, err) = refused(&[
        "--config",
        config.to_str().unwrap(),
        "--api-addr",
        &common::local(p[0]).to_string(),
        "--gossip-addr",
        &format!("0.0.0.0:{}", p[1]),
        "--encrypt-key-file",
        key.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("--advertise-addr"), "{err}");
}

#[test]
fn an_agent_without_a_key_file_refuses_to_start_unless_told_the_public_key_is_fine() {
    let (_dir, config, _key) = setup("no-key");
    let p = common::free_ports(2);
    let (ok, err) = refused(&[
        "--config",
        config.to_str().unwrap(),
        "--api-addr",
        &common::local(p[0]).to_string(),
        "--gossip-addr",
        &common::local(p[1]).to_string(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("--encrypt-key-file") && err.contains("--insecure-default-key"),
        "{err}"
    );
    // With the flag it starts (and gossips under the public key).
    let api = common::local(p[0]);
    let _agent = Killed(
        Command::new(env!("CARGO_BIN_EXE_heck"))
            .arg("agent")
            .args(["--config", config.to_str().unwrap()])
            .args(["--api-addr", &api.to_string()])
            .args(["--gossip-addr", &common::local(p[1]).to_string()])
            .arg("--insecure-default-key")
            .env_remove("HECK_API_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_for(Duration::from_secs(10), || members(api).len() == 1).is_some(),
        "the agent runs with --insecure-default-key"
    );
}
