//! The contract of [`StateStore`], as code every backend runs.
//!
//! docs/design.md promises that every store (SQLite, PostgreSQL in `gantry-state-pg`) behaves
//! the same; this suite is how that promise is kept. A backend's tests call [`run_all`] on a
//! fresh or shared store: every record uses a random project and key prefix, so runs do not see
//! each other's data. Each check
//! panics with a message naming the rule that broke.
//!
//! Timestamps used here have whole microseconds, the finest precision every backend is required
//! to keep. The lock checks sleep once for 1.5 s to let a 1 s lease expire (etcd leases have
//! whole-second TTLs).
//!
//! The two-handle checks stand for two machines sharing one store: what one writes the other
//! reads, concurrent `append_event` calls from both number a run's events without gaps or
//! duplicates, and racing `acquire_lock` calls from both let exactly one win, with fencing
//! tokens that only grow.
//!
//! The fencing checks take a lock through one handle, write through a handle fenced with its
//! token, let the lease expire (a second 1.5 s sleep), take the lock through the other handle,
//! and then expect every kind of write of the old token to be refused and to leave no trace.
//!
//! The inventory checks pass their own timestamps to `invalidate_inventory`, so they do not
//! depend on the store's clock.
//!
//! The secret checks treat envelopes as opaque text (the stores never see plaintext): upsert,
//! insert-if-absent with exactly one winner when both handles race, literal-prefix listing in
//! name order, idempotent delete.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gantry_core::status::{ClusterStatus, RunKind, RunStatus, StepStatus};
use time::OffsetDateTime;

use crate::error::StateError;
use crate::fence::Fence;
use crate::model::{
    Acquire, ClusterRecord, EventRecord, InventoryRecord, Lease, NodeRecord, RunRecord, StepRecord,
};
use crate::store::StateStore;

/// Runs every check against `store`, panicking at the first broken rule.
///
/// `second` is another handle on the same store, opened the way a second machine of a team
/// would open it (its own connection or file handle): the suite writes through one and reads
/// through the other, and races them on event numbering and locks. A store that cannot be opened
/// twice (an in-memory SQLite database) passes a clone of `store`.
pub async fn run_all(store: &dyn StateStore, second: &dyn StateStore) {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let ns = |area: &str| format!("conformance-{nonce}-{area}");
    check_meta(store).await;
    check_world(store).await;
    check_clusters(store, &ns("clusters")).await;
    check_nodes(store, &ns("nodes")).await;
    check_runs(store, &ns("runs")).await;
    check_steps(store, &ns("steps")).await;
    check_events(store, &ns("events")).await;
    check_locks(store, &ns("locks")).await;
    check_inventory(store, &ns("inventory")).await;
    check_two_handles(store, second, &ns("two-handles")).await;
    check_fencing(store, second, &ns("fencing")).await;
    check_enumeration(store, &ns("enumeration")).await;
    check_put_event(store, &ns("put-event")).await;
    check_adopt_world_kept(store).await;
    check_secrets(store, second, &ns("secrets")).await;
}

/// Unwraps a result the rule says must succeed.
fn ok<T>(rule: &str, result: Result<T, StateError>) -> T {
    result.unwrap_or_else(|e| panic!("{rule}: unexpected error: {e} ({e:?})"))
}

/// A fixed instant plus `secs`, with a sub-second part of whole microseconds.
fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH
        + time::Duration::seconds(1_700_000_000 + secs)
        + time::Duration::microseconds(123_456)
}

fn cluster(project: &str, name: &str) -> ClusterRecord {
    ClusterRecord {
        project: project.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        provider: "local".into(),
        spec_yaml: format!("apiVersion: gantry/v1\nname: {name}\n"),
        spec_json: format!(r#"{{"name":"{name}"}}"#),
        spec_hash: "hash-1".into(),
        generation: 1,
        status: ClusterStatus::Creating,
        created_at: at(0),
        updated_at: at(1),
        expires_at: at(3600),
    }
}

fn node(project: &str, cluster: &str, pool: &str, index: u32) -> NodeRecord {
    NodeRecord {
        project: project.into(),
        cluster: cluster.into(),
        name: format!("{cluster}-{pool}-{index}"),
        pool: pool.into(),
        index,
        provider_id: format!("i-{pool}{index}"),
        address: None,
        ssh_host: None,
        ssh_port: None,
        ssh_user: None,
        state: "pending".into(),
        tags: BTreeMap::new(),
        created_at: at(10),
        updated_at: at(10),
    }
}

fn run(id: &str, project: &str, cluster: &str, started: i64) -> RunRecord {
    RunRecord {
        id: id.into(),
        project: project.into(),
        cluster: cluster.into(),
        kind: RunKind::Up,
        status: RunStatus::Running,
        spec_hash: Some("hash-1".into()),
        holder: "1234@host".into(),
        started_at: at(started),
        finished_at: None,
        error: None,
    }
}

fn step(run: &RunRecord, step_id: &str, status: &str) -> StepRecord {
    StepRecord {
        run_id: run.id.clone(),
        step_id: step_id.into(),
        node: None,
        status: status.parse().expect("a step status"),
        attempts: 1,
        error: None,
        spec_hash: run.spec_hash.clone(),
        started_at: at(100),
        finished_at: None,
    }
}

async fn check_meta(store: &dyn StateStore) {
    assert!(!store.kind().is_empty(), "kind() must name the backend");
    let version = ok("schema_version", store.schema_version().await);
    assert!(
        version >= 1,
        "schema_version must be at least 1, got {version}"
    );
}

/// `world_id` is created once and then the same for every call, concurrent ones included (the
/// store may be shared, so the suite cannot know whether this call creates it).
async fn check_world(store: &dyn StateStore) {
    let first = ok("world_id", store.world_id().await);
    assert!(!first.trim().is_empty(), "world_id must not be empty");
    assert_eq!(
        ok("world_id again", store.world_id().await),
        first,
        "world_id must answer the same id every time"
    );
    let (a, b, c, d) = tokio::join!(
        store.world_id(),
        store.world_id(),
        store.world_id(),
        store.world_id()
    );
    for id in [a, b, c, d] {
        assert_eq!(
            ok("concurrent world_id", id),
            first,
            "concurrent world_id calls must agree"
        );
    }
}

async fn check_clusters(store: &dyn StateStore, project: &str) {
    let other = format!("{project}-other");
    assert_eq!(
        ok("get missing cluster", store.get_cluster(project, "b").await),
        None,
        "get_cluster of a missing cluster must be None"
    );

    let b = cluster(project, "b");
    ok("put_cluster insert", store.put_cluster(&b).await);
    assert_eq!(
        ok("get_cluster", store.get_cluster(project, "b").await).as_ref(),
        Some(&b),
        "put_cluster then get_cluster must round-trip every field"
    );

    let mut b2 = b.clone();
    b2.uid = "uid-b-2".into();
    b2.spec_yaml = "changed: true\n".into();
    b2.spec_json = "{}".into();
    b2.spec_hash = "hash-2".into();
    b2.generation = u64::from(u32::MAX) + 7;
    b2.status = ClusterStatus::Ready;
    b2.updated_at = at(50);
    b2.expires_at = at(7200);
    ok("put_cluster update", store.put_cluster(&b2).await);
    assert_eq!(
        ok("get_cluster", store.get_cluster(project, "b").await).as_ref(),
        Some(&b2),
        "put_cluster on an existing (project, name) must overwrite every field"
    );

    ok(
        "put_cluster",
        store.put_cluster(&cluster(project, "a")).await,
    );
    ok(
        "put_cluster",
        store.put_cluster(&cluster(&other, "c")).await,
    );
    let names: Vec<String> = ok("list_clusters", store.list_clusters(project).await)
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        names,
        ["a", "b"],
        "list_clusters must return only the project's clusters, ordered by name"
    );

    ok("delete_cluster", store.delete_cluster(project, "a").await);
    assert_eq!(
        ok("get_cluster", store.get_cluster(project, "a").await),
        None,
        "delete_cluster must remove the cluster"
    );
    ok(
        "delete_cluster of a missing cluster must not be an error",
        store.delete_cluster(project, "a").await,
    );
    assert_eq!(
        ok("list_clusters", store.list_clusters(&other).await).len(),
        1,
        "delete_cluster must not touch other projects"
    );
}

async fn check_nodes(store: &dyn StateStore, project: &str) {
    let orphan = node(project, "nope", "workers", 1);
    assert!(
        matches!(
            store.put_node(&orphan).await,
            Err(StateError::NotFound { .. })
        ),
        "put_node for a cluster without a record must fail with NotFound"
    );

    ok(
        "put_cluster",
        store.put_cluster(&cluster(project, "c1")).await,
    );
    ok(
        "put_cluster",
        store.put_cluster(&cluster(project, "c2")).await,
    );
    // Inserted out of order; index 10 must sort after 2 (numeric, not text, order).
    let keys = [
        ("workers", 10),
        ("workers", 2),
        ("control", 1),
        ("workers", 1),
    ];
    for (pool, index) in keys {
        ok(
            "put_node",
            store.put_node(&node(project, "c1", pool, index)).await,
        );
    }
    ok(
        "put_node",
        store.put_node(&node(project, "c2", "workers", 1)).await,
    );
    let order: Vec<(String, u32)> = ok("list_nodes", store.list_nodes(project, "c1").await)
        .into_iter()
        .map(|n| (n.pool, n.index))
        .collect();
    let want: Vec<(String, u32)> = [
        ("control", 1),
        ("workers", 1),
        ("workers", 2),
        ("workers", 10),
    ]
    .into_iter()
    .map(|(p, i)| (p.to_owned(), i))
    .collect();
    assert_eq!(
        order, want,
        "list_nodes must return only the cluster's nodes, ordered by pool then numeric index"
    );

    let mut full = node(project, "c1", "workers", 2);
    full.provider_id = "i-changed".into();
    full.address = Some("10.0.0.2".into());
    full.ssh_host = Some("203.0.113.9".into());
    full.ssh_port = Some(2222);
    full.ssh_user = Some("ubuntu".into());
    full.state = "running".into();
    full.tags = BTreeMap::from([
        ("gantry-pool".to_owned(), "workers".to_owned()),
        ("gantry-index".to_owned(), "2".to_owned()),
    ]);
    full.updated_at = at(20);
    ok("put_node update", store.put_node(&full).await);
    let nodes = ok("list_nodes", store.list_nodes(project, "c1").await);
    assert_eq!(
        nodes.len(),
        4,
        "put_node on an existing key must not add a node"
    );
    assert_eq!(
        nodes.iter().find(|n| n.name == full.name),
        Some(&full),
        "put_node on an existing (project, cluster, name) must overwrite every field"
    );

    ok(
        "delete_node",
        store.delete_node(project, "c1", &full.name).await,
    );
    ok(
        "delete_node of a missing node must not be an error",
        store.delete_node(project, "c1", &full.name).await,
    );
    assert_eq!(
        ok("list_nodes", store.list_nodes(project, "c1").await).len(),
        3,
        "delete_node must remove exactly that node"
    );

    ok("delete_cluster", store.delete_cluster(project, "c1").await);
    assert!(
        ok("list_nodes", store.list_nodes(project, "c1").await).is_empty(),
        "delete_cluster must remove the cluster's nodes"
    );
    ok(
        "put_cluster",
        store.put_cluster(&cluster(project, "c1")).await,
    );
    assert!(
        ok("list_nodes", store.list_nodes(project, "c1").await).is_empty(),
        "re-creating a deleted cluster must not bring its old nodes back"
    );
    assert_eq!(
        ok("list_nodes", store.list_nodes(project, "c2").await).len(),
        1,
        "delete_cluster must not touch another cluster's nodes"
    );
}

async fn check_runs(store: &dyn StateStore, project: &str) {
    let id = |suffix: &str| format!("{project}-{suffix}");
    let r1 = run(&id("aaa1"), project, "c1", 10);
    let r2 = run(&id("aaa2"), project, "c1", 30);
    let r3 = run(&id("bbb1"), project, "c2", 20);
    for r in [&r1, &r2, &r3] {
        ok("create_run", store.create_run(r).await);
    }
    assert!(
        matches!(
            store.create_run(&r1).await,
            Err(StateError::AlreadyExists { .. })
        ),
        "create_run with a taken id must fail with AlreadyExists"
    );
    assert_eq!(
        ok("get_run", store.get_run(&r1.id).await).as_ref(),
        Some(&r1),
        "create_run then get_run must round-trip every field"
    );
    assert_eq!(
        ok("get_run", store.get_run(&id("aaa")).await),
        None,
        "get_run must match the exact id only, not a prefix"
    );

    let mut done = r1.clone();
    done.status = RunStatus::Failed;
    done.finished_at = Some(at(15));
    done.error = Some("step install failed".into());
    ok("update_run", store.update_run(&done).await);
    assert_eq!(
        ok("get_run", store.get_run(&r1.id).await).as_ref(),
        Some(&done),
        "update_run must overwrite status, finished_at and error"
    );
    let ghost = run(&id("ghost"), project, "c1", 0);
    assert!(
        matches!(
            store.update_run(&ghost).await,
            Err(StateError::NotFound { .. })
        ),
        "update_run of a missing run must fail with NotFound"
    );

    assert_eq!(
        ok("find_run", store.find_run(&id("bb")).await).map(|r| r.id),
        Some(r3.id.clone()),
        "find_run must resolve a unique prefix"
    );
    assert_eq!(
        ok("find_run", store.find_run(&r2.id).await).map(|r| r.id),
        Some(r2.id.clone()),
        "find_run must resolve a full id"
    );
    match store.find_run(&id("aaa")).await {
        Err(StateError::AmbiguousRunId { count, .. }) => assert_eq!(
            count, 2,
            "AmbiguousRunId must count the runs the prefix matches"
        ),
        other => panic!(
            "find_run with a prefix of two runs must fail with AmbiguousRunId, got {other:?}"
        ),
    }
    assert_eq!(
        ok("find_run", store.find_run(&id("zzz")).await),
        None,
        "find_run with a prefix matching nothing must be None"
    );
    assert!(
        matches!(
            store.find_run("").await,
            Err(StateError::InvalidArgument { .. })
        ),
        "find_run with an empty prefix must fail with InvalidArgument"
    );

    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(ok("list_runs", store.list_runs(project, None, 10).await)),
        [r2.id.clone(), r3.id.clone(), r1.id.clone()],
        "list_runs must return the project's runs newest first"
    );
    assert_eq!(
        ids(ok(
            "list_runs",
            store.list_runs(project, Some("c1"), 10).await
        )),
        [r2.id.clone(), r1.id.clone()],
        "list_runs with a cluster must return only that cluster's runs"
    );
    assert_eq!(
        ids(ok("list_runs", store.list_runs(project, None, 2).await)),
        [r2.id.clone(), r3.id.clone()],
        "list_runs must return at most `limit` runs, the newest ones"
    );
    assert!(
        ok(
            "list_runs",
            store.list_runs(&format!("{project}-x"), None, 10).await
        )
        .is_empty(),
        "list_runs must not return other projects' runs"
    );

    ok(
        "put_cluster",
        store.put_cluster(&cluster(project, "c1")).await,
    );
    ok("delete_cluster", store.delete_cluster(project, "c1").await);
    assert!(
        ok("get_run", store.get_run(&r1.id).await).is_some(),
        "delete_cluster must keep the cluster's runs as history"
    );
}

async fn check_steps(store: &dyn StateStore, project: &str) {
    let id = |suffix: &str| format!("{project}-{suffix}");
    let ghost = run(&id("ghost"), project, "a", 0);
    assert!(
        matches!(
            store.put_step(&step(&ghost, "s", "done")).await,
            Err(StateError::NotFound { .. })
        ),
        "put_step for a missing run must fail with NotFound"
    );

    let r1 = run(&id("r1"), project, "a", 1);
    let mut r2 = run(&id("r2"), project, "a", 2);
    r2.spec_hash = Some("hash-2".into());
    let r3 = run(&id("r3"), project, "b", 3);
    let r4 = run(&id("r4"), project, "a", 4);
    let r5 = run(&id("r5"), &format!("{project}-other"), "a", 5);
    for r in [&r1, &r2, &r3, &r4, &r5] {
        ok("create_run", store.create_run(r).await);
    }

    let mut first = step(&r1, "install@a-workers-1", "running");
    ok("put_step", store.put_step(&first).await);
    first.status = StepStatus::Done;
    first.attempts = 2;
    first.node = Some("a-workers-1".into());
    first.error = Some("first attempt timed out".into());
    first.finished_at = Some(at(130));
    ok("put_step update", store.put_step(&first).await);
    let mut later = step(&r1, "configure", "failed");
    later.started_at = at(200);
    ok("put_step", store.put_step(&later).await);
    let mut earlier = step(&r1, "wait", "running");
    earlier.started_at = at(50);
    ok("put_step", store.put_step(&earlier).await);
    assert_eq!(
        ok("list_steps", store.list_steps(&r1.id).await),
        [earlier, first, later],
        "put_step must upsert by (run_id, step_id) and list_steps must order by started_at"
    );

    ok(
        "put_step",
        store.put_step(&step(&r1, "skipped", "skipped")).await,
    );
    ok(
        "put_step",
        store.put_step(&step(&r2, "other-hash", "done")).await,
    );
    ok(
        "put_step",
        store.put_step(&step(&r3, "other-cluster", "done")).await,
    );
    ok(
        "put_step",
        store.put_step(&step(&r4, "second-run", "done")).await,
    );
    ok(
        "put_step",
        store
            .put_step(&step(&r4, "install@a-workers-1", "done"))
            .await,
    );
    ok(
        "put_step",
        store.put_step(&step(&r5, "other-project", "done")).await,
    );
    let want: BTreeSet<String> = ["install@a-workers-1", "second-run"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        ok("done_steps", store.done_steps(project, "a", "hash-1").await),
        want,
        "done_steps must return the done steps of that project, cluster and spec hash across runs"
    );
    assert!(
        ok(
            "done_steps",
            store.done_steps(project, "zzz", "hash-1").await
        )
        .is_empty(),
        "done_steps of a cluster without runs must be empty"
    );
}

async fn check_events(store: &dyn StateStore, project: &str) {
    let ghost = format!("{project}-ghost");
    assert!(
        matches!(
            store.append_event(&ghost, at(0), "{}").await,
            Err(StateError::NotFound { .. })
        ),
        "append_event for a missing run must fail with NotFound"
    );
    let r1 = run(&format!("{project}-r1"), project, "a", 1);
    let r2 = run(&format!("{project}-r2"), project, "a", 2);
    ok("create_run", store.create_run(&r1).await);
    ok("create_run", store.create_run(&r2).await);

    let mut written = Vec::new();
    for i in 0..3u64 {
        let json = format!(r#"{{"n":{i}}}"#);
        let seq = ok(
            "append_event",
            store.append_event(&r1.id, at(i as i64), &json).await,
        );
        assert_eq!(
            seq,
            i + 1,
            "append_event must number a run's events 1, 2, 3, …"
        );
        written.push(EventRecord {
            run_id: r1.id.clone(),
            seq,
            at: at(i as i64),
            json,
        });
    }
    assert_eq!(
        ok(
            "append_event",
            store.append_event(&r2.id, at(9), "{}").await
        ),
        1,
        "append_event must number each run's events independently"
    );
    assert_eq!(
        ok("list_events", store.list_events(&r1.id, 0).await),
        written,
        "list_events after 0 must return all of the run's events in order, fields intact"
    );
    assert_eq!(
        ok("list_events", store.list_events(&r1.id, 1).await),
        written[1..],
        "list_events must return only events with seq > after_seq"
    );
    assert!(
        ok("list_events", store.list_events(&r1.id, 3).await).is_empty(),
        "list_events after the last seq must be empty"
    );
}

async fn check_locks(store: &dyn StateStore, prefix: &str) {
    let key = format!("{prefix}/cluster/a");
    let long = Duration::from_secs(30);
    assert_eq!(
        ok("get_lock", store.get_lock(&key).await),
        None,
        "get_lock of a never-taken key must be None"
    );

    let first = acquired(
        store,
        &key,
        "alice",
        long,
        "acquire_lock of a free key must succeed",
    )
    .await;
    assert_eq!(
        (first.key.as_str(), first.holder.as_str()),
        (key.as_str(), "alice")
    );
    assert!(
        first.expires_at > OffsetDateTime::now_utc() + Duration::from_secs(20),
        "acquire_lock must set expires_at to about now + ttl"
    );
    assert_eq!(
        ok("get_lock", store.get_lock(&key).await).as_ref(),
        Some(&first),
        "get_lock must return the live lease"
    );

    for (who, rule) in [
        (
            "bob",
            "acquire_lock of a held key must report Held with the holder",
        ),
        (
            "alice",
            "acquire_lock by the same holder must report Held; holders renew instead",
        ),
    ] {
        match ok("acquire_lock", store.acquire_lock(&key, who, long).await) {
            Acquire::Held { holder, expires_at } => {
                assert_eq!(holder, "alice", "{rule}");
                assert_eq!(expires_at, first.expires_at, "{rule}");
            }
            Acquire::Acquired(lease) => panic!("{rule}; {who} got {lease:?}"),
        }
    }

    let renewed = ok(
        "renew_lock",
        store.renew_lock(&first, Duration::from_secs(60)).await,
    );
    assert_eq!(renewed.token, first.token, "renew_lock must keep the token");
    assert!(
        renewed.expires_at > first.expires_at,
        "renew_lock must move expires_at to now + ttl"
    );
    assert_eq!(
        ok("get_lock", store.get_lock(&key).await).as_ref(),
        Some(&renewed),
        "get_lock must reflect the renewed lease"
    );

    ok("release_lock", store.release_lock(&renewed).await);
    assert_eq!(
        ok("get_lock", store.get_lock(&key).await),
        None,
        "get_lock after release_lock must be None"
    );
    assert!(
        matches!(
            store.renew_lock(&renewed, long).await,
            Err(StateError::LockLost { .. })
        ),
        "renew_lock of a released lease must fail with LockLost"
    );
    let second = acquired(
        store,
        &key,
        "bob",
        Duration::from_secs(1),
        "acquire_lock after release must succeed",
    )
    .await;
    assert!(
        second.token > first.token,
        "a re-acquired lock must get a larger fencing token ({} then {})",
        first.token,
        second.token
    );
    ok(
        "release_lock of a lost lease must be a no-op",
        store.release_lock(&first).await,
    );
    assert_eq!(
        ok("get_lock", store.get_lock(&key).await).as_ref(),
        Some(&second),
        "release_lock with a stale token must not free the current holder's lock"
    );

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        ok("get_lock", store.get_lock(&key).await),
        None,
        "get_lock of an expired lease must be None"
    );
    assert!(
        matches!(
            store.renew_lock(&second, long).await,
            Err(StateError::LockLost { .. })
        ),
        "renew_lock of an expired lease must fail with LockLost"
    );
    let third = acquired(
        store,
        &key,
        "carol",
        long,
        "acquire_lock of an expired lease must succeed",
    )
    .await;
    assert!(
        third.token > second.token,
        "taking over an expired lease must give a larger fencing token ({} then {})",
        second.token,
        third.token
    );
    assert!(
        matches!(
            store.renew_lock(&second, long).await,
            Err(StateError::LockLost { .. })
        ),
        "renew_lock with a stale token must fail with LockLost"
    );

    let other = format!("{prefix}/cluster/b");
    acquired(
        store,
        &other,
        "bob",
        long,
        "locks on different keys must be independent",
    )
    .await;
    ok("release_lock", store.release_lock(&third).await);
}

fn inventory(project: &str, scope: &str, fetched: i64, payload: &str) -> InventoryRecord {
    InventoryRecord {
        project: project.into(),
        scope: scope.into(),
        fetched_at: at(fetched),
        payload: payload.into(),
    }
}

async fn check_inventory(store: &dyn StateStore, project: &str) {
    let other = format!("{project}-other");
    let (east, west) = ("aws:us-east-1", "aws:eu-west-1");
    assert_eq!(
        ok("get_inventory", store.get_inventory(project, east).await),
        None,
        "get_inventory of a scope never stored must be None"
    );

    let first = inventory(project, east, 100, r#"{"nodes":[]}"#);
    assert!(
        ok("put_inventory", store.put_inventory(&first).await),
        "put_inventory of a new scope must store it and answer true"
    );
    assert_eq!(
        ok("get_inventory", store.get_inventory(project, east).await).as_ref(),
        Some(&first),
        "put_inventory then get_inventory must round-trip every field"
    );

    let newer = inventory(project, east, 200, r#"{"nodes":["a"]}"#);
    assert!(
        ok("put_inventory", store.put_inventory(&newer).await),
        "put_inventory of a newer listing must replace the stored one"
    );
    let older = inventory(project, east, 150, r#"{"nodes":["stale"]}"#);
    assert!(
        !ok("put_inventory", store.put_inventory(&older).await),
        "put_inventory of a listing older than the stored one must answer false"
    );
    assert_eq!(
        ok("get_inventory", store.get_inventory(project, east).await).as_ref(),
        Some(&newer),
        "an older listing must not replace a newer one"
    );

    let w = inventory(project, west, 100, "{}");
    let o = inventory(&other, east, 100, "{}");
    ok("put_inventory", store.put_inventory(&w).await);
    ok("put_inventory", store.put_inventory(&o).await);
    assert_eq!(
        ok("get_inventory", store.get_inventory(project, east).await).as_ref(),
        Some(&newer),
        "scopes and projects must be independent"
    );

    ok(
        "invalidate_inventory",
        store.invalidate_inventory(project, at(300)).await,
    );
    for scope in [east, west] {
        assert_eq!(
            ok("get_inventory", store.get_inventory(project, scope).await),
            None,
            "invalidate_inventory must drop every scope of the project ({scope})"
        );
    }
    assert_eq!(
        ok("get_inventory", store.get_inventory(&other, east).await).as_ref(),
        Some(&o),
        "invalidate_inventory must not touch other projects"
    );
    for fetched in [250, 300] {
        assert!(
            !ok(
                "put_inventory",
                store
                    .put_inventory(&inventory(project, east, fetched, "{}"))
                    .await
            ),
            "put_inventory of a listing that started at or before the last invalidation must \
             answer false"
        );
    }
    assert_eq!(
        ok("get_inventory", store.get_inventory(project, east).await),
        None,
        "a listing that predates the last invalidation must never be served"
    );
    // An invalidation with an earlier time must not move the watermark back.
    ok(
        "invalidate_inventory",
        store.invalidate_inventory(project, at(10)).await,
    );
    assert!(
        !ok(
            "put_inventory",
            store
                .put_inventory(&inventory(project, east, 250, "{}"))
                .await
        ),
        "invalidate_inventory with an earlier time must not undo a later invalidation"
    );
    let after = inventory(project, east, 301, r#"{"nodes":["b"]}"#);
    assert!(
        ok("put_inventory", store.put_inventory(&after).await),
        "put_inventory of a listing that started after the last invalidation must store it"
    );
    assert_eq!(
        ok("get_inventory", store.get_inventory(project, east).await).as_ref(),
        Some(&after),
        "a listing newer than the last invalidation must be served"
    );
    ok(
        "invalidate_inventory of a project without entries must not be an error",
        store
            .invalidate_inventory(&format!("{project}-empty"), at(1))
            .await,
    );
}

async fn acquired(
    store: &dyn StateStore,
    key: &str,
    holder: &str,
    ttl: Duration,
    rule: &str,
) -> Lease {
    match ok(rule, store.acquire_lock(key, holder, ttl).await) {
        Acquire::Acquired(lease) => lease,
        Acquire::Held { holder, .. } => panic!("{rule}; it is held by {holder}"),
    }
}

/// Writers per handle and events per writer in the concurrent `append_event` check.
const WRITERS_PER_HANDLE: usize = 4;
const EVENTS_PER_WRITER: usize = 10;
/// Acquirers per handle and rounds in the racing `acquire_lock` check.
const RACERS_PER_HANDLE: usize = 4;
const RACE_ROUNDS: usize = 5;

async fn check_two_handles(a: &dyn StateStore, b: &dyn StateStore, project: &str) {
    let c = cluster(project, "shared");
    ok("put_cluster", a.put_cluster(&c).await);
    assert_eq!(
        ok("get_cluster", b.get_cluster(project, "shared").await).as_ref(),
        Some(&c),
        "a cluster written through one handle must be read back through the other"
    );
    assert_eq!(
        ok("world_id", a.world_id().await),
        ok("world_id", b.world_id().await),
        "both handles on one store must answer the same world id"
    );

    // Concurrent appends from both handles, each writer numbering its own events in `i`.
    let r = run(&format!("{project}-events"), project, "shared", 1);
    ok("create_run", a.create_run(&r).await);
    let writers = (0..2 * WRITERS_PER_HANDLE).map(|w| {
        let store = if w % 2 == 0 { a } else { b };
        let run_id = r.id.clone();
        async move {
            let mut seqs = Vec::new();
            for i in 0..EVENTS_PER_WRITER {
                let json = format!(r#"{{"w":{w},"i":{i}}}"#);
                let seq = ok(
                    "concurrent append_event",
                    store.append_event(&run_id, at(i as i64), &json).await,
                );
                seqs.push(seq);
            }
            seqs
        }
    });
    let per_writer = futures::future::join_all(writers).await;
    let total = (2 * WRITERS_PER_HANDLE * EVENTS_PER_WRITER) as u64;
    let mut all: Vec<u64> = per_writer.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=total).collect::<Vec<_>>(),
        "concurrent append_event from two handles must hand out 1..={total}, each once"
    );
    for seqs in &per_writer {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one writer's successive append_event calls must get increasing numbers: {seqs:?}"
        );
    }
    let listed = ok("list_events", b.list_events(&r.id, 0).await);
    assert_eq!(
        listed.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "list_events must return every concurrently appended event once, in order"
    );
    for (w, seqs) in per_writer.iter().enumerate() {
        for (i, seq) in seqs.iter().enumerate() {
            let want = format!(r#"{{"w":{w},"i":{i}}}"#);
            assert_eq!(
                listed[(*seq - 1) as usize].json,
                want,
                "event {seq} must hold what the append that got that number wrote"
            );
        }
    }

    // Racing acquires from both handles, round after round.
    let key = format!("{project}/cluster/race");
    let ttl = Duration::from_secs(30);
    let mut last_token = 0;
    for round in 0..RACE_ROUNDS {
        let racers = (0..2 * RACERS_PER_HANDLE).map(|k| {
            let store = if k % 2 == 0 { a } else { b };
            let holder = format!("machine-{}-racer-{k}", k % 2);
            let key = key.clone();
            async move {
                let got = ok(
                    "racing acquire_lock",
                    store.acquire_lock(&key, &holder, ttl).await,
                );
                (holder, got)
            }
        });
        let results = futures::future::join_all(racers).await;
        let winners: Vec<&Lease> = results
            .iter()
            .filter_map(|(_, got)| match got {
                Acquire::Acquired(lease) => Some(lease),
                Acquire::Held { .. } => None,
            })
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "exactly one of {} racing acquire_lock calls from two handles must win (round \
             {round}): {results:?}",
            results.len()
        );
        let winner = winners[0].clone();
        for (who, got) in &results {
            if let Acquire::Held { holder, expires_at } = got {
                assert_eq!(
                    (holder, expires_at),
                    (&winner.holder, &winner.expires_at),
                    "a racer that lost ({who}) must be told the winner's lease"
                );
            }
        }
        assert!(
            winner.token > last_token,
            "fencing tokens must strictly increase from round to round ({last_token} then {})",
            winner.token
        );
        last_token = winner.token;
        for (name, store) in [("first", a), ("second", b)] {
            assert_eq!(
                ok("get_lock", store.get_lock(&key).await).as_ref(),
                Some(&winner),
                "the {name} handle must see the winning lease"
            );
        }
        // Released through whichever handle did not take it, as another machine's cleanup would.
        let other = if winner.holder.starts_with("machine-0") {
            b
        } else {
            a
        };
        ok("release_lock", other.release_lock(&winner).await);
    }
}

// --- Fencing (issue 12, part 4) ---

/// Asserts that `result` is the refusal of a write fenced with `token` on `key` because
/// `newest` was issued since.
fn refused<T: std::fmt::Debug>(
    rule: &str,
    result: Result<T, StateError>,
    key: &str,
    token: u64,
    newest: u64,
) {
    match result {
        Err(StateError::Fenced {
            key: k,
            token: t,
            newest: n,
        }) => assert_eq!(
            (k.as_str(), t, n),
            (key, token, newest),
            "{rule}: the refusal must name the lock, our token and the newest"
        ),
        other => panic!("{rule}: must be refused with StateError::Fenced, got {other:?}"),
    }
}

async fn check_fencing(a: &dyn StateStore, b: &dyn StateStore, project: &str) {
    let key = format!("{project}/cluster/fenced");
    let old = acquired(
        a,
        &key,
        "old-holder",
        Duration::from_secs(1),
        "acquire_lock",
    )
    .await;
    let fa = a.fenced(Fence::of(&old));
    assert_eq!(
        fa.kind(),
        a.kind(),
        "a fenced handle is a handle of the same store"
    );
    assert_eq!(
        fa.fence(),
        Some(&Fence::new(key.clone(), old.token)),
        "a fenced handle must tell its fence"
    );
    assert_eq!(
        a.fence(),
        None,
        "fencing a handle must leave the original unfenced"
    );

    // While its token is the newest, a fenced handle writes like any other.
    let mut c = cluster(project, "fenced");
    ok("fenced put_cluster", fa.put_cluster(&c).await);
    let kept = node(project, "fenced", "web", 1);
    let dropped = node(project, "fenced", "web", 2);
    ok("fenced put_node", fa.put_node(&kept).await);
    ok("fenced put_node", fa.put_node(&dropped).await);
    ok(
        "fenced delete_node",
        fa.delete_node(project, "fenced", &dropped.name).await,
    );
    let mut r = run(&format!("{project}-run"), project, "fenced", 1);
    ok("fenced create_run", fa.create_run(&r).await);
    r.error = Some("still running".into());
    ok("fenced update_run", fa.update_run(&r).await);
    let s1 = step(&r, "create:a", "done");
    ok("fenced put_step", fa.put_step(&s1).await);
    assert_eq!(
        ok(
            "fenced append_event",
            fa.append_event(&r.id, at(2), r#"{"n":1}"#).await
        ),
        1,
        "the first event of a run is number 1"
    );
    ok(
        "fenced invalidate_inventory",
        fa.invalidate_inventory(project, at(5)).await,
    );
    let inv = inventory(project, "local", 10, "[1]");
    assert!(
        ok("fenced put_inventory", fa.put_inventory(&inv).await),
        "a fenced put_inventory newer than the invalidation must be stored"
    );
    // The fence travels: another machine's handle with the same lease writes too.
    let fb_same = b.fenced(Fence::of(&old));
    c.generation = 2;
    ok(
        "put_cluster through the other handle fenced with the same token",
        fb_same.put_cluster(&c).await,
    );
    assert_eq!(
        ok("get_cluster", fa.get_cluster(project, "fenced").await).as_ref(),
        Some(&c),
        "reads through a fenced handle see the store"
    );
    // The fence does not apply to the lock methods nor to the world id.
    ok("world_id through a fenced handle", fa.world_id().await);
    let other = acquired(
        fa.as_ref(),
        &format!("{key}-other"),
        "old-holder",
        Duration::from_secs(30),
        "acquire_lock of another key through a fenced handle",
    )
    .await;
    ok(
        "release_lock through a fenced handle",
        fa.release_lock(&other).await,
    );

    // The lease lapses and the other machine takes the lock: a newer token.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let new = acquired(
        b,
        &key,
        "new-holder",
        Duration::from_secs(30),
        "acquire_lock of an expired lease",
    )
    .await;
    assert!(new.token > old.token, "the takeover's token must be newer");
    let (t, n) = (old.token, new.token);

    // Every kind of write of the old token is refused, through either handle.
    let fb_old = b.fenced(Fence::of(&old));
    let mut changed = c.clone();
    changed.status = ClusterStatus::Ready;
    changed.generation = 99;
    refused(
        "stale put_cluster",
        fa.put_cluster(&changed).await,
        &key,
        t,
        n,
    );
    refused(
        "stale put_cluster (other handle)",
        fb_old.put_cluster(&changed).await,
        &key,
        t,
        n,
    );
    refused(
        "stale put_cluster of a new cluster",
        fa.put_cluster(&cluster(project, "stale-new")).await,
        &key,
        t,
        n,
    );
    refused(
        "stale delete_cluster",
        fa.delete_cluster(project, "fenced").await,
        &key,
        t,
        n,
    );
    refused(
        "stale put_node",
        fa.put_node(&node(project, "fenced", "web", 3)).await,
        &key,
        t,
        n,
    );
    let mut moved = kept.clone();
    moved.state = "stopped".into();
    refused(
        "stale put_node (overwrite)",
        fa.put_node(&moved).await,
        &key,
        t,
        n,
    );
    refused(
        "stale delete_node",
        fa.delete_node(project, "fenced", &kept.name).await,
        &key,
        t,
        n,
    );
    let stale_run = run(&format!("{project}-stale-run"), project, "fenced", 2);
    refused(
        "stale create_run",
        fa.create_run(&stale_run).await,
        &key,
        t,
        n,
    );
    let mut finished = r.clone();
    finished.status = RunStatus::Failed;
    finished.finished_at = Some(at(3));
    refused(
        "stale update_run",
        fa.update_run(&finished).await,
        &key,
        t,
        n,
    );
    refused(
        "stale put_step",
        fa.put_step(&step(&r, "create:b", "done")).await,
        &key,
        t,
        n,
    );
    let mut s1_changed = s1.clone();
    s1_changed.attempts = 7;
    refused(
        "stale put_step (overwrite)",
        fa.put_step(&s1_changed).await,
        &key,
        t,
        n,
    );
    refused(
        "stale append_event",
        fa.append_event(&r.id, at(4), r#"{"n":"stale"}"#).await,
        &key,
        t,
        n,
    );
    refused(
        "stale append_event (other handle)",
        fb_old.append_event(&r.id, at(4), r#"{"n":"stale"}"#).await,
        &key,
        t,
        n,
    );
    refused(
        "stale put_inventory",
        fa.put_inventory(&inventory(project, "local", 20, "[2]"))
            .await,
        &key,
        t,
        n,
    );
    refused(
        "stale invalidate_inventory",
        fa.invalidate_inventory(project, at(30)).await,
        &key,
        t,
        n,
    );
    let never = a.fenced(Fence::new(format!("{key}-never-locked"), 1));
    refused(
        "a write fenced on a key that was never locked",
        never.put_cluster(&cluster(project, "never")).await,
        &format!("{key}-never-locked"),
        1,
        0,
    );

    // ... and none of them left a trace.
    assert_eq!(
        ok("get_cluster", b.get_cluster(project, "fenced").await).as_ref(),
        Some(&c),
        "a refused put_cluster or delete_cluster must leave the record as it was"
    );
    for name in ["stale-new", "never"] {
        assert_eq!(
            ok("get_cluster", b.get_cluster(project, name).await),
            None,
            "a refused put_cluster must not create cluster {name}"
        );
    }
    assert_eq!(
        ok("list_nodes", b.list_nodes(project, "fenced").await),
        vec![kept.clone()],
        "refused node writes must leave the nodes as they were"
    );
    assert_eq!(
        ok("get_run", b.get_run(&stale_run.id).await),
        None,
        "a refused create_run must not create the run"
    );
    assert_eq!(
        ok("get_run", b.get_run(&r.id).await).as_ref(),
        Some(&r),
        "a refused update_run must leave the run as it was"
    );
    assert_eq!(
        ok("list_steps", b.list_steps(&r.id).await),
        vec![s1.clone()],
        "refused put_step calls must leave the steps as they were"
    );
    assert_eq!(
        ok("get_inventory", b.get_inventory(project, "local").await).as_ref(),
        Some(&inv),
        "a refused put_inventory or invalidate_inventory must leave the cache as it was"
    );

    // The new holder writes; the refused append took no number: no gap.
    let fb = b.fenced(Fence::of(&new));
    assert_eq!(
        ok(
            "append_event under the new token",
            fb.append_event(&r.id, at(5), r#"{"n":2}"#).await
        ),
        2,
        "a refused append_event must not take a sequence number"
    );
    assert_eq!(
        ok("list_events", a.list_events(&r.id, 0).await)
            .iter()
            .map(|e| (e.seq, e.json.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, r#"{"n":1}"#), (2, r#"{"n":2}"#)],
        "the run's log must hold only the events written under a live token"
    );
    changed.generation = 3;
    ok(
        "put_cluster under the new token",
        fb.put_cluster(&changed).await,
    );
    ok(
        "delete_node under the new token",
        fb.delete_node(project, "fenced", &kept.name).await,
    );
    // The old lease cannot release the new one, and a handle without a fence is not fenced.
    ok("release_lock of the lost lease", a.release_lock(&old).await);
    assert_eq!(
        ok("get_lock", a.get_lock(&key).await).map(|l| l.token),
        Some(new.token),
        "releasing the lost lease must leave the new one"
    );
    ok("unfenced put_cluster", a.put_cluster(&c).await);
    ok("release_lock", b.release_lock(&new).await);
}

// --- Enumeration and identity for `gantry state migrate` (issue 12, part 6) -------------------

/// `list_projects`, `list_all_runs`, `list_inventory` and `list_locks` find everything a copy
/// needs. The store may be shared, so the checks look for their own records among others'.
async fn check_enumeration(store: &dyn StateStore, ns: &str) {
    let (with_cluster, with_runs, with_inventory) =
        (format!("{ns}-c"), format!("{ns}-r"), format!("{ns}-i"));
    let never = format!("{ns}-never");
    ok(
        "put_cluster",
        store.put_cluster(&cluster(&with_cluster, "a")).await,
    );
    // Runs of a cluster that has no record (deleted, history) still make a project.
    let mut runs = Vec::new();
    for (i, id) in ["b", "c", "a"].iter().enumerate() {
        let r = run(&format!("{ns}-run-{id}"), &with_runs, "gone", i as i64);
        ok("create_run", store.create_run(&r).await);
        runs.push(r);
    }
    ok(
        "create_run",
        store
            .create_run(&run(&format!("{ns}-run-other"), &with_cluster, "a", 9))
            .await,
    );
    let east = inventory(&with_inventory, "aws:us-east-1", 100, "[1]");
    let west = inventory(&with_inventory, "aws:eu-west-1", 100, "[2]");
    for r in [&east, &west] {
        assert!(ok("put_inventory", store.put_inventory(r).await));
    }

    let projects = ok("list_projects", store.list_projects().await);
    for p in [&with_cluster, &with_runs, &with_inventory] {
        assert!(
            projects.contains(p),
            "list_projects must name every project with a cluster, a run or a cached listing; \
             {p} is missing"
        );
    }
    assert!(
        !projects.contains(&never),
        "list_projects must not name a project without records"
    );
    let mut sorted = projects.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        projects, sorted,
        "list_projects must be sorted, each project once"
    );

    runs.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        ok("list_all_runs", store.list_all_runs(&with_runs).await),
        runs,
        "list_all_runs must answer every run of the project, ordered by id, fields intact"
    );
    assert!(
        ok("list_all_runs", store.list_all_runs(&never).await).is_empty(),
        "list_all_runs of a project without runs must be empty"
    );

    assert_eq!(
        ok(
            "list_inventory",
            store.list_inventory(&with_inventory).await
        ),
        vec![west.clone(), east.clone()],
        "list_inventory must answer the project's listings ordered by scope"
    );
    ok(
        "invalidate_inventory",
        store.invalidate_inventory(&with_inventory, at(150)).await,
    );
    assert!(
        ok(
            "list_inventory",
            store.list_inventory(&with_inventory).await
        )
        .is_empty(),
        "list_inventory must not answer invalidated listings"
    );
    let newer = inventory(&with_inventory, "aws:us-east-1", 200, "[3]");
    assert!(ok("put_inventory", store.put_inventory(&newer).await));
    assert_eq!(
        ok(
            "list_inventory",
            store.list_inventory(&with_inventory).await
        ),
        vec![newer],
        "list_inventory must answer a listing stored after the invalidation"
    );

    let key = format!("{ns}/lock");
    let lease = acquired(
        store,
        &key,
        "holder-1",
        Duration::from_secs(30),
        "acquire_lock",
    )
    .await;
    let live = ok("list_locks", store.list_locks().await);
    assert!(
        live.contains(&lease),
        "list_locks must answer a live lease with its key, holder, token and expiry"
    );
    let keys: Vec<&String> = live.iter().map(|l| &l.key).collect();
    let mut sorted_keys = keys.clone();
    sorted_keys.sort();
    assert_eq!(keys, sorted_keys, "list_locks must be ordered by key");
    ok("release_lock", store.release_lock(&lease).await);
    assert!(
        !ok("list_locks", store.list_locks().await)
            .iter()
            .any(|l| l.key == key),
        "list_locks must not answer a released lease"
    );
}

/// `put_event` writes an event at its own number; appends continue after the highest.
async fn check_put_event(store: &dyn StateStore, project: &str) {
    let r = run(&format!("{project}-r"), project, "a", 1);
    ok("create_run", store.create_run(&r).await);
    let event = |seq: u64, json: &str| EventRecord {
        run_id: r.id.clone(),
        seq,
        at: at(seq as i64),
        json: json.into(),
    };
    assert!(
        matches!(
            store
                .put_event(&EventRecord {
                    run_id: format!("{project}-ghost"),
                    ..event(1, "{}")
                })
                .await,
            Err(StateError::NotFound { .. })
        ),
        "put_event for a missing run must fail with NotFound"
    );
    assert!(
        matches!(
            store.put_event(&event(0, "{}")).await,
            Err(StateError::InvalidArgument { .. })
        ),
        "put_event with seq 0 must fail with InvalidArgument"
    );
    let mut log = vec![event(1, r#"{"a":1}"#), event(2, r#"{"a":2}"#)];
    for e in &log {
        ok("put_event", store.put_event(e).await);
        // Twice: a copy that is re-run writes the same events again.
        ok("put_event again", store.put_event(e).await);
    }
    log[1] = event(2, r#"{"a":"two"}"#);
    ok("put_event overwrite", store.put_event(&log[1]).await);
    assert_eq!(
        ok("list_events", store.list_events(&r.id, 0).await),
        log,
        "put_event must store each event at its number, once, the last write winning"
    );
    assert_eq!(
        ok("append_event", store.append_event(&r.id, at(3), "{}").await),
        3,
        "append_event after put_event must number after the highest event"
    );
    ok("put_event", store.put_event(&event(7, "{}")).await);
    assert_eq!(
        ok("append_event", store.append_event(&r.id, at(8), "{}").await),
        8,
        "append_event after put_event must number after the highest event"
    );
}

/// On a store that has a world id already (`check_world` made one), `adopt_world_id` keeps it.
async fn check_adopt_world_kept(store: &dyn StateStore) {
    let world = ok("world_id", store.world_id().await);
    let other = format!("{world}-other");
    assert_eq!(
        ok("adopt_world_id", store.adopt_world_id(&other).await),
        world,
        "adopt_world_id on a store with a world id must answer that id"
    );
    assert_eq!(
        ok("world_id", store.world_id().await),
        world,
        "adopt_world_id must never change an existing world id"
    );
    assert!(
        matches!(
            store.adopt_world_id(" ").await,
            Err(StateError::InvalidArgument { .. })
        ),
        "adopt_world_id of an empty id must fail with InvalidArgument"
    );
}

/// `adopt_world_id` on a store that has no world id yet (a fresh database or prefix, which a
/// backend's tests pass here besides running [`run_all`]) sets it, once, for every handle.
pub async fn check_adopt_world_fresh(fresh: &dyn StateStore, second: &dyn StateStore) {
    let id = format!("adopted-{}", uuid::Uuid::new_v4().simple());
    assert_eq!(
        ok("adopt_world_id", fresh.adopt_world_id(&id).await),
        id,
        "adopt_world_id on a store without a world id must set it"
    );
    assert_eq!(
        ok("world_id", second.world_id().await),
        id,
        "the adopted world id must be the store's world id, for every handle"
    );
    assert_eq!(
        ok("adopt_world_id", second.adopt_world_id("another").await),
        id,
        "a second adopt_world_id must keep the first"
    );
}

// ---- Secrets (issue 12, part 5) ----

/// The secret methods: envelopes are opaque text kept by name; `create_secret` is
/// insert-if-absent and exactly one of two racing handles wins; `list_secrets` filters by a
/// literal prefix (no pattern characters) and orders by name.
async fn check_secrets(a: &dyn StateStore, b: &dyn StateStore, prefix: &str) {
    let name = |n: &str| format!("{prefix}/{n}");
    let env1 = r#"{"v":1,"provider":"keyfile","key_id":"kf-1","ciphertext":"AAAA"}"#;
    let env2 = r#"{"v":1,"provider":"keyfile","key_id":"kf-2","ciphertext":"BBBB"}"#;

    assert_eq!(
        ok("get_secret", a.get_secret(&name("missing")).await),
        None,
        "get_secret of a name never stored must be None"
    );
    ok("put_secret", a.put_secret(&name("x"), env1).await);
    assert_eq!(
        ok("get_secret", b.get_secret(&name("x")).await).as_deref(),
        Some(env1),
        "put_secret through one handle must be read back, byte for byte, through the other"
    );
    ok("put_secret", a.put_secret(&name("x"), env2).await);
    assert_eq!(
        ok("get_secret", a.get_secret(&name("x")).await).as_deref(),
        Some(env2),
        "put_secret must replace an existing envelope"
    );

    assert!(
        !ok("create_secret", a.create_secret(&name("x"), env1).await),
        "create_secret of an existing name must answer false"
    );
    assert_eq!(
        ok("get_secret", a.get_secret(&name("x")).await).as_deref(),
        Some(env2),
        "create_secret of an existing name must store nothing"
    );
    assert!(
        ok("create_secret", a.create_secret(&name("y"), env1).await),
        "create_secret of a new name must answer true"
    );
    assert_eq!(
        ok("get_secret", b.get_secret(&name("y")).await).as_deref(),
        Some(env1)
    );

    // Two machines creating the same secret at once: exactly one wins, both read its envelope.
    for round in 0..5 {
        let n = name(&format!("race-{round}"));
        let (ra, rb) = tokio::join!(a.create_secret(&n, env1), b.create_secret(&n, env2));
        let (ra, rb) = (ok("create_secret", ra), ok("create_secret", rb));
        assert!(
            ra ^ rb,
            "racing create_secret from two handles must let exactly one win (got {ra} and {rb})"
        );
        let want = if ra { env1 } else { env2 };
        assert_eq!(
            ok("get_secret", a.get_secret(&n).await).as_deref(),
            Some(want)
        );
        assert_eq!(
            ok("get_secret", b.get_secret(&n).await).as_deref(),
            Some(want)
        );
    }

    // Prefix listing: literal (no `%`/`_`/glob meaning), ordered by name, nothing outside.
    let listed_names = |v: Vec<(String, String)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    for n in ["list/b", "list/a", "list/a/deep", "list_x", "list%y", "lis"] {
        ok("put_secret", a.put_secret(&name(n), env1).await);
    }
    assert_eq!(
        listed_names(ok("list_secrets", b.list_secrets(&name("list/")).await)),
        vec![name("list/a"), name("list/a/deep"), name("list/b")],
        "list_secrets must answer exactly the names under the prefix, ordered by name"
    );
    assert_eq!(
        listed_names(ok("list_secrets", a.list_secrets(&name("list_")).await)),
        vec![name("list_x")],
        "list_secrets must take `_` literally"
    );
    assert_eq!(
        listed_names(ok("list_secrets", a.list_secrets(&name("list%")).await)),
        vec![name("list%y")],
        "list_secrets must take `%` literally"
    );
    let all = ok("list_secrets", a.list_secrets("").await);
    let mine: Vec<_> = all
        .iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .cloned()
        .collect();
    assert_eq!(
        mine.len(),
        13,
        "list_secrets(\"\") must answer every secret (these 13 among them)"
    );
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "list_secrets must be ordered by name"
    );
    assert!(
        mine.iter().any(|(n, e)| n == &name("x") && e == env2),
        "list_secrets must answer each secret's current envelope"
    );

    ok("delete_secret", a.delete_secret(&name("x")).await);
    assert_eq!(
        ok("get_secret", b.get_secret(&name("x")).await),
        None,
        "delete_secret must remove the secret"
    );
    ok("delete_secret", a.delete_secret(&name("x")).await);
    ok("delete_secret", a.delete_secret(&name("never")).await);
    assert!(
        ok("create_secret", b.create_secret(&name("x"), env1).await),
        "a deleted name must be creatable again"
    );
    for (n, _) in ok("list_secrets", a.list_secrets(&format!("{prefix}/")).await) {
        ok("delete_secret", a.delete_secret(&n).await);
    }
    assert!(ok("list_secrets", a.list_secrets(&format!("{prefix}/")).await).is_empty());
}
