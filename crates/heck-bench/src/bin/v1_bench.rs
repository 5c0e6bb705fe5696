//! Version-1 benchmark: `heck agent` and Prometheus' blackbox_exporter checking the same
//! simulated fleet, side by side in one run.
//!
//! ```sh
//! cargo build --release -p heck@0.1.0 -p heck-bench
//! ./target/release/v1-bench --targets 10000,100000 --window 30
//! ```
//! For each fleet size N (every target checked every 10 s, a fresh connection per check, 2 s
//! timeout):
//! 1. `heck fleet --targets N` serves the targets (its own process);
//! 2. `heck agent` checks them, its `/metrics` scraped every 10 s from the start as Prometheus
//!    would (the scrapes' cost lands in the agent's figures, as it would in production). The
//!    window runs from the first scrape after a warm-up of one interval plus slack to
//!    `--window / 10` scrapes later; every rate is divided by the *measured* time between those
//!    two scrapes. From their difference: achieved checks/s and the success share (from
//!    `heck_checks_total` by result), p99 schedule lag (the upper bound of the bucket of
//!    `heck_schedule_lag_seconds` holding the 99th percentile), skipped slots, early starts if
//!    the agent exports them, CPU seconds per 1,000 completed checks (utime + stime from /proc)
//!    and peak RSS (VmHWM);
//! 3. blackbox_exporter probes the same targets, driven as Prometheus would: N/10 `GET /probe`
//!    requests per second, at most 256 in flight (a request that finds no free slot is counted as
//!    missed, never queued); the same figures for the exporter's process, its success share
//!    from `probe_success` (a request without an answer counts as a failure).
//!
//! Both rows also report this driver's own CPU and the fleet's, over the same window: all
//! three share the machine's cores with the checker.
//!
//! A row whose success share is below 99.9% is not a result (failed checks are cheaper and
//! would flatter that side): the table is printed, no ratio is, and the exit status is 1. So
//! it is when blackbox_exporter is missing, unless `--skip-blackbox` (for iterating on the
//! agent alone; published ratios come from full runs). `--help` prints the usage; an unknown
//! flag exits 2.
//!
//! `--agent-args "…"` passes arguments to `heck agent` (e.g. `--check-threads 1`). The agent
//! inherits the environment, so allocator experiments (`MALLOC_ARENA_MAX`) need no rebuild;
//! `--heck PATH` benches another build (A/B of two binaries).
//!
//! Everything binds loopback only and is killed at the end.
#![allow(clippy::disallowed_methods)]
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use heck_bench::args::{self, Args, USAGE};
use heck_bench::measure::{
    self, EARLY_STARTS_METRIC, MIN_SUCCESS_SHARE, SCRAPE_INTERVAL_S, Window,
};
use heck_bench::pace::{self, Pacer};
use heck_bench::procs::{Killed, Proc, get, proc_sample, random_port, scrape, start_fleet};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

const INTERVAL_S: f64 = 10.0;

/// One row of the table: one checker at one fleet size, over one measured window.
struct Row {
    who: String,
    targets: usize,
    scheduled: f64,
    achieved: f64,
    success_share: Option<f64>,
    p99_lag: String,
    early: String,
    /// heck: due slots skipped by the driver; blackbox_exporter: requests that found every
    /// slot busy.
    shed: String,
    cpu_per_1000: f64,
    hwm_mib: f64,
    /// This process (the scraper, or the HTTP client driving blackbox_exporter).
    driver_cpu_s: f64,
    fleet_cpu_s: f64,
    elapsed_s: f64,
    note: String,
}

impl Row {
    fn valid(&self) -> bool {
        measure::valid_share(self.success_share)
    }
}

/// CPU of the checker, the driver (this process) and the fleet at one instant.
#[derive(Debug, Clone, Copy)]
struct Cpus {
    checker: Proc,
    driver: Proc,
    fleet: Proc,
}

fn cpus(checker: u32, fleet: u32) -> anyhow::Result<Cpus> {
    Ok(Cpus {
        checker: proc_sample(checker)?,
        driver: proc_sample(std::process::id())?,
        fleet: proc_sample(fleet)?,
    })
}

async fn bench_heck(
    heck: &Path,
    n: usize,
    config: &Path,
    fleet_pid: u32,
    args: &Args,
) -> anyhow::Result<Row> {
    let mut last_err = String::new();
    for attempt in 0..10 {
        let addr = format!("127.0.0.1:{}", random_port(attempt));
        let child = Command::new(heck)
            .args(["agent", "--api-addr", &addr, "--config"])
            .arg(config)
            .args(&args.agent_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting heck agent")?;
        let pid = child.id();
        let _guard = Killed(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut up = false;
        while Instant::now() < deadline {
            if let Ok(Ok((200, _))) =
                tokio::time::timeout(Duration::from_secs(2), get(&addr, "/v1/node")).await
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !up {
            last_err = format!("agent on {addr} never answered");
            continue;
        }
        // Scraped every 10 s from the start, as Prometheus would: the scrapes' own cost is in
        // the agent's CPU and RSS. The window starts at the first scrape after a warm-up of one
        // check interval plus slack (every target has had its first check) and ends
        // `window_s / 10` scrapes later.
        let warmup = (INTERVAL_S + 5.0).div_euclid(SCRAPE_INTERVAL_S as f64) as u64 + 1;
        let last = warmup + args.window_s / SCRAPE_INTERVAL_S;
        let mut tick = tokio::time::interval(Duration::from_secs(SCRAPE_INTERVAL_S));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut start = None;
        let mut longest = Duration::ZERO;
        for k in 0..=last {
            tick.tick().await;
            let (s, at, took) = scrape(&addr).await?;
            longest = longest.max(took);
            let c = cpus(pid, fleet_pid)?;
            if k == warmup {
                start = Some((s, at, c));
            } else if k == last {
                let (s0, at0, c0) = start.take().context("no scrape opened the window")?;
                let w = Window::between(&s0, &s, (at - at0).as_secs_f64());
                let cpu = c.checker.cpu_s - c0.checker.cpu_s;
                let early = match w.early {
                    Some(e) => format!(
                        "{e:.0} ({})",
                        measure::percent(measure::share(e, w.started))
                    ),
                    None => format!("n/a: no `{EARLY_STARTS_METRIC}`"),
                };
                return Ok(Row {
                    who: "heck agent".into(),
                    targets: n,
                    scheduled: n as f64 / INTERVAL_S,
                    achieved: w.rate(),
                    success_share: w.success_share(),
                    p99_lag: format!("≤ {:.3} s", w.p99_lag_s),
                    early,
                    shed: format!("{:.0} skipped", w.skipped),
                    cpu_per_1000: measure::cpu_per_1000(cpu, w.checks),
                    hwm_mib: c.checker.hwm_kib as f64 / 1024.0,
                    driver_cpu_s: c.driver.cpu_s - c0.driver.cpu_s,
                    fleet_cpu_s: c.fleet.cpu_s - c0.fleet.cpu_s,
                    elapsed_s: w.elapsed_s,
                    note: format!(
                        "{cpu:.1} CPU-s; {:.0} of {:.0} checks succeeded; RSS at the end {:.0} MiB; longest scrape {:.2} s",
                        w.successes,
                        w.checks,
                        c.checker.rss_kib as f64 / 1024.0,
                        longest.as_secs_f64()
                    ),
                });
            }
        }
        bail!("the scrape loop ended before the window closed");
    }
    bail!("{last_err}")
}

/// Counters of the requests the driver sent to blackbox_exporter.
#[derive(Debug, Default)]
struct Probes {
    /// Answered with a probe result.
    done: AtomicU64,
    /// Of which `probe_success 1`.
    ok: AtomicU64,
    /// No answer: connection refused or reset, or no answer in 5 s. Prometheus would record
    /// `up 0` for such a scrape: a failed probe, counted in the success share.
    errors: AtomicU64,
    /// Found every slot busy, never sent.
    missed: AtomicU64,
}

impl Probes {
    fn read(&self) -> [u64; 4] {
        [&self.done, &self.ok, &self.errors, &self.missed].map(|c| c.load(Ordering::Relaxed))
    }
}

/// The exporter's name and version as it reports them (`blackbox_exporter, version 0.23.0 …`).
fn bbe_version(bbe: &Path) -> String {
    let out = Command::new(bbe).arg("--version").output();
    let text = out
        .map(|o| {
            let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
            t.push_str(&String::from_utf8_lossy(&o.stderr));
            t
        })
        .unwrap_or_default();
    text.split_once("version ")
        .and_then(|(_, v)| v.split_whitespace().next())
        .map_or_else(
            || "blackbox_exporter".to_string(),
            |v| format!("blackbox_exporter {v}"),
        )
}

async fn bench_bbe(
    bbe: &Path,
    n: usize,
    config: &Path,
    fleet_pid: u32,
    window_s: u64,
    dir: &Path,
) -> anyhow::Result<Row> {
    let urls: Vec<String> = std::fs::read_to_string(config)?
        .lines()
        .filter_map(|l| l.strip_prefix("url = \""))
        .map(|u| u.trim_end_matches('"').to_string())
        .collect();
    if urls.is_empty() {
        bail!("no target URL in {}", config.display());
    }
    let bb_config = dir.join("blackbox.yml");
    std::fs::write(
        &bb_config,
        "modules:\n  http_2xx:\n    prober: http\n    timeout: 2s\n    http:\n      preferred_ip_protocol: ip4\n",
    )?;
    let who = bbe_version(bbe);
    let mut last_err = String::new();
    for attempt in 0..10 {
        let addr = format!("127.0.0.1:{}", random_port(100 + attempt));
        let child = Command::new(bbe)
            .arg(format!("--config.file={}", bb_config.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bbe.display()))?;
        let pid = child.id();
        let _guard = Killed(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut up = false;
        while Instant::now() < deadline {
            if let Ok(Ok((200, _))) =
                tokio::time::timeout(Duration::from_secs(2), get(&addr, "/metrics")).await
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !up {
            last_err = format!("blackbox_exporter on {addr} never answered");
            continue;
        }
        let probes = Arc::new(Probes::default());
        let urls = Arc::new(urls.clone());
        // Idle keep-alive connections to the exporter, as Prometheus keeps them: at most one
        // per slot, since a connection is taken out while its request is in flight.
        let idle: Idle = Arc::default();
        // Pace N/10 requests per second in 10 ms ticks, at most MAX_IN_FLIGHT in flight; a
        // request due while every slot is busy is missed, never queued (see heck_bench::pace).
        let rate = n as f64 / INTERVAL_S;
        let pace = Arc::new(Mutex::new(Pacer::new(rate, pace::MAX_IN_FLIGHT)));
        let pacer_probes = probes.clone();
        let pacer = tokio::spawn(async move {
            let start = Instant::now();
            let mut next = 0usize;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut requests = tokio::task::JoinSet::new();
            loop {
                tick.tick().await;
                // Finished requests are reaped here so the set holds only those in flight.
                while requests.try_join_next().is_some() {}
                let t = lock(&pace).tick(start.elapsed().as_secs_f64());
                pacer_probes.missed.fetch_add(t.missed, Ordering::Relaxed);
                for _ in 0..t.send {
                    let path = format!("/probe?module=http_2xx&target={}", urls[next % urls.len()]);
                    next += 1;
                    let (probes, idle, pace, addr) = (
                        pacer_probes.clone(),
                        idle.clone(),
                        pace.clone(),
                        addr.clone(),
                    );
                    requests.spawn(async move {
                        let mut conn = lock(&idle).pop();
                        let answer = tokio::time::timeout(
                            Duration::from_secs(5),
                            probe_once(&mut conn, &addr, &path),
                        )
                        .await;
                        match answer {
                            Ok(Ok(body)) => {
                                probes.done.fetch_add(1, Ordering::Relaxed);
                                if body.windows(15).any(|w| w == b"probe_success 1") {
                                    probes.ok.fetch_add(1, Ordering::Relaxed);
                                }
                                if let Some(c) = conn {
                                    lock(&idle).push(c);
                                }
                            }
                            // The connection is dropped with the failure.
                            Ok(Err(_)) | Err(_) => {
                                probes.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        lock(&pace).done();
                    });
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await; // warm-up
        let (at0, r0, c0) = (Instant::now(), probes.read(), cpus(pid, fleet_pid)?);
        tokio::time::sleep(Duration::from_secs(window_s)).await;
        let (at1, r1, c1) = (Instant::now(), probes.read(), cpus(pid, fleet_pid)?);
        // Aborting the pacer drops its JoinSet, which aborts every request in flight.
        pacer.abort();
        let [done, ok, errors, missed] = [0, 1, 2, 3].map(|i| (r1[i] - r0[i]) as f64);
        let elapsed_s = (at1 - at0).as_secs_f64();
        let cpu = c1.checker.cpu_s - c0.checker.cpu_s;
        let success_share = measure::share(ok, done + errors);
        return Ok(Row {
            who,
            targets: n,
            scheduled: rate,
            achieved: measure::rate(done, elapsed_s),
            success_share,
            p99_lag: "n/a".into(),
            early: "—".into(),
            shed: format!("{missed:.0} missed"),
            cpu_per_1000: measure::cpu_per_1000(cpu, done),
            hwm_mib: c1.checker.hwm_kib as f64 / 1024.0,
            driver_cpu_s: c1.driver.cpu_s - c0.driver.cpu_s,
            fleet_cpu_s: c1.fleet.cpu_s - c0.fleet.cpu_s,
            elapsed_s,
            note: format!(
                "{cpu:.1} CPU-s; {ok:.0} of {:.0} probes succeeded ({errors:.0} without an answer)",
                done + errors
            ),
        });
    }
    bail!("{last_err}")
}

/// Idle keep-alive connections to blackbox_exporter.
type Idle = Arc<Mutex<Vec<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>>>;

/// A std mutex held for a push, a pop or a tick, never across an await; a poisoned one (a
/// panicked request task) is used as it is: its state is counters.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One `GET /probe` on `conn`, a keep-alive connection (opened when absent or closed); the body.
async fn probe_once(
    conn: &mut Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
    addr: &str,
    path: &str,
) -> anyhow::Result<Bytes> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(c);
        *conn = Some(s);
    }
    let sender = conn.as_mut().context("no connection")?;
    sender.ready().await?;
    let req = http::Request::get(path)
        .header(http::header::HOST, addr)
        .header("X-Prometheus-Scrape-Timeout-Seconds", "2")
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    Ok(resp.into_body().collect().await?.to_bytes())
}

/// `name` in one of the `PATH` directories.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn main() -> ExitCode {
    let args = match heck_bench::args::from_env("v1-bench", USAGE, args::parse) {
        Ok(a) => a,
        Err(exit) => return exit,
    };
    match run(&args) {
        Ok(rows) => {
            print_table(&rows);
            let invalid: Vec<&Row> = rows.iter().filter(|r| !r.valid()).collect();
            if invalid.is_empty() {
                return ExitCode::SUCCESS;
            }
            for r in invalid {
                eprintln!(
                    "v1-bench: {} at {} targets: success share {} is below {}: not a result \
                     (failed checks are cheaper and would flatter its CPU per check)",
                    r.who,
                    r.targets,
                    measure::percent(r.success_share),
                    measure::percent(Some(MIN_SUCCESS_SHARE))
                );
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("v1-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let heck = heck_bench::procs::heck_binary(args.heck.as_deref())?;
    // Checked before anything runs: a run that silently drops the baseline has no ratio.
    let bbe = if args.skip_blackbox {
        None
    } else {
        let found = match &args.blackbox {
            Some(p) if p.is_file() => Some(p.clone()),
            Some(p) => bail!("--blackbox {}: no such file", p.display()),
            None => {
                on_path("prometheus-blackbox-exporter").or_else(|| on_path("blackbox_exporter"))
            }
        };
        Some(found.context(
            "blackbox_exporter not found (apt-get install prometheus-blackbox-exporter, \
             or --blackbox PATH); --skip-blackbox measures the agent alone",
        )?)
    };
    let dir = std::env::temp_dir().join(format!("heck-v1-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for &n in &args.sizes {
            let fleet = start_fleet(&heck, n, "10s", "2s", &dir)?;
            let (fleet_pid, config) = (fleet.process.id(), fleet.config.clone());
            eprintln!("{n} targets: heck agent …");
            rows.push(rt.block_on(bench_heck(&heck, n, &config, fleet_pid, args))?);
            match &bbe {
                None => eprintln!("{n} targets: blackbox_exporter skipped (--skip-blackbox)"),
                Some(bbe) => {
                    eprintln!("{n} targets: blackbox_exporter …");
                    rows.push(rt.block_on(bench_bbe(
                        bbe,
                        n,
                        &config,
                        fleet_pid,
                        args.window_s,
                        &dir,
                    ))?);
                }
            }
            drop(fleet);
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    Ok(rows)
}

fn print_table(rows: &[Row]) {
    println!(
        "| checker | targets | scheduled checks/s | achieved checks/s | success share | p99 schedule lag | early starts | skipped / missed | CPU-s per 1,000 checks | peak RSS | driver CPU-s | fleet CPU-s | measured window | notes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {:.3} | {:.0} MiB | {:.2} | {:.2} | {:.1} s | {} |",
            r.who,
            r.targets,
            r.scheduled,
            r.achieved,
            measure::percent(r.success_share),
            r.p99_lag,
            r.early,
            r.shed,
            r.cpu_per_1000,
            r.hwm_mib,
            r.driver_cpu_s,
            r.fleet_cpu_s,
            r.elapsed_s,
            r.note
        );
    }
    for pair in rows.chunks(2) {
        if let [h, b] = pair {
            if h.valid() && b.valid() {
                println!(
                    "\n{} targets: heck uses {:.1}x less CPU per check than {} ({:.3} vs {:.3} CPU-s per 1,000).",
                    h.targets,
                    b.cpu_per_1000 / h.cpu_per_1000,
                    b.who,
                    h.cpu_per_1000,
                    b.cpu_per_1000
                );
            } else {
                println!(
                    "\n{} targets: no ratio (a success share below {}).",
                    h.targets,
                    measure::percent(Some(MIN_SUCCESS_SHARE))
                );
            }
        }
    }
}
