//! What to check, and the one place where a target is validated.
//!
//! The config file (`[[target]]` tables) and the API (`POST /v1/targets`) both deserialize into a
//! [`TargetInput`] and call [`TargetInput::resolve`], so a target that the API accepts is exactly
//! one the config would accept, with the same error messages. Errors name the field
//! ([`SpecError::field`]) so the config loader can point at its line and column.
use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

/// Shortest interval (and timeout) accepted: below this, a check is a load test.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest interval accepted: a day. Past that, a health check says nothing about "now".
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// rise and fall are consecutive counts in `1..=MAX_THRESHOLD`.
pub const MAX_THRESHOLD: u32 = 100;
/// Longest target name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// `interval` when neither the target nor `[defaults]` sets one.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// `timeout` when neither the target nor `[defaults]` sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// `rise` when neither the target nor `[defaults]` sets one.
pub const DEFAULT_RISE: u32 = 2;
/// `fall` when neither the target nor `[defaults]` sets one.
pub const DEFAULT_FALL: u32 = 3;

/// The kind of probe, chosen by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// `http://host[:port]/path`: GET, status and optional body checked.
    Http,
    /// `https://…`: as http, over TLS (rustls; webpki roots, or the `tls_ca_file` bundle).
    Https,
    /// `tcp://host:port`: a TCP connect succeeds.
    Tcp,
    /// `grpc://host:port[/service]`: `grpc.health.v1.Health/Check` answers SERVING.
    Grpc,
}

impl ProbeKind {
    /// The kind a URL scheme selects, if any.
    pub fn from_scheme(scheme: &str) -> Option<ProbeKind> {
        match scheme {
            "http" => Some(ProbeKind::Http),
            "https" => Some(ProbeKind::Https),
            "tcp" => Some(ProbeKind::Tcp),
            "grpc" => Some(ProbeKind::Grpc),
            _ => None,
        }
    }

    /// Does this kind speak HTTP (and so take `expect_status`, `body_contains`, `keep_alive`)?
    pub fn is_http(self) -> bool {
        matches!(self, ProbeKind::Http | ProbeKind::Https)
    }
}

/// A target's name: its identity everywhere (API paths, ownership hashing, gossip keys).
/// 1 to 128 bytes of ASCII `A-Z a-z 0-9 . _ - : @`, so it is safe in a URL path without escaping.
///
/// Shared, not copied: the registry, the schedule (twice) and every in-flight check hold the
/// same name, so a clone is a reference-count bump and 100,000 targets keep 100,000 names, not
/// 500,000 (see `docs/benchmarks.md`, Version 1: memory).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetName(Arc<str>);

impl TargetName {
    /// Validate a name.
    pub fn new(name: impl Into<String>) -> Result<TargetName, String> {
        let name = name.into();
        if name.is_empty() {
            return Err("must not be empty".into());
        }
        if name.len() > MAX_NAME_LEN {
            return Err(format!(
                "is {} bytes long, at most {MAX_NAME_LEN}",
                name.len()
            ));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')))
        {
            return Err(format!(
                "contains {bad:?}; allowed are ASCII letters (A-Z, a-z), digits (0-9) and . _ - : @"
            ));
        }
        Ok(TargetName(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TargetName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TargetName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TargetName::new(s).map_err(|e| serde::de::Error::custom(format!("target name {e}")))
    }
}

/// A duration written for humans: `"10s"`, `"250ms"`, `"1m 30s"` (the `humantime` syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?} ({e}); write e.g. \"10s\", \"250ms\", \"1m\""
                ))
            })
    }
}

/// One entry of `expect_status`: a code (`200`), a class (`"2xx"`) or a range (`"200-299"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusMatch {
    /// Lowest accepted code, inclusive.
    pub low: u16,
    /// Highest accepted code, inclusive.
    pub high: u16,
}

impl StatusMatch {
    fn parse_str(s: &str) -> Result<StatusMatch, String> {
        let s = s.trim();
        let bad = || format!("invalid status {s:?}; write 200, \"2xx\" or \"200-299\"");
        if let Some(class) = s.strip_suffix("xx").or_else(|| s.strip_suffix("XX")) {
            let digit: u16 = class.parse().map_err(|_| bad())?;
            return StatusMatch::checked(digit * 100, digit * 100 + 99).ok_or_else(bad);
        }
        if let Some((a, b)) = s.split_once('-') {
            let low = a.trim().parse().map_err(|_| bad())?;
            let high = b.trim().parse().map_err(|_| bad())?;
            return StatusMatch::checked(low, high).ok_or_else(bad);
        }
        let code = s.parse().map_err(|_| bad())?;
        StatusMatch::checked(code, code).ok_or_else(bad)
    }

    fn checked(low: u16, high: u16) -> Option<StatusMatch> {
        ((100..=599).contains(&low) && (100..=599).contains(&high) && low <= high)
            .then_some(StatusMatch { low, high })
    }

    /// Does `code` fall in this match?
    pub fn contains(self, code: u16) -> bool {
        (self.low..=self.high).contains(&code)
    }
}

impl fmt::Display for StatusMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else if self.low.is_multiple_of(100) && self.high == self.low + 99 {
            write!(f, "{}xx", self.low / 100)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

impl Serialize for StatusMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.low == self.high {
            s.serialize_u16(self.low)
        } else {
            s.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for StatusMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Code(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Code(c) => u16::try_from(c)
                .ok()
                .and_then(|c| StatusMatch::checked(c, c))
                .ok_or_else(|| serde::de::Error::custom(format!("status {c} is not in 100..=599"))),
            Raw::Text(s) => StatusMatch::parse_str(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// The set of accepted HTTP status codes. Default: `2xx`, as Consul and blackbox_exporter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct StatusSet(Vec<StatusMatch>);

impl StatusSet {
    /// Does the set accept `code`?
    pub fn accepts(&self, code: u16) -> bool {
        self.0.iter().any(|m| m.contains(code))
    }
}

impl Default for StatusSet {
    fn default() -> Self {
        StatusSet(vec![StatusMatch {
            low: 200,
            high: 299,
        }])
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

/// Consecutive-result thresholds (HAProxy's `rise`/`fall`, Kubernetes' success/failure thresholds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Thresholds {
    /// Consecutive successes that make a target healthy (from unknown or unhealthy).
    pub rise: NonZeroU32,
    /// Consecutive failures that make a target unhealthy (from unknown or healthy).
    pub fall: NonZeroU32,
}

/// `[defaults]`: values every target inherits unless it sets its own. Every field is optional;
/// the built-in values are: interval 10s, timeout 2s, rise 2, fall 3, expect_status 2xx,
/// keep_alive false, tls_skip_verify false, no fast interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Time between two checks of a target. Built-in: 10s. Range: 10ms..=24h.
    pub interval: Option<HumanDuration>,
    /// Bound on one whole check (connect + TLS + response). Built-in: 2s. Must be < interval.
    pub timeout: Option<HumanDuration>,
    /// Consecutive successes to become healthy. Built-in: 2. Range 1..=100.
    pub rise: Option<u32>,
    /// Consecutive failures to become unhealthy. Built-in: 3. Range 1..=100.
    pub fall: Option<u32>,
    /// Interval used while the target is failing (last check failed, or unhealthy). Built-in:
    /// none (the normal interval). Must be > timeout and <= interval (a "fast" interval longer
    /// than the normal one would re-check a failing target less often, not more).
    pub fast_interval: Option<HumanDuration>,
    /// HTTP: accepted statuses. Built-in: `["2xx"]`.
    pub expect_status: Option<Vec<StatusMatch>>,
    /// HTTP: reuse connections between checks. Built-in: false (a fresh connection per check,
    /// as Consul and blackbox_exporter do, so a check measures what a new client sees).
    pub keep_alive: Option<bool>,
    /// HTTPS: accept any certificate. Built-in: false.
    pub tls_skip_verify: Option<bool>,
    /// HTTPS: trust the certificates of this PEM bundle (a private CA) instead of the webpki
    /// roots. Built-in: none. The config loader reads and checks the file at load (a relative
    /// path is relative to the config file); `tls_skip_verify` makes it moot.
    pub tls_ca_file: Option<PathBuf>,
}

/// A target as written by a user (TOML `[[target]]` or API JSON), before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetInput {
    /// Unique name; see [`TargetName`].
    pub name: String,
    /// What to check; the scheme picks the kind: `http`, `https`, `tcp`, `grpc`.
    pub url: String,
    /// Overrides `[defaults]`; see [`Defaults`] for meaning and ranges.
    pub interval: Option<HumanDuration>,
    /// Overrides `[defaults]`.
    pub timeout: Option<HumanDuration>,
    /// Overrides `[defaults]`.
    pub rise: Option<u32>,
    /// Overrides `[defaults]`.
    pub fall: Option<u32>,
    /// Overrides `[defaults]`.
    pub fast_interval: Option<HumanDuration>,
    /// HTTP only. Overrides `[defaults]`.
    pub expect_status: Option<Vec<StatusMatch>>,
    /// HTTP only: the response body must contain this text.
    pub body_contains: Option<String>,
    /// HTTP only. Overrides `[defaults]`.
    pub keep_alive: Option<bool>,
    /// HTTPS only. Overrides `[defaults]`.
    pub tls_skip_verify: Option<bool>,
    /// HTTPS only. Overrides `[defaults]`.
    pub tls_ca_file: Option<PathBuf>,
    /// HTTPS only: the name sent in SNI and that the certificate must be valid for, when it
    /// differs from the URL's host (e.g. checking one backend by IP behind a shared name).
    /// The `Host` header still comes from the URL.
    pub tls_server_name: Option<String>,
}

/// A target's URL. Two faces, on purpose: what the probe sends is the whole URL
/// ([`TargetUrl::as_url`]); what is shown — `Display`, `Debug` and `Serialize`, which the API,
/// the logs and the CLI use — has its credentials redacted (`http://user:***@host/`; a user
/// without a password may be a token, so it shows as `***`). Redacting by default means a new
/// place that prints a URL cannot leak a password by forgetting to.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TargetUrl(Url);

/// What replaces a credential in a shown URL.
pub const REDACTED: &str = "***";

impl TargetUrl {
    /// The URL as the probe uses it, credentials included. Never show this.
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// Does the URL carry a user or a password?
    pub fn has_credentials(&self) -> bool {
        !self.0.username().is_empty() || self.0.password().is_some()
    }

    /// The URL as shown: credentials replaced by [`REDACTED`].
    pub fn redacted(&self) -> Cow<'_, str> {
        if !self.has_credentials() {
            return Cow::Borrowed(self.0.as_str());
        }
        let mut shown = self.0.clone();
        // Both setters fail only for URLs that cannot have credentials (no host), and such a
        // URL never gets here: resolve requires a host.
        let redacted = if shown.password().is_some() {
            shown.set_password(Some(REDACTED))
        } else {
            shown.set_username(REDACTED)
        };
        match redacted {
            Ok(()) => Cow::Owned(shown.to_string()),
            Err(()) => Cow::Borrowed("<url with credentials>"),
        }
    }

    /// The URL's scheme.
    pub fn scheme(&self) -> &str {
        self.0.scheme()
    }

    /// The host, as written (IPv6 in brackets).
    pub fn host_str(&self) -> Option<&str> {
        self.0.host_str()
    }

    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.0.port()
    }

    /// The explicit port, else the scheme's default (80, 443).
    pub fn port_or_known_default(&self) -> Option<u16> {
        self.0.port_or_known_default()
    }

    /// The path (`/` at least, for http and https).
    pub fn path(&self) -> &str {
        self.0.path()
    }

    /// The query, without its `?`.
    pub fn query(&self) -> Option<&str> {
        self.0.query()
    }
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TargetUrl({:?})", self.redacted())
    }
}

impl Serialize for TargetUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// A validated target: every field has its final value and every relation holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetSpec {
    /// Identity.
    pub name: TargetName,
    /// Where to probe. Shown redacted; see [`TargetUrl`].
    pub url: TargetUrl,
    /// Chosen by the URL's scheme.
    pub kind: ProbeKind,
    /// Time between checks while passing.
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// Bound on one whole check; always < interval and < fast_interval.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Time between checks while failing, if set.
    #[serde(serialize_with = "ser_opt_duration")]
    pub fast_interval: Option<Duration>,
    /// rise/fall.
    #[serde(flatten)]
    pub thresholds: Thresholds,
    /// HTTP: accepted statuses.
    pub expect_status: StatusSet,
    /// HTTP: required body substring.
    pub body_contains: Option<String>,
    /// HTTP: reuse connections.
    pub keep_alive: bool,
    /// HTTPS: accept any certificate.
    pub tls_skip_verify: bool,
    /// HTTPS: a CA bundle and/or a server name, when set. Boxed: most targets have neither, and
    /// a spec lives per target (8 bytes each instead of 48 at 100,000 targets).
    #[serde(flatten)]
    pub tls: Option<Box<TlsOverrides>>,
}

/// The rarely set TLS settings of an https target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsOverrides {
    /// Trust this PEM bundle instead of the webpki roots (never with `tls_skip_verify`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// SNI and verification name, when not the URL's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    HumanDuration(*d).serialize(s)
}

fn ser_opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    d.map(HumanDuration).serialize(s)
}

impl TargetSpec {
    /// The interval to wait before the next check: `fast_interval` while `failing`, else `interval`.
    pub fn next_interval(&self, failing: bool) -> Duration {
        match (failing, self.fast_interval) {
            (true, Some(fast)) => fast,
            _ => self.interval,
        }
    }

    /// The shortest time between two checks of this target: the fast interval if set (never
    /// longer than the interval; `min` keeps this true for any spec built by hand), else the
    /// interval.
    pub fn shortest_interval(&self) -> Duration {
        self.fast_interval
            .map_or(self.interval, |fast| fast.min(self.interval))
    }

    /// For gRPC targets: the service name to ask about (the URL path without its leading `/`;
    /// empty = the server as a whole).
    pub fn grpc_service(&self) -> &str {
        self.url.path().trim_start_matches('/')
    }

    /// HTTPS: the CA bundle to verify with, if any.
    pub fn tls_ca_file(&self) -> Option<&std::path::Path> {
        self.tls.as_ref()?.tls_ca_file.as_deref()
    }

    /// HTTPS: the name to send in SNI and verify the certificate for, if not the URL's host.
    pub fn tls_server_name(&self) -> Option<&str> {
        self.tls.as_ref()?.tls_server_name.as_deref()
    }

    /// The raw form as shown (for `GET /v1/targets/{name}`): credentials in the URL are
    /// redacted, so it resolves back to this spec exactly when the URL has none. For a form that
    /// keeps them (writing a config, handing a target to another node), see
    /// [`TargetSpec::to_input_unredacted`].
    pub fn to_input(&self) -> TargetInput {
        let mut input = self.to_input_unredacted();
        if self.url.has_credentials() {
            input.url = self.url.redacted().into_owned();
        }
        input
    }

    /// The raw form that resolves back to this spec, credentials included. Never show it.
    pub fn to_input_unredacted(&self) -> TargetInput {
        let https = self.kind == ProbeKind::Https;
        TargetInput {
            name: self.name.to_string(),
            url: self.url.as_url().to_string(),
            interval: Some(HumanDuration(self.interval)),
            timeout: Some(HumanDuration(self.timeout)),
            rise: Some(self.thresholds.rise.get()),
            fall: Some(self.thresholds.fall.get()),
            fast_interval: self.fast_interval.map(HumanDuration),
            expect_status: self.kind.is_http().then(|| self.expect_status.0.clone()),
            body_contains: self.body_contains.clone(),
            keep_alive: self.kind.is_http().then_some(self.keep_alive),
            tls_skip_verify: https.then_some(self.tls_skip_verify),
            tls_ca_file: self.tls_ca_file().map(Into::into),
            tls_server_name: self.tls_server_name().map(Into::into),
        }
    }
}

/// Why a target (or `[defaults]`) is invalid: the field, and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct SpecError {
    /// The offending field, as spelled in the config (`"timeout"`, `"url"`, …).
    pub field: &'static str,
    /// What is wrong, and what would be right.
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError {
        field,
        message: message.into(),
    }
}

fn check_duration(field: &'static str, d: Duration) -> Result<Duration, SpecError> {
    if d.is_zero() {
        return Err(err(field, "must not be zero"));
    }
    if d < MIN_INTERVAL {
        return Err(err(
            field,
            format!(
                "{} is below the minimum of {}",
                HumanDuration(d).show(),
                HumanDuration(MIN_INTERVAL).show()
            ),
        ));
    }
    if d > MAX_INTERVAL {
        return Err(err(
            field,
            format!(
                "{} is above the maximum of {}",
                HumanDuration(d).show(),
                HumanDuration(MAX_INTERVAL).show()
            ),
        ));
    }
    Ok(d)
}

/// The one place the "timeout < interval" rule is spelled (for `[defaults]` and per target).
fn timeout_below_interval(timeout: Duration, interval: Duration) -> Result<(), SpecError> {
    if timeout >= interval {
        return Err(err(
            "timeout",
            format!(
                "{} must be less than interval {}",
                HumanDuration(timeout).show(),
                HumanDuration(interval).show()
            ),
        ));
    }
    Ok(())
}

/// The one place the "fast_interval <= interval" rule is spelled: a fast interval is for
/// confirming a failure sooner, so one longer than the interval (a failing target re-checked
/// once an hour) is a mistake, not a choice.
fn fast_not_above_interval(fast: Duration, interval: Duration) -> Result<(), SpecError> {
    if fast > interval {
        return Err(err(
            "fast_interval",
            format!(
                "{} must not be longer than interval {}",
                HumanDuration(fast).show(),
                HumanDuration(interval).show()
            ),
        ));
    }
    Ok(())
}

fn check_ca_file(path: &std::path::Path) -> Result<(), SpecError> {
    if path.as_os_str().is_empty() {
        return Err(err("tls_ca_file", "must not be empty (omit it instead)"));
    }
    Ok(())
}

/// A TLS server name: a DNS name or an IP address, without port or brackets.
fn check_server_name(name: &str) -> Result<(), SpecError> {
    let bad = |why: &str| err("tls_server_name", format!("{name:?} {why}"));
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if name.contains([':', '/', '[', ']', '@', ' ']) {
        return Err(bad(
            "is not a host name (write the name alone, without scheme or port)",
        ));
    }
    url::Host::parse(name).map_err(|e| bad(&format!("is not a host name: {e}")))?;
    Ok(())
}

fn check_threshold(field: &'static str, v: u32) -> Result<NonZeroU32, SpecError> {
    NonZeroU32::new(v)
        .filter(|v| v.get() <= MAX_THRESHOLD)
        .ok_or_else(|| err(field, format!("{v} is not in 1..={MAX_THRESHOLD}")))
}

impl HumanDuration {
    fn show(self) -> String {
        humantime::format_duration(self.0).to_string()
    }
}

impl Defaults {
    /// Check the fields that can be checked alone (ranges); relations are checked per target,
    /// where the overrides are known.
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(d) = self.interval {
            check_duration("interval", d.0)?;
        }
        if let Some(d) = self.timeout {
            check_duration("timeout", d.0)?;
        }
        if let Some(d) = self.fast_interval {
            check_duration("fast_interval", d.0)?;
        }
        if let Some(v) = self.rise {
            check_threshold("rise", v)?;
        }
        if let Some(v) = self.fall {
            check_threshold("fall", v)?;
        }
        if let (Some(t), Some(i)) = (self.timeout, self.interval) {
            timeout_below_interval(t.0, i.0)?;
        }
        if let (Some(f), Some(i)) = (self.fast_interval, self.interval) {
            fast_not_above_interval(f.0, i.0)?;
        }
        if let Some(p) = &self.tls_ca_file {
            check_ca_file(p)?;
        }
        Ok(())
    }
}

impl TargetInput {
    /// Validate this target against `defaults` and produce its final spec.
    ///
    /// Checked: the name; the URL (scheme http/https/tcp/grpc, a host, a non-zero port for tcp
    /// and grpc); every duration non-zero and within 10ms..=24h; `timeout < interval`,
    /// `timeout < fast_interval <= interval`; rise/fall in 1..=100; HTTP-only fields only on
    /// HTTP targets, TLS fields only on https targets. The CA file's contents are checked by
    /// the config loader and the prober (this crate does no IO).
    pub fn resolve(&self, defaults: &Defaults) -> Result<TargetSpec, SpecError> {
        let name = TargetName::new(self.name.clone()).map_err(|m| err("name", m))?;
        let url = Url::parse(&self.url)
            .map_err(|e| err("url", format!("{:?} is not a valid URL: {e}", self.url)))?;
        let kind = ProbeKind::from_scheme(url.scheme()).ok_or_else(|| {
            err(
                "url",
                format!(
                    "scheme {:?} is not supported; use http, https, tcp or grpc",
                    url.scheme()
                ),
            )
        })?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(err("url", format!("{:?} has no host", self.url)));
        }
        if matches!(kind, ProbeKind::Tcp | ProbeKind::Grpc) && url.port().is_none() {
            return Err(err(
                "url",
                format!(
                    "{:?} needs a port (e.g. {}://host:9000)",
                    self.url,
                    url.scheme()
                ),
            ));
        }
        // Port 0 means "any port" to bind, and nothing to connect to.
        if url.port() == Some(0) {
            return Err(err(
                "url",
                format!("{:?}: port 0 cannot be checked", self.url),
            ));
        }
        if kind == ProbeKind::Tcp && !matches!(url.path(), "" | "/") {
            return Err(err("url", format!("{:?}: a tcp URL has no path", self.url)));
        }

        let interval = check_duration(
            "interval",
            self.interval
                .or(defaults.interval)
                .map_or(DEFAULT_INTERVAL, |d| d.0),
        )?;
        let timeout = check_duration(
            "timeout",
            self.timeout
                .or(defaults.timeout)
                .map_or(DEFAULT_TIMEOUT, |d| d.0),
        )?;
        let fast_interval = self
            .fast_interval
            .or(defaults.fast_interval)
            .map(|d| check_duration("fast_interval", d.0))
            .transpose()?;
        timeout_below_interval(timeout, interval)?;
        if let Some(fast) = fast_interval
            && timeout >= fast
        {
            return Err(err(
                "fast_interval",
                format!(
                    "{} must be greater than timeout {}",
                    HumanDuration(fast).show(),
                    HumanDuration(timeout).show()
                ),
            ));
        }
        if let Some(fast) = fast_interval {
            fast_not_above_interval(fast, interval)?;
        }
        let rise = check_threshold("rise", self.rise.or(defaults.rise).unwrap_or(DEFAULT_RISE))?;
        let fall = check_threshold("fall", self.fall.or(defaults.fall).unwrap_or(DEFAULT_FALL))?;

        // HTTP-only fields: an explicit per-target value on a non-HTTP target is a mistake worth
        // reporting; a value inherited from [defaults] simply does not apply.
        if !kind.is_http() {
            for (field, set) in [
                ("expect_status", self.expect_status.is_some()),
                ("body_contains", self.body_contains.is_some()),
                ("keep_alive", self.keep_alive.is_some()),
            ] {
                if set {
                    return Err(err(
                        field,
                        format!(
                            "applies to http and https targets only, not {}",
                            url.scheme()
                        ),
                    ));
                }
            }
        }
        if kind != ProbeKind::Https {
            for (field, set) in [
                ("tls_skip_verify", self.tls_skip_verify.is_some()),
                ("tls_ca_file", self.tls_ca_file.is_some()),
                ("tls_server_name", self.tls_server_name.is_some()),
            ] {
                if set {
                    return Err(err(field, "applies to https targets only"));
                }
            }
        }
        if let Some(p) = &self.tls_ca_file {
            check_ca_file(p)?;
            if self.tls_skip_verify == Some(true) {
                return Err(err(
                    "tls_ca_file",
                    "cannot be used with tls_skip_verify = true (which trusts any certificate)",
                ));
            }
        }
        if let Some(n) = &self.tls_server_name {
            check_server_name(n)?;
        }
        let expect_status = match self
            .expect_status
            .as_ref()
            .or(defaults.expect_status.as_ref())
        {
            Some(list) if list.is_empty() => {
                return Err(err("expect_status", "must list at least one status"));
            }
            Some(list) => StatusSet(list.clone()),
            None => StatusSet::default(),
        };
        if self.body_contains.as_deref() == Some("") {
            return Err(err("body_contains", "must not be empty (omit it instead)"));
        }

        let https = kind == ProbeKind::Https;
        let tls_skip_verify = https
            && self
                .tls_skip_verify
                .or(defaults.tls_skip_verify)
                .unwrap_or(false);
        let tls = TlsOverrides {
            // Inherited from [defaults] by a target that skips verification: moot, so dropped.
            tls_ca_file: self
                .tls_ca_file
                .as_ref()
                .or(defaults.tls_ca_file.as_ref())
                .filter(|_| https && !tls_skip_verify)
                .cloned(),
            tls_server_name: self.tls_server_name.clone(),
        };
        let tls = (tls != TlsOverrides::default()).then(|| Box::new(tls));
        Ok(TargetSpec {
            name,
            url: TargetUrl(url),
            kind,
            interval,
            timeout,
            fast_interval,
            thresholds: Thresholds { rise, fall },
            expect_status,
            body_contains: self.body_contains.clone(),
            keep_alive: kind.is_http() && self.keep_alive.or(defaults.keep_alive).unwrap_or(false),
            tls_skip_verify,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn input(name: &str, url: &str) -> TargetInput {
        TargetInput {
            name: name.into(),
            url: url.into(),
            ..TargetInput::default()
        }
    }

    #[test]
    fn an_http_target_gets_the_built_in_defaults() {
        let spec = input("web-1", "http://127.0.0.1:8080/health")
            .resolve(&Defaults::default())
            .unwrap();
        assert_eq!(spec.kind, ProbeKind::Http);
        assert_eq!(spec.interval, Duration::from_secs(10));
        assert_eq!(spec.timeout, Duration::from_secs(2));
        assert_eq!(spec.thresholds.rise.get(), 2);
        assert_eq!(spec.thresholds.fall.get(), 3);
        assert!(spec.expect_status.accepts(204));
        assert!(!spec.expect_status.accepts(301));
        assert!(!spec.keep_alive);
    }

    #[test]
    fn per_target_values_override_defaults() {
        let defaults = Defaults {
            interval: Some(HumanDuration(Duration::from_secs(5))),
            fall: Some(5),
            ..Defaults::default()
        };
        let mut t = input("a", "http://h/");
        t.fall = Some(1);
        let spec = t.resolve(&defaults).unwrap();
        assert_eq!(spec.interval, Duration::from_secs(5));
        assert_eq!(spec.thresholds.fall.get(), 1);
    }

    #[test]
    fn timeout_must_be_less_than_interval() {
        let mut t = input("a", "http://h/");
        t.interval = Some(HumanDuration(Duration::from_secs(1)));
        t.timeout = Some(HumanDuration(Duration::from_secs(1)));
        let e = t.resolve(&Defaults::default()).unwrap_err();
        assert_eq!(e.field, "timeout");
        assert_eq!(e.message, "1s must be less than interval 1s");
    }

    #[test]
    fn zero_durations_are_rejected() {
        let mut t = input("a", "http://h/");
        t.interval = Some(HumanDuration(Duration::ZERO));
        assert_eq!(
            t.resolve(&Defaults::default()).unwrap_err().field,
            "interval"
        );
    }

    #[test]
    fn unsupported_schemes_and_missing_ports_are_rejected() {
        let e = input("a", "icmp://h")
            .resolve(&Defaults::default())
            .unwrap_err();
        assert_eq!(e.field, "url");
        assert!(e.message.contains("not supported"), "{e}");
        let e = input("a", "tcp://h")
            .resolve(&Defaults::default())
            .unwrap_err();
        assert!(e.message.contains("needs a port"), "{e}");
        let e = input("a", "not a url")
            .resolve(&Defaults::default())
            .unwrap_err();
        assert_eq!(e.field, "url");
    }

    #[test]
    fn http_only_fields_are_rejected_on_tcp_but_inherited_defaults_are_ignored() {
        let mut t = input("a", "tcp://h:22");
        t.body_contains = Some("ok".into());
        assert_eq!(
            t.resolve(&Defaults::default()).unwrap_err().field,
            "body_contains"
        );

        let defaults = Defaults {
            keep_alive: Some(true),
            ..Defaults::default()
        };
        let spec = input("a", "tcp://h:22").resolve(&defaults).unwrap();
        assert!(!spec.keep_alive);
    }

    #[test]
    fn names_are_restricted_to_url_safe_characters() {
        assert!(TargetName::new("web-1.eu:8080@x_y").is_ok());
        assert!(TargetName::new("").is_err());
        assert!(TargetName::new("a/b").is_err());
        assert!(TargetName::new("a b").is_err());
        assert!(TargetName::new("x".repeat(129)).is_err());
    }

    #[test]
    fn expect_status_accepts_codes_classes_and_ranges() {
        let json = r#"{"name":"a","url":"http://h/","expect_status":[204,"3xx","500-503"]}"#;
        let t: TargetInput = serde_json::from_str(json).unwrap();
        let spec = t.resolve(&Defaults::default()).unwrap();
        for ok in [204, 301, 399, 500, 503] {
            assert!(spec.expect_status.accepts(ok), "{ok}");
        }
        for bad in [200, 400, 504] {
            assert!(!spec.expect_status.accepts(bad), "{bad}");
        }
        assert_eq!(spec.expect_status.to_string(), "204,3xx,500-503");
        assert!(
            serde_json::from_str::<TargetInput>(
                r#"{"name":"a","url":"http://h/","expect_status":[700]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e =
            serde_json::from_str::<TargetInput>(r#"{"name":"a","url":"http://h/","intervl":"1s"}"#)
                .unwrap_err();
        assert!(e.to_string().contains("unknown field `intervl`"), "{e}");
    }

    #[test]
    fn fast_interval_is_used_only_while_failing() {
        let mut t = input("a", "http://h/");
        t.fast_interval = Some(HumanDuration(Duration::from_secs(3)));
        let spec = t.resolve(&Defaults::default()).unwrap();
        assert_eq!(spec.next_interval(false), Duration::from_secs(10));
        assert_eq!(spec.next_interval(true), Duration::from_secs(3));
    }

    #[test]
    fn a_spec_round_trips_through_its_input_form() {
        let mut t = input("g", "grpc://127.0.0.1:9000/my.Service");
        t.fall = Some(7);
        let spec = t.resolve(&Defaults::default()).unwrap();
        assert_eq!(spec.grpc_service(), "my.Service");
        assert_eq!(spec.to_input().resolve(&Defaults::default()).unwrap(), spec);
    }

    #[test]
    fn a_fast_interval_longer_than_the_interval_is_refused_naming_both_fields() {
        let mut t = input("a", "http://h/");
        t.fast_interval = Some(HumanDuration(Duration::from_secs(3600)));
        let e = t.resolve(&Defaults::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "field `fast_interval`: 1h must not be longer than interval 10s"
        );
        // Equal is allowed: "as often as usual while failing".
        t.fast_interval = Some(HumanDuration(Duration::from_secs(10)));
        assert!(t.resolve(&Defaults::default()).is_ok());
        // Also when both come from [defaults].
        let defaults = Defaults {
            interval: Some(HumanDuration(Duration::from_secs(5))),
            fast_interval: Some(HumanDuration(Duration::from_secs(6))),
            ..Defaults::default()
        };
        assert_eq!(defaults.validate().unwrap_err().field, "fast_interval");
    }

    #[test]
    fn port_zero_is_refused() {
        for url in ["tcp://h:0", "grpc://h:0", "http://h:0/"] {
            let e = input("a", url).resolve(&Defaults::default()).unwrap_err();
            assert_eq!(e.field, "url", "{url}");
            assert!(e.message.contains("port 0"), "{e}");
        }
    }

    #[test]
    fn the_name_rule_says_it_means_ascii_letters() {
        let e = TargetName::new("café").unwrap_err();
        assert_eq!(
            e,
            "contains 'é'; allowed are ASCII letters (A-Z, a-z), digits (0-9) and . _ - : @"
        );
    }

    #[test]
    fn credentials_in_a_url_are_redacted_wherever_shown_but_sent_as_written() {
        let spec = input("a", "http://alice:s3cret@h:8080/health?x=1")
            .resolve(&Defaults::default())
            .unwrap();
        let shown = "http://alice:***@h:8080/health?x=1";
        assert_eq!(spec.url.to_string(), shown);
        assert!(!format!("{spec:?}").contains("s3cret"), "{spec:?}");
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains(shown) && !json.contains("s3cret"), "{json}");
        assert_eq!(spec.to_input().url, shown);
        // What the probe uses, and the form for writing a config, keep the password.
        assert_eq!(spec.url.as_url().password(), Some("s3cret"));
        assert_eq!(
            spec.to_input_unredacted()
                .resolve(&Defaults::default())
                .unwrap(),
            spec
        );
        // A user alone may be a token: it is hidden too.
        let token = input("b", "https://ghp_token@h/")
            .resolve(&Defaults::default())
            .unwrap();
        assert_eq!(token.url.to_string(), "https://***@h/");
        let plain = input("c", "http://h/")
            .resolve(&Defaults::default())
            .unwrap();
        assert_eq!(plain.url.to_string(), "http://h/");
    }

    #[test]
    fn tls_fields_apply_to_https_targets_only() {
        for field in ["tls_ca_file", "tls_server_name", "tls_skip_verify"] {
            let mut t = input("a", "http://h/");
            match field {
                "tls_ca_file" => t.tls_ca_file = Some("/etc/ca.pem".into()),
                "tls_server_name" => t.tls_server_name = Some("h".into()),
                _ => t.tls_skip_verify = Some(true),
            }
            let e = t.resolve(&Defaults::default()).unwrap_err();
            assert_eq!(
                (e.field, e.message.as_str()),
                (field, "applies to https targets only")
            );
        }
        // Inherited from [defaults], a CA file simply does not apply to an http target.
        let defaults = Defaults {
            tls_ca_file: Some("/etc/ca.pem".into()),
            ..Defaults::default()
        };
        assert_eq!(
            input("a", "http://h/")
                .resolve(&defaults)
                .unwrap()
                .tls_ca_file(),
            None
        );
        assert_eq!(
            input("a", "https://h/")
                .resolve(&defaults)
                .unwrap()
                .tls_ca_file(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
    }

    #[test]
    fn a_ca_file_and_skip_verify_on_one_target_contradict_each_other() {
        let mut t = input("a", "https://h/");
        t.tls_ca_file = Some("/etc/ca.pem".into());
        t.tls_skip_verify = Some(true);
        assert_eq!(
            t.resolve(&Defaults::default()).unwrap_err().field,
            "tls_ca_file"
        );
        // From [defaults] the CA file is moot for a target that skips verification.
        let defaults = Defaults {
            tls_ca_file: Some("/etc/ca.pem".into()),
            ..Defaults::default()
        };
        let mut t = input("a", "https://h/");
        t.tls_skip_verify = Some(true);
        assert_eq!(t.resolve(&defaults).unwrap().tls_ca_file(), None);
    }

    #[test]
    fn a_tls_server_name_is_a_host_name_or_an_address() {
        for ok in ["internal.example", "10.0.0.1", "::1", "localhost"] {
            let mut t = input("a", "https://10.0.0.1/");
            t.tls_server_name = Some(ok.into());
            assert!(t.resolve(&Defaults::default()).is_ok(), "{ok}");
        }
        for bad in ["", "h:443", "https://h", "a b"] {
            let mut t = input("a", "https://10.0.0.1/");
            t.tls_server_name = Some(bad.into());
            let e = t.resolve(&Defaults::default()).unwrap_err();
            assert_eq!(e.field, "tls_server_name", "{bad}");
        }
    }

    /// An independent statement of the rules, in the order `resolve` checks them: the field
    /// of the first rule broken, or `None` for a valid target.
    fn first_broken_rule(
        name: &str,
        url: &str,
        interval: u64,
        timeout: u64,
        fast: Option<u64>,
        rise: u32,
    ) -> Option<&'static str> {
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
        let url_ok = matches!(
            url,
            "http://h/" | "https://h:1/x" | "tcp://h:1" | "grpc://h:2/s"
        );
        let in_range = |ms: u64| ms >= 10;
        if !name_ok {
            Some("name")
        } else if !url_ok {
            Some("url")
        } else if !in_range(interval) {
            Some("interval")
        } else if !in_range(timeout) {
            Some("timeout")
        } else if fast.is_some_and(|f| !in_range(f)) {
            Some("fast_interval")
        } else if timeout >= interval {
            Some("timeout")
        } else if fast.is_some_and(|f| timeout >= f || f > interval) {
            Some("fast_interval")
        } else if !(1..=MAX_THRESHOLD).contains(&rise) {
            Some("rise")
        } else {
            None
        }
    }

    proptest::proptest! {
        /// `resolve` accepts exactly what the rules allow, and names the first broken rule's
        /// field; what it accepts keeps timeout < fast_interval <= interval.
        #[test]
        fn resolve_accepts_exactly_what_the_rules_allow(
            name in "[a-z0-9./ -]{0,8}",
            url in proptest::sample::select(vec!["http://h/", "https://h:1/x", "tcp://h:1", "grpc://h:2/s", "tcp://h", "tcp://h:0", "ftp://h", "::"]),
            interval_ms in 0u64..5_000,
            timeout_ms in 0u64..5_000,
            fast_ms in proptest::option::of(0u64..5_000),
            rise in 0u32..200,
        ) {
            let t = TargetInput {
                name: name.clone(), url: url.into(),
                interval: Some(HumanDuration(Duration::from_millis(interval_ms))),
                timeout: Some(HumanDuration(Duration::from_millis(timeout_ms))),
                fast_interval: fast_ms.map(|m| HumanDuration(Duration::from_millis(m))),
                rise: Some(rise),
                ..TargetInput::default()
            };
            let got = t.resolve(&Defaults::default());
            let expected = first_broken_rule(&name, url, interval_ms, timeout_ms, fast_ms, rise);
            proptest::prop_assert_eq!(got.as_ref().err().map(|e| e.field), expected, "{:?}", got);
            if let Ok(spec) = got {
                proptest::prop_assert!(spec.timeout < spec.interval);
                proptest::prop_assert!(spec.fast_interval.is_none_or(|f| spec.timeout < f && f <= spec.interval));
            }
        }
    }
}
