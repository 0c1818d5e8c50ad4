//! `stop` and `start`: the chosen nodes' machines, and on `start` the blueprints' boot steps
//! once a node answers again, all as steps of one run.

use std::sync::Arc;

use gantry_core::status::{ClusterStatus, RunKind};
use gantry_provider::{NodeInfo, NodeState};
use time::OffsetDateTime;

use super::run::{RunGuard, merged_cancel, outcome_to_result};
use super::{Context, Report, sync_records};
use crate::EngineError;
use crate::dag::Step;
use crate::transport::ssh::wait_ready;

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
        Power::Stop => RunKind::Stop,
        Power::Start => RunKind::Start,
    };
    let run = RunGuard::begin(ctx, cluster, kind, None).await?;
    // From here on every write goes through the store fenced with the lock's lease.
    let ctx = &run.context(ctx);
    let result = async {
        let record = ctx.store.get_cluster(&ctx.project, cluster).await?;
        // Another home's local nodes: not this home's to stop or start (nor to drop the records
        // of, which syncing after a run that saw none of them would do).
        if let Some(refused) = ctx.unreachable_node(cluster).await? {
            return Err(refused);
        }
        let observed = ctx.observe(cluster).await?;
        observed.require_ours(&ctx.project, cluster, record.as_ref())?;
        let nodes: Vec<NodeInfo> = observed.ours;
        let chosen: Vec<NodeInfo> = nodes
            .into_iter()
            .filter(|n| select.is_none_or(|f| f(n)))
            .collect();
        // No record (nodes of a run that crashed before recording): the default readiness.
        let readiness = match &record {
            Some(c) => crate::record::decode_spec(c)?.readiness,
            None => Default::default(),
        };
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
                ClusterStatus::Stopped
            } else {
                ClusterStatus::Ready
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
