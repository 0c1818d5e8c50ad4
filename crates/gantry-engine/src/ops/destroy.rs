//! `destroy`: every node of this world carrying the cluster's tags, then its supporting
//! resources, records and secrets (also what gc's destroys run, through `destroy_if`).

use gantry_core::status::{ClusterStatus, RunKind};
use gantry_provider::NodeInfo;
use gantry_state::ClusterRecord;

use super::run::{RunGuard, merged_cancel, outcome_to_result};
use super::{Context, Report};
use crate::EngineError;
use crate::dag::{Step, StepError};

pub(super) fn delete_step(ctx: &Context, n: &NodeInfo, after: Vec<String>) -> Step {
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
                    .map_err(StepError::retryable_from)?;
                kh.forget(&node.name).map_err(StepError::fatal_from)?;
                Ok(())
            }
        },
    )
}

/// Deletes every node carrying the cluster's tags, then its supporting resources and records.
pub async fn destroy(ctx: &Context, cluster: &str) -> Result<Report, EngineError> {
    destroy_if(ctx, cluster, RunKind::Destroy, &|_, _| true)
        .await?
        .ok_or_else(|| EngineError::ClusterNotFound {
            project: ctx.project.clone(),
            cluster: cluster.into(),
        })
}

/// Re-checked by [`destroy_if`] once the lock is held, on the record and the listed nodes.
pub(super) type StillWanted<'a> = &'a (dyn Fn(Option<&ClusterRecord>, &[NodeInfo]) -> bool + Sync);

/// `destroy`, recorded as a run of `kind`, if `still` holds under the lock; `Ok(None)` if not.
pub(super) async fn destroy_if(
    ctx: &Context,
    cluster: &str,
    kind: RunKind,
    still: StillWanted<'_>,
) -> Result<Option<Report>, EngineError> {
    let run = RunGuard::begin(ctx, cluster, kind, None).await?;
    // From here on every write goes through the store fenced with the lock's lease.
    let ctx = &run.context(ctx);
    let result = async {
        let record = ctx.store.get_cluster(&ctx.project, cluster).await?;
        let observed = ctx.observe(cluster).await?;
        if !still(record.as_ref(), &observed.ours) {
            return Ok(None);
        }
        // Recorded nodes this home cannot reach (another home's local nodes): never dropped as
        // if they were gone. gc skips such a cluster; a destroy is refused.
        if let Some(refused) = ctx.unreachable_node(cluster).await? {
            if kind == RunKind::Gc {
                return Ok(None);
            }
            return Err(refused);
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
            c.status = ClusterStatus::Destroying;
            ctx.store.put_cluster(&c).await?;
        }
        let steps: Vec<Step> = nodes.iter().map(|n| delete_step(ctx, n, vec![])).collect();
        let (out, total) = run
            .run_steps(
                ctx,
                RunKind::Destroy,
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
                source: None,
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
