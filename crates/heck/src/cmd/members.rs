//! `heck members`: the cluster as a running agent sees it.
use std::io::Write;
use std::process::ExitCode;

use crate::client::{Agent, AgentArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the agent's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    agent: AgentArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let agent = Agent::new(&args.agent)?;
    let members = crate::block_on(agent.get_json("/v1/members"))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &members)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows = members.as_array().map(Vec::as_slice).unwrap_or_default();
    writeln!(
        out,
        "{:<24} {:<22} {:<8} INCARNATION",
        "NAME", "ADDRESS", "STATE"
    )?;
    for m in rows {
        writeln!(
            out,
            "{:<24} {:<22} {:<8} {}",
            m["name"].as_str().unwrap_or("?"),
            m["addr"].as_str().unwrap_or("?"),
            m["state"].as_str().unwrap_or("?"),
            m["incarnation"]
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
