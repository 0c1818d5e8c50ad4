//! The SSH server side, run by gantry's local node agent.
//!
//! A local node is a sandbox directory plus an agent process; serving real SSH on the node's
//! loopback address lets `ssh`, `sftp`, Ansible and gantry's own SSH transport reach local nodes
//! exactly as they reach cloud VMs. Supported: public-key authentication against a fixed list,
//! `exec` and `shell` (with or without a pty), `env`, `signal`, `window-change`, and the `sftp`
//! subsystem rooted at the node's work directory.
//!
//! Every channel runs in its own task; every child runs in its own process group (a pty child
//! in its own session, with the pty as its terminal) so signals reach everything it started,
//! and nothing blocks the runtime.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use russh::keys::PublicKey;
use russh::server::{Auth, Msg, PublicKeyOffer, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, ChannelWriteHalf, MethodKind, MethodSet, Sig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, watch};

use crate::client::sig_name;
use crate::keys::parse_public_key;
use crate::{KeyPair, SshError};

/// After a child exits, output still buffered is forwarded; a pipe that stays silent this long
/// is assumed held open by a background process and is abandoned so the channel can finish.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Limits that keep connections which never authenticate from taking a node down: every local
/// user can connect to a node's loopback address, so idle or half-open sockets must neither hold
/// file descriptors for ever nor crowd out gantry's own connections.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// A connection that has not authenticated this long after it was accepted is closed
    /// (OpenSSH's `LoginGraceTime`).
    pub login_grace: Duration,
    /// At most this many connections wait to authenticate at once (OpenSSH's `MaxStartups`).
    /// The effective cap is also at most a quarter of the process's open-file limit, so waiting
    /// connections can never use up the descriptors authenticated sessions and their processes
    /// need. At the cap, the oldest waiting connection is closed to make room for the new one.
    pub max_unauthenticated: usize,
    /// Authenticated sessions are never timed out for being idle (interactive shells may idle
    /// for hours); a keepalive is sent after this much silence from the client ...
    pub keepalive_interval: Duration,
    /// ... and the connection is closed after this many keepalives go unanswered.
    pub keepalive_max: usize,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            // Far above what a key login takes even on a loaded machine (50 parallel handshakes
            // on 2 cores take about 4 s; each rejected key costs 300 ms), far below sshd's 120 s,
            // which is sized for typing a password: nodes accept keys only.
            login_grace: Duration::from_secs(30),
            // gantry opens one connection per node and command; OpenSSH tools and Ansible a
            // handful. 32 handshakes in flight is plenty, and bounds what idle sockets hold.
            max_unauthenticated: 32,
            keepalive_interval: Duration::from_secs(30),
            keepalive_max: 4,
        }
    }
}

/// Configuration of [`serve`].
#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub host_key: KeyPair,
    /// OpenSSH public key lines; only these may log in (public key auth only; any user name),
    /// unless `authorized_keys_file` exists.
    pub authorized_keys: Vec<String>,
    /// An OpenSSH `authorized_keys` file that, while it exists, replaces `authorized_keys`: read
    /// again whenever it changes, so a key added or removed on the node (rotation of the
    /// project key, `gantry secrets rotate-ssh-key`) takes effect at the next login, as with
    /// sshd. Lines that are not plain public keys (options, garbage) authorize nothing.
    pub authorized_keys_file: Option<PathBuf>,
    /// Working directory of every process, and the SFTP root for relative paths.
    pub workdir: PathBuf,
    /// The full environment of spawned processes; client `env` requests add to it.
    pub env: Vec<(String, String)>,
    /// Commands run as `shell -c CMD`; an interactive shell with a pty runs `shell -i`.
    pub shell: PathBuf,
    /// Timeouts and caps for connections (the defaults suit a node agent).
    pub limits: ServerLimits,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("host_key", &self.host_key)
            .field("authorized_keys", &self.authorized_keys.len())
            .field("authorized_keys_file", &self.authorized_keys_file)
            .field("workdir", &self.workdir)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("shell", &self.shell)
            .field("limits", &self.limits)
            .finish()
    }
}

/// First pause after a failed `accept()`; doubled on each failure in a row, up to
/// [`ACCEPT_BACKOFF_MAX`]. Errors such as EMFILE leave the pending connection in the backlog, so
/// retrying at once would spin.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// On shutdown, how long connections get to receive their disconnect message and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Binds, then calls `ready()` once listening (the agent writes its ready marker there), and
/// serves until `shutdown` resolves. On shutdown, clients are disconnected and the process
/// groups of children still running get SIGTERM.
///
/// Only binding can fail: once listening, no `accept()` error ends the server (a full file
/// table, a connection reset before it was accepted, ...); each is logged, and accepting
/// resumes after a short backoff.
pub async fn serve(
    cfg: ServerConfig,
    ready: impl FnOnce() + Send,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SshError> {
    let authorized = cfg
        .authorized_keys
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(parse_public_key)
        .collect::<Result<Vec<_>, _>>()?;
    let addr = cfg.listen.to_string();
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| SshError::Serve {
            addr: addr.clone(),
            source,
        })?;
    let limits = cfg.limits.clone();
    let config = Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard(
            concat!("SSH-2.0-gantry_", env!("CARGO_PKG_VERSION")).into(),
        ),
        keys: vec![cfg.host_key.private_key().clone()],
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        // Interactive shells may idle for hours; dead clients are found by keepalives, and
        // connections that never log in by the login grace time (see `connection`).
        inactivity_timeout: None,
        keepalive_interval: Some(limits.keepalive_interval),
        keepalive_max: limits.keepalive_max,
        nodelay: true,
        ..Default::default()
    });
    let shared = Arc::new(Shared {
        workdir: cfg.workdir.clone(),
        env: cfg.env.clone(),
        shell: cfg.shell.clone(),
        authorized,
        authorized_file: cfg.authorized_keys_file.clone().map(AuthorizedFile::new),
        children: Mutex::new(HashSet::new()),
    });
    let waiting = Arc::new(Waiting::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let tracker = tokio_util::task::TaskTracker::new();
    tracing::info!(%addr, "ssh server listening");
    ready();
    tokio::pin!(shutdown);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                if failing {
                    tracing::info!(%addr, "accepting connections again");
                    failing = false;
                }
                backoff = ACCEPT_BACKOFF_MIN;
                waiting.make_room(effective_cap(limits.max_unauthenticated));
                let conn = waiting.add();
                let handler = Connection {
                    shared: shared.clone(),
                    peer: Some(peer),
                    started: HashSet::new(),
                    conn: conn.clone(),
                    waiting: waiting.clone(),
                };
                tracker.spawn(connection(
                    stream,
                    config.clone(),
                    handler,
                    conn,
                    waiting.clone(),
                    limits.login_grace,
                    stop_rx.clone(),
                ));
            }
            Err(error) => {
                // Out of descriptors: the oldest connection still waiting to log in gives its
                // own back, so the next connection (maybe gantry's) can be accepted.
                let exhausted = matches!(
                    error.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                let shed = exhausted && waiting.evict_oldest();
                if failing {
                    tracing::debug!(%addr, %error, shed, "accept failed again");
                } else {
                    tracing::warn!(%addr, %error, shed, ?backoff, "accept failed; retrying");
                    failing = true;
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::debug!("connections still open at shutdown are dropped");
    }
    shared.terminate_children();
    tracing::info!(%addr, "ssh server stopped");
    Ok(())
}

/// The cap on connections waiting to authenticate: the configured one, and at most a quarter of
/// the current soft limit on open files (read each time: `prlimit` can change it at any time).
fn effective_cap(configured: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let by_fds = getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .and_then(|(soft, _)| usize::try_from(soft / 4).ok())
        .unwrap_or(usize::MAX);
    configured.min(by_fds).max(1)
}

/// Runs one accepted connection to its end. It is closed when it has not authenticated within
/// `login_grace`, when it is evicted to make room for a newer one, and on server shutdown
/// (after a disconnect message).
async fn connection(
    stream: tokio::net::TcpStream,
    config: Arc<russh::server::Config>,
    handler: Connection,
    conn: Arc<ConnState>,
    waiting: Arc<Waiting>,
    login_grace: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let io = Killable {
        inner: stream,
        conn: conn.clone(),
    };
    let grace = tokio::time::sleep(login_grace);
    tokio::pin!(grace);
    let mut grace_over = false;
    let mut stopping = false;
    // The version exchange: a client that never sends its version is cut off by the grace
    // timer like one that never authenticates.
    let started = russh::server::run_stream(config, io, handler);
    tokio::pin!(started);
    let session = loop {
        tokio::select! {
            r = &mut started => match r {
                Ok(s) => break Some(s),
                Err(error) => {
                    tracing::debug!(%error, "ssh connection setup failed");
                    break None;
                }
            },
            () = &mut grace, if !grace_over => {
                grace_over = true;
                if !conn.authenticated() {
                    tracing::debug!("closing a connection that did not log in in time");
                    conn.kill();
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.kill();
            }
        }
    };
    if let Some(session) = session {
        let handle = session.handle();
        tokio::pin!(session);
        loop {
            tokio::select! {
                r = &mut session => {
                    if let Err(error) = r {
                        tracing::debug!(%error, "ssh connection ended with an error");
                    }
                    break;
                }
                () = &mut grace, if !grace_over => {
                    grace_over = true;
                    if stopping {
                        // A client that does not close its end after the disconnect message
                        // is not waited for.
                        conn.kill();
                    } else if !conn.authenticated() {
                        tracing::debug!("closing a connection that did not log in in time");
                        conn.kill();
                    }
                }
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    let bye = handle.disconnect(
                        russh::Disconnect::ByApplication,
                        "node agent stopping".into(),
                        String::new(),
                    );
                    let _ = tokio::time::timeout(Duration::from_millis(500), bye).await;
                    grace_over = false;
                    grace
                        .as_mut()
                        .reset(tokio::time::Instant::now() + Duration::from_millis(500));
                }
            }
        }
    }
    waiting.remove(conn.id);
}

/// Connections accepted but not yet authenticated, oldest first.
#[derive(Default)]
struct Waiting {
    next_id: AtomicU64,
    conns: Mutex<BTreeMap<u64, Arc<ConnState>>>,
}

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self) -> Arc<ConnState> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(ConnState {
            id,
            authenticated: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            read_waker: AtomicWaker::new(),
            write_waker: AtomicWaker::new(),
        });
        self.lock().insert(id, conn.clone());
        conn
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the oldest waiting connections until fewer than `cap` wait. Evicting the oldest
    /// (rather than refusing the newest) means someone holding idle sockets cannot lock gantry
    /// out: a real client logs in within one handshake, long before it becomes the oldest.
    fn make_room(&self, cap: usize) {
        let mut conns = self.lock();
        while conns.len() >= cap {
            let Some((_, oldest)) = conns.pop_first() else {
                break;
            };
            tracing::debug!("closing the oldest connection waiting to log in (at the cap)");
            oldest.kill();
        }
    }

    /// Closes the oldest waiting connection; false when none waits.
    fn evict_oldest(&self) -> bool {
        let oldest = self.lock().pop_first();
        oldest.map(|(_, c)| c.kill()).is_some()
    }
}

/// What the accept loop, the grace timer and the SSH handler share about one connection.
struct ConnState {
    id: u64,
    authenticated: AtomicBool,
    killed: AtomicBool,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
}

impl ConnState {
    fn authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }

    /// Makes every read and write of the connection fail from now on, waking the task blocked
    /// on it: russh's session task then ends and drops (closes) the socket, whatever state the
    /// handshake is in.
    fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.read_waker.wake();
        self.write_waker.wake();
    }

    fn killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }
}

/// A socket the server can close from outside the task that owns it (see [`ConnState::kill`]).
struct Killable<S> {
    inner: S,
    conn: Arc<ConnState>,
}

fn killed_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "connection closed by the server",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Killable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.conn.read_waker.register(cx.waker());
        if self.conn.killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Killable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.conn.write_waker.register(cx.waker());
        if self.conn.killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.conn.write_waker.register(cx.waker());
        if self.conn.killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.conn.killed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Shared {
    workdir: PathBuf,
    env: Vec<(String, String)>,
    shell: PathBuf,
    authorized: Vec<PublicKey>,
    authorized_file: Option<AuthorizedFile>,
    /// Process groups (= pids of session leaders) of running children.
    children: Mutex<HashSet<i32>>,
}

/// The `authorized_keys_file` of a server, with its keys as last read.
struct AuthorizedFile {
    path: PathBuf,
    read: Mutex<Option<(crate::known_hosts::Stamp, Arc<Vec<PublicKey>>)>>,
}

impl AuthorizedFile {
    fn new(path: PathBuf) -> AuthorizedFile {
        AuthorizedFile {
            path,
            read: Mutex::new(None),
        }
    }

    /// The file's keys (None: there is no file), read again only when the file changed.
    fn keys(&self) -> std::io::Result<Option<Arc<Vec<PublicKey>>>> {
        let Some(before) = crate::known_hosts::stamp(&self.path)? else {
            return Ok(None);
        };
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, keys)) = &*read
            && *seen == Some(before)
        {
            return Ok(Some(keys.clone()));
        }
        let content = std::fs::read_to_string(&self.path)?;
        let keys: Vec<PublicKey> = content
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| parse_public_key(l).ok())
            .collect();
        let keys = Arc::new(keys);
        // Kept only if the file did not change while it was read.
        if crate::known_hosts::stamp(&self.path)? == Some(before) {
            *read = Some((Some(before), keys.clone()));
        }
        Ok(Some(keys))
    }
}

impl Shared {
    fn is_authorized(&self, key: &PublicKey) -> bool {
        let same = |k: &PublicKey| k.key_data() == key.key_data();
        match self.authorized_file.as_ref().map(AuthorizedFile::keys) {
            Some(Ok(Some(keys))) => keys.iter().any(same),
            Some(Ok(None)) | None => self.authorized.iter().any(same),
            Some(Err(e)) => {
                // An unreadable file authorizes nobody: never fall back to an older list.
                tracing::warn!("cannot read the authorized keys file: {e}");
                false
            }
        }
    }

    fn register(&self, pid: i32) {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid);
    }

    fn unregister(&self, pid: i32) {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
    }

    fn terminate_children(&self) {
        let children: Vec<i32> = self
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for pgid in children {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
        }
    }
}

/// One client connection. Channel requests are answered here, in order, as the protocol
/// requires; the work happens in one task per channel (see [`run_channel`]).
struct Connection {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    /// Channels that already started a command, shell or subsystem.
    started: HashSet<ChannelId>,
    conn: Arc<ConnState>,
    waiting: Arc<Waiting>,
}

fn reject() -> Auth {
    Auth::Reject {
        proceed_with_methods: None,
        partial_success: false,
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.shared.is_authorized(offer.public_key) {
            Auth::Accept
        } else {
            reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let ok = self.shared.is_authorized(key.public_key);
        tracing::debug!(
            user,
            peer = ?self.peer,
            fingerprint = %key.public_key.fingerprint(russh::keys::HashAlg::Sha256),
            accepted = ok,
            "public key authentication"
        );
        Ok(if ok { Auth::Accept } else { reject() })
    }

    async fn auth_succeeded(
        &mut self,
        _session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        // Logged in: no longer subject to the login grace time or the cap on waiting
        // connections.
        self.conn.authenticated.store(true, Ordering::Release);
        self.waiting.remove(self.conn.id);
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        let handle = session.handle();
        reply.accept().await;
        tokio::spawn(run_channel(channel, handle, self.shared.clone()));
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        self.started.remove(&channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        if self.started.contains(&channel) {
            session.channel_failure(channel)
        } else {
            session.channel_success(channel)
        }
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            self.start(channel, session)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }
}

impl Connection {
    fn start(
        &mut self,
        channel: ChannelId,
        session: &mut russh::server::Session,
    ) -> Result<(), russh::Error> {
        if self.started.insert(channel) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
}

/// What a session channel was asked to run.
enum Start {
    Command(String),
    Shell,
    Sftp,
}

struct PtyRequest {
    term: String,
    cols: u16,
    rows: u16,
}

/// Drives one session channel: collects pty and env requests, then runs the command, shell or
/// SFTP server the client asked for.
async fn run_channel(
    mut channel: Channel<Msg>,
    handle: russh::server::Handle,
    shared: Arc<Shared>,
) {
    let mut env = shared.env.clone();
    let mut pty = None;
    let start = loop {
        match channel.wait().await {
            None | Some(ChannelMsg::Close) => return,
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            }) => {
                pty = Some(PtyRequest {
                    term,
                    cols: clamp_u16(col_width, 80),
                    rows: clamp_u16(row_height, 24),
                });
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => set_env(&mut env, variable_name, variable_value),
            Some(ChannelMsg::Exec { command, .. }) => {
                break Start::Command(String::from_utf8_lossy(&command).into_owned());
            }
            Some(ChannelMsg::RequestShell { .. }) => break Start::Shell,
            Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => break Start::Sftp,
            Some(_) => {}
        }
    };
    match start {
        Start::Sftp => run_sftp(channel, shared).await,
        Start::Command(command) => {
            let args = vec![OsString::from("-c"), OsString::from(command)];
            run_process(channel, handle, shared, env, pty, args).await;
        }
        Start::Shell => {
            let args = if pty.is_some() {
                vec![OsString::from("-i")]
            } else {
                Vec::new()
            };
            run_process(channel, handle, shared, env, pty, args).await;
        }
    }
}

/// Bytes buffered between the channel and the SFTP server task, each way.
const SFTP_PIPE: usize = 256 * 1024;

/// Runs the SFTP server for a channel, then ends the channel as a subsystem must: exit status
/// 0, EOF, close. (OpenSSH's `ssh -s sftp` exits 255 without an exit status, and `scp`, which
/// runs over SFTP since OpenSSH 9.0, then reports a failed copy.) russh-sftp's server runs in
/// its own task and closes its stream when the client's input ends, so it is given one end of
/// a pipe and the channel is relayed to the other end, where the server's end shows.
async fn run_sftp(channel: Channel<Msg>, shared: Arc<Shared>) {
    let handler = crate::sftp::SftpServer::new(shared.workdir.clone());
    let (ours, theirs) = tokio::io::duplex(SFTP_PIPE);
    russh_sftp::server::run(theirs, handler).await;
    let (mut from_sftp, mut to_sftp) = tokio::io::split(ours);
    let (mut rx, tx) = channel.split();
    // Replies in a task of their own: a client that pipelines requests while not reading
    // replies fills one direction, and must not stall the other.
    let replies = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_sftp.read(&mut buf).await {
                Ok(0) | Err(_) => return Some(tx),
                Ok(n) => {
                    if tx.data_bytes(buf[..n].to_vec()).await.is_err() {
                        return None;
                    }
                }
            }
        }
    });
    let mut client_open = true;
    loop {
        match rx.wait().await {
            Some(ChannelMsg::Data { data }) => {
                // Fails only if the server task is gone; its replies then end too.
                if to_sftp.write_all(&data).await.is_err() {
                    break;
                }
            }
            // The end of the client's input: the server answers what it read, then stops.
            Some(ChannelMsg::Eof) => break,
            Some(ChannelMsg::Close) | None => {
                client_open = false;
                break;
            }
            Some(_) => {}
        }
    }
    // Shut down explicitly: dropping one half of a split pipe leaves the pipe open.
    let _ = to_sftp.shutdown().await;
    let tx = replies.await.ok().flatten();
    if let (true, Some(tx)) = (client_open, tx) {
        let _ = tx.exit_status(0).await;
        let _ = tx.eof().await;
        let _ = tx.close().await;
    }
}

fn clamp_u16(v: u32, default: u16) -> u16 {
    match u16::try_from(v) {
        Ok(0) | Err(_) => default,
        Ok(v) => v,
    }
}

fn set_env(env: &mut Vec<(String, String)>, name: String, value: String) {
    match env.iter_mut().find(|(k, _)| *k == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    }
}

/// Input for a child: bytes, or a new terminal size (rows, cols).
enum Input {
    Data(Vec<u8>),
    Resize(u16, u16),
}

/// Where a child's input goes: its stdin pipe, or the pty master.
enum InputSink {
    Pipe(tokio::process::ChildStdin),
    Pty(pty_process::OwnedWritePty),
}

/// A started child with its IO wired up.
struct Spawned {
    child: tokio::process::Child,
    /// Output streams with their extended-data code (`None` = stdout / pty, `Some(1)` = stderr).
    outputs: Vec<(Box<dyn AsyncRead + Send + Unpin>, Option<u32>)>,
    input: InputSink,
}

fn pty_err(e: pty_process::Error) -> std::io::Error {
    match e {
        pty_process::Error::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

fn spawn_child(
    shared: &Shared,
    env: &[(String, String)],
    pty: Option<&PtyRequest>,
    args: &[OsString],
) -> std::io::Result<Spawned> {
    match pty {
        Some(req) => {
            let (pty, pts) = pty_process::open().map_err(pty_err)?;
            pty.resize(pty_process::Size::new(req.rows, req.cols))
                .map_err(pty_err)?;
            // pty-process makes the child a session leader with the pty as controlling tty.
            let child = pty_process::Command::new(&shared.shell)
                .args(args)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .env("TERM", &req.term)
                .current_dir(&shared.workdir)
                .spawn(pts)
                .map_err(pty_err)?;
            let (read, write) = pty.into_split();
            Ok(Spawned {
                child,
                outputs: vec![(Box::new(read), None)],
                input: InputSink::Pty(write),
            })
        }
        None => {
            let mut cmd = tokio::process::Command::new(&shared.shell);
            cmd.args(args)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .current_dir(&shared.workdir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            // Its own process group, so closing the channel can signal everything it started.
            // Not `setsid` through `pre_exec`: that forces a fork of the whole agent, where this
            // lets the standard library use posix_spawn. The agent has no controlling terminal
            // (it runs in a session of its own), so the child has none either.
            cmd.process_group(0);
            let mut child = cmd.spawn()?;
            let missing = || std::io::Error::other("child pipe missing");
            let stdout = child.stdout.take().ok_or_else(missing)?;
            let stderr = child.stderr.take().ok_or_else(missing)?;
            let stdin = child.stdin.take().ok_or_else(missing)?;
            Ok(Spawned {
                child,
                outputs: vec![(Box::new(stdout), None), (Box::new(stderr), Some(1))],
                input: InputSink::Pipe(stdin),
            })
        }
    }
}

/// Feeds a child's input until the channel's EOF (the sender is dropped), then closes it.
async fn feed_input(mut sink: InputSink, mut rx: mpsc::Receiver<Input>) {
    let mut broken = false;
    while let Some(msg) = rx.recv().await {
        match (msg, &mut sink) {
            (Input::Data(data), InputSink::Pipe(w)) if !broken => {
                broken = w.write_all(&data).await.is_err() || w.flush().await.is_err();
            }
            (Input::Data(data), InputSink::Pty(w)) if !broken => {
                broken = w.write_all(&data).await.is_err() || w.flush().await.is_err();
            }
            (Input::Resize(rows, cols), InputSink::Pty(w)) => {
                let _ = w.resize(pty_process::Size::new(rows, cols));
            }
            _ => {}
        }
    }
}

/// Forwards one output stream to the channel until it ends, or until it has been silent for
/// [`DRAIN_GRACE`] after the child exited.
async fn pump(
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    tx: Arc<ChannelWriteHalf<Msg>>,
    ext: Option<u32>,
    mut exited: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let read = tokio::select! {
            r = reader.read(&mut buf) => r,
            () = idle_after_exit(&mut exited) => break,
        };
        let n = match read {
            // A pty master reads EIO once the last process holding the slave is gone.
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = buf[..n].to_vec();
        let sent = match ext {
            None => tx.data_bytes(data).await,
            Some(code) => tx.extended_data_bytes(code, data).await,
        };
        if sent.is_err() {
            break;
        }
    }
}

async fn idle_after_exit(exited: &mut watch::Receiver<bool>) {
    let _ = exited.wait_for(|done| *done).await;
    tokio::time::sleep(DRAIN_GRACE).await;
}

fn to_signal(sig: &Sig) -> Option<Signal> {
    Signal::from_str(&format!("SIG{}", sig_name(sig))).ok()
}

/// Runs `shell ARGS` for a channel: input from the channel, output to it, signals and window
/// changes forwarded; then reports how the child ended and closes the channel.
async fn run_process(
    channel: Channel<Msg>,
    handle: russh::server::Handle,
    shared: Arc<Shared>,
    env: Vec<(String, String)>,
    pty: Option<PtyRequest>,
    args: Vec<OsString>,
) {
    let id = channel.id();
    let is_pty = pty.is_some();
    let (mut rx, tx) = channel.split();
    let tx = Arc::new(tx);
    let spawned = match spawn_child(&shared, &env, pty.as_ref(), &args) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(shell = %shared.shell.display(), error = %e, "cannot start process");
            let msg = format!("gantry: cannot run {}: {e}\r\n", shared.shell.display());
            let _ = tx.extended_data_bytes(1, msg.into_bytes()).await;
            let _ = tx.eof().await;
            let _ = handle.exit_status_request(id, 127).await;
            let _ = tx.close().await;
            return;
        }
    };
    let Spawned {
        mut child,
        outputs,
        input,
    } = spawned;
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    if let Some(pid) = pid {
        shared.register(pid);
    }
    let (exited_tx, exited_rx) = watch::channel(false);
    let pumps: Vec<_> = outputs
        .into_iter()
        .map(|(reader, ext)| tokio::spawn(pump(reader, tx.clone(), ext, exited_rx.clone())))
        .collect();
    let (input_tx, input_rx) = mpsc::channel::<Input>(64);
    let feeder = tokio::spawn(feed_input(input, input_rx));
    let mut input_tx = Some(input_tx);
    let mut client_open = true;

    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            msg = rx.wait(), if client_open => match msg {
                Some(ChannelMsg::Data { data }) => {
                    if let Some(sender) = &input_tx
                        && sender.send(Input::Data(data.to_vec())).await.is_err()
                    {
                        input_tx = None;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    // A pty has no half-close; for pipes, EOF closes the child's stdin.
                    if !is_pty {
                        input_tx = None;
                    }
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    if let Some(sender) = &input_tx {
                        let _ = sender
                            .send(Input::Resize(clamp_u16(row_height, 24), clamp_u16(col_width, 80)))
                            .await;
                    }
                }
                Some(ChannelMsg::Signal { signal }) => {
                    if let (Some(pid), Some(sig)) = (pid, to_signal(&signal)) {
                        let _ = killpg(Pid::from_raw(pid), sig);
                    }
                }
                Some(ChannelMsg::Close) | None => {
                    // The client went away: hang up on the process group, as a terminal would.
                    client_open = false;
                    input_tx = None;
                    if let Some(pid) = pid {
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGHUP);
                    }
                }
                Some(_) => {}
            },
        }
    };
    if let Some(pid) = pid {
        shared.unregister(pid);
    }
    let _ = exited_tx.send(true);
    drop(input_tx);
    feeder.abort();
    if !client_open {
        for p in pumps {
            p.abort();
        }
        return;
    }
    for p in pumps {
        let _ = p.await;
    }
    let _ = tx.eof().await;
    match status {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            if let Some(signo) = status.signal() {
                let name = Signal::try_from(signo)
                    .map(|s| s.as_str().trim_start_matches("SIG").to_string())
                    .unwrap_or_else(|_| signo.to_string());
                let _ = handle
                    .exit_signal_request(
                        id,
                        Sig::Custom(name),
                        status.core_dumped(),
                        String::new(),
                        "en".into(),
                    )
                    .await;
            } else {
                let code = status
                    .code()
                    .and_then(|c| u32::try_from(c).ok())
                    .unwrap_or(255);
                let _ = handle.exit_status_request(id, code).await;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "waiting for child failed");
            let _ = handle.exit_status_request(id, 255).await;
        }
    }
    let _ = tx.close().await;
}
