//! `gantry state status`: which store this gantry uses and whether it answers, the first thing
//! to check when a team shares one (and the only place a user sees the store's address: always
//! without its password).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::{Global, OutputFormat, StateCommand};
use crate::context::{self, Home};
use crate::exit::{self, CliResult, Failure};
use crate::output;

/// How many reads the latency is the median of.
const PROBES: usize = 5;

pub async fn run(g: &Global, c: StateCommand) -> CliResult {
    match c {
        StateCommand::Status => status(g).await,
    }
}

async fn status(g: &Global) -> CliResult {
    let home = Home::from_global(g)?;
    let url = home.state.to_string();
    let kind = home.state.kind();
    let opened = Instant::now();
    let probe = async {
        let store = context::open_store(&home).await?;
        let connect = opened.elapsed();
        let version = store
            .schema_version()
            .await
            .map_err(|e| Failure::new(exit::FAILURE, anyhow::Error::new(e)))?;
        let mut times = Vec::with_capacity(PROBES);
        for _ in 0..PROBES {
            let t = Instant::now();
            store
                .schema_version()
                .await
                .map_err(|e| Failure::new(exit::FAILURE, anyhow::Error::new(e)))?;
            times.push(t.elapsed());
        }
        times.sort();
        Ok::<_, Failure>((version, connect, times[PROBES / 2]))
    };
    let result = probe.await;
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    match g.output {
        OutputFormat::Json => {
            let body = match &result {
                Ok((version, connect, latency)) => json!({
                    "kind": kind, "url": url, "healthy": true, "schema_version": version,
                    "connect_ms": ms(*connect), "latency_ms": ms(*latency), "error": null,
                }),
                Err(f) => json!({
                    "kind": kind, "url": url, "healthy": false, "schema_version": null,
                    "connect_ms": null, "latency_ms": null, "error": format!("{:#}", f.error),
                }),
            };
            output::print_json(&body);
        }
        OutputFormat::Text => {
            println!("store      {kind}");
            println!("url        {url}");
            match &result {
                Ok((version, connect, latency)) => {
                    println!("schema     version {version}");
                    println!("health     ok");
                    println!(
                        "latency    {:.3} ms (median of {PROBES} reads; opening took {:.3} ms)",
                        ms(*latency),
                        ms(*connect)
                    );
                }
                Err(_) => println!("health     not answering"),
            }
        }
    }
    result.map(|_| exit::OK)
}
