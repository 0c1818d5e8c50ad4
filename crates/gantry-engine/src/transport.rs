//! Running commands and moving files on nodes, over any transport, many nodes at once.
//!
//! [`Transport`] is what a node is reached through: [`SshTransport`] for every machine with an
//! SSH endpoint (local nodes, VMs), or one a provider supplies (Docker's exec API, implemented
//! next to the Docker provider and handed in by the caller, so the engine never calls a
//! provider's API itself). [`fan_out`] runs one operation over many nodes with bounded
//! concurrency and returns results in input order, whatever the transport. Errors are
//! classified the same way for all of them: a *transport* error (could not connect, connection
//! dropped, engine gone, container gone or stopped) is retried with backoff; a *command* error
//! (the remote program ran and failed) never is.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use gantry_provider::NodeInfo;
use gantry_ssh::{ClientConfig, ConnectSpec, Session, SshError};
pub use gantry_ssh::{ExitStatus, OutputSink};
use tokio::sync::Mutex;

/// A node as a transport needs it: built by [`Transport::target`].
#[derive(Debug, Clone)]
pub struct NodeTarget {
    pub name: String,
    /// Where the SSH transport connects. Transports that address nodes otherwise keep their own
    /// address here (Docker: `host` is the container's name, `port` 0) and ignore the rest.
    pub ssh: ConnectSpec,
}

impl NodeTarget {
    /// A target for a transport that reaches nodes by a name of its own (`address`), not over
    /// SSH.
    pub fn addressed(name: &str, address: &str, user: &str) -> NodeTarget {
        NodeTarget {
            name: name.to_string(),
            ssh: ConnectSpec {
                alias: name.to_string(),
                host: address.to_string(),
                port: 0,
                user: user.to_string(),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    /// True for connection-level failures (retryable); false for e.g. a refused host key.
    pub transport: bool,
    pub message: String,
}

impl From<SshError> for TransportError {
    fn from(e: SshError) -> Self {
        TransportError {
            transport: e.is_transport(),
            message: e.to_string(),
        }
    }
}

/// How commands and files reach nodes. One instance serves one command (it may cache
/// connections); [`Transport::close`] ends them.
#[async_trait]
pub trait Transport: Send + Sync {
    /// The target of a listed node, or None when this transport cannot reach it (e.g. an SSH
    /// transport and a node without an SSH endpoint).
    fn target(&self, node: &NodeInfo) -> Option<NodeTarget> {
        crate::ops::connect_spec(node).map(|ssh| NodeTarget {
            name: node.name.clone(),
            ssh,
        })
    }

    /// Runs `command` through the node's shell, feeding `stdin` (then end-of-file) when given,
    /// streaming output to `sink`.
    async fn exec(
        &self,
        node: &NodeTarget,
        command: &str,
        stdin: Option<&[u8]>,
        sink: &mut dyn OutputSink,
    ) -> Result<ExitStatus, TransportError>;
    async fn upload(
        &self,
        node: &NodeTarget,
        local: &Path,
        remote: &str,
    ) -> Result<u64, TransportError>;
    async fn download(
        &self,
        node: &NodeTarget,
        remote: &str,
        local: &Path,
    ) -> Result<u64, TransportError>;

    /// Ends cached connections (the default has none).
    async fn close(&self) {}
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
        let s = Arc::new(Session::connect(&node.ssh, &self.cfg).await?);
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
        r.map_err(Into::into)
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
        let r = s.exec(command, stdin, sink).await;
        self.classify(node, r).await
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

    async fn close(&self) {
        self.close_all().await;
    }
}

/// Bounds and retry policy of a fan-out.
#[derive(Debug, Clone)]
pub struct FanOutOptions {
    pub concurrency: usize,
    /// Attempts for transport errors (command errors are never retried).
    pub attempts: u32,
    pub base_delay: Duration,
}

impl Default for FanOutOptions {
    fn default() -> Self {
        FanOutOptions {
            concurrency: 64,
            attempts: 3,
            base_delay: Duration::from_millis(200),
        }
    }
}

/// Runs `op` on every node, at most `concurrency` at once, retrying transport errors. Results
/// come back in the order of `nodes`.
pub async fn fan_out<T, F>(
    nodes: &[NodeTarget],
    opts: &FanOutOptions,
    op: F,
) -> Vec<Result<T, TransportError>>
where
    T: Send + 'static,
    F: Fn(NodeTarget) -> BoxFuture<'static, Result<T, TransportError>> + Send + Sync + 'static,
{
    use futures::StreamExt;
    let op = Arc::new(op);
    let dag_opts = crate::dag::Options {
        base_delay: opts.base_delay,
        ..Default::default()
    };
    let attempts = opts.attempts.max(1);
    futures::stream::iter(nodes.iter().cloned().map(|node| {
        let op = op.clone();
        let dag_opts = dag_opts.clone();
        async move {
            let mut attempt = 1;
            loop {
                match op(node.clone()).await {
                    Err(e) if e.transport && attempt < attempts => {
                        tokio::time::sleep(crate::dag::backoff(&dag_opts, attempt)).await;
                        attempt += 1;
                    }
                    r => return r,
                }
            }
        }
    }))
    .buffered(opts.concurrency.max(1))
    .collect()
    .await
}
