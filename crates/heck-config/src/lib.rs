//! heck's config file: TOML with `[defaults]`, `[agent]` and `[[target]]` tables.
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
//! URLs, zero durations and `timeout >= interval` are all such errors.
//!
//! How the position is found: serde errors (syntax, unknown field, wrong type) come with a byte
//! span from the `toml` crate. Validation errors come from `resolve` as a field name; we then look
//! that field up in a span-preserving parse of the same text ([`toml::de::DeTable`]).
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use heck_check::{Defaults, SpecError, TargetInput, TargetSpec};
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    agent: AgentSection,
    #[serde(default, rename = "target")]
    targets: Vec<TargetInput>,
}

/// Why a config did not load.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
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
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Targets parsed per chunk by [`parse`] for large configs.
const CHUNK: usize = 1000;

/// Validate config `text`; `path` is only used in error messages.
///
/// A large config (more than [`CHUNK`] `[[target]]` tables) is first parsed in contiguous
/// chunks of tables: the `toml` crate builds a document tree of whatever it parses, and for
/// 100,000 targets that tree alone outweighs the agent's steady state. Any problem in a chunk
/// (an error, a `[defaults]` after the targets, a `[[target]]` line inside a string) abandons the
/// chunked load for the whole-file parse below, so results and messages are always the
/// whole-file ones.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    if let Some(config) = parse_in_chunks(text) {
        return Ok(config);
    }
    parse_whole(text, path)
}

/// The chunked fast path: `None` means "use the whole-file parse".
fn parse_in_chunks(text: &str) -> Option<Config> {
    let mut headers = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim() == "[[target]]" {
            headers.push(offset);
        }
        offset += line.len();
    }
    if headers.len() <= CHUNK {
        return None;
    }
    let head: RawConfig = toml::from_str(&text[..headers[0]]).ok()?;
    if !head.targets.is_empty() || head.defaults.validate().is_err() {
        return None;
    }
    if head
        .agent
        .max_in_flight
        .is_some_and(|n| !(1..=MAX_IN_FLIGHT_LIMIT).contains(&n))
    {
        return None;
    }
    let mut targets = Vec::with_capacity(headers.len());
    let mut seen = std::collections::HashSet::with_capacity(headers.len());
    for (k, &start) in headers.iter().enumerate().step_by(CHUNK) {
        let end = headers.get(k + CHUNK).copied().unwrap_or(text.len());
        let chunk: RawConfig = toml::from_str(&text[start..end]).ok()?;
        if chunk.defaults != Defaults::default() || chunk.agent != AgentSection::default() {
            return None;
        }
        for input in &chunk.targets {
            let spec = input.resolve(&head.defaults).ok()?;
            if !seen.insert(spec.name.clone()) {
                return None;
            }
            targets.push(spec);
        }
    }
    Some(Config {
        defaults: head.defaults,
        agent: head.agent,
        targets,
    })
}

fn parse_whole(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
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

    let defaults_err = |e: SpecError| {
        let span = spans()
            .and_then(|d| {
                let d = d.get_ref();
                span_of(d, &["defaults", e.field]).or_else(|| span_of(d, &["defaults"]))
            })
            .unwrap_or(0..0);
        located(text, path, span, Some(e.field.to_string()), None, e.message)
    };
    raw.defaults.validate().map_err(defaults_err)?;

    if let Some(n) = raw.agent.max_in_flight
        && !(1..=MAX_IN_FLIGHT_LIMIT).contains(&n)
    {
        let span = spans()
            .and_then(|d| span_of(d.get_ref(), &["agent", "max_in_flight"]))
            .unwrap_or(0..0);
        return Err(located(
            text,
            path,
            span,
            Some("max_in_flight".into()),
            None,
            format!("{n} is not in 1..={MAX_IN_FLIGHT_LIMIT}"),
        ));
    }

    let mut targets: Vec<TargetSpec> = Vec::with_capacity(raw.targets.len());
    let mut seen = std::collections::HashMap::with_capacity(raw.targets.len());
    for (i, input) in raw.targets.iter().enumerate() {
        let target_span = |field: &str| {
            spans()
                .and_then(|d| {
                    // The field itself, else (a value inherited from [defaults]) the name.
                    let t = target_table(d.get_ref(), i)?;
                    t.get(field).or_else(|| t.get("name")).map(|v| v.span())
                })
                .unwrap_or(0..0)
        };
        let spec = input.resolve(&raw.defaults).map_err(|e| {
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
    fn a_large_config_loads_in_chunks_to_the_same_result() {
        let text = big(2 * CHUNK + 17, "");
        let chunked = parse_in_chunks(&text).expect("takes the chunked path");
        let whole = parse_whole(&text, Path::new("x")).unwrap();
        assert_eq!(chunked, whole);
        assert_eq!(chunked.targets.len(), 2 * CHUNK + 17);
    }

    #[test]
    fn a_large_config_with_a_late_table_or_an_error_falls_back_to_the_whole_file() {
        let late = big(CHUNK + 5, "\n[agent]\nmax_in_flight = 10\n");
        assert!(parse_in_chunks(&late).is_none());
        assert_eq!(
            parse(&late, Path::new("x")).unwrap().agent.max_in_flight,
            Some(10)
        );

        let bad = big(
            CHUNK + 5,
            "\n[[target]]\nname = \"t3\"\nurl = \"http://h/\"\n",
        );
        assert!(parse_in_chunks(&bad).is_none());
        let e = load_str(&bad).unwrap_err();
        assert!(e.message.contains("duplicate"), "{e}");
        assert_eq!(
            e.line,
            bad.lines().count() - 1,
            "the whole-file error points at the line"
        );
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
