//! What both benchmarks do to the processes they start: start the fleet, read a process's CPU
//! and memory from `/proc`, pick a free loopback port, `GET` a path and scrape `/metrics` as
//! Prometheus would. One copy, so that `v1-bench` and `v2-bench` measure by the same rules.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::measure::{SCRAPE_INTERVAL_S, Scrape};

/// A child process killed (SIGKILL) and reaped when dropped: nothing a run starts outlives it.
#[derive(Debug)]
pub struct Killed(pub Child);

impl Killed {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process's CPU and memory at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Proc {
    /// utime + stime, seconds.
    pub cpu_s: f64,
    /// Peak resident set (VmHWM), KiB.
    pub hwm_kib: u64,
    /// Resident set now (VmRSS), KiB.
    pub rss_kib: u64,
}

/// Read `pid`'s CPU time and memory from `/proc`.
pub fn proc_sample(pid: u32) -> anyhow::Result<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("bad /proc stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // After ")": state is field 3; utime and stime are fields 14 and 15 → indexes 11 and 12.
    let field = |i: usize| -> anyhow::Result<f64> {
        Ok(f.get(i).context("short /proc stat")?.parse::<f64>()?)
    };
    let ticks = field(11)? + field(12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(Proc {
        cpu_s: ticks / 100.0,
        hwm_kib: kib("VmHWM:"),
        rss_kib: kib("VmRSS:"),
    })
}

/// A port in 10000..32000 (below the ephemeral range), derived from the clock and `salt`. Not
/// checked: a caller that binds it retries on failure (see [`free_port`] for one that is).
pub fn random_port(salt: u32) -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    10_000 + ((nanos ^ (std::process::id() << 4)).wrapping_add(salt * 7_919) % 22_000) as u16
}

/// A port free on 127.0.0.1 for both TCP and UDP right now (a gossip address needs both), not
/// in `taken`. Another process may still take it before ours binds: callers retry.
pub fn free_port(salt: u32, taken: &[u16]) -> anyhow::Result<u16> {
    for attempt in 0..1_000 {
        let p = random_port(salt.wrapping_mul(131).wrapping_add(attempt));
        if !taken.contains(&p)
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
        {
            return Ok(p);
        }
    }
    bail!("no free loopback port in 1,000 tries")
}

/// `GET path` on `addr` over a fresh connection: the status and the whole body.
pub async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

/// [`get`] within `limit`, answering 200: the body.
pub async fn get_ok(addr: &str, path: &str, limit: Duration) -> anyhow::Result<Bytes> {
    match tokio::time::timeout(limit, get(addr, path)).await {
        Ok(Ok((200, body))) => Ok(body),
        Ok(Ok((status, _))) => bail!("GET http://{addr}{path} answered {status}"),
        Ok(Err(e)) => Err(e.context(format!("GET http://{addr}{path}"))),
        Err(_) => bail!("GET http://{addr}{path}: no answer within {limit:?}"),
    }
}

/// Poll `GET path` on `addr` until it answers 200, at most `limit`.
pub async fn wait_until_up(addr: &str, path: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Ok((200, _))) =
            tokio::time::timeout(Duration::from_secs(2), get(addr, path)).await
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// One scrape of `/metrics`, as Prometheus takes it (a 10 s timeout, its default), stamped with
/// the middle of the request: the counters are read somewhere inside it, and at 100,000
/// targets the page takes a noticeable time to stream. Also how long it took.
pub async fn scrape(addr: &str) -> anyhow::Result<(Scrape, Instant, Duration)> {
    let start = Instant::now();
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(SCRAPE_INTERVAL_S),
        get(addr, "/metrics"),
    )
    .await
    .context("scrape of /metrics timed out (10 s)")??;
    let took = start.elapsed();
    if status != 200 {
        bail!("scrape of /metrics answered {status}");
    }
    Ok((
        Scrape::parse(&String::from_utf8_lossy(&body)),
        start + took / 2,
        took,
    ))
}

/// A running `heck fleet`: the process, the heck config it wrote for its targets and its
/// control address (`GET /fleet/hits`).
#[derive(Debug)]
pub struct Fleet {
    /// The process (killed on drop).
    pub process: Killed,
    /// The config file listing every target (same on every agent).
    pub config: PathBuf,
    /// `host:port` of the control endpoint.
    pub control: String,
}

/// Start `heck fleet --targets n` with a config written into `dir` (`interval` and `timeout` per
/// target, as `heck fleet` spells them) and wait until it serves (at most 120 s).
/// The `heck` binary to measure: `given` (`--heck PATH`), or the one built beside this
/// benchmark's own binary.
pub fn heck_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let heck = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?.with_file_name("heck"),
    };
    if !heck.exists() {
        anyhow::bail!(
            "{} not found: cargo build --release --bin heck (or --heck PATH)",
            heck.display()
        );
    }
    Ok(heck)
}

pub fn start_fleet(
    heck: &Path,
    n: usize,
    interval: &str,
    timeout: &str,
    dir: &Path,
) -> anyhow::Result<Fleet> {
    let config = dir.join(format!("fleet-{n}.toml"));
    let mut child = Command::new(heck)
        .args([
            "fleet",
            "--targets",
            &n.to_string(),
            "--interval",
            interval,
            "--timeout",
            timeout,
        ])
        .arg("--write-config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting heck fleet")?;
    let stdout = child.stdout.take().context("fleet stdout")?;
    let process = Killed(child);
    // Keep reading the fleet's stdout for its whole life: closing the pipe after the first lines
    // made its later prints fail and the fleet die mid-run (a bug that once invalidated a run).
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut control = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // `  summary:    curl http://127.0.0.1:PORT/fleet`, printed after `fleet: …`.
            if let Some(rest) = line.trim().strip_prefix("summary:") {
                control = rest
                    .trim()
                    .strip_prefix("curl http://")
                    .and_then(|r| r.strip_suffix("/fleet"))
                    .map(String::from);
            }
            if line.starts_with("Ctrl-C") {
                let _ = ready_tx.send(control.take());
            }
        }
    });
    match ready_rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Some(control)) => Ok(Fleet {
            process,
            config,
            control,
        }),
        Ok(None) => bail!("heck fleet did not print its control address"),
        Err(_) => bail!("heck fleet exited before it was ready"),
    }
}

/// The target names of a config written by `heck fleet`, in the fleet's index order (the
/// index `GET /fleet/hits` counts them by).
pub fn fleet_target_names(config: &Path) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_to_string(config)
        .with_context(|| format!("reading {}", config.display()))?
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|n| n.trim_end_matches('"').to_string())
        .collect())
}
