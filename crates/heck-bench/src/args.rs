//! `v1-bench`'s command line, and what both benches' command lines share (`Command`, `Flags`,
//! `ArgsError`, `from_env`, the window and `--agent-args` rules). Every flag is known: an
//! unknown one is an error (exit 2), never ignored, because an ignored `--help` once ran the
//! whole benchmark.
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::measure::SCRAPE_INTERVAL_S;

/// Printed by `--help`.
pub const USAGE: &str = "\
v1-bench: heck agent and blackbox_exporter checking the same simulated fleet, side by side

Usage: v1-bench [OPTIONS]

Options:
  --targets N[,N...]    fleet sizes, one run each (default 10000,100000)
  --window SECONDS      measured window, a positive multiple of the 10 s scrape interval (default 30)
  --agent-args \"ARGS\"   extra arguments for `heck agent`, split on spaces (e.g. \"--check-threads 1\")
  --heck PATH           the heck binary (default: `heck` next to this binary)
  --blackbox PATH       the blackbox_exporter binary (default: prometheus-blackbox-exporter on PATH)
  --skip-blackbox       measure the agent alone (for iterating; published ratios come from full runs)
  -h, --help            print this and exit

Exit status: 0 when every row is valid; 1 when a run failed or a checker's success share is
below 99.9% (failed checks are cheaper: the ratio would flatter one side); 2 on a usage error.
";

/// What a bench's command line asks for (`A`: its settings; `v1-bench`'s by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<A = Args> {
    /// Print the usage and exit 0.
    Help,
    /// Run the benchmark.
    Run(A),
}

/// The settings of `program` from this process's command line, parsed by `parse`; or the exit
/// status it ends with: `--help` prints `usage` (0), a usage error is printed (2).
pub fn from_env<A>(
    program: &str,
    usage: &str,
    parse: impl FnOnce(std::iter::Skip<std::env::Args>) -> Result<Command<A>, ArgsError>,
) -> Result<A, ExitCode> {
    match parse(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{usage}");
            Err(ExitCode::SUCCESS)
        }
        Ok(Command::Run(a)) => Ok(a),
        Err(e) => {
            eprintln!("{program}: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// One argument of a command line, as a flag: `--flag value` and `--flag=value` both work.
pub(crate) struct Flag {
    /// The argument as given (for [`ArgsError::Unknown`]).
    pub(crate) arg: String,
    /// Its name: the argument, or the part before `=`.
    pub(crate) name: String,
    /// The value after `=`, if any.
    pub(crate) inline: Option<String>,
}

/// The flags of a command line, one by one, each taking its value from after `=` or from the
/// next argument (which may itself start with `--`: `--agent-args "--check-threads 1"`).
pub(crate) struct Flags<I> {
    args: I,
}

impl<I: Iterator<Item = String>> Flags<I> {
    pub(crate) fn new(args: impl IntoIterator<Item = String, IntoIter = I>) -> Self {
        Flags {
            args: args.into_iter(),
        }
    }

    /// The next flag, if any.
    pub(crate) fn next_flag(&mut self) -> Option<Flag> {
        let arg = self.args.next()?;
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        Some(Flag { arg, name, inline })
    }

    /// The value of `flag` (named `name` in errors).
    pub(crate) fn value(&mut self, flag: &Flag, name: &'static str) -> Result<String, ArgsError> {
        match &flag.inline {
            Some(v) => Ok(v.clone()),
            None => self.args.next().ok_or(ArgsError::MissingValue(name)),
        }
    }
}

/// `--agent-args`' value: extra arguments for `heck agent`, split on spaces.
pub(crate) fn agent_args(v: &str) -> Vec<String> {
    v.split_whitespace().map(String::from).collect()
}

/// The benchmark's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Fleet sizes, one run each, in order.
    pub sizes: Vec<usize>,
    /// The measured window in seconds: a positive multiple of [`SCRAPE_INTERVAL_S`], so that
    /// it starts and ends on a scrape.
    pub window_s: u64,
    /// Extra arguments for `heck agent`.
    pub agent_args: Vec<String>,
    /// The heck binary; `None`: `heck` next to `v1-bench`.
    pub heck: Option<PathBuf>,
    /// The blackbox_exporter binary; `None`: `prometheus-blackbox-exporter` on `PATH`.
    pub blackbox: Option<PathBuf>,
    /// Measure the agent alone.
    pub skip_blackbox: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            sizes: vec![10_000, 100_000],
            window_s: 30,
            agent_args: Vec::new(),
            heck: None,
            blackbox: None,
            skip_blackbox: false,
        }
    }
}

/// A command line that cannot be run (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsError {
    /// A flag this program does not know, or a stray argument.
    Unknown(String),
    /// A flag given without its value.
    MissingValue(&'static str),
    /// A value that does not parse or is out of range.
    BadValue {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
        /// What is expected.
        expected: &'static str,
    },
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::Unknown(a) => write!(f, "unknown argument `{a}` (see --help)"),
            ArgsError::MissingValue(flag) => write!(f, "{flag} needs a value (see --help)"),
            ArgsError::BadValue {
                flag,
                value,
                expected,
            } => write!(f, "{flag} `{value}`: expected {expected}"),
        }
    }
}

impl std::error::Error for ArgsError {}

/// Parse the arguments after the program name. `--flag value` and `--flag=value` both work;
/// a value may itself start with `--` (`--agent-args "--check-threads 1"`).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, ArgsError> {
    let mut out = Args::default();
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next_flag() {
        let mut value = |name: &'static str| flags.value(&flag, name);
        match flag.name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--targets" => out.sizes = parse_sizes(&value("--targets")?)?,
            "--window" => out.window_s = parse_window(&value("--window")?)?,
            "--agent-args" => out.agent_args = agent_args(&value("--agent-args")?),
            "--heck" => out.heck = Some(PathBuf::from(value("--heck")?)),
            "--blackbox" => out.blackbox = Some(PathBuf::from(value("--blackbox")?)),
            "--skip-blackbox" if flag.inline.is_none() => out.skip_blackbox = true,
            _ => return Err(ArgsError::Unknown(flag.arg)),
        }
    }
    Ok(Command::Run(out))
}

fn parse_sizes(v: &str) -> Result<Vec<usize>, ArgsError> {
    let bad = || ArgsError::BadValue {
        flag: "--targets",
        value: v.to_string(),
        expected: "a comma-separated list of positive target counts",
    };
    let sizes: Vec<usize> = v
        .split(',')
        .map(|s| s.trim().parse::<usize>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if sizes.contains(&0) {
        return Err(bad());
    }
    Ok(sizes)
}

/// `--window`: seconds, a positive multiple of the scrape interval (both benches).
pub(crate) fn parse_window(v: &str) -> Result<u64, ArgsError> {
    match v.trim().parse::<u64>() {
        Ok(s) if s > 0 && s.is_multiple_of(SCRAPE_INTERVAL_S) => Ok(s),
        _ => Err(ArgsError::BadValue {
            flag: "--window",
            value: v.to_string(),
            expected: "seconds, a positive multiple of the 10 s scrape interval",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command, ArgsError> {
        parse(line.split_whitespace().map(String::from))
    }

    #[test]
    fn no_arguments_run_the_documented_defaults() {
        assert_eq!(parse_str(""), Ok(Command::Run(Args::default())));
        assert_eq!(Args::default().sizes, vec![10_000, 100_000]);
        assert_eq!(Args::default().window_s, 30);
    }

    #[test]
    fn help_wins_wherever_it_stands() {
        assert_eq!(parse_str("--help"), Ok(Command::Help));
        assert_eq!(parse_str("-h"), Ok(Command::Help));
        assert_eq!(parse_str("--targets 2000 --help"), Ok(Command::Help));
    }

    #[test]
    fn an_unknown_flag_is_an_error_not_ignored() {
        assert_eq!(
            parse_str("--targets 2000 --windw 10"),
            Err(ArgsError::Unknown("--windw".into()))
        );
        assert_eq!(parse_str("2000"), Err(ArgsError::Unknown("2000".into())));
        assert_eq!(
            parse_str("--skip-blackbox=yes"),
            Err(ArgsError::Unknown("--skip-blackbox=yes".into()))
        );
    }

    #[test]
    fn every_flag_is_read_in_both_spellings() {
        let Ok(Command::Run(a)) = parse(
            [
                "--targets",
                "2000, 5000",
                "--window=20",
                "--agent-args",
                "--check-threads 1",
                "--heck=/tmp/heck",
                "--blackbox",
                "/usr/bin/bbe",
                "--skip-blackbox",
            ]
            .map(String::from),
        ) else {
            panic!("valid arguments refused");
        };
        assert_eq!(a.sizes, vec![2000, 5000]);
        assert_eq!(a.window_s, 20);
        assert_eq!(a.agent_args, vec!["--check-threads", "1"]);
        assert_eq!(a.heck, Some(PathBuf::from("/tmp/heck")));
        assert_eq!(a.blackbox, Some(PathBuf::from("/usr/bin/bbe")));
        assert!(a.skip_blackbox);
    }

    #[test]
    fn a_flag_without_its_value_is_an_error() {
        assert_eq!(
            parse_str("--targets"),
            Err(ArgsError::MissingValue("--targets"))
        );
        assert_eq!(
            parse_str("--window 10 --heck"),
            Err(ArgsError::MissingValue("--heck"))
        );
    }

    #[test]
    fn a_window_must_start_and_end_on_a_scrape() {
        assert!(matches!(parse_str("--window 10"), Ok(Command::Run(a)) if a.window_s == 10));
        for bad in ["0", "15", "-10", "ten"] {
            assert!(
                matches!(
                    parse_str(&format!("--window {bad}")),
                    Err(ArgsError::BadValue {
                        flag: "--window",
                        ..
                    })
                ),
                "--window {bad} accepted"
            );
        }
    }

    #[test]
    fn target_counts_must_be_positive_numbers() {
        for bad in ["0", "10,0", "1e4", "", "10,,20"] {
            assert!(
                matches!(
                    parse_str(&format!("--targets {bad}")),
                    Err(ArgsError::BadValue { .. } | ArgsError::MissingValue(_))
                ),
                "--targets {bad} accepted"
            );
        }
    }
}
