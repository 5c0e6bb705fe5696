//! `heck check` as a user runs it: the real binary against a one-shot HTTP server on loopback.
#![allow(clippy::unwrap_used)]
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::time::Duration;

mod common;

/// Answer one HTTP request with 200 "ok" on a thread; returns the address.
fn one_shot_server() -> SocketAddr {
    let l = (0..20)
        .find_map(|_| TcpListener::bind(common::local(common::free_ports(1)[0])).ok())
        .unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    });
    addr
}

fn heck_check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_heck"))
        .arg("check")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_json_uses_the_api_names_with_the_url_and_a_verdict() {
    let addr = one_shot_server();
    let url = format!("http://{addr}/health");
    let out = heck_check(&[&url, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["url"], url.as_str());
    assert_eq!(json["status_code"], 200);
    assert!(json["latency_ms"].is_f64(), "{json}");
    assert!(json.get("latency").is_none(), "{json}");
}

#[test]
fn check_never_shows_the_password_of_a_url() {
    let addr = common::local(common::free_ports(1)[0]); // nothing listens
    let out = heck_check(&[&format!("http://alice:s3cret@{addr}/"), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("s3cret"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["url"], format!("http://alice:***@{addr}/"));
    assert_eq!(json["ok"], false);
}

#[test]
fn a_long_timeout_is_refused_in_terms_of_the_timeout_flag() {
    let out = heck_check(&["http://127.0.0.1:1/", "--timeout", "24h"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--timeout 24h: must be shorter than 1day"),
        "{stderr}"
    );
    assert!(!stderr.contains("interval"), "{stderr}");
    let out = heck_check(&["http://127.0.0.1:1/", "--timeout", "5ms"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--timeout: 5ms is below the minimum of 10ms"),
        "{stderr}"
    );
}
