//! The cluster lock: a lease with a fencing token in the state store.
//!
//! Two `up`/`destroy` runs on one cluster must not interleave. The second waits (showing who
//! holds the lock) until the first releases it or its lease lapses — a process killed with -9
//! cannot release, so its lease simply expires. A waiter on the same host does not even wait for
//! that: holders are named `pid N@host (command)`, and when that process no longer exists the
//! waiter expires the dead lease by its fencing token (a compare-and-expire: a lease taken over
//! meanwhile has another token and is left alone) and takes the lock.
//! While held, a background task renews the lease; if renewal finds the lease lapsed or taken
//! over, `lost()` fires and the run stops.
//!
//! A lease only tells a holder it *should* stop; a holder that stalled past its lease (a process
//! stopped, a laptop asleep) does not know it yet when it resumes. So the run writes through
//! [`ClusterLock::fenced`]: a handle of the store whose every write is refused, in the write's
//! own transaction, once a newer token was issued for the lock (`StateStore::fenced`). Whatever
//! the timing, nothing the stale holder writes after a takeover lands.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_core::event::Event;
use gantry_state::{Acquire, Fence, Lease, StateError, StateStore};
use tokio_util::sync::CancellationToken;

use crate::EngineError;
use crate::events::Events;

/// Lease length; renewed every sixth of it, so a saturated machine (busy store, starved
/// runtime) still renews long before it lapses.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// The shortest and longest lease accepted ([`clamp_lease_ttl`]): tests shorten the lease
/// (`GANTRY_LOCK_TTL_MS`), and a value out of these bounds would either renew in a busy loop
/// or keep a dead holder's cluster locked for hours.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(500);
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(600);

/// `ttl` brought within [`MIN_LEASE_TTL`]..=[`MAX_LEASE_TTL`].
pub fn clamp_lease_ttl(ttl: Duration) -> Duration {
    ttl.clamp(MIN_LEASE_TTL, MAX_LEASE_TTL)
}

pub fn cluster_lock_key(project: &str, cluster: &str) -> String {
    format!("cluster/{project}/{cluster}")
}

/// `pid@host (command)`, so a waiting user knows who holds the lock.
pub fn holder_id(command: &str) -> String {
    format!("pid {}@{} ({})", std::process::id(), hostname(), command)
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether `holder` names a process on this host that no longer runs (gone, or a zombie).
pub fn holder_is_dead(holder: &str) -> bool {
    let Some(rest) = holder.strip_prefix("pid ") else {
        return false;
    };
    let Some((pid, rest)) = rest.split_once('@') else {
        return false;
    };
    let host = rest.split(' ').next().unwrap_or_default();
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if host != hostname() || pid == std::process::id() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, s)| s.trim_start().starts_with('Z')),
    }
}

pub struct ClusterLock {
    store: Arc<dyn StateStore>,
    /// The lease's key and token: what every write of the run is fenced with.
    fence: Fence,
    lease: Arc<tokio::sync::Mutex<Lease>>,
    lost: CancellationToken,
    stop: CancellationToken,
    renewer: tokio::task::JoinHandle<()>,
}

impl ClusterLock {
    /// Takes the lock for leases of `ttl` (see [`clamp_lease_ttl`]), waiting up to `timeout`
    /// while someone else holds it.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one fact of the wait; a struct would only name them twice"
    )]
    pub async fn acquire(
        store: Arc<dyn StateStore>,
        project: &str,
        cluster: &str,
        holder: &str,
        ttl: Duration,
        timeout: Duration,
        events: &Events,
        cancel: &CancellationToken,
    ) -> Result<ClusterLock, EngineError> {
        let ttl = clamp_lease_ttl(ttl);
        let key = cluster_lock_key(project, cluster);
        let start = Instant::now();
        let mut last_told: Option<(String, Instant)> = None;
        loop {
            match store.acquire_lock(&key, holder, ttl).await? {
                Acquire::Acquired(lease) => return Ok(Self::hold(store, lease, ttl)),
                Acquire::Held {
                    holder: other,
                    expires_at,
                } => {
                    if holder_is_dead(&other)
                        && let Some(dead) = store.get_lock(&key).await?
                        && dead.holder == other
                    {
                        store.release_lock(&dead).await?;
                        events.emit(Event::Message {
                            level: gantry_core::status::Level::Warn,
                            text: format!(
                                "took over the lock on {cluster}: its holder ({other}) is no longer running"
                            ),
                        });
                        continue;
                    }
                    let left = (expires_at - time::OffsetDateTime::now_utc())
                        .whole_seconds()
                        .max(0) as u64;
                    let tell = match &last_told {
                        Some((h, at)) => h != &other || at.elapsed() > Duration::from_secs(5),
                        None => true,
                    };
                    if tell {
                        events.emit(Event::LockWaiting {
                            cluster: cluster.into(),
                            holder: other.clone(),
                            expires_in_secs: left,
                        });
                        last_told = Some((other.clone(), Instant::now()));
                    }
                    if start.elapsed() >= timeout {
                        return Err(EngineError::LockTimeout {
                            cluster: cluster.into(),
                            holder: other,
                            expires_in_secs: left,
                            waited_secs: start.elapsed().as_secs(),
                        });
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(EngineError::Interrupted),
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                }
            }
        }
    }

    fn hold(store: Arc<dyn StateStore>, lease: Lease, ttl: Duration) -> ClusterLock {
        let fence = Fence::of(&lease);
        let lease = Arc::new(tokio::sync::Mutex::new(lease));
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let renewer = {
            let (store, lease, lost, stop) =
                (store.clone(), lease.clone(), lost.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(ttl / 6) => {}
                    }
                    let mut l = lease.lock().await;
                    match store.renew_lock(&l, ttl).await {
                        Ok(new) => *l = new,
                        Err(StateError::LockLost { .. }) => {
                            lost.cancel();
                            return;
                        }
                        // A transient store error: try again at the next tick, the lease has slack.
                        Err(e) => tracing::warn!("could not renew the cluster lock: {e}"),
                    }
                }
            })
        };
        ClusterLock {
            store,
            fence,
            lease,
            lost,
            stop,
            renewer,
        }
    }

    /// Fires if the lease was lost.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    pub fn fencing_token(&self) -> u64 {
        self.fence.token
    }

    /// The store, fenced with this lease: what every write of the run goes through, so none
    /// lands once another run took the lock over ([`StateError::Fenced`]).
    pub fn fenced(&self) -> Arc<dyn StateStore> {
        self.store.fenced(self.fence.clone())
    }

    pub async fn release(self) -> Result<(), EngineError> {
        self.stop.cancel();
        let _ = self.renewer.await;
        let lease = self.lease.lock().await.clone();
        self.store.release_lock(&lease).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_holders_are_recognised() {
        assert!(!holder_is_dead(&holder_id("me")), "this process is alive");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(holder_is_dead(&format!(
            "pid {pid}@{} (gantry up)",
            hostname()
        )));
        assert!(
            !holder_is_dead(&format!("pid {pid}@some-other-host (gantry up)")),
            "other hosts are never judged"
        );
        assert!(!holder_is_dead("test-holder"));
        assert!(!holder_is_dead("pid 1@"));
    }
}
