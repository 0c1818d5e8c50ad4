//! `run`, `put` and `get` by target: the nodes a target names, reached through their cluster's
//! transport (Docker exec for docker clusters, else SSH), with the fan-out's bounds. The front
//! end supplies where output goes (an [`OutputSink`] per node) and renders the results.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gantry_core::Target;

use super::cluster::{select, select_nodes};
use super::ops::App;
use crate::EngineError;
use crate::transport::{
    ExitStatus, FanOutOptions, NodeTarget, OutputSink, SshTransport, Transport, TransportError,
    fan_out,
};

/// The nodes a target names and how they are reached.
pub struct RemoteTarget {
    pub nodes: Vec<NodeTarget>,
    pub transport: Arc<dyn Transport>,
    cancel: tokio_util::sync::CancellationToken,
}

impl App {
    /// The nodes `target` names, each as its cluster's transport reaches it. A node the
    /// transport cannot reach (no SSH endpoint: stopped, or not booted) is an error naming it.
    pub async fn remote(&self, target: &Target) -> Result<RemoteTarget, EngineError> {
        let c = self.cluster(&target.cluster, None).await?;
        // Another gantry home's local cluster (a team sharing the store, on this machine): this
        // home's provider cannot list its nodes, but their records say where SSH reaches them,
        // and the project's key and pins come from the store.
        let chosen = if c.ctx.transport.is_none()
            && c.ctx.unreachable_node(&target.cluster).await?.is_some()
        {
            let recorded = self
                .store
                .list_nodes(&self.project, &target.cluster)
                .await?;
            select(
                recorded.iter().map(recorded_node).collect(),
                &self.project,
                target,
            )?
        } else {
            select_nodes(&c.ctx.provider, &self.project, target).await?
        };
        // The cluster's own transport (Docker exec), else SSH; either serves `gantry ssh` too
        // (`Transport::shell`).
        let transport: Arc<dyn Transport> = match c.ctx.transport {
            Some(t) => t,
            None => Arc::new(SshTransport::new(self.ssh.clone())),
        };
        let nodes = chosen
            .iter()
            .map(|n| {
                transport.target(n).ok_or_else(|| EngineError::NoEndpoint {
                    node: n.name.clone(),
                    state: n.state.as_str().into(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RemoteTarget {
            nodes,
            transport,
            cancel: self.cancel.clone(),
        })
    }
}

/// A node as its record says (for a node this home's provider cannot list).
fn recorded_node(n: &gantry_state::NodeRecord) -> gantry_provider::NodeInfo {
    use gantry_provider::{NodeState, SshEndpoint};
    let state = match n.state.as_str() {
        "pending" => NodeState::Pending,
        "running" => NodeState::Running,
        "stopping" => NodeState::Stopping,
        "stopped" => NodeState::Stopped,
        "terminated" => NodeState::Terminated,
        _ => NodeState::Unknown,
    };
    let ssh = match (&n.ssh_host, n.ssh_port, &n.ssh_user) {
        (Some(host), Some(port), Some(user)) => Some(SshEndpoint {
            host: host.clone(),
            port,
            user: user.clone(),
        }),
        _ => None,
    };
    gantry_provider::NodeInfo {
        name: n.name.clone(),
        provider_id: n.provider_id.clone(),
        pool: n.pool.clone(),
        index: n.index,
        address: n.address.as_deref().and_then(|a| a.parse().ok()),
        ssh,
        state,
        tags: n.tags.clone(),
        created_at: n.created_at.to_string(),
        host_key: None,
    }
}

impl RemoteTarget {
    /// Runs `command` on every node, at most `concurrency` at once; each node's output goes to
    /// the sink `sink` makes for it, and `done` gets the sink when its node's command ended.
    /// Results in node order: the exit status and the sink, or why the node could not run it.
    pub async fn run<S, F, D>(
        &self,
        command: &str,
        concurrency: usize,
        sink: F,
        done: D,
    ) -> Result<Vec<Result<(ExitStatus, S), TransportError>>, EngineError>
    where
        S: OutputSink + Send + 'static,
        F: Fn(&NodeTarget) -> S + Send + Sync + 'static,
        D: Fn(&mut S) + Send + Sync + 'static,
    {
        let (transport, command) = (self.transport.clone(), Arc::new(command.to_string()));
        let (sink, done) = (Arc::new(sink), Arc::new(done));
        self.fan_out(concurrency, move |node| {
            let (t, command, sink, done) = (
                transport.clone(),
                command.clone(),
                sink.clone(),
                done.clone(),
            );
            Box::pin(async move {
                let mut s = sink(&node);
                let status = t.exec(&node, &command, None, &mut s).await;
                done(&mut s);
                status.map(|st| (st, s))
            })
        })
        .await
    }

    /// Uploads `local` to `remote` on every node: the bytes sent, per node in node order.
    pub async fn put(
        &self,
        local: &Path,
        remote: &str,
        concurrency: usize,
    ) -> Result<Vec<Result<u64, TransportError>>, EngineError> {
        let (transport, local, remote) = (
            self.transport.clone(),
            Arc::new(local.to_path_buf()),
            Arc::new(remote.to_string()),
        );
        self.fan_out(concurrency, move |node| {
            let (t, local, remote) = (transport.clone(), local.clone(), remote.clone());
            Box::pin(async move { t.upload(&node, &local, &remote).await })
        })
        .await
    }

    /// Downloads `remote` from every node to the local path `dest` gives for it: the bytes
    /// received, per node in node order.
    pub async fn get<F>(
        &self,
        remote: &str,
        dest: F,
        concurrency: usize,
    ) -> Result<Vec<Result<u64, TransportError>>, EngineError>
    where
        F: Fn(&NodeTarget) -> PathBuf + Send + Sync + 'static,
    {
        let (transport, remote, dest) = (
            self.transport.clone(),
            Arc::new(remote.to_string()),
            Arc::new(dest),
        );
        self.fan_out(concurrency, move |node| {
            let (t, remote, to) = (transport.clone(), remote.clone(), dest(&node));
            Box::pin(async move { t.download(&node, &remote, &to).await })
        })
        .await
    }

    /// Fans `op` out over the nodes, stopped by the app's cancellation (Ctrl-C), then closes
    /// the transport's connections.
    async fn fan_out<T, F>(
        &self,
        concurrency: usize,
        op: F,
    ) -> Result<Vec<Result<T, TransportError>>, EngineError>
    where
        T: Send + 'static,
        F: Fn(NodeTarget) -> futures::future::BoxFuture<'static, Result<T, TransportError>>
            + Send
            + Sync
            + 'static,
    {
        let opts = FanOutOptions {
            concurrency,
            ..Default::default()
        };
        let results = tokio::select! {
            r = fan_out(&self.nodes, &opts, op) => r,
            _ = self.cancel.cancelled() => return Err(EngineError::Interrupted),
        };
        self.transport.close().await;
        Ok(results)
    }
}
