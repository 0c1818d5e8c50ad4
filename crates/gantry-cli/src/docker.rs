//! The Docker side of the binary: the docker provider of a spec, and its Docker exec transport
//! (`gantry_docker::DockerTransport`) that `run`, `put`, `get`, `ssh` and blueprints use for
//! docker clusters. Without the `docker` cargo feature every entry point says so.

use std::sync::Arc;

use gantry_core::{ClusterSpec, DockerOptions};
use gantry_engine::transport::Transport;
use gantry_provider::Provider;

use crate::exit::Failure;

#[cfg(feature = "docker")]
mod imp {
    use std::sync::Arc;

    use gantry_docker::{DockerConfig, DockerProvider};

    pub fn provider(
        spec: &gantry_core::ClusterSpec,
        opts: &gantry_core::DockerOptions,
    ) -> Arc<DockerProvider> {
        Arc::new(DockerProvider::new(DockerConfig::from_spec(spec, opts)))
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
        crate::exit::USAGE,
        anyhow::anyhow!("this gantry was built without the docker provider"),
    )
    .hint("rebuild with the default features (`cargo build` without --no-default-features)")
}

/// The transport of a cluster's nodes when it is not SSH: Docker exec for docker clusters.
pub fn transport(spec: &ClusterSpec, project: &str) -> Option<Arc<dyn Transport>> {
    match &spec.provider {
        #[cfg(feature = "docker")]
        gantry_core::ProviderSpec::Docker(opts) => Some(Arc::new(
            gantry_docker::DockerTransport::new(imp::provider(spec, opts), project),
        )),
        _ => {
            let _ = project;
            None
        }
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
