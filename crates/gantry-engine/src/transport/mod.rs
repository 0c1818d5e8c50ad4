//! Running commands and moving files on nodes, over any transport, many nodes at once.
//!
//! The [`Transport`] trait and its types live in `gantry-provider` (re-exported here), so that a
//! provider can bring its own (Docker's exec API, in `gantry-docker`) without depending on the
//! engine. The engine brings the SSH one ([`ssh::SshTransport`], with [`ssh::wait_ready`]: SSH
//! reachability, beside it) for every machine with an SSH endpoint (local nodes, VMs).
//! [`fan_out`] runs one operation over many nodes with bounded concurrency and returns results
//! in input order, whatever the transport. Errors are classified the same way for all of them:
//! a *transport* error is retried with backoff; a *command* error never is.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
pub use gantry_provider::transport::{
    Address, ErrorClass, ExitStatus, NodeTarget, OutputSink, Transport, TransportError,
};

pub mod ssh;

pub use ssh::SshTransport;

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
                    Err(e) if e.is_transport() && attempt < attempts => {
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
