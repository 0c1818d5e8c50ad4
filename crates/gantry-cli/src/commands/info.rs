//! Read-only commands: `ls`, `show`, `ssh-config`, `runs`, `logs`.

use std::collections::BTreeMap;

use anyhow::Context as _;
use gantry_core::tags::{self, TagFilter};
use gantry_provider::NodeState;
use serde_json::json;

use super::NodeJson;
use crate::cli::{Global, OutputFormat};
use crate::context::{self, Home};
use crate::exit::{self, CliResult, Failure};
use crate::output;

pub async fn ls(g: &Global) -> CliResult {
    let home = Home::resolve(g.home.as_deref())?;
    let store = context::open_store(&home)?;
    let ssh = context::ssh_config(&home, &g.project)?;
    let records = store
        .list_clusters(&g.project)
        .await
        .context("failed to read the state store")?;
    // Observed by tags: includes clusters whose record a crash prevented.
    let local = context::local_provider(&home, &ssh, None)?;
    let mut observed = local
        .list(&TagFilter::project(&g.project))
        .await
        .map_err(gantry_engine::EngineError::from)?;
    // Clusters on other providers: each asked by its own tags, all at once.
    let mut remote = tokio::task::JoinSet::new();
    for r in records.iter().filter(|r| r.provider != "local") {
        let (provider, _) =
            context::provider_for_cluster(&home, &store, &ssh, &g.project, &r.name).await?;
        let filter = TagFilter::cluster(&g.project, &r.name);
        let name = r.name.clone();
        remote.spawn(async move { (name, provider.list(&filter).await) });
    }
    while let Some(joined) = remote.join_next().await {
        match joined {
            Ok((_, Ok(nodes))) => observed.extend(nodes),
            Ok((name, Err(e))) => eprintln!("warning: cannot list the nodes of {name}: {e}"),
            Err(e) => eprintln!("warning: listing failed: {e}"),
        }
    }
    let mut by_cluster: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for n in observed {
        if let Some(c) = n.tags.get(tags::CLUSTER) {
            by_cluster.entry(c.clone()).or_default().push(n);
        }
    }
    let mut rows = Vec::new();
    let mut items = Vec::new();
    // Clusters with less than an hour left, and expired ones: named in a warning on stderr.
    let mut soon: Vec<String> = Vec::new();
    let mut expired: Vec<String> = Vec::new();
    for r in &records {
        let nodes = by_cluster.remove(&r.name).unwrap_or_default();
        let up = nodes
            .iter()
            .filter(|n| n.state == NodeState::Running)
            .count();
        let left = (r.expires_at - time::OffsetDateTime::now_utc()).whole_seconds();
        rows.push(vec![
            r.name.clone(),
            r.provider.clone(),
            r.status.clone(),
            format!("{up}/{}", nodes.len()),
            output::time_left(r.expires_at)
                + if (0..3600).contains(&left) {
                    " (expires soon)"
                } else {
                    ""
                },
        ]);
        if (0..3600).contains(&left) {
            soon.push(format!("{} ({})", r.name, output::time_left(r.expires_at)));
        } else if left < 0 {
            expired.push(r.name.clone());
        }
        items.push(json!({
            "name": r.name, "provider": r.provider, "status": r.status, "nodes_up": up, "nodes_total": nodes.len(),
            "expires_at": output::rfc3339(r.expires_at), "expires_in_secs": left, "generation": r.generation,
            "created_at": output::rfc3339(r.created_at), "tracked": true,
        }));
    }
    for (name, nodes) in by_cluster {
        let up = nodes
            .iter()
            .filter(|n| n.state == NodeState::Running)
            .count();
        rows.push(vec![
            name.clone(),
            "local".into(),
            "untracked".into(),
            format!("{up}/{}", nodes.len()),
            "-".into(),
        ]);
        items.push(json!({"name": name, "provider": "local", "status": "untracked", "nodes_up": up, "nodes_total": nodes.len(), "tracked": false}));
    }
    match g.output {
        OutputFormat::Json => output::print_json(&items),
        OutputFormat::Text if rows.is_empty() => eprintln!("no clusters in project {}", g.project),
        OutputFormat::Text => {
            println!(
                "{}",
                output::table(&["name", "provider", "status", "nodes", "expires in"], rows)
            );
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
    Ok(exit::OK)
}

pub async fn show(g: &Global, cluster: &str) -> CliResult {
    gantry_core::validate_name(cluster).map_err(|e| Failure::new(exit::USAGE, e))?;
    let home = Home::resolve(g.home.as_deref())?;
    let store = context::open_store(&home)?;
    let ssh = context::ssh_config(&home, &g.project)?;
    let (provider, record) =
        context::provider_for_cluster(&home, &store, &ssh, &g.project, cluster).await?;
    let nodes = provider
        .list(&TagFilter::cluster(&g.project, cluster))
        .await
        .map_err(gantry_engine::EngineError::from)?;
    if record.is_none() && nodes.is_empty() {
        return Err(gantry_engine::EngineError::ClusterNotFound {
            project: g.project.clone(),
            cluster: cluster.into(),
        }
        .into());
    }
    match g.output {
        OutputFormat::Json => output::print_json(&json!({
            "cluster": {
                "name": cluster,
                "provider": record.as_ref().map(|r| r.provider.clone()).unwrap_or_else(|| provider.name().into()),
                "status": record.as_ref().map(|r| r.status.clone()).unwrap_or_else(|| "untracked".into()),
                "expires_at": record.as_ref().map(|r| output::rfc3339(r.expires_at)),
                "spec_hash": record.as_ref().map(|r| r.spec_hash.clone()),
                "generation": record.as_ref().map(|r| r.generation),
            },
            "nodes": nodes.iter().map(NodeJson::from).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            if let Some(r) = &record {
                println!(
                    "cluster {} ({}, {}), generation {}, expires in {}",
                    r.name,
                    r.provider,
                    r.status,
                    r.generation,
                    output::time_left(r.expires_at)
                );
            }
            let rows = nodes
                .iter()
                .map(|n| {
                    vec![
                        n.name.clone(),
                        n.address.map(|a| a.to_string()).unwrap_or_default(),
                        n.state.as_str().into(),
                        n.pool.clone(),
                        n.ssh
                            .as_ref()
                            .map(|s| format!("{}@{}:{}", s.user, s.host, s.port))
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            println!(
                "{}",
                output::table(&["node", "address", "state", "pool", "ssh"], rows)
            );
        }
    }
    Ok(exit::OK)
}

pub async fn ssh_config(g: &Global, cluster: &str) -> CliResult {
    gantry_core::validate_name(cluster).map_err(|e| Failure::new(exit::USAGE, e))?;
    let home = Home::resolve(g.home.as_deref())?;
    let store = context::open_store(&home)?;
    let ssh = context::ssh_config(&home, &g.project)?;
    let (provider, _) =
        context::provider_for_cluster(&home, &store, &ssh, &g.project, cluster).await?;
    let nodes = provider
        .list(&TagFilter::cluster(&g.project, cluster))
        .await
        .map_err(gantry_engine::EngineError::from)?;
    if nodes.is_empty() {
        return Err(gantry_engine::EngineError::ClusterNotFound {
            project: g.project.clone(),
            cluster: cluster.into(),
        }
        .into());
    }
    let key = home.key_path(&g.project);
    let kh = home.known_hosts(&g.project);
    if g.output == OutputFormat::Json {
        let hosts: Vec<_> = nodes
            .iter()
            .filter_map(|n| {
                n.ssh.as_ref().map(|e| {
                    json!({"host": n.name, "hostname": e.host, "port": e.port, "user": e.user,
                        "identity_file": key, "known_hosts": kh, "host_key_alias": n.name})
                })
            })
            .collect();
        output::print_json(&hosts);
        return Ok(exit::OK);
    }
    print!("{}", ssh_config_text(&home, &g.project, &nodes));
    Ok(exit::OK)
}

/// The OpenSSH client config for `nodes` (shared by `ssh-config` and `inventory`).
pub(super) fn ssh_config_text(
    home: &Home,
    project: &str,
    nodes: &[gantry_provider::NodeInfo],
) -> String {
    let key = home.key_path(project);
    let kh = home.known_hosts(project);
    let mut out = String::new();
    for n in nodes {
        let Some(e) = &n.ssh else { continue };
        out.push_str(&format!(
            "Host {name}\n  HostName {host}\n  Port {port}\n  User {user}\n  IdentityFile {key}\n  IdentitiesOnly yes\n  \
             UserKnownHostsFile {kh}\n  HostKeyAlias {name}\n  HashKnownHosts no\n  StrictHostKeyChecking accept-new\n  \
             CheckHostIP no\n  LogLevel ERROR\n\n",
            name = n.name,
            host = e.host,
            port = e.port,
            user = e.user,
            key = key.display(),
            kh = kh.display(),
        ));
    }
    out
}

pub async fn runs(g: &Global, cluster: Option<&str>, limit: usize) -> CliResult {
    let home = Home::resolve(g.home.as_deref())?;
    let store = context::open_store(&home)?;
    let runs = store
        .list_runs(&g.project, cluster, limit)
        .await
        .context("failed to read the state store")?;
    match g.output {
        OutputFormat::Json => output::print_json(&runs),
        OutputFormat::Text => {
            let rows = runs
                .iter()
                .map(|r| {
                    let took = r
                        .finished_at
                        .map(|f| format!("{:.1} s", (f - r.started_at).as_seconds_f64()))
                        .unwrap_or_default();
                    vec![
                        r.id.clone(),
                        r.cluster.clone(),
                        r.kind.clone(),
                        r.status.clone(),
                        output::rfc3339(r.started_at),
                        took,
                    ]
                })
                .collect();
            println!(
                "{}",
                output::table(
                    &["run", "cluster", "kind", "status", "started", "took"],
                    rows
                )
            );
        }
    }
    Ok(exit::OK)
}

pub async fn logs(g: &Global, run: &str) -> CliResult {
    let home = Home::resolve(g.home.as_deref())?;
    let store = context::open_store(&home)?;
    let record = store
        .find_run(run)
        .await
        .map_err(|e| Failure::new(exit::USAGE, e))?
        .ok_or_else(|| {
            Failure::new(exit::USAGE, anyhow::anyhow!("no run {run}"))
                .hint("`gantry runs` lists runs")
        })?;
    let events = store
        .list_events(&record.id, 0)
        .await
        .context("failed to read the state store")?;
    for e in events {
        match g.output {
            OutputFormat::Json => println!("{}", e.json),
            OutputFormat::Text => {
                let line = serde_json::from_str::<gantry_core::event::Event>(&e.json)
                    .ok()
                    .and_then(|ev| crate::progress::describe(&ev))
                    .unwrap_or(e.json);
                println!("{} {line}", output::rfc3339(e.at));
            }
        }
    }
    Ok(exit::OK)
}
