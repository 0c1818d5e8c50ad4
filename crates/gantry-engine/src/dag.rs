//! The step dispatcher.
//!
//! Steps form a DAG through `after`. The dispatcher keeps at most `concurrency` steps in
//! flight, starts a step once everything it depends on succeeded, retries retryable failures
//! with exponential backoff and full jitter, and skips the dependants of a failed step.
//! Cancellation (first Ctrl-C) means: nothing new starts, in-flight steps finish, retries
//! waiting on backoff give up. Every state change is checkpointed and emitted as an event.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use gantry_core::event::Event;
use gantry_state::{StateStore, StepRecord, StepStatus};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::events::Events;

/// Why a step failed, and whether trying again may help.
///
/// `message` is what events, checkpoints and the run's error show (already masked where a
/// blueprint's secrets may appear); `source` is the typed error it came from, kept for callers
/// that branch on it or print its causes. Blueprint steps never attach one: their messages
/// pass through the cluster's masker, an unmasked cause must not ride along.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub retryable: bool,
    pub message: String,
    #[source]
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StepError {
    pub fn retryable(m: impl Into<String>) -> Self {
        StepError {
            retryable: true,
            message: m.into(),
            source: None,
        }
    }

    pub fn fatal(m: impl Into<String>) -> Self {
        StepError {
            retryable: false,
            message: m.into(),
            source: None,
        }
    }

    /// A step that failed on `e` and is not worth retrying; `e`'s text is the message and `e`
    /// stays its source.
    pub fn fatal_from(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StepError {
            retryable: false,
            message: e.to_string(),
            source: Some(Arc::new(e)),
        }
    }

    /// The same for a failure that may pass when tried again.
    pub fn retryable_from(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StepError {
            retryable: true,
            ..StepError::fatal_from(e)
        }
    }
}

impl From<gantry_provider::ProviderError> for StepError {
    fn from(e: gantry_provider::ProviderError) -> Self {
        let mut message = e.to_string();
        if let Some(h) = &e.hint {
            message.push_str(&format!(" (hint: {h})"));
        }
        StepError {
            retryable: e.is_retryable(),
            message,
            source: Some(Arc::new(e)),
        }
    }
}

pub type Action = Arc<dyn Fn() -> BoxFuture<'static, Result<(), StepError>> + Send + Sync>;

pub struct Step {
    pub id: String,
    pub node: Option<String>,
    pub after: Vec<String>,
    pub action: Action,
}

impl Step {
    pub fn new<F, Fut>(
        id: impl Into<String>,
        node: Option<String>,
        after: Vec<String>,
        f: F,
    ) -> Step
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), StepError>> + Send + 'static,
    {
        Step {
            id: id.into(),
            node,
            after,
            action: Arc::new(move || Box::pin(f())),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 16,
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// Where checkpoints go (None: not recorded).
#[derive(Clone)]
pub struct Checkpoints {
    pub store: Arc<dyn StateStore>,
    pub run_id: String,
    pub spec_hash: Option<String>,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub succeeded: Vec<String>,
    pub failed: Vec<(String, StepError)>,
    /// Not run because a dependency failed.
    pub skipped: Vec<String>,
    /// Not started because the run was cancelled.
    pub not_started: Vec<String>,
    pub interrupted: bool,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
            && self.skipped.is_empty()
            && self.not_started.is_empty()
            && !self.interrupted
    }
}

/// `base * 2^(attempt-1)`, capped, with full jitter.
pub fn backoff(opts: &Options, attempt: u32) -> Duration {
    let exp = opts
        .base_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let cap = exp.min(opts.max_delay);
    let ms = cap.as_millis() as u64;
    Duration::from_millis(if ms == 0 {
        0
    } else {
        rand::random_range(ms / 2..=ms)
    })
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

async fn checkpoint(cp: &Option<Checkpoints>, rec: StepRecord) {
    if let Some(cp) = cp
        && let Err(e) = cp.store.put_step(&rec).await
    {
        tracing::warn!("could not checkpoint step {}: {e}", rec.step_id);
    }
}

/// Runs `steps`. Unknown `after` ids are treated as satisfied (they were done earlier).
pub async fn execute(
    steps: Vec<Step>,
    opts: &Options,
    events: &Events,
    cancel: &CancellationToken,
    cp: Option<Checkpoints>,
) -> Outcome {
    let ids: BTreeSet<String> = steps.iter().map(|s| s.id.clone()).collect();
    let mut pending: BTreeMap<String, usize> = BTreeMap::new();
    let mut dependants: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut by_id: BTreeMap<String, Step> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for s in steps {
        let deps: Vec<_> = s
            .after
            .iter()
            .filter(|d| ids.contains(*d))
            .cloned()
            .collect();
        pending.insert(s.id.clone(), deps.len());
        for d in deps {
            dependants.entry(d).or_default().push(s.id.clone());
        }
        order.push(s.id.clone());
        by_id.insert(s.id.clone(), s);
    }
    let mut ready: VecDeque<String> = order
        .iter()
        .filter(|id| pending[*id] == 0)
        .cloned()
        .collect();
    let mut out = Outcome::default();
    let mut running: JoinSet<(String, Result<(), StepError>)> = JoinSet::new();

    loop {
        while running.len() < opts.concurrency.max(1) && !cancel.is_cancelled() {
            let Some(id) = ready.pop_front() else { break };
            let step = by_id.remove(&id).expect("each step is dispatched once");
            running.spawn(run_step(
                step,
                opts.clone(),
                events.clone(),
                cancel.clone(),
                cp.clone(),
            ));
        }
        if running.is_empty() {
            break;
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (id, result) = match joined {
            Ok(r) => r,
            Err(e) => {
                // A panicking step is a bug; report it as a failure rather than bring the run down.
                out.failed
                    .push(("<panicked step>".into(), StepError::fatal_from(e)));
                continue;
            }
        };
        match result {
            Ok(()) => {
                for d in dependants.get(&id).cloned().unwrap_or_default() {
                    let n = pending.get_mut(&d).expect("dependant is known");
                    *n -= 1;
                    if *n == 0 {
                        ready.push_back(d);
                    }
                }
                out.succeeded.push(id);
            }
            Err(e) => {
                // Transitively skip everything that depends on the failed step.
                let mut stack = dependants.get(&id).cloned().unwrap_or_default();
                while let Some(d) = stack.pop() {
                    if let Some(step) = by_id.remove(&d) {
                        events.emit(Event::StepSkipped {
                            step: d.clone(),
                            node: step.node.clone(),
                            reason: format!("{id} failed"),
                        });
                        stack.extend(dependants.get(&d).cloned().unwrap_or_default());
                        out.skipped.push(d);
                    }
                }
                out.failed.push((id, e));
            }
        }
    }
    if cancel.is_cancelled() {
        out.interrupted = true;
        out.not_started = by_id
            .into_keys()
            .filter(|id| !out.skipped.contains(id))
            .collect();
    }
    out
}

async fn run_step(
    step: Step,
    opts: Options,
    events: Events,
    cancel: CancellationToken,
    cp: Option<Checkpoints>,
) -> (String, Result<(), StepError>) {
    let started = Instant::now();
    let started_at = now();
    let record =
        |status: StepStatus, attempts: u32, error: Option<String>, finished: bool| StepRecord {
            run_id: cp.as_ref().map(|c| c.run_id.clone()).unwrap_or_default(),
            step_id: step.id.clone(),
            node: step.node.clone(),
            status,
            attempts,
            error,
            spec_hash: cp.as_ref().and_then(|c| c.spec_hash.clone()),
            started_at,
            finished_at: finished.then(now),
        };
    let mut attempt = 1;
    loop {
        events.emit(Event::StepStarted {
            step: step.id.clone(),
            node: step.node.clone(),
            attempt,
        });
        checkpoint(&cp, record(StepStatus::Running, attempt, None, false)).await;
        match (step.action)().await {
            Ok(()) => {
                checkpoint(&cp, record(StepStatus::Done, attempt, None, true)).await;
                events.emit(Event::StepFinished {
                    step: step.id.clone(),
                    node: step.node.clone(),
                    elapsed_ms: started.elapsed().as_millis() as u64,
                });
                return (step.id.clone(), Ok(()));
            }
            Err(e) if e.retryable && attempt < opts.max_attempts && !cancel.is_cancelled() => {
                let delay = backoff(&opts, attempt);
                events.emit(Event::StepRetrying {
                    step: step.id.clone(),
                    node: step.node.clone(),
                    attempt,
                    delay_ms: delay.as_millis() as u64,
                    error: e.message.clone(),
                });
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => {
                        let e = StepError::fatal(format!("interrupted while retrying: {}", e.message));
                        checkpoint(&cp, record(StepStatus::Failed, attempt, Some(e.message.clone()), true)).await;
                        events.emit(Event::StepFailed { step: step.id.clone(), node: step.node.clone(), error: e.message.clone() });
                        return (step.id.clone(), Err(e));
                    }
                }
                attempt += 1;
            }
            Err(e) => {
                checkpoint(
                    &cp,
                    record(StepStatus::Failed, attempt, Some(e.message.clone()), true),
                )
                .await;
                events.emit(Event::StepFailed {
                    step: step.id.clone(),
                    node: step.node.clone(),
                    error: e.message.clone(),
                });
                return (step.id.clone(), Err(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

    fn fast() -> Options {
        Options {
            concurrency: 4,
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }

    fn logging_step(id: &str, after: &[&str], log: &Arc<Mutex<Vec<String>>>) -> Step {
        let (log, name) = (log.clone(), id.to_string());
        Step::new(
            id,
            None,
            after.iter().map(|s| s.to_string()).collect(),
            move || {
                let (log, name) = (log.clone(), name.clone());
                async move {
                    log.lock().unwrap().push(name);
                    Ok(())
                }
            },
        )
    }

    #[tokio::test]
    async fn dependencies_run_first() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let steps = vec![
            logging_step("c", &["b"], &log),
            logging_step("b", &["a"], &log),
            logging_step("a", &[], &log),
        ];
        let out = execute(
            steps,
            &fast(),
            &Events::new(None),
            &CancellationToken::new(),
            None,
        )
        .await;
        assert!(out.ok());
        assert_eq!(*log.lock().unwrap(), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn retryable_errors_are_retried_and_fatal_ones_skip_dependants() {
        let tries = Arc::new(AtomicU32::new(0));
        let t = tries.clone();
        let flaky = Step::new("flaky", None, vec![], move || {
            let t = t.clone();
            async move {
                if t.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(StepError::retryable("503"))
                } else {
                    Ok(())
                }
            }
        });
        let broken = Step::new("broken", None, vec![], || async {
            Err(StepError::fatal("bad input"))
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let after_broken = logging_step("after", &["broken"], &log);
        let after_after = logging_step("after2", &["after"], &log);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let events = Events::new(Some(Arc::new(move |e: &Event| {
            s2.lock().unwrap().push(e.clone())
        })));
        let out = execute(
            vec![flaky, broken, after_broken, after_after],
            &fast(),
            &events,
            &CancellationToken::new(),
            None,
        )
        .await;
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        assert_eq!(out.succeeded, ["flaky"]);
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].0, "broken");
        let mut skipped = out.skipped.clone();
        skipped.sort();
        assert_eq!(skipped, ["after", "after2"]);
        assert!(log.lock().unwrap().is_empty());
        let retries = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::StepRetrying { .. }))
            .count();
        assert_eq!(retries, 2, "each retry is visible as an event");
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        let live = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let steps = (0..20)
            .map(|i| {
                let (live, peak) = (live.clone(), peak.clone());
                Step::new(format!("s{i}"), None, vec![], move || {
                    let (live, peak) = (live.clone(), peak.clone());
                    async move {
                        let n = live.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        live.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    }
                })
            })
            .collect();
        let out = execute(
            steps,
            &fast(),
            &Events::new(None),
            &CancellationToken::new(),
            None,
        )
        .await;
        assert_eq!(out.succeeded.len(), 20);
        assert!(peak.load(Ordering::SeqCst) <= 4);
        assert!(peak.load(Ordering::SeqCst) >= 2, "steps should overlap");
    }

    #[tokio::test]
    async fn cancellation_lets_in_flight_finish_and_starts_nothing_new() {
        let cancel = CancellationToken::new();
        let finished = Arc::new(AtomicUsize::new(0));
        let steps = (0..10)
            .map(|i| {
                let (cancel, finished) = (cancel.clone(), finished.clone());
                Step::new(format!("s{i}"), None, vec![], move || {
                    let (cancel, finished) = (cancel.clone(), finished.clone());
                    async move {
                        cancel.cancel();
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        finished.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                })
            })
            .collect();
        let mut opts = fast();
        opts.concurrency = 2;
        let out = execute(steps, &opts, &Events::new(None), &cancel, None).await;
        assert!(out.interrupted);
        assert_eq!(
            out.succeeded.len(),
            finished.load(Ordering::SeqCst),
            "in-flight steps complete"
        );
        assert!(out.succeeded.len() <= 2);
        assert_eq!(out.succeeded.len() + out.not_started.len(), 10);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let o = Options {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..Options::default()
        };
        for _ in 0..50 {
            let d1 = backoff(&o, 1).as_millis();
            assert!((50..=100).contains(&d1));
            let d5 = backoff(&o, 5).as_millis();
            assert!((500..=1000).contains(&d5));
        }
    }
}
