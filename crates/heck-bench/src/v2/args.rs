//! `v2-bench`'s command line. As `v1-bench`'s: every flag is known, an unknown one is an error
//! (exit 2), never ignored.
use std::path::PathBuf;

/// Printed by `--help`.
pub const USAGE: &str = "\
v2-bench: one heck agent (version 1) against a cluster of agents (version 2) on the same
simulated fleet, then kill -9 one member and time the failover

Usage: v2-bench [OPTIONS]

Options:
  --targets N           fleet size (default 100000)
  --interval DURATION   check interval of every target, in s or ms (default 10s)
  --window SECONDS      measured window, a positive multiple of the 10 s scrape interval (default
                        60); also the window measured after the kill
  --nodes M             agents in the cluster, at least 2 (default 5)
  --runs R              full runs, one after the other; min/median/max over them (default 1)
  --profile lan|fast    the cluster's SWIM parameters (default lan)
  --agent-args \"ARGS\"   extra arguments for every `heck agent`, the single one and the cluster's,
                        split on spaces (e.g. \"--check-threads 1\")
  --heck PATH           the heck binary (default: `heck` next to this binary)
  --quick               a small run for trying the harness: 1000 targets, 2s interval, 10 s
                        window, fast profile, 1 run (flags after it still apply)
  -h, --help            print this and exit

Exit status: 0 when every run completed and every success share is at least 99.9%; 1 when a
run failed, a share is below it, or ownership never settled; 2 on a usage error.
";

/// What the command line asks for.
pub type Command = crate::args::Command<Args>;

/// The cluster's SWIM parameters, as `heck agent --gossip-profile` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// memberlist's LAN parameters (probe 1 s).
    Lan,
    /// Probe 200 ms.
    Fast,
}

impl Profile {
    /// The value of `--gossip-profile`.
    pub fn flag(self) -> &'static str {
        match self {
            Profile::Lan => "lan",
            Profile::Fast => "fast",
        }
    }
}

/// The benchmark's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Targets in the fleet.
    pub targets: usize,
    /// Every target's check interval, milliseconds.
    pub interval_ms: u64,
    /// The measured windows, seconds: a positive multiple of
    /// [`SCRAPE_INTERVAL_S`](crate::measure::SCRAPE_INTERVAL_S).
    pub window_s: u64,
    /// Agents in the cluster.
    pub nodes: usize,
    /// Full runs.
    pub runs: usize,
    /// SWIM parameters.
    pub profile: Profile,
    /// Extra arguments for every `heck agent` (both steps alike, so the ratio stays fair).
    pub agent_args: Vec<String>,
    /// The heck binary; `None`: `heck` next to `v2-bench`.
    pub heck: Option<PathBuf>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            targets: 100_000,
            interval_ms: 10_000,
            window_s: 60,
            nodes: 5,
            runs: 1,
            profile: Profile::Lan,
            agent_args: Vec::new(),
            heck: None,
        }
    }
}

impl Args {
    /// `--quick`: small enough to try the harness in a couple of minutes.
    pub fn quick() -> Args {
        Args {
            targets: 1_000,
            interval_ms: 2_000,
            window_s: 10,
            profile: Profile::Fast,
            ..Args::default()
        }
    }

    /// The interval as the fleet's `--interval` and the config file spell it.
    pub fn interval_flag(&self) -> String {
        format!("{}ms", self.interval_ms)
    }

    /// Every check's timeout, as the fleet's `--timeout` spells it: 2 s (as `v1-bench`), or
    /// half the interval when that is shorter (a config's timeout must be below its interval).
    pub fn timeout_flag(&self) -> String {
        format!("{}ms", (self.interval_ms / 2).min(2_000))
    }

    /// The interval in seconds.
    pub fn interval_s(&self) -> f64 {
        self.interval_ms as f64 / 1000.0
    }
}

/// The same errors as v1-bench's command line.
pub use crate::args::ArgsError;
use crate::args::{Flags, agent_args, parse_window};

/// Parse the arguments after the program name (`--flag value` or `--flag=value`). `--quick`
/// sets its values where it stands: flags after it override them.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, ArgsError> {
    let mut out = Args::default();
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next_flag() {
        let mut value = |name: &'static str| flags.value(&flag, name);
        match flag.name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--quick" if flag.inline.is_none() => {
                out = Args {
                    heck: out.heck,
                    agent_args: out.agent_args,
                    ..Args::quick()
                };
            }
            "--targets" => out.targets = positive("--targets", &value("--targets")?, 1)?,
            "--nodes" => out.nodes = positive("--nodes", &value("--nodes")?, 2)?,
            "--runs" => out.runs = positive("--runs", &value("--runs")?, 1)?,
            "--interval" => out.interval_ms = parse_interval(&value("--interval")?)?,
            "--window" => out.window_s = parse_window(&value("--window")?)?,
            "--profile" => {
                let v = value("--profile")?;
                out.profile = match v.as_str() {
                    "lan" => Profile::Lan,
                    "fast" => Profile::Fast,
                    _ => {
                        return Err(ArgsError::BadValue {
                            flag: "--profile",
                            value: v,
                            expected: "lan or fast",
                        });
                    }
                };
            }
            "--agent-args" => out.agent_args = agent_args(&value("--agent-args")?),
            "--heck" => out.heck = Some(PathBuf::from(value("--heck")?)),
            _ => return Err(ArgsError::Unknown(flag.arg)),
        }
    }
    Ok(Command::Run(out))
}

fn positive(flag: &'static str, v: &str, min: usize) -> Result<usize, ArgsError> {
    match v.trim().parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(ArgsError::BadValue {
            flag,
            value: v.to_string(),
            expected: if min > 1 {
                "a whole number of at least 2"
            } else {
                "a positive whole number"
            },
        }),
    }
}

/// `10s`, `500ms`: at least 100 ms (a check needs its timeout's room; the fleet's config says 2 s
/// but a shorter interval is still a valid fleet) and at most an hour.
fn parse_interval(v: &str) -> Result<u64, ArgsError> {
    let t = v.trim();
    let ms = if let Some(n) = t.strip_suffix("ms") {
        n.parse::<u64>().ok()
    } else if let Some(n) = t.strip_suffix('s') {
        n.parse::<u64>().ok().and_then(|s| s.checked_mul(1000))
    } else {
        None
    };
    match ms {
        Some(ms) if (100..=3_600_000).contains(&ms) => Ok(ms),
        _ => Err(ArgsError::BadValue {
            flag: "--interval",
            value: v.to_string(),
            expected: "a duration like 10s or 500ms, from 100ms to 3600s",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command, ArgsError> {
        parse(line.split_whitespace().map(String::from))
    }

    fn run(line: &str) -> Args {
        match parse_str(line) {
            Ok(Command::Run(a)) => a,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn no_arguments_run_the_issues_benchmark() {
        let a = run("");
        assert_eq!(
            (a.targets, a.interval_ms, a.window_s),
            (100_000, 10_000, 60)
        );
        assert_eq!((a.nodes, a.runs, a.profile), (5, 1, Profile::Lan));
    }

    #[test]
    fn the_documented_command_line_parses() {
        let a = run("--targets 100000 --interval 10s --window 60");
        assert_eq!(a, Args::default());
        assert_eq!(a.interval_flag(), "10000ms");
        assert_eq!(a.timeout_flag(), "2000ms");
        assert_eq!(
            run("--quick").timeout_flag(),
            "1000ms",
            "below the 2 s interval"
        );
        assert_eq!(a.interval_s(), 10.0);
    }

    #[test]
    fn quick_is_small_and_later_flags_override_it() {
        let q = run("--quick");
        assert_eq!(q, Args::quick());
        assert!(q.targets <= 1_000 && q.window_s == 10 && q.profile == Profile::Fast);
        let a = run("--heck /x --quick --targets 200 --runs=2");
        assert_eq!((a.targets, a.runs, a.window_s), (200, 2, 10));
        assert_eq!(
            a.heck,
            Some(PathBuf::from("/x")),
            "--quick keeps the binary"
        );
    }

    #[test]
    fn agent_arguments_are_split_on_spaces_and_survive_quick() {
        let a = match parse(["--agent-args", "--check-threads 1", "--quick"].map(String::from)) {
            Ok(Command::Run(a)) => a,
            other => panic!("refused: {other:?}"),
        };
        assert_eq!(a.agent_args, vec!["--check-threads", "1"]);
        assert_eq!(a.targets, Args::quick().targets);
    }

    #[test]
    fn intervals_are_read_in_seconds_or_milliseconds() {
        assert_eq!(run("--interval 500ms").interval_ms, 500);
        assert_eq!(run("--interval=2s").interval_ms, 2_000);
        for bad in ["10", "0s", "50ms", "1h", "s", "-1s"] {
            assert!(
                matches!(
                    parse_str(&format!("--interval {bad}")),
                    Err(ArgsError::BadValue {
                        flag: "--interval",
                        ..
                    })
                ),
                "--interval {bad} accepted"
            );
        }
    }

    #[test]
    fn a_cluster_needs_two_nodes_and_a_window_starts_and_ends_on_a_scrape() {
        assert!(matches!(
            parse_str("--nodes 1"),
            Err(ArgsError::BadValue {
                flag: "--nodes",
                ..
            })
        ));
        assert_eq!(run("--nodes 2").nodes, 2);
        for bad in ["0", "15", "ten"] {
            assert!(parse_str(&format!("--window {bad}")).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_str("--runs 0"),
            Err(ArgsError::BadValue { flag: "--runs", .. })
        ));
        assert!(matches!(
            parse_str("--profile wan"),
            Err(ArgsError::BadValue {
                flag: "--profile",
                ..
            })
        ));
        assert_eq!(run("--profile fast").profile, Profile::Fast);
    }

    #[test]
    fn unknown_flags_and_missing_values_are_errors_and_help_wins() {
        assert_eq!(
            parse_str("--nodez 5"),
            Err(ArgsError::Unknown("--nodez".into()))
        );
        assert_eq!(
            parse_str("--quick=yes"),
            Err(ArgsError::Unknown("--quick=yes".into()))
        );
        assert_eq!(parse_str("--runs"), Err(ArgsError::MissingValue("--runs")));
        assert_eq!(parse_str("--targets 10 -h"), Ok(Command::Help));
    }
}
