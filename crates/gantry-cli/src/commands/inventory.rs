//! `gantry inventory [CLUSTER] --format ansible|ssh-config|hosts|json|prometheus`: the nodes of
//! one cluster (or of every cluster of the project, wherever they run: the listing `ls` and
//! `gc` use) for other tools.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use gantry_core::tags::{self, TagFilter};
use gantry_provider::NodeInfo;
use serde_json::json;

use super::NodeJson;
use crate::cli::{Global, InventoryFormat};
use crate::context::{self, Home};
use crate::exit::{self, CliResult, Failure};
use crate::output;

pub async fn inventory(
    g: &Global,
    cluster: Option<&str>,
    format: InventoryFormat,
    port: u16,
    reveal: bool,
) -> CliResult {
    let home = Home::from_global(g)?;
    let store = context::open_store(&home).await?;
    let ssh = context::ssh_config(&home, &store, &g.project).await?;
    let mut nodes = match cluster {
        Some(c) => {
            gantry_core::validate_name(c).map_err(|e| Failure::new(exit::USAGE, e))?;
            let (provider, _) =
                context::provider_for_cluster(&home, &store, &ssh, &g.project, c).await?;
            let nodes = provider
                .list(&TagFilter::cluster(&g.project, c))
                .await
                .map_err(gantry_engine::EngineError::from)?;
            if nodes.is_empty() {
                return Err(gantry_engine::EngineError::ClusterNotFound {
                    project: g.project.clone(),
                    cluster: c.into(),
                }
                .into());
            }
            nodes
        }
        // The whole project, listed live in every scope like `gc` does; clusters of another
        // gantry world (`ls` notes them, gc skips them) are not this project's to hand out.
        None => {
            let inv =
                super::scopes::list_project(g, &home, &[], gantry_engine::app::CacheUse::LIVE)
                    .await?;
            for w in &inv.warnings {
                eprintln!("warning: {}", w.message);
            }
            inv.clusters
                .into_iter()
                .filter(|c| c.foreign.is_none())
                .flat_map(|c| c.nodes.unwrap_or_default())
                .collect()
        }
    };
    nodes.sort_by(|a, b| {
        (cluster_of(a), &a.pool, a.index, &a.name).cmp(&(cluster_of(b), &b.pool, b.index, &b.name))
    });
    match format {
        InventoryFormat::SshConfig => {
            print!(
                "{}",
                super::info::ssh_config_text(&home, &g.project, &nodes)?
            )
        }
        InventoryFormat::Hosts => print!("{}", hosts(&nodes)),
        InventoryFormat::Json => {
            // The outputs of every cluster listed (those gantry has a record of).
            let names: std::collections::BTreeSet<&str> = nodes.iter().map(cluster_of).collect();
            let mut outputs = serde_json::Map::new();
            for c in names {
                let record = store
                    .get_cluster(&g.project, c)
                    .await
                    .map_err(gantry_engine::EngineError::from)?;
                let o =
                    super::info::outputs_json(&home, &store, &g.project, record.as_ref(), reveal)
                        .await?;
                if o.as_object().is_some_and(|m| !m.is_empty()) {
                    outputs.insert(c.to_string(), o);
                }
            }
            output::print_json(&json!({
                "nodes": nodes.iter().map(NodeJson::from).collect::<Vec<_>>(),
                "outputs": outputs,
            }))
        }
        InventoryFormat::Prometheus => output::print_json(&prometheus(&nodes, port)),
        InventoryFormat::Ansible => {
            let (text, clashes) = ansible_ini(&home, &g.project, &nodes)?;
            for c in clashes {
                eprintln!("warning: {c}");
            }
            print!("{text}");
        }
    }
    Ok(exit::OK)
}

fn cluster_of(n: &NodeInfo) -> &str {
    n.tags.get(tags::CLUSTER).map(String::as_str).unwrap_or("")
}

/// `/etc/hosts` lines: `ADDRESS NAME`.
fn hosts(nodes: &[NodeInfo]) -> String {
    nodes
        .iter()
        .filter_map(|n| n.address.map(|a| format!("{a} {}\n", n.name)))
        .collect()
}

/// Prometheus file_sd: one target group per node.
fn prometheus(nodes: &[NodeInfo], port: u16) -> serde_json::Value {
    nodes
        .iter()
        .filter_map(|n| {
            n.address.map(|a| {
                json!({
                    "targets": [SocketAddr::new(a, port).to_string()],
                    "labels": {"cluster": cluster_of(n), "pool": n.pool, "node": n.name},
                })
            })
        })
        .collect()
}

/// An Ansible group name: letters, digits and `_` only, not starting with a digit.
fn group_name(s: &str) -> String {
    let mut g: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if g.is_empty() || g.starts_with(|c: char| c.is_ascii_digit()) {
        g.insert(0, '_');
    }
    g
}

/// Quotes a value the way Ansible's INI parser (POSIX shlex) reads it back.
fn sh_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:@,+=%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

type Groups<'a> = BTreeMap<String, (String, Vec<&'a NodeInfo>)>;

/// Adds `n` to the group `source` becomes; notes when two sources become one group name.
fn add_to_group<'a>(
    groups: &mut Groups<'a>,
    clashes: &mut Vec<String>,
    source: String,
    n: &'a NodeInfo,
) {
    let name = group_name(&source);
    let e = groups
        .entry(name.clone())
        .or_insert_with(|| (source.clone(), vec![]));
    if e.0 != source {
        clashes.push(format!(
            "{} and {source} both become Ansible group {name}",
            e.0
        ));
    }
    e.1.push(n);
}

/// An INI inventory: a group per cluster and per pool (`CLUSTER_POOL`), every connection
/// setting as host vars. Host keys are checked strictly against gantry's pins (`up` pinned
/// them). Returns the text and warnings about group names that two sources map to.
fn ansible_ini(
    home: &Home,
    project: &str,
    nodes: &[NodeInfo],
) -> Result<(String, Vec<String>), Failure> {
    let key = home.key_path(project);
    // ssh reads `-o UserKnownHostsFile=...` like a config line: the path is quoted inside.
    let kh = super::info::ssh_config_path(&home.known_hosts(project))?;
    let mut out = format!("# gantry inventory of project {project}\n");
    // group name -> (source, hosts); BTreeMap keeps the output stable.
    let mut clusters = Groups::new();
    let mut pools = Groups::new();
    let mut clashes = Vec::new();
    for n in nodes.iter().filter(|n| n.ssh.is_some()) {
        add_to_group(&mut clusters, &mut clashes, cluster_of(n).to_string(), n);
    }
    for n in nodes.iter().filter(|n| n.ssh.is_some()) {
        add_to_group(
            &mut pools,
            &mut clashes,
            format!("{}_{}", cluster_of(n), n.pool),
            n,
        );
    }
    for (group, (_, members)) in &clusters {
        out.push_str(&format!("\n[{group}]\n"));
        for n in members {
            let Some(e) = &n.ssh else { continue };
            let common = format!(
                "-o {} -o {} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes",
                sh_quote(&format!("UserKnownHostsFile={kh}")),
                sh_quote(&format!("HostKeyAlias={}", n.name)),
            );
            let vars = [
                ("ansible_host", e.host.clone()),
                ("ansible_port", e.port.to_string()),
                ("ansible_user", e.user.clone()),
                ("ansible_ssh_private_key_file", key.display().to_string()),
                ("ansible_ssh_common_args", common),
                ("ansible_python_interpreter", "auto_silent".into()),
                ("gantry_cluster", cluster_of(n).to_string()),
                ("gantry_pool", n.pool.clone()),
                ("gantry_index", n.index.to_string()),
            ];
            out.push_str(&n.name);
            for (k, v) in vars {
                out.push_str(&format!(" {k}={}", sh_quote(&v)));
            }
            out.push('\n');
        }
    }
    for (group, (_, members)) in &pools {
        out.push_str(&format!("\n[{group}]\n"));
        for n in members {
            out.push_str(&format!("{}\n", n.name));
        }
    }
    Ok((out, clashes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_identifiers() {
        assert_eq!(group_name("my-demo_db"), "my_demo_db");
        assert_eq!(group_name("9x"), "_9x");
        assert_eq!(group_name(""), "_");
    }

    #[test]
    fn quoting_round_trips_through_posix_shell_rules() {
        assert_eq!(sh_quote("/a/b"), "/a/b");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
