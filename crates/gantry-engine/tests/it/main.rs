//! Engine operations against the in-memory provider and a real SQLite store: convergence,
//! retries, confirmation, locking and resuming after a crash. No SSH (`readiness: api`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_core::event::Event;
use gantry_core::tags::{self, TagFilter};
use gantry_engine::EngineError;
use gantry_engine::ops::{self, Context, UpOptions};
use gantry_provider::Provider;
use gantry_provider::testkit::MemoryProvider;
use gantry_ssh::{ClientConfig, KeyPair, KnownHosts};
use gantry_state::{SqliteStore, StateStore};
use tokio_util::sync::CancellationToken;

mod fencing;
mod inventory;
mod lifetime;
mod up_once;
mod worlds;

struct World {
    _dir: tempfile::TempDir,
    provider: Arc<MemoryProvider>,
    store: Arc<dyn StateStore>,
    events: Arc<Mutex<Vec<Event>>>,
    ctx: Context,
}

fn world() -> World {
    world_on(Arc::new(MemoryProvider::new()), "tester")
}

/// A gantry world (its own store, key and pins) of user `owner` on `provider`, which other
/// worlds may share (two homes on one Docker engine or AWS account).
fn world_on(provider: Arc<MemoryProvider>, owner: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> =
        Arc::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
    let events = Arc::new(Mutex::new(Vec::new()));
    let e2 = events.clone();
    let ctx = Context {
        project: "test".into(),
        owner: owner.into(),
        provider: provider.clone(),
        store: store.clone(),
        ssh: ClientConfig {
            key: Arc::new(KeyPair::generate()),
            known_hosts: Arc::new(KnownHosts::new(dir.path().join("known_hosts"))),
            connect_timeout: Duration::from_secs(1),
        },
        cancel: CancellationToken::new(),
        listener: Some(Arc::new(move |e: &Event| {
            e2.lock().unwrap().push(e.clone())
        })),
        lock_timeout: Duration::from_secs(5),
        lock_ttl: gantry_engine::lock::LEASE_TTL,
        transport: None,
        command: "test".into(),
        secrets: Arc::new(gantry_engine::secrets::MemorySecretStore::new()),
    };
    World {
        _dir: dir,
        provider,
        store,
        events,
        ctx,
    }
}

fn spec(count: u32) -> (gantry_core::ClusterSpec, String) {
    let text = format!(
        "apiVersion: gantry/v1\nname: demo\nprovider: local\nreadiness: api\npools:\n  - name: db\n    count: {count}\n"
    );
    (
        gantry_provider::testkit::parse_spec("test.yaml", &text).unwrap(),
        text,
    )
}

async fn names(w: &World) -> Vec<String> {
    let mut n: Vec<String> = w
        .provider
        .list(&TagFilter::cluster("test", "demo"))
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn up_converges_and_is_idempotent() {
    let w = world();
    let (s, t) = spec(3);
    let r = ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(r.created.len(), 3);
    assert_eq!(names(&w).await, ["demo-db-1", "demo-db-2", "demo-db-3"]);
    let nodes = w
        .provider
        .list(&TagFilter::cluster("test", "demo"))
        .await
        .unwrap();
    let uid = &w
        .store
        .get_cluster("test", "demo")
        .await
        .unwrap()
        .unwrap()
        .uid;
    assert!(
        nodes
            .iter()
            .all(|n| &n.tags[tags::CLUSTER_UID] == uid && n.tags[tags::OWNER] == "tester")
    );
    let again = ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    assert!(
        again.created.is_empty(),
        "a converged cluster needs no change"
    );
    assert_eq!(w.store.list_nodes("test", "demo").await.unwrap().len(), 3);
    let c = w.store.get_cluster("test", "demo").await.unwrap().unwrap();
    assert_eq!((c.generation, c.status.as_str()), (1, "ready"));
}

#[tokio::test]
async fn retryable_faults_are_retried_and_visible_in_events() {
    let w = world();
    w.provider.fail_next.store(3, Ordering::SeqCst);
    let (s, t) = spec(4);
    let r = ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(r.created.len(), 4);
    assert_eq!(names(&w).await.len(), 4);
    let retries = w
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::StepRetrying { .. }))
        .count();
    assert_eq!(retries, 3);
    // The recorded run replays the same retries.
    let recorded = w.store.list_events(&r.run_id, 0).await.unwrap();
    assert_eq!(
        recorded
            .iter()
            .filter(|e| e.json.contains("\"step_retrying\""))
            .count(),
        3
    );
}

#[tokio::test]
async fn listings_outside_steps_are_retried_then_give_up() {
    let w = world();
    // A throttled listing before any step runs (and when records are synced): retried.
    w.provider.fail_lists.store(3, Ordering::SeqCst);
    let (s, t) = spec(2);
    let r = ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(r.created.len(), 2);
    assert_eq!(w.provider.fail_lists.load(Ordering::SeqCst), 0);
    // destroy's listings too.
    w.provider.fail_lists.store(2, Ordering::SeqCst);
    ops::destroy(&w.ctx, &s.name).await.unwrap();
    assert!(names(&w).await.is_empty());
    // A provider that keeps failing: a bounded number of attempts, then its error.
    w.provider
        .fail_lists
        .store(ops::OUTSIDE_STEP_ATTEMPTS, Ordering::SeqCst);
    let e = ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("injected fault"), "{e}");
    assert_eq!(w.provider.fail_lists.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn shrinking_needs_confirmation_and_grow_continues_numbering() {
    let w = world();
    let (s3, t3) = spec(3);
    ops::up(&w.ctx, &s3, &t3, &UpOptions::default())
        .await
        .unwrap();
    let (s1, t1) = spec(1);
    let err = ops::up(&w.ctx, &s1, &t1, &UpOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::NeedsConfirmation { count: 2, .. }),
        "{err}"
    );
    assert_eq!(
        names(&w).await.len(),
        3,
        "nothing deleted without confirmation"
    );
    ops::up(
        &w.ctx,
        &s1,
        &t1,
        &UpOptions {
            allow_delete: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(names(&w).await, ["demo-db-1"]);
    let (s4, t4) = spec(4);
    ops::up(&w.ctx, &s4, &t4, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(
        names(&w).await,
        ["demo-db-1", "demo-db-2", "demo-db-3", "demo-db-4"]
    );
    assert_eq!(
        w.store
            .get_cluster("test", "demo")
            .await
            .unwrap()
            .unwrap()
            .generation,
        3
    );
}

#[tokio::test]
async fn resumes_after_a_crash_that_left_unrecorded_nodes() {
    let w = world();
    let (s, t) = spec(5);
    // A run that "crashed" after the provider created two nodes but before it recorded them:
    // `up` records the cluster (and so its uid) before it creates anything, so that is what
    // the crashed run left in the store.
    let now = time::OffsetDateTime::now_utc();
    w.store
        .put_cluster(&gantry_state::ClusterRecord {
            project: "test".into(),
            name: "demo".into(),
            uid: "uid-of-the-crashed-run".into(),
            provider: s.provider_name().into(),
            spec_yaml: t.clone(),
            spec_json: serde_json::to_string(&s).unwrap(),
            spec_hash: s.hash(),
            generation: 1,
            status: gantry_state::ClusterStatus::Creating,
            created_at: now,
            updated_at: now,
            expires_at: now + s.lifetime,
        })
        .await
        .unwrap();
    let plan = ops::plan_up(&w.ctx, &s).await.unwrap();
    assert_eq!(
        plan.create[0].tags[tags::CLUSTER_UID],
        "uid-of-the-crashed-run"
    );
    for req in plan.create.iter().take(2) {
        w.provider.create_node(req).await.unwrap();
    }
    let r = ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(r.created.len(), 3, "only the missing nodes are created");
    assert_eq!(names(&w).await.len(), 5);
    let creates = w
        .provider
        .calls()
        .iter()
        .filter(|c| c.starts_with("create "))
        .count();
    assert_eq!(creates, 5, "no node is created twice");
    assert_eq!(w.store.list_nodes("test", "demo").await.unwrap().len(), 5);
}

#[tokio::test]
async fn a_held_lock_makes_the_second_run_wait_then_time_out_naming_the_holder() {
    let mut w = world();
    let lease = match w
        .store
        .acquire_lock("cluster/test/demo", "other-holder", Duration::from_secs(60))
        .await
        .unwrap()
    {
        gantry_state::Acquire::Acquired(l) => l,
        other => panic!("lock should be free: {other:?}"),
    };
    w.ctx.lock_timeout = Duration::from_millis(300);
    let (s, t) = spec(1);
    let err = ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap_err();
    match &err {
        EngineError::LockTimeout { holder, .. } => assert_eq!(holder, "other-holder"),
        other => panic!("expected a lock timeout, got {other}"),
    }
    assert!(
        w.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::LockWaiting { holder, .. } if holder == "other-holder"))
    );
    assert!(
        names(&w).await.is_empty(),
        "nothing happens without the lock"
    );
    w.store.release_lock(&lease).await.unwrap();
    ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(names(&w).await.len(), 1);
}

#[tokio::test]
async fn destroy_removes_nodes_records_and_releases_the_lock() {
    let w = world();
    let (s, t) = spec(3);
    ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    let r = ops::destroy(&w.ctx, "demo").await.unwrap();
    assert_eq!(r.deleted.len(), 3);
    assert!(names(&w).await.is_empty());
    assert!(w.store.get_cluster("test", "demo").await.unwrap().is_none());
    assert!(w.store.list_nodes("test", "demo").await.unwrap().is_empty());
    assert!(
        w.store
            .get_lock("cluster/test/demo")
            .await
            .unwrap()
            .is_none()
    );
    let runs = w.store.list_runs("test", Some("demo"), 10).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(),
        ["succeeded", "succeeded"]
    );
}

#[tokio::test]
async fn a_cancelled_run_is_recorded_as_interrupted() {
    let w = world();
    w.ctx.cancel.cancel();
    let (s, t) = spec(2);
    let err = ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Interrupted), "{err}");
    let runs = w.store.list_runs("test", Some("demo"), 10).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status.as_str(), "interrupted");
    assert!(
        names(&w).await.is_empty(),
        "nothing starts after cancellation"
    );
}

#[tokio::test]
async fn a_lock_left_by_a_dead_process_on_this_host_is_taken_over_at_once() {
    let mut w = world();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let dead = format!("pid {pid}@{host} (gantry up -f killed.yaml)");
    let gantry_state::Acquire::Acquired(_) = w
        .store
        .acquire_lock("cluster/test/demo", &dead, Duration::from_secs(600))
        .await
        .unwrap()
    else {
        panic!("lock should be free")
    };
    w.ctx.lock_timeout = Duration::from_millis(300);
    let (s, t) = spec(1);
    ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .expect("the dead holder's lease is broken");
    assert!(
        w.events.lock().unwrap().iter().any(
            |e| matches!(e, Event::Message { text, .. } if text.contains("no longer running"))
        )
    );
}

/// A provider whose first listing (the one `plan_up` plans from) first lets another run finish
/// `up` of the cluster (record written, nodes created): the moment an unlocked `plan_up` can
/// meet.
struct UpDuringFirstClusterListing {
    inner: Arc<MemoryProvider>,
    racer: tokio::sync::Mutex<Option<Context>>,
}

#[async_trait::async_trait]
impl Provider for UpDuringFirstClusterListing {
    fn name(&self) -> &'static str {
        "memory"
    }
    async fn list(&self, f: &TagFilter) -> gantry_provider::Result<Vec<gantry_provider::NodeInfo>> {
        if let Some(other) = self.racer.lock().await.take() {
            let (s, t) = spec(2);
            ops::up(&other, &s, &t, &UpOptions::default())
                .await
                .expect("the other run's up");
        }
        self.inner.list(f).await
    }
    async fn create_node(
        &self,
        r: &gantry_provider::NodeRequest,
    ) -> gantry_provider::Result<gantry_provider::NodeInfo> {
        self.inner.create_node(r).await
    }
    async fn start_node(
        &self,
        n: &gantry_provider::NodeInfo,
    ) -> gantry_provider::Result<gantry_provider::NodeInfo> {
        self.inner.start_node(n).await
    }
    async fn stop_node(
        &self,
        n: &gantry_provider::NodeInfo,
    ) -> gantry_provider::Result<gantry_provider::NodeInfo> {
        self.inner.stop_node(n).await
    }
    async fn delete_node(&self, n: &gantry_provider::NodeInfo) -> gantry_provider::Result<()> {
        self.inner.delete_node(n).await
    }
}

/// Regression: `plan_up` runs without the cluster lock (the CLI plans before `up` to ask about
/// deletions). It read the record, then listed: when another `up` of a new cluster recorded it
/// and created its nodes in between, the nodes looked like leftovers of an earlier cluster and
/// the second `up` failed ("node(s) of an earlier cluster of that name"). Seen in CI as two
/// simultaneous `gantry up` of one spec.
#[tokio::test]
async fn plan_during_another_runs_first_up_sees_that_runs_nodes_as_ours() {
    let w = world();
    let racer = w.ctx.clone();
    let mut ctx = w.ctx.clone();
    ctx.provider = Arc::new(UpDuringFirstClusterListing {
        inner: w.provider.clone(),
        racer: tokio::sync::Mutex::new(Some(racer)),
    });
    let (s, _) = spec(2);
    let p = ops::plan_up(&ctx, &s)
        .await
        .expect("nodes the other run just made are this cluster's, not stale ones");
    assert!(p.create.is_empty(), "{:?}", p.create);
    assert_eq!(p.keep.len(), 2);
}
