//! A node is a long-running container: found by its exact name and gantry's labels, read as a
//! [`NodeInfo`] (its exact tags, fixed address, state), created (or adopted when it is this
//! world's, refused otherwise) and returned once it answers an exec of `true`; stopped, started,
//! deleted with its tags volumes; listed by labels.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, EndpointIpamConfig,
    EndpointSettings, HostConfig, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};
use gantry_core::tags::{self, TagFilter, Tags};
use gantry_provider::{NodeInfo, NodeRequest, NodeState};

use super::{DockerProvider, world_of_request};
use crate::error::DockerError;
use crate::{LABEL_IP, LABEL_KIND, LABEL_NODE, LABEL_TAGS, container_name};

impl DockerProvider {
    /// The container named exactly `name`, if any (whoever made it).
    pub(super) async fn find(&self, name: &str) -> Result<Option<ContainerSummary>, DockerError> {
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

    /// A node as gantry sees it: its exact tags (from `gantry.tags`, overlaid by the newest
    /// tags volume), its fixed address, its state.
    pub(super) fn to_node(
        &self,
        c: &ContainerSummary,
        overrides: &HashMap<String, Tags>,
    ) -> Option<NodeInfo> {
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
    pub(super) async fn node_by_name(&self, cname: &str) -> Result<Option<NodeInfo>, DockerError> {
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

    /// Starts the container if it is not running, then waits until it answers exec.
    pub(super) async fn start_and_wait(&self, cname: &str) -> Result<(), DockerError> {
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

    pub(super) async fn create(&self, req: &NodeRequest) -> Result<NodeInfo, DockerError> {
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

    pub(super) async fn create_container(
        &self,
        req: &NodeRequest,
        cname: &str,
    ) -> Result<(), DockerError> {
        let image = self.image_of(&req.image);
        self.check_image(&image).await?;
        let (milli_cpus, mib) = crate::options::docker_size(&req.size).ok_or_else(|| {
            let sizes: Vec<&str> = crate::options::DOCKER_SIZES
                .iter()
                .map(|(s, _, _)| *s)
                .collect();
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

    pub(super) async fn list_nodes(
        &self,
        filter: &TagFilter,
    ) -> Result<Vec<NodeInfo>, DockerError> {
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

    pub(super) async fn delete(&self, node: &NodeInfo) -> Result<(), DockerError> {
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

    pub(super) async fn stop(&self, node: &NodeInfo) -> Result<NodeInfo, DockerError> {
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

    pub(super) async fn start(&self, node: &NodeInfo) -> Result<NodeInfo, DockerError> {
        let project = node.tags.get(tags::PROJECT).cloned().unwrap_or_default();
        let cname = container_name(&project, &node.name);
        self.start_and_wait(&cname).await?;
        self.node_by_name(&cname)
            .await?
            .ok_or_else(|| DockerError::Invalid(format!("container {cname} is gone")))
    }
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
