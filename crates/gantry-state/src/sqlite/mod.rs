//! [`StateStore`] on an SQLite file: the default, single-machine store.
//!
//! Several gantry processes (parallel CLI commands) open the same file, so the database runs in
//! WAL mode (readers never block the writer), waits up to [`BUSY_TIMEOUT`] for a lock instead of
//! failing at once, and does every write as one short `BEGIN IMMEDIATE` transaction: taking the
//! write lock up front means a read-modify-write (locks, event numbering) can never be
//! interleaved with another process's and never hits a late "database is locked" on upgrade.
//!
//! rusqlite is synchronous. One connection per store sits behind a `std::sync::Mutex`, and each
//! call runs on tokio's blocking pool; the mutex is taken and released inside that blocking
//! closure, never across an `.await`.

mod codec;
mod schema;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, Row, Transaction, TransactionBehavior, params};
use time::OffsetDateTime;

use crate::error::StateError;
use crate::fence::Fence;
use crate::model::{
    Acquire, ClusterRecord, EventRecord, InventoryRecord, Lease, NodeRecord, RunRecord, StepRecord,
};
use crate::store::StateStore;

/// How long a call waits for another process's write to finish before failing with
/// [`StateError::Busy`]. Writes are short, so hitting it means something is stuck.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// `expires_at` of a released lock: earlier than any real time, and still the fixed-width text
/// the comparisons expect.
const RELEASED_AT: &str = "0000-01-01T00:00:00.000000000Z";

/// The SQLite-backed state store. Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    /// Set on a fenced handle ([`StateStore::fenced`]): checked by every [`Self::write`].
    fence: Option<Fence>,
}

struct Inner {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// The newest schema version this binary knows; a database past it is refused with
    /// [`StateError::SchemaTooNew`].
    pub const SCHEMA_VERSION: u32 = schema::SUPPORTED_VERSION;

    /// Opens (creating if needed) the database at `path` and migrates it.
    ///
    /// Missing parent directories are created (mode 0700 on Unix) and a new file gets mode 0600:
    /// the state names hosts and users, and later holds secrets' ciphertext.
    pub fn open(path: &Path) -> Result<SqliteStore, StateError> {
        prepare_file(path)?;
        let conn = Connection::open(path).map_err(|source| StateError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::init(conn, Some(path.to_owned()))
    }

    /// A private in-memory database, for tests and dry runs.
    pub fn open_in_memory() -> Result<SqliteStore, StateError> {
        let conn = Connection::open_in_memory().map_err(|source| StateError::Open {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        Self::init(conn, None)
    }

    /// The database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<SqliteStore, StateError> {
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| StateError::sqlite("set busy timeout", e))?;
        if path.is_some() {
            enable_wal(&conn)?;
            // In WAL mode, NORMAL syncs the log at checkpoints instead of at every commit. A
            // committed write still survives the process being killed (it is in the log, in
            // the OS's cache) and the file is never corrupted; only an OS crash or power loss
            // may roll back the last commits. gantry never relies on its records alone (every
            // operation observes the provider and converges), and FULL's one fsync per commit
            // (a step's checkpoints and events are several per node) made the store the
            // bottleneck of a large `up` or `destroy`: 1,000 nodes meant ten thousand fsyncs.
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| StateError::sqlite("set synchronous mode", e))?;
        }
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(|e| StateError::sqlite("enable foreign keys", e))?;
        schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path,
            }),
            fence: None,
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StateError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic mid-call already rolled its transaction back when the `Transaction` was
            // dropped during unwinding, so the connection is still usable.
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|source| StateError::Worker { source })?
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, committing only if it succeeds; on a
    /// fenced handle, only if the fence still holds (checked first, in the same transaction:
    /// the write lock taken by `BEGIN IMMEDIATE` keeps any `acquire_lock` out until commit).
    async fn write<T, F>(&self, op: &'static str, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StateError> + Send + 'static,
    {
        let fence = self.fence.clone();
        self.write_unfenced(op, move |tx| {
            if let Some(fence) = &fence {
                check_fence(tx, fence)?;
            }
            f(tx)
        })
        .await
    }

    /// [`Self::write`] without the fence: for the lock methods (which check their lease's
    /// token themselves) and the world id.
    async fn write_unfenced<T, F>(&self, op: &'static str, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StateError> + Send + 'static,
    {
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| StateError::sqlite(op, e))?;
            let out = f(&tx)?;
            tx.commit().map_err(|e| StateError::sqlite(op, e))?;
            Ok(out)
        })
        .await
    }
}

/// Creates the parent directories and the file itself with private permissions.
fn prepare_file(path: &Path) -> Result<(), StateError> {
    let io_err = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(parent).map_err(io_err)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        // An empty file is a valid, empty SQLite database.
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err(e)),
    }
}

fn read<T: rusqlite::types::FromSql>(
    row: &Row<'_>,
    idx: usize,
    what: &'static str,
) -> Result<T, StateError> {
    row.get(idx).map_err(|e| StateError::Corrupt {
        what,
        source: Box::new(e),
    })
}

/// Runs a query and decodes every row with `decode`, which may fail with a [`StateError`].
fn query_all<T>(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&Row<'_>) -> Result<T, StateError>,
) -> Result<Vec<T>, StateError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(|e| StateError::sqlite(op, e))?;
    let mut rows = stmt.query(params).map_err(|e| StateError::sqlite(op, e))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| StateError::sqlite(op, e))? {
        out.push(decode(row)?);
    }
    Ok(out)
}

fn query_one<T>(
    conn: &Connection,
    op: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&Row<'_>) -> Result<T, StateError>,
) -> Result<Option<T>, StateError> {
    Ok(query_all(conn, op, sql, params, decode)?.into_iter().next())
}

const CLUSTER_COLS: &str = "project, name, uid, provider, spec_yaml, spec_json, spec_hash, \
                            generation, status, created_at, updated_at, expires_at";

fn cluster_from_row(row: &Row<'_>) -> Result<ClusterRecord, StateError> {
    const W: &str = "cluster";
    Ok(ClusterRecord {
        project: read(row, 0, W)?,
        name: read(row, 1, W)?,
        uid: read(row, 2, W)?,
        provider: read(row, 3, W)?,
        spec_yaml: read(row, 4, W)?,
        spec_json: read(row, 5, W)?,
        spec_hash: read(row, 6, W)?,
        generation: codec::uint("cluster generation", read(row, 7, W)?)?,
        status: codec::name("cluster status", &read::<String>(row, 8, W)?)?,
        created_at: codec::parse_ts("cluster created_at", &read::<String>(row, 9, W)?)?,
        updated_at: codec::parse_ts("cluster updated_at", &read::<String>(row, 10, W)?)?,
        expires_at: codec::parse_ts("cluster expires_at", &read::<String>(row, 11, W)?)?,
    })
}

const NODE_COLS: &str = "project, cluster, name, pool, idx, provider_id, address, ssh_host, \
                         ssh_port, ssh_user, state, tags, created_at, updated_at";

fn node_from_row(row: &Row<'_>) -> Result<NodeRecord, StateError> {
    const W: &str = "node";
    Ok(NodeRecord {
        project: read(row, 0, W)?,
        cluster: read(row, 1, W)?,
        name: read(row, 2, W)?,
        pool: read(row, 3, W)?,
        index: codec::uint("node index", read(row, 4, W)?)?,
        provider_id: read(row, 5, W)?,
        address: read(row, 6, W)?,
        ssh_host: read(row, 7, W)?,
        ssh_port: read::<Option<i64>>(row, 8, W)?
            .map(|p| codec::uint("node ssh port", p))
            .transpose()?,
        ssh_user: read(row, 9, W)?,
        state: read(row, 10, W)?,
        tags: codec::parse_tags(&read::<String>(row, 11, W)?)?,
        created_at: codec::parse_ts("node created_at", &read::<String>(row, 12, W)?)?,
        updated_at: codec::parse_ts("node updated_at", &read::<String>(row, 13, W)?)?,
    })
}

const RUN_COLS: &str =
    "id, project, cluster, kind, status, spec_hash, holder, started_at, finished_at, error";

fn run_from_row(row: &Row<'_>) -> Result<RunRecord, StateError> {
    const W: &str = "run";
    Ok(RunRecord {
        id: read(row, 0, W)?,
        project: read(row, 1, W)?,
        cluster: read(row, 2, W)?,
        kind: codec::name("run kind", &read::<String>(row, 3, W)?)?,
        status: codec::name("run status", &read::<String>(row, 4, W)?)?,
        spec_hash: read(row, 5, W)?,
        holder: read(row, 6, W)?,
        started_at: codec::parse_ts("run started_at", &read::<String>(row, 7, W)?)?,
        finished_at: codec::parse_opt_ts(
            "run finished_at",
            read::<Option<String>>(row, 8, W)?.as_deref(),
        )?,
        error: read(row, 9, W)?,
    })
}

const STEP_COLS: &str =
    "run_id, step_id, node, status, attempts, error, spec_hash, started_at, finished_at";

fn step_from_row(row: &Row<'_>) -> Result<StepRecord, StateError> {
    const W: &str = "step";
    Ok(StepRecord {
        run_id: read(row, 0, W)?,
        step_id: read(row, 1, W)?,
        node: read(row, 2, W)?,
        status: codec::name("step status", &read::<String>(row, 3, W)?)?,
        attempts: codec::uint("step attempts", read(row, 4, W)?)?,
        error: read(row, 5, W)?,
        spec_hash: read(row, 6, W)?,
        started_at: codec::parse_ts("step started_at", &read::<String>(row, 7, W)?)?,
        finished_at: codec::parse_opt_ts(
            "step finished_at",
            read::<Option<String>>(row, 8, W)?.as_deref(),
        )?,
    })
}

fn event_from_row(row: &Row<'_>) -> Result<EventRecord, StateError> {
    const W: &str = "event";
    Ok(EventRecord {
        run_id: read(row, 0, W)?,
        seq: codec::uint("event seq", read(row, 1, W)?)?,
        at: codec::parse_ts("event time", &read::<String>(row, 2, W)?)?,
        json: read(row, 3, W)?,
    })
}

/// A lock row as stored, live or not.
struct LockRow {
    holder: String,
    token: u64,
    expires_at: OffsetDateTime,
}

/// Switches the file to WAL. The mode is stored in the file, so only the first open of a new
/// database changes it; SQLite answers that change with `SQLITE_BUSY` *without* waiting when
/// another process holds a lock (two commands opening a fresh database at once), so it is
/// retried here within [`BUSY_TIMEOUT`].
fn enable_wal(conn: &Connection) -> Result<(), StateError> {
    let current: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .map_err(|e| StateError::sqlite("read journal mode", e))?;
    if current.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    let start = std::time::Instant::now();
    loop {
        // The answer is the mode actually in effect; a file system without shared memory
        // keeps the old one, which is slower under concurrency but still correct.
        match conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && start.elapsed() < BUSY_TIMEOUT =>
            {
                // A little jitter so racing openers do not retry in lockstep.
                let jitter = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::from(d.subsec_nanos() % 20));
                std::thread::sleep(std::time::Duration::from_millis(10 + jitter));
            }
            Err(e) => return Err(StateError::sqlite("enable WAL journal", e)),
        }
    }
}

/// Refuses the write when the newest token issued for the fence's lock is not its own.
fn check_fence(tx: &Connection, fence: &Fence) -> Result<(), StateError> {
    let newest = query_one(
        tx,
        "check fence",
        "SELECT token FROM locks WHERE key = ?1",
        [&fence.key],
        |row| codec::uint("lock token", read::<i64>(row, 0, "lock")?),
    )?
    .unwrap_or(0);
    if newest == fence.token {
        Ok(())
    } else {
        Err(fence.refused(newest))
    }
}

fn lock_row(tx: &Connection, key: &str) -> Result<Option<LockRow>, StateError> {
    query_one(
        tx,
        "read lock",
        "SELECT holder, token, expires_at FROM locks WHERE key = ?1",
        [key],
        |row| {
            Ok(LockRow {
                holder: read(row, 0, "lock")?,
                token: codec::uint("lock token", read(row, 1, "lock")?)?,
                expires_at: codec::parse_ts("lock expires_at", &read::<String>(row, 2, "lock")?)?,
            })
        },
    )
}

/// `now + ttl`, refusing a zero or absurd ttl.
fn lease_expiry(now: OffsetDateTime, ttl: Duration) -> Result<OffsetDateTime, StateError> {
    if ttl.is_zero() {
        return Err(StateError::InvalidArgument {
            what: "lock ttl",
            reason: "it must be longer than zero".into(),
        });
    }
    let out_of_range = || StateError::OutOfRange {
        what: "lock ttl",
        value: format!("{ttl:?}"),
    };
    let ttl = time::Duration::try_from(ttl).map_err(|_| out_of_range())?;
    now.checked_add(ttl).ok_or_else(out_of_range)
}

fn run_exists(tx: &Connection, run_id: &str) -> Result<bool, StateError> {
    tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?1)",
        [run_id],
        |row| row.get(0),
    )
    .map_err(|e| StateError::sqlite("look up run", e))
}

fn require_run(tx: &Connection, run_id: &str) -> Result<(), StateError> {
    if run_exists(tx, run_id)? {
        Ok(())
    } else {
        Err(StateError::NotFound {
            what: "run",
            key: run_id.to_owned(),
        })
    }
}

/// When `project`'s inventory was last invalidated (text, comparable as the timestamps are).
fn inventory_invalidated(conn: &Connection, project: &str) -> Result<Option<String>, StateError> {
    query_one(
        conn,
        "read inventory invalidation",
        "SELECT at FROM inventory_invalidated WHERE project = ?1",
        [project],
        |row| read::<String>(row, 0, "inventory invalidation"),
    )
}

#[async_trait]
impl StateStore for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn schema_version(&self) -> Result<u32, StateError> {
        self.call(|conn| schema::current_version(conn)).await
    }

    async fn world_id(&self) -> Result<String, StateError> {
        const SELECT: &str = "SELECT value FROM meta WHERE key = 'world'";
        let decode = |row: &Row<'_>| read::<String>(row, 0, "world id");
        // The usual case, without the write lock: the id exists already.
        if let Some(id) = self
            .call(move |conn| query_one(conn, "read world id", SELECT, [], decode))
            .await?
        {
            return Ok(id);
        }
        let fresh = uuid::Uuid::new_v4().to_string();
        self.write_unfenced("create world id", move |tx| {
            // Whoever inserts first wins; everyone then reads the winner's id.
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('world', ?1) ON CONFLICT (key) DO NOTHING",
                [&fresh],
            )
            .map_err(|e| StateError::sqlite("create world id", e))?;
            query_one(tx, "read world id", SELECT, [], decode)?.ok_or(StateError::NotFound {
                what: "world id",
                key: "world".into(),
            })
        })
        .await
    }

    async fn put_cluster(&self, c: &ClusterRecord) -> Result<(), StateError> {
        let c = c.clone();
        self.write("write cluster", move |tx| {
            // An upsert, not `INSERT OR REPLACE`: replacing would delete the row and cascade
            // to the cluster's nodes.
            tx.execute(
                "INSERT INTO clusters (project, name, uid, provider, spec_yaml, spec_json,
                     spec_hash, generation, status, created_at, updated_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (project, name) DO UPDATE SET
                     uid = excluded.uid, provider = excluded.provider,
                     spec_yaml = excluded.spec_yaml, spec_json = excluded.spec_json,
                     spec_hash = excluded.spec_hash, generation = excluded.generation,
                     status = excluded.status, created_at = excluded.created_at,
                     updated_at = excluded.updated_at, expires_at = excluded.expires_at",
                params![
                    c.project,
                    c.name,
                    c.uid,
                    c.provider,
                    c.spec_yaml,
                    c.spec_json,
                    c.spec_hash,
                    codec::int("cluster generation", c.generation)?,
                    c.status.as_str(),
                    codec::ts(c.created_at)?,
                    codec::ts(c.updated_at)?,
                    codec::ts(c.expires_at)?,
                ],
            )
            .map_err(|e| StateError::sqlite("write cluster", e))?;
            Ok(())
        })
        .await
    }

    async fn get_cluster(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<ClusterRecord>, StateError> {
        let (project, name) = (project.to_owned(), name.to_owned());
        self.call(move |conn| {
            query_one(
                conn,
                "read cluster",
                &format!("SELECT {CLUSTER_COLS} FROM clusters WHERE project = ?1 AND name = ?2"),
                [&project, &name],
                cluster_from_row,
            )
        })
        .await
    }

    async fn list_clusters(&self, project: &str) -> Result<Vec<ClusterRecord>, StateError> {
        let project = project.to_owned();
        self.call(move |conn| {
            query_all(
                conn,
                "list clusters",
                &format!("SELECT {CLUSTER_COLS} FROM clusters WHERE project = ?1 ORDER BY name"),
                [&project],
                cluster_from_row,
            )
        })
        .await
    }

    async fn delete_cluster(&self, project: &str, name: &str) -> Result<(), StateError> {
        let (project, name) = (project.to_owned(), name.to_owned());
        self.write("delete cluster", move |tx| {
            // The foreign key would cascade too; deleting explicitly keeps the rule visible.
            tx.execute(
                "DELETE FROM nodes WHERE project = ?1 AND cluster = ?2",
                [&project, &name],
            )
            .map_err(|e| StateError::sqlite("delete cluster nodes", e))?;
            tx.execute(
                "DELETE FROM clusters WHERE project = ?1 AND name = ?2",
                [&project, &name],
            )
            .map_err(|e| StateError::sqlite("delete cluster", e))?;
            Ok(())
        })
        .await
    }

    async fn put_node(&self, n: &NodeRecord) -> Result<(), StateError> {
        let n = n.clone();
        self.write("write node", move |tx| {
            let cluster_exists: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM clusters WHERE project = ?1 AND name = ?2)",
                    [&n.project, &n.cluster],
                    |row| row.get(0),
                )
                .map_err(|e| StateError::sqlite("look up cluster", e))?;
            if !cluster_exists {
                return Err(StateError::NotFound {
                    what: "cluster",
                    key: format!("{}/{}", n.project, n.cluster),
                });
            }
            tx.execute(
                "INSERT INTO nodes (project, cluster, name, pool, idx, provider_id, address,
                     ssh_host, ssh_port, ssh_user, state, tags, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (project, cluster, name) DO UPDATE SET
                     pool = excluded.pool, idx = excluded.idx,
                     provider_id = excluded.provider_id, address = excluded.address,
                     ssh_host = excluded.ssh_host, ssh_port = excluded.ssh_port,
                     ssh_user = excluded.ssh_user, state = excluded.state, tags = excluded.tags,
                     created_at = excluded.created_at, updated_at = excluded.updated_at",
                params![
                    n.project,
                    n.cluster,
                    n.name,
                    n.pool,
                    n.index,
                    n.provider_id,
                    n.address,
                    n.ssh_host,
                    n.ssh_port,
                    n.ssh_user,
                    n.state,
                    codec::tags_json(&n.tags)?,
                    codec::ts(n.created_at)?,
                    codec::ts(n.updated_at)?,
                ],
            )
            .map_err(|e| StateError::sqlite("write node", e))?;
            Ok(())
        })
        .await
    }

    async fn list_nodes(
        &self,
        project: &str,
        cluster: &str,
    ) -> Result<Vec<NodeRecord>, StateError> {
        let (project, cluster) = (project.to_owned(), cluster.to_owned());
        self.call(move |conn| {
            query_all(
                conn,
                "list nodes",
                &format!(
                    "SELECT {NODE_COLS} FROM nodes WHERE project = ?1 AND cluster = ?2
                     ORDER BY pool, idx, name"
                ),
                [&project, &cluster],
                node_from_row,
            )
        })
        .await
    }

    async fn delete_node(
        &self,
        project: &str,
        cluster: &str,
        name: &str,
    ) -> Result<(), StateError> {
        let key = [project.to_owned(), cluster.to_owned(), name.to_owned()];
        self.write("delete node", move |tx| {
            tx.execute(
                "DELETE FROM nodes WHERE project = ?1 AND cluster = ?2 AND name = ?3",
                key,
            )
            .map_err(|e| StateError::sqlite("delete node", e))?;
            Ok(())
        })
        .await
    }

    async fn create_run(&self, r: &RunRecord) -> Result<(), StateError> {
        let r = r.clone();
        self.write("create run", move |tx| {
            if run_exists(tx, &r.id)? {
                return Err(StateError::AlreadyExists {
                    what: "run",
                    key: r.id,
                });
            }
            tx.execute(
                "INSERT INTO runs (id, project, cluster, kind, status, spec_hash, holder,
                     started_at, finished_at, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    r.id,
                    r.project,
                    r.cluster,
                    r.kind.as_str(),
                    r.status.as_str(),
                    r.spec_hash,
                    r.holder,
                    codec::ts(r.started_at)?,
                    codec::opt_ts(r.finished_at)?,
                    r.error,
                ],
            )
            .map_err(|e| StateError::sqlite("create run", e))?;
            Ok(())
        })
        .await
    }

    async fn update_run(&self, r: &RunRecord) -> Result<(), StateError> {
        let r = r.clone();
        self.write("update run", move |tx| {
            let changed = tx
                .execute(
                    "UPDATE runs SET project = ?2, cluster = ?3, kind = ?4, status = ?5,
                         spec_hash = ?6, holder = ?7, started_at = ?8, finished_at = ?9,
                         error = ?10
                     WHERE id = ?1",
                    params![
                        r.id,
                        r.project,
                        r.cluster,
                        r.kind.as_str(),
                        r.status.as_str(),
                        r.spec_hash,
                        r.holder,
                        codec::ts(r.started_at)?,
                        codec::opt_ts(r.finished_at)?,
                        r.error,
                    ],
                )
                .map_err(|e| StateError::sqlite("update run", e))?;
            if changed == 0 {
                return Err(StateError::NotFound {
                    what: "run",
                    key: r.id,
                });
            }
            Ok(())
        })
        .await
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StateError> {
        let id = id.to_owned();
        self.call(move |conn| {
            query_one(
                conn,
                "read run",
                &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
                [&id],
                run_from_row,
            )
        })
        .await
    }

    async fn find_run(&self, id_prefix: &str) -> Result<Option<RunRecord>, StateError> {
        if id_prefix.is_empty() {
            return Err(StateError::InvalidArgument {
                what: "run id prefix",
                reason: "it is empty".into(),
            });
        }
        let prefix = id_prefix.to_owned();
        self.call(move |conn| {
            // One read transaction, so the exact lookup and the prefix scan see the same data.
            let tx = conn
                .transaction()
                .map_err(|e| StateError::sqlite("find run", e))?;
            let exact = query_one(
                &tx,
                "find run",
                &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
                [&prefix],
                run_from_row,
            )?;
            if exact.is_some() {
                return Ok(exact);
            }
            // `substr` rather than LIKE: ids may contain `_` or `%`, and LIKE ignores case.
            let mut matches = query_all(
                &tx,
                "find run",
                &format!(
                    "SELECT {RUN_COLS} FROM runs WHERE substr(id, 1, length(?1)) = ?1 LIMIT 2"
                ),
                [&prefix],
                run_from_row,
            )?;
            if matches.len() > 1 {
                let count: i64 = tx
                    .query_row(
                        "SELECT COUNT(*) FROM runs WHERE substr(id, 1, length(?1)) = ?1",
                        [&prefix],
                        |row| row.get(0),
                    )
                    .map_err(|e| StateError::sqlite("find run", e))?;
                return Err(StateError::AmbiguousRunId {
                    prefix,
                    count: codec::uint("run count", count)?,
                });
            }
            Ok(matches.pop())
        })
        .await
    }

    async fn list_runs(
        &self,
        project: &str,
        cluster: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        let (project, cluster) = (project.to_owned(), cluster.map(str::to_owned));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn| {
            query_all(
                conn,
                "list runs",
                &format!(
                    "SELECT {RUN_COLS} FROM runs
                     WHERE project = ?1 AND (?2 IS NULL OR cluster = ?2)
                     ORDER BY started_at DESC, id DESC LIMIT ?3"
                ),
                params![project, cluster, limit],
                run_from_row,
            )
        })
        .await
    }

    async fn put_step(&self, s: &StepRecord) -> Result<(), StateError> {
        let s = s.clone();
        self.write("write step", move |tx| {
            require_run(tx, &s.run_id)?;
            tx.execute(
                "INSERT INTO steps (run_id, step_id, node, status, attempts, error, spec_hash,
                     started_at, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (run_id, step_id) DO UPDATE SET
                     node = excluded.node, status = excluded.status,
                     attempts = excluded.attempts, error = excluded.error,
                     spec_hash = excluded.spec_hash, started_at = excluded.started_at,
                     finished_at = excluded.finished_at",
                params![
                    s.run_id,
                    s.step_id,
                    s.node,
                    s.status.as_str(),
                    s.attempts,
                    s.error,
                    s.spec_hash,
                    codec::ts(s.started_at)?,
                    codec::opt_ts(s.finished_at)?,
                ],
            )
            .map_err(|e| StateError::sqlite("write step", e))?;
            Ok(())
        })
        .await
    }

    async fn list_steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StateError> {
        let run_id = run_id.to_owned();
        self.call(move |conn| {
            query_all(
                conn,
                "list steps",
                &format!(
                    "SELECT {STEP_COLS} FROM steps WHERE run_id = ?1 ORDER BY started_at, step_id"
                ),
                [&run_id],
                step_from_row,
            )
        })
        .await
    }

    async fn done_steps(
        &self,
        project: &str,
        cluster: &str,
        spec_hash: &str,
    ) -> Result<BTreeSet<String>, StateError> {
        let key = [project.to_owned(), cluster.to_owned(), spec_hash.to_owned()];
        self.call(move |conn| {
            let ids = query_all(
                conn,
                "list done steps",
                "SELECT DISTINCT s.step_id FROM steps s JOIN runs r ON r.id = s.run_id
                 WHERE r.project = ?1 AND r.cluster = ?2 AND s.spec_hash = ?3
                   AND s.status = 'done'",
                key,
                |row| read::<String>(row, 0, "step"),
            )?;
            Ok(ids.into_iter().collect())
        })
        .await
    }

    async fn append_event(
        &self,
        run_id: &str,
        at: OffsetDateTime,
        json: &str,
    ) -> Result<u64, StateError> {
        let (run_id, json) = (run_id.to_owned(), json.to_owned());
        let at = codec::ts(at)?;
        self.write("append event", move |tx| {
            require_run(tx, &run_id)?;
            // Safe only because the transaction holds the write lock from its first statement.
            let seq: i64 = tx
                .query_row(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?1",
                    [&run_id],
                    |row| row.get(0),
                )
                .map_err(|e| StateError::sqlite("number event", e))?;
            tx.execute(
                "INSERT INTO events (run_id, seq, at, json) VALUES (?1, ?2, ?3, ?4)",
                params![run_id, seq, at, json],
            )
            .map_err(|e| StateError::sqlite("append event", e))?;
            codec::uint("event seq", seq)
        })
        .await
    }

    async fn list_events(
        &self,
        run_id: &str,
        after_seq: u64,
    ) -> Result<Vec<EventRecord>, StateError> {
        let run_id = run_id.to_owned();
        // Nothing is numbered above i64::MAX, so clamping keeps the meaning.
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        self.call(move |conn| {
            query_all(
                conn,
                "list events",
                "SELECT run_id, seq, at, json FROM events WHERE run_id = ?1 AND seq > ?2
                 ORDER BY seq",
                params![run_id, after],
                event_from_row,
            )
        })
        .await
    }

    async fn acquire_lock(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Acquire, StateError> {
        let (key, holder) = (key.to_owned(), holder.to_owned());
        self.write_unfenced("acquire lock", move |tx| {
            let now = OffsetDateTime::now_utc();
            let expires_at = lease_expiry(now, ttl)?;
            let previous = lock_row(tx, &key)?;
            if let Some(live) = previous.as_ref().filter(|l| l.expires_at > now) {
                return Ok(Acquire::Held {
                    holder: live.holder.clone(),
                    expires_at: live.expires_at,
                });
            }
            let token = match previous {
                None => 1,
                Some(old) => old.token.checked_add(1).ok_or(StateError::OutOfRange {
                    what: "lock token",
                    value: old.token.to_string(),
                })?,
            };
            tx.execute(
                "INSERT INTO locks (key, holder, token, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET
                     holder = excluded.holder, token = excluded.token,
                     expires_at = excluded.expires_at",
                params![
                    key,
                    holder,
                    codec::int("lock token", token)?,
                    codec::ts(expires_at)?
                ],
            )
            .map_err(|e| StateError::sqlite("acquire lock", e))?;
            Ok(Acquire::Acquired(Lease {
                key,
                holder,
                token,
                expires_at,
            }))
        })
        .await
    }

    async fn renew_lock(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StateError> {
        let lease = lease.clone();
        self.write_unfenced("renew lock", move |tx| {
            let now = OffsetDateTime::now_utc();
            let expires_at = lease_expiry(now, ttl)?;
            let still_ours = lock_row(tx, &lease.key)?.is_some_and(|l| {
                l.token == lease.token && l.holder == lease.holder && l.expires_at > now
            });
            if !still_ours {
                return Err(StateError::LockLost {
                    key: lease.key,
                    token: lease.token,
                });
            }
            tx.execute(
                "UPDATE locks SET expires_at = ?3 WHERE key = ?1 AND token = ?2",
                params![
                    lease.key,
                    codec::int("lock token", lease.token)?,
                    codec::ts(expires_at)?
                ],
            )
            .map_err(|e| StateError::sqlite("renew lock", e))?;
            Ok(Lease {
                expires_at,
                ..lease
            })
        })
        .await
    }

    async fn release_lock(&self, lease: &Lease) -> Result<(), StateError> {
        let key = lease.key.clone();
        let token = codec::int("lock token", lease.token)?;
        self.write_unfenced("release lock", move |tx| {
            // Keyed by token: a lease that was lost cannot release its successor.
            tx.execute(
                "UPDATE locks SET expires_at = ?3 WHERE key = ?1 AND token = ?2",
                params![key, token, RELEASED_AT],
            )
            .map_err(|e| StateError::sqlite("release lock", e))?;
            Ok(())
        })
        .await
    }

    async fn get_lock(&self, key: &str) -> Result<Option<Lease>, StateError> {
        let key = key.to_owned();
        self.call(move |conn| {
            let now = OffsetDateTime::now_utc();
            Ok(lock_row(conn, &key)?
                .filter(|l| l.expires_at > now)
                .map(|l| Lease {
                    key,
                    holder: l.holder,
                    token: l.token,
                    expires_at: l.expires_at,
                }))
        })
        .await
    }

    async fn get_inventory(
        &self,
        project: &str,
        scope: &str,
    ) -> Result<Option<InventoryRecord>, StateError> {
        let (project, scope) = (project.to_owned(), scope.to_owned());
        self.call(move |conn| {
            // One read transaction: the entry and the invalidation time are seen together.
            let tx = conn
                .transaction()
                .map_err(|e| StateError::sqlite("read inventory", e))?;
            let invalidated = inventory_invalidated(&tx, &project)?;
            let row = query_one(
                &tx,
                "read inventory",
                "SELECT fetched_at, payload FROM inventory WHERE project = ?1 AND scope = ?2",
                [&project, &scope],
                |row| {
                    Ok((
                        read::<String>(row, 0, "inventory")?,
                        read::<String>(row, 1, "inventory")?,
                    ))
                },
            )?;
            let Some((fetched_at, payload)) = row else {
                return Ok(None);
            };
            // Fixed-width UTC text compares as the instants do.
            if invalidated.is_some_and(|at| fetched_at <= at) {
                return Ok(None);
            }
            Ok(Some(InventoryRecord {
                fetched_at: codec::parse_ts("inventory fetched_at", &fetched_at)?,
                project,
                scope,
                payload,
            }))
        })
        .await
    }

    async fn put_inventory(&self, r: &InventoryRecord) -> Result<bool, StateError> {
        let r = r.clone();
        let fetched_at = codec::ts(r.fetched_at)?;
        self.write("write inventory", move |tx| {
            if inventory_invalidated(tx, &r.project)?.is_some_and(|at| fetched_at <= at) {
                return Ok(false);
            }
            let changed = tx
                .execute(
                    "INSERT INTO inventory (project, scope, fetched_at, payload)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (project, scope) DO UPDATE SET
                         fetched_at = excluded.fetched_at, payload = excluded.payload
                     WHERE excluded.fetched_at > inventory.fetched_at",
                    params![r.project, r.scope, fetched_at, r.payload],
                )
                .map_err(|e| StateError::sqlite("write inventory", e))?;
            Ok(changed > 0)
        })
        .await
    }

    async fn invalidate_inventory(
        &self,
        project: &str,
        at: OffsetDateTime,
    ) -> Result<(), StateError> {
        let project = project.to_owned();
        let at = codec::ts(at)?;
        self.write("invalidate inventory", move |tx| {
            tx.execute("DELETE FROM inventory WHERE project = ?1", [&project])
                .map_err(|e| StateError::sqlite("invalidate inventory", e))?;
            // The remembered time only moves forward: an invalidation with a late clock is
            // never undone by one with an early clock.
            tx.execute(
                "INSERT INTO inventory_invalidated (project, at) VALUES (?1, ?2)
                 ON CONFLICT (project) DO UPDATE SET at = excluded.at
                 WHERE excluded.at > inventory_invalidated.at",
                [&project, &at],
            )
            .map_err(|e| StateError::sqlite("invalidate inventory", e))?;
            Ok(())
        })
        .await
    }

    // --- Fencing (issue 12, part 4) ---

    fn fenced(&self, fence: Fence) -> Arc<dyn StateStore> {
        Arc::new(SqliteStore {
            inner: Arc::clone(&self.inner),
            fence: Some(fence),
        })
    }

    fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    // --- Enumeration and identity for `gantry state migrate` (issue 12, part 6) ---------------

    async fn list_projects(&self) -> Result<Vec<String>, StateError> {
        self.call(|conn| {
            // UNION drops duplicates; BINARY collation orders by bytes.
            query_all(
                conn,
                "list projects",
                "SELECT project FROM clusters UNION SELECT project FROM runs
                 UNION SELECT project FROM inventory ORDER BY 1",
                [],
                |row| read::<String>(row, 0, "project"),
            )
        })
        .await
    }

    async fn list_all_runs(&self, project: &str) -> Result<Vec<RunRecord>, StateError> {
        let project = project.to_owned();
        self.call(move |conn| {
            query_all(
                conn,
                "list runs",
                &format!("SELECT {RUN_COLS} FROM runs WHERE project = ?1 ORDER BY id"),
                [&project],
                run_from_row,
            )
        })
        .await
    }

    async fn list_inventory(&self, project: &str) -> Result<Vec<InventoryRecord>, StateError> {
        let project = project.to_owned();
        self.call(move |conn| {
            query_all(
                conn,
                "list inventory",
                "SELECT i.project, i.scope, i.fetched_at, i.payload FROM inventory i
                 LEFT JOIN inventory_invalidated v ON v.project = i.project
                 WHERE i.project = ?1 AND (v.at IS NULL OR i.fetched_at > v.at)
                 ORDER BY i.scope",
                [&project],
                |row| {
                    const W: &str = "inventory";
                    Ok(InventoryRecord {
                        project: read(row, 0, W)?,
                        scope: read(row, 1, W)?,
                        fetched_at: codec::parse_ts(
                            "inventory fetched_at",
                            &read::<String>(row, 2, W)?,
                        )?,
                        payload: read(row, 3, W)?,
                    })
                },
            )
        })
        .await
    }

    async fn list_locks(&self) -> Result<Vec<Lease>, StateError> {
        self.call(|conn| {
            // Fixed-width UTC text compares as the instants do.
            let now = codec::ts(OffsetDateTime::now_utc())?;
            query_all(
                conn,
                "list locks",
                "SELECT key, holder, token, expires_at FROM locks WHERE expires_at > ?1
                 ORDER BY key",
                [&now],
                |row| {
                    const W: &str = "lock";
                    Ok(Lease {
                        key: read(row, 0, W)?,
                        holder: read(row, 1, W)?,
                        token: codec::uint("lock token", read(row, 2, W)?)?,
                        expires_at: codec::parse_ts(
                            "lock expires_at",
                            &read::<String>(row, 3, W)?,
                        )?,
                    })
                },
            )
        })
        .await
    }

    async fn put_event(&self, e: &EventRecord) -> Result<(), StateError> {
        if e.seq == 0 {
            return Err(StateError::InvalidArgument {
                what: "event seq",
                reason: "event numbers start at 1".into(),
            });
        }
        let seq = codec::int("event seq", e.seq)?;
        let at = codec::ts(e.at)?;
        let (run_id, json) = (e.run_id.clone(), e.json.clone());
        // append_event numbers from MAX(seq), so nothing else needs to move.
        self.write("write event", move |tx| {
            require_run(tx, &run_id)?;
            tx.execute(
                "INSERT INTO events (run_id, seq, at, json) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (run_id, seq) DO UPDATE SET at = excluded.at, json = excluded.json",
                params![run_id, seq, at, json],
            )
            .map_err(|e| StateError::sqlite("write event", e))?;
            Ok(())
        })
        .await
    }

    async fn adopt_world_id(&self, id: &str) -> Result<String, StateError> {
        if id.trim().is_empty() {
            return Err(StateError::InvalidArgument {
                what: "world id",
                reason: "it is empty".into(),
            });
        }
        let id = id.to_owned();
        self.write("adopt world id", move |tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('world', ?1) ON CONFLICT (key) DO NOTHING",
                [&id],
            )
            .map_err(|e| StateError::sqlite("adopt world id", e))?;
            query_one(
                tx,
                "read world id",
                "SELECT value FROM meta WHERE key = 'world'",
                [],
                |row| read::<String>(row, 0, "world id"),
            )?
            .ok_or(StateError::NotFound {
                what: "world id",
                key: "world".into(),
            })
        })
        .await
    }

    // ---- Secrets (issue 12, part 5) ----

    async fn put_secret(&self, name: &str, envelope: &str) -> Result<(), StateError> {
        let (name, envelope) = (name.to_owned(), envelope.to_owned());
        let now = codec::ts(OffsetDateTime::now_utc())?;
        self.write("write secret", move |tx| {
            tx.execute(
                "INSERT INTO secrets (name, envelope, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET
                     envelope = excluded.envelope, updated_at = excluded.updated_at",
                params![name, envelope, now],
            )
            .map_err(|e| StateError::sqlite("write secret", e))?;
            Ok(())
        })
        .await
    }

    async fn create_secret(&self, name: &str, envelope: &str) -> Result<bool, StateError> {
        let (name, envelope) = (name.to_owned(), envelope.to_owned());
        let now = codec::ts(OffsetDateTime::now_utc())?;
        self.write("create secret", move |tx| {
            let inserted = tx
                .execute(
                    "INSERT INTO secrets (name, envelope, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO NOTHING",
                    params![name, envelope, now],
                )
                .map_err(|e| StateError::sqlite("create secret", e))?;
            Ok(inserted > 0)
        })
        .await
    }

    async fn get_secret(&self, name: &str) -> Result<Option<String>, StateError> {
        let name = name.to_owned();
        self.call(move |conn| {
            query_one(
                conn,
                "read secret",
                "SELECT envelope FROM secrets WHERE name = ?1",
                [&name],
                |row| read::<String>(row, 0, "secret envelope"),
            )
        })
        .await
    }

    async fn list_secrets(&self, prefix: &str) -> Result<Vec<(String, String)>, StateError> {
        let prefix = prefix.to_owned();
        self.call(move |conn| {
            // `substr` rather than LIKE: names may hold `%` and `_`. TEXT compares bytewise
            // (BINARY collation), so ORDER BY is byte order.
            query_all(
                conn,
                "list secrets",
                "SELECT name, envelope FROM secrets
                 WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
                [&prefix],
                |row| {
                    Ok((
                        read::<String>(row, 0, "secret name")?,
                        read::<String>(row, 1, "secret envelope")?,
                    ))
                },
            )
        })
        .await
    }

    async fn delete_secret(&self, name: &str) -> Result<(), StateError> {
        let name = name.to_owned();
        self.write("delete secret", move |tx| {
            tx.execute("DELETE FROM secrets WHERE name = ?1", [&name])
                .map_err(|e| StateError::sqlite("delete secret", e))?;
            Ok(())
        })
        .await
    }
}
