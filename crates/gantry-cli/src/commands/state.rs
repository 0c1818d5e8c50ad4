//! `gantry state status`: which store this gantry uses and whether it answers, the first thing
//! to check when a team shares one (and the only place a user sees the store's address: always
//! without its password). `gantry state migrate --to URL`: the copy into another store, which
//! `gantry_state::migrate` does; this file opens the two stores, turns its refusals into exit
//! codes and hints, and prints its comparison.

use std::time::{Duration, Instant};

use serde_json::json;

use gantry_state::migrate::{self, MigrateOptions, MigrateReport};
use gantry_state::{StateError, StateUrl};

use crate::cli::{Global, MigrateArgs, OutputFormat, StateCommand};
use crate::context::{self, Home};
use crate::exit::{self, CliResult, Failure};
use crate::output;

/// How many reads the latency is the median of.
const PROBES: usize = 5;

pub async fn run(g: &Global, c: StateCommand) -> CliResult {
    match c {
        StateCommand::Status => status(g).await,
        StateCommand::Migrate(a) => migrate(g, &a).await,
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

/// Whether two URLs name one store (the same file, or the same server address and database or
/// prefix; a password makes no difference).
fn same_store(a: &StateUrl, b: &StateUrl) -> bool {
    match (a, b) {
        (StateUrl::Sqlite { path: x }, StateUrl::Sqlite { path: y }) => {
            let canon = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or(p.to_path_buf());
            canon(x) == canon(y)
        }
        _ => a.to_string() == b.to_string(),
    }
}

async fn migrate(g: &Global, a: &MigrateArgs) -> CliResult {
    let home = Home::from_global(g)?;
    let source_url = home.state.clone();
    let target_url = StateUrl::parse(&a.to).map_err(|e| {
        Failure::new(
            exit::USAGE,
            anyhow::Error::new(e).context("failed to read --to"),
        )
        .hint("give --to as sqlite://PATH, postgres://USER@HOST/DB or etcd://HOST:PORT[/PREFIX]")
    })?;
    if same_store(&source_url, &target_url) {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!("failed to migrate: {target_url} is the store in use"),
        )
        .hint("--to names the store to copy into; --state or GANTRY_STATE the one to copy from"));
    }
    let source = context::open_store(&home).await?;
    let target = context::open_store_url(&target_url).await?;
    eprintln!("copying {source_url} -> {target_url}");
    let options = MigrateOptions { force: a.force };
    let report = migrate::migrate(source.as_ref(), target.as_ref(), options)
        .await
        .map_err(|e| refusal(e, &source_url, &target_url))?;
    match g.output {
        OutputFormat::Json => output::print_json(&json!({
            "source": source_url.to_string(),
            "target": target_url.to_string(),
            "verified": report.verified(),
            "source_world": report.source_world,
            "target_world": report.target_world,
            "projects": report.projects,
            "kinds": report.kinds,
        })),
        OutputFormat::Text => print_report(&report),
    }
    if report.source_world != report.target_world {
        eprintln!(
            "warning: {target_url} keeps its own gantry world {}; what {source_url} made (world \
             {}) is another world's from it: shown, never stopped or destroyed through it",
            report.target_world, report.source_world
        );
    }
    if !report.verified() {
        let differ: Vec<&str> = report
            .kinds
            .iter()
            .filter(|k| !k.matches())
            .map(|k| k.kind.name())
            .collect();
        return Err(Failure::new(
            exit::FAILURE,
            anyhow::anyhow!(
                "failed to verify the copy: the target differs from the source in {}",
                differ.join(", ")
            ),
        )
        .hint(format!(
            "run `gantry state migrate --to {target_url} --force` again: it rewrites what \
             differs; records that only the target has (events of a run that went on there, a \
             newer cached listing) stay and keep differing"
        )));
    }
    eprintln!(
        "done: {} project(s) copied and verified; use it with GANTRY_STATE={target_url}",
        report.projects.len()
    );
    Ok(exit::OK)
}

/// A refusal or failure of `migrate`, with its exit code and what to do.
fn refusal(e: StateError, source: &StateUrl, target: &StateUrl) -> Failure {
    let (code, hint) = match &e {
        StateError::MigrateTargetNotEmpty { .. } => (
            exit::NOT_CONFIRMED,
            "--force copies into it anyway (records of the same name are overwritten, the \
             others stay); it is also how an interrupted migrate is finished: run it again with \
             --force, it converges"
                .to_string(),
        ),
        StateError::MigrateWorldMismatch { .. } => (
            exit::NOT_CONFIRMED,
            format!(
                "{target} was used by another gantry; --force copies anyway and {target} keeps \
                 its own world"
            ),
        ),
        StateError::MigrateLocked { .. } => (
            exit::Exit::Busy.code(),
            "wait until the run ends (`gantry runs` lists them), then run migrate again".into(),
        ),
        StateError::MigrateSourceChanged { .. } => (
            exit::FAILURE,
            format!(
                "stop every gantry using {source}, then run migrate again with --force: it \
                 converges"
            ),
        ),
        _ => (
            exit::FAILURE,
            "check that both stores answer (`gantry state status`, and with --state for the \
             target); a re-run with --force resumes"
                .into(),
        ),
    };
    Failure::new(
        code,
        anyhow::Error::new(e).context("failed to migrate the state"),
    )
    .hint(hint)
}

fn print_report(report: &MigrateReport) {
    let short = |h: &str| h.chars().take(12).collect::<String>();
    let rows = report
        .kinds
        .iter()
        .map(|k| {
            vec![
                k.kind.name().to_string(),
                k.source.count.to_string(),
                k.target.count.to_string(),
                k.written.to_string(),
                short(&k.source.hash),
                short(&k.target.hash),
                if k.matches() { "ok" } else { "DIFFERS" }.to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        output::table(
            &[
                "kind",
                "source",
                "target",
                "written",
                "source sha256",
                "target sha256",
                "check"
            ],
            rows
        )
    );
    println!("world      {}", report.target_world);
}
