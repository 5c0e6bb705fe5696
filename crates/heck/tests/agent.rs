//! The agent as a user runs it: the real `heck` binary, a simulated fleet on loopback, plain
//! HTTP. Intervals are short (hundreds of milliseconds) so the suite stays fast; every wait is
//! bounded; every process is killed on drop.
#![allow(clippy::unwrap_used)]
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{exit_within, http, json, sigterm, wait_for};
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
    json(&body).as_array().unwrap().clone()
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

/// Short intervals keep the suite fast; the timeout is most of the interval, so that a loaded
/// 2-core machine (a local target answers in about a millisecond) does not fail healthy checks.
const INTERVAL: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_millis(400);
const FALL: u32 = 2;
const FAST: &str = "interval = \"500ms\"\ntimeout = \"400ms\"\nrise = 1\nfall = 2";

/// The status each fleet target deserves.
fn deserved(fleet: &Fleet, name: &str) -> &'static str {
    let i: usize = name.trim_start_matches("t-").parse::<usize>().unwrap() - 1;
    if fleet.is_healthy(i) {
        "healthy"
    } else {
        "unhealthy"
    }
}

/// An RFC 3339 time the agent wrote.
fn at(value: &serde_json::Value) -> std::time::SystemTime {
    humantime::parse_rfc3339(value.as_str().unwrap()).unwrap()
}

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
    // Each target reaches the status its server deserves (a snapshot right after the first
    // decisions could catch a check slowed by a loaded machine).
    let settled = wait_for(Duration::from_secs(20), || {
        targets(&agent).iter().all(|t| {
            let name = t["name"].as_str().unwrap();
            t["status"] == deserved(&fleet, name)
                && (t["status"] == "healthy" || t["last_check"]["status_code"] == 503)
        })
    });
    assert!(settled.is_some(), "{:#?}", targets(&agent));
    for t in targets(&agent) {
        if t["status"] == "unhealthy" {
            assert_eq!(t["last_check"]["error"], "unexpected_status", "{t}");
        }
    }
    let (_, body) = http(
        agent.addr,
        "GET",
        "/v1/targets?status=unhealthy",
        None,
        None,
    );
    assert_eq!(json(&body).as_array().unwrap().len(), 10);
    let (status, _) = http(agent.addr, "GET", "/v1/targets?status=sick", None, None);
    assert_eq!(status, 400);
}

#[test]
fn a_flipped_target_is_detected_within_fall_intervals_on_the_agents_clock() {
    let rt = runtime();
    let fleet = fleet(&rt, 5, 0.0);
    let agent = start_agent("flip", &fleet.config_toml(FAST), &[]);
    assert!(
        wait_for(
            Duration::from_secs(20),
            || target(&agent, "t-00003")["status"] == "healthy"
        )
        .is_some()
    );

    let flipped = std::time::SystemTime::now();
    fleet.set_healthy(2, false);
    let detected = wait_for(Duration::from_secs(20), || {
        target(&agent, "t-00003")["status"] == "unhealthy"
    });
    assert!(detected.is_some(), "detected at all");
    // Measured on the agent's clock, not by this test's polling: the status changed at the start
    // of the deciding check. The first check that sees the flip starts within an interval, the
    // deciding one FALL - 1 intervals later; one more interval (and the timeout) is slack for
    // scheduling lag on a loaded machine. A detection that waited for anything else (a whole
    // extra fall, say) would be late by more than that.
    let since = at(&target(&agent, "t-00003")["since"]);
    let took = since.duration_since(flipped).unwrap_or_default();
    let bound = INTERVAL * (FALL + 1) + TIMEOUT;
    assert!(
        took <= bound,
        "detected {took:?} after the flip, bound {bound:?}"
    );

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
        "{{\"name\":\"added\",\"url\":\"{}\",\"interval\":\"500ms\",\"timeout\":\"400ms\",\"rise\":1}}",
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
    // A CA bundle that cannot be read is refused when the target is added, not discovered as
    // a failing check later; nothing is added.
    let no_ca = "{\"name\":\"private\",\"url\":\"https://127.0.0.1:1/\",\"tls_ca_file\":\"/nonexistent/ca.pem\"}";
    let (status, body) = http(
        agent.addr,
        "POST",
        "/v1/targets",
        Some(no_ca),
        Some("s3cret"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("ca.pem"), "{body}");
    let (status, _) = http(agent.addr, "GET", "/v1/targets/private", None, None);
    assert_eq!(status, 404);

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
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
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
    // The first transition of t-00002 (another target's, on a loaded machine, is skipped).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut event = None;
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(json) = line.trim().strip_prefix("data: ") {
            let e: serde_json::Value = serde_json::from_str(json).unwrap();
            if e["target"] == "t-00002" {
                event = Some(e);
                break;
            }
        }
    }
    let event = event.expect("an event within 20 s");
    assert_eq!(event["from"], "healthy");
    assert_eq!(event["to"], "unhealthy");
}

#[test]
fn metrics_and_node_info_are_served() {
    let rt = runtime();
    let fleet = fleet(&rt, 4, 0.5);
    let agent = start_agent("metrics", &fleet.config_toml(FAST), &[]);
    assert!(
        wait_for(Duration::from_secs(20), || targets(&agent).iter().all(
            |t| t["status"] == deserved(&fleet, t["name"].as_str().unwrap())
        ))
        .is_some()
    );
    let (status, text) = http(agent.addr, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    for needle in [
        "heck_target_up{target=\"t-00001\"}",
        "heck_checks_total{result=\"success\"}",
        "heck_checks_total{result=\"unexpected_status\"}",
        "heck_schedule_lag_seconds_bucket",
        "heck_schedule_early_total",
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
        wait_for(Duration::from_secs(20), || targets(&agent).iter().all(
            |t| t["status"] == deserved(&fleet, t["name"].as_str().unwrap())
        ))
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

/// Send `raw` on a new connection and read the whole answer: (status, content-type, body).
fn raw_exchange(addr: SocketAddr, raw: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

#[test]
fn every_error_answer_is_json() {
    let rt = runtime();
    let fleet = fleet(&rt, 1, 0.0);
    let agent = start_agent("errors", &fleet.config_toml(FAST), &[]);
    let cases = [
        (
            "an unknown route",
            "GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            404,
        ),
        (
            "a wrong method",
            "PUT /v1/targets HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            405,
        ),
        (
            "a duplicated query parameter",
            "GET /v1/targets?status=healthy&status=unknown HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "an unknown query parameter",
            "GET /v1/targets?stauts=healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "an invalid path",
            "GET /v1/targets/%FF%FE HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            // Refused on its Content-Length, before a byte of the body is read.
            "a body over 64 KiB",
            "POST /v1/targets HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
            413,
        ),
    ];
    for (what, raw, expected) in cases {
        let (status, content_type, body) = raw_exchange(agent.addr, raw);
        assert_eq!(status, expected, "{what}: {body}");
        assert_eq!(content_type, "application/json", "{what}");
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body:?}"));
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {json}"
        );
    }
}

#[test]
fn an_agent_with_a_half_sent_request_exits_within_its_grace_period_after_sigterm() {
    let rt = runtime();
    let fleet = fleet(&rt, 1, 0.0);
    let mut agent = start_agent("slowloris", &fleet.config_toml(FAST), &[]);
    // Half a request head, and a whole head with half its body: both clients then go quiet.
    let mut half_head = TcpStream::connect(agent.addr).unwrap();
    half_head
        .write_all(b"GET /v1/node HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let mut half_body = TcpStream::connect(agent.addr).unwrap();
    half_body
        .write_all(b"POST /v1/targets HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"name\":")
        .unwrap();
    // Connections are accepted in order: once a later one is answered, both are being served.
    assert_eq!(http(agent.addr, "GET", "/v1/node", None, None).0, 200);

    sigterm(agent.child.id());
    let (exit, took) = exit_within(&mut agent.child, Duration::from_secs(30));
    let exit = exit.unwrap_or_else(|| panic!("still running {took:?} after SIGTERM"));
    assert!(exit.success(), "{exit:?}");
    // The grace period, plus slack for a loaded machine; without the grace the agent waits for
    // the clients forever.
    let grace = heck_node::ApiLimits::default().shutdown_grace;
    assert!(
        took <= grace + Duration::from_secs(5),
        "exited {took:?} after SIGTERM, grace {grace:?}"
    );
    drop((half_head, half_body));
}

#[test]
fn a_second_sigterm_ends_the_agent_at_once_without_waiting_for_the_grace_period() {
    let rt = runtime();
    let fleet = fleet(&rt, 1, 0.0);
    let mut agent = start_agent("second-signal", &fleet.config_toml(FAST), &[]);
    // A client that never finishes its request holds the graceful shutdown for the grace period.
    let mut half_head = TcpStream::connect(agent.addr).unwrap();
    half_head
        .write_all(b"GET /v1/node HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    assert_eq!(http(agent.addr, "GET", "/v1/node", None, None).0, 200);
    sigterm(agent.child.id());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the first SIGTERM waits for the half-sent request"
    );
    sigterm(agent.child.id());
    let (exit, took) = exit_within(&mut agent.child, Duration::from_secs(10));
    let exit = exit.unwrap_or_else(|| panic!("still running {took:?} after a second SIGTERM"));
    // Not a clean exit (work was abandoned), and well inside the 5 s grace.
    assert!(!exit.success(), "{exit:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    drop(half_head);
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let rt = runtime();
    let fleet = fleet(&rt, 1, 0.0);
    let agent = start_agent(
        "bearer",
        &fleet.config_toml(FAST),
        &["--api-token", "s3cret"],
    );
    for (scheme, expected) in [("bearer", 204), ("BEARER", 404), ("Basic", 401)] {
        let raw = format!(
            "DELETE /v1/targets/t-00001 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {scheme} s3cret\r\n\r\n"
        );
        let (status, _, body) = raw_exchange(agent.addr, &raw);
        // The first deletes the target; the second is authorized but finds nothing.
        assert_eq!(status, expected, "{scheme}: {body}");
    }
}

#[test]
fn an_empty_api_token_refuses_to_start() {
    let dir = TempDir::new("emptytoken");
    let path = dir.0.join("heck.toml");
    std::fs::write(
        &path,
        "[[target]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\n",
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", common::free_ports(1)[0]);
    let base = [
        "agent",
        "--config",
        path.to_str().unwrap(),
        "--api-addr",
        &addr,
    ];
    for (how, flag, env) in [
        ("--api-token \"\"", Some(""), None),
        ("HECK_API_TOKEN=\"\"", None, Some("")),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_heck"));
        cmd.args(base).env_remove("HECK_API_TOKEN");
        if let Some(token) = flag {
            cmd.args(["--api-token", token]);
        }
        if let Some(value) = env {
            cmd.env("HECK_API_TOKEN", value);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let exited = wait_for(Duration::from_secs(10), || {
            child.try_wait().unwrap().is_some()
        });
        if exited.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{how}: the agent started");
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{how}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("empty"), "{how}: {err}");
    }
}

#[test]
fn a_new_target_is_checked_within_seconds_not_after_its_interval() {
    let rt = runtime();
    let fleet = fleet(&rt, 2, 0.0);
    // An hour's interval: its phase slot is almost never in the next minute, so only the first
    // check, right away, can fill `last_check` here.
    let agent = start_agent(
        "firstcheck",
        &fleet.config_toml("interval = \"1h\"\ntimeout = \"2s\"\nrise = 1"),
        &[],
    );
    let checked = |name: &str| {
        wait_for(Duration::from_secs(10), || {
            !target(&agent, name)["last_check"].is_null()
        })
    };
    assert!(
        checked("t-00001").is_some(),
        "{}",
        target(&agent, "t-00001")
    );
    assert_eq!(target(&agent, "t-00001")["status"], "healthy");

    let spec = format!(
        "{{\"name\":\"added\",\"url\":\"{}\",\"interval\":\"1h\",\"timeout\":\"2s\",\"rise\":1}}",
        fleet.url(1)
    );
    assert_eq!(
        http(agent.addr, "POST", "/v1/targets", Some(&spec), None).0,
        201
    );
    assert!(checked("added").is_some(), "{}", target(&agent, "added"));
}

#[test]
fn too_many_check_threads_is_a_usage_error_that_names_the_cap() {
    let out = Command::new(env!("CARGO_BIN_EXE_heck"))
        .args([
            "agent",
            "--config",
            "/nonexistent.toml",
            "--check-threads",
            "100000",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("256"), "{err}");
}

/// Run `heck ARGS` with its stdout a pipe whose reading end is already closed, as `| head -1`
/// leaves it: the command must end quietly, with 0.
fn into_a_closed_pipe(args: &[&str]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_heck"))
        .args(args)
        .env_remove("HECK_ADDR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?}: still running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    assert!(err.is_empty(), "{args:?}: {err}");
}

#[test]
fn every_command_ends_quietly_when_its_reader_has_gone() {
    let rt = runtime();
    let fleet = fleet(&rt, 3, 0.0);
    let agent = start_agent("pipe", &fleet.config_toml(FAST), &[]);
    let addr = format!("http://{}", agent.addr);
    into_a_closed_pipe(&["status", "--addr", &addr]);
    into_a_closed_pipe(&["status", "--json", "--addr", &addr]);
    into_a_closed_pipe(&["targets", "ls", "--addr", &addr]);
    into_a_closed_pipe(&["version"]);
    // A command that prints with `println!` (covered by the closed-stdout hook in main).
    let dir = TempDir::new("pipe");
    let names = dir.0.join("targets.txt");
    std::fs::write(&names, "web-1\nweb-2\nweb-3\n").unwrap();
    into_a_closed_pipe(&[
        "ownership",
        "--members",
        "a,b",
        "--targets",
        names.to_str().unwrap(),
    ]);
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = TempDir::new("ansi");
    let path = dir.0.join("heck.toml");
    std::fs::write(
        &path,
        "[[target]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_heck"))
        .args([
            "agent",
            "--config",
            path.to_str().unwrap(),
            "--api-addr",
            "127.0.0.1:0",
        ])
        .env("HECK_LOG", "info")
        .env_remove("HECK_API_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    // Read until the agent has logged that it listens (a tracing line), then stop it.
    while !seen.contains("heck agent listening") {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("heck agent listening"), "{seen}");
    assert!(!seen.contains('\x1b'), "{seen:?}");
}
