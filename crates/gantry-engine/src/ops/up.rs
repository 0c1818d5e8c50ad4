//! `up` and what `plan` shows of it: the name and ownership checks, the plan, and the steps
//! that create, start, wait for and delete nodes.

use std::time::Duration;

use gantry_core::ClusterSpec;
use gantry_core::tags::{self, TagFilter, World};
use gantry_provider::{ClusterRequest, NodeInfo};
use gantry_state::ClusterRecord;
use time::OffsetDateTime;

use super::destroy::delete_step;
use super::run::{RunGuard, merged_cancel, outcome_to_result};
use super::{Context, Report, lifetime, pin_reported_key, rfc3339, sync_records, wait_ssh};
use crate::EngineError;
use crate::dag::{Step, StepError};
use crate::plan::{Plan, PlanInput, plan};

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
                    wait_ssh(ssh, info, provider.boot_timeout(), cancel).await
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
