//! Lifetimes and garbage collection: `extend`, the expiry/world tags `up` keeps true on the
//! nodes it adopts, and carrying out a [`crate::gc::GcPlan`] with every decision re-checked
//! under the cluster lock. Everything here acts on this world's nodes only.

use std::time::Duration;

use futures::StreamExt as _;
use gantry_core::status::RunKind;
use gantry_core::tags::{self, Tags};
use gantry_provider::{ErrorKind, NodeInfo};
use gantry_state::ClusterRecord;
use time::OffsetDateTime;

use super::{Context, Report, RunGuard, destroy_if, merged_cancel, outcome_to_result, rfc3339};
use crate::EngineError;
use crate::dag::{Step, StepError};
use crate::gc;

/// `t` without its sub-second part: expiries are kept and tagged to the second, so the record
/// and the tags compare equal after a round trip through any store.
pub fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// `base + by` to the second, refused (not panicking) when it lies more than
/// [`gantry_core::spec::MAX_LIFETIME`] after `now` or past what a date can hold. Every expiry
/// the engine computes goes through here, before anything changes.
pub fn expiry(
    cluster: &str,
    now: OffsetDateTime,
    base: OffsetDateTime,
    by: Duration,
) -> Result<OffsetDateTime, EngineError> {
    gantry_core::spec::expiry_within_bound(now, base, by)
        .map(whole_seconds)
        .ok_or_else(|| EngineError::LifetimeTooLong {
            cluster: cluster.into(),
            what: if base <= now {
                format!("now + {}", humantime::format_duration(by))
            } else {
                format!(
                    "{} + {}",
                    rfc3339(whole_seconds(base)),
                    humantime::format_duration(by)
                )
            },
            max: gantry_core::spec::MAX_LIFETIME_TEXT,
        })
}

/// `now + by` (see [`expiry`]).
pub fn expiry_from_now(cluster: &str, by: Duration) -> Result<OffsetDateTime, EngineError> {
    let now = OffsetDateTime::now_utc();
    expiry(cluster, now, now, by)
}

/// What `extend` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExtendReport {
    pub run_id: String,
    pub cluster: String,
    /// false: the cluster has no record (found only by tags); only its tags changed.
    pub tracked: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub previous: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Nodes whose `gantry-expires` tag was set.
    pub nodes: Vec<String>,
    pub elapsed_ms: u64,
}

/// How `extend` computes the new expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtendFrom {
    /// `max(now, current expiry) + by`: adds to the time left (an expired cluster gets `by` from
    /// now).
    Expiry,
    /// `now + by`, whatever the current expiry (may shorten it).
    Now,
}

/// Moves a cluster's expiry: the record's `expires_at` and the `gantry-expires` tag of every
/// node carrying the cluster's tags, under the cluster lock. Tags are set first, the record
/// last, so a re-run after a failure converges to the same expiry.
pub async fn extend(
    ctx: &Context,
    cluster: &str,
    by: Duration,
    from: ExtendFrom,
) -> Result<ExtendReport, EngineError> {
    let run = RunGuard::begin(ctx, cluster, RunKind::Extend, None).await?;
    // From here on every write goes through the store fenced with the lock's lease.
    let ctx = &run.context(ctx);
    let result = async {
        let record = ctx.store.get_cluster(&ctx.project, cluster).await?;
        let observed = ctx.observe(cluster).await?;
        observed.require_ours(&ctx.project, cluster, record.as_ref())?;
        let nodes = observed.ours;
        let now = OffsetDateTime::now_utc();
        let previous = match &record {
            Some(r) => Some(r.expires_at),
            None => gc::tag_expiry(&nodes),
        };
        let base = match from {
            ExtendFrom::Now => now,
            ExtendFrom::Expiry => previous.map_or(now, |p| p.max(now)),
        };
        // Checked before any tag moves: a refused expiry changes nothing.
        let expires_at = expiry(cluster, now, base, by)?;
        let mut want = Tags::new();
        want.insert(tags::EXPIRES.into(), rfc3339(expires_at));
        let steps: Vec<Step> = nodes
            .iter()
            .map(|n| {
                let (provider, node, want) = (ctx.provider.clone(), n.clone(), want.clone());
                Step::new(
                    format!("tag:{}", n.name),
                    Some(n.name.clone()),
                    vec![],
                    move || {
                        let (provider, node, want) = (provider.clone(), node.clone(), want.clone());
                        async move {
                            provider.set_tags(&node, &want).await?;
                            Ok(())
                        }
                    },
                )
            })
            .collect();
        let (out, total) = run
            .run_steps(
                ctx,
                RunKind::Extend,
                cluster,
                steps,
                &merged_cancel(ctx, &run.lock),
            )
            .await;
        outcome_to_result(&out, total)?;
        if let Some(mut r) = record.clone() {
            r.expires_at = expires_at;
            r.updated_at = now;
            ctx.store.put_cluster(&r).await?;
        }
        Ok(ExtendReport {
            run_id: run.record.id.clone(),
            cluster: cluster.into(),
            tracked: record.is_some(),
            previous,
            expires_at,
            nodes: nodes.iter().map(|n| n.name.clone()).collect(),
            elapsed_ms: run.started.elapsed().as_millis() as u64,
        })
    }
    .await;
    run.finish(result).await
}

/// Makes the `gantry-expires` and `gantry-world` tags of the nodes `up` adopts match the
/// cluster's record (after `up --lifetime`, or when `up` takes over nodes an older gantry made
/// without a world tag), so gc judges them by the cluster they belong to. Only nodes already
/// carrying the record's uid get here (`Observed::check_up`); a node's uid is never rewritten.
/// Nodes already right are not touched; a provider that cannot change tags is left as it is.
pub(crate) async fn adopt(
    ctx: &Context,
    nodes: Vec<NodeInfo>,
    record: &ClusterRecord,
    world: &str,
) -> Result<Vec<NodeInfo>, EngineError> {
    let expires = rfc3339(whole_seconds(record.expires_at));
    let stale = |n: &NodeInfo| {
        let tagged = n
            .tags
            .get(tags::EXPIRES)
            .and_then(|s| {
                OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(whole_seconds);
        n.tags.get(tags::WORLD).map(String::as_str) != Some(world)
            || tagged != Some(whole_seconds(record.expires_at))
    };
    let mut want = Tags::new();
    want.insert(tags::EXPIRES.into(), expires);
    want.insert(tags::WORLD.into(), world.to_string());
    let results: Vec<_> = futures::stream::iter(nodes)
        .map(|n| {
            let want = &want;
            async move {
                if n.tags.get(tags::CLUSTER_UID) != Some(&record.uid) {
                    // Refused before (`check_up`); never hand a node to another cluster.
                    return Err(EngineError::StaleNodes {
                        cluster: record.name.clone(),
                        names: n.name.clone(),
                        found: n.tags.get(tags::CLUSTER_UID).cloned().unwrap_or_default(),
                        recorded: format!("the record says {}", record.uid),
                    });
                }
                if !stale(&n) {
                    return Ok(n);
                }
                match ctx.provider.set_tags(&n, want).await {
                    Ok(updated) => Ok(updated),
                    Err(e) if e.kind == ErrorKind::Unavailable => Ok(n),
                    Err(e) => Err(EngineError::from(e)),
                }
            }
        })
        .buffered(ctx.provider.concurrency().max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Destroys an expired cluster for gc, if it is still expired once its lock is held (it may
/// have been extended meanwhile): `Ok(None)` when it is not.
pub async fn gc_destroy(ctx: &Context, cluster: &str) -> Result<Option<Report>, EngineError> {
    let still = |record: Option<&ClusterRecord>, nodes: &[NodeInfo]| {
        gc::is_expired(record, nodes, OffsetDateTime::now_utc())
    };
    destroy_if(ctx, cluster, RunKind::Gc, &still).await
}

/// Deletes the named orphan nodes of `cluster` (a cluster name from their tags), each only if,
/// under the cluster's lock, it is still listed with the project's tags, still this world's,
/// still an orphan and older than `grace`. Returns the names deleted. Pins and node records are dropped only when
/// no record of the cluster exists (otherwise they belong to the live cluster).
pub async fn gc_orphans(
    ctx: &Context,
    cluster: &str,
    names: &[String],
    grace: Duration,
) -> Result<Vec<String>, EngineError> {
    let run = RunGuard::begin(ctx, cluster, RunKind::Gc, None).await?;
    // From here on every write goes through the store fenced with the lock's lease.
    let ctx = &run.context(ctx);
    let result = async {
        let record = ctx.store.get_cluster(&ctx.project, cluster).await?;
        let listed = ctx.list_nodes(cluster).await?;
        let now = OffsetDateTime::now_utc();
        let chosen: Vec<NodeInfo> = listed
            .iter()
            .filter(|n| names.contains(&n.name))
            .filter(|n| gc::orphan_reason(record.as_ref(), n).is_some())
            .filter(|n| gc::node_age(n, now).is_some_and(|a| a >= grace))
            .cloned()
            .collect();
        let steps: Vec<Step> = chosen
            .iter()
            .map(|n| {
                let (provider, store, kh) = (
                    ctx.provider.clone(),
                    ctx.store.clone(),
                    ctx.ssh.known_hosts.clone(),
                );
                let (node, project, cluster) =
                    (n.clone(), ctx.project.clone(), cluster.to_string());
                let untracked = record.is_none();
                Step::new(
                    format!("delete:{}", n.name),
                    Some(n.name.clone()),
                    vec![],
                    move || {
                        let (provider, store, kh, node) =
                            (provider.clone(), store.clone(), kh.clone(), node.clone());
                        let (project, cluster) = (project.clone(), cluster.clone());
                        async move {
                            provider.delete_node(&node).await?;
                            if untracked {
                                store
                                    .delete_node(&project, &cluster, &node.name)
                                    .await
                                    .map_err(StepError::retryable_from)?;
                                kh.forget(&node.name).map_err(StepError::fatal_from)?;
                            }
                            Ok(())
                        }
                    },
                )
            })
            .collect();
        let (out, total) = run
            .run_steps(
                ctx,
                RunKind::Gc,
                cluster,
                steps,
                &merged_cancel(ctx, &run.lock),
            )
            .await;
        outcome_to_result(&out, total)?;
        // The incarnations the orphans belonged to (never the recorded one) lose their secrets
        // once none of their nodes is left.
        let gone: std::collections::BTreeSet<&String> = chosen
            .iter()
            .filter_map(|n| n.tags.get(tags::CLUSTER_UID))
            .filter(|u| !u.is_empty() && record.as_ref().is_none_or(|r| &r.uid != *u))
            .collect();
        if record.is_none() || !gone.is_empty() {
            let left = ctx.list_nodes(cluster).await?;
            for uid in gone {
                if !left
                    .iter()
                    .any(|n| n.tags.get(tags::CLUSTER_UID) == Some(uid))
                {
                    ctx.secrets.delete_cluster(&ctx.project, uid).await?;
                }
            }
            if record.is_none() && left.is_empty() {
                ctx.delete_cluster_resources(cluster).await?;
            }
        }
        Ok(chosen.iter().map(|n| n.name.clone()).collect())
    }
    .await;
    run.finish(result).await
}
