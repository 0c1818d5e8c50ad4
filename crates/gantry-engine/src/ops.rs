//! The operations a user runs on a cluster: `up`, `destroy`, `stop`, `start`, `extend` and gc's.
//!
//! Each one takes the cluster lock, records a run, observes the provider by tags, executes its
//! steps on the dispatcher and records the outcome. Observation always comes from the provider,
//! never only from the state store, so an operation re-run after a crash (even `kill -9`
//! between "created" and "recorded") converges: existing nodes are found by their tags and
//! `create_node` is idempotent by name.
//!
//! Every run goes through `RunGuard` (`run`), the one place that also invalidates the
//! project's inventory cache (when the run starts and when it ends), so `gantry ls` never serves
//! a listing from before a change gantry made. One module per operation: [`up`] (with what
//! `plan` shows of it), [`destroy`], [`power`] (stop/start), `lifetime` (extend, gc). This file
//! holds what they share: the [`Context`], observation by world, and the node records.

use std::sync::Arc;
use std::time::Duration;

use gantry_core::tags::{self, TagFilter, World};
use gantry_provider::{NodeInfo, Provider};
use gantry_ssh::ClientConfig;
use gantry_state::{ClusterRecord, NodeRecord, StateStore};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::EngineError;
use crate::dag;
use crate::events::Listener;

mod destroy;
mod lifetime;
mod power;
mod run;
mod up;
pub use destroy::destroy;
use destroy::destroy_if;
pub use lifetime::{ExtendFrom, ExtendReport, extend, gc_destroy, gc_orphans, whole_seconds};
pub use power::{Power, power};
use run::{RunGuard, merged_cancel, outcome_to_result};
pub use up::{ConfirmDelete, Confirmation, UpOptions, plan_resources, plan_up, up};

/// Everything an operation needs.
#[derive(Clone)]
pub struct Context {
    pub project: String,
    /// Recorded in the `gantry-owner` tag.
    pub owner: String,
    pub provider: Arc<dyn Provider>,
    pub store: Arc<dyn StateStore>,
    pub ssh: ClientConfig,
    pub cancel: CancellationToken,
    pub listener: Option<Listener>,
    pub lock_timeout: Duration,
    /// The cluster lock's lease ([`crate::lock::LEASE_TTL`] unless a test shortens it; clamped
    /// by [`crate::lock::clamp_lease_ttl`]).
    pub lock_ttl: Duration,
    /// The command line, shown to others waiting on the lock.
    pub command: String,
    /// How nodes are reached when not over SSH (Docker exec): `start` then re-runs the
    /// blueprints' `boot: true` steps through it, inside the run (and its lock). None: SSH.
    pub transport: Option<Arc<dyn crate::transport::Transport>>,
    /// The clusters' secrets and blueprint outputs (kept outside the state store; deleted
    /// with their cluster).
    pub secrets: Arc<dyn crate::secrets::SecretStore>,
}

impl Context {
    /// Everything tagged with the cluster's name, whoever made it.
    pub fn filter(&self, cluster: &str) -> TagFilter {
        TagFilter::cluster(&self.project, cluster)
    }

    /// This gantry world: the store's id and, for resources made before worlds existed, the
    /// uid of `cluster`'s record (of every recorded cluster of the project when None).
    pub async fn world(&self, cluster: Option<&str>) -> Result<World, EngineError> {
        let mut w = World::new(self.store.world_id().await?);
        match cluster {
            Some(c) => {
                if let Some(r) = self.store.get_cluster(&self.project, c).await? {
                    w.legacy_uids.insert(r.uid);
                }
            }
            None => {
                for r in self.store.list_clusters(&self.project).await? {
                    w.legacy_uids.insert(r.uid);
                }
            }
        }
        Ok(w)
    }

    /// Every node tagged with `cluster`'s name, split into this world's and other worlds'.
    /// Listing is idempotent, and it happens outside the step dispatcher (which retries its own
    /// steps), so a throttled or failing API is retried here: up to [`OUTSIDE_STEP_ATTEMPTS`]
    /// attempts with jittered backoff, stopping at once on cancellation or on an error that is
    /// not retryable.
    pub async fn observe(&self, cluster: &str) -> Result<Observed, EngineError> {
        let world = self.world(Some(cluster)).await?;
        let f = self.filter(cluster);
        let all = self.retry_outside_steps(|| self.provider.list(&f)).await?;
        let (ours, foreign) = all.into_iter().partition(|n| world.owns(&n.tags));
        Ok(Observed {
            world,
            ours,
            foreign,
        })
    }

    /// The first recorded node of `cluster` this home's provider cannot reach
    /// ([`gantry_provider::Provider::reaches`]: a local node of another gantry home sharing the
    /// team store), as the error that refuses to change the cluster from here.
    pub async fn unreachable_node(
        &self,
        cluster: &str,
    ) -> Result<Option<EngineError>, EngineError> {
        let recorded = self.store.list_nodes(&self.project, cluster).await?;
        Ok(recorded
            .iter()
            .find(|n| !self.provider.reaches(&n.provider_id))
            .map(|n| EngineError::OtherHome {
                cluster: cluster.into(),
                node: n.name.clone(),
                location: n.provider_id.clone(),
            }))
    }

    /// The provider's nodes of `cluster` that are this world's (see [`Context::observe`]):
    /// the only ones any operation changes.
    pub async fn list_nodes(&self, cluster: &str) -> Result<Vec<NodeInfo>, EngineError> {
        Ok(self.observe(cluster).await?.ours)
    }

    /// Deletes `cluster`'s supporting resources of this world (idempotent by design), retried
    /// like [`Context::observe`].
    pub async fn delete_cluster_resources(&self, cluster: &str) -> Result<(), EngineError> {
        let f = self
            .filter(cluster)
            .in_world(self.world(Some(cluster)).await?);
        self.retry_outside_steps(|| self.provider.delete_cluster_resources(&f))
            .await
    }

    async fn retry_outside_steps<T, F, Fut>(&self, mut call: F) -> Result<T, EngineError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = gantry_provider::Result<T>>,
    {
        let opts = dag::Options::default();
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e)
                    if e.is_retryable()
                        && attempt < OUTSIDE_STEP_ATTEMPTS
                        && !self.cancel.is_cancelled() =>
                {
                    let wait = dag::backoff(&opts, attempt);
                    tracing::warn!(error = %e, attempt, ?wait, "provider call failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.cancel.cancelled() => return Err(e.into()),
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A cluster's nodes as the provider lists them, by world.
#[derive(Debug, Clone)]
pub struct Observed {
    pub world: World,
    /// This world's nodes: the only ones gantry adopts, changes or deletes.
    pub ours: Vec<NodeInfo>,
    /// Nodes with the cluster's tags that another world made (or an older gantry made for a
    /// cluster this store does not record): shown, never touched.
    pub foreign: Vec<NodeInfo>,
}

impl Observed {
    /// The foreign nodes as an error naming their makers.
    pub fn foreign_error(&self, project: &str, cluster: &str) -> EngineError {
        let mut owners: Vec<String> = self
            .foreign
            .iter()
            .map(|n| tags::owner_of(&n.tags))
            .collect();
        owners.sort();
        owners.dedup();
        EngineError::ForeignCluster {
            project: project.into(),
            cluster: cluster.into(),
            nodes: self.foreign.len(),
            owners: owners.join(", "),
        }
    }

    /// Refuses a cluster that only another world has (no record here, no node of ours): what
    /// `destroy`, `stop`/`start` and `extend` say instead of acting on someone else's nodes.
    pub fn require_ours(
        &self,
        project: &str,
        cluster: &str,
        record: Option<&ClusterRecord>,
    ) -> Result<(), EngineError> {
        if record.is_some() || !self.ours.is_empty() {
            return Ok(());
        }
        if self.foreign.is_empty() {
            return Err(EngineError::ClusterNotFound {
                project: project.into(),
                cluster: cluster.into(),
            });
        }
        Err(self.foreign_error(project, cluster))
    }

    /// What `up` (and `plan`) refuses before changing anything: another world's nodes with this
    /// cluster's name, and nodes of this world that carry another uid than the record's (left
    /// by an earlier cluster of that name; adopting them would hand an old cluster's machines
    /// to a new one).
    pub fn check_up(
        &self,
        project: &str,
        cluster: &str,
        record: Option<&ClusterRecord>,
    ) -> Result<(), EngineError> {
        if !self.foreign.is_empty() {
            return Err(self.foreign_error(project, cluster));
        }
        let uid = record.map(|r| r.uid.as_str());
        let stale: Vec<&NodeInfo> = self
            .ours
            .iter()
            .filter(|n| n.tags.get(tags::CLUSTER_UID).map(String::as_str) != uid)
            .collect();
        if let Some(first) = stale.first() {
            return Err(EngineError::StaleNodes {
                cluster: cluster.into(),
                names: stale
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                found: first
                    .tags
                    .get(tags::CLUSTER_UID)
                    .cloned()
                    .unwrap_or_else(|| "none".into()),
                recorded: match uid {
                    Some(u) => format!("the record says {u}"),
                    None => "and this store has no record of the cluster".into(),
                },
            });
        }
        Ok(())
    }
}

/// Attempts of an idempotent provider call made outside the step dispatcher (listings, the
/// deletion of supporting resources), on top of any retries of the provider's own client.
pub const OUTSIDE_STEP_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub run_id: String,
    pub cluster: String,
    pub nodes: Vec<NodeInfo>,
    pub created: Vec<String>,
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub deleted: Vec<String>,
    pub elapsed_ms: u64,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn node_record(project: &str, cluster: &str, n: &NodeInfo) -> NodeRecord {
    let now = OffsetDateTime::now_utc();
    NodeRecord {
        project: project.into(),
        cluster: cluster.into(),
        name: n.name.clone(),
        pool: n.pool.clone(),
        index: n.index,
        provider_id: n.provider_id.clone(),
        address: n.address.map(|a| a.to_string()),
        ssh_host: n.ssh.as_ref().map(|s| s.host.clone()),
        ssh_port: n.ssh.as_ref().map(|s| s.port),
        ssh_user: n.ssh.as_ref().map(|s| s.user.clone()),
        state: n.state.as_str().into(),
        tags: n.tags.clone(),
        created_at: OffsetDateTime::parse(
            &n.created_at,
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or(now),
        updated_at: now,
    }
}

/// Makes the node records of `cluster` match what the provider lists now.
async fn sync_records(ctx: &Context, cluster: &str) -> Result<Vec<NodeInfo>, EngineError> {
    let nodes = ctx.list_nodes(cluster).await?;
    if ctx
        .store
        .get_cluster(&ctx.project, cluster)
        .await?
        .is_none()
    {
        // Untracked (found only by tags): nothing to keep in step with.
        return Ok(nodes);
    }
    let known = ctx.store.list_nodes(&ctx.project, cluster).await?;
    for r in known
        .iter()
        .filter(|r| !nodes.iter().any(|n| n.name == r.name))
    {
        ctx.store
            .delete_node(&ctx.project, cluster, &r.name)
            .await?;
    }
    for n in &nodes {
        ctx.store
            .put_node(&node_record(&ctx.project, cluster, n))
            .await?;
    }
    Ok(nodes)
}
