//! Helpers shared by the tests that start real `heck` processes: one HTTP request, a bounded
//! wait, free loopback ports, and a start that says why a child died (its exit status and
//! stderr) and whether it lost a port race. (Each test binary uses a subset, hence `dead_code`.)
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
/// TCP and UDP right now, and never handed out before by this test process.
///
/// "Free now" is all a probe can say: another process may take a port before the child binds
/// it (other test binaries run beside this one). So a child that exits with "address in use"
/// is started again on fresh ports ([`StartFailure::addr_in_use`]). Within this process the
/// tests of one binary run in parallel threads, and two of them probing the same port before
/// either child binds it would both be told it is free: the ports already handed out are
/// remembered, so that cannot happen.
pub fn free_ports(n: usize) -> Vec<u16> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut x = nanos ^ (std::process::id() << 7);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::new();
    while out.len() < n {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let p = 10_000 + ((x >> 8) % 22_000) as u16;
        if !out.contains(&p)
            && !handed_out.contains(&p)
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
        {
            out.push(p);
        }
    }
    handed_out.extend_from_slice(&out);
    out
}

/// A child process whose stderr goes to a file, killed (SIGKILL) and reaped when dropped, the
/// file removed with it.
pub struct Started {
    child: Child,
    log: PathBuf,
}

/// Why [`start`] gave up on a child.
#[derive(Debug)]
pub enum StartFailure {
    /// It exited before it was ready.
    Exited {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its stderr.
        stderr: String,
    },
    /// It was still running but not ready when the time was up (it has been killed).
    NotReady {
        /// The end of its stderr.
        stderr: String,
    },
}

impl StartFailure {
    /// It exited because a port it was given was taken between [`free_ports`] and its bind:
    /// start it again on other ports.
    pub fn addr_in_use(&self) -> bool {
        matches!(self, StartFailure::Exited { stderr, .. } if stderr.contains("in use"))
    }
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFailure::Exited { status, stderr } => {
                write!(
                    f,
                    "exited ({status}) before it was ready; stderr ends:\n{stderr}"
                )
            }
            StartFailure::NotReady { stderr } => {
                write!(
                    f,
                    "still not ready when the time was up; stderr ends:\n{stderr}"
                )
            }
        }
    }
}

/// The last `max` bytes of the file at `path` (lossy UTF-8), or a note that it is unreadable.
fn tail(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let from = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[from..]).into_owned()
        }
        Err(e) => format!("(stderr unreadable: {e})"),
    }
}

/// Spawn `cmd` with its stderr in a file and poll `ready` every 25 ms until it holds, the child
/// exits or `limit` passes. A child that exits or never gets ready is reported with its exit
/// status and the end of its stderr, instead of a bare timeout.
pub fn start(
    cmd: &mut std::process::Command,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<Started, StartFailure> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = std::env::temp_dir().join(format!("heck-test-{}-{n}.stderr", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let child = cmd.stderr(file).spawn().unwrap();
    let mut started = Started { child, log };
    let deadline = Instant::now() + limit;
    // Ready on two polls in a row with the child running: a port another process holds may
    // answer `ready` for a child that is about to fail to bind it, and a child just spawned
    // takes a few milliseconds to get that far.
    let mut ready_before = false;
    loop {
        if let Ok(Some(status)) = started.child.try_wait() {
            return Err(StartFailure::Exited {
                status,
                stderr: tail(&started.log, 2000),
            });
        }
        let ready_now = ready();
        if ready_now && ready_before && matches!(started.child.try_wait(), Ok(None)) {
            return Ok(started);
        }
        ready_before = ready_now;
        if Instant::now() >= deadline {
            return Err(StartFailure::NotReady {
                stderr: tail(&started.log, 2000),
            });
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

impl Started {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The graceful stop: SIGTERM, then wait up to `limit` for the exit; its status, if it
    /// exited.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        sigterm(self.child.id());
        exit_within(&mut self.child, limit).0
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
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

/// A JSON body as [`http`] returns it: listings are streamed (chunked), so undo the chunking
/// first when there is any. `Null` when it is not JSON (a cut-off answer, say).
pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|_| {
        let mut rest = body;
        let mut out = String::new();
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail.get(n + 2..).unwrap_or("");
        }
        serde_json::from_str(&out).unwrap_or_default()
    })
}

/// Send SIGTERM to process `pid`.
pub fn sigterm(pid: u32) {
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// Wait up to `limit` for `child` to exit: its status and how long it took.
pub fn exit_within(
    child: &mut Child,
    limit: Duration,
) -> (Option<std::process::ExitStatus>, Duration) {
    let from = Instant::now();
    while from.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return (Some(status), from.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (None, from.elapsed())
}
