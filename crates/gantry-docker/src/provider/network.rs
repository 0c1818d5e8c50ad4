//! The cluster network: one bridge network per cluster, created with an explicit subnet the
//! engine itself picked as free (a throw-away probe network asks it), so that every container
//! gets a fixed address kept across stop/start; or the user's network a spec names. Deleted with
//! the cluster by its labels.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions};
use gantry_core::tags::{self, TagFilter, Tags};

use super::{DockerProvider, gantry_labels, world_of_request};
use crate::error::DockerError;
use crate::{LABEL_IP, LABEL_KIND, network_name};

/// The cluster network as a node needs it.
#[derive(Debug, Clone)]
pub(super) struct NetInfo {
    pub(super) name: String,
    /// (network address, prefix length, gateway) when gantry may pin addresses in it.
    pub(super) subnet: Option<(Ipv4Addr, u8, Option<Ipv4Addr>)>,
    /// Its labels (gantry's tags, when gantry made it).
    pub(super) labels: Tags,
}

impl DockerProvider {
    /// Finds (or creates, labelled) the network of a cluster.
    pub(super) async fn ensure_network(
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

    pub(super) async fn find_network(&self, name: &str) -> Result<Option<NetInfo>, DockerError> {
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
    pub(super) async fn free_address(
        &self,
        net: &NetInfo,
    ) -> Result<Option<Ipv4Addr>, DockerError> {
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

    /// Removes gantry's networks (and probe networks a crash left) the filter matches.
    pub(super) async fn delete_networks(&self, filter: &TagFilter) -> Result<(), DockerError> {
        let d = self.docker().await?;
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
}

/// The subnet of gantry's own cluster network, which gantry creates with an explicit subnet
/// (only then may a container be given a fixed address in it).
pub(super) fn user_subnet(ipam: Option<&Ipam>) -> Option<(Ipv4Addr, u8, Option<Ipv4Addr>)> {
    let cfg = ipam?.config.as_ref()?.iter().find_map(|c| {
        let (net, prefix) = c.subnet.as_deref()?.split_once('/')?;
        let net: Ipv4Addr = net.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let gw = c.gateway.as_deref().and_then(|g| g.parse().ok());
        Some((net, prefix, gw))
    })?;
    Some(cfg)
}
