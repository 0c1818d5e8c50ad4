//! Commands that change a cluster: `up`, `plan`, `validate`, `destroy`, `stop`, `start`.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use gantry_engine::ops::{ConfirmDelete, Confirmation, Power, Report, UpOptions};
use serde_json::json;

use super::{NodeJson, load_spec, parse_target, warn_about_spec};
use crate::cli::{Global, OutputFormat, SpecArgs};
use crate::context::Home;
use crate::exit::{self, CliResult, Failure};
use crate::{output, progress};

pub async fn validate(g: &Global, a: &SpecArgs) -> CliResult {
    let (spec, text) = load_spec(&a.file)?;
    super::blueprint::prepare_for(&spec, &a.file, &text)?;
    match g.output {
        OutputFormat::Json => {
            output::print_json(&json!({"valid": true, "spec": spec, "hash": spec.hash()}))
        }
        OutputFormat::Text => println!(
            "{}: ok — cluster {} on {}, {} node(s) in {} pool(s), lifetime {}",
            a.file.display(),
            spec.name,
            spec.provider_name(),
            spec.node_count(),
            spec.pools.len(),
            humantime::format_duration(spec.lifetime)
        ),
    }
    Ok(exit::OK)
}

/// Asks on the terminal; without one, refuses (the caller must pass --yes).
pub(super) fn confirm(question: &str) -> CliResult<()> {
    match ask(question) {
        Confirmation::Yes => Ok(()),
        Confirmation::CannotAsk => Err(Failure::new(
            exit::NOT_CONFIRMED,
            anyhow::anyhow!("{question}: confirmation needed and no terminal to ask"),
        )
        .hint("re-run with --yes")),
        Confirmation::No => Err(Failure::new(
            exit::NOT_CONFIRMED,
            anyhow::anyhow!("not confirmed; nothing changed"),
        )),
    }
}

/// The question on the terminal (stderr, answered on stdin); [`Confirmation::CannotAsk`]
/// without one. Blocking.
fn ask(question: &str) -> Confirmation {
    if !std::io::stdin().is_terminal() {
        return Confirmation::CannotAsk;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if matches!(line.trim(), "y" | "Y" | "yes") {
        Confirmation::Yes
    } else {
        Confirmation::No
    }
}

pub(super) fn print_report(g: &Global, r: &Report, what: &str) {
    match g.output {
        OutputFormat::Json => output::print_json(&json!({
            "run_id": r.run_id,
            "cluster": r.cluster,
            "created": r.created,
            "started": r.started,
            "stopped": r.stopped,
            "deleted": r.deleted,
            "elapsed_ms": r.elapsed_ms,
            "nodes": r.nodes.iter().map(NodeJson::from).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            let mut parts = vec![];
            for (verb, list) in [
                ("created", &r.created),
                ("started", &r.started),
                ("stopped", &r.stopped),
                ("deleted", &r.deleted),
            ] {
                if !list.is_empty() {
                    parts.push(format!("{} {verb}", list.len()));
                }
            }
            let change = if parts.is_empty() {
                "no change".to_string()
            } else {
                parts.join(", ")
            };
            println!(
                "{what} {}: {change} in {:.1} s (run {})",
                r.cluster,
                r.elapsed_ms as f64 / 1000.0,
                r.run_id
            );
            if !r.nodes.is_empty() {
                let rows = r
                    .nodes
                    .iter()
                    .map(|n| {
                        vec![
                            n.name.clone(),
                            n.pool.clone(),
                            n.address.map(|a| a.to_string()).unwrap_or_default(),
                            n.state.as_str().into(),
                            n.ssh
                                .as_ref()
                                .map(|s| format!("{}@{}:{}", s.user, s.host, s.port))
                                .unwrap_or_default(),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    output::table(&["node", "pool", "address", "state", "ssh"], rows)
                );
            }
        }
    }
}

pub async fn up(g: &Global, a: &SpecArgs) -> CliResult {
    let (spec, text) = load_spec(&a.file)?;
    warn_about_spec(&a.file, &spec, &text);
    // Blueprints are checked before anything is created.
    let prepared = super::blueprint::prepare_for(&spec, &a.file, &text)?;
    let home = Home::from_global(g)?;
    let app = crate::app::app(g, &home).await?;
    let (listener, finish) = progress::listener(g.output);
    // A shrink is asked about by `up` itself, under the cluster lock, from the plan it carries
    // out (planning first without the lock could ask about other nodes than it deletes).
    let confirm_delete = ConfirmDelete(Arc::new(|names: &[String]| {
        ask(&format!(
            "this removes {} node(s): {}. continue?",
            names.len(),
            names.join(", ")
        ))
    }));
    // Blueprints run over the cluster's transport (Docker exec for docker clusters, else SSH).
    let opts = UpOptions {
        allow_delete: a.yes,
        confirm_delete: Some(confirm_delete),
        lifetime: a.lifetime,
        blueprints: super::blueprint::apply_options(&home, prepared, a.allow_packages),
    };
    let result = app.up(&spec, &text, opts, Some(listener)).await;
    finish();
    let r = result?;
    print_report(g, &r, "up");
    if g.output == OutputFormat::Text {
        let record = app
            .store
            .get_cluster(&app.project, &spec.name)
            .await
            .ok()
            .flatten();
        if let Some(c) = record {
            println!(
                "expires in {} (at {})",
                output::time_left(c.expires_at),
                output::rfc3339(c.expires_at)
            );
        }
        if let Some(first) = r.nodes.first() {
            println!(
                "ssh:     gantry ssh {}/{}-{}",
                spec.name, first.pool, first.index
            );
            println!("run:     gantry run {} -- hostname", spec.name);
        }
        println!("destroy: gantry destroy {}", spec.name);
    }
    Ok(exit::OK)
}

pub async fn plan(g: &Global, a: &SpecArgs) -> CliResult {
    let (spec, text) = load_spec(&a.file)?;
    let warnings = warn_about_spec(&a.file, &spec, &text);
    let home = Home::from_global(g)?;
    let (p, resources) = crate::app::app(g, &home).await?.plan(&spec).await?;
    let names = |v: &mut dyn Iterator<Item = &str>| v.map(String::from).collect::<Vec<_>>();
    let create = names(&mut p.create.iter().map(|r| r.name.as_str()));
    let start = names(&mut p.start.iter().map(|n| n.name.as_str()));
    let delete = names(&mut p.delete.iter().map(|n| n.name.as_str()));
    let keep = names(&mut p.keep.iter().map(|n| n.name.as_str()));
    match g.output {
        OutputFormat::Json => output::print_json(&json!({
            "cluster": spec.name, "create": create, "start": start, "delete": delete, "keep": keep,
            "current": keep.len() + start.len() + delete.len(), "desired": spec.node_count(),
            "resources": resources, "warnings": warnings,
        })),
        OutputFormat::Text => {
            let current = keep.len() + start.len() + delete.len();
            println!(
                "cluster {}: {} -> {} node(s)",
                spec.name,
                current,
                spec.node_count()
            );
            for n in &create {
                println!("  + create {n}");
            }
            for n in &start {
                println!("  ~ start  {n}");
            }
            for n in &delete {
                println!("  - delete {n}");
            }
            for r in &resources {
                match r.action {
                    gantry_provider::ChangeAction::Create => {
                        println!("  + create {} ({})", r.resource, r.detail)
                    }
                    gantry_provider::ChangeAction::Add => {
                        println!("  + allow  {} ({})", r.detail, r.resource)
                    }
                    gantry_provider::ChangeAction::Remove => {
                        println!("  - revoke {} ({})", r.detail, r.resource)
                    }
                }
            }
            if p.is_empty() && resources.is_empty() {
                println!("  (no change)");
            }
        }
    }
    Ok(exit::OK)
}

pub async fn destroy(g: &Global, cluster: &str, yes: bool) -> CliResult {
    gantry_core::validate_name(cluster).map_err(|e| Failure::new(exit::USAGE, e))?;
    let home = Home::from_global(g)?;
    let app = crate::app::app(g, &home).await?;
    let target = app.prepare_destroy(cluster).await?;
    if !yes {
        let observed = &target.observed;
        let others = if observed.foreign.is_empty() {
            String::new()
        } else {
            format!(
                " ({} node(s) of another gantry world with this name stay)",
                observed.foreign.len()
            )
        };
        confirm(&format!(
            "destroy cluster {cluster} and its {} node(s){others}?",
            observed.ours.len()
        ))?;
    }
    let (listener, finish) = progress::listener(g.output);
    let result = app.destroy(target, Some(listener)).await;
    finish();
    print_report(g, &result?, "destroy");
    Ok(exit::OK)
}

pub async fn power(g: &Global, target: &str, action: Power) -> CliResult {
    let target = parse_target(target)?;
    let home = Home::from_global(g)?;
    let app = crate::app::app(g, &home).await?;
    let (listener, finish) = progress::listener(g.output);
    let result = app.power(&target, action, Some(listener)).await;
    finish();
    let what = if action == Power::Stop {
        "stop"
    } else {
        "start"
    };
    print_report(g, &result?, what);
    Ok(exit::OK)
}
