//! Commands that act on nodes through their transport: `run`, `put`, `get`, `ssh`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gantry_engine::transport::{
    ExitStatus, FanOutOptions, NodeTarget, OutputSink, SshTransport, Transport, TransportError,
    fan_out,
};
use gantry_provider::NodeInfo;
use serde_json::json;

use super::{parse_target, resolve_nodes};
use crate::cli::{Global, OutputFormat};
use crate::context::{self, Home};
use crate::exit::{self, CliResult, Failure};
use crate::output;

struct Resolved {
    nodes: Vec<NodeTarget>,
    transport: Arc<dyn Transport>,
}

async fn resolve(g: &Global, target: &str) -> CliResult<Resolved> {
    let target = parse_target(target)?;
    let home = Home::resolve(g.home.as_deref())?;
    let store = context::open_store(&home)?;
    let ssh = context::ssh_config(&home, &g.project)?;
    let (provider, record) =
        context::provider_for_cluster(&home, &store, &ssh, &g.project, &target.cluster).await?;
    let spec = record.map(|c| c.spec);
    let chosen: Vec<NodeInfo> = resolve_nodes(&provider, &g.project, &target).await?;
    // The cluster's provider kind decides how its nodes are reached: its own transport (Docker
    // exec), else SSH for everything with an SSH endpoint.
    let own = match &spec {
        Some(s) => context::transport_for_spec(&home, &ssh, &g.project, s)?,
        None => None,
    };
    let transport: Arc<dyn Transport> = match own {
        Some(t) => t,
        None => Arc::new(SshTransport::new(ssh)),
    };
    let nodes = chosen
        .iter()
        .map(|n| {
            transport.target(n).ok_or_else(|| {
                Failure::new(
                    exit::FAILURE,
                    anyhow::anyhow!(
                        "node {} has no ssh endpoint (state {})",
                        n.name,
                        n.state.as_str()
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Resolved { nodes, transport })
}

/// Writes remote output line by line, prefixed with the node name when several nodes answer,
/// or captures it for JSON output.
struct LineSink {
    prefix: Option<String>,
    capture: bool,
    out: Vec<u8>,
    err: Vec<u8>,
    pending_out: Vec<u8>,
    pending_err: Vec<u8>,
}

impl LineSink {
    fn new(node: &str, prefix: bool, capture: bool) -> Self {
        LineSink {
            prefix: prefix.then(|| format!("{node} | ")),
            capture,
            out: vec![],
            err: vec![],
            pending_out: vec![],
            pending_err: vec![],
        }
    }

    fn emit(prefix: &Option<String>, pending: &mut Vec<u8>, to_stderr: bool, all: bool) {
        while let Some(pos) =
            pending
                .iter()
                .position(|b| *b == b'\n')
                .or(if all && !pending.is_empty() {
                    Some(pending.len())
                } else {
                    None
                })
        {
            let line: Vec<u8> = pending.drain(..(pos + 1).min(pending.len())).collect();
            let mut buf = Vec::with_capacity(line.len() + 32);
            if let Some(p) = prefix {
                buf.extend_from_slice(p.as_bytes());
            }
            buf.extend_from_slice(&line);
            if !buf.ends_with(b"\n") {
                buf.push(b'\n');
            }
            // One write per line keeps lines of different nodes from interleaving.
            if to_stderr {
                let _ = std::io::stderr().lock().write_all(&buf);
            } else {
                let _ = std::io::stdout().lock().write_all(&buf);
            }
        }
    }

    fn finish(&mut self) {
        if !self.capture {
            Self::emit(&self.prefix, &mut self.pending_out, false, true);
            Self::emit(&self.prefix, &mut self.pending_err, true, true);
        }
    }
}

impl OutputSink for LineSink {
    fn stdout(&mut self, data: &[u8]) {
        if self.capture {
            self.out.extend_from_slice(data);
        } else if self.prefix.is_none() {
            let _ = std::io::stdout().lock().write_all(data);
        } else {
            self.pending_out.extend_from_slice(data);
            Self::emit(&self.prefix, &mut self.pending_out, false, false);
        }
    }

    fn stderr(&mut self, data: &[u8]) {
        if self.capture {
            self.err.extend_from_slice(data);
        } else if self.prefix.is_none() {
            let _ = std::io::stderr().lock().write_all(data);
        } else {
            self.pending_err.extend_from_slice(data);
            Self::emit(&self.prefix, &mut self.pending_err, true, false);
        }
    }
}

fn describe_status(s: &ExitStatus) -> String {
    match (&s.code, &s.signal) {
        (_, Some(sig)) => format!("killed by signal {sig}"),
        (Some(c), None) => format!("exit {c}"),
        (None, None) => "no exit status".into(),
    }
}

/// Exit code of a fan-out: transport problems outrank command failures.
fn fan_out_code(transport_errors: usize, other_errors: usize, command_failures: usize) -> i32 {
    if transport_errors > 0 {
        exit::TRANSPORT
    } else if other_errors > 0 {
        exit::FAILURE
    } else if command_failures > 0 {
        exit::COMMAND_FAILED
    } else {
        exit::OK
    }
}

async fn until_cancelled<T>(fut: impl std::future::Future<Output = T>) -> CliResult<T> {
    let cancel = context::cancel_on_ctrl_c();
    tokio::select! {
        v = fut => Ok(v),
        _ = cancel.cancelled() => Err(Failure::new(exit::INTERRUPTED, anyhow::anyhow!("interrupted"))),
    }
}

pub async fn run(g: &Global, target: &str, concurrency: usize, command: &[String]) -> CliResult {
    let r = resolve(g, target).await?;
    let cmd = Arc::new(command.join(" "));
    let capture = g.output == OutputFormat::Json;
    let prefix = r.nodes.len() > 1;
    let transport = r.transport.clone();
    let opts = FanOutOptions {
        concurrency,
        ..Default::default()
    };
    let results = until_cancelled(fan_out(&r.nodes, &opts, move |node| {
        let (t, cmd) = (transport.clone(), cmd.clone());
        Box::pin(async move {
            let mut sink = LineSink::new(&node.name, prefix, capture);
            let status = t.exec(&node, &cmd, None, &mut sink).await;
            sink.finish();
            status.map(|s| (s, sink.out, sink.err))
        })
    }))
    .await?;
    r.transport.close().await;
    let (mut transport_errors, mut other_errors, mut failed) = (0, 0, Vec::new());
    let mut items = Vec::new();
    for (node, res) in r.nodes.iter().zip(&results) {
        match res {
            Ok((s, out, err)) => {
                if !s.success() {
                    failed.push(format!("{} ({})", node.name, describe_status(s)));
                }
                items.push(json!({
                    "node": node.name, "exit_code": s.code, "signal": s.signal,
                    "stdout": String::from_utf8_lossy(out), "stderr": String::from_utf8_lossy(err), "error": null,
                }));
            }
            Err(e) => {
                if e.is_transport() {
                    transport_errors += 1
                } else {
                    other_errors += 1
                }
                eprintln!("{}: {e}", node.name);
                items.push(json!({"node": node.name, "exit_code": null, "signal": null, "stdout": "", "stderr": "",
                    "error": e.to_string(), "transport_error": e.is_transport()}));
            }
        }
    }
    if capture {
        output::print_json(&items);
    }
    let ok = r.nodes.len() - failed.len() - transport_errors - other_errors;
    if r.nodes.len() > 1 || ok < r.nodes.len() {
        let mut summary = format!("{ok}/{} ok", r.nodes.len());
        if !failed.is_empty() {
            summary.push_str(&format!("; failed: {}", failed.join(", ")));
        }
        if transport_errors + other_errors > 0 {
            summary.push_str(&format!(
                "; unreachable: {}",
                transport_errors + other_errors
            ));
        }
        eprintln!("{summary}");
    }
    Ok(fan_out_code(transport_errors, other_errors, failed.len()))
}

fn report_transfers(
    g: &Global,
    verb: &str,
    nodes: &[NodeTarget],
    results: &[Result<(u64, String), TransportError>],
) -> i32 {
    let (mut transport_errors, mut other_errors) = (0, 0);
    let mut items = Vec::new();
    for (node, res) in nodes.iter().zip(results) {
        match res {
            Ok((bytes, path)) => {
                if g.output == OutputFormat::Text {
                    println!("{}: {verb} {bytes} bytes ({path})", node.name);
                }
                items.push(json!({"node": node.name, "bytes": bytes, "path": path, "error": null}));
            }
            Err(e) => {
                if e.is_transport() {
                    transport_errors += 1
                } else {
                    other_errors += 1
                }
                eprintln!("{}: {e}", node.name);
                items.push(json!({"node": node.name, "bytes": null, "error": e.to_string(), "transport_error": e.is_transport()}));
            }
        }
    }
    if g.output == OutputFormat::Json {
        output::print_json(&items);
    }
    fan_out_code(transport_errors, other_errors, 0)
}

pub async fn put(
    g: &Global,
    target: &str,
    local: &Path,
    remote: &str,
    concurrency: usize,
) -> CliResult {
    if !local.is_file() {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!("{} is not a readable file", local.display()),
        ));
    }
    let r = resolve(g, target).await?;
    let (transport, local, remote) = (
        r.transport.clone(),
        Arc::new(local.to_path_buf()),
        Arc::new(remote.to_string()),
    );
    let opts = FanOutOptions {
        concurrency,
        ..Default::default()
    };
    let results = until_cancelled(fan_out(&r.nodes, &opts, move |node| {
        let (t, local, remote) = (transport.clone(), local.clone(), remote.clone());
        Box::pin(async move {
            t.upload(&node, &local, &remote)
                .await
                .map(|b| (b, remote.to_string()))
        })
    }))
    .await?;
    r.transport.close().await;
    Ok(report_transfers(g, "sent", &r.nodes, &results))
}

/// `local/<node>`, where `get` from several nodes puts each node's file. Node names come from
/// the provider and are checked when listed ([`gantry_provider::checked`]); this is the second
/// line: a name that is not one plain path component (`..`, `/abs`, `a/b`) would put the file
/// outside `local`, so it is refused.
fn node_dir(local: &Path, node: &str) -> CliResult<PathBuf> {
    use std::path::Component;
    let mut parts = Path::new(node).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(c)), None) if c == node && !node.contains('/') => {
            Ok(local.join(node))
        }
        _ => Err(Failure::new(
            exit::FAILURE,
            anyhow::anyhow!("refusing node name {node:?}: it is not one plain path component"),
        )),
    }
}

pub async fn get(
    g: &Global,
    target: &str,
    remote: &str,
    local: &Path,
    concurrency: usize,
) -> CliResult {
    let r = resolve(g, target).await?;
    let base = Path::new(remote)
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("file"));
    let many = r.nodes.len() > 1;
    let dest = |node: &str| -> CliResult<PathBuf> {
        Ok(if many {
            node_dir(local, node)?.join(&base)
        } else if local.is_dir() {
            local.join(&base)
        } else {
            local.to_path_buf()
        })
    };
    let dests: Vec<PathBuf> = r
        .nodes
        .iter()
        .map(|n| dest(&n.name))
        .collect::<CliResult<_>>()?;
    for d in &dests {
        if let Some(p) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(p).map_err(|e| {
                Failure::new(
                    exit::FAILURE,
                    anyhow::anyhow!("failed to create {}: {e}", p.display()),
                )
            })?;
        }
    }
    let by_node: Arc<std::collections::HashMap<String, PathBuf>> =
        Arc::new(r.nodes.iter().map(|n| n.name.clone()).zip(dests).collect());
    let (transport, remote) = (r.transport.clone(), Arc::new(remote.to_string()));
    let opts = FanOutOptions {
        concurrency,
        ..Default::default()
    };
    let results = until_cancelled(fan_out(&r.nodes, &opts, move |node| {
        let (t, remote, by_node) = (transport.clone(), remote.clone(), by_node.clone());
        Box::pin(async move {
            let to = by_node[&node.name].clone();
            t.download(&node, &remote, &to)
                .await
                .map(|b| (b, to.display().to_string()))
        })
    }))
    .await?;
    r.transport.close().await;
    Ok(report_transfers(g, "received", &r.nodes, &results))
}

pub async fn ssh(g: &Global, target: &str, command: &[String]) -> CliResult {
    let r = resolve(g, target).await?;
    let node = &r.nodes[0];
    if r.nodes.len() > 1 {
        eprintln!("{} nodes match; connecting to {}", r.nodes.len(), node.name);
    }
    let cmd = (!command.is_empty()).then(|| command.join(" "));
    // The cluster's own transport (an SSH session, an interactive Docker exec) over this
    // terminal, in raw mode until the session ends.
    let (io, raw) = crate::terminal::shell_io().map_err(|e| {
        Failure::new(
            exit::FAILURE,
            anyhow::anyhow!("setting up the terminal failed: {e}"),
        )
    })?;
    let status = r.transport.shell(node, cmd.as_deref(), io).await;
    drop(raw);
    r.transport.close().await;
    let status = status.map_err(|e| {
        let code = if e.is_transport() {
            exit::TRANSPORT
        } else {
            exit::FAILURE
        };
        Failure::new(code, anyhow::anyhow!("{}: {e}", node.name))
    })?;
    Ok(match (status.code, &status.signal) {
        (Some(c), _) => c as i32,
        // As a shell reports it: 128 + the signal's number.
        (None, Some(sig)) => signal_number(sig).map_or(exit::COMMAND_FAILED, |n| 128 + n),
        (None, None) => exit::OK,
    })
}

/// `gantry ssh-config` of a cluster whose nodes are reached through their provider's own
/// transport (Docker exec): there is no SSH to configure; say so and how to get a shell.
/// `Ok(None)` for every other cluster.
pub async fn ssh_config_not_applicable(g: &Global, cluster: &str) -> CliResult<Option<i32>> {
    if gantry_core::validate_name(cluster).is_err() {
        return Ok(None);
    }
    let home = Home::resolve(g.home.as_deref())?;
    let store = context::open_store(&home)?;
    let Some(record) =
        gantry_engine::app::load_cluster(store.as_ref(), &g.project, cluster).await?
    else {
        return Ok(None);
    };
    let ssh = context::ssh_config(&home, &g.project)?;
    if context::transport_for_spec(&home, &ssh, &g.project, &record.spec)?.is_none() {
        return Ok(None);
    }
    let kind = record.spec.provider_name();
    Err(Failure::new(
        exit::USAGE,
        anyhow::anyhow!(
            "ssh-config does not apply to cluster {cluster}: its {kind} nodes run no sshd and are \
             reached through the {kind} provider's own API"
        ),
    )
    .hint(format!(
        "use `gantry ssh {cluster}/1` (or `gantry run {cluster} -- CMD`)"
    )))
}

/// `TERM` or `SIGTERM` → 15.
fn signal_number(name: &str) -> Option<i32> {
    use std::str::FromStr;
    let full = if name.starts_with("SIG") {
        name.to_string()
    } else {
        format!("SIG{name}")
    };
    nix::sys::signal::Signal::from_str(&full)
        .ok()
        .map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::node_dir;

    #[test]
    fn get_puts_each_node_in_its_own_directory_and_nowhere_else() {
        let local = Path::new("/tmp/out");
        assert_eq!(
            node_dir(local, "demo-db-1").unwrap(),
            Path::new("/tmp/out/demo-db-1")
        );
        for bad in ["../x", "/abs", "a/b", "..", ".", "", "x/"] {
            assert!(node_dir(local, bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn signal_names_map_to_numbers() {
        assert_eq!(super::signal_number("TERM"), Some(15));
        assert_eq!(super::signal_number("SIGKILL"), Some(9));
        assert_eq!(super::signal_number("NOPE"), None);
    }
}
