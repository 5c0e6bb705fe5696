//! Version-1 benchmark: `heck agent` and Prometheus' blackbox_exporter checking the same
//! simulated fleet, side by side in one run.
//!
//! ```sh
//! cargo build --release --bin heck -p heck-bench
//! ./target/release/v1-bench --targets 10000,100000 --window 30
//! ```
//! For each fleet size N (every target checked every 10 s, a fresh connection per check, 2 s
//! timeout):
//! 1. `heck fleet --targets N` serves the targets (its own process);
//! 2. `heck agent` checks them; after a warm-up of one interval plus a few seconds, the window
//!    measures achieved checks/s (from `heck_checks_total`), p99 schedule lag (from the
//!    `heck_schedule_lag_seconds` histogram: the upper bound of the bucket holding the 99th
//!    percentile), CPU seconds per 1,000 checks (utime + stime of the agent from /proc) and peak
//!    RSS (VmHWM);
//! 3. blackbox_exporter probes the same targets, driven as Prometheus would: N/10 `GET /probe`
//!    requests per second, at most 256 in flight (a request that finds no free slot is counted as
//!    missed, never queued); the same figures for the exporter's process.
//!
//! `--agent-args "…"` passes arguments to `heck agent` (e.g. `--check-threads 1`).
//! `--skip-blackbox` measures the agent alone (for iterating; published ratios come from full
//! runs). The agent inherits the environment, so allocator experiments (`MALLOC_ARENA_MAX`)
//! need no rebuild; `--heck PATH` benches another build (A/B of two binaries).
//!
//! Everything binds loopback only and is killed at the end.
#![allow(clippy::disallowed_methods)]
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

const INTERVAL_S: f64 = 10.0;
const BBE_CONCURRENCY: usize = 256;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug, Clone, Copy)]
struct Proc {
    cpu_s: f64,
    hwm_kib: u64,
    rss_kib: u64,
}

fn proc_sample(pid: u32) -> anyhow::Result<Proc> {
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

fn random_port(salt: u32) -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    10_000 + ((nanos ^ (std::process::id() << 4)).wrapping_add(salt * 7_919) % 22_000) as u16
}

async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, Bytes)> {
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

/// Sum of a counter family, and the lag histogram's cumulative buckets.
struct Scrape {
    checks: f64,
    lag_buckets: Vec<(f64, f64)>,
}

fn parse_metrics(text: &str) -> Scrape {
    let mut checks = 0.0;
    let mut lag_buckets = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("heck_checks_total{") {
            checks += rest
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("heck_schedule_lag_seconds_bucket{le=\"") {
            let (le, tail) = rest.split_once('"').unwrap_or(("", ""));
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            let n = tail
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            lag_buckets.push((le, n));
        }
    }
    Scrape {
        checks,
        lag_buckets,
    }
}

/// The upper bound of the bucket holding the 99th percentile of what was observed between scrapes.
fn p99(before: &Scrape, after: &Scrape) -> f64 {
    let deltas: Vec<(f64, f64)> = after
        .lag_buckets
        .iter()
        .map(|&(le, n)| {
            let b = before
                .lag_buckets
                .iter()
                .find(|x| x.0 == le)
                .map_or(0.0, |x| x.1);
            (le, n - b)
        })
        .collect();
    let total = deltas.last().map_or(0.0, |x| x.1);
    deltas
        .iter()
        .find(|&&(_, n)| n >= 0.99 * total)
        .map_or(f64::NAN, |x| x.0)
}

struct Row {
    who: &'static str,
    targets: usize,
    scheduled: f64,
    achieved: f64,
    p99_lag: String,
    cpu_per_1000: f64,
    hwm_mib: f64,
    note: String,
}

fn start_fleet(heck: &Path, n: usize, dir: &Path) -> anyhow::Result<(Killed, PathBuf)> {
    let config = dir.join(format!("fleet-{n}.toml"));
    let mut child = Command::new(heck)
        .args([
            "fleet",
            "--targets",
            &n.to_string(),
            "--interval",
            "10s",
            "--timeout",
            "2s",
        ])
        .arg("--write-config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting heck fleet")?;
    let stdout = child.stdout.take().context("fleet stdout")?;
    let guard = Killed(child);
    // Keep reading the fleet's stdout for its whole life: closing the pipe after the first lines
    // made its later prints fail and the fleet die mid-run (a bug that once invalidated a run).
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("fleet:") {
                let _ = ready_tx.send(());
            }
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(120)).is_ok() {
        return Ok((guard, config));
    }
    bail!("heck fleet exited before it was ready")
}

async fn bench_heck(
    heck: &Path,
    n: usize,
    config: &Path,
    window: u64,
    extra: &[String],
) -> anyhow::Result<Row> {
    let mut last_err = String::new();
    for attempt in 0..10 {
        let addr = format!("127.0.0.1:{}", random_port(attempt));
        let child = Command::new(heck)
            .args(["agent", "--api-addr", &addr, "--config"])
            .arg(config)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting heck agent")?;
        let pid = child.id();
        let _guard = Killed(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut up = false;
        while Instant::now() < deadline {
            if let Ok((200, _)) = get(&addr, "/v1/node").await {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !up {
            last_err = format!("agent on {addr} never answered");
            continue;
        }
        // Warm-up: one full interval so every target has had its first check, plus slack.
        tokio::time::sleep(Duration::from_secs_f64(INTERVAL_S + 5.0)).await;
        let (_, m0) = get(&addr, "/metrics").await?;
        let p0 = proc_sample(pid)?;
        tokio::time::sleep(Duration::from_secs(window)).await;
        let (_, m1) = get(&addr, "/metrics").await?;
        let p1 = proc_sample(pid)?;
        let (s0, s1) = (
            parse_metrics(&String::from_utf8_lossy(&m0)),
            parse_metrics(&String::from_utf8_lossy(&m1)),
        );
        let checks = s1.checks - s0.checks;
        let cpu = p1.cpu_s - p0.cpu_s;
        return Ok(Row {
            who: "heck agent",
            targets: n,
            scheduled: n as f64 / INTERVAL_S,
            achieved: checks / window as f64,
            p99_lag: format!("≤ {:.3} s", p99(&s0, &s1)),
            cpu_per_1000: 1000.0 * cpu / checks.max(1.0),
            hwm_mib: p1.hwm_kib as f64 / 1024.0,
            note: format!(
                "{cpu:.1} CPU-s in {window} s; RSS at the end {:.0} MiB",
                p1.rss_kib as f64 / 1024.0
            ),
        });
    }
    bail!("{last_err}")
}

async fn bench_bbe(n: usize, config: &Path, window: u64, dir: &Path) -> anyhow::Result<Row> {
    let urls: Vec<String> = std::fs::read_to_string(config)?
        .lines()
        .filter_map(|l| l.strip_prefix("url = \""))
        .map(|u| u.trim_end_matches('"').to_string())
        .collect();
    let bb_config = dir.join("blackbox.yml");
    std::fs::write(
        &bb_config,
        "modules:\n  http_2xx:\n    prober: http\n    timeout: 2s\n    http:\n      preferred_ip_protocol: ip4\n",
    )?;
    let mut last_err = String::new();
    for attempt in 0..10 {
        let addr = format!("127.0.0.1:{}", random_port(100 + attempt));
        let child = Command::new("prometheus-blackbox-exporter")
            .arg(format!("--config.file={}", bb_config.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus-blackbox-exporter (apt-get install prometheus-blackbox-exporter)")?;
        let pid = child.id();
        let _guard = Killed(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut up = false;
        while Instant::now() < deadline {
            if let Ok((200, _)) = get(&addr, "/metrics").await {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !up {
            last_err = format!("blackbox_exporter on {addr} never answered");
            continue;
        }
        let done = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let missed = Arc::new(AtomicU64::new(0));
        let (tx, rx) = tokio::sync::mpsc::channel::<usize>(BBE_CONCURRENCY);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let urls = Arc::new(urls.clone());
        let mut workers = Vec::new();
        for _ in 0..BBE_CONCURRENCY {
            let (rx, urls, done, ok, addr) = (
                rx.clone(),
                urls.clone(),
                done.clone(),
                ok.clone(),
                addr.clone(),
            );
            workers.push(tokio::spawn(async move {
                // One keep-alive connection per worker, as Prometheus keeps to an exporter.
                let mut conn: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
                loop {
                    let Some(i) = rx.lock().await.recv().await else {
                        return;
                    };
                    if conn.as_ref().is_none_or(|c| c.is_closed()) {
                        let Ok(stream) = tokio::net::TcpStream::connect(&addr).await else {
                            continue;
                        };
                        let Ok((s, c)) =
                            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
                        else {
                            continue;
                        };
                        tokio::spawn(c);
                        conn = Some(s);
                    }
                    let Some(sender) = conn.as_mut() else {
                        continue;
                    };
                    let path = format!("/probe?module=http_2xx&target={}", urls[i % urls.len()]);
                    let Ok(req) = http::Request::get(path)
                        .header(http::header::HOST, addr.as_str())
                        .header("X-Prometheus-Scrape-Timeout-Seconds", "2")
                        .body(Empty::<Bytes>::new())
                    else {
                        continue;
                    };
                    if sender.ready().await.is_err() {
                        conn = None;
                        continue;
                    }
                    match sender.send_request(req).await {
                        Ok(resp) => {
                            let body = resp
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            done.fetch_add(1, Ordering::Relaxed);
                            if body.windows(15).any(|w| w == b"probe_success 1") {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => conn = None,
                    }
                }
            }));
        }
        // Pace N/10 requests per second in 10 ms ticks; a full channel means every slot is busy.
        let rate = n as f64 / INTERVAL_S;
        let pacer_missed = missed.clone();
        let pacer = tokio::spawn(async move {
            let start = Instant::now();
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                while sent < due {
                    if tx.try_send(sent as usize).is_err() {
                        pacer_missed.fetch_add(1, Ordering::Relaxed);
                    }
                    sent += 1;
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await; // warm-up
        let (d0, p0) = (done.load(Ordering::Relaxed), proc_sample(pid)?);
        let m0 = missed.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(window)).await;
        let (d1, p1) = (done.load(Ordering::Relaxed), proc_sample(pid)?);
        let m1 = missed.load(Ordering::Relaxed);
        pacer.abort();
        for w in workers {
            w.abort();
        }
        let probes = (d1 - d0) as f64;
        let cpu = p1.cpu_s - p0.cpu_s;
        return Ok(Row {
            who: "blackbox_exporter 0.23",
            targets: n,
            scheduled: rate,
            achieved: probes / window as f64,
            p99_lag: format!("{} missed", m1 - m0),
            cpu_per_1000: 1000.0 * cpu / probes.max(1.0),
            hwm_mib: p1.hwm_kib as f64 / 1024.0,
            note: format!(
                "{cpu:.1} CPU-s in {window} s; {} of {} probes succeeded",
                ok.load(Ordering::Relaxed),
                done.load(Ordering::Relaxed)
            ),
        });
    }
    bail!("{last_err}")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let sizes: Vec<usize> = flag("--targets")
        .unwrap_or_else(|| "10000,100000".into())
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .context("--targets N[,N…]")?;
    let window: u64 = flag("--window")
        .unwrap_or_else(|| "30".into())
        .parse()
        .context("--window SECONDS")?;
    // For iterating on the agent alone; the figures in docs/benchmarks.md come from full runs.
    let skip_bbe = args.iter().any(|a| a == "--skip-blackbox");
    // Extra `heck agent` arguments, e.g. --agent-args "--check-threads 1".
    let agent_args: Vec<String> = flag("--agent-args")
        .map(|a| a.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let exe = std::env::current_exe()?;
    let heck = flag("--heck")
        .map(PathBuf::from)
        .unwrap_or_else(|| exe.with_file_name("heck"));
    if !heck.exists() {
        bail!(
            "{} not found: cargo build --release --bin heck (or --heck PATH)",
            heck.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("heck-v1-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for &n in &sizes {
        let (fleet, config) = start_fleet(&heck, n, &dir)?;
        eprintln!("{n} targets: heck agent …");
        rows.push(rt.block_on(bench_heck(&heck, n, &config, window, &agent_args))?);
        if skip_bbe {
            eprintln!("{n} targets: blackbox_exporter skipped (--skip-blackbox)");
        } else {
            eprintln!("{n} targets: blackbox_exporter …");
            match rt.block_on(bench_bbe(n, &config, window, &dir)) {
                Ok(r) => rows.push(r),
                Err(e) => eprintln!("blackbox_exporter skipped: {e:#}"),
            }
        }
        drop(fleet);
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "| checker | targets | scheduled checks/s | achieved checks/s | p99 schedule lag | CPU-s per 1,000 checks | peak RSS | notes |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {} | {:.3} | {:.0} MiB | {} |",
            r.who, r.targets, r.scheduled, r.achieved, r.p99_lag, r.cpu_per_1000, r.hwm_mib, r.note
        );
    }
    for pair in rows.chunks(2) {
        if let [h, b] = pair {
            println!(
                "\n{} targets: heck uses {:.1}x less CPU per check than blackbox_exporter ({:.3} vs {:.3} CPU-s per 1,000).",
                h.targets,
                b.cpu_per_1000 / h.cpu_per_1000,
                h.cpu_per_1000,
                b.cpu_per_1000
            );
        }
    }
    Ok(())
}
