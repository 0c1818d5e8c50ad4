//! The `Provider` trait: what gantry needs from a place that runs machines.
//!
//! This crate sits *below* every provider implementation (local, docker, clouds) and the engine,
//! so that the engine can drive any of them and tests can use the in-memory [`testkit`]
//! provider. The required core is small — list by tags, create, start, stop, delete — and
//! everything else is optional with defaults, so a provider advertises what it can do instead of
//! stubbing.
//!
//! Contract every implementation keeps (checked by [`conformance`]):
//! - `create_node` is idempotent by node name: calling it again after a crash or a retry returns
//!   the existing node, never a second one — if that node is the request's world's (its
//!   `gantry-world` tag, or no world tag and the request's cluster uid). A node of that name made
//!   by another gantry world is never adopted: [`ErrorKind::Conflict`], naming its owner.
//! - Supporting resources found by tags are used and deleted only when they are the request's
//!   (the filter's) world's: [`gantry_core::tags::TagFilter::world`] is matched on the tags read
//!   back, since it cannot be a server-side filter.
//! - Everything created carries the request's tags before or as it is created, so `list` finds
//!   it by tags even if gantry's own records never heard of it.
//! - `delete_node` of a node that is already gone succeeds.
//!
//! How nodes are reached once they exist is [`transport::Transport`], here too, so that a
//! provider with its own way in (Docker's exec API) implements it in its own crate. Each
//! provider plugs in as a [`registry::ProviderKind`]: its spec section, how it is built, its
//! transport and where its nodes are listed.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use gantry_core::Tags;
use gantry_core::tags::TagFilter;
use serde::{Deserialize, Serialize};

pub mod checked;
pub mod cloud;
pub mod conformance;
pub mod registry;
pub mod testkit;
pub mod transport;

/// What to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRequest {
    pub name: String,
    pub project: String,
    pub cluster: String,
    pub pool: String,
    pub index: u32,
    pub size: String,
    pub image: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Gantry's tags (see `gantry_core::tags`) plus the user's.
    pub tags: Tags,
}

/// Supporting, cluster-wide resources (network, firewall, key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRequest {
    pub project: String,
    pub cluster: String,
    pub tags: Tags,
    pub allow: Vec<gantry_core::AllowRule>,
    /// OpenSSH-format public key that must be authorised on every node.
    pub ssh_public_key: String,
}

/// One change [`Provider::ensure_cluster_resources`] would make (what `gantry plan` shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceChange {
    pub action: ChangeAction,
    /// The resource, e.g. `security group gantry-default-demo (sg-0abc)`.
    pub resource: String,
    /// The change, e.g. `tcp 8080 from 0.0.0.0/0`.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeAction {
    /// A resource is created.
    Create,
    /// Something is added to one (a firewall rule).
    Add,
    /// Something gantry added earlier is removed (a firewall rule no longer in the spec).
    Remove,
}

impl ChangeAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            ChangeAction::Create => "create",
            ChangeAction::Add => "add",
            ChangeAction::Remove => "remove",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Pending,
    Running,
    Stopping,
    Stopped,
    Terminated,
    Unknown,
}

impl NodeState {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeState::Pending => "pending",
            NodeState::Running => "running",
            NodeState::Stopping => "stopping",
            NodeState::Stopped => "stopped",
            NodeState::Terminated => "terminated",
            NodeState::Unknown => "unknown",
        }
    }
}

/// How to reach a node over SSH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshEndpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
}

/// A node as the provider sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// The provider's own id (instance id, container id, sandbox path).
    pub provider_id: String,
    pub pool: String,
    pub index: u32,
    pub address: Option<IpAddr>,
    pub ssh: Option<SshEndpoint>,
    pub state: NodeState,
    pub tags: Tags,
    /// RFC 3339.
    pub created_at: String,
    /// The node's SSH host public key (an OpenSSH line), when the provider knows it for sure
    /// (it made the key itself, as the local provider does). The engine pins exactly this key
    /// before it first connects, instead of trusting the first key it is shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
}

/// What went wrong, so callers can decide to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Throttling, 5xx, connection refused while booting: try again with backoff.
    Retryable,
    NotFound,
    /// A resource with the name exists but does not carry this project's tags: never touch it.
    Conflict,
    InvalidInput,
    Unavailable,
    Other,
}

/// A provider error that names the provider, the call and the resource.
#[derive(Debug, thiserror::Error)]
#[error("{provider}: {op} {resource}: {message}")]
pub struct ProviderError {
    pub provider: String,
    pub op: String,
    pub resource: String,
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ProviderError {
    pub fn new(
        provider: &str,
        op: &str,
        resource: impl Into<String>,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        ProviderError {
            provider: provider.into(),
            op: op.into(),
            resource: resource.into(),
            kind,
            message: message.into(),
            hint: None,
            source: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_source(mut self, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(e));
        self
    }

    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }
}

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// The provider core. Implementations must be cheap to share (`Arc<dyn Provider>`).
#[async_trait]
pub trait Provider: Send + Sync {
    /// `local`, `docker`, `aws`, …
    fn name(&self) -> &'static str;

    /// Lists every node whose tags match `filter`, whatever gantry's records say.
    async fn list(&self, filter: &TagFilter) -> Result<Vec<NodeInfo>>;

    /// Creates (or returns the existing) node named `req.name`. Idempotent.
    async fn create_node(&self, req: &NodeRequest) -> Result<NodeInfo>;

    async fn start_node(&self, node: &NodeInfo) -> Result<NodeInfo>;

    async fn stop_node(&self, node: &NodeInfo) -> Result<NodeInfo>;

    /// Deletes the node and everything it owns. Succeeds if it is already gone.
    async fn delete_node(&self, node: &NodeInfo) -> Result<()>;

    /// Creates network/firewall/key resources a cluster needs. Idempotent. Default: none needed.
    async fn ensure_cluster_resources(&self, _req: &ClusterRequest) -> Result<()> {
        Ok(())
    }

    /// What must hold before a run for `req` starts, told without changing anything (the
    /// caller's address that `from: caller` rules need): `plan` and `up`'s preflight call it
    /// before anything starts, so such a run fails at once with how to fix it rather than
    /// half-way. Optional capability: the default finds nothing missing.
    async fn preflight(&self, _req: &ClusterRequest) -> Result<()> {
        Ok(())
    }

    /// What [`Provider::ensure_cluster_resources`] would change for `req`, changing nothing
    /// (`gantry plan`). Optional capability: the default (a provider without supporting
    /// resources) reports nothing.
    async fn plan_cluster_resources(&self, _req: &ClusterRequest) -> Result<Vec<ResourceChange>> {
        Ok(vec![])
    }

    /// Deletes the cluster-wide resources found by `filter`. Default: none exist.
    async fn delete_cluster_resources(&self, _filter: &TagFilter) -> Result<()> {
        Ok(())
    }

    /// Sets `tags` on the node (adding or overwriting those keys, keeping the others) and
    /// returns the node as it is now; used to move `gantry-expires` when a lifetime changes.
    /// Optional capability: the default answers [`ErrorKind::Unavailable`].
    async fn set_tags(&self, node: &NodeInfo, _tags: &Tags) -> Result<NodeInfo> {
        Err(ProviderError::new(
            self.name(),
            "set_tags",
            node.name.clone(),
            ErrorKind::Unavailable,
            "this provider cannot change the tags of an existing node",
        ))
    }

    /// How many mutating calls may be in flight at once for this provider.
    fn concurrency(&self) -> usize {
        16
    }

    /// Whether nodes see gantry's own filesystem (the local provider): then files gantry has
    /// (downloaded blueprint artifacts) are used in place instead of being uploaded.
    fn shares_host_filesystem(&self) -> bool {
        false
    }

    /// Whether this provider, as built here, reaches the node a record names by its
    /// `provider_id`. Almost always true; the local provider answers false for a node of
    /// another gantry home (its directory lies outside this home's): a home sharing a team store
    /// sees that node's records but cannot list, stop or delete the node, and must not drop its
    /// records as if it were gone.
    fn reaches(&self, provider_id: &str) -> bool {
        let _ = provider_id;
        true
    }

    /// How long a freshly created node may take to answer SSH.
    fn boot_timeout(&self) -> Duration {
        Duration::from_secs(120)
    }
}
