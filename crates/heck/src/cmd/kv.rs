//! `heck kv`: one replica of the delta-CRDT key-value store (the seed's step 4), as its own
//! process. Start several with each other as `--peer`s and watch them converge.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use heck_kv::KvConfig;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// This replica's stable name: its identity in every stream handshake.
    #[arg(long)]
    name: String,
    /// Gossip address (TCP, the authenticated stream transport) to bind; may be 0.0.0.0.
    #[arg(long)]
    listen: SocketAddr,
    /// The address other replicas dial (default: --listen, which must then be a specific
    /// address, not 0.0.0.0 or ::).
    #[arg(long)]
    advertise_addr: Option<SocketAddr>,
    /// HTTP API address: PUT/GET/DELETE /kv/{key}, GET /kv.
    #[arg(long)]
    http: SocketAddr,
    /// Another replica's advertised gossip address (repeatable). Its name comes from the
    /// handshake; replicas that connect with the key are learnt too.
    #[arg(long = "peer")]
    peers: Vec<SocketAddr>,
    /// Key ring, as `heck agent`'s: one 64-hex-digit key per line, the first encrypts.
    #[arg(long)]
    encrypt_key_file: Option<PathBuf>,
    /// Cluster name, bound into every frame (a replica of another cluster is refused).
    #[arg(long, default_value = "heck")]
    cluster: String,
    /// Use heck's built-in, public key instead of a key file (tests and demos only).
    #[arg(long)]
    insecure_default_key: bool,
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
    let advertise = heck_stream::advertise_addr(args.listen, args.advertise_addr)
        .map_err(|e| anyhow::anyhow!("--listen: {e}"))?;
    if args.name.is_empty() || args.name.len() > heck_stream::MAX_NAME {
        anyhow::bail!("--name must have 1..={} bytes", heck_stream::MAX_NAME);
    }
    let keyring = super::agent::keyring(
        args.encrypt_key_file.as_deref(),
        args.insecure_default_key,
        &args.cluster,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(super::agent::cancel_on_signal(shutdown.clone()));
        eprintln!(
            "heck kv {}: gossip {} (advertised {advertise}) HTTP http://{} peers {:?}",
            args.name, args.listen, args.http, args.peers
        );
        heck_kv::run(
            KvConfig {
                name: args.name,
                listen: args.listen,
                advertise,
                http: args.http,
                peers: args.peers,
                tick,
                keyring,
            },
            shutdown,
        )
        .await
    })?;
    Ok(ExitCode::SUCCESS)
}
