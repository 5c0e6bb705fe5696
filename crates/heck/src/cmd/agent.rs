//! `heck agent`: run the checker (version 1: one process checks every target).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use heck_node::{DEFAULT_API_ADDR, DEFAULT_MAX_IN_FLIGHT, NodeConfig};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (TOML; see examples/heck.toml).
    #[arg(long, short)]
    config: PathBuf,
    /// API address; overrides `[agent] api_addr`. Default 127.0.0.1:7070.
    #[arg(long)]
    api_addr: Option<SocketAddr>,
    /// Require `Authorization: Bearer TOKEN` on write endpoints (POST/DELETE).
    #[arg(long, env = "HECK_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Most checks running at once (1..=16384); overrides `[agent] max_in_flight`. Default 4096.
    #[arg(long)]
    max_in_flight: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
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
    let node = NodeConfig {
        api_addr,
        api_token: args.api_token,
        max_in_flight,
        defaults: config.defaults,
        targets: config.targets,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
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

/// Cancel `token` on SIGINT or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    eprintln!("heck: shutting down");
    token.cancel();
}
