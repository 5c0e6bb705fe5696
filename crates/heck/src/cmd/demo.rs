//! `heck demo`: a simulated fleet and an agent checking it, in one process, to try heck with no
//! external service. With `--nodes N` (N > 1): the fleet and a local cluster of N agents, each a
//! child process `heck agent` of this same binary, so `kill -9 PID` on one shows a failover.
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

mod cluster;

use heck_fleet::{Fleet, FleetConfig};
use heck_node::NodeConfig;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of simulated targets.
    #[arg(long, default_value_t = 50)]
    targets: usize,
    /// Fraction of them unhealthy at start.
    #[arg(long, default_value_t = 0.1)]
    unhealthy: f64,
    /// The agent's API address. With --nodes N, node i listens at port + i - 1 (port 0: any
    /// free ports).
    #[arg(long, default_value = "127.0.0.1:7070")]
    api_addr: SocketAddr,
    /// Run a local cluster (version 2) of this many agents, each a child process, instead of one
    /// agent in this process (version 1, the default).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=cluster::MAX_NODES))]
    nodes: u16,
}

/// `[defaults]` of the demo's config: short intervals so changes show within seconds.
const DEFAULTS: &str =
    "interval = \"2s\"\ntimeout = \"500ms\"\nrise = 2\nfall = 2\nfast_interval = \"1s\"";

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.nodes > 1 {
        return cluster::run(args);
    }
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        let fleet = Fleet::start(FleetConfig {
            targets: args.targets,
            unhealthy_fraction: args.unhealthy,
            ..FleetConfig::default()
        })
        .await?;
        let toml = fleet.config_toml(DEFAULTS);
        let config = heck_config::parse(&toml, std::path::Path::new("<demo>"))?;
        let shutdown = CancellationToken::new();
        tokio::spawn(super::agent::cancel_on_signal(shutdown.clone()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let agent = tokio::spawn(heck_node::run(
            NodeConfig {
                api_addr: args.api_addr,
                api_token: None,
                api: heck_node::ApiLimits::default(),
                max_in_flight: heck_node::DEFAULT_MAX_IN_FLIGHT,
                check_threads: 0,
                defaults: config.defaults,
                targets: config.targets,
                membership: None,
            },
            shutdown.clone(),
            Some(ready_tx),
        ));
        let Ok(api) = ready_rx.await else {
            // The agent failed before listening: report why.
            return match agent.await {
                Ok(Err(e)) => Err(anyhow::Error::new(e)),
                _ => Err(anyhow::anyhow!(
                    "the agent stopped before it started listening"
                )),
            };
        };
        let c = fleet.control_addr();
        println!(
            "heck demo: {} simulated targets on {}..{} port {}, {} unhealthy at start.",
            fleet.len(),
            heck_fleet::target_ip(0),
            heck_fleet::target_ip(fleet.len() - 1),
            fleet.port(),
            fleet.unhealthy().len()
        );
        println!("The agent checks each every 2s (rise 2, fall 2). API: http://{api}\n");
        println!("Try, in another terminal:");
        println!("  heck status --addr http://{api}                  # every target");
        println!("  heck status --unhealthy --addr http://{api}      # which are unhealthy?");
        println!("  curl -s http://{api}/v1/targets?status=unhealthy");
        println!("  curl -N http://{api}/v1/events                   # watch transitions live");
        println!(
            "  curl -X POST http://{c}/fleet/0/unhealthy        # break target 0 ({})",
            fleet.name(0)
        );
        println!("  curl -X POST http://{c}/fleet/0/healthy         # and repair it");
        println!(
            "  heck targets add extra {} --addr http://{api}",
            fleet.url(1)
        );
        println!("  curl -s http://{api}/metrics | grep heck_");
        println!("\nCtrl-C to stop.");
        let result = agent.await;
        fleet.stop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        match result {
            Ok(r) => r.map_err(anyhow::Error::new),
            Err(e) => Err(anyhow::anyhow!("agent task failed: {e}")),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
