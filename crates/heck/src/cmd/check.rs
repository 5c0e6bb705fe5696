//! `heck check URL`: one probe, right now, printed. Exit 0 if it passed, 1 if it failed.
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use heck_check::{Defaults, HumanDuration, StatusMatch, TargetInput};
use heck_probe::Prober;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to check: http(s)://…, tcp://host:port, grpc://host:port[/service].
    url: String,
    /// Bound on the whole check.
    #[arg(long, default_value = "2s")]
    timeout: String,
    /// Accepted HTTP statuses: 200, 2xx or 200-299 (repeatable). Default 2xx.
    #[arg(long)]
    expect_status: Vec<String>,
    /// HTTP body must contain this text.
    #[arg(long)]
    body_contains: Option<String>,
    /// HTTPS: accept any certificate.
    #[arg(long)]
    tls_skip_verify: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let timeout = humantime::parse_duration(&args.timeout)
        .with_context(|| format!("--timeout {:?}", args.timeout))?;
    let expect_status = (!args.expect_status.is_empty())
        .then(|| {
            args.expect_status
                .iter()
                .map(|s| {
                    let json = if s.parse::<u16>().is_ok() {
                        s.clone()
                    } else {
                        format!("{s:?}")
                    };
                    serde_json::from_str::<StatusMatch>(&json)
                        .map_err(|e| anyhow::anyhow!("--expect-status {s:?}: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .transpose()?;
    let is_https = args.url.starts_with("https://");
    let input = TargetInput {
        name: "check".into(),
        url: args.url.clone(),
        // A one-off check has no interval; any value above the timeout passes validation.
        interval: Some(HumanDuration(timeout + Duration::from_secs(1))),
        timeout: Some(HumanDuration(timeout)),
        expect_status,
        body_contains: args.body_contains,
        tls_skip_verify: (is_https && args.tls_skip_verify).then_some(true),
        ..TargetInput::default()
    };
    let spec = input
        .resolve(&Defaults::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let outcome = runtime
        .block_on(async { Ok::<_, heck_probe::ProbeError>(Prober::new()?.probe(&spec).await) })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        let ms = outcome.latency.as_secs_f64() * 1000.0;
        let code = outcome
            .status_code
            .map(|c| format!(" status {c}"))
            .unwrap_or_default();
        match (&outcome.error, &outcome.detail) {
            (None, _) => println!("up: {}{code} in {ms:.1}ms", args.url),
            (Some(kind), detail) => println!(
                "down: {}{code} in {ms:.1}ms: {kind}{}",
                args.url,
                detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        }
    }
    Ok(if outcome.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
