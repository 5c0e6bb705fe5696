//! `heck fleet`: serve a simulated fleet of HTTP targets (for trying heck, tests and benchmarks).
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use heck_fleet::{Fleet, FleetConfig};
use tokio_util::sync::CancellationToken;

/// Print a line, ignoring a closed stdout: the fleet keeps serving when whoever started it
/// stopped reading (`println!` would panic and take the fleet down).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of targets, each on its own loopback address 127.a.b.c.
    #[arg(long, default_value_t = 100)]
    targets: usize,
    /// Fraction unhealthy at start (0..=1), evenly spread.
    #[arg(long, default_value_t = 0.0)]
    unhealthy: f64,
    /// Latency added to every answer (e.g. 20ms).
    #[arg(long, default_value = "0ms")]
    latency: String,
    /// Port all targets listen on (below 32768). Default: a random free one.
    #[arg(long)]
    port: Option<u16>,
    /// Control endpoint address. Default: 127.0.0.1 at a random free port.
    #[arg(long)]
    control_addr: Option<SocketAddr>,
    /// Write a heck config for this fleet here.
    #[arg(long)]
    write_config: Option<PathBuf>,
    /// `interval` in the written config.
    #[arg(long, default_value = "10s")]
    interval: String,
    /// `timeout` in the written config.
    #[arg(long, default_value = "2s")]
    timeout: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let latency = humantime::parse_duration(&args.latency)
        .with_context(|| format!("--latency {:?}", args.latency))?;
    for (flag, v) in [("interval", &args.interval), ("timeout", &args.timeout)] {
        humantime::parse_duration(v).with_context(|| format!("--{flag} {v:?}"))?;
    }
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        let fleet = Fleet::start(FleetConfig {
            targets: args.targets,
            unhealthy_fraction: args.unhealthy,
            port: args.port,
            latency,
            control_addr: args.control_addr,
        })
        .await?;
        if let Some(path) = &args.write_config {
            let defaults = format!(
                "interval = {:?}\ntimeout = {:?}",
                args.interval, args.timeout
            );
            std::fs::write(path, fleet.config_toml(&defaults))
                .with_context(|| format!("writing {}", path.display()))?;
            say!("config written to {}", path.display());
        }
        say!(
            "fleet: {} targets on port {} ({} to {}), {} unhealthy",
            fleet.len(),
            fleet.port(),
            heck_fleet::target_ip(0),
            heck_fleet::target_ip(fleet.len() - 1),
            fleet.unhealthy().len()
        );
        say!("  target 0:   curl {}", fleet.url(0));
        let c = fleet.control_addr();
        say!("  flip it:    curl -X POST http://{c}/fleet/0/unhealthy   (or /healthy)");
        say!("  slow it:    curl -X POST 'http://{c}/fleet/0/latency?ms=500'");
        say!("  summary:    curl http://{c}/fleet");
        say!("Ctrl-C to stop.");
        let stop = CancellationToken::new();
        tokio::spawn(super::agent::cancel_on_signal(stop.clone()));
        stop.cancelled().await;
        fleet.stop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
