//! `heck agent`: run the checker (version 1: one process checks every target).
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use heck_node::{
    ApiLimits, DEFAULT_API_ADDR, DEFAULT_MAX_IN_FLIGHT, MAX_CHECK_THREADS, NodeConfig,
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (TOML; see examples/heck.toml).
    #[arg(long, short)]
    config: PathBuf,
    /// API address; overrides `[agent] api_addr`. Default 127.0.0.1:7070.
    #[arg(long)]
    api_addr: Option<SocketAddr>,
    /// Require `Authorization: Bearer TOKEN` on write endpoints (POST/DELETE). An empty token is
    /// refused (leave the flag and HECK_API_TOKEN unset to run without one).
    #[arg(long, env = "HECK_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Most checks running at once (1..=16384); overrides `[agent] max_in_flight`. Default 4096.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Threads that run checks, each owning the targets whose name hashes to it (0: one per
    /// core; at most 256). One thread is cheapest per check; add threads when lag grows.
    #[arg(
        long,
        default_value_t = 0,
        value_parser = clap::value_parser!(u16).range(0..=MAX_CHECK_THREADS as i64),
    )]
    check_threads: u16,
    /// Join a cluster: gossip (SWIM over UDP, the stream transport over TCP) bound to this
    /// address and port. Without it the agent runs alone.
    #[arg(long)]
    gossip_addr: Option<SocketAddr>,
    /// The address other members reach this one at (default: --gossip-addr, which must then
    /// be a specific address, not 0.0.0.0 or ::).
    #[arg(long)]
    advertise_addr: Option<SocketAddr>,
    /// This node's stable name in the cluster (default: the advertised address).
    #[arg(long)]
    node_name: Option<String>,
    /// A member's gossip address to join through (repeatable; retried until it answers).
    #[arg(long = "join")]
    join: Vec<SocketAddr>,
    /// Key ring for gossip: one 64-hex-digit key per line, the first encrypts, all decrypt.
    /// Required with --gossip-addr unless --insecure-default-key.
    #[arg(long)]
    encrypt_key_file: Option<PathBuf>,
    /// Use heck's built-in key instead of a key file. That key is public: anyone with heck
    /// can join the cluster and read its gossip. For tests and demos only.
    #[arg(long)]
    insecure_default_key: bool,
    /// Cluster name, bound into every packet (a packet of another cluster is rejected).
    #[arg(long, default_value = "heck")]
    cluster: String,
    /// SWIM parameters: `lan` (memberlist's: probe 1 s) or `fast` (probe 200 ms).
    #[arg(long, value_parser = ["lan", "fast"])]
    gossip_profile: Option<String>,
    /// Keep the replicated state here (a cluster node only): targets added or deleted through
    /// the API survive a restart of the whole cluster, and a node stopped gracefully comes
    /// back under the same replica id. Snapshotted every 10 s and at shutdown.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.api_token.as_deref() == Some("") {
        anyhow::bail!(
            "--api-token (or HECK_API_TOKEN) is empty: that would not protect anything. Give a \
             token, or unset both to run without authentication"
        );
    }
    let config = heck_config::load(&args.config)?;
    let max_in_flight = args
        .max_in_flight
        .or(config.agent.max_in_flight)
        .unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    if !(1..=heck_config::MAX_IN_FLIGHT_LIMIT).contains(&max_in_flight) {
        anyhow::bail!(
            "--max-in-flight {max_in_flight} is not in 1..={}",
            heck_config::MAX_IN_FLIGHT_LIMIT
        );
    }
    let api_addr = match args.api_addr.or(config.agent.api_addr) {
        Some(a) => a,
        None => DEFAULT_API_ADDR.parse().context("default API address")?,
    };
    let membership = match args.gossip_addr {
        None => {
            if !args.join.is_empty()
                || args.node_name.is_some()
                || args.advertise_addr.is_some()
                || args.encrypt_key_file.is_some()
                || args.insecure_default_key
                || args.data_dir.is_some()
            {
                anyhow::bail!(
                    "--join, --node-name, --advertise-addr, --data-dir and the key flags need \
                     --gossip-addr"
                );
            }
            None
        }
        Some(gossip_addr) => {
            let advertise_addr = heck_stream::advertise_addr(gossip_addr, args.advertise_addr)
                .map_err(|e| anyhow::anyhow!("--gossip-addr: {e}"))?;
            let keyring = keyring(
                args.encrypt_key_file.as_deref(),
                args.insecure_default_key,
                &args.cluster,
            )?;
            let node_name = args.node_name.unwrap_or_else(|| advertise_addr.to_string());
            if node_name.is_empty() || node_name.len() > heck_stream::MAX_NAME {
                anyhow::bail!("--node-name must have 1..={} bytes", heck_stream::MAX_NAME);
            }
            let node_name = heck_check::NodeName::new(node_name)
                .map_err(|e| anyhow::anyhow!("--node-name: {e}"))?;
            // The flag wins over `[cluster] profile`; `lan` without either.
            let fast = match args.gossip_profile.as_deref() {
                Some(p) => p == "fast",
                None => config.cluster.profile() == heck_config::Profile::Fast,
            };
            let mut cluster = if fast {
                heck_cluster::Config::fast()
            } else {
                heck_cluster::Config::lan()
            };
            cluster.replicas = config.cluster.replicas();
            if let Some(d) = config.cluster.sync_interval {
                cluster.sync_interval = d.0;
            }
            if let Some(d) = config.cluster.settle {
                cluster.settle = d.0;
            }
            // Targets added through any node's API resolve with the same defaults everywhere.
            cluster.defaults = config.defaults.clone();
            Some(heck_node::membership::MembershipConfig {
                node_name,
                gossip_addr,
                advertise_addr,
                join: args.join,
                cluster,
                keyring,
                data_dir: args.data_dir,
            })
        }
    };
    let node = NodeConfig {
        api_addr,
        api_token: args.api_token,
        api: ApiLimits::default(),
        max_in_flight,
        check_threads: usize::from(args.check_threads),
        defaults: config.defaults,
        targets: config.targets,
        membership,
    };
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if let Ok(addr) = ready_rx.await {
                eprintln!("heck agent: API on http://{addr}  (Ctrl-C to stop)");
            }
        });
        heck_node::run(node, shutdown, Some(ready_tx)).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The key ring for gossip and the stream transport: the keys of `key_file`, or heck's public
/// built-in key when `insecure` says so explicitly. Shared by `heck agent` and `heck kv`.
pub fn keyring(
    key_file: Option<&Path>,
    insecure: bool,
    cluster: &str,
) -> anyhow::Result<heck_swim::Keyring> {
    let keys = match (key_file, insecure) {
        (Some(_), true) => {
            anyhow::bail!("--encrypt-key-file and --insecure-default-key exclude each other")
        }
        (Some(path), false) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read key file", path.display()))?;
            heck_node::membership::parse_keys(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        (None, true) => vec![heck_node::membership::DEFAULT_KEY],
        (None, false) => anyhow::bail!(
            "gossip needs a key: pass --encrypt-key-file FILE (one key of 64 hex digits per \
             line, e.g. from `openssl rand -hex 32`), or --insecure-default-key to use heck's \
             built-in key, which is public: anyone with heck could join and read the gossip"
        ),
    };
    Ok(heck_swim::Keyring::new(cluster, &keys))
}

/// Cancel `token` on SIGINT or SIGTERM; on a second one, exit at once (status 130) without
/// waiting for the graceful shutdown to finish: the usual Unix promise that a second Ctrl-C or
/// `kill` means "now".
pub async fn cancel_on_signal(token: CancellationToken) {
    let mut signals = Signals::new();
    signals.next().await;
    eprintln!("heck: shutting down (a second signal ends it at once)");
    token.cancel();
    signals.next().await;
    eprintln!("heck: second signal, exiting now");
    std::process::exit(130);
}

/// SIGINT and SIGTERM as one stream.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
