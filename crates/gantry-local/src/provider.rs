//! [`LocalProvider`]: the `Provider` implementation over sandbox directories and agents.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gantry_core::tags::{self, TagFilter};
use gantry_provider::{
    ErrorKind, NodeInfo, NodeRequest, NodeState, Provider, ProviderError, SshEndpoint,
};

use crate::LocalError;
use crate::alloc::{FileLock, all_nodes, alloc_lock_path, pick_address, release, reserve};
use crate::meta::{NodeDir, NodeMeta};
use crate::process::{UID_ENV, agent_running, kill_node_processes};

/// How long `stop` lets a node's processes shut down gracefully before killing them.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The same for `delete`: the node's data is discarded anyway, and services that hand work to
/// peers on SIGTERM (an etcd leader transferring leadership) would wait for peers that are
/// being deleted at the same moment.
const DELETE_GRACE: Duration = Duration::from_millis(500);

/// How long an agent may take to start listening.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// `$GANTRY_HOME/local`.
    pub root: PathBuf,
    /// The `gantry` binary to run in agent mode.
    pub agent_exe: PathBuf,
    pub ssh_port: u16,
    /// Login user reported for nodes (the current user).
    pub user: String,
    /// OpenSSH public keys allowed to log in to new nodes (the project key).
    pub authorized_keys: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LocalProvider {
    cfg: LocalConfig,
}

impl LocalProvider {
    pub fn new(cfg: LocalConfig) -> Self {
        Self { cfg }
    }

    fn cluster_dir(&self, project: &str, cluster: &str) -> PathBuf {
        self.cfg.root.join(project).join(cluster)
    }

    fn node_dir_of(&self, node: &NodeInfo) -> PathBuf {
        PathBuf::from(&node.provider_id)
    }
}

fn perr(op: &str, resource: &str, e: LocalError) -> ProviderError {
    let kind = match &e {
        LocalError::AgentTimeout { .. } => ErrorKind::Retryable,
        LocalError::NoAddress { .. } => ErrorKind::Unavailable,
        _ => ErrorKind::Other,
    };
    ProviderError::new("local", op, resource, kind, e.to_string()).with_source(e)
}

fn join_err(op: &str, resource: &str, e: tokio::task::JoinError) -> ProviderError {
    ProviderError::new(
        "local",
        op,
        resource,
        ErrorKind::Other,
        format!("worker failed: {e}"),
    )
}

fn info(dir: &Path, meta: &NodeMeta) -> NodeInfo {
    let state = if agent_running(&NodeDir(dir.to_path_buf()).lock()) {
        NodeState::Running
    } else {
        NodeState::Stopped
    };
    NodeInfo {
        name: meta.name.clone(),
        provider_id: dir.to_string_lossy().into_owned(),
        pool: meta.pool.clone(),
        index: meta.index,
        address: Some(meta.address.into()),
        ssh: Some(SshEndpoint {
            host: meta.address.to_string(),
            port: meta.ssh_port,
            user: meta.user.clone(),
        }),
        state,
        tags: meta.tags.clone(),
        created_at: meta.created_at.clone(),
        host_key: None,
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Removes `.NAME.tmp-*` leftovers of a create interrupted before its rename.
fn remove_partial(cluster_dir: &Path, name: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(cluster_dir) else {
        return;
    };
    for e in entries.flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        let partial = match name {
            Some(n) => f.starts_with(&format!(".{n}.tmp-")),
            None => f.starts_with('.') && f.contains(".tmp-"),
        };
        if partial {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn create_blocking(
    cfg: &LocalConfig,
    cluster_dir: &Path,
    req: &NodeRequest,
) -> Result<(PathBuf, NodeMeta), LocalError> {
    let final_dir = cluster_dir.join(&req.name);
    let _guard = FileLock::acquire(&alloc_lock_path())?;
    if final_dir.join(crate::meta::META_FILE).is_file() {
        return Ok((final_dir.clone(), NodeMeta::read(&final_dir)?));
    }
    remove_partial(cluster_dir, Some(&req.name));
    let used: BTreeSet<_> = all_nodes(&cfg.root)
        .into_iter()
        .map(|(_, m)| m.address)
        .collect();
    let address = pick_address(&cfg.root, &used, cfg.ssh_port, &final_dir)?;
    reserve(address, &final_dir)?;
    let tmp = cluster_dir.join(format!(".{}.tmp-{}", req.name, rand::random::<u32>()));
    let nd = NodeDir(tmp.clone());
    for d in [nd.home(), nd.bin()] {
        std::fs::create_dir_all(&d).map_err(LocalError::io("create", &d))?;
    }
    let meta = NodeMeta {
        name: req.name.clone(),
        uid: uuid::Uuid::new_v4().to_string(),
        project: req.project.clone(),
        cluster: req.cluster.clone(),
        pool: req.pool.clone(),
        index: req.index,
        address,
        ssh_port: cfg.ssh_port,
        user: cfg.user.clone(),
        tags: req.tags.clone(),
        authorized_keys: cfg.authorized_keys.clone(),
        created_at: now_rfc3339(),
    };
    write_hostname_shim(&nd, &meta)?;
    gantry_ssh::KeyPair::load_or_generate(&nd.host_key())?;
    meta.write(&tmp)?;
    // The node appears under its name only once complete; a crash before this leaves a hidden
    // partial directory that the next create or the cluster's deletion removes.
    std::fs::rename(&tmp, &final_dir).map_err(LocalError::io("rename", &final_dir))?;
    Ok((final_dir, meta))
}

/// `hostname` on a node prints the node's name, as on a real machine (`-i`/`-I`: its address).
fn write_hostname_shim(nd: &NodeDir, meta: &NodeMeta) -> Result<(), LocalError> {
    use std::os::unix::fs::PermissionsExt;
    let path = nd.bin().join("hostname");
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in -i|-I|--ip-address*|--all-ip*) echo {addr} ;; *) echo {name} ;; esac\n",
        addr = meta.address,
        name = meta.name
    );
    std::fs::write(&path, script).map_err(LocalError::io("write", &path))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(LocalError::io("chmod", &path))
}

/// Starts the node's agent unless one runs, and waits until it accepts connections.
fn ensure_agent_blocking(cfg: &LocalConfig, dir: &Path, meta: &NodeMeta) -> Result<(), LocalError> {
    let nd = NodeDir(dir.to_path_buf());
    let addr = SocketAddr::from((meta.address, meta.ssh_port));
    let listening = || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
    if agent_running(&nd.lock()) && listening() {
        return Ok(());
    }
    let log_path = nd.log();
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(LocalError::io("open", &log_path))?;
    let log2 = log.try_clone().map_err(LocalError::io("open", &log_path))?;
    let mut cmd = Command::new(&cfg.agent_exe);
    cmd.arg("agent")
        .arg("--node-dir")
        .arg(dir)
        .current_dir(dir)
        .env(UID_ENV, &meta.uid)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: setsid is async-signal-safe; it detaches the agent from our terminal and process
    // group so Ctrl-C in the CLI does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(LocalError::io("spawn agent", &cfg.agent_exe))?;
    let start = Instant::now();
    loop {
        if listening() {
            // Reap it in the background so an agent that dies later is not a zombie of ours.
            std::thread::spawn(move || child.wait());
            return Ok(());
        }
        if let Ok(Some(_)) = child.try_wait() {
            // Lost a race against another agent for this node: fine if that one listens.
            if agent_running(&nd.lock()) {
                if listening() {
                    return Ok(());
                }
            } else {
                return Err(LocalError::AgentTimeout {
                    node: meta.name.clone(),
                    address: addr.to_string(),
                    secs: start.elapsed().as_secs(),
                    log: log_path,
                });
            }
        }
        if start.elapsed() > AGENT_START_TIMEOUT {
            let _ = child.kill();
            return Err(LocalError::AgentTimeout {
                node: meta.name.clone(),
                address: addr.to_string(),
                secs: AGENT_START_TIMEOUT.as_secs(),
                log: log_path,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn list(&self, filter: &TagFilter) -> gantry_provider::Result<Vec<NodeInfo>> {
        let root = match filter.equals.get(tags::PROJECT) {
            Some(p) => self.cfg.root.join(p),
            None => self.cfg.root.clone(),
        };
        let project_scoped = filter.equals.contains_key(tags::PROJECT);
        let filter = filter.clone();
        tokio::task::spawn_blocking(move || {
            let nodes = if project_scoped {
                // all_nodes expects <root>/<project>/<cluster>/<node>; scan one project.
                let parent = root.parent().map(Path::to_path_buf).unwrap_or_default();
                all_nodes(&parent)
                    .into_iter()
                    .filter(|(d, _)| d.starts_with(&root))
                    .collect()
            } else {
                all_nodes(&root)
            };
            let mut out: Vec<NodeInfo> = nodes
                .iter()
                .filter(|(_, m)| filter.matches(&m.tags))
                .map(|(d, m)| info(d, m))
                .collect();
            out.sort_by(|a, b| (&a.pool, a.index, &a.name).cmp(&(&b.pool, b.index, &b.name)));
            out
        })
        .await
        .map_err(|e| join_err("list", "nodes", e))
    }

    async fn create_node(&self, req: &NodeRequest) -> gantry_provider::Result<NodeInfo> {
        let cfg = self.cfg.clone();
        let cluster_dir = self.cluster_dir(&req.project, &req.cluster);
        let req = req.clone();
        let name = req.name.clone();
        tokio::task::spawn_blocking(move || {
            let (dir, meta) = create_blocking(&cfg, &cluster_dir, &req)?;
            ensure_agent_blocking(&cfg, &dir, &meta)?;
            Ok::<_, LocalError>(info(&dir, &meta))
        })
        .await
        .map_err(|e| join_err("create", &name, e))?
        .map_err(|e| perr("create", &name, e))
    }

    async fn start_node(&self, node: &NodeInfo) -> gantry_provider::Result<NodeInfo> {
        let cfg = self.cfg.clone();
        let dir = self.node_dir_of(node);
        let name = node.name.clone();
        tokio::task::spawn_blocking(move || {
            let meta = NodeMeta::read(&dir)?;
            ensure_agent_blocking(&cfg, &dir, &meta)?;
            Ok::<_, LocalError>(info(&dir, &meta))
        })
        .await
        .map_err(|e| join_err("start", &name, e))?
        .map_err(|e| perr("start", &name, e))
    }

    async fn stop_node(&self, node: &NodeInfo) -> gantry_provider::Result<NodeInfo> {
        let dir = self.node_dir_of(node);
        let name = node.name.clone();
        tokio::task::spawn_blocking(move || {
            let meta = NodeMeta::read(&dir)?;
            kill_node_processes(&meta.uid, STOP_GRACE);
            let _ = std::fs::remove_file(dir.join("agent.ready"));
            Ok::<_, LocalError>(info(&dir, &meta))
        })
        .await
        .map_err(|e| join_err("stop", &name, e))?
        .map_err(|e| perr("stop", &name, e))
    }

    async fn delete_node(&self, node: &NodeInfo) -> gantry_provider::Result<()> {
        let dir = self.node_dir_of(node);
        let name = node.name.clone();
        let root = self.cfg.root.clone();
        tokio::task::spawn_blocking(move || {
            if !dir.starts_with(&root) {
                return Err(LocalError::Other(format!(
                    "refusing to delete {}: not below {}",
                    dir.display(),
                    root.display()
                )));
            }
            let meta = match NodeMeta::read(&dir) {
                Ok(meta) => {
                    kill_node_processes(&meta.uid, DELETE_GRACE);
                    Some(meta)
                }
                Err(_) if !dir.exists() => return Ok(()),
                Err(_) => None,
            };
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(LocalError::io("remove", &dir))?;
            }
            if let Some(meta) = meta {
                release(meta.address, &dir);
            }
            Ok(())
        })
        .await
        .map_err(|e| join_err("delete", &name, e))?
        .map_err(|e| perr("delete", &name, e))
    }

    async fn set_tags(
        &self,
        node: &NodeInfo,
        tags: &gantry_core::Tags,
    ) -> gantry_provider::Result<NodeInfo> {
        let dir = self.node_dir_of(node);
        let name = node.name.clone();
        let root = self.cfg.root.clone();
        let tags = tags.clone();
        tokio::task::spawn_blocking(move || {
            if !dir.starts_with(&root) {
                return Err(LocalError::Other(format!(
                    "refusing to change {}: not below {}",
                    dir.display(),
                    root.display()
                )));
            }
            let mut meta = NodeMeta::read(&dir)?;
            if meta.name != name {
                return Err(LocalError::Other(format!(
                    "{} holds node {}, not {name}",
                    dir.display(),
                    meta.name
                )));
            }
            meta.tags
                .extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            // Atomic (temporary file and rename): a concurrent `list` sees old or new tags.
            meta.write(&dir)?;
            Ok(info(&dir, &meta))
        })
        .await
        .map_err(|e| join_err("set_tags", &node.name, e))?
        .map_err(|e| perr("set_tags", &node.name, e))
    }

    async fn delete_cluster_resources(&self, filter: &TagFilter) -> gantry_provider::Result<()> {
        let (Some(project), Some(cluster)) = (
            filter.equals.get(tags::PROJECT),
            filter.equals.get(tags::CLUSTER),
        ) else {
            return Ok(());
        };
        let dir = self.cluster_dir(project, cluster);
        let project_dir = self.cfg.root.join(project);
        tokio::task::spawn_blocking(move || {
            remove_partial(&dir, None);
            // Only empty directories go: a node still here means a delete failed, and it stays
            // visible to list and gc.
            let _ = std::fs::remove_dir(&dir);
            let _ = std::fs::remove_dir(&project_dir);
        })
        .await
        .map_err(|e| join_err("delete", "cluster directory", e))
    }

    fn concurrency(&self) -> usize {
        32
    }

    fn shares_host_filesystem(&self) -> bool {
        true
    }

    fn boot_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}
