//! Operations by cluster name: what `up`, `plan`, `extend`, `stop`/`start` and `destroy` mean,
//! given a cluster's name (or spec) and the [`App`] (the store, the project, the SSH identity, and how providers
//! are built). A front end adds only its own parts: arguments, prompts, progress rendering and
//! exit codes (the CLI) or requests and statuses (the server).
//!
//! Why providers come through a trait ([`Providers`]): building one is the binary's business
//! (which providers it was built with, where its files live), and this layer must not name a
//! provider crate.

use std::sync::Arc;
use std::time::Duration;

use gantry_core::{ClusterSpec, Target};
use gantry_provider::{NodeInfo, Provider, ResourceChange};
use gantry_ssh::ClientConfig;
use gantry_state::StateStore;
use tokio_util::sync::CancellationToken;

use super::cluster::{LoadedCluster, load_cluster, select_nodes};
use crate::EngineError;
use crate::events::Listener;
use crate::ops::{self, Context, ExtendFrom, ExtendReport, Observed, Power, Report, UpOptions};
use crate::plan::Plan;
use crate::secrets::SecretStore;
use crate::transport::Transport;

/// How the binary builds providers and transports.
pub trait Providers: Send + Sync {
    /// The provider a spec names.
    fn for_spec(&self, spec: &ClusterSpec) -> Result<Arc<dyn Provider>, EngineError>;
    /// The provider of a cluster the store has no record of (its nodes may still exist: a run
    /// that crashed before recording it).
    fn unrecorded(&self) -> Result<Arc<dyn Provider>, EngineError>;
    /// How a spec's nodes are reached when not over SSH (Docker exec); None: SSH.
    fn transport(&self, spec: &ClusterSpec, project: &str) -> Option<Arc<dyn Transport>>;
    /// Where else an unrecorded cluster's nodes may be when [`Providers::unrecorded`] has
    /// none (the default Docker engine); not being able to list one is the usual case.
    fn elsewhere(&self) -> Vec<Arc<dyn Provider>>;
}

/// Everything an operation by cluster name needs besides the name.
#[derive(Clone)]
pub struct App {
    pub project: String,
    /// Recorded in the `gantry-owner` tag.
    pub owner: String,
    pub store: Arc<dyn StateStore>,
    pub ssh: ClientConfig,
    pub secrets: Arc<dyn SecretStore>,
    pub cancel: CancellationToken,
    pub lock_timeout: Duration,
    /// The cluster lock's lease (see [`Context::lock_ttl`]).
    pub lock_ttl: Duration,
    /// What started the operations, shown to others waiting on a cluster's lock.
    pub command: String,
    pub providers: Arc<dyn Providers>,
}

/// What `destroy` of a cluster acts on, found before it starts (for a confirmation).
pub struct DestroyTarget {
    pub cluster: String,
    /// The nodes it destroys (`ours`) and another world's of that name, which stay.
    pub observed: Observed,
    ctx: Context,
}

/// A cluster ready to be operated on: its record and spec (None: no record) and the engine
/// context on its provider and transport.
pub struct ClusterOps {
    pub loaded: Option<LoadedCluster>,
    pub ctx: Context,
}

impl App {
    /// The engine's context on `provider`.
    pub fn context(&self, provider: Arc<dyn Provider>, listener: Option<Listener>) -> Context {
        Context {
            project: self.project.clone(),
            owner: self.owner.clone(),
            provider,
            store: self.store.clone(),
            ssh: self.ssh.clone(),
            cancel: self.cancel.clone(),
            listener,
            lock_timeout: self.lock_timeout,
            lock_ttl: self.lock_ttl,
            command: self.command.clone(),
            transport: None,
            secrets: self.secrets.clone(),
        }
    }

    /// `cluster` with its record and spec, on the provider and transport its spec names (the
    /// unrecorded provider without a record). A record that does not decode is an error.
    pub async fn cluster(
        &self,
        cluster: &str,
        listener: Option<Listener>,
    ) -> Result<ClusterOps, EngineError> {
        let loaded = load_cluster(self.store.as_ref(), &self.project, cluster).await?;
        let provider = match &loaded {
            Some(c) => self.providers.for_spec(&c.spec)?,
            None => self.providers.unrecorded()?,
        };
        let mut ctx = self.context(provider, listener);
        ctx.transport = loaded
            .as_ref()
            .and_then(|c| self.providers.transport(&c.spec, &self.project));
        Ok(ClusterOps { loaded, ctx })
    }

    /// `gantry extend CLUSTER BY`.
    pub async fn extend(
        &self,
        cluster: &str,
        by: Duration,
        from: ExtendFrom,
        listener: Option<Listener>,
    ) -> Result<ExtendReport, EngineError> {
        let c = self.cluster(cluster, listener).await?;
        ops::extend(&c.ctx, cluster, by, from).await
    }

    /// The nodes `target` names, on its cluster's provider.
    pub async fn target_nodes(&self, target: &Target) -> Result<Vec<NodeInfo>, EngineError> {
        let c = self.cluster(&target.cluster, None).await?;
        select_nodes(&c.ctx.provider, &self.project, target).await
    }

    /// `gantry stop TARGET` / `gantry start TARGET`: the nodes the target names (resolved
    /// before the run starts, so a bad target changes nothing); `start` re-runs the blueprints'
    /// boot steps through the cluster's transport.
    pub async fn power(
        &self,
        target: &Target,
        action: Power,
        listener: Option<Listener>,
    ) -> Result<Report, EngineError> {
        let c = self.cluster(&target.cluster, listener).await?;
        // Another home's local cluster: said as such, not as "no nodes" (see `ops::power`).
        if let Some(refused) = c.ctx.unreachable_node(&target.cluster).await? {
            return Err(refused);
        }
        let names: Vec<String> = select_nodes(&c.ctx.provider, &self.project, target)
            .await?
            .into_iter()
            .map(|n| n.name)
            .collect();
        let select = move |n: &NodeInfo| names.contains(&n.name);
        ops::power(&c.ctx, &target.cluster, action, Some(&select)).await
    }

    /// What `destroy` of `cluster` would act on: its provider's nodes of this world. An
    /// unrecorded cluster with no node there is looked for [`Providers::elsewhere`]. A cluster
    /// only another world has is an error naming its owner.
    pub async fn prepare_destroy(&self, cluster: &str) -> Result<DestroyTarget, EngineError> {
        let ClusterOps { loaded, mut ctx } = self.cluster(cluster, None).await?;
        let mut observed = ctx.observe(cluster).await?;
        if loaded.is_none() && observed.ours.is_empty() && observed.foreign.is_empty() {
            for p in self.providers.elsewhere() {
                let before = std::mem::replace(&mut ctx.provider, p);
                match ctx.observe(cluster).await {
                    Ok(o) if !o.ours.is_empty() || !o.foreign.is_empty() => {
                        observed = o;
                        break;
                    }
                    Ok(_) => ctx.provider = before,
                    Err(e) => {
                        tracing::debug!("not looking for nodes there: {e}");
                        ctx.provider = before;
                    }
                }
            }
        }
        observed.require_ours(&self.project, cluster, loaded.as_ref().map(|c| &c.record))?;
        Ok(DestroyTarget {
            cluster: cluster.into(),
            observed,
            ctx,
        })
    }

    /// `gantry destroy CLUSTER`, of what [`App::prepare_destroy`] found.
    pub async fn destroy(
        &self,
        target: DestroyTarget,
        listener: Option<Listener>,
    ) -> Result<Report, EngineError> {
        let DestroyTarget {
            cluster, mut ctx, ..
        } = target;
        ctx.listener = listener;
        ops::destroy(&ctx, &cluster).await
    }

    /// `gantry up`: the spec's cluster on the provider it names; its blueprints run over the
    /// cluster's transport unless `opts` gives one.
    pub async fn up(
        &self,
        spec: &ClusterSpec,
        spec_yaml: &str,
        mut opts: UpOptions,
        listener: Option<Listener>,
    ) -> Result<Report, EngineError> {
        let ctx = self.context(self.providers.for_spec(spec)?, listener);
        if opts.blueprints.transport.is_none() {
            opts.blueprints.transport = self.providers.transport(spec, &self.project);
        }
        ops::up(&ctx, spec, spec_yaml, &opts).await
    }

    /// `gantry plan`: what `up` of the spec would change, nodes and supporting resources.
    pub async fn plan(
        &self,
        spec: &ClusterSpec,
    ) -> Result<(Plan, Vec<ResourceChange>), EngineError> {
        let ctx = self.context(self.providers.for_spec(spec)?, None);
        let plan = ops::plan_up(&ctx, spec).await?;
        // The supporting resources too: a rule removed from the spec is revoked by `up`.
        let resources = ops::plan_resources(&ctx, spec).await?;
        Ok((plan, resources))
    }
}
