//! [`LocalProvider`]: the `Provider` implementation over sandbox directories and agents.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gantry_core::tags::{self, TagFilter};
use gantry_provider::{
    ErrorKind, NodeInfo, NodeRequest, NodeState, Provider, ProviderError, SshEndpoint,
};

use crate::LocalError;
use crate::alloc::{
    FileLock, MachineDir, UsedAddresses, nodes_below, release, release_all_of, reserve,
};
use crate::meta::{NodeDir, NodeMeta};
use crate::process::{UID_ENV, agent_running, agent_uids_of, kill_node_processes, ready_agent};
use crate::spawn::AgentChild;

/// How long `stop` lets a node's processes shut down gracefully before killing them.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The same for `delete`: the node's data is discarded anyway, and services that hand work to
/// peers on SIGTERM (an etcd leader transferring leadership) would wait for peers that are
/// being deleted at the same moment.
const DELETE_GRACE: Duration = Duration::from_millis(500);

/// How long an agent may take to start listening.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(20);

/// How many addresses a create tries when something else takes the picked one before the
/// agent binds it.
const ADDRESS_ATTEMPTS: usize = 5;

/// Exit status of `gantry agent` when the node's address is taken (see [`crate::run_agent`]).
pub const AGENT_EXIT_ADDRESS_IN_USE: i32 = 10;

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
    /// The allocation directory shared by every gantry home of this user on this machine:
    /// [`crate::default_machine_dir`] (tests pass their own).
    pub machine_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct LocalProvider {
    cfg: LocalConfig,
    /// Tightens the modes of what earlier versions left open, once per provider.
    secured: Arc<Once>,
    /// This home's node addresses, read once per provider (see [`UsedAddresses`]).
    used: UsedAddresses,
}

impl LocalProvider {
    pub fn new(cfg: LocalConfig) -> Self {
        Self {
            cfg,
            secured: Arc::new(Once::new()),
            used: UsedAddresses::default(),
        }
    }

    /// Makes `root` and every directory gantry made below it private (0700), once: homes made
    /// by versions that used 0755 get fixed the first time a command touches them. Blocking.
    fn secure(&self) {
        self.secured.call_once(|| secure_tree(&self.cfg.root));
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
        // As before the agent reported readiness itself: an agent that died at start is tried
        // again by the caller's retries.
        LocalError::AgentTimeout { .. } | LocalError::AgentFailed { .. } => ErrorKind::Retryable,
        LocalError::NoAddress { .. } => ErrorKind::Unavailable,
        LocalError::UnsafeDir { .. } => ErrorKind::InvalidInput,
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
        host_key: meta.host_public_key.clone().or_else(|| {
            // Nodes made before node.json recorded it: the key's public half beside it.
            std::fs::read_to_string(NodeDir(dir.to_path_buf()).host_key().with_extension("pub"))
                .ok()
                .map(|l| l.trim().to_string())
        }),
    }
}

/// Makes `dir` private to this user (0700) if it is this user's and open to others.
fn tighten(dir: &Path) -> Result<(), LocalError> {
    let meta = std::fs::metadata(dir).map_err(LocalError::io("inspect", dir))?;
    if meta.is_dir() && meta.uid() == nix::unistd::getuid().as_raw() && meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(LocalError::io("chmod", dir))?;
    }
    Ok(())
}

/// Tightens `root` and the project, cluster and node directories below it (with each node's
/// `home/` and `bin/`). Best effort: what cannot be changed is logged and left.
fn secure_tree(root: &Path) {
    fn subdirs(d: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }
    let mut dirs = vec![root.to_path_buf()];
    for project in subdirs(root) {
        for cluster in subdirs(&project) {
            for node in subdirs(&cluster) {
                let nd = NodeDir(node.clone());
                dirs.extend([node, nd.home(), nd.bin()]);
            }
            dirs.push(cluster);
        }
        dirs.push(project);
    }
    for d in dirs {
        match tighten(&d) {
            Ok(()) => {}
            Err(LocalError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            }
            Err(e) => tracing::warn!(error = %e, "cannot make a local node directory private"),
        }
    }
}

/// Creates `dir` and missing parents with mode 0700.
fn private_dir_all(dir: &Path) -> Result<(), LocalError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(LocalError::io("create", dir))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Removes `.NAME.tmp-*` leftovers of a create interrupted before its rename (all nodes' when
/// `name` is None), except the entry named `keep`.
fn remove_partial(cluster_dir: &Path, name: Option<&str>, keep: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(cluster_dir) else {
        return;
    };
    for e in entries.flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        if keep == Some(f.as_str()) {
            continue;
        }
        let partial = match name {
            Some(n) => f.starts_with(&format!(".{n}.tmp-")),
            None => f.starts_with('.') && f.contains(".tmp-"),
        };
        if partial {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A node directory with its metadata; `fresh`: made by this call (its address was never
/// served, so it may still move).
pub struct Prepared {
    pub dir: PathBuf,
    pub meta: NodeMeta,
    pub fresh: bool,
}

/// The first half of `create_node`: the node's directory under its final name, with an
/// address reserved for it (or the existing node, not fresh). Blocking.
pub fn prepare_node(cfg: &LocalConfig, req: &NodeRequest) -> Result<Prepared, LocalError> {
    prepare_node_with(cfg, &UsedAddresses::default(), req)
}

/// [`prepare_node`] with the home's addresses as `used` knows them (the provider's, read once).
///
/// The node's directory is built under a hidden temporary name first, outside the
/// machine-wide allocation lock (directories and a host key written to disk, the slow part);
/// only picking and reserving the address, and giving the directory its final name, happen
/// under the lock. Two creates of the same node do not run at once (the engine holds the
/// cluster's lock); were they to, the loser's rename fails and nothing is half-made.
fn prepare_node_with(
    cfg: &LocalConfig,
    used: &UsedAddresses,
    req: &NodeRequest,
) -> Result<Prepared, LocalError> {
    let machine = MachineDir::open(&cfg.machine_dir)?;
    let cluster_dir = cfg.root.join(&req.project).join(&req.cluster);
    let final_dir = cluster_dir.join(&req.name);
    let existing = || -> Result<Prepared, LocalError> {
        Ok(Prepared {
            meta: NodeMeta::read(&final_dir)?,
            dir: final_dir.clone(),
            fresh: false,
        })
    };
    if final_dir.join(crate::meta::META_FILE).is_file() {
        return existing();
    }
    let tmp_name = format!(".{}.tmp-{}", req.name, rand::random::<u32>());
    let tmp = cluster_dir.join(&tmp_name);
    let nd = NodeDir(tmp.clone());
    // Private from the start: the node's files (rendered configs, credentials, whatever its
    // software writes) are readable by this user only.
    private_dir_all(&cluster_dir)?;
    let built = (|| {
        for d in [nd.home(), nd.bin()] {
            private_dir_all(&d)?;
        }
        Ok::<_, LocalError>(gantry_ssh::KeyPair::load_or_generate_private(
            &nd.host_key(),
        )?)
    })();
    let host_key = match built {
        Ok(key) => key,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let _guard = FileLock::acquire(&machine.alloc_lock())?;
    if final_dir.join(crate::meta::META_FILE).is_file() {
        let _ = std::fs::remove_dir_all(&tmp);
        return existing();
    }
    // What an interrupted create of this node left (never this call's own directory).
    remove_partial(&cluster_dir, Some(&req.name), Some(&tmp_name));
    let finish = || -> Result<NodeMeta, LocalError> {
        let address = used.pick(&machine, &cfg.root, cfg.ssh_port, &final_dir)?;
        reserve(&machine, address, &final_dir)?;
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
            host_public_key: Some(host_key.public_openssh()),
        };
        write_hostname_shim(&nd, &meta)?;
        meta.write(&tmp)?;
        // The node appears under its name only once complete; a crash before this leaves a
        // hidden partial directory that the next create or the cluster's deletion removes.
        std::fs::rename(&tmp, &final_dir).map_err(LocalError::io("rename", &final_dir))?;
        Ok(meta)
    };
    match finish() {
        Ok(meta) => Ok(Prepared {
            dir: final_dir,
            meta,
            fresh: true,
        }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// The second half of `create_node` (and all of `start_node`): the node's agent, up. When
/// something else took the address first (another user's listener can bind any 127.x
/// address), a fresh node moves to another address (nothing has used its address yet, and
/// failing a whole `up` for it would hand a neighbour a cheap way to block gantry); an
/// existing node cannot move (peers and configs name its address), so that is an error.
/// Returns the node's metadata, with its final address. Blocking.
pub fn start_agent(cfg: &LocalConfig, node: Prepared) -> Result<NodeMeta, LocalError> {
    let Prepared {
        dir,
        mut meta,
        fresh,
    } = node;
    let mut attempt = 1;
    loop {
        match ensure_agent_blocking(cfg, &dir, &meta) {
            Err(LocalError::AddressInUse { address, .. })
                if fresh && attempt < ADDRESS_ATTEMPTS =>
            {
                tracing::warn!(
                    node = %meta.name,
                    %address,
                    "another process took the new node's address before its agent could listen; \
                     picking another"
                );
                meta = readdress(cfg, &dir, meta)?;
                attempt += 1;
            }
            Err(LocalError::AddressInUse { node, address, .. }) => {
                let hint = if fresh {
                    format!(
                        "{ADDRESS_ATTEMPTS} addresses in a row were taken between gantry's \
                         check and the agent's bind: another user or program is taking the \
                         addresses gantry picks; find it with `ss -ltnp` and stop it"
                    )
                } else {
                    "free the address (find the listener with `ss -ltnp`), or destroy the node \
                     and create it again to give it a new address"
                        .to_string()
                };
                return Err(LocalError::AddressInUse {
                    node,
                    address,
                    hint,
                });
            }
            r => return r.map(|()| meta),
        }
    }
}

/// Gives a fresh node whose address was taken another one.
fn readdress(cfg: &LocalConfig, dir: &Path, mut meta: NodeMeta) -> Result<NodeMeta, LocalError> {
    let machine = MachineDir::open(&cfg.machine_dir)?;
    let _guard = FileLock::acquire(&machine.alloc_lock())?;
    let old = meta.address;
    // Rare (something took the address between the check and the bind): read afresh.
    let address = UsedAddresses::default().pick(&machine, &cfg.root, cfg.ssh_port, dir)?;
    reserve(&machine, address, dir)?;
    meta.address = address;
    write_hostname_shim(&NodeDir(dir.to_path_buf()), &meta)?;
    meta.write(dir)?;
    release(&machine, old, dir);
    Ok(meta)
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

/// What the agent gets from the CLI's environment: its node marker and the few variables it
/// needs. Nothing else: the CLI's environment may hold cloud credentials and tokens, and
/// `/proc/<agent>/environ` is readable by every process of the node.
fn agent_env(meta: &NodeMeta) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        (UID_ENV.to_string(), meta.uid.clone()),
    ];
    // The node's processes inherit TZ; LANG for messages; GANTRY_LOG is the agent's log filter.
    for k in ["TZ", "LANG", "GANTRY_LOG"] {
        if let Ok(v) = std::env::var(k) {
            env.push((k.to_string(), v));
        }
    }
    env
}

/// Starts the node's agent unless one serves it, and waits until the agent says it listens.
///
/// "Up" is decided from the agent's own files, never from something answering on the node's
/// address (anyone can listen on a 127.x address): `agent.ready` names the pid of an agent that
/// bound its listener, and it must be the lock holder of this node (see [`ready_agent`]).
fn ensure_agent_blocking(cfg: &LocalConfig, dir: &Path, meta: &NodeMeta) -> Result<(), LocalError> {
    let nd = NodeDir(dir.to_path_buf());
    let addr = SocketAddr::from((meta.address, meta.ssh_port));
    if ready_agent(&nd).is_some() {
        return Ok(());
    }
    let log_path = nd.log();
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(LocalError::io("open", &log_path))?;
    let mut child = AgentChild::spawn(&cfg.agent_exe, dir, &agent_env(meta), &log)
        .map_err(LocalError::io("spawn agent", &cfg.agent_exe))?;
    drop(log);
    let start = Instant::now();
    loop {
        // Our child, or an agent that took the node's lock first.
        if ready_agent(&nd).is_some() {
            // Reaped in the background once it exits, so it does not stay a zombie of ours.
            child.detach();
            return Ok(());
        }
        if let Ok(Some(exited)) = child.try_wait() {
            match exited.code {
                // Lost a race against another agent for this node: wait for that one.
                Some(0) if agent_running(&nd.lock()) => {}
                Some(AGENT_EXIT_ADDRESS_IN_USE) => {
                    return Err(LocalError::AddressInUse {
                        node: meta.name.clone(),
                        address: addr.to_string(),
                        hint: String::new(),
                    });
                }
                _ => {
                    return Err(LocalError::AgentFailed {
                        node: meta.name.clone(),
                        status: exited.text,
                        log: log_path,
                    });
                }
            }
        }
        if start.elapsed() > AGENT_START_TIMEOUT {
            child.kill();
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
        let filter = filter.clone();
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.secure();
            // Only the directories of the filter's project and cluster are read: a listing of
            // one cluster does not read every other node's `node.json`.
            let nodes = nodes_below(
                &this.cfg.root,
                filter.equals.get(tags::PROJECT).map(String::as_str),
                filter.equals.get(tags::CLUSTER).map(String::as_str),
            );
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
        let this = self.clone();
        let req = req.clone();
        let name = req.name.clone();
        tokio::task::spawn_blocking(move || {
            this.secure();
            let node = prepare_node_with(&this.cfg, &this.used, &req)?;
            let dir = node.dir.clone();
            let meta = start_agent(&this.cfg, node)?;
            Ok::<_, LocalError>(info(&dir, &meta))
        })
        .await
        .map_err(|e| join_err("create", &name, e))?
        .map_err(|e| perr("create", &name, e))
    }

    async fn start_node(&self, node: &NodeInfo) -> gantry_provider::Result<NodeInfo> {
        let this = self.clone();
        let dir = self.node_dir_of(node);
        let name = node.name.clone();
        tokio::task::spawn_blocking(move || {
            this.secure();
            let meta = NodeMeta::read(&dir)?;
            let node = Prepared {
                dir: dir.clone(),
                meta,
                fresh: false,
            };
            let meta = start_agent(&this.cfg, node)?;
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
            kill_node_processes(&meta.uid, Some(&NodeDir(dir.clone())), STOP_GRACE);
            let _ = std::fs::remove_file(NodeDir(dir.clone()).ready());
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
        let machine_dir = self.cfg.machine_dir.clone();
        let node_name = name.clone();
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
                    kill_node_processes(&meta.uid, Some(&NodeDir(dir.clone())), DELETE_GRACE);
                    Some(meta)
                }
                Err(_) if !dir.exists() => return Ok(()),
                Err(e) => {
                    // Without node.json the node's marker is unknown: its agent still carries
                    // it (found by its lock and command line), and so does every process the
                    // node started.
                    let uids = agent_uids_of(&NodeDir(dir.clone()));
                    tracing::warn!(
                        node = %node_name,
                        error = %e,
                        agents = uids.len(),
                        "deleting a node whose metadata is unreadable; stopping it by its agent's marker"
                    );
                    for uid in &uids {
                        kill_node_processes(uid, None, DELETE_GRACE);
                    }
                    None
                }
            };
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(LocalError::io("remove", &dir))?;
            }
            let machine = MachineDir::open(&machine_dir)?;
            match meta {
                Some(meta) => release(&machine, meta.address, &dir),
                None => release_all_of(&machine, &dir),
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
            remove_partial(&dir, None, None);
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

    /// A local node is a directory of one gantry home: another home's nodes are out of reach.
    fn reaches(&self, provider_id: &str) -> bool {
        Path::new(provider_id).starts_with(&self.cfg.root)
    }

    fn boot_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}
