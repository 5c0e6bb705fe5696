//! The agent as a user runs it: the real `heck` binary, a simulated fleet on loopback, plain
//! HTTP. Intervals are short (hundreds of milliseconds) so the suite stays fast; every wait is
//! bounded; every process is killed on drop.
#![allow(clippy::unwrap_used)]
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{http, wait_for};
use heck_fleet::{Fleet, FleetConfig};

mod common;

/// A running `heck agent`, killed on drop.
struct Agent {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("heck-test-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Start an agent on `config`, at a random free port; waits (bounded) until its API answers.
fn start_agent(tag: &str, config: &str, extra: &[&str]) -> Agent {
    let dir = TempDir::new(tag);
    let path = dir.0.join("heck.toml");
    std::fs::write(&path, config).unwrap();
    for _ in 0..20 {
        let addr = common::local(common::free_ports(1)[0]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_heck"))
            .args([
                "agent",
                "--config",
                path.to_str().unwrap(),
                "--api-addr",
                &addr.to_string(),
            ])
            .args(extra)
            .env_remove("HECK_API_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // port taken, probably: try another
            }
            if http(addr, "GET", "/v1/node", None, None).0 == 200 {
                return Agent {
                    child,
                    addr,
                    _dir: dir,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("the agent never came up");
}

fn targets(agent: &Agent) -> Vec<serde_json::Value> {
    let (status, body) = http(agent.addr, "GET", "/v1/targets", None, None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn target(agent: &Agent, name: &str) -> serde_json::Value {
    let (status, body) = http(
        agent.addr,
        "GET",
        &format!("/v1/targets/{name}"),
        None,
        None,
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn fleet(rt: &tokio::runtime::Runtime, targets: usize, unhealthy: f64) -> Fleet {
    rt.block_on(Fleet::start(FleetConfig {
        targets,
        unhealthy_fraction: unhealthy,
        ..FleetConfig::default()
    }))
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

const FAST: &str = "interval = \"300ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 2";

#[test]
fn every_target_gets_the_status_its_server_deserves() {
    let rt = runtime();
    let fleet = fleet(&rt, 40, 0.25);
    // Three check threads: every shard owns some of the 40 targets.
    let agent = start_agent(
        "status",
        &fleet.config_toml(FAST),
        &["--check-threads", "3"],
    );
    let settled = wait_for(Duration::from_secs(10), || {
        targets(&agent).iter().all(|t| t["status"] != "unknown")
    });
    assert!(settled.is_some(), "every target decided within 10 s");
    for t in targets(&agent) {
        let name = t["name"].as_str().unwrap();
        let i: usize = name.trim_start_matches("t-").parse::<usize>().unwrap() - 1;
        let expected = if fleet.is_healthy(i) {
            "healthy"
        } else {
            "unhealthy"
        };
        assert_eq!(t["status"], expected, "{name}: {t}");
        if expected == "unhealthy" {
            assert_eq!(t["last_check"]["error"], "unexpected_status");
            assert_eq!(t["last_check"]["status_code"], 503);
        }
    }
    let (_, body) = http(
        agent.addr,
        "GET",
        "/v1/targets?status=unhealthy",
        None,
        None,
    );
    let unhealthy: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(unhealthy.len(), 10);
    let (status, _) = http(agent.addr, "GET", "/v1/targets?status=sick", None, None);
    assert_eq!(status, 400);
}

#[test]
fn a_flipped_target_is_detected_within_fall_times_interval_plus_timeout() {
    let rt = runtime();
    let fleet = fleet(&rt, 5, 0.0);
    let agent = start_agent("flip", &fleet.config_toml(FAST), &[]);
    assert!(
        wait_for(
            Duration::from_secs(10),
            || target(&agent, "t-00003")["status"] == "healthy"
        )
        .is_some()
    );

    fleet.set_healthy(2, false);
    // fall (2) × interval (300 ms) + timeout (100 ms) = 700 ms, plus up to one interval until the
    // first failing check starts, plus 500 ms for this test's polling and a loaded machine.
    let bound = Duration::from_millis(2 * 300 + 100 + 300 + 500);
    let took = wait_for(Duration::from_secs(10), || {
        target(&agent, "t-00003")["status"] == "unhealthy"
    });
    let took = took.expect("detected at all");
    assert!(took <= bound, "detected after {took:?}, bound {bound:?}");

    fleet.set_healthy(2, true);
    assert!(
        wait_for(
            Duration::from_secs(10),
            || target(&agent, "t-00003")["status"] == "healthy"
        )
        .is_some()
    );
}

#[test]
fn a_bad_config_exits_non_zero_naming_the_line_and_field() {
    let dir = TempDir::new("badconfig");
    let path = dir.0.join("heck.toml");
    std::fs::write(&path, "[defaults]\ninterval = \"1s\"\n\n[[target]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\ntimeout = \"3s\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_heck"))
        .args([
            "agent",
            "--config",
            path.to_str().unwrap(),
            "--api-addr",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "heck.toml:7:11: field `timeout` of target \"a\": 3s must be less than interval 1s"
        ),
        "{err}"
    );
}

#[test]
fn a_target_added_through_the_api_gets_checked_and_the_token_is_enforced() {
    let rt = runtime();
    let fleet = fleet(&rt, 3, 0.0);
    let agent = start_agent(
        "api",
        &fleet.config_toml(FAST),
        &["--api-token", "s3cret", "--check-threads", "3"],
    );
    let spec = format!(
        "{{\"name\":\"added\",\"url\":\"{}\",\"interval\":\"200ms\",\"timeout\":\"100ms\",\"rise\":1}}",
        fleet.url(1)
    );

    let (status, body) = http(agent.addr, "POST", "/v1/targets", Some(&spec), None);
    assert_eq!(status, 401, "{body}");
    let (status, _) = http(
        agent.addr,
        "POST",
        "/v1/targets",
        Some(&spec),
        Some("wrong"),
    );
    assert_eq!(status, 401);
    let (status, body) = http(
        agent.addr,
        "POST",
        "/v1/targets",
        Some(&spec),
        Some("s3cret"),
    );
    assert_eq!(status, 201, "{body}");
    let (status, _) = http(
        agent.addr,
        "POST",
        "/v1/targets",
        Some(&spec),
        Some("s3cret"),
    );
    assert_eq!(status, 409, "duplicate");

    let checked = wait_for(Duration::from_secs(10), || {
        let t = target(&agent, "added");
        t["status"] == "healthy" && t["last_check"]["status_code"] == 200
    });
    assert!(checked.is_some(), "{}", target(&agent, "added"));

    let bad =
        "{\"name\":\"bad\",\"url\":\"http://127.0.0.1:1/\",\"interval\":\"1s\",\"timeout\":\"2s\"}";
    let (status, body) = http(agent.addr, "POST", "/v1/targets", Some(bad), Some("s3cret"));
    assert_eq!(status, 400);
    assert!(body.contains("field `timeout`"), "{body}");
    let (status, body) = http(
        agent.addr,
        "POST",
        "/v1/targets",
        Some("{not json"),
        Some("s3cret"),
    );
    assert_eq!(status, 400);
    assert!(body.contains("\"error\""), "{body}");

    let (status, _) = http(agent.addr, "DELETE", "/v1/targets/added", None, None);
    assert_eq!(status, 401);
    let (status, _) = http(
        agent.addr,
        "DELETE",
        "/v1/targets/added",
        None,
        Some("s3cret"),
    );
    assert_eq!(status, 204);
    let (status, _) = http(agent.addr, "GET", "/v1/targets/added", None, None);
    assert_eq!(status, 404);
}

#[test]
fn server_sent_events_deliver_a_transition() {
    let rt = runtime();
    let fleet = fleet(&rt, 2, 0.0);
    let agent = start_agent("sse", &fleet.config_toml(FAST), &[]);
    assert!(
        wait_for(Duration::from_secs(10), || targets(&agent)
            .iter()
            .all(|t| t["status"] == "healthy"))
        .is_some()
    );

    let mut s = TcpStream::connect(agent.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /v1/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        agent.addr
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");

    fleet.set_healthy(1, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut data = None;
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(json) = line.trim().strip_prefix("data: ") {
            data = Some(json.to_string());
            break;
        }
    }
    let event: serde_json::Value =
        serde_json::from_str(&data.expect("an event within 10 s")).unwrap();
    assert_eq!(event["target"], "t-00002");
    assert_eq!(event["from"], "healthy");
    assert_eq!(event["to"], "unhealthy");
}

#[test]
fn metrics_and_node_info_are_served() {
    let rt = runtime();
    let fleet = fleet(&rt, 4, 0.5);
    let agent = start_agent("metrics", &fleet.config_toml(FAST), &[]);
    assert!(
        wait_for(Duration::from_secs(10), || targets(&agent)
            .iter()
            .all(|t| t["status"] != "unknown"))
        .is_some()
    );
    let (status, text) = http(agent.addr, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    for needle in [
        "heck_target_up{target=\"t-00001\"}",
        "heck_checks_total{result=\"success\"}",
        "heck_checks_total{result=\"unexpected_status\"}",
        "heck_schedule_lag_seconds_bucket",
        "heck_checks_in_flight",
        "heck_targets{status=\"unhealthy\"} 2",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
    // One series per target, with the value the registry holds: two healthy, two unhealthy.
    let lines = |prefix: &str, value: &str| {
        text.lines()
            .filter(|l| l.starts_with(prefix) && l.ends_with(&format!("}} {value}")))
            .count()
    };
    assert_eq!(lines("heck_target_healthy{", "1"), 2, "{text}");
    assert_eq!(lines("heck_target_healthy{", "0"), 2, "{text}");
    assert_eq!(
        lines("heck_target_up{", "1") + lines("heck_target_up{", "0"),
        4
    );
    let (_, body) = http(agent.addr, "GET", "/v1/node", None, None);
    let node: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(node["targets"], 4);
    assert_eq!(node["unhealthy"], 2);
}

#[test]
fn the_cli_reports_an_unreachable_agent_with_exit_code_3() {
    let out = Command::new(env!("CARGO_BIN_EXE_heck"))
        .args([
            "status",
            "--addr",
            &format!("http://127.0.0.1:{}", common::free_ports(1)[0]),
        ])
        .env_remove("HECK_ADDR")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the heck agent"));
}

#[test]
fn heck_status_prints_the_unhealthy_targets() {
    let rt = runtime();
    let fleet = fleet(&rt, 10, 0.2);
    let agent = start_agent("cli", &fleet.config_toml(FAST), &[]);
    assert!(
        wait_for(Duration::from_secs(10), || targets(&agent)
            .iter()
            .all(|t| t["status"] != "unknown"))
        .is_some()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_heck"))
        .args([
            "status",
            "--unhealthy",
            "--addr",
            &format!("http://{}", agent.addr),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("t-00005") && text.contains("t-00010"),
        "{text}"
    );
    assert!(!text.contains("t-00001 "), "{text}");
    assert!(text.contains("2 target(s), 2 unhealthy"), "{text}");
}
