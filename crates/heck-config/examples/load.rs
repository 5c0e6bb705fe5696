//! Load a config and print how many targets it has: `cargo run --release -p heck-config
//! --example load -- heck.toml`. For measuring the loader's peak memory with
//! `/usr/bin/time -v` (see docs/benchmarks.md).
fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: load CONFIG");
        return std::process::ExitCode::from(2);
    };
    match heck_config::load(std::path::Path::new(&path)) {
        Ok(c) => {
            println!("{} targets", c.targets.len());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
