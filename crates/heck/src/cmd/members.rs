//! `heck members`: the cluster as a running agent sees it.
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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&members)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = members.as_array().map(Vec::as_slice).unwrap_or_default();
    println!(
        "{:<24} {:<22} {:<8} INCARNATION",
        "NAME", "ADDRESS", "STATE"
    );
    for m in rows {
        println!(
            "{:<24} {:<22} {:<8} {}",
            m["name"].as_str().unwrap_or("?"),
            m["addr"].as_str().unwrap_or("?"),
            m["state"].as_str().unwrap_or("?"),
            m["incarnation"]
        );
    }
    Ok(ExitCode::SUCCESS)
}
