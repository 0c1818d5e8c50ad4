//! `RunGuard`: what every run of an operation goes through — the cluster lock, the run record
//! and its event log, closing runs a dead process left open, and dropping the project's
//! inventory cache when the run starts and when it ends.
//!
//! Everything a run writes goes through the store fenced with its lease
//! ([`ClusterLock::fenced`]), from its own run record to the cluster's: once another run took
//! the lock over, the store refuses every write of this one. [`RunGuard::context`] is the
//! operation's context on that fenced store.
//!
//! A run that lost its lock (the renewer found the lease lapsed or taken, or a write was
//! refused as fenced) ends with [`EngineError::LockLost`]. Its own run record is closed as
//! `interrupted` by the run itself when the store still takes its writes (the lease lapsed but
//! nobody took the lock); when the lock was taken over its writes are refused, and the run that
//! took it closes the record as `abandoned` when it starts ([`close_abandoned_runs`]), since
//! it holds the lock and no run of the cluster can still be going.

use std::sync::Arc;
use std::time::Instant;

use gantry_core::event::Event;
use gantry_core::status::{RunKind, RunStatus};
use gantry_state::{RunRecord, StateStore};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::EngineError;
use crate::dag::{self, Checkpoints, Step};
use crate::events::{Events, Recorder};
use crate::lock::{ClusterLock, holder_id};

/// A run in progress: its record, event bus and lock.
pub(super) struct RunGuard {
    /// The store fenced with the lock's lease: every write of the run goes through it.
    store: Arc<dyn StateStore>,
    pub(super) record: RunRecord,
    pub(super) events: Events,
    recorder: Recorder,
    pub(super) lock: ClusterLock,
    pub(super) started: Instant,
}

impl RunGuard {
    pub(super) async fn begin(
        ctx: &Context,
        cluster: &str,
        kind: RunKind,
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
            ctx.lock_ttl,
            ctx.lock_timeout,
            &pre,
            &ctx.cancel,
        )
        .await?;
        let store = lock.fenced();
        if let Err(e) = close_abandoned_runs(ctx, store.as_ref(), cluster).await {
            let _ = lock.release().await;
            return Err(e);
        }
        // Before anything changes: a run that dies half-way must not leave a cached listing
        // that hides what it created.
        if let Err(e) = invalidate_inventory(store.as_ref(), &ctx.project).await {
            let _ = lock.release().await;
            return Err(e);
        }
        let record = RunRecord {
            id: uuid::Uuid::now_v7().to_string(),
            project: ctx.project.clone(),
            cluster: cluster.into(),
            kind,
            status: RunStatus::Running,
            spec_hash,
            holder,
            started_at: OffsetDateTime::now_utc(),
            finished_at: None,
            error: None,
        };
        if let Err(e) = store.create_run(&record).await {
            let _ = lock.release().await;
            return Err(e.into());
        }
        let (events, recorder) =
            Events::recorded(ctx.listener.clone(), store.clone(), record.id.clone());
        Ok(RunGuard {
            store,
            record,
            events,
            recorder,
            lock,
            started: Instant::now(),
        })
    }

    /// `ctx` on the run's fenced store: what the operation uses from the moment it holds the
    /// lock, so that every record it writes is refused once the lock is taken over.
    pub(super) fn context(&self, ctx: &Context) -> Context {
        Context {
            store: self.store.clone(),
            ..ctx.clone()
        }
    }

    /// Announces `steps` and runs them on the dispatcher, as many at once as the provider
    /// allows, until done or `cancel` (the user's Ctrl-C or a lost lease). Returns the outcome
    /// and how many steps there were.
    pub(super) async fn run_steps(
        &self,
        ctx: &Context,
        kind: RunKind,
        cluster: &str,
        steps: Vec<Step>,
        cancel: &CancellationToken,
    ) -> (dag::Outcome, usize) {
        let total = steps.len();
        self.events.emit(Event::RunStarted {
            run_id: self.record.id.clone(),
            kind,
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

    pub(super) async fn finish<T>(
        mut self,
        result: Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let fenced = matches!(&result, Err(e) if e.is_fenced());
        if fenced || self.lock.lost().is_cancelled() {
            return self.finish_lost(fenced).await;
        }
        let status = match &result {
            Ok(_) => RunStatus::Succeeded,
            Err(EngineError::Interrupted) => RunStatus::Interrupted,
            Err(_) => RunStatus::Failed,
        };
        if let Err(EngineError::Interrupted) = &result {
            self.events.emit(Event::Interrupted {
                reason: "cancelled by the user".into(),
            });
        }
        self.events.emit(Event::RunFinished {
            run_id: self.record.id.clone(),
            status,
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        });
        self.record.status = status;
        self.record.finished_at = Some(OffsetDateTime::now_utc());
        self.record.error = result.as_ref().err().map(|e| e.to_string());
        drop(self.events);
        // Independent of each other, so done at once: a store that stopped answering costs
        // one timeout here, not one per call.
        let (update, invalidate, ()) = tokio::join!(
            self.store.update_run(&self.record),
            // After the changes, whatever the outcome: a listing cached during the run is
            // stale.
            invalidate_inventory(self.store.as_ref(), &self.record.project),
            self.recorder.flush(),
        );
        let release = self.lock.release().await;
        let value = result?;
        update?;
        invalidate?;
        release?;
        Ok(value)
    }
}

impl RunGuard {
    /// Ends a run that lost its lock: with [`EngineError::LockLost`], whatever it was doing.
    /// The run record is closed as `interrupted` if the store still takes this run's writes;
    /// if not (`Fenced`: the lock was taken over), the run that took it closes it (see the
    /// module docs). Nothing else is written: not the cluster, not the inventory mark, and the
    /// release of the lost lease is a no-op that cannot touch the new holder's.
    async fn finish_lost<T>(mut self, mut taken_over: bool) -> Result<T, EngineError> {
        let cluster = self.record.cluster.clone();
        let lost = EngineError::LockLost {
            cluster: cluster.clone(),
            taken_over,
        };
        self.events.emit(Event::Interrupted {
            reason: format!("lost the lock on cluster {cluster}"),
        });
        self.events.emit(Event::RunFinished {
            run_id: self.record.id.clone(),
            status: RunStatus::Interrupted,
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        });
        drop(self.events);
        self.recorder.flush().await;
        self.record.status = RunStatus::Interrupted;
        self.record.finished_at = Some(OffsetDateTime::now_utc());
        self.record.error = Some(lost.to_string());
        match self.store.update_run(&self.record).await {
            Ok(()) => {}
            Err(e @ gantry_state::StateError::Fenced { .. }) => {
                taken_over = true;
                tracing::debug!("the run record is left to the lock's new holder: {e}");
            }
            Err(e) => tracing::warn!("could not close the run record: {e}"),
        }
        if let Err(e) = self.lock.release().await {
            tracing::debug!("releasing a lost lease: {e}");
        }
        Err(EngineError::LockLost {
            cluster,
            taken_over,
        })
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
///
/// "Died" includes a process that lost the lock (stalled past its lease while this run took
/// it): it cannot write any more (fencing), so its record is closed here too.
async fn close_abandoned_runs(
    ctx: &Context,
    store: &dyn StateStore,
    cluster: &str,
) -> Result<(), EngineError> {
    const SCAN: usize = 50;
    for mut r in store.list_runs(&ctx.project, Some(cluster), SCAN).await? {
        if r.status == RunStatus::Running {
            r.status = RunStatus::Abandoned;
            r.finished_at = Some(OffsetDateTime::now_utc());
            r.error = Some(format!(
                "its process ({}) ended, or lost the cluster lock, without finishing the run",
                r.holder
            ));
            store.update_run(&r).await?;
        }
    }
    Ok(())
}

pub(super) fn outcome_to_result(out: &dag::Outcome, total: usize) -> Result<(), EngineError> {
    if out.interrupted {
        return Err(EngineError::Interrupted);
    }
    if let Some((id, e)) = out.failed.first() {
        return Err(EngineError::StepsFailed {
            failed: out.failed.len(),
            total,
            first: format!("{id}: {}", e.message),
            source: Some(e.clone()),
        });
    }
    Ok(())
}

/// The user's cancel or a lost lease both stop the dispatcher.
pub(super) fn merged_cancel(ctx: &Context, lock: &ClusterLock) -> CancellationToken {
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
