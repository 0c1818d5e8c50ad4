//! [`DockerProvider`]: the `Provider` trait on a Docker engine (see the crate docs for names,
//! labels, tags volumes and fixed addresses).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, EndpointIpamConfig,
    EndpointSettings, HostConfig, Ipam, IpamConfig, NetworkCreateRequest, NetworkingConfig,
    PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, ListNetworksOptions, ListVolumesOptions,
    RemoveContainerOptions, RemoveVolumeOptions, StopContainerOptions,
};
use gantry_core::ClusterSpec;
use gantry_core::tags::{self, TagFilter, Tags, World};
use gantry_provider::{ClusterRequest, NodeInfo, NodeRequest, NodeState, Provider, Result};
use tokio::sync::{Mutex, OnceCell};

use crate::error::DockerError;
use crate::options::{self, DockerOptions};
use crate::{
    LABEL_FOR, LABEL_IP, LABEL_KIND, LABEL_NODE, LABEL_SEQ, LABEL_TAGS, container_name,
    network_name,
};

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

fn image_for(default: &str, pool_image: &str) -> String {
    if pool_image == "default" || pool_image.is_empty() {
        default.to_string()
    } else {
        pool_image.to_string()
    }
}

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

/// The cluster network as a node needs it.
#[derive(Debug, Clone)]
struct NetInfo {
    name: String,
    /// (network address, prefix length, gateway) when gantry may pin addresses in it.
    subnet: Option<(Ipv4Addr, u8, Option<Ipv4Addr>)>,
    /// Its labels (gantry's tags, when gantry made it).
    labels: Tags,
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
        image_for(&self.cfg.image, req_image)
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

    /// The container named exactly `name`, if any (whoever made it).
    async fn find(&self, name: &str) -> Result<Option<ContainerSummary>, DockerError> {
        let d = self.docker().await?;
        let mut filters = HashMap::new();
        filters.insert("name".to_string(), vec![format!("^/{name}$")]);
        let found = d
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(DockerError::api("list containers", name))?;
        let want = format!("/{name}");
        Ok(found
            .into_iter()
            .find(|c| c.names.as_ref().is_some_and(|n| n.contains(&want))))
    }

    /// The tag sets written by `set_tags`, newest per container, of the containers of
    /// `project` (all projects when None).
    async fn overrides(&self, project: Option<&str>) -> Result<HashMap<String, Tags>, DockerError> {
        let d = self.docker().await?;
        let mut labels = vec![format!("{LABEL_KIND}=tags")];
        if let Some(p) = project {
            labels.push(format!("{}={p}", tags::PROJECT));
        }
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), labels);
        let vols = d
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(DockerError::api("list volumes", "tags"))?;
        let mut best: HashMap<String, (String, Tags)> = HashMap::new();
        for v in vols.volumes.unwrap_or_default() {
            let (Some(for_), Some(seq), Some(json)) = (
                v.labels.get(LABEL_FOR),
                v.labels.get(LABEL_SEQ),
                v.labels.get(LABEL_TAGS),
            ) else {
                continue;
            };
            let Ok(t) = serde_json::from_str::<Tags>(json) else {
                continue;
            };
            if best.get(for_).is_none_or(|(s, _)| s < seq) {
                best.insert(for_.clone(), (seq.clone(), t));
            }
        }
        Ok(best.into_iter().map(|(k, (_, t))| (k, t)).collect())
    }

    /// Volumes of the tag sets of one container.
    async fn tag_volumes(&self, container: &str) -> Result<Vec<(String, String)>, DockerError> {
        let d = self.docker().await?;
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_string(),
            vec![
                format!("{LABEL_KIND}=tags"),
                format!("{LABEL_FOR}={container}"),
            ],
        );
        let vols = d
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(DockerError::api("list volumes", container))?;
        Ok(vols
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                let seq = v.labels.get(LABEL_SEQ).cloned().unwrap_or_default();
                (v.name, seq)
            })
            .collect())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), DockerError> {
        let d = self.docker().await?;
        match d
            .remove_volume(name, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(DockerError::api("remove volume", name)(e)),
        }
    }

    /// A node as gantry sees it: its exact tags (from `gantry.tags`, overlaid by the newest
    /// tags volume), its fixed address, its state.
    fn to_node(&self, c: &ContainerSummary, overrides: &HashMap<String, Tags>) -> Option<NodeInfo> {
        let labels = c.labels.as_ref()?;
        if labels.get(LABEL_KIND).map(String::as_str) != Some("node") {
            return None;
        }
        let name = labels.get(LABEL_NODE)?.clone();
        let cname = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default();
        let mut t: Tags = labels
            .get(LABEL_TAGS)
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_else(|| {
                labels
                    .iter()
                    .filter(|(k, _)| k.starts_with("gantry-"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            });
        if let Some(o) = overrides.get(&cname) {
            t = o.clone();
        }
        let running_ip = c
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|nets| {
                nets.values()
                    .filter_map(|e| e.ip_address.as_deref())
                    .find(|ip| !ip.is_empty())
                    .and_then(|ip| ip.parse::<IpAddr>().ok())
            });
        let address = labels
            .get(LABEL_IP)
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .or(running_ip);
        let state = match c.state {
            Some(ContainerSummaryStateEnum::RUNNING) => NodeState::Running,
            Some(ContainerSummaryStateEnum::RESTARTING) => NodeState::Pending,
            // Created but never started (a run killed between create and start): not
            // running, so the next `up` starts it like a stopped node.
            Some(ContainerSummaryStateEnum::CREATED)
            | Some(ContainerSummaryStateEnum::EXITED)
            | Some(ContainerSummaryStateEnum::PAUSED) => NodeState::Stopped,
            Some(ContainerSummaryStateEnum::STOPPING) => NodeState::Stopping,
            Some(ContainerSummaryStateEnum::REMOVING) | Some(ContainerSummaryStateEnum::DEAD) => {
                NodeState::Terminated
            }
            _ => NodeState::Unknown,
        };
        let created_at = c
            .created
            .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        Some(NodeInfo {
            name,
            provider_id: c.id.clone().unwrap_or_default(),
            pool: t.get(tags::POOL).cloned().unwrap_or_default(),
            index: t
                .get(tags::INDEX)
                .and_then(|i| i.parse().ok())
                .unwrap_or_default(),
            address,
            ssh: None,
            state,
            tags: t,
            created_at,
            host_key: None,
        })
    }

    /// The container of `name` as a node, if it is one of ours.
    async fn node_by_name(&self, cname: &str) -> Result<Option<NodeInfo>, DockerError> {
        let Some(c) = self.find(cname).await? else {
            return Ok(None);
        };
        let project = c
            .labels
            .as_ref()
            .and_then(|l| l.get(tags::PROJECT))
            .cloned();
        let overrides = self.overrides(project.as_deref()).await?;
        Ok(self.to_node(&c, &overrides))
    }

    /// Finds (or creates, labelled) the network of a cluster.
    async fn ensure_network(
        &self,
        project: &str,
        cluster: &str,
        tags_in: &Tags,
    ) -> Result<NetInfo, DockerError> {
        let d = self.docker().await?;
        if let Some(n) = &self.cfg.network {
            return match d.inspect_network(n, None).await {
                // The engine lists a subnet for every network, chosen or not, and only a chosen
                // one takes fixed addresses: on the user's network, the engine assigns them.
                Ok(_) => Ok(NetInfo {
                    name: n.clone(),
                    subnet: None,
                    labels: Tags::new(),
                }),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => Err(DockerError::Invalid(format!(
                    "the spec's docker network {n} does not exist in the engine at {}; create \
                     it (`docker network create {n}`) or leave `network` out",
                    self.host
                ))),
                Err(e) => Err(DockerError::api("inspect network", n)(e)),
            };
        }
        let name = network_name(project, cluster);
        let _guard = self.net_lock.lock().await;
        if let Some(info) = self.find_network(&name).await? {
            // Another world's network of this name (its cluster has no node yet, or lost them):
            // never joined, so its owner's cluster and ours never share a network.
            if !world_of_request(tags_in).owns(&info.labels) {
                return Err(DockerError::Foreign {
                    what: "network",
                    name,
                    owner: tags::owner_of(&info.labels),
                });
            }
            return Ok(info);
        }
        // Cluster-wide labels only: a node's pool and index do not describe the network.
        let mut labels: HashMap<String, String> = tags_in
            .iter()
            .filter(|(k, _)| k.as_str() != tags::POOL && k.as_str() != tags::INDEX)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(tags::PROJECT.into(), project.into());
        labels.insert(tags::CLUSTER.into(), cluster.into());
        // A subnet the engine itself considers free: ask it for a throw-away network, then
        // create ours with that subnet spelled out (which lets every node have a fixed address).
        let mut last = None;
        for attempt in 0..5 {
            let probe = format!("{name}.probe");
            let mut probe_labels = labels.clone();
            probe_labels.insert(LABEL_KIND.into(), "probe".into());
            let _ = d.remove_network(&probe).await;
            d.create_network(NetworkCreateRequest {
                name: probe.clone(),
                driver: Some("bridge".into()),
                labels: Some(probe_labels),
                ..Default::default()
            })
            .await
            .map_err(DockerError::api("create network", &probe))?;
            let info = d.inspect_network(&probe, None).await;
            let _ = d.remove_network(&probe).await;
            let info = info.map_err(DockerError::api("inspect network", &probe))?;
            let cfg = info
                .ipam
                .and_then(|i| i.config)
                .and_then(|c| c.into_iter().find(|c| c.subnet.is_some()))
                .ok_or_else(|| {
                    DockerError::Invalid(format!("network {probe} was given no subnet"))
                })?;
            let mut net_labels = labels.clone();
            net_labels.insert(LABEL_KIND.into(), "network".into());
            let r = d
                .create_network(NetworkCreateRequest {
                    name: name.clone(),
                    driver: Some("bridge".into()),
                    labels: Some(net_labels),
                    ipam: Some(Ipam {
                        driver: Some("default".into()),
                        config: Some(vec![IpamConfig {
                            subnet: cfg.subnet.clone(),
                            gateway: cfg.gateway.clone(),
                            ..Default::default()
                        }]),
                        options: None,
                    }),
                    ..Default::default()
                })
                .await;
            match r {
                Ok(_) => {
                    return self.find_network(&name).await?.ok_or_else(|| {
                        DockerError::Invalid(format!("network {name} vanished after creation"))
                    });
                }
                // Another engine user took the subnet meanwhile: probe again.
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "creating network {name}");
                    last = Some(e);
                }
            }
        }
        Err(DockerError::api("create network", &name)(
            last.unwrap_or(bollard::errors::Error::RequestTimeoutError),
        ))
    }

    async fn find_network(&self, name: &str) -> Result<Option<NetInfo>, DockerError> {
        let d = self.docker().await?;
        let mut filters = HashMap::new();
        filters.insert("name".to_string(), vec![name.to_string()]);
        let nets = d
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(DockerError::api("list networks", name))?;
        Ok(nets
            .into_iter()
            .find(|n| n.name.as_deref() == Some(name))
            .map(|n| NetInfo {
                name: name.to_string(),
                subnet: user_subnet(n.ipam.as_ref()),
                labels: n
                    .labels
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(k, _)| k.starts_with("gantry-"))
                    .collect(),
            }))
    }

    /// The lowest free address of the network for a new container (none when the network's
    /// subnet is not gantry's to assign).
    async fn free_address(&self, net: &NetInfo) -> Result<Option<Ipv4Addr>, DockerError> {
        let Some((base, prefix, gateway)) = net.subnet else {
            return Ok(None);
        };
        let d = self.docker().await?;
        let mut filters = HashMap::new();
        filters.insert("network".to_string(), vec![net.name.clone()]);
        let on_net = d
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(DockerError::api("list containers", &net.name))?;
        let mut used: Vec<Ipv4Addr> = Vec::new();
        for c in &on_net {
            if let Some(ip) = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_IP))
                .and_then(|i| i.parse().ok())
            {
                used.push(ip);
            }
            for e in c
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .into_iter()
                .flat_map(|m| m.values())
            {
                if let Some(ip) = e.ip_address.as_deref().and_then(|i| i.parse().ok()) {
                    used.push(ip);
                }
            }
        }
        let size: u64 = 1u64 << (32 - u32::from(prefix.min(30)));
        let base = u32::from(base);
        for i in 2..size.saturating_sub(1) {
            let ip = Ipv4Addr::from(base.wrapping_add(i as u32));
            if Some(ip) != gateway && !used.contains(&ip) {
                return Ok(Some(ip));
            }
        }
        Err(DockerError::Invalid(format!(
            "network {} has no free address left",
            net.name
        )))
    }

    /// Starts the container if it is not running, then waits until it answers exec.
    async fn start_and_wait(&self, cname: &str) -> Result<(), DockerError> {
        let d = self.docker().await?;
        match d.start_container(cname, None).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(DockerError::api("start container", cname)(e)),
        }
        self.wait_exec(cname).await
    }

    /// Polls an exec of `true` until it succeeds or the boot timeout passes.
    pub async fn wait_exec(&self, cname: &str) -> Result<(), DockerError> {
        let deadline = Instant::now() + self.cfg.boot_timeout;
        let mut delay = Duration::from_millis(20);
        loop {
            let mut sink = crate::exec::Discard;
            let last = match self.exec(cname, &["true"], None, &mut sink).await {
                Ok(0) => return Ok(()),
                Ok(code) => format!("`true` exited with {code}"),
                Err(e) if e.is_transport() => e.to_string(),
                Err(e) => return Err(e),
            };
            if Instant::now() >= deadline {
                return Err(DockerError::BootTimeout {
                    container: cname.to_string(),
                    secs: self.cfg.boot_timeout.as_secs(),
                    last,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    async fn create(&self, req: &NodeRequest) -> Result<NodeInfo, DockerError> {
        let cname = container_name(&req.project, &req.name);
        for _ in 0..3 {
            if let Some(c) = self.find(&cname).await? {
                let labels = c.labels.clone().unwrap_or_default();
                let ours = labels.get(LABEL_KIND).map(String::as_str) == Some("node")
                    && labels.get(LABEL_NODE) == Some(&req.name)
                    && labels.get(tags::PROJECT) == Some(&req.project)
                    && labels.get(tags::CLUSTER) == Some(&req.cluster);
                if !ours {
                    let mut found: Vec<String> = labels
                        .iter()
                        .filter(|(k, _)| k.starts_with("gantry"))
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    found.sort();
                    return Err(DockerError::NameConflict {
                        name: cname,
                        found: if found.is_empty() {
                            "none of gantry's".into()
                        } else {
                            found.join(", ")
                        },
                    });
                }
                // Gantry's node of this name, but whose? Adopted only when it is this world's (a
                // retry, or a run that crashed after creating it); another home's container
                // with the same project and cluster names is refused, naming its owner.
                let tags_now = self
                    .node_by_name(&cname)
                    .await?
                    .map(|n| n.tags)
                    .unwrap_or_default();
                if !world_of_request(&req.tags).owns(&tags_now) {
                    return Err(DockerError::Foreign {
                        what: "container",
                        name: cname,
                        owner: tags::owner_of(&tags_now),
                    });
                }
                self.start_and_wait(&cname).await?;
                return self.node_by_name(&cname).await?.ok_or_else(|| {
                    DockerError::Invalid(format!("container {cname} vanished after start"))
                });
            }
            match self.create_container(req, &cname).await {
                Ok(()) => {
                    self.start_and_wait(&cname).await?;
                    return self.node_by_name(&cname).await?.ok_or_else(|| {
                        DockerError::Invalid(format!("container {cname} vanished after start"))
                    });
                }
                // Someone created that name between our look-up and our create: look again.
                Err(e) if e.status() == Some(409) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(DockerError::Invalid(format!(
            "container {cname} kept changing while it was being created"
        )))
    }

    async fn create_container(&self, req: &NodeRequest, cname: &str) -> Result<(), DockerError> {
        let image = self.image_of(&req.image);
        self.check_image(&image).await?;
        let (milli_cpus, mib) = options::docker_size(&req.size).ok_or_else(|| {
            let sizes: Vec<&str> = options::DOCKER_SIZES.iter().map(|(s, _, _)| *s).collect();
            DockerError::Invalid(format!(
                "unknown docker size {:?}; sizes are {}",
                req.size,
                sizes.join(", ")
            ))
        })?;
        let net = self
            .ensure_network(&req.project, &req.cluster, &req.tags)
            .await?;
        let d = self.docker().await?;
        let _guard = self.ip_lock.lock().await;
        let ip = self.free_address(&net).await?;
        let mut labels: HashMap<String, String> = req
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL_KIND.into(), "node".into());
        labels.insert(LABEL_NODE.into(), req.name.clone());
        labels.insert(
            LABEL_TAGS.into(),
            serde_json::to_string(&req.tags).unwrap_or_default(),
        );
        if let Some(ip) = ip {
            labels.insert(LABEL_IP.into(), ip.to_string());
        }
        let ports: Vec<String> = self
            .cfg
            .publish
            .iter()
            .map(|p| format!("{p}/tcp"))
            .collect();
        let bindings: HashMap<String, Option<Vec<PortBinding>>> = ports
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )
            })
            .collect();
        let mut endpoints = HashMap::new();
        endpoints.insert(
            net.name.clone(),
            EndpointSettings {
                aliases: Some(vec![req.name.clone()]),
                ipam_config: ip.map(|ip| EndpointIpamConfig {
                    ipv4_address: Some(ip.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let body = ContainerCreateBody {
            image: Some(image),
            hostname: Some(req.name.clone()),
            env: Some(node_env(req, ip)),
            labels: Some(labels),
            exposed_ports: (!ports.is_empty()).then(|| ports.clone()),
            host_config: Some(HostConfig {
                nano_cpus: Some(i64::from(milli_cpus) * 1_000_000),
                memory: Some((mib as i64) << 20),
                privileged: Some(self.cfg.privileged),
                // A real init as PID 1: reaps what blueprints leave behind and makes `stop`
                // prompt (a bare `sleep` as PID 1 ignores SIGTERM).
                init: Some(true),
                network_mode: Some(net.name.clone()),
                port_bindings: (!bindings.is_empty()).then_some(bindings),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(endpoints),
            }),
            ..Default::default()
        };
        d.create_container(
            Some(CreateContainerOptions {
                name: Some(cname.to_string()),
                ..Default::default()
            }),
            body,
        )
        .await
        .map(|_| ())
        .map_err(DockerError::api("create container", cname))
    }

    async fn list_nodes(&self, filter: &TagFilter) -> Result<Vec<NodeInfo>, DockerError> {
        let d = self.docker().await?;
        let mut labels = vec![format!("{LABEL_KIND}=node")];
        // Project and cluster never change after creation (set_tags refuses to), so the
        // engine may filter by them; everything else is matched after the overlay.
        for k in [tags::PROJECT, tags::CLUSTER] {
            if let Some(v) = filter.equals.get(k) {
                labels.push(format!("{k}={v}"));
            }
        }
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), labels);
        let containers = d
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(DockerError::api("list containers", "nodes"))?;
        let overrides = self
            .overrides(filter.equals.get(tags::PROJECT).map(String::as_str))
            .await?;
        let mut nodes: Vec<NodeInfo> = containers
            .iter()
            .filter_map(|c| self.to_node(c, &overrides))
            .filter(|n| filter.matches(&n.tags))
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
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
        let d = self.docker().await?;
        // Tags volumes a crash may have left behind once their container was gone.
        let vols = d
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(Self::label_filters(filter, "tags")),
            }))
            .await
            .map_err(DockerError::api("list volumes", "tags"))?;
        // The engine filters by label equality; whose a resource is (`filter.world`) is checked
        // here, on its labels.
        for v in vols.volumes.unwrap_or_default() {
            if !filter.matches(&gantry_labels(&v.labels)) {
                continue;
            }
            self.remove_volume(&v.name).await?;
        }
        for kind in ["network", "probe"] {
            let nets = d
                .list_networks(Some(ListNetworksOptions {
                    filters: Some(Self::label_filters(filter, kind)),
                }))
                .await
                .map_err(DockerError::api("list networks", kind))?;
            for n in nets {
                if !filter.matches(&gantry_labels(n.labels.as_ref().unwrap_or(&HashMap::new()))) {
                    continue;
                }
                let id = n.id.clone().or(n.name.clone()).unwrap_or_default();
                match d.remove_network(&id).await {
                    Ok(())
                    | Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => {}
                    Err(e) => {
                        return Err(DockerError::api("remove network", n.name.unwrap_or(id))(e));
                    }
                }
            }
        }
        Ok(())
    }

    async fn set_node_tags(&self, node: &NodeInfo, want: &Tags) -> Result<NodeInfo, DockerError> {
        for k in [tags::PROJECT, tags::CLUSTER] {
            if let Some(v) = want.get(k)
                && node.tags.get(k) != Some(v)
            {
                return Err(DockerError::Invalid(format!(
                    "the {k} tag of a docker node cannot change"
                )));
            }
        }
        let project = node.tags.get(tags::PROJECT).cloned().unwrap_or_default();
        let cname = container_name(&project, &node.name);
        let mut merged = node.tags.clone();
        merged.extend(want.iter().map(|(k, v)| (k.clone(), v.clone())));
        let seq = format!(
            "{:020}",
            time::OffsetDateTime::now_utc().unix_timestamp_nanos()
        );
        let mut labels: HashMap<String, String> =
            merged.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.insert(LABEL_KIND.into(), "tags".into());
        labels.insert(LABEL_FOR.into(), cname.clone());
        labels.insert(LABEL_SEQ.into(), seq.clone());
        labels.insert(
            LABEL_TAGS.into(),
            serde_json::to_string(&merged).unwrap_or_default(),
        );
        let vname = format!("{cname}.tags.{seq}");
        let d = self.docker().await?;
        d.create_volume(VolumeCreateRequest {
            name: Some(vname.clone()),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .map_err(DockerError::api("create volume", &vname))?;
        // The newest wins in `list`; the older ones are only clutter now.
        for (old, s) in self.tag_volumes(&cname).await? {
            if s < seq {
                self.remove_volume(&old).await?;
            }
        }
        let mut n = node.clone();
        n.tags = merged;
        Ok(n)
    }

    async fn delete(&self, node: &NodeInfo) -> Result<(), DockerError> {
        let d = self.docker().await?;
        let project = node.tags.get(tags::PROJECT).cloned().unwrap_or_default();
        let cname = container_name(&project, &node.name);
        let target = if node.provider_id.is_empty() {
            cname.clone()
        } else {
            node.provider_id.clone()
        };
        match d
            .remove_container(
                &target,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(DockerError::api("remove container", &cname)(e)),
        }
        for (v, _) in self.tag_volumes(&cname).await? {
            self.remove_volume(&v).await?;
        }
        Ok(())
    }

    async fn stop(&self, node: &NodeInfo) -> Result<NodeInfo, DockerError> {
        let d = self.docker().await?;
        let project = node.tags.get(tags::PROJECT).cloned().unwrap_or_default();
        let cname = container_name(&project, &node.name);
        match d
            .stop_container(
                &cname,
                Some(StopContainerOptions {
                    t: Some(10),
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(DockerError::api("stop container", &cname)(e)),
        }
        self.node_by_name(&cname)
            .await?
            .ok_or_else(|| DockerError::Invalid(format!("container {cname} is gone")))
    }

    async fn start(&self, node: &NodeInfo) -> Result<NodeInfo, DockerError> {
        let project = node.tags.get(tags::PROJECT).cloned().unwrap_or_default();
        let cname = container_name(&project, &node.name);
        self.start_and_wait(&cname).await?;
        self.node_by_name(&cname)
            .await?
            .ok_or_else(|| DockerError::Invalid(format!("container {cname} is gone")))
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

/// The environment of every process in a node's container (`gantry run`, `ssh`, blueprint steps
/// and what they start), added to the image's: the node's identity, as on local nodes, and its
/// address as `GANTRY_NODE_ADDRESS`, the one name for it on every provider. An address the engine
/// assigns (a network given in the spec) is known only after the start, so it is left out.
fn node_env(req: &NodeRequest, ip: Option<Ipv4Addr>) -> Vec<String> {
    let mut env = vec![
        format!("GANTRY_NODE={}", req.name),
        format!("GANTRY_CLUSTER={}", req.cluster),
        format!("GANTRY_POOL={}", req.pool),
        format!("GANTRY_INDEX={}", req.index),
    ];
    if let Some(ip) = ip {
        env.push(format!("GANTRY_NODE_ADDRESS={ip}"));
    }
    env
}

/// The subnet of gantry's own cluster network, which gantry creates with an explicit subnet
/// (only then may a container be given a fixed address in it).
fn user_subnet(ipam: Option<&Ipam>) -> Option<(Ipv4Addr, u8, Option<Ipv4Addr>)> {
    let cfg = ipam?.config.as_ref()?.iter().find_map(|c| {
        let (net, prefix) = c.subnet.as_deref()?.split_once('/')?;
        let net: Ipv4Addr = net.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let gw = c.gateway.as_deref().and_then(|g| g.parse().ok());
        Some((net, prefix, gw))
    })?;
    Some(cfg)
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
