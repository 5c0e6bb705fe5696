//! `heck status`: which targets are unhealthy? Asks a running agent.
use std::io::Write;
use std::process::ExitCode;

use crate::client::{Agent, AgentArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only unhealthy targets.
    #[arg(long)]
    unhealthy: bool,
    /// Print the agent's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    agent: AgentArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let agent = Agent::new(&args.agent)?;
    let path = if args.unhealthy {
        "/v1/targets?status=unhealthy"
    } else {
        "/v1/targets"
    };
    let targets = crate::block_on(agent.get_json(path))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &targets)?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &targets)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// NAME STATUS SINCE LATENCY ERROR, one line per target.
/// A closed `out` (`heck status | head -1`) is an error for `main` to end quietly on.
pub fn print_table(out: &mut impl Write, targets: &serde_json::Value) -> std::io::Result<()> {
    let rows = targets.as_array().map(Vec::as_slice).unwrap_or_default();
    let width = rows
        .iter()
        .filter_map(|t| t["name"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<width$}  {:<9}  {:<24}  {:>10}  ERROR",
        "NAME", "STATUS", "SINCE", "LATENCY"
    )?;
    for t in rows {
        let last = &t["last_check"];
        let latency = last["latency_ms"]
            .as_f64()
            .map_or("-".to_string(), |ms| format!("{ms:.1}ms"));
        let error = match (last["error"].as_str(), last["detail"].as_str()) {
            (Some(kind), Some(detail)) => format!("{kind}: {detail}"),
            (Some(kind), None) => kind.to_string(),
            _ => String::new(),
        };
        writeln!(
            out,
            "{:<width$}  {:<9}  {:<24}  {:>10}  {}",
            t["name"].as_str().unwrap_or("?"),
            t["status"].as_str().unwrap_or("?"),
            t["since"].as_str().unwrap_or("-"),
            latency,
            error
        )?;
    }
    let unhealthy = rows.iter().filter(|t| t["status"] == "unhealthy").count();
    writeln!(out, "{} target(s), {unhealthy} unhealthy", rows.len())
}
