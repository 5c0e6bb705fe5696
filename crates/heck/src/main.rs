//! `heck`: the one binary. Every subcommand lives in its own module under `cmd/`.
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "heck", version, about = "A distributed health checker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("heck {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
