//! Helpers shared by the tests that start real `heck` processes: one HTTP request, a bounded
//! wait, free loopback ports. (Each test binary uses a subset, hence `dead_code`.)
#![allow(dead_code, clippy::unwrap_used)]
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// One HTTP/1.1 request with `Connection: close`; returns (status, body). Status 0 = no answer.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// GET `path`.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path, None, None)
}

/// Poll `f` every 25 ms until it holds or `limit` passes; the time it took, if it held.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

/// `n` distinct ports in 10000..32000 (below the ephemeral range), free on 127.0.0.1 for both
/// TCP and UDP right now.
pub fn free_ports(n: usize) -> Vec<u16> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut x = nanos ^ (std::process::id() << 7);
    let mut out = Vec::new();
    while out.len() < n {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let p = 10_000 + (x % 22_000) as u16;
        if !out.contains(&p)
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
        {
            out.push(p);
        }
    }
    out
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A scratch directory `heck-{test}-{pid}` under the system's temp dir, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    /// Create it (empty or not, it is the test's own: the name carries the process id).
    pub fn new(test: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("heck-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process that is killed and reaped when dropped, so a failing test leaves nothing
/// running.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
