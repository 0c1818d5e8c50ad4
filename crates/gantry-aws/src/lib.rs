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
//! (see `instances::batch`); the caller's address for `from: caller` rules is given or
//! detected (see `gantry_provider::cloud::caller`).
//!
//! The provider by idea: this file holds its configuration, its clients and the `Provider`
//! implementation, which hands each operation to the module of what it acts on: `instances`
//! (nodes, with the coalescers of `RunInstances` and `DescribeInstances`), `security_group`,
//! `key_pair`, `network` (the optional VPC), `images` (AMI aliases and the pools' check);
//! `rules` (the security group's rules) and `kind` (the provider kind: its `provider:` section,
//! listing scopes) serve them.

mod error;
mod images;
mod instances;
mod key_pair;
mod kind;
mod network;
pub mod options;
mod rules;
mod security_group;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use gantry_core::Tags;
use gantry_core::tags::{self, TagFilter, World};
use gantry_provider::{
    ClusterRequest, ErrorKind, NodeInfo, NodeRequest, Provider, ProviderError, ResourceChange,
};
use tokio::sync::OnceCell;

pub(crate) use error::{err, sdk};
pub use gantry_provider::cloud::caller::{
    CALLER_CIDR_ENV, CALLER_IP_URL_ENV, DEFAULT_CALLER_IP_URL, DETECT_TIMEOUT, cidr_of_answer,
};
pub use instances::batch::{
    BATCH_INDICES_TAG, BATCH_TAG, MAX_BATCH, MAX_WAIT, PENDING_NAME, TestHooks, WINDOW,
};
pub use instances::client_token;
pub use instances::listing::{LIST_MAX_WAIT, LIST_WINDOW};
pub use key_pair::key_pair_name;
pub use kind::{AwsKind, REGIONS_ENV, aws_options, region_provider};
pub use options::{AWS_DEFAULT_INSTANCE_TYPES, AwsOptions};

/// The login user when the spec names none.
pub const DEFAULT_USER: &str = "ec2-user";

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
    batches: instances::batch::Coalescer,
    /// Instances this process is tagging now (so that concurrent adoptions do not repeat it).
    tagging: Mutex<HashSet<String>>,
    /// `list` calls being gathered into one `DescribeInstances`.
    lists: instances::listing::Lists,
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

/// Bounded exponential backoff with jitter: 100 ms doubling to 5 s.
pub(crate) async fn backoff(attempt: u32) {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    let jitter = rand::random::<u64>() % (base / 2 + 1);
    tokio::time::sleep(Duration::from_millis(base / 2 + jitter)).await;
}

impl AwsProvider {
    pub fn new(cfg: AwsConfig) -> Self {
        Self {
            cfg,
            clients: OnceCell::new(),
            res: Mutex::new(HashMap::new()),
            images: Mutex::new(HashMap::new()),
            batches: instances::batch::Coalescer::default(),
            tagging: Mutex::new(HashSet::new()),
            lists: instances::listing::Lists::default(),
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
}

#[async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &'static str {
        "aws"
    }

    async fn list(&self, f: &TagFilter) -> gantry_provider::Result<Vec<NodeInfo>> {
        self.list_instances(f).await
    }

    async fn create_node(&self, req: &NodeRequest) -> gantry_provider::Result<NodeInfo> {
        self.launch(req).await
    }

    async fn start_node(&self, node: &NodeInfo) -> gantry_provider::Result<NodeInfo> {
        self.start(node).await
    }

    async fn stop_node(&self, node: &NodeInfo) -> gantry_provider::Result<NodeInfo> {
        self.stop(node).await
    }

    async fn delete_node(&self, node: &NodeInfo) -> gantry_provider::Result<()> {
        self.terminate(node).await
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

    /// The security group (created, or its rules authorized and revoked), then the key pair
    /// (imported).
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
        let mut out = self.plan_security_group(req).await?;
        out.extend(self.plan_key(req).await?);
        Ok(out)
    }

    async fn delete_cluster_resources(&self, f: &TagFilter) -> gantry_provider::Result<()> {
        self.terminate_all(f).await?;
        self.delete_security_groups(f).await?;
        network::delete(self, f).await?;
        if let Some(cluster) = f.equals.get(tags::CLUSTER) {
            self.res.lock().expect("res lock").remove(cluster);
        }
        self.delete_key_pairs(f).await?;
        Ok(())
    }

    async fn set_tags(&self, node: &NodeInfo, t: &Tags) -> gantry_provider::Result<NodeInfo> {
        self.retag(node, t).await
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
