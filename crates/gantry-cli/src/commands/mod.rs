//! One module per noun; `dispatch` maps a parsed command to it and failures to exit codes.

mod agent;
pub(crate) mod blueprint;
mod cluster;
mod info;
mod inventory;
mod lifetime;
mod ls;
mod remote;
mod scopes;
mod secrets;
mod state;

use std::io::Read;
use std::path::Path;

use anyhow::Context as _;
use gantry_core::{ClusterSpec, Target};
use gantry_provider::NodeInfo;
use serde::Serialize;

use crate::cli::{Cli, Command};
use crate::exit::{self, CliResult, Failure};
use crate::output;

pub async fn dispatch(cli: Cli) -> i32 {
    let g = &cli.global;
    if !matches!(cli.command, Command::Agent { .. }) {
        crate::context::install_ctrl_c();
    }
    let result = match cli.command {
        Command::Agent { node_dir } => agent::run(&node_dir).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "gantry", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Command::Validate(a) => cluster::validate(g, &a).await,
        Command::Up(a) => cluster::up(g, &a).await,
        Command::Blueprint { command } => blueprint::run(g, command).await,
        Command::State { command } => state::run(g, command).await,
        Command::Secrets { command } => secrets::run(g, command).await,
        Command::Plan(a) => cluster::plan(g, &a).await,
        Command::Destroy {
            clusters,
            all,
            expired,
            yes,
        } => lifetime::destroy(g, &clusters, all, expired, yes).await,
        Command::Extend {
            cluster,
            duration,
            from_now,
        } => lifetime::extend(g, &cluster, duration, from_now).await,
        Command::Gc { dry_run, grace } => lifetime::gc(g, dry_run, grace).await,
        Command::Inventory {
            cluster,
            format,
            port,
            show_secrets,
        } => inventory::inventory(g, cluster.as_deref(), format, port, show_secrets).await,
        Command::Stop { target } => {
            cluster::power(g, &target, gantry_engine::ops::Power::Stop).await
        }
        Command::Start { target } => {
            cluster::power(g, &target, gantry_engine::ops::Power::Start).await
        }
        Command::Ls(a) => ls::ls(g, &a).await,
        Command::Show {
            cluster,
            show_secrets,
        } => info::show(g, &cluster, show_secrets).await,
        Command::SshConfig { cluster } => {
            match remote::ssh_config_not_applicable(g, &cluster).await {
                Ok(None) => info::ssh_config(g, &cluster).await,
                other => other.map(|c| c.unwrap_or(exit::OK)),
            }
        }
        Command::Runs { cluster, limit } => info::runs(g, cluster.as_deref(), limit).await,
        Command::Logs { run } => info::logs(g, &run).await,
        Command::Run {
            target,
            concurrency,
            command,
        } => remote::run(g, &target, concurrency, &command).await,
        Command::Put {
            target,
            local,
            remote,
            concurrency,
        } => remote::put(g, &target, &local, &remote, concurrency).await,
        Command::Get {
            target,
            remote,
            local,
            concurrency,
        } => remote::get(g, &target, &remote, &local, concurrency).await,
        Command::Ssh { target, command } => remote::ssh(g, &target, &command).await,
    };
    // The host-key pins this command made or removed reach the state store, whatever its
    // outcome (a failed run may have pinned nodes before failing).
    let result = match (result, crate::context::sync_pins().await) {
        (Ok(_), Err(f)) => Err(f),
        (r, Err(f)) => {
            output::print_failure(&f);
            r
        }
        (r, Ok(())) => r,
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            output::print_failure(&f);
            f.code
        }
    }
}

/// Reads and validates a spec; errors are rendered with the offending source line.
pub fn load_spec(path: &Path) -> Result<(ClusterSpec, String), Failure> {
    let (name, text) = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("failed to read the spec from standard input")?;
        ("<stdin>".to_string(), s)
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read spec {}", path.display()))
            .map_err(|e| Failure::new(exit::USAGE, e))?;
        (path.display().to_string(), text)
    };
    match crate::providers::registry().parse_spec(&name, &text) {
        Ok(spec) => Ok((spec, text)),
        Err(e) => {
            eprint!("{}", gantry_core::spec::render_error(&e, &text));
            let n = e.items.len();
            Err(Failure::new(
                exit::USAGE,
                anyhow::anyhow!("{name}: {n} problem(s) in the spec"),
            ))
        }
    }
}

/// Prints the spec's warnings ([`gantry_core::spec::warnings`]: rules open to the whole
/// internet) on stderr, located like spec errors, and returns them (for JSON output).
pub fn warn_about_spec(path: &Path, spec: &ClusterSpec, text: &str) -> Vec<serde_json::Value> {
    let opens_firewall = crate::providers::registry().opens_firewall(spec);
    let items = gantry_core::spec::warnings(text, spec, opens_firewall);
    let name = if path == Path::new("-") {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    };
    eprint!(
        "{}",
        gantry_core::spec::render_warnings(&name, &items, text)
    );
    items
        .iter()
        .map(|i| {
            serde_json::json!({
                "file": name, "line": i.line, "column": i.column,
                "message": i.message, "hint": i.hint,
            })
        })
        .collect()
}

/// The stable JSON shape of a node (documented in README.md).
#[derive(Debug, Serialize)]
pub struct NodeJson {
    pub name: String,
    pub pool: String,
    pub index: u32,
    pub address: Option<String>,
    pub state: String,
    pub ssh: Option<gantry_provider::SshEndpoint>,
    pub provider_id: String,
    pub created_at: String,
    pub tags: gantry_core::Tags,
    /// The host key the provider made for the node (local nodes), as in `up`'s report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
}

impl From<&NodeInfo> for NodeJson {
    fn from(n: &NodeInfo) -> Self {
        NodeJson {
            name: n.name.clone(),
            pool: n.pool.clone(),
            index: n.index,
            address: n.address.map(|a| a.to_string()),
            state: n.state.as_str().into(),
            ssh: n.ssh.clone(),
            provider_id: n.provider_id.clone(),
            created_at: n.created_at.clone(),
            tags: n.tags.clone(),
            host_key: n.host_key.clone(),
        }
    }
}

pub fn parse_target(s: &str) -> CliResult<Target> {
    Target::parse(s).map_err(|e| {
        Failure::new(exit::USAGE, e)
            .hint("targets are CLUSTER, CLUSTER/N, CLUSTER/NODE-NAME or CLUSTER:POOL")
    })
}
