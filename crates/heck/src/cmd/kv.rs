//! `heck kv`: one replica of the delta-CRDT key-value store (the seed's step 4), as its own
//! process. Start several with each other as `--peer`s and watch them converge.
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use heck_kv::KvConfig;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// This replica's stable name.
    #[arg(long)]
    name: String,
    /// Gossip address (TCP) to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// HTTP API address: PUT/GET/DELETE /kv/{key}, GET /kv.
    #[arg(long)]
    http: SocketAddr,
    /// Another replica's gossip address (repeatable).
    #[arg(long = "peer")]
    peers: Vec<SocketAddr>,
    /// Time between anti-entropy rounds.
    #[arg(long, default_value = "100ms")]
    gossip_interval: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let tick = humantime::parse_duration(&args.gossip_interval)
        .with_context(|| format!("--gossip-interval {:?}", args.gossip_interval))?;
    if tick.is_zero() {
        anyhow::bail!("--gossip-interval must be greater than zero");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(super::agent::cancel_on_signal(shutdown.clone()));
        eprintln!(
            "heck kv {}: gossip {} HTTP http://{} peers {:?}",
            args.name, args.listen, args.http, args.peers
        );
        heck_kv::run(
            KvConfig {
                name: args.name,
                listen: args.listen,
                http: args.http,
                peers: args.peers,
                tick,
            },
            shutdown,
        )
        .await
    })?;
    Ok(ExitCode::SUCCESS)
}
