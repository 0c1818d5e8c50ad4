//! Read-only commands about one cluster or the run history: `show`, `ssh-config`, `runs`,
//! `logs` (`ls` has its own module: it spans providers and regions and has a cache).

use anyhow::Context as _;
use gantry_core::tags::TagFilter;
use serde_json::json;

use super::NodeJson;
use crate::cli::{Global, OutputFormat};
use crate::context::{self, Home};
use crate::exit::{self, CliResult, Failure};
use crate::output;

/// A cluster's blueprint outputs (from the secret store, by its record's uid) as JSON:
/// `{BLUEPRINT: {OUTPUT: {value, secret, description}}}`, secret values masked unless `reveal`.
pub(super) async fn outputs_json(
    home: &Home,
    store: &std::sync::Arc<dyn gantry_state::StateStore>,
    project: &str,
    record: Option<&gantry_state::ClusterRecord>,
    reveal: bool,
) -> CliResult<serde_json::Value> {
    let Some(r) = record else {
        return Ok(json!({}));
    };
    let outputs = context::secret_store(home, store)
        .await?
        .outputs(project, &r.uid)
        .await
        .map_err(Failure::from)?;
    Ok(outputs
        .iter()
        .map(|(bp, o)| {
            let values: serde_json::Map<String, serde_json::Value> = o
                .iter()
                .map(|(name, v)| {
                    (
                        name.clone(),
                        json!({"value": v.shown(reveal), "secret": v.secret, "description": v.description}),
                    )
                })
                .collect();
            (bp.clone(), serde_json::Value::Object(values))
        })
        .collect::<serde_json::Map<_, _>>()
        .into())
}

pub async fn show(g: &Global, cluster: &str, reveal: bool) -> CliResult {
    gantry_core::validate_name(cluster).map_err(|e| Failure::new(exit::USAGE, e))?;
    let home = Home::from_global(g)?;
    let store = context::open_store(&home).await?;
    let ssh = context::ssh_config(&home, &store, &g.project).await?;
    let (provider, record) =
        context::provider_for_cluster(&home, &store, &ssh, &g.project, cluster).await?;
    let record = record.map(|c| c.record);
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
    let outputs = outputs_json(&home, &store, &g.project, record.as_ref(), reveal).await?;
    match g.output {
        OutputFormat::Json => output::print_json(&json!({
            "cluster": {
                "name": cluster,
                "provider": record.as_ref().map(|r| r.provider.clone()).unwrap_or_else(|| provider.name().into()),
                "status": record.as_ref().map_or("untracked", |r| r.status.as_str()),
                "expires_at": record.as_ref().map(|r| output::rfc3339(r.expires_at)),
                "spec_hash": record.as_ref().map(|r| r.spec_hash.clone()),
                "generation": record.as_ref().map(|r| r.generation),
            },
            "nodes": nodes.iter().map(NodeJson::from).collect::<Vec<_>>(),
            "outputs": outputs,
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
            print_outputs(&outputs, reveal);
        }
    }
    Ok(exit::OK)
}

/// The outputs table of `show` (nothing when there are none).
fn print_outputs(outputs: &serde_json::Value, reveal: bool) {
    let mut rows = Vec::new();
    let mut masked = false;
    for (bp, o) in outputs.as_object().into_iter().flatten() {
        for (name, v) in o.as_object().into_iter().flatten() {
            let secret = v["secret"].as_bool().unwrap_or(false);
            masked |= secret && !reveal;
            rows.push(vec![
                bp.clone(),
                name.clone(),
                v["value"].as_str().unwrap_or_default().to_string(),
                v["description"].as_str().unwrap_or_default().to_string(),
            ]);
        }
    }
    if rows.is_empty() {
        return;
    }
    println!(
        "\n{}",
        output::table(&["blueprint", "output", "value", "description"], rows)
    );
    if masked {
        eprintln!("note: secret outputs are shown as ********; --show-secrets prints them");
    }
}

pub async fn ssh_config(g: &Global, cluster: &str) -> CliResult {
    gantry_core::validate_name(cluster).map_err(|e| Failure::new(exit::USAGE, e))?;
    let home = Home::from_global(g)?;
    let store = context::open_store(&home).await?;
    let ssh = context::ssh_config(&home, &store, &g.project).await?;
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
    print!("{}", ssh_config_text(&home, &g.project, &nodes)?);
    Ok(exit::OK)
}

/// A path as an ssh_config argument: in double quotes (a GANTRY_HOME with spaces), `%` doubled
/// (ssh expands `%` tokens in `IdentityFile` and `UserKnownHostsFile`). A path with `"`, `\` or
/// a control character cannot be written so that every OpenSSH reads it back: refused.
pub(super) fn ssh_config_path(p: &std::path::Path) -> Result<String, Failure> {
    let bad = || {
        Failure::new(
            exit::USAGE,
            anyhow::anyhow!(
                "cannot name {} in an ssh config: the path has a quote, backslash or control \
                 character",
                p.display()
            ),
        )
        .hint("use a GANTRY_HOME without them")
    };
    let s = p.to_str().ok_or_else(bad)?;
    if s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return Err(bad());
    }
    Ok(format!("\"{}\"", s.replace('%', "%%")))
}

/// The OpenSSH client config for `nodes` (shared by `ssh-config` and `inventory`). Names,
/// addresses and users were checked when the provider listed them
/// ([`gantry_provider::checked`]); paths are quoted.
pub(super) fn ssh_config_text(
    home: &Home,
    project: &str,
    nodes: &[gantry_provider::NodeInfo],
) -> Result<String, Failure> {
    let key = ssh_config_path(&home.key_path(project))?;
    let kh = ssh_config_path(&home.known_hosts(project))?;
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
        ));
    }
    Ok(out)
}

pub async fn runs(g: &Global, cluster: Option<&str>, limit: usize) -> CliResult {
    let home = Home::from_global(g)?;
    let store = context::open_store(&home).await?;
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
                        r.kind.to_string(),
                        r.status.to_string(),
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
    let home = Home::from_global(g)?;
    let store = context::open_store(&home).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_config_paths_are_quoted_and_refused_when_they_cannot_be() {
        let p = |s: &str| ssh_config_path(std::path::Path::new(s));
        assert_eq!(p("/a/b c/id").unwrap(), "\"/a/b c/id\"");
        assert_eq!(p("/a/100%/id").unwrap(), "\"/a/100%%/id\"");
        for bad in ["/a\"b", "/a\\b", "/a\nProxyCommand x"] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
    }
}
