//! The executable contract of [`migrate`] between any two stores: each
//! backend's tests (and the CLI's, for pairs of team stores) call these with fresh stores.
//!
//! [`seed`] fills a store with a non-trivial world — several projects, clusters with nodes in
//! several pools, runs with steps and events (one of a deleted cluster), cached listings, an
//! invalidation — with timestamps at nanoseconds, so a copy into a store that keeps only
//! microseconds (PostgreSQL) is covered too. Each check panics naming the rule that broke.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_core::status::{ClusterStatus, RunKind, RunStatus, StepStatus};
use time::OffsetDateTime;

use super::{MigrateOptions, MigrateReport, RecordKind, migrate};
use crate::error::StateError;
use crate::model::{Acquire, ClusterRecord, InventoryRecord, NodeRecord, RunRecord, StepRecord};
use crate::store::StateStore;

fn ok<T>(rule: &str, result: Result<T, StateError>) -> T {
    result.unwrap_or_else(|e| panic!("{rule}: unexpected error: {e} ({e:?})"))
}

/// A fixed instant plus `secs`, with nanoseconds (which PostgreSQL drops).
fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH
        + time::Duration::seconds(1_700_000_000 + secs)
        + time::Duration::nanoseconds(123_456_789)
}

/// What [`seed`] wrote, for the checks to compare with.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub projects: Vec<String>,
    pub clusters: usize,
    pub nodes: usize,
    pub runs: Vec<RunRecord>,
    pub steps: usize,
    /// Events per run id.
    pub events: BTreeMap<String, u64>,
    pub inventory: usize,
    pub secrets: usize,
}

/// Fills `store` (which should be empty) with a small but complete world.
pub async fn seed(store: &dyn StateStore) -> Seeded {
    let projects = vec!["alpha".to_string(), "beta".into(), "gamma/odd name".into()];
    let mut s = Seeded {
        projects: projects.clone(),
        clusters: 0,
        nodes: 0,
        runs: Vec::new(),
        steps: 0,
        events: BTreeMap::new(),
        inventory: 0,
        secrets: 0,
    };
    for (pi, project) in projects.iter().enumerate() {
        let pi = pi as i64;
        for (ci, name) in ["db", "web"].iter().enumerate() {
            let ci = ci as i64;
            if project.starts_with("gamma") && *name == "web" {
                continue;
            }
            let c = ClusterRecord {
                project: project.clone(),
                name: (*name).into(),
                uid: format!("uid-{pi}-{ci}"),
                provider: if ci == 0 { "local" } else { "aws" }.into(),
                spec_yaml: format!("apiVersion: gantry/v1\nname: {name}\n# é ✓\n"),
                spec_json: format!(r#"{{"name":"{name}","n":{ci}}}"#),
                spec_hash: format!("hash-{pi}{ci}"),
                generation: 3 + ci as u64,
                status: if ci == 0 {
                    ClusterStatus::Ready
                } else {
                    ClusterStatus::Creating
                },
                created_at: at(pi * 100 + ci),
                updated_at: at(pi * 100 + ci + 5),
                expires_at: at(pi * 100 + 3600),
            };
            ok("seed cluster", store.put_cluster(&c).await);
            s.clusters += 1;
            for (pool, count) in [("main", 3u32), ("extra", 2)] {
                for index in 1..=count {
                    let n = NodeRecord {
                        project: project.clone(),
                        cluster: (*name).into(),
                        name: format!("{name}-{pool}-{index}"),
                        pool: pool.into(),
                        index,
                        provider_id: format!("i-{pi}{ci}{pool}{index}"),
                        address: (index != 2).then(|| format!("10.0.{pi}.{index}")),
                        ssh_host: Some(format!("127.0.{pi}.{index}")),
                        ssh_port: (pool == "main").then_some(2222),
                        ssh_user: Some("gantry".into()),
                        state: "running".into(),
                        tags: BTreeMap::from([
                            ("gantry-pool".to_string(), pool.to_string()),
                            ("gantry-world".to_string(), "w".to_string()),
                        ]),
                        created_at: at(10 + i64::from(index)),
                        updated_at: at(20 + i64::from(index)),
                    };
                    ok("seed node", store.put_node(&n).await);
                    s.nodes += 1;
                }
            }
        }
        // Runs: one per cluster, and one of a cluster whose record is gone (history).
        for (ri, cluster) in ["db", "web", "deleted"].iter().enumerate() {
            let ri = ri as i64;
            let id = format!("run-{pi}-{ri}-{}", uuid::Uuid::new_v4().simple());
            let r = RunRecord {
                id: id.clone(),
                project: project.clone(),
                cluster: (*cluster).into(),
                kind: if ri == 2 {
                    RunKind::Destroy
                } else {
                    RunKind::Up
                },
                status: RunStatus::Running,
                spec_hash: (ri != 2).then(|| format!("hash-{pi}{ri}")),
                holder: "1234@host".into(),
                started_at: at(1000 + pi * 10 + ri),
                finished_at: None,
                error: None,
            };
            ok("seed run", store.create_run(&r).await);
            let done = RunRecord {
                status: if ri == 1 {
                    RunStatus::Failed
                } else {
                    RunStatus::Succeeded
                },
                finished_at: Some(at(2000 + ri)),
                error: (ri == 1).then(|| "step x failed on web-main-2".into()),
                ..r
            };
            ok("seed run", store.update_run(&done).await);
            for (si, step) in ["install", "configure", "start"].iter().enumerate() {
                let st = StepRecord {
                    run_id: id.clone(),
                    step_id: format!("{step}@{cluster}-main-1"),
                    node: Some(format!("{cluster}-main-1")),
                    status: if si == 2 && ri == 1 {
                        StepStatus::Failed
                    } else {
                        StepStatus::Done
                    },
                    attempts: 1 + si as u32,
                    error: None,
                    spec_hash: done.spec_hash.clone(),
                    started_at: at(1100 + si as i64),
                    finished_at: Some(at(1150 + si as i64)),
                };
                ok("seed step", store.put_step(&st).await);
                s.steps += 1;
            }
            let events = 4 + ri as u64 * 3;
            for e in 0..events {
                let json = format!(r#"{{"type":"log","n":{e},"text":"line {e} ✓"}}"#);
                ok(
                    "seed event",
                    store.append_event(&id, at(1200 + e as i64), &json).await,
                );
            }
            s.events.insert(id, events);
            s.runs.push(done);
        }
        for scope in ["local", "aws:us-east-1"] {
            let i = InventoryRecord {
                project: project.clone(),
                scope: scope.into(),
                fetched_at: at(3000 + pi),
                payload: format!(r#"{{"nodes":[{pi}]}}"#),
            };
            assert!(ok("seed inventory", store.put_inventory(&i).await));
            s.inventory += 1;
        }
    }
    // An invalidation, and a listing stored after it, in one project.
    ok(
        "seed invalidation",
        store.invalidate_inventory(&projects[1], at(3500)).await,
    );
    s.inventory -= 2;
    let after = InventoryRecord {
        project: projects[1].clone(),
        scope: "local".into(),
        fetched_at: at(3600),
        payload: "{}".into(),
    };
    assert!(ok("seed inventory", store.put_inventory(&after).await));
    s.inventory += 1;
    // Secrets are opaque text to a store (and to the copy): envelopes-shaped lines do.
    for name in [
        "ssh/alpha/private-key",
        "ssh/alpha/known-hosts",
        "cluster/beta/uid-1-0/outputs",
    ] {
        let envelope =
            format!(r#"{{"v":1,"provider":"keyfile","key_id":"kf-0","ciphertext":"{name} ✓"}}"#);
        ok("seed secret", store.put_secret(name, &envelope).await);
        s.secrets += 1;
    }
    s
}

fn count(report: &MigrateReport, kind: RecordKind) -> u64 {
    report
        .kinds
        .iter()
        .find(|k| k.kind == kind)
        .map_or(0, |k| k.source.count)
}

fn assert_verified(report: &MigrateReport, rule: &str) {
    for k in &report.kinds {
        assert!(
            k.matches(),
            "{rule}: {} differ: source {:?}, target {:?}",
            k.kind.name(),
            k.source,
            k.target
        );
    }
}

/// A fresh `source` seeded, copied into a fresh `target`: everything arrives (counts, hashes,
/// event numbers, the world id), the target works on (appends continue the numbering), a second
/// copy is refused without `force`, and with it writes nothing and still verifies.
pub async fn check_copy(source: &dyn StateStore, target: &dyn StateStore) {
    let seeded = seed(source).await;
    let world = ok("world_id", source.world_id().await);
    let report = ok(
        "migrate into a fresh store",
        migrate(source, target, MigrateOptions::default()).await,
    );
    assert_verified(&report, "migrate into a fresh store");
    assert_eq!(report.projects, seeded.projects, "every project is copied");
    for (kind, want) in [
        (RecordKind::Clusters, seeded.clusters),
        (RecordKind::Nodes, seeded.nodes),
        (RecordKind::Runs, seeded.runs.len()),
        (RecordKind::Steps, seeded.steps),
        (
            RecordKind::Events,
            seeded.events.values().sum::<u64>() as usize,
        ),
        (RecordKind::Inventory, seeded.inventory),
        (RecordKind::Secrets, seeded.secrets),
    ] {
        assert_eq!(
            count(&report, kind),
            want as u64,
            "the report must count every {} of the source",
            kind.name()
        );
        let k = report.kinds.iter().find(|k| k.kind == kind);
        assert_eq!(
            k.map(|k| k.written),
            Some(want as u64),
            "into a fresh store every {} is written",
            kind.name()
        );
    }
    assert_eq!(
        (report.source_world.as_str(), report.target_world.as_str()),
        (world.as_str(), world.as_str()),
        "the target must adopt the source's world id"
    );
    assert_eq!(ok("world_id", target.world_id().await), world);

    for (id, events) in &seeded.events {
        let copied = ok("list_events", target.list_events(id, 0).await);
        let seqs: Vec<u64> = copied.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=*events).collect::<Vec<_>>(),
            "events must keep their sequence numbers"
        );
        assert_eq!(
            ok(
                "append_event",
                target.append_event(id, at(9000), "{}").await
            ),
            events + 1,
            "appending to a copied run must continue its numbering"
        );
    }
    let run = &seeded.runs[0];
    assert_eq!(
        ok("get_run", target.get_run(&run.id).await).map(|r| (r.status, r.error)),
        Some((run.status, run.error.clone())),
        "a run must arrive with its final status"
    );
    // The appended events are in the target only: the source stays as it was.
    let again = ok(
        "migrate again with force",
        migrate(source, target, MigrateOptions { force: true }).await,
    );
    let events = again.kinds.iter().find(|k| k.kind == RecordKind::Events);
    assert!(
        events.is_some_and(|e| !e.matches()),
        "events appended in the target only must show as a difference"
    );

    match migrate(source, target, MigrateOptions::default()).await {
        Err(StateError::MigrateTargetNotEmpty { count, .. }) => {
            assert_eq!(count, seeded.projects.len());
        }
        other => panic!("a non-empty target must be refused without force, got {other:?}"),
    }
}

/// A target holding part of the copy, with stale and extra records (an interrupted migration):
/// `migrate` with `force` converges, deleting the extra nodes of a copied cluster and leaving
/// the target's own projects alone; a second run writes nothing.
pub async fn check_resume(source: &dyn StateStore, target: &dyn StateStore) {
    let seeded = seed(source).await;
    let world = ok("world_id", source.world_id().await);
    ok("adopt_world_id", target.adopt_world_id(&world).await);
    // Part of the copy: the first project's clusters, one with a changed status and a node the
    // source does not have; one run with half of its events and a stale step.
    let p = &seeded.projects[0];
    for mut c in ok("list_clusters", source.list_clusters(p).await) {
        if c.name == "db" {
            c.status = ClusterStatus::Destroying;
        }
        ok("put_cluster", target.put_cluster(&c).await);
    }
    let mut stale = ok("list_nodes", source.list_nodes(p, "db").await)[0].clone();
    stale.name = "db-main-9".into();
    stale.index = 9;
    ok("put_node", target.put_node(&stale).await);
    let run = &seeded.runs[0];
    ok("create_run", target.create_run(run).await);
    for e in ok("list_events", source.list_events(&run.id, 0).await)
        .iter()
        .take(2)
    {
        ok("put_event", target.put_event(e).await);
    }
    let mut step = ok("list_steps", source.list_steps(&run.id).await)[0].clone();
    step.status = StepStatus::Running;
    ok("put_step", target.put_step(&step).await);
    // A project of the target's own.
    let mine = ClusterRecord {
        project: "target-only".into(),
        ..ok("get_cluster", source.get_cluster(p, "db").await).expect("seeded cluster")
    };
    ok("put_cluster", target.put_cluster(&mine).await);
    // As the target keeps it (PostgreSQL keeps microseconds only).
    let mine = ok("get_cluster", target.get_cluster("target-only", "db").await);

    match migrate(source, target, MigrateOptions::default()).await {
        Err(StateError::MigrateTargetNotEmpty { .. }) => {}
        other => panic!("a partly copied target must be refused without force, got {other:?}"),
    }
    let report = ok(
        "migrate into a partly copied target",
        migrate(source, target, MigrateOptions { force: true }).await,
    );
    assert_verified(&report, "migrate into a partly copied target");
    let nodes = report.kinds.iter().find(|k| k.kind == RecordKind::Nodes);
    assert_eq!(
        nodes.map(|k| k.deleted),
        Some(1),
        "the node the source does not have must be deleted"
    );
    assert!(
        ok("list_nodes", target.list_nodes(p, "db").await)
            .iter()
            .all(|n| n.name != "db-main-9"),
        "the extra node must be gone"
    );
    assert_eq!(
        ok("get_cluster", target.get_cluster("target-only", "db").await),
        mine,
        "the target's own records must stay"
    );
    let second = ok(
        "migrate a third time",
        migrate(source, target, MigrateOptions { force: true }).await,
    );
    assert_verified(&second, "migrate a third time");
    assert!(
        second
            .kinds
            .iter()
            .all(|k| k.written == 0 && k.deleted == 0),
        "a converged copy must write nothing: {:?}",
        second.kinds
    );
}

/// What `migrate` refuses: a source with a live lock (a run in progress), a target that is
/// another gantry world (unless `force`, which keeps the target's id).
pub async fn check_refusals(source: &dyn StateStore, target: &dyn StateStore) {
    seed(source).await;
    let lease = match ok(
        "acquire_lock",
        source
            .acquire_lock("cluster/alpha/db", "99@elsewhere", Duration::from_secs(60))
            .await,
    ) {
        Acquire::Acquired(l) => l,
        Acquire::Held { holder, .. } => panic!("the lock is held by {holder}"),
    };
    match migrate(source, target, MigrateOptions { force: true }).await {
        Err(StateError::MigrateLocked { key, holder, .. }) => {
            assert_eq!(
                (key.as_str(), holder.as_str()),
                ("cluster/alpha/db", "99@elsewhere")
            );
        }
        other => panic!("a source with a live lock must be refused, got {other:?}"),
    }
    assert!(
        ok("list_projects", target.list_projects().await).is_empty(),
        "a refused migrate must write nothing"
    );
    ok("release_lock", source.release_lock(&lease).await);

    let theirs = ok("world_id", target.world_id().await);
    let ours = ok("world_id", source.world_id().await);
    match migrate(source, target, MigrateOptions::default()).await {
        Err(StateError::MigrateWorldMismatch {
            source_world,
            target_world,
        }) => assert_eq!((source_world, target_world), (ours.clone(), theirs.clone())),
        other => panic!("a target of another world must be refused, got {other:?}"),
    }
    assert!(
        ok("list_projects", target.list_projects().await).is_empty(),
        "a refused migrate must write nothing"
    );
    let forced = ok(
        "migrate with force into another world",
        migrate(source, target, MigrateOptions { force: true }).await,
    );
    assert_verified(&forced, "migrate with force into another world");
    assert_eq!(
        (forced.source_world, forced.target_world),
        (ours, theirs.clone()),
        "with force the target keeps its world id"
    );
    assert_eq!(ok("world_id", target.world_id().await), theirs);
}
