//! The operations a user runs on a cluster: `up`, `destroy`, `stop`, `start`.
//!
//! Each one takes the cluster lock, records a run, observes the provider by tags, executes its
//! steps on the dispatcher and records the outcome. Observation always comes from the provider,
//! never only from the state store, so an operation re-run after a crash (even `kill -9`
//! between "created" and "recorded") converges: existing nodes are found by their tags and
//! `create_node` is idempotent by name.
//!
//! Every run goes through `RunGuard`, the one place that also invalidates the project's
//! inventory cache (when the run starts and when it ends), so `gantry ls` never serves a listing
//! from before a change gantry made.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_core::ClusterSpec;
use gantry_core::event::Event;
use gantry_core::tags::{self, TagFilter, World};
use gantry_provider::{ClusterRequest, NodeInfo, NodeState, Provider};
use gantry_ssh::ClientConfig;
use gantry_state::{ClusterRecord, NodeRecord, RunRecord, StateStore};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::EngineError;
use crate::dag::{self, Checkpoints, Step, StepError};
use crate::events::{Events, Listener, Recorder};
use crate::lock::{ClusterLock, holder_id};
use crate::plan::{Plan, PlanInput, plan};
use crate::transport::ssh::{pin_reported_key, wait_ready};

mod lifetime;
pub use lifetime::{ExtendFrom, ExtendReport, extend, gc_destroy, gc_orphans, whole_seconds};

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

/// A run in progress: its record, event bus and lock.
struct RunGuard {
    store: Arc<dyn StateStore>,
    record: RunRecord,
    events: Events,
    recorder: Recorder,
    lock: ClusterLock,
    started: Instant,
}

impl RunGuard {
    async fn begin(
        ctx: &Context,
        cluster: &str,
        kind: &str,
        spec_hash: Option<String>,
    ) -> Result<RunGuard, EngineError> {
        let holder = holder_id(&ctx.command);
        // Lock waits are shown but not recorded (there is no run yet).
        let pre = Events::new(ctx.listener.clone());
        let lock = ClusterLock::acquire(
            ctx.store.clone(),
            &ctx.project,
            cluster,
            &holder,
            ctx.lock_timeout,
            &pre,
            &ctx.cancel,
        )
        .await?;
        if let Err(e) = close_abandoned_runs(ctx, cluster).await {
            let _ = lock.release().await;
            return Err(e);
        }
        // Before anything changes: a run that dies half-way must not leave a cached listing
        // that hides what it created.
        if let Err(e) = invalidate_inventory(ctx.store.as_ref(), &ctx.project).await {
            let _ = lock.release().await;
            return Err(e);
        }
        let record = RunRecord {
            id: uuid::Uuid::now_v7().to_string(),
            project: ctx.project.clone(),
            cluster: cluster.into(),
            kind: kind.into(),
            status: "running".into(),
            spec_hash,
            holder,
            started_at: OffsetDateTime::now_utc(),
            finished_at: None,
            error: None,
        };
        if let Err(e) = ctx.store.create_run(&record).await {
            let _ = lock.release().await;
            return Err(e.into());
        }
        let (events, recorder) =
            Events::recorded(ctx.listener.clone(), ctx.store.clone(), record.id.clone());
        Ok(RunGuard {
            store: ctx.store.clone(),
            record,
            events,
            recorder,
            lock,
            started: Instant::now(),
        })
    }

    /// Announces `steps` and runs them on the dispatcher, as many at once as the provider
    /// allows, until done or `cancel` (the user's Ctrl-C or a lost lease). Returns the outcome
    /// and how many steps there were.
    async fn run_steps(
        &self,
        ctx: &Context,
        kind: &str,
        cluster: &str,
        steps: Vec<Step>,
        cancel: &CancellationToken,
    ) -> (dag::Outcome, usize) {
        let total = steps.len();
        self.events.emit(Event::RunStarted {
            run_id: self.record.id.clone(),
            kind: kind.into(),
            cluster: cluster.into(),
            steps: total,
        });
        let opts = dag::Options {
            concurrency: ctx.provider.concurrency(),
            ..Default::default()
        };
        let out = dag::execute(steps, &opts, &self.events, cancel, Some(self.checkpoints())).await;
        (out, total)
    }

    fn checkpoints(&self) -> Checkpoints {
        Checkpoints {
            store: self.store.clone(),
            run_id: self.record.id.clone(),
            spec_hash: self.record.spec_hash.clone(),
        }
    }

    async fn finish<T>(mut self, result: Result<T, EngineError>) -> Result<T, EngineError> {
        let status = match &result {
            Ok(_) => "succeeded",
            Err(EngineError::Interrupted) => "interrupted",
            Err(_) => "failed",
        };
        if let Err(EngineError::Interrupted) = &result {
            self.events.emit(Event::Interrupted {
                reason: "cancelled by the user".into(),
            });
        }
        self.events.emit(Event::RunFinished {
            run_id: self.record.id.clone(),
            status: status.into(),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        });
        self.record.status = status.into();
        self.record.finished_at = Some(OffsetDateTime::now_utc());
        self.record.error = result.as_ref().err().map(|e| e.to_string());
        let update = self.store.update_run(&self.record).await;
        // After the changes, whatever the outcome: a listing cached during the run is stale.
        let invalidate = invalidate_inventory(self.store.as_ref(), &self.record.project).await;
        drop(self.events);
        self.recorder.flush().await;
        let release = self.lock.release().await;
        let value = result?;
        update?;
        invalidate?;
        release?;
        Ok(value)
    }
}

/// Drops the project's cached provider listings (what `gantry ls` serves without asking the
/// provider). Every run that changes resources goes through [`RunGuard`], which calls this
/// when it starts and when it finishes, so no command has to remember to.
async fn invalidate_inventory(store: &dyn StateStore, project: &str) -> Result<(), EngineError> {
    store
        .invalidate_inventory(project, OffsetDateTime::now_utc())
        .await?;
    Ok(())
}

/// Runs change a cluster only under its lock, so once we hold it, any run of the cluster still
/// marked `running` belongs to a process that died (killed, crashed, lost its lease): close it
/// so `gantry runs` tells the truth.
async fn close_abandoned_runs(ctx: &Context, cluster: &str) -> Result<(), EngineError> {
    const SCAN: usize = 50;
    for mut r in ctx
        .store
        .list_runs(&ctx.project, Some(cluster), SCAN)
        .await?
    {
        if r.status == "running" {
            r.status = "abandoned".into();
            r.finished_at = Some(OffsetDateTime::now_utc());
            r.error = Some(format!(
                "its process ({}) ended without finishing the run",
                r.holder
            ));
            ctx.store.update_run(&r).await?;
        }
    }
    Ok(())
}

fn outcome_to_result(out: &dag::Outcome, total: usize) -> Result<(), EngineError> {
    if out.interrupted {
        return Err(EngineError::Interrupted);
    }
    if let Some((id, e)) = out.failed.first() {
        return Err(EngineError::StepsFailed {
            failed: out.failed.len(),
            total,
            first: format!("{id}: {}", e.message),
        });
    }
    Ok(())
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

/// Refuses a spec whose node names another cluster of the project makes too (see
/// [`gantry_core::names::name_collisions`]): the other clusters this store records (their
/// specs' pools) and every cluster the provider lists in the project, whoever made it.
async fn check_names(ctx: &Context, spec: &ClusterSpec) -> Result<(), EngineError> {
    let mut others: Vec<(String, String)> = Vec::new();
    for r in ctx.store.list_clusters(&ctx.project).await? {
        if r.name == spec.name {
            continue;
        }
        if let Ok(s) = serde_json::from_str::<ClusterSpec>(&r.spec_json) {
            others.extend(s.pools.into_iter().map(|p| (r.name.clone(), p.name)));
        }
    }
    let f = TagFilter::project(&ctx.project);
    for n in ctx.retry_outside_steps(|| ctx.provider.list(&f)).await? {
        if let (Some(c), Some(p)) = (n.tags.get(tags::CLUSTER), n.tags.get(tags::POOL)) {
            others.push((c.clone(), p.clone()));
        }
    }
    let pools = spec.pools.iter().map(|p| p.name.as_str());
    match gantry_core::names::name_collisions(&spec.name, pools, &others).first() {
        None => Ok(()),
        Some(c) => Err(EngineError::NameCollision {
            cluster: spec.name.clone(),
            pool: c.pool.clone(),
            other_cluster: c.other_cluster.clone(),
            other_pool: c.other_pool.clone(),
            example: gantry_core::node_name(&spec.name, &c.pool, 1),
        }),
    }
}

/// What `up` would do, without doing it. Refuses what `up` would refuse about the nodes it
/// finds (another world's cluster of this name, stale nodes of an earlier one) and about the
/// names it would give (another cluster's node names).
pub async fn plan_up(ctx: &Context, spec: &ClusterSpec) -> Result<Plan, EngineError> {
    check_names(ctx, spec).await?;
    // Nodes first, then the record: this runs without the cluster lock while another `up` may
    // be creating the cluster, and a cluster is recorded before any of its nodes exists, so a
    // record read after the listing knows every node the listing saw.
    let observed = ctx.observe(&spec.name).await?;
    let existing = ctx.store.get_cluster(&ctx.project, &spec.name).await?;
    observed.check_up(&ctx.project, &spec.name, existing.as_ref())?;
    let uid = existing.as_ref().map(|c| c.uid.clone()).unwrap_or_default();
    let expires = match existing {
        Some(c) => c.expires_at,
        None => lifetime::expiry_from_now(&spec.name, spec.lifetime)?,
    };
    Ok(plan(
        spec,
        &observed.ours,
        &PlanInput {
            project: &ctx.project,
            cluster_uid: &uid,
            owner: &ctx.owner,
            world: &observed.world.id,
            expires: &rfc3339(expires),
        },
    ))
}

/// What `up` would change in the cluster's supporting resources (a security group's rules, a key
/// pair), without changing anything: the provider's
/// [`Provider::plan_cluster_resources`](gantry_provider::Provider::plan_cluster_resources) for
/// the request `up` would make.
pub async fn plan_resources(
    ctx: &Context,
    spec: &ClusterSpec,
) -> Result<Vec<gantry_provider::ResourceChange>, EngineError> {
    let existing = ctx.store.get_cluster(&ctx.project, &spec.name).await?;
    let world = ctx.store.world_id().await?;
    let uid = existing.as_ref().map(|c| c.uid.clone()).unwrap_or_default();
    let expires = existing
        .map(|c| c.expires_at)
        .unwrap_or_else(|| OffsetDateTime::now_utc() + spec.lifetime);
    let expires = rfc3339(expires);
    let input = PlanInput {
        project: &ctx.project,
        cluster_uid: &uid,
        owner: &ctx.owner,
        world: &world,
        expires: &expires,
    };
    let creq = cluster_request(ctx, spec, &crate::plan::cluster_tags(spec, &input));
    ctx.retry_outside_steps(|| ctx.provider.plan_cluster_resources(&creq))
        .await
}

/// The supporting resources `up` asks the provider for.
fn cluster_request(ctx: &Context, spec: &ClusterSpec, tags: &gantry_core::Tags) -> ClusterRequest {
    ClusterRequest {
        project: ctx.project.clone(),
        cluster: spec.name.clone(),
        tags: tags.clone(),
        allow: spec.network.allow.clone(),
        ssh_public_key: ctx.ssh.key.public_openssh(),
    }
}

#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Allow the plan to delete nodes (shrink) without failing with `NeedsConfirmation`.
    pub allow_delete: bool,
    /// `up --lifetime`: the expiry becomes now + this (new and existing clusters alike);
    /// None keeps an existing cluster's expiry and gives a new one the spec's lifetime.
    pub lifetime: Option<Duration>,
    /// Blueprints to apply once every node is ready (validated by `blueprint::prepare`).
    pub blueprints: crate::blueprint::Apply,
}

/// Brings the cluster to exactly the spec.
pub async fn up(
    ctx: &Context,
    spec: &ClusterSpec,
    spec_yaml: &str,
    opts: &UpOptions,
) -> Result<Report, EngineError> {
    let hash = spec.hash();
    let run = RunGuard::begin(ctx, &spec.name, "up", Some(hash.clone())).await?;
    let result = up_locked(ctx, spec, spec_yaml, opts, &run).await;
    run.finish(result).await
}

async fn up_locked(
    ctx: &Context,
    spec: &ClusterSpec,
    spec_yaml: &str,
    opts: &UpOptions,
    run: &RunGuard,
) -> Result<Report, EngineError> {
    let now = OffsetDateTime::now_utc();
    let existing = ctx.store.get_cluster(&ctx.project, &spec.name).await?;
    if let Some(c) = &existing
        && c.provider != spec.provider_name()
    {
        return Err(EngineError::ProviderMismatch {
            cluster: spec.name.clone(),
            existing: c.provider.clone(),
            wanted: spec.provider_name().into(),
        });
    }
    // Before anything is recorded or created: node names another cluster makes too, another
    // world's cluster of this name, or stale nodes of an earlier one are refused and leave no
    // record behind.
    check_names(ctx, spec).await?;
    let observed = ctx.observe(&spec.name).await?;
    observed.check_up(&ctx.project, &spec.name, existing.as_ref())?;
    let hash = spec.hash();
    let mut record = match existing {
        Some(mut c) => {
            if c.spec_hash != hash {
                c.generation += 1;
            }
            c.spec_yaml = spec_yaml.into();
            c.spec_json = serde_json::to_string(spec).expect("spec serialises");
            c.spec_hash = hash.clone();
            c.updated_at = now;
            if let Some(l) = opts.lifetime {
                c.expires_at = lifetime::expiry(&spec.name, now, now, l)?;
            }
            c
        }
        None => ClusterRecord {
            project: ctx.project.clone(),
            name: spec.name.clone(),
            uid: uuid::Uuid::new_v4().to_string(),
            provider: spec.provider_name().into(),
            spec_yaml: spec_yaml.into(),
            spec_json: serde_json::to_string(spec).expect("spec serialises"),
            spec_hash: hash.clone(),
            generation: 1,
            status: "creating".into(),
            created_at: now,
            updated_at: now,
            expires_at: lifetime::expiry(
                &spec.name,
                now,
                now,
                opts.lifetime.unwrap_or(spec.lifetime),
            )?,
        },
    };
    record.status = "creating".into();
    // Recorded before anything is created: a crash from here on leaves a cluster gantry knows.
    ctx.store.put_cluster(&record).await?;

    let world = observed.world.id.clone();
    let observed = lifetime::adopt(ctx, observed.ours, &record, &world).await?;
    let expires = rfc3339(record.expires_at);
    let input = PlanInput {
        project: &ctx.project,
        cluster_uid: &record.uid,
        owner: &ctx.owner,
        world: &world,
        expires: &expires,
    };
    let p = plan(spec, &observed, &input);
    if !p.delete.is_empty() && !opts.allow_delete {
        let names = p
            .delete
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(EngineError::NeedsConfirmation {
            count: p.delete.len(),
            names,
        });
    }

    let steps = up_steps(
        ctx,
        spec,
        &crate::plan::cluster_tags(spec, &input),
        &world,
        &p,
    );
    let cancel = merged_cancel(ctx, &run.lock);
    let (out, total) = run.run_steps(ctx, "up", &spec.name, steps, &cancel).await;
    let mut nodes = sync_records(ctx, &spec.name).await?;
    // Software on the machines, once every machine is there and answers.
    let applied = if out.ok() && !run.lock.lost().is_cancelled() {
        let r = crate::blueprint::exec::apply(
            &crate::blueprint::exec::ApplyCtx {
                project: &ctx.project,
                cluster: &spec.name,
                cluster_uid: &record.uid,
                store: ctx.store.clone(),
                secrets: ctx.secrets.clone(),
                ssh: ctx.ssh.clone(),
                shares_fs: ctx.provider.shares_host_filesystem(),
                concurrency: ctx.provider.concurrency(),
                run_id: &run.record.id,
                events: &run.events,
                cancel: &cancel,
            },
            spec,
            &nodes,
            &opts.blueprints,
        )
        .await;
        if r.is_err() {
            nodes = sync_records(ctx, &spec.name).await?;
        }
        r
    } else {
        Ok(())
    };
    record.status = if out.ok() && applied.is_ok() {
        "ready".into()
    } else {
        "degraded".into()
    };
    record.updated_at = OffsetDateTime::now_utc();
    ctx.store.put_cluster(&record).await?;
    if run.lock.lost().is_cancelled() {
        return Err(EngineError::LockLost {
            cluster: spec.name.clone(),
        });
    }
    outcome_to_result(&out, total)?;
    applied?;
    Ok(Report {
        run_id: run.record.id.clone(),
        cluster: spec.name.clone(),
        nodes,
        created: p.create.iter().map(|r| r.name.clone()).collect(),
        started: p.start.iter().map(|n| n.name.clone()).collect(),
        stopped: vec![],
        deleted: p.delete.iter().map(|n| n.name.clone()).collect(),
        elapsed_ms: run.started.elapsed().as_millis() as u64,
    })
}

/// The user's cancel or a lost lease both stop the dispatcher.
fn merged_cancel(ctx: &Context, lock: &ClusterLock) -> CancellationToken {
    let merged = ctx.cancel.child_token();
    let (lost, m) = (lock.lost(), merged.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = lost.cancelled() => m.cancel(),
            _ = m.cancelled() => {}
        }
    });
    merged
}

fn up_steps(
    ctx: &Context,
    spec: &ClusterSpec,
    cluster_tags: &gantry_core::Tags,
    world: &str,
    p: &Plan,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let provider = ctx.provider.clone();
    // The nodes this run looks up again are found among this world's only. No record uid is
    // needed: `up` has made every node it keeps carry this world's tag (`adopt`).
    let own = TagFilter::cluster(&ctx.project, &spec.name).in_world(World::new(world));
    let creq = cluster_request(ctx, spec, cluster_tags);
    {
        let provider = provider.clone();
        steps.push(Step::new("resources", None, vec![], move || {
            let (provider, creq) = (provider.clone(), creq.clone());
            async move { Ok(provider.ensure_cluster_resources(&creq).await?) }
        }));
    }
    let ready_step = |node: String, after: String, info: Option<NodeInfo>| {
        let (provider, ssh, cancel) = (provider.clone(), ctx.ssh.clone(), ctx.cancel.clone());
        let own = own.clone();
        let readiness = spec.readiness;
        let name = node.clone();
        Step::new(
            format!("ready:{node}"),
            Some(node),
            vec![after],
            move || {
                let (provider, ssh, cancel, info) =
                    (provider.clone(), ssh.clone(), cancel.clone(), info.clone());
                let (own, name) = (own.clone(), name.clone());
                async move {
                    if readiness == gantry_core::Readiness::Api {
                        return Ok(());
                    }
                    // Created nodes are looked up again: their address is known only now.
                    let info = match info {
                        Some(i) => i,
                        None => provider
                            .list(&own)
                            .await?
                            .into_iter()
                            .find(|n| n.name == name)
                            .ok_or_else(|| {
                                StepError::retryable(format!("{name} not listed yet"))
                            })?,
                    };
                    wait_ready(ssh, info, provider.boot_timeout(), cancel).await
                }
            },
        )
    };
    for req in &p.create {
        let (provider, req2) = (provider.clone(), req.clone());
        let kh = ctx.ssh.known_hosts.clone();
        steps.push(Step::new(
            format!("create:{}", req.name),
            Some(req.name.clone()),
            vec!["resources".into()],
            move || {
                let (provider, req, kh) = (provider.clone(), req2.clone(), kh.clone());
                async move {
                    // A new node has a new host key: a pin left by an earlier node of this name is stale.
                    if provider
                        .list(&TagFilter::cluster(&req.project, &req.cluster))
                        .await?
                        .iter()
                        .all(|n| n.name != req.name)
                    {
                        kh.forget(&req.name)
                            .map_err(|e| StepError::fatal(e.to_string()))?;
                    }
                    let created = provider.create_node(&req).await?;
                    pin_reported_key(&kh, &created)?;
                    Ok(())
                }
            },
        ));
        steps.push(ready_step(
            req.name.clone(),
            format!("create:{}", req.name),
            None,
        ));
    }
    for n in &p.start {
        let (provider, n2) = (provider.clone(), n.clone());
        steps.push(Step::new(
            format!("start:{}", n.name),
            Some(n.name.clone()),
            vec!["resources".into()],
            move || {
                let (provider, n) = (provider.clone(), n2.clone());
                async move {
                    provider.start_node(&n).await?;
                    Ok(())
                }
            },
        ));
        steps.push(ready_step(
            n.name.clone(),
            format!("start:{}", n.name),
            None,
        ));
    }
    for n in &p.keep {
        steps.push(ready_step(
            n.name.clone(),
            "resources".into(),
            Some(n.clone()),
        ));
    }
    for n in &p.delete {
        steps.push(delete_step(ctx, n, vec![]));
    }
    steps
}

fn delete_step(ctx: &Context, n: &NodeInfo, after: Vec<String>) -> Step {
    let (provider, store, kh) = (
        ctx.provider.clone(),
        ctx.store.clone(),
        ctx.ssh.known_hosts.clone(),
    );
    let (project, cluster, node) = (
        ctx.project.clone(),
        n.tags
            .get(gantry_core::tags::CLUSTER)
            .cloned()
            .unwrap_or_default(),
        n.clone(),
    );
    Step::new(
        format!("delete:{}", n.name),
        Some(n.name.clone()),
        after,
        move || {
            let (provider, store, kh, node) =
                (provider.clone(), store.clone(), kh.clone(), node.clone());
            let (project, cluster) = (project.clone(), cluster.clone());
            async move {
                provider.delete_node(&node).await?;
                store
                    .delete_node(&project, &cluster, &node.name)
                    .await
                    .map_err(|e| StepError::retryable(e.to_string()))?;
                kh.forget(&node.name)
                    .map_err(|e| StepError::fatal(e.to_string()))?;
                Ok(())
            }
        },
    )
}

/// Deletes every node carrying the cluster's tags, then its supporting resources and records.
pub async fn destroy(ctx: &Context, cluster: &str) -> Result<Report, EngineError> {
    destroy_if(ctx, cluster, "destroy", &|_, _| true)
        .await?
        .ok_or_else(|| EngineError::ClusterNotFound {
            project: ctx.project.clone(),
            cluster: cluster.into(),
        })
}

/// Re-checked by [`destroy_if`] once the lock is held, on the record and the listed nodes.
type StillWanted<'a> = &'a (dyn Fn(Option<&ClusterRecord>, &[NodeInfo]) -> bool + Sync);

/// `destroy`, recorded as a run of `kind`, if `still` holds under the lock; `Ok(None)` if not.
async fn destroy_if(
    ctx: &Context,
    cluster: &str,
    kind: &str,
    still: StillWanted<'_>,
) -> Result<Option<Report>, EngineError> {
    let run = RunGuard::begin(ctx, cluster, kind, None).await?;
    let result = async {
        let record = ctx.store.get_cluster(&ctx.project, cluster).await?;
        let observed = ctx.observe(cluster).await?;
        if !still(record.as_ref(), &observed.ours) {
            return Ok(None);
        }
        // Only this world's nodes are deleted; a cluster only another world has is refused.
        if !observed.foreign.is_empty() {
            observed.require_ours(&ctx.project, cluster, record.as_ref())?;
        }
        let nodes = observed.ours;
        // Every incarnation whose secrets go with it: the record's and the nodes' own.
        let mut uids: std::collections::BTreeSet<String> = nodes
            .iter()
            .filter_map(|n| n.tags.get(gantry_core::tags::CLUSTER_UID).cloned())
            .collect();
        uids.extend(record.as_ref().map(|c| c.uid.clone()));
        if let Some(mut c) = record {
            c.status = "destroying".into();
            ctx.store.put_cluster(&c).await?;
        }
        let steps: Vec<Step> = nodes.iter().map(|n| delete_step(ctx, n, vec![])).collect();
        let (out, total) = run
            .run_steps(
                ctx,
                "destroy",
                cluster,
                steps,
                &merged_cancel(ctx, &run.lock),
            )
            .await;
        outcome_to_result(&out, total)?;
        // Only once every node is gone: supporting resources, then gantry's records.
        ctx.delete_cluster_resources(cluster).await?;
        let left = ctx.list_nodes(cluster).await?;
        if !left.is_empty() {
            return Err(EngineError::StepsFailed {
                failed: left.len(),
                total,
                first: format!("{} still listed after delete", left[0].name),
            });
        }
        ctx.store.delete_cluster(&ctx.project, cluster).await?;
        for uid in uids.iter().filter(|u| !u.is_empty()) {
            ctx.secrets.delete_cluster(&ctx.project, uid).await?;
        }
        Ok(Some(Report {
            run_id: run.record.id.clone(),
            cluster: cluster.into(),
            nodes: vec![],
            created: vec![],
            started: vec![],
            stopped: vec![],
            deleted: nodes.iter().map(|n| n.name.clone()).collect(),
            elapsed_ms: run.started.elapsed().as_millis() as u64,
        }))
    }
    .await;
    run.finish(result).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Stop,
    Start,
}

/// Stops or starts the selected nodes (all when `select` is None) of a cluster.
pub async fn power(
    ctx: &Context,
    cluster: &str,
    action: Power,
    select: Option<&(dyn Fn(&NodeInfo) -> bool + Sync)>,
) -> Result<Report, EngineError> {
    let kind = match action {
        Power::Stop => "stop",
        Power::Start => "start",
    };
    let run = RunGuard::begin(ctx, cluster, kind, None).await?;
    let result = async {
        let record = ctx.store.get_cluster(&ctx.project, cluster).await?;
        let observed = ctx.observe(cluster).await?;
        observed.require_ours(&ctx.project, cluster, record.as_ref())?;
        let nodes: Vec<NodeInfo> = observed.ours;
        let chosen: Vec<NodeInfo> = nodes
            .into_iter()
            .filter(|n| select.is_none_or(|f| f(n)))
            .collect();
        let readiness = record
            .as_ref()
            .and_then(|c| serde_json::from_str::<ClusterSpec>(&c.spec_json).ok())
            .map(|s| s.readiness)
            .unwrap_or_default();
        // How boot steps reach the started nodes: the cluster's own transport, else SSH (one
        // connection per node, shared by the run's steps, closed when they are done).
        let boot_transport: Arc<dyn crate::transport::Transport> = match &ctx.transport {
            Some(t) => t.clone(),
            None => Arc::new(crate::transport::SshTransport::new(ctx.ssh.clone())),
        };
        // Boot steps may print the cluster's secrets: their messages are masked.
        let masker = match (&record, action) {
            (Some(c), Power::Start) => gantry_core::secret::Masker::new(
                ctx.secrets.all(&ctx.project, &c.uid).await?.values(),
            ),
            _ => Default::default(),
        };
        let mut steps = Vec::new();
        for n in &chosen {
            let (provider, node) = (ctx.provider.clone(), n.clone());
            let id = format!("{kind}:{}", n.name);
            steps.push(Step::new(
                id.clone(),
                Some(n.name.clone()),
                vec![],
                move || {
                    let (provider, node) = (provider.clone(), node.clone());
                    async move {
                        match action {
                            Power::Stop if node.state != NodeState::Stopped => {
                                provider.stop_node(&node).await?
                            }
                            Power::Start if node.state != NodeState::Running => {
                                provider.start_node(&node).await?
                            }
                            _ => node,
                        };
                        Ok(())
                    }
                },
            ));
            // Boot steps are for nodes this run starts: one already running has its software
            // up (re-running them would start services twice).
            if action != Power::Start || n.state == NodeState::Running {
                continue;
            }
            let after = if ctx.transport.is_some() {
                // Not reached over SSH (Docker): the provider's start returns once the node
                // answers an exec, so its boot steps follow the start step directly.
                id
            } else if readiness == gantry_core::Readiness::Ssh && n.ssh.is_some() {
                let (ssh, cancel, timeout) = (
                    ctx.ssh.clone(),
                    ctx.cancel.clone(),
                    ctx.provider.boot_timeout(),
                );
                let ready = format!("ready:{}", n.name);
                let node = n.clone();
                steps.push(Step::new(
                    ready.clone(),
                    Some(n.name.clone()),
                    vec![id],
                    move || wait_ready(ssh.clone(), node.clone(), timeout, cancel.clone()),
                ));
                ready
            } else {
                continue;
            };
            if let Some(target) = boot_transport.target(n) {
                // Blueprint steps marked `boot: true` bring the node's software back.
                steps.push(crate::blueprint::exec::boot_step(
                    boot_transport.clone(),
                    target,
                    vec![after],
                    run.events.clone(),
                    ctx.cancel.clone(),
                    masker.clone(),
                ));
            }
        }
        let (out, total) = run
            .run_steps(ctx, kind, cluster, steps, &merged_cancel(ctx, &run.lock))
            .await;
        if ctx.transport.is_none() {
            boot_transport.close().await;
        }
        let nodes = sync_records(ctx, cluster).await?;
        if let Some(mut c) = record {
            let all_stopped = nodes.iter().all(|n| n.state == NodeState::Stopped);
            c.status = if all_stopped {
                "stopped".into()
            } else {
                "ready".into()
            };
            c.updated_at = OffsetDateTime::now_utc();
            ctx.store.put_cluster(&c).await?;
        }
        outcome_to_result(&out, total)?;
        let names: Vec<String> = chosen.iter().map(|n| n.name.clone()).collect();
        Ok(Report {
            run_id: run.record.id.clone(),
            cluster: cluster.into(),
            nodes,
            created: vec![],
            started: if action == Power::Start {
                names.clone()
            } else {
                vec![]
            },
            stopped: if action == Power::Stop { names } else { vec![] },
            deleted: vec![],
            elapsed_ms: run.started.elapsed().as_millis() as u64,
        })
    }
    .await;
    run.finish(result).await
}
