//! `gantry ls`: every cluster of the project, from its records and from every node that carries
//! the project's tags, in every listing scope ([`super::scopes`]: local nodes, each Docker
//! engine, each AWS region that matters, all at once), merged by
//! [`gantry_engine::app::list_project`], the listing `gc` and `inventory` use too.
//!
//! Why a cache: listing a dozen regions takes seconds. Each region's listing is kept in the
//! state store's inventory cache and served while younger than `--max-age` (default 60 s);
//! `--refresh` re-lists. It never hides gantry's own changes: every run that changes resources
//! drops the project's cache when it starts and when it ends (gantry-engine's `RunGuard`), and
//! the store refuses a listing that started before the last such drop. Only changes made behind
//! gantry's back can be up to `--max-age` late. Nothing that changes resources reads the cache:
//! `up`, `destroy`, `gc`, … always list live. Local nodes and Docker engines are never cached:
//! their listings are cheap and always fresh.

use std::time::Duration;

use gantry_engine::app::{CacheUse, Warning};
use gantry_provider::{NodeInfo, NodeState};
use gantry_state::ClusterRecord;
use serde_json::json;
use time::OffsetDateTime;

use crate::cli::{Global, LsArgs, OutputFormat};
use crate::context::Home;
use crate::exit::{self, CliResult};
use crate::output;

/// One line of the listing.
struct Row<'a> {
    name: String,
    provider: String,
    region: Option<String>,
    record: Option<&'a ClusterRecord>,
    /// `None`: could not be listed (see the warnings).
    nodes: Option<&'a Vec<NodeInfo>>,
    cached_age: Option<Duration>,
    /// An untracked cluster none of whose nodes is this world's: who made it. Shown, since
    /// gantry never touches it.
    foreign: Option<String>,
}

pub async fn ls(g: &Global, a: &LsArgs) -> CliResult {
    let home = Home::from_global(g)?;
    let cache = CacheUse {
        max_age: if a.refresh { Duration::ZERO } else { a.max_age },
    };
    let inv = super::scopes::list_project(g, &home, &a.regions, cache).await?;
    let rows: Vec<Row<'_>> = inv
        .clusters
        .iter()
        .map(|c| {
            let scope = c.scope.map(|i| &inv.scopes[i]);
            Row {
                name: c.name.clone(),
                provider: match (&c.record, scope) {
                    (Some(r), _) => r.provider.clone(),
                    (None, Some(s)) => s.scope.kind.clone(),
                    (None, None) => "?".into(),
                },
                region: scope.and_then(|s| s.scope.region.clone()),
                record: c.record.as_ref(),
                nodes: c.nodes.as_ref(),
                cached_age: c.nodes.as_ref().and(scope.and_then(|s| s.cached_age)),
                foreign: c.foreign.clone(),
            }
        })
        .collect();
    let cached: Vec<(String, Duration)> = inv
        .scopes
        .iter()
        .filter_map(|l| {
            l.cached_age
                .map(|age| (l.scope.region.clone().unwrap_or(l.scope.key.clone()), age))
        })
        .collect();
    print(g, &rows, &inv.warnings, &cached);
    Ok(exit::OK)
}

fn print(g: &Global, rows: &[Row<'_>], warnings: &[Warning], cached: &[(String, Duration)]) {
    let now = OffsetDateTime::now_utc();
    let counts = |nodes: &Option<&Vec<NodeInfo>>| {
        nodes.map(|n| {
            let up = n.iter().filter(|n| n.state == NodeState::Running).count();
            (up, n.len())
        })
    };
    match g.output {
        OutputFormat::Json => {
            let items: Vec<_> = rows
                .iter()
                .map(|row| {
                    let c = counts(&row.nodes);
                    let mut item = json!({
                        "name": row.name,
                        "provider": row.provider,
                        "region": row.region,
                        "status": row.record.map_or("untracked", |r| r.status.as_str()),
                        "foreign_owner": row.foreign,
                        "nodes_up": c.map(|c| c.0),
                        "nodes_total": c.map(|c| c.1),
                        "tracked": row.record.is_some(),
                        "cached_age_secs": row.cached_age.map(|a| a.as_secs()),
                    });
                    if let Some(r) = row.record {
                        item["expires_at"] = json!(output::rfc3339(r.expires_at));
                        item["expires_in_secs"] = json!((r.expires_at - now).whole_seconds());
                        item["generation"] = json!(r.generation);
                        item["created_at"] = json!(output::rfc3339(r.created_at));
                    }
                    item
                })
                .collect();
            output::print_json(&items);
            // Like run events: one JSON object per line on stderr.
            for (region, age) in cached {
                eprintln!(
                    "{}",
                    json!({"type": "cached", "provider": "aws", "region": region, "age_secs": age.as_secs()})
                );
            }
            for w in warnings {
                eprintln!(
                    "{}",
                    json!({"type": "warning", "region": w.region, "message": w.message})
                );
            }
        }
        OutputFormat::Text => {
            let mut table = Vec::new();
            let mut soon: Vec<String> = Vec::new();
            let mut expired: Vec<String> = Vec::new();
            for row in rows {
                let nodes = counts(&row.nodes)
                    .map(|(up, total)| format!("{up}/{total}"))
                    .unwrap_or_else(|| "?".into());
                let (status, expires) = match row.record {
                    Some(r) => {
                        // Exact, like gc's `expires_at < now`: whole seconds would call a
                        // cluster expired less than a second ago "expiring soon".
                        let left = r.expires_at - now;
                        let expiring = !left.is_negative() && left < time::Duration::HOUR;
                        if expiring {
                            soon.push(format!("{} ({})", r.name, output::time_left(r.expires_at)));
                        } else if left.is_negative() {
                            expired.push(r.name.clone());
                        }
                        let note = if expiring { " (expires soon)" } else { "" };
                        (r.status.to_string(), output::time_left(r.expires_at) + note)
                    }
                    None => ("untracked".into(), "-".into()),
                };
                table.push(vec![
                    row.name.clone(),
                    row.provider.clone(),
                    row.region.clone().unwrap_or_else(|| "-".into()),
                    status,
                    nodes,
                    expires,
                ]);
            }
            if table.is_empty() {
                eprintln!("no clusters in project {}", g.project);
            } else {
                println!(
                    "{}",
                    output::table(
                        &[
                            "name",
                            "provider",
                            "region",
                            "status",
                            "nodes",
                            "expires in"
                        ],
                        table
                    )
                );
            }
            if !cached.is_empty() {
                let list = cached
                    .iter()
                    .map(|(region, age)| format!("aws {region} cached {}s ago", age.as_secs()))
                    .collect::<Vec<_>>()
                    .join(", ");
                eprintln!("note: {list}; --refresh re-reads");
            }
            for w in warnings {
                eprintln!("warning: {}", w.message);
            }
            for row in rows {
                if let Some(owner) = &row.foreign {
                    eprintln!(
                        "note: cluster {} belongs to another gantry world (made by {owner}); \
                         gantry never touches it",
                        row.name
                    );
                }
            }
            if !soon.is_empty() {
                eprintln!(
                    "warning: expiring within 1h: {}; `gantry extend CLUSTER 4h` keeps one longer",
                    soon.join(", ")
                );
            }
            if !expired.is_empty() {
                eprintln!(
                    "warning: expired: {}; `gantry gc` destroys expired clusters",
                    expired.join(", ")
                );
            }
        }
    }
}
