//! `heck ownership`: given members and targets, print who owns what, in priority order.
//!
//! Offline and deterministic: every heck process computes the same thing from the same inputs
//! (see `docs/protocols/ownership.md`).
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use heck_ownership::{Assignment, Member, View};
use serde::Serialize;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["targets", "config"]))]
pub struct Args {
    /// Comma-separated member (process) names, e.g. `a,b,c`.
    #[arg(long, value_delimiter = ',', required = true)]
    members: Vec<String>,
    /// Relative capacities, e.g. `a=2,b=1` (default 1 for unlisted members).
    #[arg(long, value_delimiter = ',')]
    weights: Vec<String>,
    /// File with one target name per line (`#` comments and blank lines ignored).
    #[arg(long)]
    targets: Option<PathBuf>,
    /// A heck config; its `[[target]]` names are the targets.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Owners per target: the first R of each priority order.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Print the load per member and max/mean instead of the per-target list.
    #[arg(long)]
    summary: bool,
    /// Print which targets move when member NAME leaves, and where they go.
    #[arg(long, value_name = "NAME")]
    without: Option<String>,
}

#[derive(Serialize)]
struct Row<'a> {
    target: &'a str,
    owners: Vec<&'a str>,
}

#[derive(Serialize)]
struct Summary<'a> {
    members: Vec<Load<'a>>,
    targets: usize,
    replicas: usize,
    max_over_mean: f64,
}

#[derive(Serialize)]
struct Load<'a> {
    member: &'a str,
    weight: f64,
    owned: usize,
}

/// `--json` with `--summary` and/or `--without`: an object with the sections asked for.
#[derive(Serialize)]
struct Report<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Summary<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    moves: Option<Vec<MoveOut>>,
}

#[derive(Serialize)]
struct MoveOut {
    target: String,
    from: Option<String>,
    to: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let weights = parse_weights(&args.weights)?;
    for name in weights.keys() {
        if !args.members.contains(name) {
            bail!("--weights names {name:?}, which is not in --members");
        }
    }
    let members = args
        .members
        .iter()
        .map(|n| {
            let n = n.trim();
            Member::weighted(n, weights.get(n).copied().unwrap_or(1.0))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let targets = load_targets(&args)?;
    let view = View::new(members.clone())?;
    let mut assignment = Assignment::new(members, args.replicas)?;
    assignment.assign(targets.iter().cloned());
    if let Some(name) = &args.without
        && !view.members().iter().any(|m| m.name() == name)
    {
        bail!("--without {name:?}: not one of --members");
    }

    let summary = args.summary.then(|| summarize(&assignment, &view));
    let moves = args.without.as_ref().map(|name| {
        let mut a = assignment.clone();
        let mut moves: Vec<MoveOut> = a
            .leave(name)
            .into_iter()
            .map(|m| MoveOut {
                target: m.target,
                from: m.from,
                to: m.to,
            })
            .collect();
        moves.sort_by(|a, b| a.target.cmp(&b.target));
        moves
    });

    if args.json {
        let rows = || -> Vec<Row<'_>> {
            targets
                .iter()
                .map(|t| Row {
                    target: t,
                    owners: view.priority(t).iter().map(|m| m.name()).collect(),
                })
                .collect()
        };
        let out = if summary.is_none() && moves.is_none() {
            serde_json::to_string_pretty(&rows())?
        } else {
            serde_json::to_string_pretty(&Report { summary, moves })?
        };
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }

    if summary.is_none() && moves.is_none() {
        let r = args.replicas;
        for t in &targets {
            let order: Vec<&str> = view.priority(t).iter().map(|m| m.name()).collect();
            let (owners, rest) = order.split_at(r.min(order.len()));
            if rest.is_empty() {
                println!("{t}\t{}", owners.join(", "));
            } else {
                println!("{t}\t{} | {}", owners.join(", "), rest.join(", "));
            }
        }
    }
    if let Some(s) = &summary {
        println!(
            "{:<24} {:>8} {:>10} {:>8}",
            "member", "weight", "owned", "share"
        );
        for l in &s.members {
            let share = 100.0 * l.owned as f64 / (s.targets * s.replicas).max(1) as f64;
            println!(
                "{:<24} {:>8} {:>10} {:>7.2}%",
                l.member, l.weight, l.owned, share
            );
        }
        println!(
            "{} targets x {} replica(s); max/mean = {:.3} (weight-adjusted)",
            s.targets, s.replicas, s.max_over_mean
        );
    }
    if let (Some(m), Some(name)) = (&moves, &args.without) {
        println!(
            "without {name}: {} of {} targets move ({:.2}%)",
            m.len(),
            targets.len(),
            100.0 * m.len() as f64 / targets.len().max(1) as f64
        );
        for mv in m {
            println!(
                "{}\t{} -> {}",
                mv.target,
                mv.from.as_deref().unwrap_or("-"),
                mv.to.as_deref().unwrap_or("(no member left)")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Load per member; max/mean compares each member's load with its weight-proportional share.
fn summarize<'a>(a: &'a Assignment, view: &'a View) -> Summary<'a> {
    let total_weight: f64 = view.members().iter().map(Member::weight).sum();
    let slots = a.targets().len() * a.replicas().min(view.members().len());
    let loads: Vec<Load<'a>> = a
        .load()
        .into_iter()
        .zip(view.members())
        .map(|((member, owned), m)| Load {
            member,
            weight: m.weight(),
            owned,
        })
        .collect();
    let max_over_mean = loads
        .iter()
        .map(|l| {
            let fair = slots as f64 * l.weight / total_weight;
            if fair > 0.0 {
                l.owned as f64 / fair
            } else {
                0.0
            }
        })
        .fold(0.0, f64::max);
    Summary {
        members: loads,
        targets: a.targets().len(),
        replicas: a.replicas(),
        max_over_mean,
    }
}

fn parse_weights(items: &[String]) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (name, w) = item
            .split_once('=')
            .with_context(|| format!("--weights: {item:?} is not NAME=WEIGHT"))?;
        let w: f64 = w
            .trim()
            .parse()
            .with_context(|| format!("--weights: {w:?} (for {name}) is not a number"))?;
        if out.insert(name.trim().to_string(), w).is_some() {
            bail!("--weights: {name:?} is given twice");
        }
    }
    Ok(out)
}

fn load_targets(args: &Args) -> anyhow::Result<Vec<String>> {
    let mut targets: Vec<String> = if let Some(path) = &args.config {
        let config = heck_config::load(path)?;
        config
            .targets
            .into_iter()
            .map(|t| t.name.to_string())
            .collect()
    } else if let Some(path) = &args.targets {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read targets file", path.display()))?;
        text.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    } else {
        bail!("give --targets FILE or --config FILE");
    };
    let mut seen = std::collections::HashSet::new();
    targets.retain(|t| seen.insert(t.clone()));
    Ok(targets)
}
