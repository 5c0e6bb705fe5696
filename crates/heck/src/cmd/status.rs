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

/// NAME STATUS SINCE LATENCY ERROR, one line per target; from a cluster node, also OWNER and
/// OBSERVER (a `*` after the status marks a contested answer).
/// A closed `out` (`heck status | head -1`) is an error for `main` to end quietly on.
pub fn print_table(out: &mut impl Write, targets: &serde_json::Value) -> std::io::Result<()> {
    let rows = targets.as_array().map(Vec::as_slice).unwrap_or_default();
    if rows.iter().any(|t| t.get("owner").is_some()) {
        return print_cluster_table(out, rows);
    }
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
        let error = error_of(last);
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

/// The last check's failure as the ERROR column shows it: `kind: detail`, or empty.
fn error_of(last: &serde_json::Value) -> String {
    match (last["error"].as_str(), last["detail"].as_str()) {
        (Some(kind), Some(detail)) => format!("{kind}: {detail}"),
        (Some(kind), None) => kind.to_string(),
        _ => String::new(),
    }
}

/// The table of a cluster node: every target of the cluster, who checks it and whose check the
/// status is. Latency and error are shown only where this node made the last check.
fn print_cluster_table(out: &mut impl Write, rows: &[serde_json::Value]) -> std::io::Result<()> {
    let width = |key: &str, min: usize| {
        rows.iter()
            .filter_map(|t| t[key].as_str())
            .map(str::len)
            .max()
            .unwrap_or(min)
            .max(min)
    };
    let (name_w, owner_w, observer_w) = (width("name", 4), width("owner", 5), width("observer", 8));
    writeln!(
        out,
        "{:<name_w$}  {:<10}  {:<owner_w$}  {:<observer_w$}  {:<24}  ERROR",
        "NAME", "STATUS", "OWNER", "OBSERVER", "SINCE"
    )?;
    for t in rows {
        let mut status = t["status"].as_str().unwrap_or("?").to_string();
        if t["contested"].as_bool() == Some(true) {
            status.push('*');
        }
        let last = &t["last_check"];
        let error = error_of(last);
        writeln!(
            out,
            "{:<name_w$}  {:<10}  {:<owner_w$}  {:<observer_w$}  {:<24}  {}",
            t["name"].as_str().unwrap_or("?"),
            status,
            t["owner"].as_str().unwrap_or("-"),
            t["observer"].as_str().unwrap_or("-"),
            t["since"].as_str().unwrap_or("-"),
            error
        )?;
    }
    let unhealthy = rows.iter().filter(|t| t["status"] == "unhealthy").count();
    let contested = rows
        .iter()
        .filter(|t| t["contested"].as_bool() == Some(true))
        .count();
    writeln!(
        out,
        "{} target(s), {unhealthy} unhealthy, {contested} contested (*)",
        rows.len()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_cluster_nodes_table_shows_owner_observer_and_contested() {
        let rows = serde_json::json!([
            {"name": "web-1", "status": "unhealthy", "since": "2026-12-03T12:00:00Z",
             "owner": "n2", "observer": "n1", "contested": true, "last_check": null},
            {"name": "web-2", "status": "healthy", "since": "2026-12-03T12:00:00Z",
             "owner": "n1", "observer": "n1", "contested": false,
             "last_check": {"latency_ms": 1.5, "error": null, "detail": null}}
        ]);
        let mut out = Vec::new();
        print_table(&mut out, &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("OWNER") && lines[0].contains("OBSERVER"),
            "{text}"
        );
        assert!(
            lines[1].contains("unhealthy*")
                && lines[1].contains(" n2 ")
                && lines[1].contains(" n1 "),
            "{text}"
        );
        assert_eq!(lines[3], "2 target(s), 1 unhealthy, 1 contested (*)");
    }

    #[test]
    fn a_single_agents_table_has_no_cluster_columns() {
        let rows = serde_json::json!([{"name": "web-1", "status": "healthy", "since": "x", "last_check": null}]);
        let mut out = Vec::new();
        print_table(&mut out, &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("OWNER"), "{text}");
        assert!(text.ends_with("1 target(s), 0 unhealthy\n"), "{text}");
    }
}
