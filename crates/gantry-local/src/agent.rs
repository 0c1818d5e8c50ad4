//! The node agent: `gantry agent --node-dir DIR`, detached, one per node.
//!
//! It holds `agent.lock` for its whole life (a second agent for the same node exits at once),
//! serves SSH on the node's address, and on SIGTERM stops serving and takes its children down.
//! It writes its pid to `agent.pid` once it holds the lock and to `agent.ready` once its
//! listener is bound: that, not a connection to the address, is how gantry knows it is up. If
//! the address is taken it exits with [`crate::AGENT_EXIT_ADDRESS_IN_USE`] (through
//! [`LocalError::AddressInUse`]).

use std::path::Path;

use gantry_ssh::{KeyPair, ServerConfig, ServerLimits};
use tokio::signal::unix::{SignalKind, signal};

use crate::LocalError;
use crate::meta::{NodeDir, NodeMeta};
use crate::process::UID_ENV;

/// Runs the agent in the foreground until SIGTERM/SIGINT. Returns `Ok(false)` if another agent
/// already serves this node.
pub async fn run_agent(node_dir: &Path) -> Result<bool, LocalError> {
    let dir = NodeDir(node_dir.to_path_buf());
    // Started from wherever the CLI ran (see `crate::spawn`): a daemon does not keep the
    // user's working directory busy.
    std::env::set_current_dir(node_dir).map_err(LocalError::io("chdir", node_dir))?;
    let meta = NodeMeta::read(node_dir)?;
    let lock_path = dir.lock();
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(LocalError::io("open", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
        Err(std::fs::TryLockError::Error(e)) => return Err(LocalError::io("lock", &lock_path)(e)),
    }
    // A ready marker left by an agent that died is gone before our pid names the lock holder.
    let ready_path = dir.ready();
    let _ = std::fs::remove_file(&ready_path);
    let pid = std::process::id();
    let pid_path = dir.pid();
    std::fs::write(&pid_path, format!("{pid}\n")).map_err(LocalError::io("write", &pid_path))?;

    let host_key = KeyPair::load_or_generate_private(&dir.host_key())?;
    let authorized_keys_file = seed_authorized_keys(&dir, &meta)?;
    let cfg = ServerConfig {
        listen: (meta.address, meta.ssh_port).into(),
        host_key,
        authorized_keys: meta.authorized_keys.clone(),
        authorized_keys_file: Some(authorized_keys_file),
        workdir: dir.home(),
        env: node_env(&meta, &dir),
        shell: ["/bin/bash", "/bin/sh"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| "/bin/sh".into()),
        limits: ServerLimits::default(),
    };
    let mut term = signal(SignalKind::terminate()).map_err(LocalError::io("signal", node_dir))?;
    let mut int = signal(SignalKind::interrupt()).map_err(LocalError::io("signal", node_dir))?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    };
    let listen = cfg.listen;
    let ready = {
        let ready_path = ready_path.clone();
        // Called by `serve` once the listener is bound.
        move || {
            let _ = std::fs::write(&ready_path, format!("{pid}\n"));
        }
    };
    let result = gantry_ssh::serve(cfg, ready, shutdown).await;
    let _ = std::fs::remove_file(&ready_path);
    let _ = std::fs::remove_file(&pid_path);
    drop(lock);
    match result {
        Ok(()) => Ok(true),
        Err(gantry_ssh::SshError::Serve { source, .. })
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            Err(LocalError::AddressInUse {
                node: meta.name.clone(),
                address: listen.to_string(),
                hint: "gantry moves a new node to another address; an existing node starts \
                       once the address is free"
                    .into(),
            })
        }
        Err(e) => Err(LocalError::from(e)),
    }
}

/// `~/.ssh/authorized_keys` of the node (its home is in the node directory), written from
/// `node.json` when missing: from then on the file is what authorizes logins, as on a machine
/// with sshd, so rotating the project key (`gantry secrets rotate-ssh-key`) is an edit of the
/// file over SSH, the same on every provider. `.ssh` is 0700 and the file 0600.
fn seed_authorized_keys(dir: &NodeDir, meta: &NodeMeta) -> Result<std::path::PathBuf, LocalError> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let ssh = dir.home().join(".ssh");
    let file = ssh.join("authorized_keys");
    if file.symlink_metadata().is_ok() {
        return Ok(file);
    }
    match std::fs::DirBuilder::new().mode(0o700).create(&ssh) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(LocalError::io("create", &ssh)(e)),
    }
    let tmp = ssh.join(format!(".authorized_keys.{}", std::process::id()));
    let mut text = String::new();
    for k in &meta.authorized_keys {
        text.push_str(k.trim());
        text.push('\n');
    }
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &file)
    };
    write().map_err(LocalError::io("write", &file))?;
    Ok(file)
}

/// The environment of every process on the node.
fn node_env(meta: &NodeMeta, dir: &NodeDir) -> Vec<(String, String)> {
    let home = dir.home().to_string_lossy().into_owned();
    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        dir.bin().to_string_lossy()
    );
    let mut env = vec![
        ("HOME".to_string(), home),
        ("PATH".to_string(), path),
        ("USER".to_string(), meta.user.clone()),
        ("LOGNAME".to_string(), meta.user.clone()),
        ("SHELL".to_string(), "/bin/sh".to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("HOSTNAME".to_string(), meta.name.clone()),
        ("GANTRY_NODE".to_string(), meta.name.clone()),
        ("GANTRY_NODE_ADDRESS".to_string(), meta.address.to_string()),
        ("GANTRY_CLUSTER".to_string(), meta.cluster.clone()),
        ("GANTRY_POOL".to_string(), meta.pool.clone()),
        ("GANTRY_INDEX".to_string(), meta.index.to_string()),
        (UID_ENV.to_string(), meta.uid.clone()),
    ];
    if let Ok(tz) = std::env::var("TZ") {
        env.push(("TZ".into(), tz));
    }
    env
}
