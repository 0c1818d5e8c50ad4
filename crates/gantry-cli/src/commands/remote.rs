//! Commands that act on nodes through their transport: `run`, `put`, `get`, `ssh`.

use std::io::Write;
use std::path::{Path, PathBuf};

use gantry_engine::app::RemoteTarget;
use gantry_engine::transport::{ExitStatus, NodeTarget, OutputSink, TransportError};
use serde_json::json;

use super::parse_target;
use crate::cli::{Global, OutputFormat};
use crate::context::{self, Home};
use crate::exit::{self, CliResult, Failure};
use crate::output;

/// The nodes a target names and how they are reached ([`gantry_engine::app::App::remote`]).
async fn resolve(g: &Global, target: &str) -> CliResult<RemoteTarget> {
    let target = parse_target(target)?;
    let home = Home::from_global(g)?;
    Ok(crate::app::app(g, &home).await?.remote(&target).await?)
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

pub async fn run(g: &Global, target: &str, concurrency: usize, command: &[String]) -> CliResult {
    let r = resolve(g, target).await?;
    let capture = g.output == OutputFormat::Json;
    let prefix = r.nodes.len() > 1;
    let results = r
        .run(
            &command.join(" "),
            concurrency,
            move |node| LineSink::new(&node.name, prefix, capture),
            LineSink::finish,
        )
        .await?;
    let (mut transport_errors, mut other_errors, mut failed) = (0, 0, Vec::new());
    let mut items = Vec::new();
    for (node, res) in r.nodes.iter().zip(&results) {
        match res {
            Ok((s, LineSink { out, err, .. })) => {
                let (out, err) = (&out[..], &err[..]);
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
    let results: Vec<_> = r
        .put(local, remote, concurrency)
        .await?
        .into_iter()
        .map(|res| res.map(|b| (b, remote.to_string())))
        .collect();
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
    let by_node: std::collections::HashMap<String, PathBuf> =
        r.nodes.iter().map(|n| n.name.clone()).zip(dests).collect();
    let shown: Vec<String> = r
        .nodes
        .iter()
        .map(|n| by_node[&n.name].display().to_string())
        .collect();
    let results: Vec<_> = r
        .get(remote, move |n| by_node[&n.name].clone(), concurrency)
        .await?
        .into_iter()
        .zip(shown)
        .map(|(res, path)| res.map(|b| (b, path)))
        .collect();
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
    let home = Home::from_global(g)?;
    let store = context::open_store(&home).await?;
    let Some(record) =
        gantry_engine::app::load_cluster(store.as_ref(), &g.project, cluster).await?
    else {
        return Ok(None);
    };
    let ssh = context::ssh_config(&home, &store, &g.project).await?;
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
