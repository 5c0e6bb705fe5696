//! What to check, and the one place where a target is validated.
//!
//! The config file (`[[target]]` tables) and the API (`POST /v1/targets`) both deserialize into a
//! [`TargetInput`] and call [`TargetInput::resolve`], so a target that the API accepts is exactly
//! one the config would accept, with the same error messages. Errors name the field
//! ([`SpecError::field`]) so the config loader can point at its line and column.
use std::fmt;
use std::num::NonZeroU32;
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

/// The kind of probe, chosen by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// `http://host[:port]/path`: GET, status and optional body checked.
    Http,
    /// `https://…`: as http, over TLS (rustls, webpki roots).
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
/// 1 to 128 bytes of `A-Z a-z 0-9 . _ - : @`, so it is safe in a URL path without escaping.
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
                "contains {bad:?}; allowed are letters, digits and . _ - : @"
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
    /// none (the normal interval). Must be > timeout.
    pub fast_interval: Option<HumanDuration>,
    /// HTTP: accepted statuses. Built-in: `["2xx"]`.
    pub expect_status: Option<Vec<StatusMatch>>,
    /// HTTP: reuse connections between checks. Built-in: false (a fresh connection per check,
    /// as Consul and blackbox_exporter do, so a check measures what a new client sees).
    pub keep_alive: Option<bool>,
    /// HTTPS: accept any certificate. Built-in: false.
    pub tls_skip_verify: Option<bool>,
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
}

/// A validated target: every field has its final value and every relation holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetSpec {
    /// Identity.
    pub name: TargetName,
    /// Where to probe.
    #[serde(serialize_with = "ser_url")]
    pub url: Url,
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
}

fn ser_url<S: Serializer>(u: &Url, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(u.as_str())
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

    /// The shortest time between two checks of this target: the fast interval if set (it is
    /// not required to be shorter than the interval, so the smaller of the two), else the interval.
    pub fn shortest_interval(&self) -> Duration {
        self.fast_interval
            .map_or(self.interval, |fast| fast.min(self.interval))
    }

    /// For gRPC targets: the service name to ask about (the URL path without its leading `/`;
    /// empty = the server as a whole).
    pub fn grpc_service(&self) -> &str {
        self.url.path().trim_start_matches('/')
    }

    /// The raw form that resolves back to this spec (for `GET /v1/targets/{name}` and for
    /// writing a config).
    pub fn to_input(&self) -> TargetInput {
        TargetInput {
            name: self.name.to_string(),
            url: self.url.to_string(),
            interval: Some(HumanDuration(self.interval)),
            timeout: Some(HumanDuration(self.timeout)),
            rise: Some(self.thresholds.rise.get()),
            fall: Some(self.thresholds.fall.get()),
            fast_interval: self.fast_interval.map(HumanDuration),
            expect_status: self.kind.is_http().then(|| self.expect_status.0.clone()),
            body_contains: self.body_contains.clone(),
            keep_alive: self.kind.is_http().then_some(self.keep_alive),
            tls_skip_verify: (self.kind == ProbeKind::Https).then_some(self.tls_skip_verify),
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
            format!("{} is below the minimum of 10ms", HumanDuration(d).show()),
        ));
    }
    if d > MAX_INTERVAL {
        return Err(err(
            field,
            format!("{} is above the maximum of 1day", HumanDuration(d).show()),
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
        Ok(())
    }
}

impl TargetInput {
    /// Validate this target against `defaults` and produce its final spec.
    ///
    /// Checked: the name; the URL (scheme http/https/tcp/grpc, a host, a port for tcp and
    /// grpc); every duration non-zero and within 10ms..=24h; `timeout < interval` and
    /// `timeout < fast_interval`; rise/fall in 1..=100; HTTP-only fields only on HTTP targets.
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
        if kind == ProbeKind::Tcp && !matches!(url.path(), "" | "/") {
            return Err(err("url", format!("{:?}: a tcp URL has no path", self.url)));
        }

        let interval = check_duration(
            "interval",
            self.interval
                .or(defaults.interval)
                .map_or(Duration::from_secs(10), |d| d.0),
        )?;
        let timeout = check_duration(
            "timeout",
            self.timeout
                .or(defaults.timeout)
                .map_or(Duration::from_secs(2), |d| d.0),
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
        let rise = check_threshold("rise", self.rise.or(defaults.rise).unwrap_or(2))?;
        let fall = check_threshold("fall", self.fall.or(defaults.fall).unwrap_or(3))?;

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
        if kind != ProbeKind::Https && self.tls_skip_verify.is_some() {
            return Err(err("tls_skip_verify", "applies to https targets only"));
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

        Ok(TargetSpec {
            name,
            url,
            kind,
            interval,
            timeout,
            fast_interval,
            thresholds: Thresholds { rise, fall },
            expect_status,
            body_contains: self.body_contains.clone(),
            keep_alive: kind.is_http() && self.keep_alive.or(defaults.keep_alive).unwrap_or(false),
            tls_skip_verify: kind == ProbeKind::Https
                && self
                    .tls_skip_verify
                    .or(defaults.tls_skip_verify)
                    .unwrap_or(false),
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

    proptest::proptest! {
        #[test]
        fn resolve_never_panics_and_accepted_specs_keep_timeout_below_intervals(
            name in "[a-z0-9./ -]{0,8}",
            url in proptest::sample::select(vec!["http://h/", "https://h:1/x", "tcp://h:1", "grpc://h:2/s", "tcp://h", "ftp://h", "::"]),
            interval_ms in 0u64..5_000,
            timeout_ms in 0u64..5_000,
            fast_ms in proptest::option::of(0u64..5_000),
            rise in 0u32..200,
        ) {
            let t = TargetInput {
                name, url: url.into(),
                interval: Some(HumanDuration(Duration::from_millis(interval_ms))),
                timeout: Some(HumanDuration(Duration::from_millis(timeout_ms))),
                fast_interval: fast_ms.map(|m| HumanDuration(Duration::from_millis(m))),
                rise: Some(rise),
                ..TargetInput::default()
            };
            if let Ok(spec) = t.resolve(&Defaults::default()) {
                proptest::prop_assert!(spec.timeout < spec.interval);
                proptest::prop_assert!(spec.fast_interval.is_none_or(|f| spec.timeout < f));
                proptest::prop_assert!(!spec.interval.is_zero());
            }
        }
    }
}
