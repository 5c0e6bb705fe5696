//! `heck demo --nodes N`: a fleet in this process and N `heck agent` child processes forming a
//! local cluster (version 2, fast gossip profile, loopback).
//!
//! Why child processes and not tasks: the point of the demo is to kill a node and watch the
//! others take over its targets, and `kill -9 PID` is the honest way to kill one (no goodbye,
//! sockets closed by the kernel). Every child is killed and reaped when the demo ends, however
//! it ends ([`Nodes`]'s `Drop`), so none outlives it.
use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use heck_fleet::{Fleet, FleetConfig};
use tokio_util::sync::CancellationToken;

use super::{Args, DEFAULTS};

/// Print a line, ignoring a closed stdout: `println!` would panic, and the panic would end the
/// demo without reaping its children.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Most nodes the demo starts: a cluster on one machine, for watching, not for load.
pub const MAX_NODES: i64 = 32;

/// How long a node may take to open its API (a debug build on a busy machine is slow).
const START_LIMIT: Duration = Duration::from_secs(30);

/// One child agent.
struct Node {
    name: String,
    api: SocketAddr,
    gossip: SocketAddr,
    log: PathBuf,
    child: Child,
    /// Set once we have said that it ended (the user killed it, say).
    reported_exit: bool,
}

/// The children and the scratch directory (config, logs): both gone on drop.
struct Nodes {
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        // SIGKILL: a demo agent holds nothing worth a goodbye (no --data-dir), and Ctrl-C in a
        // terminal has already sent each one SIGINT through the process group anyway.
        for n in &mut self.nodes {
            let _ = n.child.kill();
        }
        // Reap them, so no zombie remains either.
        for n in &mut self.nodes {
            let _ = n.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        let fleet = Fleet::start(FleetConfig {
            targets: args.targets,
            unhealthy_fraction: args.unhealthy,
            ..FleetConfig::default()
        })
        .await?;
        let dir = std::env::temp_dir().join(format!("heck-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut nodes = Nodes {
            dir: dir.clone(),
            nodes: Vec::new(),
        };
        let config = dir.join("heck.toml");
        std::fs::write(&config, fleet.config_toml(DEFAULTS))
            .with_context(|| format!("writing {}", config.display()))?;
        let exe = std::env::current_exe().context("finding this program's path")?;
        for i in 0..usize::from(args.nodes) {
            let node = start_node(&exe, &config, &dir, &args, i, nodes.nodes.first())?;
            nodes.nodes.push(node);
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(super::super::agent::cancel_on_signal(shutdown.clone()));
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = wait_until_listening(&mut nodes) => r?,
        }
        print_guide(&fleet, &nodes, &exe, &config);

        // Say when a node ends (killed by the user, most likely); run until Ctrl-C or SIGTERM.
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            for n in &mut nodes.nodes {
                if n.reported_exit {
                    continue;
                }
                if let Ok(Some(status)) = n.child.try_wait() {
                    n.reported_exit = true;
                    say!(
                        "{} (pid {}) ended: {status}. The others take over its targets once they \
                         declare it dead (about 1 to 6 s).",
                        n.name,
                        n.child.id()
                    );
                }
            }
        }
        drop(nodes);
        fleet.stop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Start node `i` (named `n{i+1}`), joining through `seed` (the first node) unless it is the
/// first.
fn start_node(
    exe: &Path,
    config: &Path,
    dir: &Path,
    args: &Args,
    i: usize,
    seed: Option<&Node>,
) -> anyhow::Result<Node> {
    let ip = args.api_addr.ip();
    let api = if args.api_addr.port() == 0 {
        SocketAddr::new(ip, free_port(ip)?)
    } else {
        let port = u16::try_from(usize::from(args.api_addr.port()) + i)
            .ok()
            .with_context(|| format!("--api-addr {}: port + {i} is above 65535", args.api_addr))?;
        SocketAddr::new(ip, port)
    };
    let loopback = Ipv4Addr::LOCALHOST.into();
    let gossip = SocketAddr::new(loopback, free_port(loopback)?);
    let name = format!("n{}", i + 1);
    let log = dir.join(format!("{name}.log"));
    let mut cmd = Command::new(exe);
    cmd.args(agent_args(
        config,
        &name,
        api,
        gossip,
        seed.map(|s| s.gossip),
    ))
    .env_remove("HECK_API_TOKEN")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(File::create(&log).with_context(|| format!("creating {}", log.display()))?);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {name}: {}", exe.display()))?;
    Ok(Node {
        name,
        api,
        gossip,
        log,
        child,
        reported_exit: false,
    })
}

/// The command line of one demo agent (also printed, to restart a killed one by hand).
fn agent_args(
    config: &Path,
    name: &str,
    api: SocketAddr,
    gossip: SocketAddr,
    join: Option<SocketAddr>,
) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "agent".into(),
        "--config".into(),
        config.display().to_string(),
        "--node-name".into(),
        name.into(),
        "--api-addr".into(),
        api.to_string(),
        "--gossip-addr".into(),
        gossip.to_string(),
        // Fast membership (probe every 200 ms) so a failover shows within seconds; the
        // built-in key is public, fine for a cluster on loopback.
        "--gossip-profile".into(),
        "fast".into(),
        "--insecure-default-key".into(),
    ];
    if let Some(seed) = join {
        v.extend(["--join".into(), seed.to_string()]);
    }
    v
}

/// A port free on `ip` for both TCP and UDP right now (gossip uses both on one port). Another
/// program may take it before the child binds it: the child then fails and says so in its log.
fn free_port(ip: std::net::IpAddr) -> anyhow::Result<u16> {
    for _ in 0..50 {
        let tcp = TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0"))?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no port free for both TCP and UDP on {ip} after 50 tries")
}

/// Wait until every node accepts connections on its API, or say which did not and where its
/// log is.
async fn wait_until_listening(nodes: &mut Nodes) -> anyhow::Result<()> {
    let start = Instant::now();
    for n in &mut nodes.nodes {
        loop {
            if let Ok(Some(status)) = n.child.try_wait() {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                anyhow::bail!("{} exited ({status}) before it listened:\n{log}", n.name);
            }
            if tokio::net::TcpStream::connect(n.api).await.is_ok() {
                break;
            }
            if start.elapsed() > START_LIMIT {
                anyhow::bail!(
                    "{} did not open {} within {START_LIMIT:?}; its log: {}",
                    n.name,
                    n.api,
                    n.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// What runs where, and what to try.
fn print_guide(fleet: &Fleet, nodes: &Nodes, exe: &Path, config: &Path) {
    let c = fleet.control_addr();
    let first = &nodes.nodes[0];
    let victim = &nodes.nodes[1];
    let api = first.api;
    say!(
        "heck demo: {} simulated targets on {}..{} port {}, {} unhealthy at start.",
        fleet.len(),
        heck_fleet::target_ip(0),
        heck_fleet::target_ip(fleet.len() - 1),
        fleet.port(),
        fleet.unhealthy().len()
    );
    say!(
        "A cluster of {} agents (version 2) splits them; each checks its share every 2s \
         (rise 2, fall 2), and every node answers for all.\n",
        nodes.nodes.len()
    );
    say!("  NODE  API                       PID      LOG");
    for n in &nodes.nodes {
        say!(
            "  {:<4}  http://{:<18}  pid {:<6} {}",
            n.name,
            n.api,
            n.child.id(),
            n.log.display()
        );
    }
    let last = &nodes.nodes[nodes.nodes.len() - 1];
    let restart = agent_args(
        config,
        &victim.name,
        victim.api,
        victim.gossip,
        Some(first.gossip),
    );
    // (command, why): the commands line up, their comments after them.
    let tries = [
        (
            format!("heck status --addr http://{api}"),
            "every target, with its OWNER".to_string(),
        ),
        (
            format!("heck members --addr http://{api}"),
            format!("the cluster as {} sees it", first.name),
        ),
        (
            format!("curl -N http://{api}/v1/events"),
            "transitions from every node, with their observer".to_string(),
        ),
        (
            format!("curl -X POST http://{c}/fleet/0/unhealthy"),
            format!("break target 0 ({}); /healthy repairs it", fleet.name(0)),
        ),
        (
            format!("kill -9 {}", victim.child.id()),
            format!("kill {}: the others take over its targets", victim.name),
        ),
        (
            // OWNER is the third column; OBSERVER (the fourth) keeps naming the dead node
            // until a status changes, since owners write only on a change.
            format!(
                "heck status --addr http://{api} | awk '$3 == \"{}\"' | wc -l",
                victim.name
            ),
            format!(
                "targets owned by {}: 0 once the others took over",
                victim.name
            ),
        ),
        (
            format!(
                "heck targets add extra {} --addr http://{}",
                fleet.url(1),
                last.api
            ),
            format!("added through {}, listed by all", last.name),
        ),
    ];
    let width = tries.iter().map(|(cmd, _)| cmd.len()).max().unwrap_or(0);
    say!("\nTry, in another terminal:");
    for (cmd, why) in &tries {
        say!("  {cmd:<width$}  # {why}");
    }
    say!(
        "  # bring {} back (it takes its targets back; stopping it is then yours to do):\n  {} {}",
        victim.name,
        exe.display(),
        restart.join(" ")
    );
    say!("\nCtrl-C (or SIGTERM) stops the demo and every node.");
}
