//! Shared fixtures: free ports, a real OpenSSH sshd, the in-process gantry server, clients.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_ssh::{ClientConfig, ConnectSpec, KeyPair, KnownHosts, ServerConfig, ServerLimits};
use tempfile::TempDir;

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().unwrap().port()
}

pub fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".into())
}

/// Returns false (after printing why) when a required binary is missing; panics under CI.
pub fn require(bin: &str) -> bool {
    if Path::new(bin).exists() {
        return true;
    }
    let reason = format!("{bin} is not installed (apt-get install openssh-server openssh-client)");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("cannot run SSH integration test: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    false
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listening on 127.0.0.1:{port} after 10s");
}

/// A real OpenSSH sshd on 127.0.0.1, running as the current user, killed on drop.
pub struct Sshd {
    child: Child,
    pub port: u16,
    pub dir: TempDir,
}

impl Sshd {
    /// Starts sshd trusting `authorized` (an OpenSSH public key line). `None`: skipped.
    pub fn start(authorized: &str) -> Option<Sshd> {
        if !require("/usr/sbin/sshd") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join("host_ed25519"))
            .status()
            .expect("run ssh-keygen");
        assert!(status.success(), "ssh-keygen failed");
        std::fs::write(d.join("authorized_keys"), format!("{authorized}\n")).unwrap();
        std::fs::create_dir_all("/run/sshd").ok();
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nUsePAM no\nStrictModes no\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nMaxSessions 64\nMaxStartups 100\n\
             Subsystem sftp internal-sftp\nLogLevel ERROR\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start sshd");
        wait_for_port(port);
        Some(Sshd { child, port, dir })
    }

    pub fn host_public_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_ed25519.pub")).unwrap()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gantry client identity with its own known_hosts file.
pub struct ClientSide {
    pub dir: TempDir,
    pub key_path: PathBuf,
    pub cfg: ClientConfig,
}

impl ClientSide {
    pub fn new() -> ClientSide {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("id_ed25519");
        let key = KeyPair::load_or_generate(&key_path).unwrap();
        let cfg = ClientConfig {
            key: Arc::new(key),
            known_hosts: Arc::new(KnownHosts::new(dir.path().join("known_hosts"))),
            connect_timeout: Duration::from_secs(20),
        };
        ClientSide { dir, key_path, cfg }
    }

    pub fn spec(&self, alias: &str, port: u16) -> ConnectSpec {
        ConnectSpec {
            alias: alias.into(),
            host: "127.0.0.1".into(),
            port,
            user: current_user(),
        }
    }
}

/// The gantry SSH server running in-process; stopped on drop.
pub struct GantryServer {
    pub port: u16,
    pub workdir: TempDir,
    pub host_key: KeyPair,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), gantry_ssh::SshError>>>,
}

impl GantryServer {
    pub async fn start(authorized_keys: Vec<String>) -> GantryServer {
        Self::start_with(authorized_keys, ServerLimits::default()).await
    }

    /// Like [`GantryServer::start`], with shortened timeouts or caps.
    pub async fn start_with(authorized_keys: Vec<String>, limits: ServerLimits) -> GantryServer {
        let workdir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host_key = KeyPair::generate();
        let shell = if Path::new("/bin/bash").exists() {
            "/bin/bash"
        } else {
            "/bin/sh"
        };
        let cfg = ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            host_key: host_key.clone(),
            authorized_keys,
            authorized_keys_file: Some(workdir.path().join(".ssh/authorized_keys")),
            workdir: workdir.path().to_path_buf(),
            env: vec![
                (
                    "PATH".into(),
                    "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
                ),
                ("HOME".into(), workdir.path().display().to_string()),
                ("USER".into(), current_user()),
                ("GANTRY_NODE".into(), "node1".into()),
            ],
            shell: PathBuf::from(shell),
            limits,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gantry_ssh::serve(
            cfg,
            move || {
                let _ = ready_tx.send(());
            },
            async move {
                let _ = rx.await;
            },
        ));
        ready_rx.await.expect("server became ready");
        GantryServer {
            port,
            workdir,
            host_key,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for GantryServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Common `ssh`/`sftp` options for talking to the gantry server as `node1`.
pub fn openssh_opts(key: &Path, known_hosts: &Path, strict: &str) -> Vec<String> {
    vec![
        "-F".into(),
        "/dev/null".into(),
        "-i".into(),
        key.display().to_string(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".into(),
        format!("StrictHostKeyChecking={strict}"),
        "-o".into(),
        "HostKeyAlias=node1".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
    ]
}
