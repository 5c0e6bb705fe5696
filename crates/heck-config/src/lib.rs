//! heck's config file: TOML with `[defaults]`, `[agent]`, `[cluster]` and `[[target]]` tables.
//!
//! ```toml
//! [defaults]
//! interval = "10s"
//! timeout  = "2s"
//!
//! [[target]]
//! name = "web-1"
//! url  = "http://10.0.0.1:8080/health"
//! ```
//!
//! Invariant: a config either loads whole, with every target validated by the same
//! [`heck_check::TargetInput::resolve`] the API uses, or fails before anything starts with an
//! error that names the file, line, column and field. Unknown fields, duplicate names, invalid
//! URLs, zero durations, `timeout >= interval` and a `tls_ca_file` that is not a readable PEM
//! bundle are all such errors. Whether a file loads, and what it loads to, never depends on its
//! size (see [`parse`] for the large-file path and the property test that holds it to this).
//!
//! How the position is found: serde errors (syntax, unknown field, wrong type) come with a byte
//! span from the `toml` crate. Validation errors come from `resolve` as a field name; we then look
//! that field up in a span-preserving parse of the same text ([`toml::de::DeTable`]).
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::HashMap;

use heck_check::{Defaults, HumanDuration, SpecError, TargetInput, TargetSpec};
use serde::Deserialize;
use toml::de::{DeTable, DeValue};

/// Largest `max_in_flight` accepted: each in-flight check holds a socket, and a process here may
/// hold at most 20,000 (see docs/benchmarks.md); leave room for the API and gossip.
pub const MAX_IN_FLIGHT_LIMIT: usize = 16_384;

/// A loaded, validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[defaults]`, kept because the API validates new targets against the same defaults.
    pub defaults: Defaults,
    /// `[agent]`.
    pub agent: AgentSection,
    /// `[cluster]`: read only when the agent joins a cluster (`--gossip-addr`).
    pub cluster: ClusterSection,
    /// Every `[[target]]`, validated, in file order, with unique names.
    pub targets: Vec<TargetSpec>,
}

/// `[agent]`: settings of the `heck agent` process. Command-line flags override them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Address of the HTTP API. Default `127.0.0.1:7070` (loopback: expose it on purpose).
    pub api_addr: Option<SocketAddr>,
    /// Most checks in flight at once. Default 4096; range 1..=16384. When every slot is busy,
    /// due checks wait (schedule lag grows and is reported), they never queue without bound.
    pub max_in_flight: Option<usize>,
}

/// Shortest `[cluster] sync_interval`: an owner's write waits up to 10 ms (heck-cluster's
/// `push_delay`) to share a round with others, and that wait must stay below one round.
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(20);
/// Longest `[cluster] sync_interval`: a status change crosses the cluster in a few rounds, so
/// beyond 10 s "any node answers" would lag the owner by most of a minute.
pub const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(10);
/// Longest `[cluster] settle`: a joiner owns nothing while it settles, so a long settle is a
/// long time with one node fewer doing the work.
pub const MAX_SETTLE: Duration = Duration::from_secs(300);

/// `[cluster]`: settings every member of one cluster must share (the file is the same on every
/// node). Unset fields take the `profile`'s value (heck-cluster's `Config::lan()` or
/// `Config::fast()`); command-line flags override them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Owners per target: each target is checked by the first `replicas` live members in its
    /// rendezvous order. Default 1; at least 1. With more replicas than live members, every
    /// member checks every target (members come and go, so this is not an error).
    #[serde(default, deserialize_with = "replicas")]
    pub replicas: Option<NonZeroUsize>,
    /// Membership and sync timings: `lan` (memberlist's LAN: probe every 1 s, a sync round
    /// every 200 ms) or `fast` (probe every 200 ms, a sync round every 100 ms; for a cluster on
    /// one machine or rack). Default `lan`. `--gossip-profile` overrides it.
    pub profile: Option<Profile>,
    /// Time between two anti-entropy rounds, which bounds how long a status change waits at
    /// each hop. Default: the profile's (200 ms / 100 ms); 20ms..=10s.
    pub sync_interval: Option<HumanDuration>,
    /// How long a node that joins through `--join` learns the members before it owns
    /// anything (so it never believes itself alone and checks every target for a moment).
    /// Default: two probe intervals of the profile (2 s / 400 ms); 0s..=5m, `"0s"` to own at once.
    pub settle: Option<HumanDuration>,
}

impl ClusterSection {
    /// `replicas`, defaulted.
    pub fn replicas(&self) -> NonZeroUsize {
        self.replicas.unwrap_or(NonZeroUsize::MIN)
    }

    /// `profile`, defaulted.
    pub fn profile(&self) -> Profile {
        self.profile.unwrap_or_default()
    }

    /// The checks serde cannot do: the duration ranges.
    fn validate(&self) -> Result<(), SpecError> {
        if let Some(HumanDuration(d)) = self.sync_interval
            && !(MIN_SYNC_INTERVAL..=MAX_SYNC_INTERVAL).contains(&d)
        {
            return Err(SpecError {
                field: "sync_interval",
                message: format!("{d:?} is not in {MIN_SYNC_INTERVAL:?}..={MAX_SYNC_INTERVAL:?}"),
            });
        }
        if let Some(HumanDuration(d)) = self.settle
            && d > MAX_SETTLE
        {
            return Err(SpecError {
                field: "settle",
                message: format!(
                    "{d:?} is longer than {MAX_SETTLE:?}: the node would own nothing for that long"
                ),
            });
        }
        Ok(())
    }
}

/// `[cluster] profile`: a named set of membership and sync timings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// memberlist's LAN timings (Consul, Nomad).
    #[default]
    Lan,
    /// Five times faster membership, for one machine or rack.
    Fast,
}

/// `replicas = 0` refused by serde, so the error carries the value's position.
fn replicas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<NonZeroUsize>, D::Error> {
    let n = usize::deserialize(d)?;
    NonZeroUsize::new(n).map(Some).ok_or_else(|| {
        serde::de::Error::custom(
            "0 replicas would leave every target unchecked; at least 1 (the default)",
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    agent: AgentSection,
    #[serde(default)]
    cluster: ClusterSection,
    #[serde(default, rename = "target")]
    targets: Vec<TargetInput>,
}

/// Why a config did not load.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    // The OS error is in the message and deliberately not a `source`: `{:#}` (anyhow) prints
    // the source chain too, which printed it twice.
    #[error("{}: cannot read config: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{0}")]
    Invalid(Box<Located>),
}

/// A config error pinned to a place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The file (as given).
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// The offending field, when known (`"timeout"`, `"name"`, …).
    pub field: Option<String>,
    /// The target's name, when the error is inside a `[[target]]`.
    pub target: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The offending line of the file, for the caret display.
    pub source_line: String,
    /// How many characters the caret underlines.
    pub width: usize,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.path.display(), self.line, self.column)?;
        match (&self.field, &self.target) {
            (Some(field), Some(t)) => write!(f, "field `{field}` of target {t:?}: ")?,
            (Some(field), None) => write!(f, "field `{field}`: ")?,
            (None, Some(t)) => write!(f, "target {t:?}: ")?,
            (None, None) => {}
        }
        writeln!(f, "{}", self.message)?;
        let gutter = self.line.to_string().len();
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{} | {}", self.line, self.source_line)?;
        write!(
            f,
            "{:gutter$} | {}{}",
            "",
            " ".repeat(self.column.saturating_sub(1)),
            "^".repeat(self.width.max(1))
        )
    }
}

/// Read and validate the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    parse(&text, path)
}

/// Targets parsed per chunk by [`parse`] for large configs.
const CHUNK: usize = 1000;

/// Validate config `text`; `path` names the file in error messages, and a relative
/// `tls_ca_file` is relative to its directory.
///
/// A large config (more than [`CHUNK`] `[[target]]` tables) is first parsed piece by piece:
/// the `toml` crate builds a document tree of whatever it parses, and for 100,000 targets that
/// tree alone outweighs the agent's steady state. The pieces are cut at header lines: the
/// `[[target]]` tables are parsed [`CHUNK`] at a time, and every other table (`[defaults]`,
/// `[agent]`, any table added later), wherever it stands, goes into one small document parsed
/// as a whole, so a table repeated or misplaced is the same error it is in the whole file.
/// Anything the cutting cannot be sure of (an error, a header that mentions `target` other
/// than `[[target]]`, a "header" that was really inside a string or an array, which leaves its
/// piece unterminated) abandons the pieces for the whole-file parse below, so results and
/// messages are always the whole-file ones.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    if count_target_headers(text) > CHUNK
        && let Some(config) = parse_in_pieces(text, path, CHUNK)
    {
        return Ok(config);
    }
    parse_whole(text, path)
}

/// What a header line opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// `[[target]]`.
    Target,
    /// Any other table that does not mention `target`.
    Other,
}

/// Classify a line: `None` if it is not a header, `Some(None)` if it is one the pieces path
/// leaves to the whole-file parse (quoted keys, `[target.x]`, `[[target.y]]`).
fn header(line: &str) -> Option<Option<Header>> {
    let t = line.trim_start();
    if !t.starts_with('[') {
        return None;
    }
    if t.contains(['"', '\'']) {
        return Some(None);
    }
    let t = t.split('#').next().unwrap_or_default().trim_end();
    Some(if t == "[[target]]" {
        Some(Header::Target)
    } else if t.contains("target") {
        None
    } else {
        Some(Header::Other)
    })
}

fn count_target_headers(text: &str) -> usize {
    text.lines()
        .filter(|l| header(l) == Some(Some(Header::Target)))
        .count()
}

/// `[[target]]` tables only (a chunk of consecutive target pieces).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetChunk {
    #[serde(default, rename = "target")]
    targets: Vec<TargetInput>,
}

/// The pieces of `text` in file order: each header line opens one, and the text before the
/// first header (top-level keys) is an `Other` piece. `None` for a header the pieces path
/// leaves to the whole-file parse. Lazy, so that 100,000 pieces are never held at once.
fn pieces(text: &str) -> impl Iterator<Item = Option<(Header, Range<usize>)>> + '_ {
    let mut lines = text.split_inclusive('\n');
    let (mut kind, mut start, mut offset) = (Header::Other, 0, 0);
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        for line in lines.by_ref() {
            let at = offset;
            offset += line.len();
            if let Some(h) = header(line) {
                let Some(h) = h else {
                    done = true;
                    return Some(None);
                };
                let piece = (kind, start..at);
                (kind, start) = (h, at);
                return Some(Some(piece));
            }
        }
        done = true;
        Some(Some((kind, start..text.len())))
    })
}

/// The pieces path: `None` means "use the whole-file parse".
fn parse_in_pieces(text: &str, path: &Path, chunk: usize) -> Option<Config> {
    // First pass: every non-target piece must parse alone (so none was cut inside a string
    // or an array that a later piece would close); together, in order, they are the rest of
    // the file, parsed as one document, so [defaults] and [agent] are known before any target
    // is resolved, wherever they stand.
    let mut rest = String::new();
    for piece in pieces(text) {
        let (kind, r) = piece?;
        if kind == Header::Other {
            text[r.clone()].parse::<toml::Table>().ok()?;
            rest.push_str(&text[r]);
            if !rest.ends_with('\n') {
                rest.push('\n');
            }
        }
    }
    let mut head: RawConfig = toml::from_str(&rest).ok()?;
    if !head.targets.is_empty() {
        return None;
    }
    let mut checks = Checks::new(path);
    checks
        .head(&mut head.defaults, &head.agent, &head.cluster)
        .ok()?;

    // Second pass: consecutive target pieces, at most `chunk` at a time, each run parsed as
    // one contiguous slice of the file (a piece cut inside a string fails to parse).
    // Sized once: growing a 100,000-spec vector by doubling would briefly hold it twice.
    let count = count_target_headers(text);
    let mut targets = Vec::with_capacity(count);
    let mut seen = std::collections::HashSet::with_capacity(count);
    let mut run: Option<(Range<usize>, usize)> = None;
    let mut flush = |run: Option<(Range<usize>, usize)>| -> Option<()> {
        let Some((r, _)) = run else { return Some(()) };
        let parsed: TargetChunk = toml::from_str(&text[r]).ok()?;
        for mut input in parsed.targets {
            let spec = checks.target(&mut input, &head.defaults).ok()?;
            if !seen.insert(spec.name.clone()) {
                return None;
            }
            targets.push(spec);
        }
        Some(())
    };
    for piece in pieces(text) {
        match piece? {
            (Header::Target, r) => match &mut run {
                Some((range, n)) if *n < chunk.max(1) => {
                    range.end = r.end;
                    *n += 1;
                }
                _ => flush(run.replace((r, 1)))?,
            },
            (Header::Other, _) => flush(run.take())?,
        }
    }
    flush(run.take())?;
    Some(Config {
        defaults: head.defaults,
        agent: head.agent,
        cluster: head.cluster,
        targets,
    })
}

/// The checks beyond the shape, shared by both loaders so they cannot disagree: `[defaults]`
/// ranges, `[agent]` and `[cluster]` ranges, each target's `resolve`, and the CA bundles, each file read once.
struct Checks {
    /// Relative `tls_ca_file` paths are relative to this (the config file's directory).
    base: PathBuf,
    /// Bundles already read: `Err` is why one cannot be used.
    ca_files: HashMap<PathBuf, Result<(), String>>,
}

impl Checks {
    fn new(config_path: &Path) -> Checks {
        Checks {
            base: config_path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            ca_files: HashMap::new(),
        }
    }

    fn head(
        &mut self,
        defaults: &mut Defaults,
        agent: &AgentSection,
        cluster: &ClusterSection,
    ) -> Result<(), SpecError> {
        defaults.validate()?;
        cluster.validate()?;
        if let Some(p) = &mut defaults.tls_ca_file {
            *p = self.base.join(&*p);
            self.ca_file(p)?;
        }
        if let Some(n) = agent.max_in_flight
            && !(1..=MAX_IN_FLIGHT_LIMIT).contains(&n)
        {
            return Err(SpecError {
                field: "max_in_flight",
                message: format!("{n} is not in 1..={MAX_IN_FLIGHT_LIMIT}"),
            });
        }
        Ok(())
    }

    /// `defaults` has been through [`Checks::head`] (its CA path is already anchored).
    fn target(
        &mut self,
        input: &mut TargetInput,
        defaults: &Defaults,
    ) -> Result<TargetSpec, SpecError> {
        if let Some(p) = &mut input.tls_ca_file {
            *p = self.base.join(&*p);
        }
        let spec = input.resolve(defaults)?;
        if let Some(p) = spec.tls_ca_file() {
            self.ca_file(p)?;
        }
        Ok(spec)
    }

    fn ca_file(&mut self, path: &Path) -> Result<(), SpecError> {
        let verdict = self
            .ca_files
            .entry(path.to_path_buf())
            .or_insert_with(|| check_ca_bundle(path));
        verdict.clone().map_err(|why| SpecError {
            field: "tls_ca_file",
            message: format!("{}: {why}", path.display()),
        })
    }
}

/// Is `path` a PEM bundle of certificates that can be trust anchors? The prober reads the
/// same file the same way when it builds the TLS config; checking here makes a bad file a
/// load error with a position, not a failing check.
fn check_ca_bundle(path: &Path) -> Result<(), String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut count = 0;
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| format!("certificate #{} is not valid PEM: {e}", i + 1))?;
        webpki::anchor_from_trusted_cert(&cert)
            .map_err(|e| format!("certificate #{} cannot be a trust anchor: {e}", i + 1))?;
        count += 1;
    }
    if count == 0 {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(())
}

fn parse_whole(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut raw: RawConfig = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        let field = field_named_in(&message).or_else(|| key_on_line(text, span.start));
        located(text, path, span, field, None, message)
    })?;
    // Positions of validation errors come from a span-preserving parse of the same text, done
    // only when there is an error to place: at 100,000 targets it would double the memory
    // needed to load a good config. serde accepted the shape, so it succeeds; if it somehow did
    // not, the error is still reported, at line 1.
    let spans = || DeTable::parse(text).ok();

    let mut checks = Checks::new(path);
    checks
        .head(&mut raw.defaults, &raw.agent, &raw.cluster)
        .map_err(|e| {
            let table = match e.field {
                "max_in_flight" => "agent",
                "sync_interval" | "settle" => "cluster",
                _ => "defaults",
            };
            let span = spans()
                .and_then(|d| {
                    let d = d.get_ref();
                    span_of(d, &[table, e.field]).or_else(|| span_of(d, &[table]))
                })
                .unwrap_or(0..0);
            located(text, path, span, Some(e.field.to_string()), None, e.message)
        })?;

    let mut targets: Vec<TargetSpec> = Vec::with_capacity(raw.targets.len());
    let mut seen = HashMap::with_capacity(raw.targets.len());
    for (i, input) in raw.targets.iter_mut().enumerate() {
        let target_span = |field: &str| {
            spans()
                .and_then(|d| {
                    // The field itself, else (a value inherited from [defaults]) the name.
                    let t = target_table(d.get_ref(), i)?;
                    t.get(field).or_else(|| t.get("name")).map(|v| v.span())
                })
                .unwrap_or(0..0)
        };
        let spec = checks.target(input, &raw.defaults).map_err(|e| {
            located(
                text,
                path,
                target_span(e.field),
                Some(e.field.to_string()),
                Some(input.name.clone()),
                e.message,
            )
        })?;
        if let Some(first) = seen.insert(spec.name.clone(), i) {
            return Err(located(
                text,
                path,
                target_span("name"),
                Some("name".into()),
                Some(input.name.clone()),
                format!(
                    "duplicate target name (target #{} has it too); names must be unique",
                    first + 1
                ),
            ));
        }
        targets.push(spec);
    }
    Ok(Config {
        defaults: raw.defaults,
        agent: raw.agent,
        cluster: raw.cluster,
        targets,
    })
}

fn target_table<'a, 'i>(doc: &'a DeTable<'i>, i: usize) -> Option<&'a DeTable<'i>> {
    match doc.get("target")?.get_ref() {
        DeValue::Array(arr) => match arr.get(i)?.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

fn span_of(doc: &DeTable<'_>, path: &[&str]) -> Option<Range<usize>> {
    let (first, rest) = path.split_first()?;
    let v = doc.get(*first)?;
    if rest.is_empty() {
        return Some(v.span());
    }
    match v.get_ref() {
        DeValue::Table(t) => span_of(t, rest),
        _ => None,
    }
}

/// `unknown field `intervl`, expected …` → `intervl`.
fn field_named_in(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))?;
    Some(rest.split('`').next()?.to_string())
}

/// The key of a `key = value` line containing byte `offset`.
fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |p| p + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
}

fn located(
    text: &str,
    path: &Path,
    span: Range<usize>,
    field: Option<String>,
    target: Option<String>,
    message: String,
) -> ConfigError {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |p| p + 1);
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let source_line = text[line_start..].lines().next().unwrap_or("").to_string();
    let end = span.end.clamp(start, line_start + source_line.len());
    let width = text[start..end].chars().count();
    ConfigError::Invalid(Box::new(Located {
        path: path.to_path_buf(),
        line,
        column,
        field,
        target,
        message,
        source_line,
        width,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    fn load_str(text: &str) -> Result<Config, Box<Located>> {
        parse(text, Path::new("heck.toml")).map_err(|e| match e {
            ConfigError::Invalid(l) => l,
            ConfigError::Io { .. } => unreachable!("no io in parse"),
        })
    }

    const GOOD: &str = r#"
[defaults]
interval = "10s"
timeout  = "2s"
rise = 2
fall = 3

[agent]
api_addr = "127.0.0.1:7171"

[[target]]
name = "web-1"
url  = "http://10.0.0.1:8080/health"

[[target]]
name = "db"
url  = "tcp://10.0.0.2:5432"
interval = "30s"
"#;

    #[test]
    fn the_issue_example_loads() {
        let c = load_str(GOOD).unwrap();
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.targets[0].name.as_str(), "web-1");
        assert_eq!(c.targets[1].interval, Duration::from_secs(30));
        assert_eq!(c.agent.api_addr, Some("127.0.0.1:7171".parse().unwrap()));
    }

    #[test]
    fn an_unknown_field_names_its_line_column_and_field() {
        let e = load_str("[[target]]\nname = \"a\"\nurl = \"http://h/\"\nintervl = \"1s\"\n")
            .unwrap_err();
        assert_eq!((e.line, e.column), (4, 1), "{e}");
        assert_eq!(e.field.as_deref(), Some("intervl"));
        assert!(e.message.contains("unknown field `intervl`"), "{e}");
    }

    #[test]
    fn a_wrong_type_names_its_field() {
        let e = load_str("[defaults]\nrise = \"two\"\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.field.as_deref(), Some("rise"));
    }

    #[test]
    fn a_bad_duration_points_at_the_value() {
        let e = load_str("[defaults]\ninterval = \"ten\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 12), "{e}");
        assert!(e.message.contains("invalid duration"), "{e}");
    }

    #[test]
    fn timeout_not_below_interval_points_at_the_timeout() {
        let text =
            "[[target]]\nname = \"a\"\nurl = \"http://h/\"\ninterval = \"1s\"\ntimeout = \"5s\"\n";
        let e = load_str(text).unwrap_err();
        assert_eq!((e.line, e.column), (5, 11), "{e}");
        assert_eq!(e.field.as_deref(), Some("timeout"));
        assert_eq!(e.target.as_deref(), Some("a"));
        let shown = e.to_string();
        assert!(
            shown.starts_with(
                "heck.toml:5:11: field `timeout` of target \"a\": 5s must be less than interval 1s"
            ),
            "{shown}"
        );
        assert!(shown.ends_with("          ^^^^"), "{shown}");
    }

    #[test]
    fn an_inherited_conflict_points_at_the_target_name() {
        let text = "[defaults]\ntimeout = \"3s\"\n\n[[target]]\nname = \"a\"\nurl = \"http://h/\"\ninterval = \"2s\"\n";
        let e = load_str(text).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert_eq!(e.field.as_deref(), Some("timeout"));
    }

    #[test]
    fn duplicate_names_are_rejected_at_the_second() {
        let text = "[[target]]\nname = \"a\"\nurl = \"http://h/\"\n[[target]]\nname = \"a\"\nurl = \"http://g/\"\n";
        let e = load_str(text).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("duplicate"), "{e}");
    }

    #[test]
    fn invalid_urls_and_zero_durations_are_rejected() {
        let e = load_str("[[target]]\nname = \"a\"\nurl = \"http//nope\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (3, Some("url")));
        let e = load_str("[defaults]\ninterval = \"0s\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (2, Some("interval")));
        assert!(e.message.contains("zero"), "{e}");
    }

    #[test]
    fn max_in_flight_is_bounded() {
        let e = load_str("[agent]\nmax_in_flight = 0\n").unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (2, Some("max_in_flight")));
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_it() {
        let e = load(Path::new("/nonexistent/heck.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/heck.toml: cannot read config"),
            "{e}"
        );
    }

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/heck.toml");
        let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.targets.is_empty());
    }

    fn big(n: usize, tail: &str) -> String {
        let mut t = String::from("[defaults]\ninterval = \"5s\"\n");
        for i in 0..n {
            t.push_str(&format!(
                "\n[[target]]\nname = \"t{i}\"\nurl = \"http://10.0.{}.{}:80/\"\n",
                i / 256,
                i % 256
            ));
        }
        t.push_str(tail);
        t
    }

    #[test]
    fn a_large_config_loads_in_pieces_to_the_same_result() {
        let text = big(2 * CHUNK + 17, "");
        let pieces = parse_in_pieces(&text, Path::new("x"), CHUNK).expect("takes the pieces path");
        let whole = parse_whole(&text, Path::new("x")).unwrap();
        assert_eq!(pieces, whole);
        assert_eq!(pieces.targets.len(), 2 * CHUNK + 17);
    }

    #[test]
    fn a_second_agent_table_is_an_error_whatever_the_number_of_targets() {
        for n in [500, 1500] {
            let text = format!(
                "[agent]\napi_addr = \"127.0.0.1:7171\"\n{}",
                big(n, "\n[agent]\n")
            );
            let e = load_str(&text).unwrap_err();
            assert!(e.message.contains("duplicate"), "{n} targets: {e}");
        }
    }

    #[test]
    fn a_table_after_the_targets_loads_in_pieces_as_it_would_before_them() {
        let late = big(CHUNK + 5, "\n[agent]\nmax_in_flight = 10\n");
        let config = parse_in_pieces(&late, Path::new("x"), CHUNK).expect("no fallback needed");
        assert_eq!(config.agent.max_in_flight, Some(10));
        assert_eq!(config, parse_whole(&late, Path::new("x")).unwrap());
        // [defaults] after the targets applies to all of them, as TOML says.
        let text = format!(
            "{}\n[defaults]\nfall = 7\n",
            big(CHUNK + 5, "").replace("[defaults]\ninterval = \"5s\"\n", "")
        );
        let config = parse_in_pieces(&text, Path::new("x"), CHUNK).expect("no fallback needed");
        assert!(config.targets.iter().all(|t| t.thresholds.fall.get() == 7));
    }

    #[test]
    fn a_large_config_with_an_error_reports_the_whole_file_error() {
        let bad = big(
            CHUNK + 5,
            "\n[[target]]\nname = \"t3\"\nurl = \"http://h/\"\n",
        );
        assert!(parse_in_pieces(&bad, Path::new("x"), CHUNK).is_none());
        let e = load_str(&bad).unwrap_err();
        assert!(e.message.contains("duplicate"), "{e}");
        assert_eq!(
            e.line,
            bad.lines().count() - 1,
            "the whole-file error points at the line"
        );
    }

    #[test]
    fn an_unreadable_file_names_its_os_error_once() {
        let e = load(&std::env::temp_dir()).unwrap_err();
        let shown = e.to_string();
        assert_eq!(shown.matches("Is a directory").count(), 1, "{shown}");
        assert!(
            std::error::Error::source(&e).is_none(),
            "the OS error is in the message, not repeated as a source"
        );
    }

    fn certs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../heck-probe/tests/certs")
    }

    #[test]
    fn a_relative_tls_ca_file_is_found_next_to_the_config_and_checked() {
        let text = "[defaults]\ntls_ca_file = \"cert.pem\"\n\n[[target]]\nname = \"a\"\nurl = \"https://h/\"\n";
        let config = parse(text, &certs_dir().join("heck.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.targets[0].tls_ca_file(),
            Some(certs_dir().join("cert.pem").as_path())
        );
    }

    #[test]
    fn a_tls_ca_file_that_is_missing_or_not_pem_points_at_its_line() {
        let missing =
            "[[target]]\nname = \"a\"\nurl = \"https://h/\"\ntls_ca_file = \"nope.pem\"\n";
        let e = match parse(missing, &certs_dir().join("heck.toml")).unwrap_err() {
            ConfigError::Invalid(l) => l,
            e => panic!("{e}"),
        };
        assert_eq!(
            (e.line, e.field.as_deref()),
            (4, Some("tls_ca_file")),
            "{e}"
        );
        assert!(e.message.contains("nope.pem: cannot read"), "{e}");

        let not_pem = "[defaults]\ntls_ca_file = \"key.pem\"\n";
        let e = match parse(not_pem, &certs_dir().join("heck.toml")).unwrap_err() {
            ConfigError::Invalid(l) => l,
            e => panic!("{e}"),
        };
        assert_eq!(
            (e.line, e.field.as_deref()),
            (2, Some("tls_ca_file")),
            "{e}"
        );
        assert!(
            e.message
                .ends_with("holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
            "{e}"
        );
    }

    /// Pieces of config text a user (or a mistake) might write, with `{i}` for a unique index.
    const FRAGMENTS: &[&str] = &[
        "[defaults]\ninterval = \"5s\"\n",
        "[defaults]\n",
        "[agent]\nmax_in_flight = 10\n",
        "[agent]\n",
        "[[target]]\nname = \"a{i}\"\nurl = \"http://h/\"\n",
        "[[target]]\nname = \"dup\"\nurl = \"http://h/\"\n",
        "[[target]]\nname = \"s{i}\"\nurl = \"http://h/\"\nbody_contains = \"\"\"\n[agent]\n\"\"\"\n",
        "[[target]]\nname = \"q{i}\"\nurl = \"http://h/\"\nbody_contains = \"\"\"\n[[target]]\nname = \"x\"\n\"\"\"\n",
        "[[target]]\nname = \"e{i}\"\nurl = \"http://h/\"\nexpect_status = [\n[1],\n]\n",
        "[cluster]\nseeds = 1\n",
        "[target.x]\n",
        "# [[target]] a comment\n",
        "[[target]]\nname = \"bad{i}\"\nurl = \"ftp://h/\"\n",
        "[[target]] # web\nname = \"c{i}\"\nurl = \"http://h/\"\n",
        "[[target]]\nname = \"f{i}\"\nurl = \"http://h/\"\nfast_interval = \"1h\"\n",
        "[cluster]\nreplicas = 2\nprofile = \"fast\"\n",
        "[cluster]\nreplicas = 0\n",
        "[cluster]\nsync_interval = \"5ms\"\n",
    ];

    #[test]
    fn the_cluster_table_sets_replicas_profile_and_timings() {
        let text = "[cluster]\nreplicas = 2\nprofile = \"fast\"\nsync_interval = \"50ms\"\nsettle = \"0s\"\n";
        let c = load_str(text).unwrap();
        assert_eq!(c.cluster.replicas(), NonZeroUsize::new(2).unwrap());
        assert_eq!(c.cluster.profile(), Profile::Fast);
        assert_eq!(
            c.cluster.sync_interval,
            Some(HumanDuration(Duration::from_millis(50)))
        );
        assert_eq!(c.cluster.settle, Some(HumanDuration(Duration::ZERO)));
    }

    #[test]
    fn without_a_cluster_table_one_replica_and_the_lan_profile() {
        let c = load_str(GOOD).unwrap();
        assert_eq!(c.cluster, ClusterSection::default());
        assert_eq!(c.cluster.replicas(), NonZeroUsize::MIN);
        assert_eq!(c.cluster.profile(), Profile::Lan);
    }

    #[test]
    fn zero_replicas_is_refused_at_the_value() {
        let e = load_str("[cluster]\nreplicas = 0\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 12), "{e}");
        assert_eq!(e.field.as_deref(), Some("replicas"));
        assert!(e.message.contains("0 replicas would leave"), "{e}");
    }

    #[test]
    fn an_unknown_field_or_profile_in_the_cluster_table_names_its_line() {
        let e = load_str("[cluster]\nseeds = 1\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1), "{e}");
        assert_eq!(e.field.as_deref(), Some("seeds"));
        let e = load_str("[cluster]\nprofile = \"wan\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (2, Some("profile")), "{e}");
        assert!(e.message.contains("unknown variant `wan`"), "{e}");
    }

    #[test]
    fn cluster_timings_out_of_range_point_at_their_value() {
        let e = load_str("[cluster]\nreplicas = 3\nsync_interval = \"5ms\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 17), "{e}");
        assert_eq!(e.field.as_deref(), Some("sync_interval"));
        assert!(e.message.contains("5ms is not in 20ms..=10s"), "{e}");
        let e = load_str("[cluster]\nsettle = \"1h\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (2, Some("settle")), "{e}");
    }

    #[test]
    fn a_cluster_table_after_the_targets_loads_as_it_would_before_them() {
        let table = "\n[cluster]\nreplicas = 2\nprofile = \"fast\"\n";
        let late = big(CHUNK + 5, table);
        let early = format!("{table}{}", big(CHUNK + 5, ""));
        let pieces = parse_in_pieces(&late, Path::new("x"), CHUNK).expect("no fallback needed");
        assert_eq!(pieces.cluster.replicas(), NonZeroUsize::new(2).unwrap());
        assert_eq!(pieces, parse_whole(&late, Path::new("x")).unwrap());
        assert_eq!(pieces, load_str(&early).unwrap());
        // And an error in it is the whole-file error, at its line, however many targets.
        let bad = big(CHUNK + 5, "\n[cluster]\nreplicas = 0\n");
        assert!(parse_in_pieces(&bad, Path::new("x"), CHUNK).is_none());
        let e = load_str(&bad).unwrap_err();
        assert_eq!(e.line, bad.lines().count(), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]
        /// One answer for one file: the pieces path either steps aside or gives exactly what
        /// the whole-file parse gives, and never accepts what the whole file refuses.
        #[test]
        fn the_pieces_path_agrees_with_the_whole_file(
            // Good targets weighted up, so that many files are valid and take the pieces path.
            picks in proptest::collection::vec(
                proptest::sample::select(vec![4, 4, 4, 4, 4, 4, 13, 13, 7, 6, 11, 0, 1, 2, 3, 5, 8, 9, 10, 12, 14, 15, 15, 16, 17]),
                0..12,
            ),
            chunk in 1usize..4,
        ) {
            let text: String = picks
                .iter()
                .enumerate()
                .map(|(i, &f)| FRAGMENTS[f].replace("{i}", &i.to_string()))
                .collect();
            let whole = parse_whole(&text, Path::new("x")).ok();
            if let Some(pieces) = parse_in_pieces(&text, Path::new("x"), chunk) {
                proptest::prop_assert_eq!(Some(pieces), whole, "{}", text);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text, Path::new("x.toml"));
        }

        #[test]
        fn a_corrupted_good_config_never_panics(cut in 0usize..400, junk in "[\\[\\]=\"a-z0-9 \n]{0,12}") {
            let cut = cut.min(GOOD.len());
            let mut text = GOOD[..cut].to_string();
            text.push_str(&junk);
            text.push_str(&GOOD[cut..]);
            if let Err(ConfigError::Invalid(l)) = parse(&text, Path::new("x.toml")) {
                proptest::prop_assert!(l.line >= 1 && l.column >= 1);
            }
        }
    }
}
