//! Version-2 benchmark: one `heck agent` (version 1) against a cluster of agents (version 2)
//! checking the same simulated fleet, then `kill -9` of one member.
//!
//! ```sh
//! cargo build --release -p heck@0.1.0 -p heck-bench
//! ./target/release/v2-bench --targets 100000 --interval 10s --window 60
//! ```
//! For each run, against ONE `heck fleet` process (every target on its own loopback address, a
//! fresh connection per check, 2 s timeout):
//! 1. **one agent**, no gossip, checks every target. Its `/metrics` is scraped every 10 s from
//!    the start, as `v1-bench` does; the window opens at the first scrape after one interval
//!    plus 5 s and closes `--window / 10` scrapes later. Figures: CPU (utime + stime, /proc) as
//!    cores and per 1,000 checks, checks per second, success share, and the fleet's own count
//!    of checks per target per interval (`GET /fleet/hits` at both ends of the window).
//! 2. **`--nodes` clustered agents** (`--gossip-addr`, `--join` the first, the built-in key, the
//!    `--profile` SWIM parameters) on the same config. Every agent is scraped every 10 s from
//!    the start; `/v1/node` is read every second until the owned counts sum to the target count,
//!    every node sees every member and the counts stayed equal for 5 readings. Then the same
//!    warm-up and window: total CPU of the group (each agent's CPU rate over its own window,
//!    summed) and its ratio to step 1, each agent's owned targets and share of the checks, checks
//!    per target per interval from the fleet, cluster bytes (sent + received, by kind) per node
//!    per second.
//! 3. **kill -9 the last member** right after a scrape of the others. Its targets are those the
//!    killed node listed as its own (`GET /v1/targets`, `owner`) just before. `/fleet/hits` is
//!    polled every 200 ms: a target is checked again when its counter moves past its value at
//!    the kill; reported: the time until half, 99% and all of them were. Also the time until
//!    every survivor counts one member less, and, over the `--window` after the kill, the
//!    survivors' bytes per node per second and CPU.
//!
//! Everything binds loopback only, on ports checked free, and is killed at the end (a run that
//! fails kills what it started too). Each agent's stderr goes to a log in a temporary directory,
//! quoted when the agent fails. The agents inherit the environment.
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use heck_bench::measure::{self, MIN_SUCCESS_SHARE, SCRAPE_INTERVAL_S};
use heck_bench::procs::{
    Fleet, Killed, Proc, fleet_target_names, free_port, get_ok, proc_sample, scrape, start_fleet,
    wait_until_up,
};
use heck_bench::v2::args::{self, Args, USAGE};
use heck_bench::v2::{
    AgentSample, Group, Hits, Recovery, Settle, hits_between, min_median_max, parse_hits,
};

/// `/v1/node` readings in a row with equal owned counts before ownership counts as settled:
/// the cluster counters are refreshed every second, so 5 readings span ~5 s unchanged.
const SETTLE_READINGS: usize = 5;
/// How long ownership may take to settle.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);
/// How often the fleet's counters are read after the kill.
const RECOVERY_POLL: Duration = Duration::from_millis(200);

/// One started agent.
struct Agent {
    name: String,
    api: String,
    process: Option<Killed>,
    pid: u32,
    log: PathBuf,
}

impl Agent {
    /// The last lines of its log, to quote when it fails.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

/// What a run needs to start and read things.
struct Ctx {
    heck: PathBuf,
    dir: PathBuf,
    fleet: Fleet,
    args: Args,
    origin: Instant,
    /// Ports handed out in this run (a port checked free is not free once an agent holds it).
    taken: Vec<u16>,
}

impl Ctx {
    fn secs(&self, at: Instant) -> f64 {
        at.duration_since(self.origin).as_secs_f64()
    }

    /// Start an agent; `cluster`: its gossip settings (`--join seed` unless it is the first).
    async fn start_agent(
        &mut self,
        name: &str,
        cluster: Option<Option<String>>,
    ) -> anyhow::Result<(Agent, Option<String>)> {
        let mut last_err = String::new();
        for attempt in 0..5u32 {
            let api_port = free_port(attempt, &self.taken)?;
            self.taken.push(api_port);
            let api = format!("127.0.0.1:{api_port}");
            let log = self.dir.join(format!("{name}.log"));
            let mut cmd = Command::new(&self.heck);
            cmd.args(["agent", "--api-addr", &api, "--config"])
                .arg(&self.fleet.config)
                .args(&self.args.agent_args);
            let mut gossip = None;
            if let Some(seed) = &cluster {
                let port = free_port(attempt + 1000, &self.taken)?;
                self.taken.push(port);
                let addr = format!("127.0.0.1:{port}");
                cmd.args([
                    "--gossip-addr",
                    &addr,
                    "--node-name",
                    name,
                    "--insecure-default-key",
                    "--gossip-profile",
                    self.args.profile.flag(),
                ]);
                if let Some(seed) = seed {
                    cmd.args(["--join", seed]);
                }
                gossip = Some(addr);
            }
            let child = cmd
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .context("starting heck agent")?;
            let mut agent = Agent {
                name: name.to_string(),
                api: api.clone(),
                pid: child.id(),
                process: Some(Killed(child)),
                log,
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if wait_until_up(&api, "/v1/node", Duration::from_millis(500)).await {
                    return Ok((agent, gossip));
                }
                let exited = agent
                    .process
                    .as_mut()
                    .is_some_and(|p| matches!(p.0.try_wait(), Ok(Some(_))));
                if exited {
                    break;
                }
            }
            let tail = agent.log_tail();
            agent.process = None;
            // Only a port taken between our check and the agent's bind is worth another try.
            if !tail.to_lowercase().contains("in use") {
                bail!("{name} on {api} did not start: {tail}");
            }
            last_err = format!("{name} on {api}: {tail}");
        }
        bail!("{last_err}")
    }
}

/// Every agent scraped once, the fleet's counters (when asked) and the processes' CPU.
struct Tick {
    samples: Vec<AgentSample>,
    hits: Option<(Vec<u64>, f64)>,
    fleet: Proc,
    driver: Proc,
    /// CPU the agents used while their `/metrics` was written (an upper bound: checks ran too).
    scrape_cpu_s: f64,
    longest_scrape_s: f64,
}

async fn tick(ctx: &Ctx, agents: &[&Agent], with_hits: bool) -> anyhow::Result<Tick> {
    let mut samples = Vec::new();
    let (mut scrape_cpu_s, mut longest_scrape_s) = (0.0, 0.0f64);
    for a in agents {
        let before = proc_sample(a.pid)?;
        let (s, at, took) = scrape(&a.api)
            .await
            .with_context(|| format!("{}: {}", a.name, a.log_tail()))?;
        let proc = proc_sample(a.pid)?;
        scrape_cpu_s += proc.cpu_s - before.cpu_s;
        longest_scrape_s = longest_scrape_s.max(took.as_secs_f64());
        samples.push(AgentSample {
            scrape: s,
            at_s: ctx.secs(at),
            proc,
        });
    }
    let hits = if with_hits {
        Some(fleet_hits(ctx).await?)
    } else {
        None
    };
    Ok(Tick {
        samples,
        hits,
        fleet: proc_sample(ctx.fleet.process.id())?,
        driver: proc_sample(std::process::id())?,
        scrape_cpu_s,
        longest_scrape_s,
    })
}

/// `GET /fleet/hits`, stamped with the middle of the request (seconds from the origin).
async fn fleet_hits(ctx: &Ctx) -> anyhow::Result<(Vec<u64>, f64)> {
    let start = Instant::now();
    let body = get_ok(&ctx.fleet.control, "/fleet/hits", Duration::from_secs(10)).await?;
    let at = start + start.elapsed() / 2;
    let hits =
        parse_hits(&String::from_utf8_lossy(&body)).context("GET /fleet/hits: not a list")?;
    Ok((hits, ctx.secs(at)))
}

/// What one window measured.
struct Measured {
    group: Group,
    hits: Option<Hits>,
    fleet_cpu_s: f64,
    driver_cpu_s: f64,
    scrape_cpu_s: f64,
    longest_scrape_s: f64,
}

impl Measured {
    /// The CPU spent around the agents in the window, as cores: while they were scraped (an
    /// upper bound: checks ran too), by the fleet and by this driver. `who` and `scrapes` name
    /// them in the labels.
    fn put_cpu_around(&self, f: &mut Figures, who: &str, scrapes: &str) {
        let elapsed = self.group.elapsed_s();
        f.put(
            format!("{who}: CPU during {scrapes} (cores, upper bound)"),
            self.scrape_cpu_s / elapsed,
            3,
        );
        f.put(
            format!("{who}: fleet CPU (cores)"),
            self.fleet_cpu_s / elapsed,
            3,
        );
        f.put(
            format!("{who}: driver CPU (cores)"),
            self.driver_cpu_s / elapsed,
            3,
        );
    }

    fn between(
        open: &Tick,
        close: &Tick,
        scrape_cpu_s: f64,
        longest: f64,
        interval_s: f64,
    ) -> Self {
        let hits = match (&open.hits, &close.hits) {
            (Some((h0, t0)), Some((h1, t1))) => hits_between(h0, h1, t1 - t0, interval_s),
            _ => None,
        };
        Measured {
            group: Group::between(&open.samples, &close.samples),
            hits,
            fleet_cpu_s: close.fleet.cpu_s - open.fleet.cpu_s,
            driver_cpu_s: close.driver.cpu_s - open.driver.cpu_s,
            scrape_cpu_s,
            longest_scrape_s: longest,
        }
    }
}

/// Scrape every 10 s; open the window at the first scrape at least one interval plus 5 s
/// after the first, close it `--window / 10` scrapes later (as `v1-bench`).
async fn measure_window(ctx: &Ctx, agents: &[&Agent]) -> anyhow::Result<Measured> {
    let warmup = (ctx.args.interval_s() + 5.0).div_euclid(SCRAPE_INTERVAL_S as f64) as u64 + 1;
    let last = warmup + ctx.args.window_s / SCRAPE_INTERVAL_S;
    let mut every = tokio::time::interval(Duration::from_secs(SCRAPE_INTERVAL_S));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = None;
    let (mut scrape_cpu_s, mut longest) = (0.0, 0.0f64);
    for k in 0..=last {
        every.tick().await;
        let t = tick(ctx, agents, k == warmup || k == last).await?;
        if k > warmup {
            scrape_cpu_s += t.scrape_cpu_s;
            longest = longest.max(t.longest_scrape_s);
        }
        if k == warmup {
            open = Some(t);
        } else if k == last {
            let open = open.take().context("no scrape opened the window")?;
            return Ok(Measured::between(
                &open,
                &t,
                scrape_cpu_s,
                longest,
                ctx.args.interval_s(),
            ));
        }
    }
    bail!("the scrape loop ended before the window closed")
}

/// A node's owned targets and live members from `/v1/node` (`None`: no answer or no cluster).
async fn node_counts(api: &str) -> (Option<usize>, Option<usize>) {
    let Ok(body) = get_ok(api, "/v1/node", Duration::from_secs(5)).await else {
        return (None, None);
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (None, None);
    };
    let c = &v["gossip"]["cluster"];
    let n = |key: &str| c[key].as_u64().and_then(|x| usize::try_from(x).ok());
    (n("owned_targets"), n("live_members"))
}

/// One entry of `GET /v1/targets`: only what the failover needs.
#[derive(serde::Deserialize)]
struct Listed {
    name: String,
    #[serde(default)]
    owner: Option<String>,
}

/// Every figure of one run, by label, in the order printed.
#[derive(Default)]
struct Figures(Vec<(String, f64, usize)>);

impl Figures {
    fn put(&mut self, label: impl Into<String>, value: f64, decimals: usize) {
        self.0.push((label.into(), value, decimals));
    }
}

/// What one run found: its figures and the notes that are not numbers.
#[derive(Default)]
struct RunResult {
    figures: Figures,
    notes: Vec<String>,
    /// Every success share was at least [`MIN_SUCCESS_SHARE`].
    valid: bool,
}

/// One run, writing every figure into `out` as soon as it is measured: a run that fails later
/// still shows what it measured.
async fn run_once(ctx: &mut Ctx, out: &mut RunResult) -> anyhow::Result<()> {
    let RunResult {
        figures: f,
        notes,
        valid,
    } = out;
    let n = ctx.args.targets;
    let interval_s = ctx.args.interval_s();
    let names = fleet_target_names(&ctx.fleet.config)?;
    if names.len() != n {
        bail!("the fleet's config lists {} targets, not {n}", names.len());
    }
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();

    // 1. One agent, version 1.
    eprintln!("v2-bench: one agent (version 1) on {n} targets …");
    let (single, _) = ctx.start_agent("single", None).await?;
    let one = measure_window(ctx, &[&single]).await?;
    drop(single);
    let g1 = &one.group;
    f.put("one agent: CPU (cores)", g1.cpu_rate(), 3);
    f.put("one agent: CPU-s per 1,000 checks", g1.cpu_per_1000(), 4);
    f.put("one agent: checks/s", g1.check_rate(), 0);
    f.put(
        "one agent: success share %",
        100.0 * g1.success_share().unwrap_or(f64::NAN),
        2,
    );
    if let Some(h) = &one.hits {
        f.put(
            "one agent: fleet checks per target per interval",
            h.per_interval,
            3,
        );
    }
    f.put(
        "one agent: peak RSS MiB",
        g1.peak_rss_kib() as f64 / 1024.0,
        0,
    );
    one.put_cpu_around(f, "one agent", "its scrapes");
    *valid = measure::valid_share(g1.success_share());

    // 2. The cluster.
    let m = ctx.args.nodes;
    eprintln!(
        "v2-bench: {m} clustered agents ({} profile) …",
        ctx.args.profile.flag()
    );
    let mut agents = Vec::new();
    let (first, seed) = ctx.start_agent("n1", Some(None)).await?;
    agents.push(first);
    for i in 2..=m {
        let (a, _) = ctx
            .start_agent(&format!("n{i}"), Some(seed.clone()))
            .await?;
        agents.push(a);
    }
    let started = Instant::now();
    let mut settle = Settle::new(n, m, SETTLE_READINGS);
    let mut next_scrape = Instant::now();
    loop {
        if Instant::now() >= next_scrape {
            // Scraped every 10 s from the start, as in step 1 (and as Prometheus would).
            let refs: Vec<&Agent> = agents.iter().collect();
            tick(ctx, &refs, false).await?;
            next_scrape += Duration::from_secs(SCRAPE_INTERVAL_S);
        }
        let mut owned = Vec::new();
        let mut members = Vec::new();
        for a in &agents {
            let (o, mm) = node_counts(&a.api).await;
            owned.push(o);
            members.push(mm);
        }
        if settle.observe(&owned, &members) {
            break;
        }
        if started.elapsed() > SETTLE_LIMIT {
            bail!(
                "ownership did not settle within {SETTLE_LIMIT:?}: owned {owned:?}, members {members:?}"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    f.put(
        "cluster: seconds from the last start to settled ownership",
        started.elapsed().as_secs_f64(),
        1,
    );
    let refs: Vec<&Agent> = agents.iter().collect();
    let all = measure_window(ctx, &refs).await?;
    let g = &all.group;
    f.put("cluster: CPU of all agents (cores)", g.cpu_rate(), 3);
    f.put(
        "cluster: CPU ÷ one agent's CPU",
        g.cpu_rate() / g1.cpu_rate(),
        3,
    );
    f.put("cluster: CPU-s per 1,000 checks", g.cpu_per_1000(), 4);
    f.put(
        "cluster: CPU per 1,000 checks ÷ one agent's",
        g.cpu_per_1000() / g1.cpu_per_1000(),
        3,
    );
    f.put("cluster: checks/s (all agents)", g.check_rate(), 0);
    f.put(
        "cluster: success share %",
        100.0 * g.success_share().unwrap_or(f64::NAN),
        2,
    );
    *valid &= measure::valid_share(g.success_share());
    if let Some((lo, hi)) = g.owned_range() {
        f.put("cluster: owned targets, fewest on a node", lo, 0);
        f.put("cluster: owned targets, most on a node", hi, 0);
    }
    if let Some((lo, hi)) = g.check_share_range() {
        f.put(
            "cluster: a node's share of the checks, smallest %",
            100.0 * lo,
            2,
        );
        f.put(
            "cluster: a node's share of the checks, largest %",
            100.0 * hi,
            2,
        );
    }
    if let Some(h) = &all.hits {
        f.put(
            "cluster: fleet checks per target per interval",
            h.per_interval,
            3,
        );
        f.put(
            "cluster: targets not checked in the window",
            h.unchecked as f64,
            0,
        );
        f.put(
            "cluster: targets checked more often than their grid allows",
            h.over_grid as f64,
            0,
        );
        f.put(
            "cluster: most checks of one target in the window",
            h.max as f64,
            0,
        );
        f.put("cluster: the fleet's counter window, s", h.window_s, 3);
    }
    for (kind, b) in g.bytes_per_node_s() {
        f.put(format!("cluster: bytes per node per s, {kind}"), b, 0);
    }
    if let Some(b) = g.max_bytes_per_node_s() {
        f.put("cluster: bytes per s of the busiest node", b, 0);
    }
    f.put(
        "cluster: largest peak RSS of a node MiB",
        g.peak_rss_kib() as f64 / 1024.0,
        0,
    );
    all.put_cpu_around(f, "cluster", "the scrapes");
    notes.push(format!(
        "longest scrape: one agent {:.2} s, cluster {:.2} s",
        one.longest_scrape_s, all.longest_scrape_s
    ));

    // 3. kill -9 the last member.
    let victim = agents.pop().context("no agent to kill")?;
    eprintln!(
        "v2-bench: listing {}'s targets, then kill -9 …",
        victim.name
    );
    let body = get_ok(&victim.api, "/v1/targets", Duration::from_secs(120)).await?;
    let listed: Vec<Listed> =
        serde_json::from_slice(&body).context("GET /v1/targets: not a target list")?;
    drop(body);
    let watched: Vec<usize> = listed
        .iter()
        .filter(|t| t.owner.as_deref() == Some(victim.name.as_str()))
        .filter_map(|t| index.get(t.name.as_str()).copied())
        .collect();
    drop(listed);
    if watched.is_empty() {
        bail!("{} listed no target as its own", victim.name);
    }
    f.put(
        "failover: targets of the killed node",
        watched.len() as f64,
        0,
    );
    let survivors: Vec<&Agent> = agents.iter().collect();
    let open = tick(ctx, &survivors, false).await?;
    let mut victim = victim;
    victim.process = None; // SIGKILL and reap
    let killed = Instant::now();
    let (at_kill, _) = fleet_hits(ctx).await?;
    let mut recovery = Recovery::new(watched, &at_kill);
    let limit = Duration::from_secs(60) + 6 * Duration::from_millis(ctx.args.interval_ms);
    let survivor_apis: Vec<String> = agents.iter().map(|a| a.api.clone()).collect();
    let control = ctx.fleet.control.clone();
    let expect_members = m - 1;
    // Poll the fleet and the survivors' member counts on their own task, while this one keeps
    // scraping the survivors on the 10 s grid.
    let poller = tokio::spawn(async move {
        let mut detected = None;
        let mut every = tokio::time::interval(RECOVERY_POLL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while killed.elapsed() < limit && (recovery.remaining() > 0 || detected.is_none()) {
            every.tick().await;
            let start = Instant::now();
            if recovery.remaining() > 0
                && let Ok(body) = get_ok(&control, "/fleet/hits", Duration::from_secs(5)).await
                && let Some(hits) = parse_hits(&String::from_utf8_lossy(&body))
            {
                let at = start + start.elapsed() / 2;
                recovery.observe(&hits, at.duration_since(killed).as_secs_f64());
            }
            if detected.is_none() {
                let mut all = true;
                for api in &survivor_apis {
                    all &= node_counts(api).await.1 == Some(expect_members);
                }
                if all {
                    detected = Some(killed.elapsed().as_secs_f64());
                }
            }
        }
        (recovery, detected)
    });
    let mut every = tokio::time::interval(Duration::from_secs(SCRAPE_INTERVAL_S));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await; // the first tick is now: the open scrape was just taken
    let (mut scrape_cpu_s, mut longest) = (0.0, 0.0f64);
    let mut close = None;
    for _ in 0..ctx.args.window_s / SCRAPE_INTERVAL_S {
        every.tick().await;
        let t = tick(ctx, &survivors, false).await?;
        scrape_cpu_s += t.scrape_cpu_s;
        longest = longest.max(t.longest_scrape_s);
        close = Some(t);
    }
    let close = close.context("no scrape closed the window")?;
    let after = Measured::between(&open, &close, scrape_cpu_s, longest, interval_s);
    let (recovery, detected) = poller.await.context("the failover poller failed")?;
    match detected {
        Some(s) => f.put(
            "failover: s until every survivor counts one member less",
            s,
            2,
        ),
        None => notes.push(format!(
            "failover: not every survivor dropped the killed member within {limit:?}"
        )),
    }
    for (label, q) in [("half", 0.5), ("99%", 0.99), ("all", 1.0)] {
        match recovery.quantile(q) {
            Some(s) => f.put(format!("failover: s until {label} of its targets were checked again"), s, 2),
            None => notes.push(format!(
                "failover: {label} of the killed node's targets not checked again within {limit:?} ({} of {} still waiting)",
                recovery.remaining(),
                recovery.watched()
            )),
        }
    }
    let ga = &after.group;
    for (kind, b) in ga.bytes_per_node_s() {
        f.put(
            format!(
                "failover: bytes per node per s over the {} s after the kill, {kind}",
                ctx.args.window_s
            ),
            b,
            0,
        );
    }
    if let Some(b) = ga.max_bytes_per_node_s() {
        f.put("failover: bytes per s of the busiest survivor", b, 0);
    }
    f.put("failover: CPU of the survivors (cores)", ga.cpu_rate(), 3);
    if let Some((lo, hi)) = ga.owned_range() {
        f.put(
            "failover: owned targets at the end, fewest on a survivor",
            lo,
            0,
        );
        f.put(
            "failover: owned targets at the end, most on a survivor",
            hi,
            0,
        );
    }
    let owned_sum: f64 = ga.agents.iter().filter_map(|a| a.owned).sum();
    f.put(
        "failover: owned targets at the end, all survivors",
        owned_sum,
        0,
    );
    drop(agents);
    Ok(())
}

fn main() -> ExitCode {
    let args = match heck_bench::args::from_env("v2-bench", USAGE, args::parse) {
        Ok(a) => a,
        Err(exit) => return exit,
    };
    match run(&args) {
        Ok(results) => {
            print_results(&args, &results);
            if !results.is_empty() && results.iter().all(|r| r.valid) {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "v2-bench: a run failed, or a success share is below {}: not a result \
                     (failed checks are cheaper and would flatter the CPU figures)",
                    measure::percent(Some(MIN_SUCCESS_SHARE))
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("v2-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<Vec<RunResult>> {
    let heck = heck_bench::procs::heck_binary(args.heck.as_deref())?;
    let dir = std::env::temp_dir().join(format!("heck-v2-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    let outcome = (|| -> anyhow::Result<()> {
        for r in 1..=args.runs {
            eprintln!(
                "v2-bench: run {r} of {}: fleet of {} targets …",
                args.runs, args.targets
            );
            let fleet = start_fleet(
                &heck,
                args.targets,
                &args.interval_flag(),
                &args.timeout_flag(),
                &dir,
            )?;
            let mut ctx = Ctx {
                heck: heck.clone(),
                dir: dir.clone(),
                fleet,
                args: args.clone(),
                origin: Instant::now(),
                taken: Vec::new(),
            };
            let mut result = RunResult::default();
            let outcome = rt.block_on(run_once(&mut ctx, &mut result));
            if let Err(e) = &outcome {
                result.valid = false;
                result.notes.push(format!("the run failed: {e:#}"));
            }
            print_run(r, &result);
            results.push(result);
            outcome.with_context(|| format!("run {r}"))?;
        }
        Ok(())
    })();
    match outcome {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(e) => {
            // The runs before (and the figures of the failed one) are still worth printing,
            // and the agents' logs worth reading.
            eprintln!(
                "v2-bench: {e:#}\nv2-bench: the agents' logs are kept in {}",
                dir.display()
            );
        }
    }
    Ok(results)
}

fn print_run(r: usize, result: &RunResult) {
    println!("\nrun {r}:");
    for (label, v, d) in &result.figures.0 {
        println!("  {label}: {v:.d$}", d = *d);
    }
    for note in &result.notes {
        println!("  note: {note}");
    }
}

/// One table: a row per figure, a column per run, then min / median / max over the runs.
fn print_results(args: &Args, results: &[RunResult]) {
    println!(
        "\n{} targets every {} ms, {} nodes ({} profile), {} s windows, agent arguments {:?}, {} run(s):\n",
        args.targets,
        args.interval_ms,
        args.nodes,
        args.profile.flag(),
        args.window_s,
        args.agent_args,
        results.len()
    );
    let mut order: Vec<(&str, usize)> = Vec::new();
    for r in results {
        for (label, _, d) in &r.figures.0 {
            if !order.iter().any(|(l, _)| l == label) {
                order.push((label, *d));
            }
        }
    }
    let runs: Vec<String> = (1..=results.len()).map(|r| format!("run {r}")).collect();
    println!("| figure | {} | min / median / max |", runs.join(" | "));
    println!("|---|{}---|", "---|".repeat(results.len()));
    for (label, d) in order {
        // A figure a run could not measure (a failover that never completed) is a dash there.
        let v: Vec<Option<f64>> = results
            .iter()
            .map(|r| r.figures.0.iter().find(|(l, _, _)| l == label).map(|x| x.1))
            .collect();
        let cells: Vec<String> = v
            .iter()
            .map(|x| x.map_or_else(|| "—".into(), |x| format!("{x:.d$}")))
            .collect();
        let measured: Vec<f64> = v.iter().flatten().copied().collect();
        let mmm = min_median_max(&measured).map_or_else(
            || "n/a".into(),
            |(a, b, c)| format!("{a:.d$} / {b:.d$} / {c:.d$}"),
        );
        println!("| {label} | {} | {mmm} |", cells.join(" | "));
    }
}
