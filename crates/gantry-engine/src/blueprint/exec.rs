//! Running blueprints: step instances become DAG steps executed over the cluster's transport.
//!
//! [`apply`] is called by `up` once every node is ready. It fetches artifacts, resolves them
//! on the nodes, expands the blueprints, drops the instances whose input hash is already
//! recorded done for this cluster, and runs the rest on the dispatcher through the transport
//! the caller chose ([`Apply::transport`]: Docker exec for docker clusters; SSH with one session
//! per node otherwise). Checkpoints use the step id `bp/B/S@NODE#HASH12` and the constant spec hash
//! `blueprints/<cluster uid>`, so the store's `done_steps` answers "which instances are
//! current". A failure names the node, the step, the exit code and the last 20 lines of output;
//! dependants are skipped by the dispatcher.
//!
//! Each node also gets `~/.gantry/blueprints/boot.json`: its `boot: true` instances, rendered,
//! which `gantry start` runs again ([`boot_step`]) because a restarted machine (or a local node,
//! where nothing restarts services) must bring its software back.
//!
//! Secrets: the values of `secret` params come from the cluster's secret store; the outputs are
//! rendered and kept there too. Every message that leaves a step (errors with the last lines
//! of output, retry events) is masked. Scripts and written files reach the node on the
//! standard input of `cat`, never on a command line, and are created under `umask 077`
//! (scripts 0700, boot files 0600), since rendered scripts may hold secrets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_core::ClusterSpec;
use gantry_core::event::Event;
use gantry_core::secret::Masker;
use gantry_core::status::Level;
use gantry_provider::NodeInfo;
use gantry_ssh::ClientConfig;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::expand::{self, Instance, NodeView, Rendered};
pub use super::remote::{Remote, shq, tail};
use super::render::{ArtifactPaths, ClusterView};
use super::{Apply, artifacts, secrets};
use crate::EngineError;
use crate::dag::{self, Checkpoints, Step, StepError};
use crate::events::Events;
use crate::secrets::SecretStore;
use crate::transport::{NodeTarget, SshTransport, Transport, TransportError};

/// Lines of output a failure shows.
const TAIL_LINES: usize = 20;
/// Where a node keeps its boot steps.
const BOOT_FILE: &str = ".gantry/blueprints/boot.json";

/// The environment every script sees. The node's address is `GANTRY_NODE_ADDRESS`, the one name
/// on every provider (local nodes' and Docker containers' own environment use it too);
/// `GANTRY_ADDRESS`, its name before, stays for blueprints written against it.
fn env_prefix(cluster: &str, node: &NodeView, blueprint: &str, step: &str) -> String {
    [
        ("GANTRY_CLUSTER", cluster),
        ("GANTRY_NODE", &node.name),
        ("GANTRY_POOL", &node.pool),
        ("GANTRY_INDEX", &node.index.to_string()),
        ("GANTRY_NODE_ADDRESS", &node.address),
        ("GANTRY_ADDRESS", &node.address),
        ("GANTRY_BLUEPRINT", blueprint),
        ("GANTRY_STEP", step),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", shq(v)))
    .collect::<Vec<_>>()
    .join(" ")
}

/// Why an attempt failed.
struct Failed {
    transport: bool,
    message: String,
}

impl From<TransportError> for Failed {
    fn from(e: TransportError) -> Self {
        Failed {
            transport: e.is_transport(),
            message: e.to_string(),
        }
    }
}

/// Writes `content` to `dest` (relative to the home) atomically, creating parent directories.
async fn write_file(
    remote: &Remote,
    dest: &str,
    content: &[u8],
    mode: Option<u32>,
) -> Result<(), Failed> {
    let tmp = format!("{dest}.gantry-tmp");
    // With a mode, the file is created private (umask 077, after a stale temp file is removed)
    // and only then given its mode: content that must stay private never sits in a file others
    // can read, not even for a moment. Without one it gets the node's usual umask.
    let write = match mode {
        Some(m) => format!(
            "rm -f {t} && (umask 077 && cat > {t}) && chmod {m:o} {t}",
            t = shq(&tmp)
        ),
        None => format!("cat > {}", shq(&tmp)),
    };
    let cmd = format!(
        "mkdir -p \"$(dirname -- {d})\" && {write} && mv -f {t} {d}",
        d = shq(dest),
        t = shq(&tmp)
    );
    let (st, out) = remote.sh(&cmd, Some(content)).await?;
    if !st.success() {
        return Err(Failed {
            transport: false,
            message: format!("writing {dest} failed ({st})\n{}", tail(&out, TAIL_LINES)),
        });
    }
    Ok(())
}

/// Runs one rendered action once.
async fn run_action(
    remote: &Remote,
    env: &str,
    inst: &Instance,
    cancel: &CancellationToken,
) -> Result<(), Failed> {
    let dir = format!(".gantry/blueprints/{}", inst.blueprint);
    match &inst.action {
        Rendered::Run { script } => {
            let file = format!("{dir}/{}.sh", inst.step);
            // stderr into stdout at the source: one pipe keeps the order in which the script
            // wrote its lines, so the tail of a failure ends with its last words (an error on
            // stderr after output on stdout could otherwise arrive first and be cut off).
            let run = if script.starts_with("#!") {
                format!("exec env {env} ./{f} </dev/null 2>&1", f = shq(&file))
            } else {
                format!("exec env {env} sh {} </dev/null 2>&1", shq(&file))
            };
            // The script may hold secrets: written 0700 in a 0700 directory (a new file under
            // umask 077; an old one, perhaps readable, is removed first), on cat's stdin.
            let cmd = format!(
                "(umask 077 && mkdir -p {d} && chmod 700 .gantry .gantry/blueprints {d} && rm -f {f} && cat > {f}) && chmod 700 {f} && {run}",
                d = shq(&dir),
                f = shq(&file)
            );
            let (st, out) = remote.sh(&cmd, Some(script.as_bytes())).await?;
            if !st.success() {
                return Err(Failed {
                    transport: false,
                    message: format!(
                        "{st}; last {TAIL_LINES} lines of output:\n{}",
                        tail(&out, TAIL_LINES)
                    ),
                });
            }
            Ok(())
        }
        Rendered::Write {
            dest,
            content,
            mode,
        } => write_file(remote, dest, content, *mode).await,
        Rendered::Copy { src, dest, mode } => {
            let tmp = format!("{dest}.gantry-tmp");
            let chmod = mode
                .map(|m| format!(" && chmod {m:o} {}", shq(&tmp)))
                .unwrap_or_default();
            let cmd = format!(
                "mkdir -p \"$(dirname -- {d})\" && cp -f -- {s} {t}{chmod} && mv -f {t} {d}",
                d = shq(dest),
                s = shq(src),
                t = shq(&tmp)
            );
            let (st, out) = remote.sh(&cmd, None).await?;
            if !st.success() {
                return Err(Failed {
                    transport: false,
                    message: format!("copying {src} to {dest} failed ({st})\n{}", tail(&out, 20)),
                });
            }
            Ok(())
        }
        Rendered::Tcp {
            address,
            timeout_secs,
        } => {
            let addr = address.clone();
            poll(*timeout_secs, cancel, &format!("tcp {address}"), || {
                let addr = addr.clone();
                async move {
                    match tokio::time::timeout(
                        Duration::from_secs(2),
                        tokio::net::TcpStream::connect(addr.as_str()),
                    )
                    .await
                    {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("connect timed out".into()),
                    }
                }
            })
            .await
        }
        Rendered::Http {
            url,
            status,
            timeout_secs,
        } => {
            let (url2, want) = (url.clone(), *status);
            poll(*timeout_secs, cancel, &format!("http {url}"), || {
                let url = url2.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        let agent = ureq::Agent::config_builder()
                            .http_status_as_error(false)
                            .timeout_global(Some(Duration::from_secs(5)))
                            .build()
                            .new_agent();
                        match agent.get(&url).call() {
                            Ok(r) if r.status().as_u16() == want => Ok(()),
                            Ok(r) => Err(format!("status {}", r.status().as_u16())),
                            Err(e) => Err(e.to_string()),
                        }
                    })
                    .await
                    .map_err(|e| e.to_string())?
                }
            })
            .await
        }
        Rendered::Command {
            command,
            timeout_secs,
        } => {
            let cmd = format!("exec env {env} sh -c {} </dev/null", shq(command));
            let r = remote.clone();
            poll(*timeout_secs, cancel, &format!("`{command}`"), || {
                let (r, cmd) = (r.clone(), cmd.clone());
                async move {
                    match r.sh(&cmd, None).await {
                        Ok((st, _)) if st.success() => Ok(()),
                        Ok((st, out)) => {
                            Err(format!("{st}; last output:\n{}", tail(&out, TAIL_LINES)))
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
            .await
        }
    }
}

/// Polls `check` every 250 ms until it succeeds or `timeout_secs` pass.
async fn poll<F, Fut>(
    timeout_secs: u64,
    cancel: &CancellationToken,
    what: &str,
    check: F,
) -> Result<(), Failed>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        let last = match check().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline || cancel.is_cancelled() {
            return Err(Failed {
                transport: false,
                message: format!("waited {timeout_secs} s for {what}; last attempt: {last}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs an instance with its timeout and retries. Command failures are retried here
/// (`retries`); transport failures are returned retryable for the dispatcher.
async fn run_instance(
    remote: &Remote,
    env: &str,
    inst: &Instance,
    events: &Events,
    cancel: &CancellationToken,
    masker: &Masker,
) -> Result<(), StepError> {
    let attempts = inst.retries + 1;
    let mut attempt = 1;
    loop {
        let limit = Duration::from_secs(inst.timeout_secs.max(1));
        let r = match tokio::time::timeout(limit, run_action(remote, env, inst, cancel)).await {
            Ok(r) => r,
            Err(_) => Err(Failed {
                transport: false,
                message: format!("timed out after {} s", inst.timeout_secs),
            }),
        };
        let e = match r {
            Ok(()) => return Ok(()),
            Err(e) if e.transport => {
                return Err(StepError::retryable(format!(
                    "step {} of blueprint {} on node {}: {}",
                    inst.step,
                    inst.blueprint,
                    inst.node,
                    masker.mask(&e.message)
                )));
            }
            Err(e) => Failed {
                transport: false,
                // Output, commands and URLs are masked before they become an error, an event
                // or a run record.
                message: masker.masked(&e.message),
            },
        };
        if attempt >= attempts || cancel.is_cancelled() {
            return Err(StepError::fatal(format!(
                "step {} of blueprint {} failed on node {}{}: {}",
                inst.step,
                inst.blueprint,
                inst.node,
                if attempts > 1 {
                    format!(" after {attempts} attempts")
                } else {
                    String::new()
                },
                e.message
            )));
        }
        let delay = Duration::from_millis(500 * u64::from(attempt));
        events.emit(Event::StepRetrying {
            step: inst.id.clone(),
            node: Some(inst.node.clone()),
            attempt,
            delay_ms: delay.as_millis() as u64,
            error: e.message.lines().next().unwrap_or_default().to_string(),
        });
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// The running nodes of the spec's pools, in spec order (pool, then index), that have an
/// address to reach them by (an SSH endpoint, or an address on the cluster's network).
pub fn ordered_nodes(spec: &ClusterSpec, nodes: &[NodeInfo]) -> Vec<NodeInfo> {
    let pool_pos = |p: &str| {
        spec.pools
            .iter()
            .position(|x| x.name == p)
            .unwrap_or(usize::MAX)
    };
    let mut v: Vec<NodeInfo> = nodes
        .iter()
        .filter(|n| {
            (n.ssh.is_some() || n.address.is_some())
                && n.state == gantry_provider::NodeState::Running
        })
        .cloned()
        .collect();
    v.sort_by_key(|n| (pool_pos(&n.pool), n.pool.clone(), n.index));
    v
}

pub fn node_view(n: &NodeInfo) -> NodeView {
    NodeView {
        name: n.name.clone(),
        pool: n.pool.clone(),
        index: n.index,
        address: n
            .address
            .map(|a| a.to_string())
            .or_else(|| n.ssh.as_ref().map(|s| s.host.clone()))
            .unwrap_or_default(),
        created_at: n.created_at.clone(),
    }
}

/// The checkpoint "spec hash" of a cluster's blueprint instances.
pub fn checkpoint_scope(cluster_uid: &str) -> String {
    format!("blueprints/{cluster_uid}")
}

/// `bp/B/S@N` keys with a done checkpoint (any hash), and the full done ids.
pub async fn done(
    store: &Arc<dyn gantry_state::StateStore>,
    project: &str,
    cluster: &str,
    uid: &str,
) -> Result<(BTreeSet<String>, BTreeSet<String>), EngineError> {
    let ids = store
        .done_steps(project, cluster, &checkpoint_scope(uid))
        .await?;
    let keys = ids
        .iter()
        .filter_map(|id| expand::split_id(id).map(|(k, _)| k.to_string()))
        .collect();
    Ok((keys, ids))
}

/// What [`apply`] needs from the operation.
pub struct ApplyCtx<'a> {
    pub project: &'a str,
    pub cluster: &'a str,
    pub cluster_uid: &'a str,
    pub store: Arc<dyn gantry_state::StateStore>,
    /// Where the values of secret params and the rendered outputs are kept.
    pub secrets: Arc<dyn SecretStore>,
    pub ssh: ClientConfig,
    pub shares_fs: bool,
    pub concurrency: usize,
    pub run_id: &'a str,
    pub events: &'a Events,
    pub cancel: &'a CancellationToken,
}

/// The boot file of one node.
#[derive(Debug, Serialize, Deserialize)]
struct BootFile {
    cluster: String,
    node: NodeView,
    instances: Vec<Instance>,
}

/// Applies the blueprints to the nodes; `Ok` when every instance is done.
pub async fn apply(
    cx: &ApplyCtx<'_>,
    spec: &ClusterSpec,
    nodes: &[NodeInfo],
    opts: &Apply,
) -> Result<(), EngineError> {
    if opts.blueprints.is_empty() {
        // Outputs of blueprints the spec no longer applies are gone too (the store is only
        // touched when it has some).
        if cx
            .secrets
            .outputs(cx.project, cx.cluster_uid)
            .await
            .is_ok_and(|o| !o.is_empty())
        {
            cx.secrets
                .put_outputs(cx.project, cx.cluster_uid, &Default::default())
                .await?;
        }
        return Ok(());
    }
    let transport: Arc<dyn Transport> = match &opts.transport {
        Some(t) => t.clone(),
        None => Arc::new(SshTransport::new(cx.ssh.clone())),
    };
    let infos: Vec<NodeInfo> = ordered_nodes(spec, nodes)
        .into_iter()
        .filter(|n| transport.target(n).is_some())
        .collect();
    let views: Vec<NodeView> = infos.iter().map(node_view).collect();
    let remotes: BTreeMap<String, Remote> = infos
        .iter()
        .filter_map(|n| {
            transport.target(n).map(|target| {
                (
                    n.name.clone(),
                    Remote {
                        transport: transport.clone(),
                        target,
                    },
                )
            })
        })
        .collect();
    let result = apply_inner(cx, &views, &remotes, opts).await;
    transport.close().await;
    result
}

async fn apply_inner(
    cx: &ApplyCtx<'_>,
    views: &[NodeView],
    remotes: &BTreeMap<String, Remote>,
    opts: &Apply,
) -> Result<(), EngineError> {
    // 1. Downloads (once, into the cache).
    let mut downloads: BTreeMap<String, ArtifactPaths> = BTreeMap::new();
    for p in &opts.blueprints {
        let bp = &p.loaded.blueprint;
        let mut paths = ArtifactPaths::new();
        for a in &bp.artifacts {
            if let gantry_core::blueprint::ArtifactSource::Url { url, sha256 } = &a.source {
                let (cache, bpn, an, url2, sha) = (
                    opts.cache_dir.clone(),
                    bp.name.clone(),
                    a.name.clone(),
                    url.clone(),
                    sha256.clone(),
                );
                let (path, fresh) = tokio::task::spawn_blocking(move || {
                    artifacts::fetch(&cache, &bpn, &an, &url2, &sha)
                })
                .await
                .map_err(|e| EngineError::Artifact {
                    blueprint: bp.name.clone(),
                    artifact: a.name.clone(),
                    message: e.to_string(),
                    source: Some(Box::new(e)),
                })??;
                if fresh {
                    cx.events.message(
                        Level::Info,
                        format!(
                            "blueprint {}: downloaded artifact {} from {url}",
                            bp.name, a.name
                        ),
                    );
                }
                paths.insert(a.name.clone(), path.display().to_string());
            }
        }
        downloads.insert(bp.name.clone(), paths);
    }

    // 2. Artifacts on the nodes (once when they share this machine's filesystem).
    let mut per_bp: BTreeMap<String, BTreeMap<String, ArtifactPaths>> = BTreeMap::new();
    for p in &opts.blueprints {
        let bp = &p.loaded.blueprint;
        let dl = downloads.get(&bp.name).cloned().unwrap_or_default();
        let mut by_node = BTreeMap::new();
        if bp.artifacts.is_empty() {
            per_bp.insert(bp.name.clone(), by_node);
            continue;
        }
        if cx.shares_fs {
            if let Some(first) = views.first().and_then(|v| remotes.get(&v.name)) {
                let paths =
                    artifacts::resolve_on_node(first, bp, &dl, true, opts.allow_packages).await?;
                for v in views {
                    by_node.insert(v.name.clone(), paths.clone());
                }
            }
        } else {
            let futs = views.iter().filter_map(|v| remotes.get(&v.name)).map(|r| {
                let dl = dl.clone();
                async move {
                    let paths =
                        artifacts::resolve_on_node(r, bp, &dl, false, opts.allow_packages).await?;
                    Ok::<_, EngineError>((r.target.name.clone(), paths))
                }
            });
            for r in futures::future::join_all(futs).await {
                let (n, paths) = r?;
                by_node.insert(n, paths);
            }
        }
        per_bp.insert(bp.name.clone(), by_node);
    }

    // 3. Expand, with members from earlier runs.
    let (done_keys, done_ids) = done(&cx.store, cx.project, cx.cluster, cx.cluster_uid).await?;
    let cluster = ClusterView {
        name: cx.cluster.into(),
        project: cx.project.into(),
        uid: cx.cluster_uid.into(),
    };
    let secret_values = secrets::resolve(
        cx.secrets.as_ref(),
        cx.project,
        cx.cluster_uid,
        &opts.blueprints,
        true,
    )
    .await?;
    let masker = secrets::masker(&secret_values);
    let (instances, barriers) = expand::expand_all(
        &opts.blueprints,
        &|p| {
            (
                expand::members(&p.loaded.blueprint, views, &done_keys),
                per_bp.get(p.name()).cloned().unwrap_or_default(),
            )
        },
        &cluster,
        views,
        &secret_values,
    )?;
    // Outputs describe the cluster, not the run's success: kept before the steps run.
    let outputs = expand::render_all_outputs(&opts.blueprints, &cluster, views, &secret_values)?;
    cx.secrets
        .put_outputs(cx.project, cx.cluster_uid, &outputs)
        .await?;
    let todo: Vec<&Instance> = instances
        .iter()
        .filter(|i| !done_ids.contains(&i.id))
        .collect();
    cx.events.message(
        Level::Info,
        format!(
            "blueprints: {} step instance(s) to run, {} up to date",
            todo.len(),
            instances.len() - todo.len()
        ),
    );

    // 4. Run.
    let by_name: BTreeMap<&str, &NodeView> = views.iter().map(|v| (v.name.as_str(), v)).collect();
    let mut steps = Vec::new();
    for inst in &todo {
        let Some(remote) = remotes.get(&inst.node).cloned() else {
            continue;
        };
        let node = by_name[inst.node.as_str()];
        let env = env_prefix(cx.cluster, node, &inst.blueprint, &inst.step);
        let (inst2, events, cancel, masker) = (
            Arc::new((*inst).clone()),
            cx.events.clone(),
            cx.cancel.clone(),
            masker.clone(),
        );
        steps.push(Step::new(
            inst.id.clone(),
            Some(inst.node.clone()),
            inst.after.clone(),
            move || {
                let (remote, env, inst, events, cancel, masker) = (
                    remote.clone(),
                    env.clone(),
                    inst2.clone(),
                    events.clone(),
                    cancel.clone(),
                    masker.clone(),
                );
                async move { run_instance(&remote, &env, &inst, &events, &cancel, &masker).await }
            },
        ));
    }
    if !todo.is_empty() {
        for (id, after) in barriers {
            steps.push(Step::new(id, None, after, || async { Ok(()) }));
        }
    }
    let total = steps.len();
    if total > 0 {
        // The run announced only the machine steps; progress counts these too.
        cx.events.emit(Event::StepsAdded { steps: total });
    }
    let out = dag::execute(
        steps,
        &dag::Options {
            concurrency: cx.concurrency,
            max_attempts: 3,
            ..Default::default()
        },
        cx.events,
        cx.cancel,
        Some(Checkpoints {
            store: cx.store.clone(),
            run_id: cx.run_id.into(),
            spec_hash: Some(checkpoint_scope(cx.cluster_uid)),
        }),
    )
    .await;

    // 5. Boot files, for nodes whose boot instances are all done.
    let not_done: BTreeSet<&String> = out
        .failed
        .iter()
        .map(|(id, _)| id)
        .chain(&out.skipped)
        .chain(&out.not_started)
        .collect();
    for v in views {
        let mine: Vec<Instance> = instances
            .iter()
            .filter(|i| i.node == v.name && i.boot)
            .cloned()
            .collect();
        if mine.iter().any(|i| not_done.contains(&i.id)) {
            continue;
        }
        let Some(remote) = remotes.get(&v.name) else {
            continue;
        };
        let file = BootFile {
            cluster: cx.cluster.into(),
            node: v.clone(),
            instances: mine,
        };
        let json = serde_json::to_vec(&file).expect("boot file serialises");
        if let Err(e) = write_file(remote, BOOT_FILE, &json, Some(0o600)).await {
            cx.events.message(
                Level::Warn,
                format!(
                    "could not write the boot steps of {}: {}",
                    v.name,
                    masker.mask(&e.message)
                ),
            );
        }
    }

    if out.interrupted {
        return Err(EngineError::Interrupted);
    }
    if let Some((_, e)) = out.failed.first() {
        let skipped = if out.skipped.is_empty() {
            String::new()
        } else {
            format!(" ({} dependant step(s) skipped)", out.skipped.len())
        };
        return Err(EngineError::StepsFailed {
            failed: out.failed.len(),
            total,
            first: format!("{}{skipped}", e.message),
            // The message is masked; the step's own error stays out (see `StepError`).
            source: None,
        });
    }
    Ok(())
}

/// The step that re-runs a node's `boot: true` blueprint steps (after `gantry start`) through
/// `transport` (one shared by all nodes of the run: SSH, or Docker exec), after `after`.
/// `masker` knows the cluster's secrets (boot steps may print them).
pub fn boot_step(
    transport: Arc<dyn Transport>,
    target: NodeTarget,
    after: Vec<String>,
    events: Events,
    cancel: CancellationToken,
    masker: Masker,
) -> Step {
    let node = target.name.clone();
    Step::new(format!("boot:{node}"), Some(node), after, move || {
        let remote = Remote {
            transport: transport.clone(),
            target: target.clone(),
        };
        let (events, cancel, masker) = (events.clone(), cancel.clone(), masker.clone());
        async move { run_boot(&remote, &events, &cancel, &masker).await }
    })
}

async fn run_boot(
    remote: &Remote,
    events: &Events,
    cancel: &CancellationToken,
    masker: &Masker,
) -> Result<(), StepError> {
    let (st, out) = remote
        .sh(&format!("cat {BOOT_FILE} 2>/dev/null || true"), None)
        .await
        .map_err(|e| StepError::retryable(e.to_string()))?;
    if !st.success() || out.trim().is_empty() {
        return Ok(());
    }
    let file: BootFile = serde_json::from_str(&out).map_err(|e| {
        StepError::fatal(format!(
            "{BOOT_FILE} on {} is unreadable ({e}); run `gantry up` to rewrite it",
            remote.target.name
        ))
    })?;
    for inst in &file.instances {
        let env = env_prefix(&file.cluster, &file.node, &inst.blueprint, &inst.step);
        run_instance(remote, &env, inst, events, cancel, masker).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_see_the_node_address_as_gantry_node_address_and_its_old_name() {
        let node = NodeView {
            name: "demo-db-2".into(),
            pool: "db".into(),
            index: 2,
            address: "10.0.0.7".into(),
            created_at: String::new(),
        };
        let env = env_prefix("demo", &node, "etcd", "start");
        for want in [
            "GANTRY_NODE_ADDRESS='10.0.0.7'",
            "GANTRY_ADDRESS='10.0.0.7'",
            "GANTRY_NODE='demo-db-2'",
            "GANTRY_INDEX='2'",
        ] {
            assert!(env.split(' ').any(|kv| kv == want), "{want} not in {env}");
        }
    }
}
