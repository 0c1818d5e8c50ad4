//! The SSH transport ([`SshTransport`]: one connection per node, reused by every operation of one
//! command) and SSH reachability ([`wait_ready`]: a node answers a real handshake and `true`),
//! side by side: they are the only places the engine opens SSH sessions, so the engine reaches
//! nodes through this module and the provider's own transports, nowhere else.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gantry_provider::NodeInfo;
use gantry_ssh::{ClientConfig, ConnectSpec, Session, SshError};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{ExitStatus, NodeTarget, OutputSink, Transport, TransportError};
use crate::dag::StepError;

/// An SSH failure, classified: transport errors are retried, the rest never is.
fn classify(e: SshError) -> TransportError {
    if e.is_transport() {
        TransportError::transport(e)
    } else {
        TransportError::command(e)
    }
}

fn status(s: gantry_ssh::ExitStatus) -> ExitStatus {
    ExitStatus {
        code: s.code,
        signal: s.signal,
    }
}

/// The transport's sink as the SSH session's.
struct Sink<'a>(&'a mut dyn OutputSink);

impl gantry_ssh::OutputSink for Sink<'_> {
    fn stdout(&mut self, data: &[u8]) {
        self.0.stdout(data);
    }
    fn stderr(&mut self, data: &[u8]) {
        self.0.stderr(data);
    }
}

/// Where to connect for `node`: its SSH endpoint, pinned under its name.
fn connect_spec(node: &NodeTarget) -> Result<ConnectSpec, TransportError> {
    let e = node
        .ssh_endpoint()
        .ok_or_else(|| TransportError::command(format!("{} has no ssh endpoint", node.name)))?;
    Ok(ConnectSpec {
        alias: node.name.clone(),
        host: e.host.clone(),
        port: e.port,
        user: e.user.clone(),
    })
}

/// SSH transport with one connection per node reused by every operation of one command.
pub struct SshTransport {
    cfg: ClientConfig,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl SshTransport {
    pub fn new(cfg: ClientConfig) -> Self {
        SshTransport {
            cfg,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    pub async fn session(&self, node: &NodeTarget) -> Result<Arc<Session>, TransportError> {
        if let Some(s) = self.sessions.lock().await.get(&node.name) {
            return Ok(s.clone());
        }
        let spec = connect_spec(node)?;
        let s = Arc::new(Session::connect(&spec, &self.cfg).await.map_err(classify)?);
        self.sessions
            .lock()
            .await
            .insert(node.name.clone(), s.clone());
        Ok(s)
    }

    /// Drops a cached session after a transport error so a retry reconnects.
    pub async fn forget(&self, node: &NodeTarget) {
        self.sessions.lock().await.remove(&node.name);
    }

    pub async fn close_all(&self) {
        let all: Vec<_> = self.sessions.lock().await.drain().map(|(_, s)| s).collect();
        for s in all {
            s.close().await;
        }
    }

    /// Converts an SSH result, dropping the cached session after a transport error.
    async fn classify<T>(
        &self,
        node: &NodeTarget,
        r: Result<T, SshError>,
    ) -> Result<T, TransportError> {
        if let Err(e) = &r
            && e.is_transport()
        {
            self.forget(node).await;
        }
        r.map_err(classify)
    }
}

#[async_trait]
impl Transport for SshTransport {
    async fn exec(
        &self,
        node: &NodeTarget,
        command: &str,
        stdin: Option<&[u8]>,
        sink: &mut dyn OutputSink,
    ) -> Result<ExitStatus, TransportError> {
        let s = self.session(node).await?;
        let r = s.exec(command, stdin, &mut Sink(sink)).await;
        self.classify(node, r).await.map(status)
    }

    async fn upload(
        &self,
        node: &NodeTarget,
        local: &Path,
        remote: &str,
    ) -> Result<u64, TransportError> {
        let s = self.session(node).await?;
        let r = s.upload(local, remote).await;
        self.classify(node, r).await
    }

    async fn download(
        &self,
        node: &NodeTarget,
        remote: &str,
        local: &Path,
    ) -> Result<u64, TransportError> {
        let s = self.session(node).await?;
        let r = s.download(remote, local).await;
        self.classify(node, r).await
    }

    async fn shell(
        &self,
        node: &NodeTarget,
        command: Option<&str>,
    ) -> Result<ExitStatus, TransportError> {
        let s = self.session(node).await?;
        let r = s.shell(command).await;
        self.classify(node, r).await.map(status)
    }

    async fn close(&self) {
        self.close_all().await;
    }
}

/// Pins the host key the provider reports for `node` (one it made itself), replacing any
/// earlier pin, so the first connection is checked like every later one: whatever else answers
/// on the node's address is refused as a changed host key instead of being trusted. Nodes
/// whose key the provider does not know are pinned on first contact.
pub(crate) fn pin_reported_key(
    known_hosts: &gantry_ssh::KnownHosts,
    node: &NodeInfo,
) -> Result<(), StepError> {
    match &node.host_key {
        Some(key) => known_hosts
            .pin(&node.name, key)
            .map_err(|e| StepError::fatal(e.to_string())),
        None => Ok(()),
    }
}

/// Waits until `node` answers SSH (a real handshake and `true`), pinning its host key: the
/// one the provider reported, else the first one presented. Each attempt is a fresh connection,
/// closed at once: the node's readiness, not a session to keep.
pub(crate) async fn wait_ready(
    ssh: ClientConfig,
    node: NodeInfo,
    timeout: Duration,
    cancel: CancellationToken,
) -> Result<(), StepError> {
    let target = NodeTarget::ssh(&node)
        .ok_or_else(|| StepError::fatal(format!("{} has no ssh endpoint", node.name)))?;
    let spec = connect_spec(&target).map_err(|e| StepError::fatal(e.to_string()))?;
    pin_reported_key(&ssh.known_hosts, &node)?;
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        let attempt = async {
            let s = Session::connect(&spec, &ssh).await?;
            let out = s.exec_capture("true").await;
            s.close().await;
            out
        };
        match attempt.await {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => {
                return Err(StepError::fatal(format!(
                    "`true` exited with {:?} on {}",
                    o.status, spec.alias
                )));
            }
            Err(e) if !e.is_transport() => return Err(StepError::fatal(e.to_string())),
            Err(e) if Instant::now() >= deadline => {
                return Err(StepError::fatal(format!(
                    "{} did not answer ssh within {} s: {e}",
                    spec.alias,
                    timeout.as_secs()
                )));
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(StepError::fatal("interrupted while waiting for ssh")),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}
