//! `heck`: the one binary. Every subcommand lives in its own module under `cmd/`; `main` only
//! parses the command line and maps errors to exit codes.
//!
//! Exit codes: 0 success, 1 error (bad config, failed command), 2 usage error (clap),
//! 3 the agent could not be reached.
use std::process::ExitCode;

use clap::Parser;

mod cmd;

#[derive(Debug, Parser)]
#[command(name = "heck", version, about = "A distributed health checker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Offline: which member owns which target, in priority order (rendezvous hashing).
    Ownership(cmd::ownership::Args),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Ownership(args) => cmd::ownership::run(args),
        Command::Version => {
            println!("heck {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("heck: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
