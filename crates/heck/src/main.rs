//! `heck`: the one binary. Every subcommand lives in its own module under `cmd/`; `main` only
//! parses the command line and maps errors to exit codes.
//!
//! Exit codes: 0 success; 1 error (bad config or input, failed check, agent answered an error);
//! 2 usage error (from clap); 3 the agent could not be reached.
use std::future::Future;
use std::process::ExitCode;

use clap::Parser;

mod client;
mod cmd;

#[derive(Debug, Parser)]
#[command(name = "heck", version, about = "A distributed health checker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the agent: check every target of a config, serve the API.
    Agent(cmd::agent::Args),
    /// Ask an agent which targets are (un)healthy.
    Status(cmd::status::Args),
    /// List, add or remove an agent's targets.
    Targets(cmd::targets::Args),
    /// Probe one URL once and print the outcome (exit 0 up, 1 down).
    Check(cmd::check::Args),
    /// Serve a simulated fleet of HTTP targets on loopback addresses.
    Fleet(cmd::fleet::Args),
    /// A simulated fleet and an agent checking it: try heck with nothing else.
    Demo(cmd::demo::Args),
    /// Offline: which member owns which target, in priority order (rendezvous hashing).
    Ownership(cmd::ownership::Args),
    /// List the cluster's members as an agent sees them.
    Members(cmd::members::Args),
    /// Run one replica of the delta-CRDT key-value store.
    Kv(cmd::kv::Args),
    /// Print the version.
    Version,
}

/// Run a fallible future on a small runtime (for the one-request CLI commands).
pub(crate) fn block_on<T>(f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HECK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Agent(args) => cmd::agent::run(args),
        Command::Status(args) => cmd::status::run(args),
        Command::Targets(args) => cmd::targets::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Ownership(args) => cmd::ownership::run(args),
        Command::Fleet(args) => cmd::fleet::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Kv(args) => cmd::kv::run(args),
        Command::Members(args) => cmd::members::run(args),
        Command::Version => {
            println!("heck {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("heck: error: {err:#}");
            if err.downcast_ref::<client::Unreachable>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
