//! [`DockerProvider`]: the `Provider` trait on a Docker engine (see the crate docs for names,
//! labels, tags volumes and fixed addresses).
//!
//! By idea: this file holds the provider, its client, the image check and the `Provider`
//! implementation; [`config`] how it is set up from a spec, `node` the container of a node,
//! `network` the cluster network and `tags_volume` the tag sets that outlive a container's
//! immutable labels.

mod config;
mod network;
mod node;
mod tags_volume;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use gantry_core::tags::{self, TagFilter, Tags, World};
use gantry_provider::{ClusterRequest, NodeInfo, NodeRequest, Provider, Result};
use tokio::sync::{Mutex, OnceCell};

pub use config::DockerConfig;

use crate::error::DockerError;
use crate::{LABEL_KIND, container_name, network_name};

/// The Docker provider. Cheap to build: the engine is contacted on first use.
pub struct DockerProvider {
    cfg: DockerConfig,
    host: String,
    client: OnceCell<Docker>,
    /// Creating a cluster network (probe, then create) one at a time within this process.
    net_lock: Mutex<()>,
    /// Choosing a free address and creating the container that takes it, one at a time.
    ip_lock: Mutex<()>,
}

/// The world a request's resources must belong to: its `gantry-world` tag, and (for what an
/// older gantry made without one) its cluster uid.
fn world_of_request(t: &Tags) -> World {
    let w = World::new(t.get(tags::WORLD).cloned().unwrap_or_default());
    match t.get(tags::CLUSTER_UID) {
        Some(uid) => w.with_uid(uid.clone()),
        None => w,
    }
}

impl DockerProvider {
    pub fn new(cfg: DockerConfig) -> DockerProvider {
        let host = crate::resolve_host(cfg.host.as_deref());
        DockerProvider {
            cfg,
            host,
            client: OnceCell::new(),
            net_lock: Mutex::new(()),
            ip_lock: Mutex::new(()),
        }
    }

    /// The engine this provider talks to (`unix://…` or `tcp://…`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The connected client, after a version handshake (the API version is negotiated down to
    /// the engine's, e.g. 1.41 for Docker 20.10).
    pub(crate) async fn docker(&self) -> Result<&Docker, DockerError> {
        self.client
            .get_or_try_init(|| async {
                let unreachable = |source| DockerError::Unreachable {
                    host: self.host.clone(),
                    source,
                };
                let d = Docker::connect_with_host(&self.host)
                    .map_err(unreachable)?
                    .with_timeout(Duration::from_secs(60));
                let d = tokio::time::timeout(Duration::from_secs(15), d.negotiate_version())
                    .await
                    .map_err(|_| unreachable(bollard::errors::Error::RequestTimeoutError))?
                    .map_err(unreachable)?;
                Ok(d)
            })
            .await
    }

    fn image_of(&self, req_image: &str) -> String {
        config::image_for(&self.cfg.image, req_image)
    }

    async fn check_image(&self, image: &str) -> Result<(), DockerError> {
        let d = self.docker().await?;
        match d.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Err(DockerError::ImageMissing {
                image: image.to_string(),
                host: self.host.clone(),
            }),
            Err(e) => Err(DockerError::api("inspect image", image)(e)),
        }
    }

    fn label_filters(filter: &TagFilter, kind: &str) -> HashMap<String, Vec<String>> {
        let mut labels: Vec<String> = filter
            .equals
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.push(format!("{LABEL_KIND}={kind}"));
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), labels);
        filters
    }

    async fn delete_resources(&self, filter: &TagFilter) -> Result<(), DockerError> {
        self.delete_tag_volumes(filter).await?;
        self.delete_networks(filter).await
    }

    async fn ensure(&self, req: &ClusterRequest) -> Result<(), DockerError> {
        // Everything that can be refused is checked before anything is created.
        let mut images = self.cfg.images.clone();
        if images.is_empty() {
            images.push(self.cfg.image.clone());
        }
        for i in &images {
            self.check_image(i).await?;
        }
        self.ensure_network(&req.project, &req.cluster, &req.tags)
            .await?;
        Ok(())
    }
}

/// gantry's tags among a resource's labels.
fn gantry_labels(labels: &HashMap<String, String>) -> Tags {
    labels
        .iter()
        .filter(|(k, _)| k.starts_with("gantry-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[async_trait]
impl Provider for DockerProvider {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn list(&self, filter: &TagFilter) -> Result<Vec<NodeInfo>> {
        self.list_nodes(filter)
            .await
            .map_err(|e| e.into_provider("list", &self.host))
    }

    async fn create_node(&self, req: &NodeRequest) -> Result<NodeInfo> {
        let cname = container_name(&req.project, &req.name);
        self.create(req)
            .await
            .map_err(|e| e.into_provider("create_node", &cname))
    }

    async fn start_node(&self, node: &NodeInfo) -> Result<NodeInfo> {
        self.start(node)
            .await
            .map_err(|e| e.into_provider("start_node", &node.name))
    }

    async fn stop_node(&self, node: &NodeInfo) -> Result<NodeInfo> {
        self.stop(node)
            .await
            .map_err(|e| e.into_provider("stop_node", &node.name))
    }

    async fn delete_node(&self, node: &NodeInfo) -> Result<()> {
        self.delete(node)
            .await
            .map_err(|e| e.into_provider("delete_node", &node.name))
    }

    async fn ensure_cluster_resources(&self, req: &ClusterRequest) -> Result<()> {
        let net = network_name(&req.project, &req.cluster);
        self.ensure(req)
            .await
            .map_err(|e| e.into_provider("ensure_cluster_resources", &net))
    }

    async fn delete_cluster_resources(&self, filter: &TagFilter) -> Result<()> {
        // A network named in the spec is the user's: it carries no `gantry.kind` label, so
        // only gantry's own network and tags volumes match here.
        let what = filter
            .equals
            .get(tags::CLUSTER)
            .cloned()
            .unwrap_or_else(|| "resources".into());
        self.delete_resources(filter)
            .await
            .map_err(|e| e.into_provider("delete_cluster_resources", &what))
    }

    async fn set_tags(&self, node: &NodeInfo, tags: &Tags) -> Result<NodeInfo> {
        self.set_node_tags(node, tags)
            .await
            .map_err(|e| e.into_provider("set_tags", &node.name))
    }

    fn concurrency(&self) -> usize {
        16
    }

    fn shares_host_filesystem(&self) -> bool {
        false
    }

    fn boot_timeout(&self) -> Duration {
        self.cfg.boot_timeout
    }
}
