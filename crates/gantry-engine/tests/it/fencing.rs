//! A run stalled past its lease while another process takes the cluster lock: every write it
//! makes afterwards is refused by the store (fencing), it ends with `LockLost`, and the next run
//! closes its record and converges.
//!
//! The stall is real: the test's listener blocks the (single-threaded) runtime that runs the
//! operation — its renewer included — when the first node's create starts, and meanwhile
//! another thread, on a handle of its own on the same database file, waits for the lease to
//! lapse and takes the lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gantry_core::event::Event;
use gantry_core::status::{ClusterStatus, RunStatus};
use gantry_engine::EngineError;
use gantry_engine::ops::{self, UpOptions};
use gantry_state::{Acquire, Lease, SqliteStore, StateStore};

use crate::{names, spec, world};

#[tokio::test]
async fn a_run_stalled_past_its_lease_writes_nothing_after_a_takeover() {
    let mut w = world();
    w.ctx.lock_ttl = Duration::from_millis(500);
    let path = w._dir.path().join("state.db");
    let taken: Arc<std::sync::Mutex<Option<Lease>>> = Arc::default();
    let stalled = Arc::new(AtomicBool::new(false));
    let listener = {
        let (events, taken, stalled) = (w.events.clone(), taken.clone(), stalled.clone());
        Arc::new(move |e: &Event| {
            events.lock().unwrap().push(e.clone());
            if matches!(e, Event::StepStarted { step, .. } if step.starts_with("create:"))
                && !stalled.swap(true, Ordering::SeqCst)
            {
                // Blocks this runtime (the run and its renewer) until another "process" has
                // taken the lock after the lease lapsed.
                let path = path.clone();
                let lease = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        let other = SqliteStore::open(&path).unwrap();
                        tokio::time::sleep(Duration::from_millis(900)).await;
                        match other
                            .acquire_lock(
                                "cluster/test/demo",
                                "other-process",
                                Duration::from_secs(60),
                            )
                            .await
                            .unwrap()
                        {
                            Acquire::Acquired(l) => l,
                            held => panic!("the lapsed lease must be taken over: {held:?}"),
                        }
                    })
                })
                .join()
                .unwrap();
                *taken.lock().unwrap() = Some(lease);
            }
        }) as gantry_engine::events::Listener
    };
    w.ctx.listener = Some(listener);
    let (s, t) = spec(3);
    let err = ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::LockLost {
                taken_over: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(stalled.load(Ordering::SeqCst), "the run was stalled");
    let lease = taken
        .lock()
        .unwrap()
        .clone()
        .expect("the lock was taken over");

    // Nothing the stale run wrote after the takeover is in the store: the cluster stays as it
    // was recorded before the steps (creating), no node was recorded, and the run's log ends
    // before the stall.
    let record = w.store.get_cluster("test", "demo").await.unwrap().unwrap();
    assert_eq!(record.status, ClusterStatus::Creating);
    assert!(w.store.list_nodes("test", "demo").await.unwrap().is_empty());
    let runs = w.store.list_runs("test", Some("demo"), 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0].status,
        RunStatus::Running,
        "the stale run cannot close its own record: the next holder does"
    );
    let logged = w.store.list_events(&runs[0].id, 0).await.unwrap();
    assert!(
        logged.iter().all(|e| !e.json.contains("run_finished")),
        "{logged:?}"
    );
    assert!(
        w.store
            .get_lock("cluster/test/demo")
            .await
            .unwrap()
            .map(|l| l.token)
            == Some(lease.token),
        "the stale run's release left the new lease alone"
    );

    // The other process lets go; the next run closes the stale record and converges.
    w.store.release_lock(&lease).await.unwrap();
    w.ctx.listener = None;
    ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(names(&w).await.len(), 3);
    let runs = w.store.list_runs("test", Some("demo"), 10).await.unwrap();
    let statuses: Vec<RunStatus> = runs.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [RunStatus::Succeeded, RunStatus::Abandoned]);
    assert!(
        runs[1]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("lost the cluster lock")),
        "{:?}",
        runs[1].error
    );
}
