//! EC2 instances as gantry's nodes: reading one as a [`NodeInfo`] (its state, names and
//! addresses), describing and waiting for a state, and the node operations of the provider
//! (listing with adoption of instances a crash left untagged, launching through the batch
//! coalescer, start, stop, terminate, tags). Its two coalescers: [`batch`] gathers concurrent
//! creates into one `RunInstances`, [`listing`] concurrent listings into one `DescribeInstances`.

pub(crate) mod batch;
pub(crate) mod listing;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName, Tag};
use gantry_core::Tags;
use gantry_core::tags::{self, TagFilter};
use gantry_provider::{ErrorKind, NodeInfo, NodeRequest, NodeState, SshEndpoint};
use sha2::Digest;

use crate::{AwsProvider, backoff, error, sdk, tag_filters, world_of};

/// How long to wait for an instance state (stopped, running, terminated).
const STATE_TIMEOUT: Duration = Duration::from_secs(600);

/// The `ClientToken` of a `RunInstances` (≤ 64 characters), from the cluster's uid, the node's
/// name (a batch: its nodes' names, sorted by index, joined with `,`) and a variant (on-demand
/// fallback, a partial batch, replacement of a terminated instance).
pub fn client_token(cluster_uid: &str, node: &str, variant: &str) -> String {
    let h = sha2::Sha256::digest(format!("{cluster_uid}/{node}/{variant}"));
    format!("gantry-{}", &hex::encode(h)[..48])
}

fn state_of(i: &Instance) -> NodeState {
    match i.state().and_then(|s| s.name()) {
        Some(InstanceStateName::Pending) => NodeState::Pending,
        Some(InstanceStateName::Running) => NodeState::Running,
        Some(InstanceStateName::Stopping) | Some(InstanceStateName::ShuttingDown) => {
            NodeState::Stopping
        }
        Some(InstanceStateName::Stopped) => NodeState::Stopped,
        Some(InstanceStateName::Terminated) => NodeState::Terminated,
        _ => NodeState::Unknown,
    }
}

pub(crate) fn gone(i: &Instance) -> bool {
    matches!(
        i.state().and_then(|s| s.name()),
        Some(InstanceStateName::Terminated) | Some(InstanceStateName::ShuttingDown)
    )
}

impl AwsProvider {
    /// Every instance matching the filters (paginated), including terminated ones.
    pub(crate) async fn describe(
        &self,
        filters: Vec<Filter>,
    ) -> gantry_provider::Result<Vec<Instance>> {
        let c = self.clients().await?;
        let mut pages = c
            .ec2
            .describe_instances()
            .set_filters(Some(filters))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk(self.region(), "DescribeInstances", "instances", e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().cloned());
            }
        }
        Ok(out)
    }

    pub(crate) async fn describe_id(&self, id: &str) -> gantry_provider::Result<Option<Instance>> {
        let c = self.clients().await?;
        match c.ec2.describe_instances().instance_ids(id).send().await {
            Ok(o) => Ok(o
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find(|i| i.instance_id() == Some(id))
                .cloned()),
            Err(e) if error::code(&e).is_some_and(|c| c.starts_with("InvalidInstanceID")) => {
                Ok(None)
            }
            Err(e) => Err(sdk(self.region(), "DescribeInstances", id, e)),
        }
    }

    pub(crate) fn info(&self, i: &Instance) -> NodeInfo {
        let (all, _) = batch::effective_tags(i);
        let name = all
            .get("Name")
            .cloned()
            .unwrap_or_else(|| i.instance_id().unwrap_or_default().to_string());
        let mut t = all;
        t.remove("Name");
        // The address is the private IP (kept across stop/start); ssh goes to the public IP when
        // there is one (it changes on start), else the private one.
        let parse = |a: Option<&str>| a.and_then(|a| a.parse::<IpAddr>().ok());
        let private = parse(i.private_ip_address());
        let reach = parse(i.public_ip_address()).or(private);
        NodeInfo {
            name,
            provider_id: i.instance_id().unwrap_or_default().to_string(),
            pool: t.get(tags::POOL).cloned().unwrap_or_default(),
            index: t
                .get(tags::INDEX)
                .and_then(|s| s.parse().ok())
                .unwrap_or_default(),
            address: private.or(reach),
            ssh: reach.map(|ip| SshEndpoint {
                host: ip.to_string(),
                port: 22,
                user: self.user(),
            }),
            state: state_of(i),
            tags: t,
            created_at: i
                .launch_time()
                .and_then(|d| {
                    d.fmt(aws_sdk_ec2::primitives::DateTimeFormat::DateTime)
                        .ok()
                })
                .unwrap_or_default(),
            host_key: None,
        }
    }

    /// Polls until the instance is in one of `want` (bounded backoff), and returns it.
    pub(crate) async fn wait_state(
        &self,
        op: &str,
        id: &str,
        want: &[InstanceStateName],
    ) -> gantry_provider::Result<Option<Instance>> {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            let i = self.describe_id(id).await?;
            match &i {
                None => return Ok(None),
                Some(inst)
                    if inst
                        .state()
                        .and_then(|s| s.name())
                        .is_some_and(|n| want.contains(n)) =>
                {
                    return Ok(i);
                }
                Some(_) if start.elapsed() > STATE_TIMEOUT => {
                    return Err(self.e(
                        op,
                        id,
                        ErrorKind::Retryable,
                        format!("still not {want:?} after {}s", STATE_TIMEOUT.as_secs()),
                    ));
                }
                Some(_) => {}
            }
            backoff(attempt).await;
            attempt += 1;
        }
    }

    /// The project's instances the filter matches (see [`gantry_provider::Provider::list`]).
    pub(crate) async fn list_instances(
        &self,
        f: &TagFilter,
    ) -> gantry_provider::Result<Vec<NodeInfo>> {
        // `Name` and `gantry-index` may not be written yet on an instance of a batch (see
        // `batch`): those two are matched here, on the tags the batch says it has.
        let mut server = f.clone();
        server.equals.remove("Name");
        server.equals.remove(tags::INDEX);
        let mut filters = tag_filters(&server);
        filters.push(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .build(),
        );
        let key = format!("{:?}", server.equals);
        let cluster_scoped = f.equals.contains_key(tags::CLUSTER);
        let mut out = Vec::new();
        let mut adopt = Vec::new();
        for i in self
            .describe_shared(key, filters)
            .await?
            .iter()
            .filter(|i| !gone(i))
        {
            let (t, derived) = batch::effective_tags(i);
            if !f.matches(&t) {
                continue;
            }
            let n = self.info(i);
            // Claimed here, so that one caller tags it, not every concurrent one (nor a batch
            // of this process tagging it now). Only a listing of one cluster (what a run of
            // that cluster makes) writes tags: project-wide listings (`ls`, `up`'s check of
            // node names across clusters) read, and never touch other clusters' instances.
            if derived
                && cluster_scoped
                && let Some(id) = i.instance_id()
                && self
                    .tagging
                    .lock()
                    .expect("tagging lock")
                    .insert(id.to_string())
            {
                adopt.push((i.clone(), n.name.clone(), n.index));
            }
            out.push(n);
        }
        // Adoption: write the tags a crash left unwritten (best effort; the names above hold
        // either way).
        if !adopt.is_empty() {
            let c = self.clients().await?;
            let done = futures::future::join_all(adopt.iter().map(|(i, name, index)| async move {
                (name, self.tag_instance(c, i, name, *index).await)
            }))
            .await;
            let mut claimed = self.tagging.lock().expect("tagging lock");
            for (i, _, _) in &adopt {
                claimed.remove(i.instance_id().unwrap_or_default());
            }
            drop(claimed);
            for (name, r) in done {
                match r {
                    Ok(()) => {
                        tracing::info!(node = %name, "adopted an instance launched before a crash")
                    }
                    Err(e) => {
                        tracing::warn!(node = %name, "could not tag an adopted instance: {e}")
                    }
                }
            }
        }
        out.sort_by(|a, b| (&a.pool, a.index, &a.name).cmp(&(&b.pool, b.index, &b.name)));
        Ok(out)
    }

    /// Launches a node's instance (see [`gantry_provider::Provider::create_node`]).
    pub(crate) async fn launch(&self, req: &NodeRequest) -> gantry_provider::Result<NodeInfo> {
        let uid = req
            .tags
            .get(tags::CLUSTER_UID)
            .cloned()
            .unwrap_or_else(|| format!("{}/{}", req.project, req.cluster));
        let res = self
            .cluster_res(&req.project, &req.cluster, &world_of(&req.tags))
            .await?;
        let ami = self.ami_for(&req.image).await?;
        let o = &self.cfg.options;
        let slot = req.index.saturating_sub(1) as usize;
        let subnet =
            (!res.subnets.is_empty()).then(|| res.subnets[slot % res.subnets.len()].clone());
        let zone = (subnet.is_none() && !o.zones.is_empty())
            .then(|| o.zones[slot % o.zones.len()].clone());
        let mut common = req.tags.clone();
        common.remove(tags::INDEX);
        let launch = batch::Launch {
            uid,
            project: req.project.clone(),
            cluster: req.cluster.clone(),
            pool: req.pool.clone(),
            instance_type: o.instance_type(&req.size),
            ami,
            subnet,
            zone,
            spot: o.spot,
            key: res.key.clone(),
            sg: res.sg.clone(),
            tags: common,
        };
        if batch::Launch::batchable(req) {
            return self.create_batched(launch, req).await;
        }
        // A node whose name or tags do not say which it is launches alone, named at once.
        self.launch_nodes(&launch, std::slice::from_ref(req))
            .await
            .pop()
            .unwrap_or_else(|| {
                Err(self.e("RunInstances", &req.name, ErrorKind::Retryable, "no answer"))
            })
    }

    /// The node once its instance reached `state` after `call`; an error when the instance is
    /// gone meanwhile.
    async fn settled(
        &self,
        call: &str,
        node: &NodeInfo,
        state: InstanceStateName,
    ) -> gantry_provider::Result<NodeInfo> {
        match self.wait_state(call, &node.provider_id, &[state]).await? {
            Some(i) => Ok(self.info(&i)),
            None => Err(self.e(call, &node.name, ErrorKind::NotFound, "instance is gone")),
        }
    }

    pub(crate) async fn start(&self, node: &NodeInfo) -> gantry_provider::Result<NodeInfo> {
        let c = self.clients().await?;
        let id = &node.provider_id;
        if let Err(e) = c.ec2.start_instances().instance_ids(id).send().await {
            return Err(sdk(self.region(), "StartInstances", &node.name, e));
        }
        self.settled("StartInstances", node, InstanceStateName::Running)
            .await
    }

    pub(crate) async fn stop(&self, node: &NodeInfo) -> gantry_provider::Result<NodeInfo> {
        let c = self.clients().await?;
        let id = &node.provider_id;
        if let Err(e) = c.ec2.stop_instances().instance_ids(id).send().await {
            return Err(sdk(self.region(), "StopInstances", &node.name, e));
        }
        self.settled("StopInstances", node, InstanceStateName::Stopped)
            .await
    }

    /// Terminates a node's instance; one already gone counts as terminated.
    pub(crate) async fn terminate(&self, node: &NodeInfo) -> gantry_provider::Result<()> {
        let c = self.clients().await?;
        match c
            .ec2
            .terminate_instances()
            .instance_ids(&node.provider_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if error::code(&e).is_some_and(|c| c.starts_with("InvalidInstanceID")) => Ok(()),
            Err(e) => Err(sdk(self.region(), "TerminateInstances", &node.name, e)),
        }
    }

    /// Terminates every instance the filter matches and waits until each is terminated (the
    /// first step of deleting a cluster's resources).
    pub(crate) async fn terminate_all(&self, f: &TagFilter) -> gantry_provider::Result<()> {
        let mut fs = tag_filters(f);
        fs.push(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .values("shutting-down")
                .build(),
        );
        // The filter's world is matched here, on the tags read back (see `TagFilter::world`).
        for i in self.describe(fs).await? {
            if !f.matches(&batch::effective_tags(&i).0) {
                continue;
            }
            let id = i.instance_id().unwrap_or_default().to_string();
            if !gone(&i) {
                self.terminate(&self.info(&i)).await?;
            }
            self.wait_state("TerminateInstances", &id, &[InstanceStateName::Terminated])
                .await?;
        }
        Ok(())
    }

    /// Writes tags on a node's instance and reads it back.
    pub(crate) async fn retag(
        &self,
        node: &NodeInfo,
        t: &Tags,
    ) -> gantry_provider::Result<NodeInfo> {
        let c = self.clients().await?;
        let mut b = c.ec2.create_tags().resources(&node.provider_id);
        for (k, v) in t {
            b = b.tags(Tag::builder().key(k).value(v).build());
        }
        b.send()
            .await
            .map_err(|e| sdk(self.region(), "CreateTags", &node.name, e))?;
        match self.describe_id(&node.provider_id).await? {
            Some(i) => Ok(self.info(&i)),
            None => Err(self.e(
                "CreateTags",
                &node.name,
                ErrorKind::NotFound,
                "instance is gone",
            )),
        }
    }
}
