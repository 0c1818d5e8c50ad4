//! `gantry state migrate`: copy every record of one store into another, any kind to any kind
//! (SQLite, PostgreSQL, etcd), and prove the copy.
//!
//! It lives here, on the [`StateStore`] trait only, so that the CLI and later the server run the
//! same code, and so that any pair of stores works without either knowing the other.
//!
//! What it guarantees:
//! - **Nothing of the source changes.** It refuses while any lock of the source is live (a run
//!   is writing), reads the source only (its world id is read, and made if it had none, like
//!   any command does), and re-reads the source at the end: if what it copied changed meanwhile,
//!   it fails with [`StateError::MigrateSourceChanged`].
//! - **A non-empty target is refused** ([`StateError::MigrateTargetNotEmpty`]) unless
//!   [`MigrateOptions::force`]; so is a target that is another gantry world already
//!   ([`StateError::MigrateWorldMismatch`]). Otherwise the target adopts the source's world id,
//!   so what a home made stays its own after it moves to a shared store.
//! - **Idempotent, resumable.** Every write is an upsert that leaves the record exactly as in
//!   the source (events keep their sequence numbers), and records already equal are not
//!   written again; after an interruption, running it again (with `force`: the target is no
//!   longer empty) converges. Node records of a copied cluster that the source does not have are
//!   deleted, so a cluster's nodes end up exactly the source's.
//! - **Verified.** It ends by reading both sides again and comparing, per record kind, the
//!   count and a SHA-256 of the records in a canonical form ([`KindReport`]).
//!
//! Live locks are not copied: a lease belongs to a process using the source. Neither are the
//! fencing counters: a token is only ever compared with tokens of the same store (a holder
//! writes to the store that issued its lease), the source has no live lease when the copy
//! starts, and the target's counters keep growing from its own history — nothing a process
//! holds can be checked against the target's counters, so they need not be raised.
//!
//! Records are compared at whole microseconds in UTC: every store must keep that precision
//! (PostgreSQL keeps no more), so a record that lost nanoseconds on the way is still the same.
//!
//! Each record kind is one entry of [`RecordKind`]: how to read it under a [`Scope`] and how to
//! write it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::{OffsetDateTime, UtcOffset};

use crate::error::StateError;
use crate::model::{
    ClusterRecord, EventRecord, InventoryRecord, NodeRecord, RunRecord, StepRecord,
};
use crate::store::StateStore;

pub mod check;

/// How [`migrate`] may treat the target.
#[derive(Debug, Clone, Copy, Default)]
pub struct MigrateOptions {
    /// Copy into a target that already holds records, or that is another gantry world (which
    /// then keeps its own world id).
    pub force: bool,
}

/// One kind of record a migration copies and compares, in the order they are copied (a node
/// needs its cluster, a step or an event its run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Clusters,
    Nodes,
    Runs,
    Steps,
    Events,
    Inventory,
    /// Sealed secrets (`gantry-secrets` envelopes), copied and compared byte for byte and
    /// never opened: they are store-wide (not per project), and bound to the world id, which
    /// the copy carries, so they open in the target as they did in the source.
    Secrets,
}

impl RecordKind {
    pub const ALL: [RecordKind; 7] = [
        RecordKind::Clusters,
        RecordKind::Nodes,
        RecordKind::Runs,
        RecordKind::Steps,
        RecordKind::Events,
        RecordKind::Inventory,
        RecordKind::Secrets,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Clusters => "clusters",
            RecordKind::Nodes => "nodes",
            RecordKind::Runs => "runs",
            RecordKind::Steps => "steps",
            RecordKind::Events => "events",
            RecordKind::Inventory => "inventory",
            RecordKind::Secrets => "secrets",
        }
    }
}

/// Count and content hash of one kind's records on one side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    pub count: u64,
    /// SHA-256 (hex) of the records in canonical form, in key order.
    pub hash: String,
}

/// What happened to one record kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindReport {
    pub kind: RecordKind,
    /// Records written to the target (those already equal there are skipped).
    pub written: u64,
    /// Records of the target deleted because the source does not have them (nodes only).
    pub deleted: u64,
    pub source: Side,
    pub target: Side,
}

impl KindReport {
    /// Whether the target holds exactly the source's records of this kind.
    pub fn matches(&self) -> bool {
        self.source == self.target
    }
}

/// The outcome of [`migrate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrateReport {
    /// The source's world id.
    pub source_world: String,
    /// The target's world id after the copy: the source's unless `force` overrode a mismatch.
    pub target_world: String,
    /// The projects copied.
    pub projects: Vec<String>,
    pub kinds: Vec<KindReport>,
}

impl MigrateReport {
    /// Whether every kind's count and hash match on both sides.
    pub fn verified(&self) -> bool {
        self.kinds.iter().all(KindReport::matches)
    }
}

/// Which records a migration covers: everything the source had when it started. The target is
/// read under the same scope, so what else a shared target holds is neither compared nor
/// touched.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    pub projects: Vec<String>,
    pub clusters: BTreeSet<(String, String)>,
    pub runs: BTreeSet<String>,
    pub inventory: BTreeSet<(String, String)>,
    /// Secret names (store-wide).
    pub secrets: BTreeSet<String>,
}

impl Scope {
    /// Everything `store` holds now.
    pub async fn of(store: &dyn StateStore) -> Result<Scope, StateError> {
        let mut scope = Scope {
            projects: store.list_projects().await?,
            ..Scope::default()
        };
        for p in &scope.projects {
            for c in store.list_clusters(p).await? {
                scope.clusters.insert((c.project, c.name));
            }
            for r in store.list_all_runs(p).await? {
                scope.runs.insert(r.id);
            }
            for i in store.list_inventory(p).await? {
                scope.inventory.insert((i.project, i.scope));
            }
        }
        for (name, _) in store.list_secrets("").await? {
            scope.secrets.insert(name);
        }
        Ok(scope)
    }
}

/// One record of any kind, as read from a store.
#[derive(Debug, Clone)]
enum Record {
    Cluster(ClusterRecord),
    Node(NodeRecord),
    Run(RunRecord),
    Step(StepRecord),
    Event(EventRecord),
    Inventory(InventoryRecord),
    Secret { name: String, envelope: String },
}

/// A kind's records on one side, by a key unique within the kind.
type Records = BTreeMap<String, Record>;

fn key(parts: &[&str]) -> String {
    parts.join("\u{0}")
}

/// Reads the records of `kind` that `store` holds under `scope`.
async fn read(
    kind: RecordKind,
    store: &dyn StateStore,
    scope: &Scope,
) -> Result<Records, StateError> {
    let mut out = Records::new();
    match kind {
        RecordKind::Clusters => {
            for p in &scope.projects {
                for c in store.list_clusters(p).await? {
                    if scope
                        .clusters
                        .contains(&(c.project.clone(), c.name.clone()))
                    {
                        out.insert(key(&[&c.project, &c.name]), Record::Cluster(c));
                    }
                }
            }
        }
        RecordKind::Nodes => {
            for (p, c) in &scope.clusters {
                for n in store.list_nodes(p, c).await? {
                    out.insert(key(&[&n.project, &n.cluster, &n.name]), Record::Node(n));
                }
            }
        }
        RecordKind::Runs => {
            for p in &scope.projects {
                for r in store.list_all_runs(p).await? {
                    if scope.runs.contains(&r.id) {
                        out.insert(r.id.clone(), Record::Run(r));
                    }
                }
            }
        }
        RecordKind::Steps => {
            for run in &scope.runs {
                for s in store.list_steps(run).await? {
                    out.insert(key(&[&s.run_id, &s.step_id]), Record::Step(s));
                }
            }
        }
        RecordKind::Events => {
            for run in &scope.runs {
                for e in store.list_events(run, 0).await? {
                    out.insert(
                        key(&[&e.run_id, &format!("{:020}", e.seq)]),
                        Record::Event(e),
                    );
                }
            }
        }
        RecordKind::Inventory => {
            for p in &scope.projects {
                for i in store.list_inventory(p).await? {
                    if scope
                        .inventory
                        .contains(&(i.project.clone(), i.scope.clone()))
                    {
                        out.insert(key(&[&i.project, &i.scope]), Record::Inventory(i));
                    }
                }
            }
        }
        RecordKind::Secrets => {
            for (name, envelope) in store.list_secrets("").await? {
                if scope.secrets.contains(&name) {
                    out.insert(name.clone(), Record::Secret { name, envelope });
                }
            }
        }
    }
    Ok(out)
}

/// Writes one record to `target` so that it ends up exactly as given.
async fn write(target: &dyn StateStore, record: &Record) -> Result<(), StateError> {
    match record {
        Record::Cluster(c) => target.put_cluster(c).await,
        Record::Node(n) => target.put_node(n).await,
        Record::Run(r) => match target.create_run(r).await {
            Err(StateError::AlreadyExists { .. }) => target.update_run(r).await,
            other => other,
        },
        Record::Step(s) => target.put_step(s).await,
        Record::Event(e) => target.put_event(e).await,
        // A target whose listing is newer (or invalidated later) keeps it: the comparison then
        // reports the difference, which a cache may have.
        Record::Inventory(i) => target.put_inventory(i).await.map(|_| ()),
        Record::Secret { name, envelope } => target.put_secret(name, envelope).await,
    }
}

/// Removes a record of the target that the source does not have, where the kind allows it.
async fn remove(target: &dyn StateStore, record: &Record) -> Result<bool, StateError> {
    match record {
        Record::Node(n) => {
            target.delete_node(&n.project, &n.cluster, &n.name).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// `t` at whole microseconds, in UTC: the precision every store keeps.
fn micros(t: OffsetDateTime) -> OffsetDateTime {
    let utc = t.to_offset(UtcOffset::UTC);
    utc.replace_nanosecond(utc.nanosecond() / 1000 * 1000)
        .unwrap_or(utc)
}

/// The record as the text its hash is made of.
fn canonical(record: &Record) -> Result<String, StateError> {
    let json = match record {
        Record::Cluster(c) => serde_json::to_string(&ClusterRecord {
            created_at: micros(c.created_at),
            updated_at: micros(c.updated_at),
            expires_at: micros(c.expires_at),
            ..c.clone()
        }),
        Record::Node(n) => serde_json::to_string(&NodeRecord {
            created_at: micros(n.created_at),
            updated_at: micros(n.updated_at),
            ..n.clone()
        }),
        Record::Run(r) => serde_json::to_string(&RunRecord {
            started_at: micros(r.started_at),
            finished_at: r.finished_at.map(micros),
            ..r.clone()
        }),
        Record::Step(s) => serde_json::to_string(&StepRecord {
            started_at: micros(s.started_at),
            finished_at: s.finished_at.map(micros),
            ..s.clone()
        }),
        Record::Event(e) => serde_json::to_string(&EventRecord {
            at: micros(e.at),
            ..e.clone()
        }),
        Record::Inventory(i) => serde_json::to_string(&InventoryRecord {
            fetched_at: micros(i.fetched_at),
            ..i.clone()
        }),
        Record::Secret { name, envelope } => serde_json::to_string(&(name, envelope)),
    };
    json.map_err(|e| StateError::Encode {
        what: "record for comparison",
        source: Box::new(e),
    })
}

fn side(records: &Records) -> Result<Side, StateError> {
    let mut hash = Sha256::new();
    for (k, r) in records {
        hash.update(k.as_bytes());
        hash.update(b"\n");
        hash.update(canonical(r)?.as_bytes());
        hash.update(b"\n");
    }
    Ok(Side {
        count: records.len() as u64,
        hash: hex::encode(hash.finalize()),
    })
}

/// Refuses when `store` has a live lock.
async fn refuse_locked(store: &dyn StateStore, side: &'static str) -> Result<(), StateError> {
    let locks = store.list_locks().await?;
    match locks.first() {
        None => Ok(()),
        Some(first) => Err(StateError::MigrateLocked {
            side,
            key: first.key.clone(),
            holder: first.holder.clone(),
            more: locks.len() - 1,
        }),
    }
}

/// Copies everything of `source` into `target` and compares both sides (see the module docs).
///
/// An `Ok` report may still say the sides differ ([`MigrateReport::verified`]); the caller
/// decides what that means for its exit.
pub async fn migrate(
    source: &dyn StateStore,
    target: &dyn StateStore,
    options: MigrateOptions,
) -> Result<MigrateReport, StateError> {
    refuse_locked(source, "the source").await?;
    refuse_locked(target, "into the target").await?;
    let scope = Scope::of(source).await?;
    if !options.force {
        let there = target.list_projects().await?;
        if let Some(first) = there.first() {
            return Err(StateError::MigrateTargetNotEmpty {
                count: there.len(),
                first: first.clone(),
            });
        }
        let secrets = target.list_secrets("").await?;
        if let Some((first, _)) = secrets.first() {
            return Err(StateError::MigrateTargetNotEmpty {
                count: secrets.len(),
                first: format!("secrets: {first}"),
            });
        }
    }
    let source_world = source.world_id().await?;
    let target_world = target.adopt_world_id(&source_world).await?;
    if target_world != source_world && !options.force {
        return Err(StateError::MigrateWorldMismatch {
            source_world,
            target_world,
        });
    }

    let mut written = BTreeMap::new();
    for kind in RecordKind::ALL {
        let from = read(kind, source, &scope).await?;
        let there = read(kind, target, &scope).await?;
        let (mut w, mut d) = (0u64, 0u64);
        for (k, record) in &from {
            let same = match there.get(k) {
                Some(t) => canonical(t)? == canonical(record)?,
                None => false,
            };
            if !same {
                write(target, record).await?;
                w += 1;
            }
        }
        for (k, record) in &there {
            if !from.contains_key(k) && remove(target, record).await? {
                d += 1;
            }
        }
        written.insert(kind.name(), (w, d));
    }

    if Scope::of(source).await? != scope {
        return Err(StateError::MigrateSourceChanged {
            what: "its projects, clusters, runs, cached listings or secrets",
        });
    }
    let kinds = compare_in(source, target, &scope, &written).await?;
    // A run that started during the copy holds a lock now (or wrote, which the comparison
    // shows); either way the copy is not one moment's state.
    if let Err(StateError::MigrateLocked { .. }) = refuse_locked(source, "the source").await {
        return Err(StateError::MigrateSourceChanged {
            what: "its locks (a run started)",
        });
    }
    Ok(MigrateReport {
        source_world,
        target_world,
        projects: scope.projects,
        kinds,
    })
}

/// Compares `target` with `source` under everything the source holds now, kind by kind.
pub async fn compare(
    source: &dyn StateStore,
    target: &dyn StateStore,
) -> Result<Vec<KindReport>, StateError> {
    let scope = Scope::of(source).await?;
    compare_in(source, target, &scope, &BTreeMap::new()).await
}

async fn compare_in(
    source: &dyn StateStore,
    target: &dyn StateStore,
    scope: &Scope,
    written: &BTreeMap<&'static str, (u64, u64)>,
) -> Result<Vec<KindReport>, StateError> {
    let mut out = Vec::new();
    for kind in RecordKind::ALL {
        let (w, d) = written.get(kind.name()).copied().unwrap_or_default();
        out.push(KindReport {
            kind,
            written: w,
            deleted: d,
            source: side(&read(kind, source, scope).await?)?,
            target: side(&read(kind, target, scope).await?)?,
        });
    }
    Ok(out)
}
