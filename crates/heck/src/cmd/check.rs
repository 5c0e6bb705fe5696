//! `heck check URL`: one probe, right now, printed. Exit 0 if it passed, 1 if it failed.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use heck_check::spec::MAX_INTERVAL;
use heck_check::{Defaults, ErrorKind, HumanDuration, SpecError, StatusMatch, TargetInput};
use heck_probe::{ProbeError, Prober};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to check: http(s)://…, tcp://host:port, grpc://host:port[/service].
    url: String,
    /// Bound on the whole check (shorter than 1 day).
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
    /// HTTPS: trust the certificates of this PEM bundle (a private CA) instead of the webpki roots.
    #[arg(long)]
    tls_ca_file: Option<PathBuf>,
    /// HTTPS: the name to send in SNI and verify the certificate for, if not the URL's host.
    #[arg(long)]
    tls_server_name: Option<String>,
    /// Print the outcome as JSON (the API's `last_check` names, plus `url` and `ok`).
    #[arg(long)]
    json: bool,
}

/// `--json` output: the fields of the API's `last_check`, with the URL checked and a verdict.
#[derive(Debug, Serialize)]
struct CheckJson<'a> {
    /// The URL, credentials redacted.
    url: String,
    /// Did the check pass?
    ok: bool,
    latency_ms: f64,
    status_code: Option<u16>,
    error: Option<ErrorKind>,
    detail: Option<&'a str>,
}

/// The command-line spelling of a target field, for error messages: the user typed flags, not
/// config fields.
fn flag_of(field: &str) -> &'static str {
    match field {
        "url" => "URL",
        "timeout" => "--timeout",
        "expect_status" => "--expect-status",
        "body_contains" => "--body-contains",
        "tls_skip_verify" => "--tls-skip-verify",
        "tls_ca_file" => "--tls-ca-file",
        "tls_server_name" => "--tls-server-name",
        _ => "check",
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let timeout = humantime::parse_duration(&args.timeout)
        .with_context(|| format!("--timeout {:?}", args.timeout))?;
    // A one-off check has no interval; the longest one accepts any timeout below it, so the
    // only limit the user meets is the timeout's own.
    if timeout >= MAX_INTERVAL {
        anyhow::bail!(
            "--timeout {}: must be shorter than {}",
            args.timeout,
            humantime::format_duration(MAX_INTERVAL)
        );
    }
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
        interval: Some(HumanDuration(MAX_INTERVAL)),
        timeout: Some(HumanDuration(timeout)),
        expect_status,
        body_contains: args.body_contains,
        tls_skip_verify: (is_https && args.tls_skip_verify).then_some(true),
        tls_ca_file: args.tls_ca_file,
        tls_server_name: args.tls_server_name,
        ..TargetInput::default()
    };
    let spec = input
        .resolve(&Defaults::default())
        .map_err(|SpecError { field, message }| anyhow::anyhow!("{}: {message}", flag_of(field)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let prober = Prober::new()?;
    prober.prepare(&spec).map_err(|e| match e {
        ProbeError::CaFile { path, message } => {
            anyhow::anyhow!("--tls-ca-file {}: {message}", path.display())
        }
        e => e.into(),
    })?;
    let outcome = runtime.block_on(prober.probe(&spec));
    // Shown with its credentials redacted, as everywhere else.
    let url = spec.url.to_string();
    if args.json {
        let json = CheckJson {
            url,
            ok: outcome.is_success(),
            latency_ms: outcome.latency.as_micros() as f64 / 1000.0,
            status_code: outcome.status_code,
            error: outcome.error,
            detail: outcome.detail.as_deref(),
        };
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        let ms = outcome.latency.as_secs_f64() * 1000.0;
        let code = outcome
            .status_code
            .map(|c| format!(" status {c}"))
            .unwrap_or_default();
        match (&outcome.error, &outcome.detail) {
            (None, _) => println!("up: {url}{code} in {ms:.1}ms"),
            (Some(kind), detail) => println!(
                "down: {url}{code} in {ms:.1}ms: {kind}{}",
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
