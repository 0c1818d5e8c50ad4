//! The client side: one [`Session`] per node connection, carrying many concurrent channels
//! (commands, SFTP transfers, an interactive shell).
//!
//! This is the SSH transport of the engine's fan-out executor, so it is built around the
//! executor's needs: every failure is an [`SshError`] that says whether a retry can help, a
//! remote command's exit is data ([`ExitStatus`]) rather than an error, output streams to a sink
//! as it arrives, and the host key is checked against the per-node pin before anything else.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{Algorithm, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, Disconnect, Sig};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::known_hosts::KnownHosts;
use crate::{KeyPair, SshError};

/// Where and as whom to connect. `alias` is the node name the host key is pinned under.
#[derive(Clone, Debug)]
pub struct ConnectSpec {
    pub alias: String,
    pub host: String,
    pub port: u16,
    pub user: String,
}

/// What every connection of one gantry process shares.
#[derive(Clone)]
pub struct ClientConfig {
    pub key: Arc<KeyPair>,
    pub known_hosts: Arc<KnownHosts>,
    /// Bounds TCP connect, handshake and authentication together.
    pub connect_timeout: Duration,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("key", &self.key)
            .field("known_hosts", &self.known_hosts.path())
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// How a remote command ended: an exit code, or the signal that killed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: Option<u32>,
    /// Signal name without the `SIG` prefix (`TERM`, `KILL`, ...).
    pub signal: Option<String>,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0) && self.signal.is_none()
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.signal) {
            (_, Some(sig)) => write!(f, "killed by signal {sig}"),
            (Some(code), None) => write!(f, "exit code {code}"),
            (None, None) => write!(f, "no exit status"),
        }
    }
}

/// A command's status with all of its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Where streamed output goes (the engine prefixes lines per node).
pub trait OutputSink: Send {
    fn stdout(&mut self, data: &[u8]);
    fn stderr(&mut self, data: &[u8]);
}

struct CaptureSink {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl OutputSink for CaptureSink {
    fn stdout(&mut self, data: &[u8]) {
        self.stdout.extend_from_slice(data);
    }
    fn stderr(&mut self, data: &[u8]) {
        self.stderr.extend_from_slice(data);
    }
}

/// Checks the server's host key against the pin for the node alias.
struct ClientHandler {
    alias: String,
    known_hosts: Arc<KnownHosts>,
}

impl client::Handler for ClientHandler {
    type Error = SshError;

    async fn check_server_key(
        &mut self,
        server_public_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key: PublicKey = match server_public_key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            // We never advertise certificate algorithms, so this is a misbehaving server.
            russh::keys::PublicKeyOrCertificate::Certificate(_) => return Ok(false),
        };
        let known_hosts = self.known_hosts.clone();
        let alias = self.alias.clone();
        tokio::task::spawn_blocking(move || known_hosts.verify_or_pin(&alias, &key))
            .await
            .map_err(|e| SshError::KnownHosts {
                path: self.known_hosts.path().to_path_buf(),
                source: std::io::Error::other(e),
            })??;
        Ok(true)
    }
}

/// The local side of an interactive shell ([`Session::shell`]): a pty request (`$TERM`,
/// (columns, rows)) or plain pipes, the streams, and the terminal's new sizes as it is resized.
pub struct ShellIo {
    pub pty: Option<(String, (u16, u16))>,
    pub stdin: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    pub stdout: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    pub stderr: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    pub resize: Option<tokio::sync::mpsc::Receiver<(u16, u16)>>,
}

/// One SSH connection to a node. Cheap to share: every method takes `&self` and opens its own
/// channel, so many commands and transfers run concurrently over one connection.
pub struct Session {
    handle: Handle<ClientHandler>,
    addr: String,
    alias: String,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("alias", &self.alias)
            .field("addr", &self.addr)
            .finish()
    }
}

impl Session {
    /// Connects, checks (or pins) the host key under `spec.alias`, and authenticates with the
    /// configured key. The whole sequence is bounded by `cfg.connect_timeout`.
    pub async fn connect(spec: &ConnectSpec, cfg: &ClientConfig) -> Result<Session, SshError> {
        let addr = format!("{}:{}", spec.host, spec.port);
        match tokio::time::timeout(cfg.connect_timeout, Self::connect_inner(spec, cfg, &addr)).await
        {
            Ok(r) => r,
            Err(_) => Err(SshError::ConnectTimeout {
                addr,
                timeout: cfg.connect_timeout,
            }),
        }
    }

    async fn connect_inner(
        spec: &ConnectSpec,
        cfg: &ClientConfig,
        addr: &str,
    ) -> Result<Session, SshError> {
        let tcp = tokio::net::TcpStream::connect((spec.host.as_str(), spec.port))
            .await
            .map_err(|source| SshError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);

        let mut config = client::Config {
            // Commands may be silent for a long time; detect dead peers with keepalives instead.
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 4,
            nodelay: true,
            ..Default::default()
        };
        // Ask for the pinned key's algorithm so a server with several host keys presents the
        // one we know rather than looking "changed".
        let known_hosts = cfg.known_hosts.clone();
        let alias = spec.alias.clone();
        let pinned = tokio::task::spawn_blocking(move || known_hosts.pinned(&alias))
            .await
            .map_err(|e| SshError::KnownHosts {
                path: cfg.known_hosts.path().to_path_buf(),
                source: std::io::Error::other(e),
            })??;
        if let Some(algo) = pinned
            .as_deref()
            .and_then(|p| PublicKey::from_openssh(p).ok())
            .map(|k| k.algorithm())
            .filter(|a| matches!(a, Algorithm::Ed25519 | Algorithm::Ecdsa { .. }))
        {
            config.preferred.key = std::borrow::Cow::Owned(vec![algo]);
        }

        let handler = ClientHandler {
            alias: spec.alias.clone(),
            known_hosts: cfg.known_hosts.clone(),
        };
        let mut handle = client::connect_stream(Arc::new(config), tcp, handler)
            .await
            .map_err(|e| match e {
                SshError::Protocol { source, .. } => SshError::Protocol {
                    context: "ssh handshake",
                    source,
                },
                other => other,
            })?;

        let key = cfg.key.shared_private_key();
        let hash_alg = if key.algorithm().is_rsa() {
            handle
                .best_supported_rsa_hash()
                .await
                .map_err(SshError::protocol("negotiating the signature algorithm"))?
                .flatten()
        } else {
            None
        };
        let auth = handle
            .authenticate_publickey(spec.user.clone(), PrivateKeyWithHashAlg::new(key, hash_alg))
            .await
            .map_err(SshError::protocol("authenticating"))?;
        if !auth.success() {
            let _ = handle
                .disconnect(Disconnect::ByApplication, "authentication failed", "en")
                .await;
            return Err(SshError::AuthRejected {
                user: spec.user.clone(),
                addr: addr.to_string(),
                fingerprint: cfg.key.fingerprint(),
            });
        }
        tracing::debug!(alias = %spec.alias, addr, "ssh session established");
        Ok(Session {
            handle,
            addr: addr.to_string(),
            alias: spec.alias.clone(),
        })
    }

    /// Runs `command` (through the remote user's shell), feeding `stdin` if given (otherwise the
    /// command sees an immediate end of input), streaming output to `sink` as it arrives.
    pub async fn exec(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        sink: &mut dyn OutputSink,
    ) -> Result<ExitStatus, SshError> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(SshError::protocol("opening a channel"))?;
        channel
            .exec(true, command)
            .await
            .map_err(SshError::protocol("starting a command"))?;
        let (mut rx, tx) = channel.split();
        let writer = async {
            if let Some(data) = stdin {
                tx.data_bytes(data.to_vec()).await?;
            }
            tx.eof().await
        };
        let (written, status) = tokio::join!(writer, read_output(&mut rx, sink));
        let status = status?;
        if let Err(e) = written {
            // The command may legitimately exit without reading its input.
            tracing::debug!(alias = %self.alias, error = %e, "stdin not fully delivered");
        }
        Ok(status)
    }

    /// Runs `command` and collects all of its output.
    pub async fn exec_capture(&self, command: &str) -> Result<Output, SshError> {
        let mut sink = CaptureSink {
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        let status = self.exec(command, None, &mut sink).await?;
        Ok(Output {
            status,
            stdout: sink.stdout,
            stderr: sink.stderr,
        })
    }

    async fn sftp(&self) -> Result<SftpSession, SshError> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(SshError::protocol("opening an sftp channel"))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(SshError::protocol("starting sftp"))?;
        SftpSession::new(channel.into_stream())
            .await
            .map_err(|source| SshError::Sftp {
                op: "init",
                path: String::new(),
                source,
            })
    }

    /// Copies a local file to `remote` over SFTP, keeping its permission bits. Returns the
    /// number of bytes copied.
    pub async fn upload(&self, local: &Path, remote: &str) -> Result<u64, SshError> {
        let mut src = tokio::fs::File::open(local)
            .await
            .map_err(SshError::local("opening", local))?;
        let mode = src
            .metadata()
            .await
            .map_err(SshError::local("reading metadata of", local))?
            .permissions()
            .mode()
            & 0o7777;
        let sftp = self.sftp().await?;
        let sftp_err = |op: &'static str| {
            move |source| SshError::Sftp {
                op,
                path: remote.to_string(),
                source,
            }
        };
        let attrs = FileAttributes {
            permissions: Some(mode),
            ..FileAttributes::empty()
        };
        // Creating the file fails with "no such file" only when its directory is missing.
        let dir = match remote.rsplit_once('/') {
            Some(("", _)) => "/",
            Some((d, _)) => d,
            None => remote,
        };
        let mut dst = sftp
            .open_with_flags_and_attributes(
                remote,
                OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
                attrs.clone(),
            )
            .await
            .map_err(SshError::sftp("open", remote, dir))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = src
                .read(&mut buf)
                .await
                .map_err(SshError::local("reading", local))?;
            if n == 0 {
                break;
            }
            dst.write_all(&buf[..n])
                .await
                .map_err(|e| sftp_err("write")(e.into()))?;
            total += n as u64;
        }
        dst.shutdown()
            .await
            .map_err(|e| sftp_err("close")(e.into()))?;
        // The mode given at open is subject to the remote umask; set it explicitly.
        sftp.set_metadata(remote, attrs)
            .await
            .map_err(sftp_err("setstat"))?;
        let _ = sftp.close().await;
        Ok(total)
    }

    /// Copies `remote` to a local file over SFTP, keeping its permission bits (but never
    /// setuid, setgid or sticky: see `downloaded_mode`). Returns the number of bytes copied.
    pub async fn download(&self, remote: &str, local: &Path) -> Result<u64, SshError> {
        let sftp = self.sftp().await?;
        let sftp_err = |op: &'static str| {
            move |source| SshError::Sftp {
                op,
                path: remote.to_string(),
                source,
            }
        };
        let mode = sftp
            .metadata(remote)
            .await
            .map_err(SshError::sftp("stat", remote, remote))?
            .permissions
            .map(downloaded_mode);
        let mut src = sftp
            .open(remote)
            .await
            .map_err(SshError::sftp("open", remote, remote))?;
        let mut dst = tokio::fs::File::create(local)
            .await
            .map_err(SshError::local("creating", local))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = src
                .read(&mut buf)
                .await
                .map_err(|e| sftp_err("read")(e.into()))?;
            if n == 0 {
                break;
            }
            dst.write_all(&buf[..n])
                .await
                .map_err(SshError::local("writing", local))?;
            total += n as u64;
        }
        dst.flush()
            .await
            .map_err(SshError::local("writing", local))?;
        if let Some(mode) = mode {
            tokio::fs::set_permissions(local, std::fs::Permissions::from_mode(mode))
                .await
                .map_err(SshError::local("setting permissions of", local))?;
        }
        let _ = src.shutdown().await;
        let _ = sftp.close().await;
        Ok(total)
    }

    /// Interactive shell (or `command`) over `io`: with a pty of its size and `$TERM` when it
    /// asks for one, forwarding its input, output and resizes; returns the remote exit status.
    /// The caller owns the local terminal (raw mode), not this crate.
    pub async fn shell(&self, command: Option<&str>, io: ShellIo) -> Result<ExitStatus, SshError> {
        let ShellIo {
            pty,
            mut stdin,
            mut stdout,
            mut stderr,
            mut resize,
        } = io;
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(SshError::protocol("opening a channel"))?;
        if let Some((term, (cols, rows))) = &pty {
            channel
                .request_pty(true, term, (*cols).into(), (*rows).into(), 0, 0, &[])
                .await
                .map_err(SshError::protocol("requesting a pty"))?;
        }
        match command {
            Some(c) => channel.exec(true, c).await,
            None => channel.request_shell(true).await,
        }
        .map_err(SshError::protocol("starting the shell"))?;

        let (mut rx, tx) = channel.split();
        let mut stdin_open = true;
        let mut buf = vec![0u8; 16 * 1024];
        let mut status = PartialStatus::default();
        loop {
            tokio::select! {
                msg = rx.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => {
                        let _ = stdout.write_all(&data).await;
                        let _ = stdout.flush().await;
                    }
                    Some(ChannelMsg::ExtendedData { data, .. }) => {
                        let _ = stderr.write_all(&data).await;
                        let _ = stderr.flush().await;
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(other) => status.observe(other)?,
                },
                read = stdin.read(&mut buf), if stdin_open => match read {
                    Ok(n) if n > 0 => {
                        tx.data_bytes(buf[..n].to_vec())
                            .await
                            .map_err(SshError::protocol("sending input"))?;
                    }
                    _ => {
                        stdin_open = false;
                        let _ = tx.eof().await;
                    }
                },
                Some((cols, rows)) = recv_resize(&mut resize) => {
                    let _ = tx.window_change(cols.into(), rows.into(), 0, 0).await;
                }
            }
        }
        status.finish("running the shell")
    }

    /// Closes the connection (running channels end).
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }

    /// Whether the connection has gone away.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }
}

/// The next size of `resize`, or never when there is none.
async fn recv_resize(
    resize: &mut Option<tokio::sync::mpsc::Receiver<(u16, u16)>>,
) -> Option<(u16, u16)> {
    match resize {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Exit status and signal as they arrive on a channel.
#[derive(Default)]
struct PartialStatus {
    code: Option<u32>,
    signal: Option<String>,
}

impl PartialStatus {
    fn observe(&mut self, msg: ChannelMsg) -> Result<(), SshError> {
        match msg {
            ChannelMsg::ExitStatus { exit_status } => self.code = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                self.signal = Some(sig_name(&signal_name))
            }
            ChannelMsg::Failure => {
                return Err(SshError::Channel {
                    context: "starting a command",
                    reason: "the server refused the request".into(),
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(self, context: &'static str) -> Result<ExitStatus, SshError> {
        if self.code.is_none() && self.signal.is_none() {
            return Err(SshError::Channel {
                context,
                reason: "the channel closed without an exit status (connection lost?)".into(),
            });
        }
        Ok(ExitStatus {
            code: self.code,
            signal: self.signal,
        })
    }
}

async fn read_output(
    rx: &mut russh::ChannelReadHalf,
    sink: &mut dyn OutputSink,
) -> Result<ExitStatus, SshError> {
    let mut status = PartialStatus::default();
    loop {
        match rx.wait().await {
            Some(ChannelMsg::Data { data }) => sink.stdout(&data),
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => sink.stderr(&data),
            Some(ChannelMsg::Close) | None => break,
            Some(other) => status.observe(other)?,
        }
    }
    status.finish("running a command")
}

/// The wire name of a signal (`TERM`), as OpenSSH reports it.
pub(crate) fn sig_name(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name.as_str(),
    }
    .to_string()
}

/// The mode a downloaded file gets locally: the remote permission bits without setuid, setgid
/// and sticky. A node is not trusted with the local machine: a setuid-root binary fetched by
/// `gantry get` (run as root, or with a root-owned destination) must not become one here.
fn downloaded_mode(remote: u32) -> u32 {
    remote & 0o777
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn session_is_send_sync() {
        assert_send_sync::<Session>();
    }

    #[test]
    fn exit_status_display_and_success() {
        let ok = ExitStatus {
            code: Some(0),
            signal: None,
        };
        assert!(ok.success());
        let killed = ExitStatus {
            code: None,
            signal: Some("TERM".into()),
        };
        assert!(!killed.success());
        assert_eq!(killed.to_string(), "killed by signal TERM");
    }

    #[test]
    fn downloads_drop_setuid_setgid_and_sticky() {
        assert_eq!(downloaded_mode(0o4755), 0o755);
        assert_eq!(downloaded_mode(0o2750), 0o750);
        assert_eq!(downloaded_mode(0o1777), 0o777);
        assert_eq!(downloaded_mode(0o100640), 0o640);
    }
}
