//! The AWS provider: EC2 instances found by gantry's tags, one security group per cluster, the
//! project's SSH key imported as a key pair, and (with `vpc: create`) a tagged VPC, subnets,
//! internet gateway and route table per cluster.
//!
//! Clients are built lazily on the first call (the standard `aws-config` chain: env, profile,
//! SSO, IMDS; `endpoint` or `AWS_ENDPOINT_URL` for emulators), so constructing the provider does
//! no IO. Every mutating call is idempotent: instances by `ClientToken` and a lookup of the node's
//! tags first, everything else by tags or deterministic names.
//!
//! Concurrent `create_node` calls with the same launch parameters share one `RunInstances`
//! (see [`batch`](crate::batch)); the caller's address for `from: caller` rules is given or
//! detected (see `caller`).

mod batch;
mod error;
mod images;
mod kind;
mod listing;
mod network;
pub mod options;
mod rules;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::types::{
    Filter, Instance, InstanceStateName, ResourceType, Tag, TagSpecification,
};
use gantry_core::Tags;
use gantry_core::tags::{self, TagFilter, World};
use gantry_provider::{
    ChangeAction, ClusterRequest, ErrorKind, NodeInfo, NodeRequest, NodeState, Provider,
    ProviderError, ResourceChange, SshEndpoint,
};
use sha2::Digest;
use tokio::sync::OnceCell;

pub use batch::{
    BATCH_INDICES_TAG, BATCH_TAG, MAX_BATCH, MAX_WAIT, PENDING_NAME, TestHooks, WINDOW,
};
pub(crate) use error::{err, sdk};
pub use gantry_provider::cloud::caller::{
    CALLER_CIDR_ENV, CALLER_IP_URL_ENV, DEFAULT_CALLER_IP_URL, DETECT_TIMEOUT, cidr_of_answer,
};
pub use kind::{AwsKind, REGIONS_ENV, aws_options, region_provider};
pub use listing::{LIST_MAX_WAIT, LIST_WINDOW};
pub use options::{AWS_DEFAULT_INSTANCE_TYPES, AwsOptions};

/// The login user when the spec names none.
pub const DEFAULT_USER: &str = "ec2-user";

/// How long to wait for an instance state (stopped, running, terminated).
const STATE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long to retry `DependencyViolation` while deleting supporting resources.
const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(300);

/// Everything the provider needs, from the spec. Its `Debug` redacts the static credentials.
#[derive(Clone)]
pub struct AwsConfig {
    pub options: AwsOptions,
    /// Login user for nodes (`ssh.user` of the spec, else [`DEFAULT_USER`]).
    pub ssh_user: Option<String>,
    /// `(size, image)` of every pool: checked (AMI exists, instance type exists) before anything
    /// is created, so bad input creates nothing.
    pub pools: Vec<(String, String)>,
    /// Explicit `(access key id, secret)` instead of the standard chain (tests against moto).
    pub static_credentials: Option<(String, String)>,
}

impl std::fmt::Debug for AwsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A secret never reaches a log line or an error message, however the config is printed.
        f.debug_struct("AwsConfig")
            .field("options", &self.options)
            .field("ssh_user", &self.ssh_user)
            .field("pools", &self.pools)
            .field(
                "static_credentials",
                &self.static_credentials.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub(crate) ec2: Ec2,
    pub(crate) ssm: aws_sdk_ssm::Client,
}

/// What `create_node` needs of a cluster's supporting resources.
#[derive(Debug, Clone)]
struct ClusterRes {
    sg: String,
    key: String,
    /// Subnet per zone (or one subnet); empty: let EC2 choose (default VPC).
    subnets: Vec<String>,
}

pub struct AwsProvider {
    pub(crate) cfg: AwsConfig,
    clients: OnceCell<Clients>,
    res: Mutex<HashMap<String, ClusterRes>>,
    images: Mutex<HashMap<String, String>>,
    /// `RunInstances` batches being gathered.
    batches: batch::Coalescer,
    /// Instances this process is tagging now (so that concurrent adoptions do not repeat it).
    tagging: Mutex<HashSet<String>>,
    /// `list` calls being gathered into one `DescribeInstances`.
    lists: listing::Lists,
    hooks: TestHooks,
    /// The caller's CIDR once known (given or detected).
    caller: OnceCell<String>,
    /// Where to detect the caller's address (else `GANTRY_CALLER_IP_URL`, else the default).
    caller_ip_url: Option<String>,
}

impl std::fmt::Debug for AwsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsProvider")
            .field("region", &self.cfg.options.region)
            .finish_non_exhaustive()
    }
}

pub(crate) fn filter(name: &str, value: impl Into<String>) -> Filter {
    Filter::builder().name(name).values(value).build()
}

pub(crate) fn tag_filters(f: &TagFilter) -> Vec<Filter> {
    f.equals
        .iter()
        .map(|(k, v)| filter(&format!("tag:{k}"), v.clone()))
        .collect()
}

pub(crate) fn tag_spec(rt: ResourceType, tags: &Tags) -> TagSpecification {
    let mut b = TagSpecification::builder().resource_type(rt);
    for (k, v) in tags {
        b = b.tags(Tag::builder().key(k).value(v).build());
    }
    b.build()
}

pub(crate) fn tags_of(t: &[Tag]) -> Tags {
    t.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

/// Tags for cluster-wide resources: the request's, without the per-node keys.
pub(crate) fn cluster_tags(req: &ClusterRequest) -> Tags {
    let mut t = req.tags.clone();
    t.remove(tags::POOL);
    t.remove(tags::INDEX);
    t.insert(tags::PROJECT.into(), req.project.clone());
    t.insert(tags::CLUSTER.into(), req.cluster.clone());
    t
}

/// The world a request's resources must belong to: its `gantry-world` tag and (for what an older
/// gantry made without one) its cluster uid.
pub(crate) fn world_of(t: &Tags) -> World {
    let w = World::new(t.get(tags::WORLD).cloned().unwrap_or_default());
    match t.get(tags::CLUSTER_UID) {
        Some(uid) => w.with_uid(uid.clone()),
        None => w,
    }
}

/// The refusal of a supporting resource found by the cluster's tags that another world made.
pub(crate) fn foreign(region: &str, op: &str, what: &str, t: &Tags) -> ProviderError {
    err(
        region,
        op,
        what,
        ErrorKind::Conflict,
        format!(
            "{what} carries this cluster's tags but belongs to another gantry world: made by {}; \
             gantry never uses it",
            tags::owner_of(t)
        ),
    )
    .with_hint("choose another cluster name (or --project), or ask its owner to destroy it")
}

/// The deterministic name of a cluster's key pair (the project's public key, imported once per
/// cluster so that it carries the cluster's tags and goes with it).
pub fn key_pair_name(project: &str, cluster: &str) -> String {
    format!("gantry-{project}-{cluster}")
}

/// The `ClientToken` of a `RunInstances` (≤ 64 characters), from the cluster's uid, the node's
/// name (a batch: its nodes' names, sorted by index, joined with `,`) and a variant (on-demand
/// fallback, a partial batch, replacement of a terminated instance).
pub fn client_token(cluster_uid: &str, node: &str, variant: &str) -> String {
    let h = sha2::Sha256::digest(format!("{cluster_uid}/{node}/{variant}"));
    format!("gantry-{}", &hex::encode(h)[..48])
}

/// Bounded exponential backoff with jitter: 100 ms doubling to 5 s.
pub(crate) async fn backoff(attempt: u32) {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    let jitter = rand::random::<u64>() % (base / 2 + 1);
    tokio::time::sleep(Duration::from_millis(base / 2 + jitter)).await;
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

fn gone(i: &Instance) -> bool {
    matches!(
        i.state().and_then(|s| s.name()),
        Some(InstanceStateName::Terminated) | Some(InstanceStateName::ShuttingDown)
    )
}

impl AwsProvider {
    pub fn new(cfg: AwsConfig) -> Self {
        Self {
            cfg,
            clients: OnceCell::new(),
            res: Mutex::new(HashMap::new()),
            images: Mutex::new(HashMap::new()),
            batches: batch::Coalescer::default(),
            tagging: Mutex::new(HashSet::new()),
            lists: listing::Lists::default(),
            hooks: TestHooks::default(),
            caller: OnceCell::new(),
            caller_ip_url: None,
        }
    }

    /// Detects the caller's address at `url` instead of `GANTRY_CALLER_IP_URL` or
    /// [`DEFAULT_CALLER_IP_URL`] (when neither `caller_cidr` nor `GANTRY_CALLER_CIDR` gives it).
    pub fn with_caller_ip_url(mut self, url: impl Into<String>) -> Self {
        self.caller_ip_url = Some(url.into());
        self
    }

    #[doc(hidden)]
    pub fn with_test_hooks(mut self, hooks: TestHooks) -> Self {
        self.hooks = hooks;
        self
    }

    pub fn region(&self) -> &str {
        &self.cfg.options.region
    }

    fn user(&self) -> String {
        self.cfg
            .ssh_user
            .clone()
            .unwrap_or_else(|| DEFAULT_USER.into())
    }

    pub(crate) fn e(
        &self,
        op: &str,
        resource: &str,
        kind: ErrorKind,
        m: impl Into<String>,
    ) -> ProviderError {
        err(self.region(), op, resource, kind, m)
    }

    /// The clients, built on first use; checks credentials and the region once.
    pub(crate) async fn clients(&self) -> gantry_provider::Result<&Clients> {
        self.clients.get_or_try_init(|| self.build_clients()).await
    }

    async fn build_clients(&self) -> gantry_provider::Result<Clients> {
        use aws_credential_types::provider::ProvideCredentials;
        let region = self.region().to_string();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.clone()));
        if let Some(ep) = &self.cfg.options.endpoint {
            loader = loader.endpoint_url(ep);
        }
        if let Some((id, secret)) = &self.cfg.static_credentials {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                id,
                secret,
                None,
                None,
                "gantry-static",
            ));
        }
        let conf = loader.load().await;
        let missing = || {
            self.e(
                "credentials",
                &region,
                ErrorKind::InvalidInput,
                "no AWS credentials found",
            )
            .with_hint(
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (with \
                 ~/.aws/credentials or `aws sso login`), or run on an instance with a role",
            )
        };
        let Some(creds) = conf.credentials_provider() else {
            return Err(missing());
        };
        if let Err(e) = creds.provide_credentials().await {
            let mut m = missing();
            m.message = format!("[{region}] no AWS credentials found: {e}");
            return Err(m);
        }
        let clients = Clients {
            ec2: Ec2::new(&conf),
            ssm: aws_sdk_ssm::Client::new(&conf),
        };
        self.check_region(&conf).await?;
        Ok(clients)
    }

    /// An unknown region is an input error, found by asking us-east-1 for the region list
    /// (a region's own endpoint may not even resolve). Skipped when that call fails.
    async fn check_region(&self, conf: &aws_config::SdkConfig) -> gantry_provider::Result<()> {
        let probe = aws_sdk_ec2::config::Builder::from(conf)
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let out = Ec2::from_conf(probe)
            .describe_regions()
            .all_regions(true)
            .send()
            .await;
        let Ok(out) = out else {
            return Ok(());
        };
        let names: Vec<&str> = out
            .regions()
            .iter()
            .filter_map(|r| r.region_name())
            .collect();
        if names.is_empty() || names.contains(&self.region()) {
            return Ok(());
        }
        Err(self
            .e(
                "DescribeRegions",
                self.region(),
                ErrorKind::InvalidInput,
                format!("unknown region `{}`", self.region()),
            )
            .with_hint(format!(
                "set `region` in the spec to one of: {}",
                names.join(", ")
            )))
    }

    /// Every instance matching the filters (paginated), including terminated ones.
    async fn describe(&self, filters: Vec<Filter>) -> gantry_provider::Result<Vec<Instance>> {
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

    async fn describe_id(&self, id: &str) -> gantry_provider::Result<Option<Instance>> {
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

    fn info(&self, i: &Instance) -> NodeInfo {
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
    async fn wait_state(
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

    /// The image of a pool: `ami-…` as is, `default` → the spec's `ami`/`image` (else
    /// `al2023`), any other word an alias resolved through SSM public parameters.
    async fn ami_for(&self, image: &str) -> gantry_provider::Result<String> {
        let o = &self.cfg.options;
        let want = if image == "default" {
            match (&o.ami, &o.image) {
                (Some(a), _) => a.clone(),
                (None, Some(i)) => i.clone(),
                (None, None) => "al2023".into(),
            }
        } else {
            image.to_string()
        };
        if want.starts_with("ami-") {
            return Ok(want);
        }
        if let Some(a) = self.images.lock().expect("images lock").get(&want) {
            return Ok(a.clone());
        }
        let ami = images::resolve(self, &want).await?;
        self.images
            .lock()
            .expect("images lock")
            .insert(want, ami.clone());
        Ok(ami)
    }

    /// Bad input creates nothing: every pool's AMI and instance type must exist first.
    async fn check_pools(&self) -> gantry_provider::Result<()> {
        let c = self.clients().await?;
        let mut amis = Vec::new();
        let mut types = Vec::new();
        for (size, image) in &self.cfg.pools {
            let a = self.ami_for(image).await?;
            if !amis.contains(&a) {
                amis.push(a);
            }
            let t = self.cfg.options.instance_type(size);
            if !types.contains(&t) {
                types.push(t);
            }
        }
        if !amis.is_empty() {
            c.ec2
                .describe_images()
                .set_image_ids(Some(amis.clone()))
                .send()
                .await
                .map_err(|e| sdk(self.region(), "DescribeImages", &amis.join(","), e))?;
        }
        if !types.is_empty() {
            c.ec2
                .describe_instance_types()
                .set_instance_types(Some(types.iter().map(|t| t.as_str().into()).collect()))
                .send()
                .await
                .map_err(|e| sdk(self.region(), "DescribeInstanceTypes", &types.join(","), e))?;
        }
        Ok(())
    }

    /// The cluster's resources: from memory, else found by tags (this world's only).
    async fn cluster_res(
        &self,
        project: &str,
        cluster: &str,
        world: &World,
    ) -> gantry_provider::Result<ClusterRes> {
        if let Some(r) = self.res.lock().expect("res lock").get(cluster) {
            return Ok(r.clone());
        }
        let c = self.clients().await?;
        let f = TagFilter::cluster(project, cluster).in_world(world.clone());
        let sgs = c
            .ec2
            .describe_security_groups()
            .set_filters(Some(tag_filters(&f)))
            .send()
            .await
            .map_err(|e| sdk(self.region(), "DescribeSecurityGroups", cluster, e))?;
        let Some(sg) = sgs
            .security_groups()
            .iter()
            .filter(|g| f.matches(&tags_of(g.tags())))
            .min_by_key(|g| g.group_id().unwrap_or_default())
        else {
            return Err(self
                .e(
                    "DescribeSecurityGroups",
                    cluster,
                    ErrorKind::NotFound,
                    "the cluster's security group does not exist",
                )
                .with_hint("run `gantry up` again: it creates the cluster's resources first"));
        };
        let subnets = network::subnets_for(self, &f, sg.vpc_id()).await?;
        let r = ClusterRes {
            sg: sg.group_id().unwrap_or_default().to_string(),
            key: key_pair_name(project, cluster),
            subnets,
        };
        self.res
            .lock()
            .expect("res lock")
            .insert(cluster.to_string(), r.clone());
        Ok(r)
    }

    /// The CIDR `from: caller` stands for: `caller_cidr` of the spec, else
    /// `GANTRY_CALLER_CIDR`, else the address a "what is my IP" service sees (/32 or /128),
    /// asked once per provider.
    pub(crate) async fn caller_cidr(&self) -> gantry_provider::Result<String> {
        self.caller
            .get_or_try_init(|| async {
                gantry_provider::cloud::caller::resolve(
                    self.cfg.options.caller_cidr.as_deref(),
                    self.caller_ip_url.as_deref(),
                    "`caller_cidr` under `provider: {aws: ...}`",
                )
                .await
                .map_err(|u| {
                    self.e(
                        "AuthorizeSecurityGroupIngress",
                        "caller",
                        ErrorKind::InvalidInput,
                        u.message,
                    )
                    .with_hint(u.hint)
                })
            })
            .await
            .cloned()
    }

    async fn ensure_sg(
        &self,
        req: &ClusterRequest,
        t: &Tags,
        vpc: Option<&str>,
    ) -> gantry_provider::Result<String> {
        let c = self.clients().await?;
        let f = TagFilter::cluster(&req.project, &req.cluster).in_world(world_of(t));
        let name = format!("gantry-{}-{}", req.project, req.cluster);
        let r = self.region();
        let id = network::find_or_create(
            || async {
                let found = c
                    .ec2
                    .describe_security_groups()
                    .set_filters(Some(tag_filters(&f)))
                    .send()
                    .await
                    .map_err(|e| sdk(r, "DescribeSecurityGroups", &name, e))?;
                let groups = found.security_groups();
                let own = groups
                    .iter()
                    .filter(|g| f.matches(&tags_of(g.tags())))
                    .filter_map(|g| g.group_id())
                    .min()
                    .map(str::to_string);
                // Only another world's group of this cluster: never authorized into or used
                // (and creating ours would clash with its name).
                if own.is_none()
                    && let Some(g) = groups.first()
                {
                    let what = format!("security group {}", g.group_id().unwrap_or_default());
                    return Err(foreign(
                        r,
                        "DescribeSecurityGroups",
                        &what,
                        &tags_of(g.tags()),
                    ));
                }
                Ok(own)
            },
            || async {
                let out = c
                    .ec2
                    .create_security_group()
                    .group_name(&name)
                    .description(format!("gantry cluster {}/{}", req.project, req.cluster))
                    .set_vpc_id(vpc.map(str::to_string))
                    .tag_specifications(tag_spec(ResourceType::SecurityGroup, t))
                    .customize()
                    .config_override(network::once())
                    .send()
                    .await
                    .map_err(|e| sdk(r, "CreateSecurityGroup", &name, e))?;
                network::id_of(r, "CreateSecurityGroup", &name, out.group_id())
            },
        )
        .await?;
        let sg = c
            .ec2
            .describe_security_groups()
            .group_ids(&id)
            .send()
            .await
            .map_err(|e| sdk(r, "DescribeSecurityGroups", &id, e))?
            .security_groups()
            .first()
            .cloned()
            .unwrap_or_else(|| {
                aws_sdk_ec2::types::SecurityGroup::builder()
                    .group_id(&id)
                    .build()
            });
        self.converge_rules(req, &sg).await?;
        Ok(sg.group_id().unwrap_or_default().to_string())
    }

    /// What `ensure_cluster_resources` would change: the security group (created, or its rules
    /// authorized and revoked) and the key pair (imported).
    async fn plan_resources(
        &self,
        req: &ClusterRequest,
    ) -> gantry_provider::Result<Vec<ResourceChange>> {
        let c = self.clients().await?;
        let t = cluster_tags(req);
        let f = TagFilter::cluster(&req.project, &req.cluster).in_world(world_of(&t));
        let name = format!("gantry-{}-{}", req.project, req.cluster);
        let r = self.region();
        let found = c
            .ec2
            .describe_security_groups()
            .set_filters(Some(tag_filters(&f)))
            .send()
            .await
            .map_err(|e| sdk(r, "DescribeSecurityGroups", &name, e))?;
        let groups = found.security_groups();
        let own = groups
            .iter()
            .filter(|g| f.matches(&tags_of(g.tags())))
            .min_by_key(|g| g.group_id().unwrap_or_default());
        let change = |action, resource: &str, detail: String| ResourceChange {
            action,
            resource: resource.to_string(),
            detail,
        };
        let mut out = Vec::new();
        match own {
            Some(sg) => {
                let id = sg.group_id().unwrap_or_default();
                let resource = format!("security group {name} ({id})");
                let (add, remove) =
                    rules::diff(&self.wanted_rules(req, id).await?, &rules::existing(sg));
                out.extend(
                    add.iter()
                        .map(|x| change(ChangeAction::Add, &resource, x.describe())),
                );
                out.extend(
                    remove
                        .iter()
                        .map(|x| change(ChangeAction::Remove, &resource, x.describe())),
                );
            }
            None => {
                if let Some(g) = groups.first() {
                    let what = format!("security group {}", g.group_id().unwrap_or_default());
                    return Err(foreign(
                        r,
                        "DescribeSecurityGroups",
                        &what,
                        &tags_of(g.tags()),
                    ));
                }
                let resource = format!("security group {name}");
                out.push(change(
                    ChangeAction::Create,
                    &resource,
                    "the cluster's firewall".into(),
                ));
                for x in self.wanted_rules(req, "this group").await? {
                    out.push(change(ChangeAction::Add, &resource, x.describe()));
                }
            }
        }
        let key = key_pair_name(&req.project, &req.cluster);
        let exists = match c.ec2.describe_key_pairs().key_names(&key).send().await {
            Ok(o) => !o.key_pairs().is_empty(),
            Err(e) if error::code(&e).is_some_and(|c| c.starts_with("InvalidKeyPair")) => false,
            Err(e) => return Err(sdk(r, "DescribeKeyPairs", &key, e)),
        };
        if !exists {
            out.push(change(
                ChangeAction::Create,
                &format!("key pair {key}"),
                "the project's public key".into(),
            ));
        }
        Ok(out)
    }

    /// The cluster's key pair: imported from the project key, or an existing one of that name
    /// used only if it holds the project key and is not another world's. A key pair someone else
    /// imported under gantry's name would let them, not us, log in to every node: refused.
    async fn ensure_key(&self, req: &ClusterRequest, t: &Tags) -> gantry_provider::Result<String> {
        let c = self.clients().await?;
        let name = key_pair_name(&req.project, &req.cluster);
        for attempt in 0..2 {
            let existing = match c
                .ec2
                .describe_key_pairs()
                .key_names(&name)
                .include_public_key(true)
                .send()
                .await
            {
                Ok(o) => o.key_pairs().first().cloned(),
                Err(e) if error::code(&e).is_some_and(|c| c.starts_with("InvalidKeyPair")) => None,
                Err(e) => return Err(sdk(self.region(), "DescribeKeyPairs", &name, e)),
            };
            if let Some(k) = existing {
                return self.check_key(c, &name, &k, req, t).await;
            }
            match c
                .ec2
                .import_key_pair()
                .key_name(&name)
                .public_key_material(aws_sdk_ec2::primitives::Blob::new(
                    req.ssh_public_key.trim().as_bytes().to_vec(),
                ))
                .tag_specifications(tag_spec(ResourceType::KeyPair, t))
                .send()
                .await
            {
                Ok(_) => return Ok(name),
                // Someone imported it meanwhile (or a lost answer was resent): look at it.
                Err(e) if error::code(&e) == Some("InvalidKeyPair.Duplicate") && attempt == 0 => {}
                Err(e) => return Err(sdk(self.region(), "ImportKeyPair", &name, e)),
            }
        }
        Err(self.e(
            "ImportKeyPair",
            &name,
            ErrorKind::Retryable,
            "the key pair kept appearing and vanishing",
        ))
    }

    /// Accepts an existing key pair only when it is this world's (or an older gantry's without
    /// a world tag) and holds the project's public key; tags an older one with the world.
    async fn check_key(
        &self,
        c: &Clients,
        name: &str,
        k: &aws_sdk_ec2::types::KeyPairInfo,
        req: &ClusterRequest,
        t: &Tags,
    ) -> gantry_provider::Result<String> {
        let kt = tags_of(k.tags());
        if let Some(w) = kt.get(tags::WORLD)
            && Some(w) != t.get(tags::WORLD)
        {
            return Err(foreign(
                self.region(),
                "DescribeKeyPairs",
                &format!("key pair {name}"),
                &kt,
            ));
        }
        let same = match (k.public_key(), k.key_fingerprint()) {
            (Some(pk), _) => same_public_key(pk, &req.ssh_public_key),
            (None, Some(fp)) => fingerprint_matches(fp, &req.ssh_public_key),
            (None, None) => false,
        };
        if !same {
            return Err(self
                .e(
                    "DescribeKeyPairs",
                    name,
                    ErrorKind::Conflict,
                    format!(
                        "key pair {name} exists and does not hold this project's key (its \
                         fingerprint is {}); gantry will not launch nodes that key opens",
                        k.key_fingerprint().unwrap_or("unknown")
                    ),
                )
                .with_hint(format!(
                    "if it is a leftover of yours, delete it (`aws ec2 delete-key-pair \
                     --key-name {name}`); otherwise choose another cluster name or --project"
                )));
        }
        if !kt.contains_key(tags::WORLD)
            && let (Some(id), Some(w)) = (k.key_pair_id(), t.get(tags::WORLD))
        {
            c.ec2
                .create_tags()
                .resources(id)
                .tags(Tag::builder().key(tags::WORLD).value(w).build())
                .send()
                .await
                .map_err(|e| sdk(self.region(), "CreateTags", name, e))?;
        }
        Ok(name.to_string())
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (only for key fingerprints: not worth a dependency).
fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `type base64` of an OpenSSH public key line (the comment and spacing do not matter).
fn key_blob(line: &str) -> Option<(&str, &str)> {
    let mut it = line.split_whitespace();
    Some((it.next()?, it.next()?))
}

fn same_public_key(a: &str, b: &str) -> bool {
    matches!((key_blob(a), key_blob(b)), (Some(x), Some(y)) if x == y)
}

/// Whether an EC2 key fingerprint is the project key's. EC2 gives ed25519 keys the base64
/// SHA-256 of the key (OpenSSH's form, with or without padding); moto gives the hex SHA-256 of
/// the key's DER SubjectPublicKeyInfo. Both are computed here.
fn fingerprint_matches(fp: &str, public_key: &str) -> bool {
    let Some((kind, b64)) = key_blob(public_key) else {
        return false;
    };
    let Some(blob) = base64_decode(b64) else {
        return false;
    };
    let fp = fp.trim().trim_start_matches("SHA256:");
    let sha = sha2::Sha256::digest(&blob);
    let b64 = base64_encode(&sha);
    if fp == b64 || fp == b64.trim_end_matches('=') {
        return true;
    }
    if kind == "ssh-ed25519" && blob.len() >= 32 {
        // SubjectPublicKeyInfo of an Ed25519 key: a fixed prefix, then the 32 key bytes.
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(&blob[blob.len() - 32..]);
        let hex: Vec<String> = sha2::Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if fp.eq_ignore_ascii_case(&hex.join(":")) {
            return true;
        }
    }
    false
}

#[async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &'static str {
        "aws"
    }

    async fn list(&self, f: &TagFilter) -> gantry_provider::Result<Vec<NodeInfo>> {
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

    async fn create_node(&self, req: &NodeRequest) -> gantry_provider::Result<NodeInfo> {
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

    async fn start_node(&self, node: &NodeInfo) -> gantry_provider::Result<NodeInfo> {
        let c = self.clients().await?;
        let id = &node.provider_id;
        if let Err(e) = c.ec2.start_instances().instance_ids(id).send().await {
            return Err(sdk(self.region(), "StartInstances", &node.name, e));
        }
        match self
            .wait_state("StartInstances", id, &[InstanceStateName::Running])
            .await?
        {
            Some(i) => Ok(self.info(&i)),
            None => Err(self.e(
                "StartInstances",
                &node.name,
                ErrorKind::NotFound,
                "instance is gone",
            )),
        }
    }

    async fn stop_node(&self, node: &NodeInfo) -> gantry_provider::Result<NodeInfo> {
        let c = self.clients().await?;
        let id = &node.provider_id;
        if let Err(e) = c.ec2.stop_instances().instance_ids(id).send().await {
            return Err(sdk(self.region(), "StopInstances", &node.name, e));
        }
        match self
            .wait_state("StopInstances", id, &[InstanceStateName::Stopped])
            .await?
        {
            Some(i) => Ok(self.info(&i)),
            None => Err(self.e(
                "StopInstances",
                &node.name,
                ErrorKind::NotFound,
                "instance is gone",
            )),
        }
    }

    async fn delete_node(&self, node: &NodeInfo) -> gantry_provider::Result<()> {
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

    async fn ensure_cluster_resources(&self, req: &ClusterRequest) -> gantry_provider::Result<()> {
        self.check_pools().await?;
        if gantry_provider::cloud::caller::needs_caller(&req.allow) {
            self.caller_cidr().await?;
        }
        let t = cluster_tags(req);
        let net = network::ensure(self, req, &t).await?;
        let sg = self.ensure_sg(req, &t, net.vpc.as_deref()).await?;
        let key = self.ensure_key(req, &t).await?;
        self.res.lock().expect("res lock").insert(
            req.cluster.clone(),
            ClusterRes {
                sg,
                key,
                subnets: net.subnets,
            },
        );
        Ok(())
    }

    /// `from: caller` needs the caller's address: known (spec, `GANTRY_CALLER_CIDR`) or
    /// detected now, before anything starts.
    async fn preflight(&self, req: &ClusterRequest) -> gantry_provider::Result<()> {
        if gantry_provider::cloud::caller::needs_caller(&req.allow) {
            self.caller_cidr().await?;
        }
        Ok(())
    }

    async fn plan_cluster_resources(
        &self,
        req: &ClusterRequest,
    ) -> gantry_provider::Result<Vec<ResourceChange>> {
        self.plan_resources(req).await
    }

    async fn delete_cluster_resources(&self, f: &TagFilter) -> gantry_provider::Result<()> {
        let c = self.clients().await?;
        // Instances first: terminate what is left and wait until every one is terminated.
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
                self.delete_node(&self.info(&i)).await?;
            }
            self.wait_state("TerminateInstances", &id, &[InstanceStateName::Terminated])
                .await?;
        }
        // Security groups, retrying while something still depends on them.
        let sgs = c
            .ec2
            .describe_security_groups()
            .set_filters(Some(tag_filters(f)))
            .send()
            .await
            .map_err(|e| {
                sdk(
                    self.region(),
                    "DescribeSecurityGroups",
                    "security groups",
                    e,
                )
            })?;
        for g in sgs.security_groups() {
            if !f.matches(&tags_of(g.tags())) {
                continue;
            }
            let id = g.group_id().unwrap_or_default();
            self.retry_dependency("DeleteSecurityGroup", id, move || async move {
                c.ec2.delete_security_group().group_id(id).send().await
            })
            .await?;
        }
        network::delete(self, f).await?;
        if let Some(cluster) = f.equals.get(tags::CLUSTER) {
            self.res.lock().expect("res lock").remove(cluster);
        }
        // The cluster's key pair.
        let keys = c
            .ec2
            .describe_key_pairs()
            .set_filters(Some(tag_filters(f)))
            .send()
            .await
            .map_err(|e| sdk(self.region(), "DescribeKeyPairs", "key pairs", e))?;
        for k in keys.key_pairs() {
            if !f.matches(&tags_of(k.tags())) {
                continue;
            }
            let Some(name) = k.key_name() else { continue };
            match c.ec2.delete_key_pair().key_name(name).send().await {
                Ok(_) => {}
                Err(e) if error::code(&e).is_some_and(|c| c.starts_with("InvalidKeyPair")) => {}
                Err(e) => return Err(sdk(self.region(), "DeleteKeyPair", name, e)),
            }
        }
        Ok(())
    }

    async fn set_tags(&self, node: &NodeInfo, t: &Tags) -> gantry_provider::Result<NodeInfo> {
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

    /// As many nodes at once as fit in one `RunInstances` batch: a wave of creates becomes one
    /// call per zone (with 16, a 100-node up took 7 waves, each listing the growing cluster).
    fn concurrency(&self) -> usize {
        MAX_BATCH
    }

    fn shares_host_filesystem(&self) -> bool {
        false
    }

    fn boot_timeout(&self) -> Duration {
        Duration::from_secs(300)
    }
}

impl AwsProvider {
    /// Runs a delete, retrying `DependencyViolation` with backoff; a resource already gone
    /// (`*.NotFound`, or `Gateway.NotAttached` for a detach) counts as deleted.
    pub(crate) async fn retry_dependency<F, Fut, T, E>(
        &self,
        op: &str,
        resource: &str,
        f: F,
    ) -> gantry_provider::Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<
                Output = Result<
                    T,
                    aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
                >,
            >,
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            match f().await {
                Ok(_) => return Ok(()),
                // Gone, or (a detach whose answer was lost, resent) already detached.
                Err(e)
                    if error::code(&e)
                        .is_some_and(|c| c.ends_with("NotFound") || c == "Gateway.NotAttached") =>
                {
                    return Ok(());
                }
                Err(e)
                    if error::code(&e) == Some("DependencyViolation")
                        && start.elapsed() < DEPENDENCY_TIMEOUT =>
                {
                    backoff(attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(sdk(self.region(), op, resource, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOkXYFYEuSrbmK4hXZsN5BPExivHVo8DuIZA1HEhOHvr me@host";

    #[test]
    fn key_pairs_are_compared_by_key_not_comment() {
        assert!(same_public_key(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOkXYFYEuSrbmK4hXZsN5BPExivHVo8DuIZA1HEhOHvr",
            KEY
        ));
        assert!(!same_public_key(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1jYXRzZW5sZW5zZW5zZW5zZW5zZW5zZW5zZW5zZW5z x",
            KEY
        ));
        assert!(!same_public_key("", KEY));
        // moto's form (hex SHA-256 of the DER key) and EC2's (base64 SHA-256 of the key).
        assert!(fingerprint_matches(
            "75:86:78:51:d6:96:35:40:04:34:fe:d8:5a:6b:ce:05:bb:32:c2:0f:ad:ff:06:c0:6d:fa:7c:72:88:f3:96:30",
            KEY
        ));
        let blob = base64_decode(key_blob(KEY).unwrap().1).unwrap();
        let ec2 = base64_encode(&sha2::Sha256::digest(&blob));
        assert!(fingerprint_matches(&ec2, KEY));
        assert!(fingerprint_matches(ec2.trim_end_matches('='), KEY));
        assert!(!fingerprint_matches("00:11", KEY));
        assert_eq!(
            base64_encode(b"any carnal pleas"),
            "YW55IGNhcm5hbCBwbGVhcw=="
        );
        assert_eq!(
            base64_decode("YW55IGNhcm5hbCBwbGVhcw==").unwrap(),
            b"any carnal pleas"
        );
    }

    #[test]
    fn debug_of_the_config_redacts_static_credentials() {
        let cfg = AwsConfig {
            options: AwsOptions {
                region: "us-east-1".into(),
                ..Default::default()
            },
            ssh_user: None,
            pools: vec![],
            static_credentials: Some(("AKIAEXAMPLEKEYID".into(), "wJalrXUtnFEMI/SECRET".into())),
        };
        for text in [format!("{cfg:?}"), format!("{cfg:#?}")] {
            assert!(!text.contains("wJalrXUtnFEMI"), "secret printed: {text}");
            assert!(!text.contains("AKIAEXAMPLEKEYID"), "key id printed: {text}");
            assert!(text.contains("<redacted>"), "{text}");
            assert!(
                text.contains("us-east-1"),
                "the rest is still shown: {text}"
            );
        }
        let none = AwsConfig {
            static_credentials: None,
            ..cfg
        };
        assert!(format!("{none:?}").contains("static_credentials: None"));
    }
}
