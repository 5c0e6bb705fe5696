//! `heck targets ls|add|rm`: manage a running agent's targets.
use std::io::Write;
use std::process::ExitCode;

use heck_check::{HumanDuration, StatusMatch, TargetInput};

use crate::client::{Agent, AgentArgs, json_or_error};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    agent: AgentArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List targets (name, status, url, interval).
    Ls {
        /// Print the agent's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a target; validated by the agent exactly as the config file is.
    Add(AddArgs),
    /// Remove a target.
    Rm {
        /// The target's name.
        name: String,
    },
}

#[derive(Debug, clap::Args)]
struct AddArgs {
    /// Unique name (letters, digits, . _ - : @).
    name: String,
    /// What to check: http://, https://, tcp://host:port, grpc://host:port[/service].
    url: String,
    /// Time between checks (e.g. 10s). Default: the agent's [defaults].
    #[arg(long)]
    interval: Option<String>,
    /// Bound on one check (e.g. 2s).
    #[arg(long)]
    timeout: Option<String>,
    /// Consecutive successes to become healthy.
    #[arg(long)]
    rise: Option<u32>,
    /// Consecutive failures to become unhealthy.
    #[arg(long)]
    fall: Option<u32>,
    /// Interval while failing.
    #[arg(long)]
    fast_interval: Option<String>,
    /// Accepted HTTP statuses: 200, 2xx or 200-299 (repeatable).
    #[arg(long)]
    expect_status: Vec<String>,
    /// HTTP body must contain this text.
    #[arg(long)]
    body_contains: Option<String>,
    /// Reuse HTTP connections between checks.
    #[arg(long)]
    keep_alive: bool,
    /// HTTPS: accept any certificate.
    #[arg(long)]
    tls_skip_verify: bool,
}

fn duration(flag: &str, v: &Option<String>) -> anyhow::Result<Option<HumanDuration>> {
    v.as_deref()
        .map(|s| {
            humantime::parse_duration(s)
                .map(HumanDuration)
                .map_err(|e| anyhow::anyhow!("--{flag} {s:?}: {e}"))
        })
        .transpose()
}

impl AddArgs {
    fn input(&self) -> anyhow::Result<TargetInput> {
        let expect_status = if self.expect_status.is_empty() {
            None
        } else {
            Some(
                self.expect_status
                    .iter()
                    .map(|s| {
                        let json = match s.parse::<u16>() {
                            Ok(_) => s.clone(),
                            Err(_) => format!("{s:?}"),
                        };
                        serde_json::from_str::<StatusMatch>(&json)
                            .map_err(|e| anyhow::anyhow!("--expect-status {s:?}: {e}"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?,
            )
        };
        Ok(TargetInput {
            name: self.name.clone(),
            url: self.url.clone(),
            interval: duration("interval", &self.interval)?,
            timeout: duration("timeout", &self.timeout)?,
            rise: self.rise,
            fall: self.fall,
            fast_interval: duration("fast-interval", &self.fast_interval)?,
            expect_status,
            body_contains: self.body_contains.clone(),
            keep_alive: self.keep_alive.then_some(true),
            tls_skip_verify: self.tls_skip_verify.then_some(true),
            ..TargetInput::default()
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let agent = Agent::new(&args.agent)?;
    let mut out = std::io::stdout().lock();
    match args.action {
        Action::Ls { json } => {
            let targets = crate::block_on(agent.get_json("/v1/targets"))?;
            if json {
                serde_json::to_writer_pretty(&mut out, &targets)?;
                writeln!(out)?;
            } else {
                for t in targets.as_array().map(Vec::as_slice).unwrap_or_default() {
                    writeln!(
                        out,
                        "{}\t{}\t{}\tevery {}",
                        t["name"].as_str().unwrap_or("?"),
                        t["status"].as_str().unwrap_or("?"),
                        t["url"].as_str().unwrap_or("?"),
                        t["spec"]["interval"].as_str().unwrap_or("?"),
                    )?;
                }
            }
        }
        Action::Add(add) => {
            let body = serde_json::to_vec(&add.input()?)?;
            let (status, reply) =
                crate::block_on(agent.request(http::Method::POST, "/v1/targets", Some(body)))?;
            let target = json_or_error(status, &reply)?;
            writeln!(
                out,
                "added {} ({}), status {}",
                target["name"].as_str().unwrap_or("?"),
                target["url"].as_str().unwrap_or("?"),
                target["status"].as_str().unwrap_or("?")
            )?;
        }
        Action::Rm { name } => {
            let path = format!("/v1/targets/{name}");
            let (status, reply) =
                crate::block_on(agent.request(http::Method::DELETE, &path, None))?;
            json_or_error(status, &reply)?;
            writeln!(out, "removed {name}")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
