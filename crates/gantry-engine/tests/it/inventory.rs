//! The inventory cache (what `gantry ls` serves without asking the provider) is invalidated by
//! every run that changes resources, when it starts and when it ends, whatever the outcome.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gantry_core::tags::TagFilter;
use gantry_engine::EngineError;
use gantry_engine::ops::{self, ExtendFrom, Power, UpOptions};
use gantry_provider::testkit::MemoryProvider;
use gantry_provider::{NodeInfo, NodeRequest, Provider};
use gantry_state::{InventoryRecord, StateStore};
use time::OffsetDateTime;

use super::{spec, world};

const SCOPE: &str = "aws:us-east-1";

fn entry(project: &str, fetched_at: OffsetDateTime) -> InventoryRecord {
    InventoryRecord {
        project: project.into(),
        scope: SCOPE.into(),
        fetched_at,
        payload: r#"{"nodes":[]}"#.into(),
    }
}

/// Caches a listing of `project` as `gantry ls` would, now.
async fn cache(store: &dyn StateStore, project: &str) {
    assert!(
        store
            .put_inventory(&entry(project, OffsetDateTime::now_utc()))
            .await
            .unwrap(),
        "a listing taken now must be stored"
    );
}

async fn cached(store: &dyn StateStore, project: &str) -> bool {
    store.get_inventory(project, SCOPE).await.unwrap().is_some()
}

/// Caches listings of this project and another, as `gantry ls` would.
async fn cache_both(store: &dyn StateStore) {
    cache(store, "test").await;
    cache(store, "elsewhere").await;
}

async fn check_dropped(store: &dyn StateStore, what: &str) {
    assert!(!cached(store, "test").await, "{what} must drop the cache");
    assert!(
        cached(store, "elsewhere").await,
        "{what} must not touch another project's cache"
    );
}

#[tokio::test]
async fn every_mutating_operation_drops_the_projects_cache() {
    let w = world();
    let store = w.store.as_ref();
    let (s, t) = spec(2);
    cache_both(store).await;
    ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    check_dropped(store, "up").await;
    cache_both(store).await;
    ops::power(&w.ctx, "demo", Power::Stop, None).await.unwrap();
    check_dropped(store, "stop").await;
    cache_both(store).await;
    ops::power(&w.ctx, "demo", Power::Start, None)
        .await
        .unwrap();
    check_dropped(store, "start").await;
    cache_both(store).await;
    ops::extend(&w.ctx, "demo", Duration::from_secs(60), ExtendFrom::Expiry)
        .await
        .unwrap();
    check_dropped(store, "extend").await;
    cache_both(store).await;
    ops::destroy(&w.ctx, "demo").await.unwrap();
    check_dropped(store, "destroy").await;
}

#[tokio::test]
async fn a_listing_that_started_before_a_run_ended_is_never_stored() {
    let w = world();
    let (s, t) = spec(1);
    // `ls` starts listing, a run changes things meanwhile, then `ls` tries to store what it saw.
    let started = OffsetDateTime::now_utc();
    ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    assert!(
        !w.store
            .put_inventory(&entry("test", started))
            .await
            .unwrap()
    );
    assert!(!cached(w.store.as_ref(), "test").await);
}

/// The in-memory provider, plus a look at the cache each time the engine lists, and a fresh
/// cache entry written right after (a `gantry ls` running during the run).
struct Spy {
    inner: MemoryProvider,
    store: Arc<dyn StateStore>,
    seen: Mutex<Vec<bool>>,
    /// Listings the store took (each run's first one at least; of two concurrent ones the
    /// store keeps the later, and refuses the earlier if it arrives second).
    stored: Mutex<usize>,
}

#[async_trait]
impl Provider for Spy {
    fn name(&self) -> &'static str {
        "spy"
    }
    async fn list(&self, f: &TagFilter) -> gantry_provider::Result<Vec<NodeInfo>> {
        let was = cached(self.store.as_ref(), "test").await;
        self.seen.lock().unwrap().push(was);
        // Not `cache`: list calls run concurrently (one per create step), and a listing taken
        // earlier than the one stored is refused, as it should be.
        let now = OffsetDateTime::now_utc();
        if self.store.put_inventory(&entry("test", now)).await.unwrap() {
            *self.stored.lock().unwrap() += 1;
        }
        self.inner.list(f).await
    }
    async fn create_node(&self, r: &NodeRequest) -> gantry_provider::Result<NodeInfo> {
        self.inner.create_node(r).await
    }
    async fn start_node(&self, n: &NodeInfo) -> gantry_provider::Result<NodeInfo> {
        self.inner.start_node(n).await
    }
    async fn stop_node(&self, n: &NodeInfo) -> gantry_provider::Result<NodeInfo> {
        self.inner.stop_node(n).await
    }
    async fn delete_node(&self, n: &NodeInfo) -> gantry_provider::Result<()> {
        self.inner.delete_node(n).await
    }
}

#[tokio::test]
async fn a_run_drops_the_cache_before_it_changes_anything_and_again_at_the_end() {
    let mut w = world();
    let spy = Arc::new(Spy {
        inner: MemoryProvider::new(),
        store: w.store.clone(),
        seen: Mutex::new(Vec::new()),
        stored: Mutex::new(0),
    });
    w.ctx.provider = spy.clone();
    cache(w.store.as_ref(), "test").await;
    let (s, t) = spec(2);
    ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    let seen = spy.seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "up lists the provider");
    assert!(
        !seen[0],
        "the cache must be gone before the run's first look at the provider"
    );
    assert!(
        *spy.stored.lock().unwrap() > 0,
        "a listing was cached during the run"
    );
    assert!(
        !cached(w.store.as_ref(), "test").await,
        "a listing cached during the run must be dropped when it ends"
    );

    // The same at the end of a run that does not succeed.
    spy.seen.lock().unwrap().clear();
    *spy.stored.lock().unwrap() = 0;
    w.ctx.cancel.cancel();
    let (s3, t3) = spec(3);
    let err = ops::up(&w.ctx, &s3, &t3, &UpOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Interrupted), "{err}");
    assert!(
        *spy.stored.lock().unwrap() > 0,
        "the interrupted up still listed, and the spy cached"
    );
    assert!(
        !cached(w.store.as_ref(), "test").await,
        "an interrupted run must drop the cache too"
    );
}
