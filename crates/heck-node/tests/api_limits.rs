//! The API's bounds, on a real agent (`heck_node::run`) on loopback with small limits: too many
//! connections or subscribers get a JSON 503, slow requests are cut off, listings page.
#![allow(clippy::unwrap_used)]
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use heck_check::{Defaults, TargetInput};
use heck_node::{ApiLimits, NodeConfig};
use tokio_util::sync::CancellationToken;

/// An agent running on its own runtime; stopped on drop.
struct Node {
    addr: SocketAddr,
    shutdown: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(10));
        }
    }
}

fn start(api: ApiLimits, targets: usize) -> Node {
    let defaults = Defaults::default();
    let targets = (0..targets)
        .map(|i| {
            TargetInput {
                name: format!("t-{i:04}"),
                // Nothing listens on port 1: checks fail fast, and an hour apart.
                url: "tcp://127.0.0.1:1".into(),
                interval: Some(heck_check::HumanDuration(Duration::from_secs(3600))),
                ..TargetInput::default()
            }
            .resolve(&defaults)
            .unwrap()
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    runtime.spawn(heck_node::run(
        NodeConfig {
            api_addr: "127.0.0.1:0".parse().unwrap(),
            api_token: None,
            api,
            max_in_flight: 64,
            check_threads: 1,
            defaults,
            targets,
            membership: None,
        },
        shutdown.clone(),
        Some(ready_tx),
    ));
    let addr = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), ready_rx).await })
        .unwrap()
        .unwrap();
    Node {
        addr,
        shutdown,
        runtime: Some(runtime),
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Send `raw` and read until the server closes (or 5 s pass): the whole answer.
fn exchange(addr: SocketAddr, raw: &str) -> String {
    let mut s = connect(addr);
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

/// The status code and the JSON body of an answer.
fn parse(answer: &str) -> (u16, serde_json::Value) {
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Streamed answers are chunked: take the JSON between the first chunk size and the end.
    let json = if answer
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, serde_json::from_str(&json).unwrap_or_default())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

fn rejected(addr: SocketAddr, reason: &str) -> u64 {
    let (_, text) = get(addr, "/metrics")
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), dechunk(b)))
        .unwrap_or_default();
    let prefix = format!("heck_api_rejected_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_connection_beyond_the_cap_gets_a_json_503_until_one_closes() {
    let node = start(
        ApiLimits {
            max_connections: 2,
            ..ApiLimits::default()
        },
        0,
    );
    let first = connect(node.addr);
    let second = connect(node.addr);
    // The two idle connections hold both places (the accept loop sees them in order).
    let (status, body) = parse(&get(node.addr, "/v1/node"));
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("too many"),
        "{body}"
    );

    drop(first);
    drop(second);
    assert!(
        wait_for(Duration::from_secs(10), || parse(&get(
            node.addr, "/v1/node"
        ))
        .0 == 200),
        "a place frees up when a connection closes"
    );
    assert!(rejected(node.addr, "connections") >= 1);
}

#[test]
fn a_subscriber_beyond_the_cap_gets_a_json_503() {
    let node = start(
        ApiLimits {
            max_subscribers: 1,
            ..ApiLimits::default()
        },
        0,
    );
    let mut first = connect(node.addr);
    first
        .write_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    first.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    let (status, body) = parse(&get(node.addr, "/v1/events"));
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("subscribers"),
        "{body}"
    );
    assert_eq!(rejected(node.addr, "subscribers"), 1);

    drop(first);
    assert!(
        wait_for(Duration::from_secs(10), || {
            let mut s = connect(node.addr);
            s.write_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
        }),
        "the place frees up when the subscriber leaves"
    );
}

#[test]
fn a_request_whose_headers_never_finish_is_cut_off() {
    let node = start(
        ApiLimits {
            header_timeout: Duration::from_millis(300),
            ..ApiLimits::default()
        },
        0,
    );
    let mut s = connect(node.addr);
    s.write_all(b"GET /v1/node HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    // The server closes it: EOF (or a reset), not our own 5 s read timeout.
    let ended = s.read_to_end(&mut out);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "still open after {took:?}: {ended:?}"
    );
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"), "{out:?}");
    assert!(wait_for(Duration::from_secs(5), || rejected(
        node.addr,
        "header_timeout"
    ) == 1));
}

#[test]
fn a_request_body_that_never_finishes_gets_a_json_408() {
    let node = start(
        ApiLimits {
            body_timeout: Duration::from_millis(300),
            ..ApiLimits::default()
        },
        0,
    );
    let answer = exchange(
        node.addr,
        "POST /v1/targets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{\"name\":",
    );
    let (status, body) = parse(&answer);
    assert_eq!(status, 408, "{answer}");
    assert!(
        body["error"].as_str().unwrap().contains("did not arrive"),
        "{body}"
    );
    assert_eq!(rejected(node.addr, "body_timeout"), 1);
}

#[test]
fn a_listing_pages_by_name_with_limit_and_after() {
    // More targets than one page of the stream, so pages are joined.
    let node = start(ApiLimits::default(), 700);
    let names = |path: &str| -> Vec<String> {
        let (status, body) = parse(&get(node.addr, path));
        assert_eq!(status, 200, "{path}: {body}");
        body.as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    let all = names("/v1/targets");
    assert_eq!(all.len(), 700);
    let expected: Vec<String> = (0..700).map(|i| format!("t-{i:04}")).collect();
    assert_eq!(all, expected);

    assert_eq!(names("/v1/targets?limit=2"), ["t-0000", "t-0001"]);
    assert_eq!(
        names("/v1/targets?limit=2&after=t-0001"),
        ["t-0002", "t-0003"]
    );
    assert_eq!(names("/v1/targets?after=t-0697"), ["t-0698", "t-0699"]);
    assert_eq!(names("/v1/targets?after=t-0699"), Vec::<String>::new());
    // `after` need not be a target that exists: names in order after it.
    assert_eq!(names("/v1/targets?limit=1&after=t-0100a"), ["t-0101"]);
    let (status, body) = parse(&get(node.addr, "/v1/targets?limit=0"));
    assert_eq!(status, 400, "{body}");
}

#[test]
fn a_chunked_body_over_the_cap_gets_a_json_413() {
    let node = start(ApiLimits::default(), 0);
    // No Content-Length: the cap is found while reading. One 70 KiB chunk.
    let chunk = "x".repeat(70 * 1024);
    let answer = exchange(
        node.addr,
        &format!(
            "POST /v1/targets HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        ),
    );
    let (status, body) = parse(&answer);
    assert_eq!(status, 413, "{}", &answer[..answer.len().min(300)]);
    assert!(body["error"].as_str().unwrap().contains("64 KiB"), "{body}");
    assert_eq!(rejected(node.addr, "body_too_large"), 1);
}
