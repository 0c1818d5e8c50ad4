//! `up` and what `plan` shows of it: the name and ownership checks, the plan, and the steps
//! that create, start, wait for and delete nodes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_core::ClusterSpec;
use gantry_core::status::{ClusterStatus, RunKind};
use gantry_core::tags::{self, TagFilter, World};
use gantry_provider::{ClusterRequest, NodeInfo, NodeState};
use gantry_state::ClusterRecord;
use time::OffsetDateTime;

use super::destroy::delete_step;
use super::run::{RunGuard, merged_cancel, outcome_to_result};
use super::{Context, Observed, Report, lifetime, rfc3339, sync_records};
use crate::EngineError;
use crate::dag::{Step, StepError};
use crate::plan::{Plan, PlanInput, plan};
use crate::transport::ssh::{pin_reported_key, wait_ready};

/// What `up` and `plan` check and plan from: the cluster's record and its nodes by world, both
/// from one listing of the project (see [`observe_for_up`]).
struct UpView {
    existing: Option<ClusterRecord>,
    observed: Observed,
}

/// The one provider listing `up` (and `plan`) makes before it changes anything: every node of
/// the project. It serves both checks made before planning: the node names other clusters use
/// ([`check_names`]) and this cluster's nodes, split by world ([`Observed::check_up`]).
///
/// The listing comes before the records are read: `plan` runs without the cluster lock while
/// another `up` may be creating the cluster, and a cluster is recorded before any of its nodes
/// exists, so a record read after the listing knows every node the listing saw.
async fn observe_for_up(ctx: &Context, spec: &ClusterSpec) -> Result<UpView, EngineError> {
    let f = TagFilter::project(&ctx.project);
    let listed = ctx.retry_outside_steps(|| ctx.provider.list(&f)).await?;
    let records = ctx.store.list_clusters(&ctx.project).await?;
    check_names(spec, &records, &listed)?;
    let existing = records.into_iter().find(|r| r.name == spec.name);
    let mut world = World::new(ctx.store.world_id().await?);
    world
        .legacy_uids
        .extend(existing.as_ref().map(|r| r.uid.clone()));
    let mine = ctx.filter(&spec.name);
    let (ours, foreign) = listed
        .into_iter()
        .filter(|n| mine.matches(&n.tags))
        .partition(|n| world.owns(&n.tags));
    let observed = Observed {
        world,
        ours,
        foreign,
    };
    observed.check_up(&ctx.project, &spec.name, existing.as_ref())?;
    Ok(UpView { existing, observed })
}

/// Refuses a spec whose node names another cluster of the project makes too (see
/// [`gantry_core::names::name_collisions`]): the other clusters this store records (their
/// specs' pools) and every cluster the provider lists in the project (`listed`), whoever made
/// it.
fn check_names(
    spec: &ClusterSpec,
    records: &[ClusterRecord],
    listed: &[NodeInfo],
) -> Result<(), EngineError> {
    let mut others: Vec<(String, String)> = Vec::new();
    for r in records {
        if r.name == spec.name {
            continue;
        }
        // A record that does not decode is an error naming it: its node names cannot be
        // told, so a collision with it could not be ruled out.
        let s = crate::record::decode_spec(r)?;
        others.extend(s.pools.into_iter().map(|p| (r.name.clone(), p.name)));
    }
    for n in listed {
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

/// What `up` would do, without doing it (`gantry plan`). Refuses what `up` would refuse about
/// the nodes it finds (another world's cluster of this name, stale nodes of an earlier one) and
/// about the names it would give (another cluster's node names). Runs without the cluster lock;
/// `up` plans again under it, from its own listing, and asks about the deletions of that plan.
pub async fn plan_up(ctx: &Context, spec: &ClusterSpec) -> Result<Plan, EngineError> {
    preflight(ctx, spec).await?;
    let UpView { existing, observed } = observe_for_up(ctx, spec).await?;
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

/// What the provider needs before a run of `spec` starts ([`Provider::preflight`]: the
/// caller's address of `from: caller` rules), checked by `plan` and by `up` before it takes the
/// lock or records anything.
///
/// [`Provider::preflight`]: gantry_provider::Provider::preflight
async fn preflight(ctx: &Context, spec: &ClusterSpec) -> Result<(), EngineError> {
    let creq = cluster_request(ctx, spec, &gantry_core::Tags::new());
    ctx.provider.preflight(&creq).await?;
    Ok(())
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
    /// Allow the plan to delete nodes (shrink) without asking.
    pub allow_delete: bool,
    /// Asked when the plan deletes nodes and `allow_delete` is false. None: such a plan fails
    /// with [`EngineError::NeedsConfirmation`].
    pub confirm_delete: Option<ConfirmDelete>,
    /// `up --lifetime`: the expiry becomes now + this (new and existing clusters alike);
    /// None keeps an existing cluster's expiry and gives a new one the spec's lifetime.
    pub lifetime: Option<Duration>,
    /// Blueprints to apply once every node is ready (validated by `blueprint::prepare`).
    pub blueprints: crate::blueprint::Apply,
}

/// The answer to "this removes these nodes: continue?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    Yes,
    /// Asked, and the answer was no.
    No,
    /// Nobody could be asked (no terminal).
    CannotAsk,
}

/// The question `up` asks under the cluster lock, after planning from its one listing and
/// before it records or changes anything, when the plan deletes nodes: it gets their names.
/// It may block (a prompt on a terminal): `up` calls it on a blocking thread, and stops with
/// [`EngineError::Interrupted`] if the run is cancelled meanwhile.
#[derive(Clone)]
pub struct ConfirmDelete(pub Arc<AskAboutDeletions>);

/// The question of [`ConfirmDelete`]: the names of the nodes the plan deletes → the answer.
pub type AskAboutDeletions = dyn Fn(&[String]) -> Confirmation + Send + Sync;

impl std::fmt::Debug for ConfirmDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfirmDelete(..)")
    }
}

/// Whether `up` may carry out `p`: yes without deletions or with `allow_delete`; otherwise the
/// caller's [`ConfirmDelete`] decides.
async fn confirm_deletions(ctx: &Context, p: &Plan, opts: &UpOptions) -> Result<(), EngineError> {
    if p.delete.is_empty() || opts.allow_delete {
        return Ok(());
    }
    let names: Vec<String> = p.delete.iter().map(|n| n.name.clone()).collect();
    let answer = match &opts.confirm_delete {
        None => Confirmation::CannotAsk,
        Some(ConfirmDelete(ask)) => {
            let (ask, asked) = (ask.clone(), names.clone());
            let question = tokio::task::spawn_blocking(move || ask(&asked));
            tokio::select! {
                a = question => a.unwrap_or(Confirmation::CannotAsk),
                _ = ctx.cancel.cancelled() => return Err(EngineError::Interrupted),
            }
        }
    };
    match answer {
        Confirmation::Yes => Ok(()),
        Confirmation::No => Err(EngineError::NotConfirmed {
            count: names.len(),
            names: names.join(", "),
        }),
        Confirmation::CannotAsk => Err(EngineError::NeedsConfirmation {
            count: names.len(),
            names: names.join(", "),
        }),
    }
}

/// Brings the cluster to exactly the spec.
pub async fn up(
    ctx: &Context,
    spec: &ClusterSpec,
    spec_yaml: &str,
    opts: &UpOptions,
) -> Result<Report, EngineError> {
    preflight(ctx, spec).await?;
    let hash = spec.hash();
    let run = RunGuard::begin(ctx, &spec.name, RunKind::Up, Some(hash.clone())).await?;
    // From here on every write goes through the store fenced with the lock's lease.
    let result = up_locked(&run.context(ctx), spec, spec_yaml, opts, &run).await;
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
    // Before anything is recorded or created: node names another cluster makes too, another
    // world's cluster of this name, or stale nodes of an earlier one are refused and leave no
    // record behind. One listing, made under the lock, serves the checks and the plan.
    let UpView { existing, observed } = observe_for_up(ctx, spec).await?;
    if let Some(c) = &existing
        && c.provider != spec.provider_name()
    {
        return Err(EngineError::ProviderMismatch {
            cluster: spec.name.clone(),
            existing: c.provider.clone(),
            wanted: spec.provider_name().into(),
        });
    }
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
            status: ClusterStatus::Creating,
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
    record.status = ClusterStatus::Creating;
    let world = observed.world.id.clone();
    let expires = rfc3339(record.expires_at);
    let input = PlanInput {
        project: &ctx.project,
        cluster_uid: &record.uid,
        owner: &ctx.owner,
        world: &world,
        expires: &expires,
    };
    // Which nodes to keep, start, create and delete depends on their names and states only, so
    // the plan is made from the listing as it is, and a shrink is asked about before anything
    // (the record, the nodes' tags) changes.
    let mut p = plan(spec, &observed.ours, &input);
    confirm_deletions(ctx, &p, opts).await?;
    // Recorded before anything is created: a crash from here on leaves a cluster gantry knows.
    ctx.store.put_cluster(&record).await?;
    let adopted = lifetime::adopt(ctx, observed.ours, &record, &world).await?;
    p.refresh(&adopted);
    // A new node has a new host key: a pin left by an earlier node of one of these names is
    // stale. Dropped in one go before dispatch (the plan says which nodes are new).
    let new: Vec<&str> = p.create.iter().map(|r| r.name.as_str()).collect();
    ctx.ssh.known_hosts.forget_all(&new)?;

    let steps = up_steps(
        ctx,
        spec,
        &crate::plan::cluster_tags(spec, &input),
        &world,
        &p,
    );
    let cancel = merged_cancel(ctx, &run.lock);
    let (out, total) = run
        .run_steps(ctx, RunKind::Up, &spec.name, steps, &cancel)
        .await;
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
        ClusterStatus::Ready
    } else {
        ClusterStatus::Degraded
    };
    record.updated_at = OffsetDateTime::now_utc();
    ctx.store.put_cluster(&record).await?;
    if run.lock.lost().is_cancelled() {
        return Err(EngineError::LockLost {
            cluster: spec.name.clone(),
            taken_over: false,
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

/// Where a create or start step leaves the node as the provider returned it, for the node's
/// ready step: no listing is needed to learn a node's address when the call returned it.
type Returned = Arc<Mutex<Option<NodeInfo>>>;

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
    // `returned`: the node's info comes from a create or start call (else from the listing
    // the plan was made from, used as it is).
    let ready_step = |node: String, after: String, known: Returned, returned: bool| {
        let (provider, ssh, cancel) = (provider.clone(), ctx.ssh.clone(), ctx.cancel.clone());
        let own = own.clone();
        let readiness = spec.readiness;
        let name = node.clone();
        Step::new(
            format!("ready:{node}"),
            Some(node),
            vec![after],
            move || {
                let (provider, ssh, cancel) = (provider.clone(), ssh.clone(), cancel.clone());
                let known = known.lock().expect("returned node").clone();
                let (own, name) = (own.clone(), name.clone());
                async move {
                    if readiness == gantry_core::Readiness::Api {
                        return Ok(());
                    }
                    // A node the provider returned running, with its SSH endpoint, is waited
                    // for there. One still pending (a cloud instance right after its launch)
                    // is looked up again: its address is known only now.
                    let info = match known {
                        Some(i) if !returned => i,
                        Some(i) if i.state == NodeState::Running && i.ssh.is_some() => i,
                        _ => provider
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
        let returned = Returned::default();
        let slot = returned.clone();
        steps.push(Step::new(
            format!("create:{}", req.name),
            Some(req.name.clone()),
            vec!["resources".into()],
            move || {
                let (provider, req, kh, slot) =
                    (provider.clone(), req2.clone(), kh.clone(), slot.clone());
                async move {
                    // Any earlier pin of this name was dropped before dispatch (see `up`).
                    let created = provider.create_node(&req).await?;
                    pin_reported_key(&kh, &created)?;
                    *slot.lock().expect("returned node") = Some(created);
                    Ok(())
                }
            },
        ));
        steps.push(ready_step(
            req.name.clone(),
            format!("create:{}", req.name),
            returned,
            true,
        ));
    }
    for n in &p.start {
        let (provider, n2) = (provider.clone(), n.clone());
        let returned = Returned::default();
        let slot = returned.clone();
        steps.push(Step::new(
            format!("start:{}", n.name),
            Some(n.name.clone()),
            vec!["resources".into()],
            move || {
                let (provider, n, slot) = (provider.clone(), n2.clone(), slot.clone());
                async move {
                    let started = provider.start_node(&n).await?;
                    *slot.lock().expect("returned node") = Some(started);
                    Ok(())
                }
            },
        ));
        steps.push(ready_step(
            n.name.clone(),
            format!("start:{}", n.name),
            returned,
            true,
        ));
    }
    for n in &p.keep {
        steps.push(ready_step(
            n.name.clone(),
            "resources".into(),
            Arc::new(Mutex::new(Some(n.clone()))),
            false,
        ));
    }
    for n in &p.delete {
        steps.push(delete_step(ctx, n, vec![]));
    }
    steps
}
