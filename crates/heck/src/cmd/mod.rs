//! One module per subcommand. Each exposes `Args` (clap) and `run(args) -> anyhow::Result<ExitCode>`.
pub mod agent;
pub mod check;
pub mod demo;
pub mod fleet;
pub mod kv;
pub mod members;
pub mod ownership;
pub mod status;
pub mod targets;
