//! `heck`: the one binary. Every subcommand lives in its own module under `cmd/`; `main` only
//! parses the command line and maps errors to exit codes.
//!
//! Exit codes: 0 success; 1 error (bad config or input, failed check, agent answered an error);
//! 2 usage error (from clap); 3 the agent could not be reached.
use std::future::Future;
use std::io::IsTerminal as _;
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

/// The multi-threaded runtime a long-running command (agent, demo, fleet) runs on.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// Did `err` come from writing to a closed pipe (`heck status | head -1`)?
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        let kind = match e.downcast_ref::<std::io::Error>() {
            Some(io) => Some(io.kind()),
            // `serde_json::to_writer` wraps the write error in its own.
            None => e
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind),
        };
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// A reader that closes our stdout early (`| head`) has all it wants: end quietly with 0, as Unix
/// tools do. The commands that print a lot write through `writeln!` and return the error; this
/// hook covers every other `println!`, which panics on a closed stdout (Rust ignores SIGPIPE).
fn exit_quietly_on_a_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    exit_quietly_on_a_closed_stdout();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        // Colour codes only for a terminal: in a file or a journal they are noise.
        .with_ansi(std::io::stderr().is_terminal())
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
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
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
