//! The contract every state backend implements.
//!
//! gantry keeps its records in SQLite, or in PostgreSQL for a team that shares them
//! (`gantry-state-pg`); the engine and the CLI (and later the server) only ever hold an
//! `Arc<dyn StateStore>`. The rules a backend
//! must follow are written on each method and checked by [`crate::conformance::run_all`], which
//! every backend runs in its tests. The methods are deliberately small key-value-ish operations
//! (upsert, get, list, delete, one atomic counter, one lease, one
//! put guarded by a timestamp) so that a store without SQL can
//! implement them with single transactions.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::StateError;
use crate::fence::Fence;
use crate::model::{
    Acquire, ClusterRecord, EventRecord, InventoryRecord, Lease, NodeRecord, RunRecord, StepRecord,
};

/// Durable storage for clusters, nodes, runs, checkpoints, events, locks and the inventory cache.
///
/// Several processes may use the same store at once (two `gantry up` in parallel, or replicas of
/// `gantry serve`): every method is one short atomic operation, and read-modify-write ones
/// (locks, event numbering) must be safe under that concurrency.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Short backend name, e.g. `"sqlite"`.
    fn kind(&self) -> &'static str;

    /// The schema version the store is at (1-based).
    async fn schema_version(&self) -> Result<u32, StateError>;

    /// The id of the gantry *world* this store is: every resource gantry makes carries it in the
    /// `gantry-world` tag, and gc, bulk destroy and adoption act only on resources of their own
    /// world. Everyone who shares the store (a team on one PostgreSQL or etcd) is one world.
    ///
    /// Gets or creates it atomically: the first call on a new store stores a fresh random,
    /// non-empty id; every later call, from any process sharing the store, answers that id.
    async fn world_id(&self) -> Result<String, StateError>;

    /// Inserts or wholly overwrites the cluster keyed by `(project, name)`.
    async fn put_cluster(&self, c: &ClusterRecord) -> Result<(), StateError>;

    async fn get_cluster(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<ClusterRecord>, StateError>;

    /// The project's clusters, ordered by name.
    async fn list_clusters(&self, project: &str) -> Result<Vec<ClusterRecord>, StateError>;

    /// Removes the cluster and its node records; its runs, steps and events stay as history.
    /// Deleting a missing cluster is not an error.
    async fn delete_cluster(&self, project: &str, name: &str) -> Result<(), StateError>;

    /// Inserts or wholly overwrites the node keyed by `(project, cluster, name)`.
    /// [`StateError::NotFound`] when the cluster has no record.
    async fn put_node(&self, n: &NodeRecord) -> Result<(), StateError>;

    /// The cluster's nodes, ordered by pool, then numerically by index.
    async fn list_nodes(&self, project: &str, cluster: &str)
    -> Result<Vec<NodeRecord>, StateError>;

    /// Removes one node record; a missing node is not an error.
    async fn delete_node(&self, project: &str, cluster: &str, name: &str)
    -> Result<(), StateError>;

    /// Records a new run. [`StateError::AlreadyExists`] when the id is taken.
    async fn create_run(&self, r: &RunRecord) -> Result<(), StateError>;

    /// Overwrites an existing run (status, finish time, error, …).
    /// [`StateError::NotFound`] when no run has this id.
    async fn update_run(&self, r: &RunRecord) -> Result<(), StateError>;

    /// The run with exactly this id.
    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StateError>;

    /// The run whose id is `id_prefix` or starts with it (what users type after `gantry logs`).
    /// An exact id wins; a prefix matching several runs is [`StateError::AmbiguousRunId`]; an
    /// empty prefix is [`StateError::InvalidArgument`].
    async fn find_run(&self, id_prefix: &str) -> Result<Option<RunRecord>, StateError>;

    /// At most `limit` runs of the project (of one cluster when given), newest `started_at`
    /// first.
    async fn list_runs(
        &self,
        project: &str,
        cluster: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StateError>;

    /// Inserts or wholly overwrites the step keyed by `(run_id, step_id)`.
    /// [`StateError::NotFound`] when the run does not exist.
    async fn put_step(&self, s: &StepRecord) -> Result<(), StateError>;

    /// The run's steps, ordered by `started_at`, then `step_id`.
    async fn list_steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StateError>;

    /// Ids of steps with status `done` and this spec hash, in any run of this cluster: the
    /// checkpoints a re-run skips.
    async fn done_steps(
        &self,
        project: &str,
        cluster: &str,
        spec_hash: &str,
    ) -> Result<BTreeSet<String>, StateError>;

    /// Appends an event to the run's log and returns its sequence number: 1 for the first event
    /// of a run, then +1, with no gaps or duplicates even with concurrent writers.
    /// [`StateError::NotFound`] when the run does not exist.
    async fn append_event(
        &self,
        run_id: &str,
        at: OffsetDateTime,
        json: &str,
    ) -> Result<u64, StateError>;

    /// The run's events with `seq > after_seq`, in sequence order (`after_seq = 0` gives all).
    async fn list_events(
        &self,
        run_id: &str,
        after_seq: u64,
    ) -> Result<Vec<EventRecord>, StateError>;

    /// Takes the lease-based lock `key` for `ttl` if it is free or expired.
    ///
    /// If a live lease exists — even one of the same `holder` — the answer is
    /// [`Acquire::Held`] with its holder: a holder extends its lease with
    /// [`renew_lock`](Self::renew_lock), never by acquiring again. Each successful acquire gets
    /// a fencing token strictly greater than any token ever issued for `key`.
    async fn acquire_lock(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Acquire, StateError>;

    /// Extends a live lease to `now + ttl`, keeping its token.
    /// [`StateError::LockLost`] when the lease expired or the lock was taken since.
    async fn renew_lock(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StateError>;

    /// Gives the lock up; a no-op when the lease was already lost.
    async fn release_lock(&self, lease: &Lease) -> Result<(), StateError>;

    /// The live lease on `key`; `None` when it is free or expired.
    async fn get_lock(&self, key: &str) -> Result<Option<Lease>, StateError>;

    /// The cached listing of `(project, scope)`; `None` when there is none, or when the one
    /// stored is not newer than the project's last
    /// [`invalidate_inventory`](Self::invalidate_inventory).
    ///
    /// The inventory cache only saves `gantry ls` a provider round trip; nothing that changes
    /// resources may decide from it.
    async fn get_inventory(
        &self,
        project: &str,
        scope: &str,
    ) -> Result<Option<InventoryRecord>, StateError>;

    /// Stores `r` as the listing of `(r.project, r.scope)`, replacing an older one, and answers
    /// `true`. Answers `false` and stores nothing when `r.fetched_at` is not newer than the
    /// project's last invalidation (the listing may predate a change) or than the entry already
    /// stored (a slower, older listing must not replace a newer one).
    async fn put_inventory(&self, r: &InventoryRecord) -> Result<bool, StateError>;

    /// Drops every cached listing of `project` and remembers `at` (if later than the time it
    /// remembers) so that a listing that started at or before `at` is never stored afterwards.
    /// Other projects' entries are untouched. Invalidating a project without entries is not an
    /// error.
    async fn invalidate_inventory(
        &self,
        project: &str,
        at: OffsetDateTime,
    ) -> Result<(), StateError>;

    // --- Fencing (issue 12, part 4) ---

    /// A handle on the same store (same pool, client or connection) whose every write is made
    /// under `fence`: in the write's own transaction, the store checks that the newest token
    /// issued for `fence.key` is `fence.token`, and otherwise stores nothing and answers
    /// [`StateError::Fenced`].
    ///
    /// Fenced writes: clusters, nodes, runs, steps, events and the inventory cache (put and
    /// invalidate) — everything a run writes, so a holder that lost its lock leaves no trace,
    /// not even an event in its own log. Not fenced: the lock methods (they carry their lease
    /// and check its token themselves) and [`world_id`](Self::world_id) (a store-wide id
    /// created once, whoever asks first), nor the writes only `gantry state migrate` makes
    /// ([`put_event`](Self::put_event), [`adopt_world_id`](Self::adopt_world_id)): it
    /// refuses to copy while any lock is live, so it never writes under one. Reads are never
    /// fenced.
    fn fenced(&self, fence: Fence) -> Arc<dyn StateStore>;

    /// The fence of this handle's writes; `None` for an unfenced handle.
    fn fence(&self) -> Option<&Fence>;

    // --- Enumeration and identity for `gantry state migrate` (issue 12, part 6) ---------------
    // A full copy of a store needs to find everything in it and to write events and the world
    // id exactly as they are; nothing else uses these.

    /// Every project with at least one cluster, run or cached listing, sorted by name (byte
    /// order), each once.
    async fn list_projects(&self) -> Result<Vec<String>, StateError>;

    /// Every run of the project, of any cluster (deleted ones included), ordered by id. Unlike
    /// [`list_runs`](Self::list_runs) there is no limit: a store reads them in pages if it must.
    async fn list_all_runs(&self, project: &str) -> Result<Vec<RunRecord>, StateError>;

    /// Every cached listing of the project that [`get_inventory`](Self::get_inventory) would
    /// answer, ordered by scope.
    async fn list_inventory(&self, project: &str) -> Result<Vec<InventoryRecord>, StateError>;

    /// Every live lease of the store (every key, not only clusters'), ordered by key.
    async fn list_locks(&self) -> Result<Vec<Lease>, StateError>;

    /// Inserts or wholly overwrites the event `(e.run_id, e.seq)` exactly as given: the way a
    /// copy keeps a run's log numbered as it was. A later
    /// [`append_event`](Self::append_event) numbers after the highest sequence number stored.
    /// [`StateError::NotFound`] when the run does not exist; [`StateError::InvalidArgument`]
    /// for sequence number 0.
    async fn put_event(&self, e: &EventRecord) -> Result<(), StateError>;

    /// Makes `id` the store's world id if it has none yet, atomically, and answers the store's
    /// world id afterwards: `id`, or the one it already had (which is never changed). Used by
    /// `gantry state migrate` so that what a home made stays its own in the store it moves to.
    /// [`StateError::InvalidArgument`] for an empty id.
    async fn adopt_world_id(&self, id: &str) -> Result<String, StateError>;

    // ---- Secrets (issue 12, part 5) ----
    //
    // A secret is stored as an *envelope*: opaque text sealed by `gantry-secrets` (one line of
    // JSON that names its key provider and key id). The store never sees a plaintext and never
    // interprets an envelope; it keeps them by name. Names are `/`-separated paths
    // (`ssh/PROJECT/private-key`, `engine/PROJECT/CLUSTER/...`) so that `list_secrets` can take
    // a prefix.

    /// Inserts or wholly replaces the envelope stored under `name`.
    async fn put_secret(&self, name: &str, envelope: &str) -> Result<(), StateError>;

    /// Stores `envelope` under `name` only if no secret of that name exists, atomically:
    /// answers `true` when it stored it, `false` (storing nothing) when one exists. Two
    /// processes creating the same secret at once (two machines generating the project key)
    /// see exactly one `true`, and both then read the winner's envelope.
    async fn create_secret(&self, name: &str, envelope: &str) -> Result<bool, StateError>;

    /// The envelope stored under `name`, if any.
    async fn get_secret(&self, name: &str) -> Result<Option<String>, StateError>;

    /// Every `(name, envelope)` whose name starts with `prefix` (all of them for `""`), ordered
    /// by name (byte order).
    async fn list_secrets(&self, prefix: &str) -> Result<Vec<(String, String)>, StateError>;

    /// Removes the secret `name`; removing one that does not exist is not an error.
    async fn delete_secret(&self, name: &str) -> Result<(), StateError>;
}
