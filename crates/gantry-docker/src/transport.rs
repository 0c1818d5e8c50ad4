//! Docker exec as gantry's [`Transport`]: what `run`, `put`, `get`, `ssh` and blueprints use for
//! a docker cluster's nodes. It lives here, with the provider, so that the engine never calls
//! Docker's API itself and this crate never depends on the engine: the `Transport` trait sits
//! below both, in `gantry-provider`.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use gantry_provider::NodeInfo;
use gantry_provider::transport::{ExitStatus, NodeTarget, OutputSink, Transport, TransportError};

use crate::{DockerError, DockerProvider, container_name};

/// Docker exec as a [`Transport`]: a node's container is found by its deterministic name
/// ([`container_name`]), its handle.
pub struct DockerTransport {
    docker: Arc<DockerProvider>,
    project: String,
}

impl DockerTransport {
    pub fn new(docker: Arc<DockerProvider>, project: &str) -> DockerTransport {
        DockerTransport {
            docker,
            project: project.to_string(),
        }
    }
}

/// An engine that cannot be reached or a container that is gone or stopped is a transport
/// error (retried); anything else is not.
fn classify(e: DockerError) -> TransportError {
    if e.is_transport() {
        TransportError::transport(e)
    } else {
        TransportError::command(e)
    }
}

/// The node's container.
fn container(node: &NodeTarget) -> Result<&str, TransportError> {
    node.handle_name().ok_or_else(|| {
        TransportError::command(format!(
            "{} is not addressed by a container name",
            node.name
        ))
    })
}

/// A container's exit code as a status (a signal N shows as 128+N, as in a shell).
fn status(code: i64) -> ExitStatus {
    ExitStatus::code(u32::try_from(code).unwrap_or(u32::MAX))
}

#[async_trait]
impl Transport for DockerTransport {
    fn target(&self, node: &NodeInfo) -> Option<NodeTarget> {
        Some(NodeTarget::handle(
            &node.name,
            &container_name(&self.project, &node.name),
        ))
    }

    async fn exec(
        &self,
        node: &NodeTarget,
        command: &str,
        stdin: Option<&[u8]>,
        sink: &mut dyn OutputSink,
    ) -> Result<ExitStatus, TransportError> {
        let code = self
            .docker
            .exec(container(node)?, &["/bin/sh", "-c", command], stdin, sink)
            .await
            .map_err(classify)?;
        Ok(status(code))
    }

    async fn upload(
        &self,
        node: &NodeTarget,
        local: &Path,
        remote: &str,
    ) -> Result<u64, TransportError> {
        self.docker
            .upload(container(node)?, local, remote)
            .await
            .map_err(classify)
    }

    async fn download(
        &self,
        node: &NodeTarget,
        remote: &str,
        local: &Path,
    ) -> Result<u64, TransportError> {
        self.docker
            .download(container(node)?, remote, local)
            .await
            .map_err(classify)
    }

    async fn shell(
        &self,
        node: &NodeTarget,
        command: Option<&str>,
    ) -> Result<ExitStatus, TransportError> {
        let code = self
            .docker
            .shell(container(node)?, command)
            .await
            .map_err(classify)?;
        Ok(status(code))
    }
}
