//! The Docker side of the binary: the docker provider of a spec, and the Docker exec transport
//! (the engine's [`Transport`] over `gantry_docker`'s exec and archive calls) that `run`, `put`,
//! `get`, `ssh` and blueprints use for docker clusters.
//!
//! It lives here, not in the engine, so the engine never calls a provider's API (an
//! architecture invariant) and `gantry-docker` does not depend on the engine: the binary is the
//! one place that knows both. Without the `docker` cargo feature every entry point says so.

use std::sync::Arc;

use gantry_core::{ClusterSpec, DockerOptions};
use gantry_engine::transport::Transport;
use gantry_provider::Provider;

use crate::exit::{self, CliResult, Failure};

#[cfg(feature = "docker")]
mod imp {
    use std::path::Path;
    use std::sync::Arc;

    use async_trait::async_trait;
    use gantry_docker::{DockerConfig, DockerProvider, ExecOutput, container_name};
    use gantry_engine::transport::{ExitStatus, NodeTarget, OutputSink, Transport, TransportError};
    use gantry_provider::NodeInfo;

    pub fn provider(
        spec: &gantry_core::ClusterSpec,
        opts: &gantry_core::DockerOptions,
    ) -> Arc<DockerProvider> {
        Arc::new(DockerProvider::new(DockerConfig::from_spec(spec, opts)))
    }

    /// Docker exec as a [`Transport`]: a node's container is found by its deterministic name.
    pub struct DockerTransport {
        pub docker: Arc<DockerProvider>,
        pub project: String,
    }

    struct Sink<'a>(&'a mut dyn OutputSink);

    impl ExecOutput for Sink<'_> {
        fn stdout(&mut self, data: &[u8]) {
            self.0.stdout(data);
        }
        fn stderr(&mut self, data: &[u8]) {
            self.0.stderr(data);
        }
    }

    fn classify(e: gantry_docker::DockerError) -> TransportError {
        TransportError {
            transport: e.is_transport(),
            message: e.to_string(),
        }
    }

    #[async_trait]
    impl Transport for DockerTransport {
        fn target(&self, node: &NodeInfo) -> Option<NodeTarget> {
            Some(NodeTarget::addressed(
                &node.name,
                &container_name(&self.project, &node.name),
                "root",
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
                .exec(
                    &node.ssh.host,
                    &["/bin/sh", "-c", command],
                    stdin,
                    &mut Sink(sink),
                )
                .await
                .map_err(classify)?;
            Ok(ExitStatus {
                code: Some(u32::try_from(code).unwrap_or(u32::MAX)),
                signal: None,
            })
        }

        async fn upload(
            &self,
            node: &NodeTarget,
            local: &Path,
            remote: &str,
        ) -> Result<u64, TransportError> {
            self.docker
                .upload(&node.ssh.host, local, remote)
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
                .download(&node.ssh.host, remote, local)
                .await
                .map_err(classify)
        }
    }
}

/// The docker provider of a spec (its engine is contacted on first use).
pub fn provider(spec: &ClusterSpec, opts: &DockerOptions) -> Result<Arc<dyn Provider>, Failure> {
    #[cfg(feature = "docker")]
    {
        Ok(imp::provider(spec, opts))
    }
    #[cfg(not(feature = "docker"))]
    {
        let _ = (spec, opts);
        Err(not_built())
    }
}

#[cfg(not(feature = "docker"))]
fn not_built() -> Failure {
    Failure::new(
        exit::USAGE,
        anyhow::anyhow!("this gantry was built without the docker provider"),
    )
    .hint("rebuild with the default features (`cargo build` without --no-default-features)")
}

/// The transport of a cluster's nodes when it is not SSH: Docker exec for docker clusters.
pub fn transport(spec: &ClusterSpec, project: &str) -> Option<Arc<dyn Transport>> {
    match &spec.provider {
        #[cfg(feature = "docker")]
        gantry_core::ProviderSpec::Docker(opts) => Some(Arc::new(imp::DockerTransport {
            docker: imp::provider(spec, opts),
            project: project.to_string(),
        })),
        _ => {
            let _ = project;
            None
        }
    }
}

/// `gantry ssh NODE [-- CMD]` on a docker node: an interactive exec (with a tty when stdin is a
/// terminal). Returns the command's exit code.
pub async fn shell(
    spec: &ClusterSpec,
    opts: &DockerOptions,
    project: &str,
    node: &str,
    command: Option<&str>,
) -> CliResult {
    #[cfg(feature = "docker")]
    {
        let docker = imp::provider(spec, opts);
        let container = gantry_docker::container_name(project, node);
        match docker.shell(&container, command).await {
            Ok(code) => Ok(i32::try_from(code).unwrap_or(exit::FAILURE)),
            Err(e) => {
                let code = if e.is_transport() {
                    exit::TRANSPORT
                } else {
                    exit::FAILURE
                };
                Err(Failure::new(code, anyhow::anyhow!("{node}: {e}")))
            }
        }
    }
    #[cfg(not(feature = "docker"))]
    {
        let _ = (spec, opts, project, node, command);
        Err(not_built())
    }
}

/// The default engine (`DOCKER_HOST`, else the default socket), for finding a project's docker
/// nodes by their labels when no record names an engine. None when the binary has no docker
/// provider.
pub fn default_engine() -> Option<Arc<dyn Provider>> {
    engine(None).map(|(_, p)| p)
}

/// The engine a spec's `host` names (None: the default one) as (its address, a provider that
/// lists and deletes its containers by label), for the listing of the whole project. None when
/// the binary has no docker provider.
pub fn engine(host: Option<&str>) -> Option<(String, Arc<dyn Provider>)> {
    #[cfg(feature = "docker")]
    {
        let p = gantry_docker::DockerProvider::new(gantry_docker::DockerConfig::new(
            host.map(str::to_owned),
            "none",
        ));
        Some((
            p.host().to_string(),
            gantry_provider::checked::Checked::wrap(Arc::new(p)),
        ))
    }
    #[cfg(not(feature = "docker"))]
    {
        let _ = host;
        None
    }
}
