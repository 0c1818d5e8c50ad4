//! [`DockerConfig`]: how a Docker provider is set up, from a cluster spec's `provider.docker`
//! section (engine, image, network, privileged, published ports, the images to check).

use std::time::Duration;

use gantry_core::ClusterSpec;

use crate::options::DockerOptions;

/// How the provider is set up; [`DockerConfig::from_spec`] builds it from a cluster spec.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The engine (see [`crate::resolve_host`]); None: `DOCKER_HOST` or the default socket.
    pub host: Option<String>,
    /// The image of pools whose image is `default`.
    pub image: String,
    /// An existing network to use instead of one per cluster.
    pub network: Option<String>,
    pub privileged: bool,
    /// Container ports published on 127.0.0.1 (ephemeral host ports): the spec's `allow` rules
    /// other than `from: cluster` (nodes of a cluster reach each other on its network anyway).
    pub publish: Vec<u16>,
    /// The images the spec's pools use, checked before anything is created.
    pub images: Vec<String>,
    /// How long a container may take to answer an exec of `true` after it starts.
    pub boot_timeout: Duration,
}

impl DockerConfig {
    pub fn from_spec(spec: &ClusterSpec, opts: &DockerOptions) -> DockerConfig {
        let mut publish: Vec<u16> = spec
            .network
            .allow
            .iter()
            .filter(|r| r.from != "cluster")
            .map(|r| r.port)
            .collect();
        publish.sort_unstable();
        publish.dedup();
        let mut images: Vec<String> = spec
            .pools
            .iter()
            .map(|p| image_for(&opts.image, &p.image))
            .collect();
        images.sort();
        images.dedup();
        DockerConfig {
            host: opts.host.clone(),
            image: opts.image.clone(),
            network: opts.network.clone(),
            privileged: opts.privileged,
            publish,
            images,
            boot_timeout: Duration::from_secs(60),
        }
    }

    /// A config for `image` with nothing else set (tests, listing for gc).
    pub fn new(host: Option<String>, image: &str) -> DockerConfig {
        DockerConfig {
            host,
            image: image.to_string(),
            network: None,
            privileged: false,
            publish: vec![],
            images: vec![],
            boot_timeout: Duration::from_secs(60),
        }
    }
}

pub(super) fn image_for(default: &str, pool_image: &str) -> String {
    if pool_image == "default" || pool_image.is_empty() {
        default.to_string()
    } else {
        pool_image.to_string()
    }
}
