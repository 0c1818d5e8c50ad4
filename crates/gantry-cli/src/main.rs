//! The `gantry` binary: command-line parsing, output and exit codes.
//!
//! This is the only crate that writes to the terminal. Library errors become [`exit::Failure`]s
//! with a documented exit code and `hint:` lines at this edge.

mod app;
mod cli;
mod commands;
mod context;
mod env_vars;
mod exit;
mod key_providers;
mod keys;
mod output;
mod progress;
mod providers;
mod terminal;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    // One runtime and one logger for every command, the detached node agent included: quiet
    // (warnings only) unless -v, or GANTRY_LOG, which the local provider passes on to agents.
    let verbose = cli.global.verbose;
    let filter = match verbose {
        0 => "warn",
        1 => "info,gantry=debug",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env(env_vars::GANTRY_LOG)
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            std::process::exit(exit::FAILURE);
        }
    };
    let code = runtime.block_on(commands::dispatch(cli));
    // Do not wait for background tasks (lease renewers, idle sessions) on the way out.
    runtime.shutdown_background();
    std::process::exit(code);
}
