//! [`PostgresStore`]: the [`StateStore`] methods as SQL on a small connection pool.
//!
//! The pool (deadpool-postgres) keeps up to [`POOL_SIZE`] connections: the engine writes
//! checkpoints and events for many nodes at once, and one connection would serialize them on
//! round trips; more than a few per process would only multiply the connections a shared server
//! must hold for a team. Each connection caches its prepared statements.
//!
//! Every method is one statement in autocommit, or one short transaction when it must read
//! before it writes. Concurrency is settled by PostgreSQL's row locks under READ COMMITTED,
//! never by retries: an `INSERT … ON CONFLICT DO UPDATE` or `UPDATE … RETURNING` waits for a
//! concurrent writer of the same row and then works on its committed result.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use gantry_state::{
    Acquire, ClusterRecord, EventRecord, Fence, InventoryRecord, Lease, NodeRecord, RunRecord,
    StateError, StateStore, StepRecord,
};
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};

use crate::error::{BACKEND, pg_err, pool_err};
use crate::schema;
use crate::tls;
use crate::url::{self, TlsMode};

/// Connections one store keeps at most.
pub const POOL_SIZE: usize = 8;

/// How long a call waits for a free pooled connection before failing.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// How long one call (its statements, from taking a pooled connection to the answer) may take
/// before it fails naming the store. A server that is gone closes its connections and fails a
/// call at once; this bounds the other kind, a server that keeps its TCP connections open but
/// does not answer (stopped, frozen, or behind a dead link): without it, the call waits forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting and migrating may take in [`PostgresStore::connect`] (migrations wait
/// for another process's under an advisory lock).
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Namespace of the per-project advisory locks that serialize inventory writes (the first key
/// of the two-key form; the second is a hash of the project).
const INVENTORY_LOCK: i32 = 0x6761_6e74; // "gant"

/// A lease's longest accepted ttl: longer is certainly a mistake (and could overflow a time).
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The PostgreSQL-backed state store. Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
    /// Set on a fenced handle ([`StateStore::fenced`]): every write checks it in its own
    /// transaction.
    fence: Option<Fence>,
}

struct Inner {
    pool: Pool,
    redacted: String,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("PostgresStore")
            .field("url", &self.inner.redacted)
            .field("connections", &status.size)
            .field("max_connections", &status.max_size)
            .field("fence", &self.fence)
            .finish()
    }
}

fn is_foreign_key_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
}

/// Reads column `idx`, a stored value of the wrong type being [`StateError::Corrupt`].
fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize, what: &'static str) -> Result<T, StateError> {
    row.try_get(idx).map_err(|e| StateError::Corrupt {
        what,
        source: Box::new(e),
    })
}

/// Encodes an unsigned number as PostgreSQL's signed `BIGINT`.
fn int<T>(what: &'static str, value: T) -> Result<i64, StateError>
where
    T: Copy + fmt::Display + TryInto<i64>,
{
    value.try_into().map_err(|_| StateError::OutOfRange {
        what,
        value: value.to_string(),
    })
}

/// Decodes a stored integer into the record's unsigned type.
fn uint<T, S>(what: &'static str, value: S) -> Result<T, StateError>
where
    S: Copy + fmt::Display,
    T: TryFrom<S>,
{
    T::try_from(value).map_err(|_| StateError::OutOfRange {
        what,
        value: value.to_string(),
    })
}

fn name<T>(what: &'static str, text: &str) -> Result<T, StateError>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.parse().map_err(|e| StateError::Corrupt {
        what,
        source: Box::new(e),
    })
}

/// A ttl in whole microseconds (rounded up), refusing zero and absurd values.
fn ttl_micros(ttl: Duration) -> Result<i64, StateError> {
    if ttl.is_zero() {
        return Err(StateError::InvalidArgument {
            what: "lock ttl",
            reason: "it must be longer than zero".into(),
        });
    }
    if ttl > MAX_TTL {
        return Err(StateError::OutOfRange {
            what: "lock ttl",
            value: format!("{ttl:?}"),
        });
    }
    int("lock ttl", ttl.as_micros().max(1))
}

/// Refuses the transaction's write when the newest token issued for the fence's lock is not its
/// own. `FOR SHARE` locks the lock's row until commit: an `acquire_lock` taking the lock over
/// (an update of that row) waits for this write to commit, and a write that waited for an
/// acquire to commit reads its new token. So every write either commits before the takeover or
/// is refused.
async fn check_fence(
    tx: &deadpool_postgres::Transaction<'_>,
    fence: &Fence,
) -> Result<(), StateError> {
    let op = "check fence";
    let stmt = tx
        .prepare_cached("SELECT token FROM locks WHERE key = $1 FOR SHARE")
        .await
        .map_err(pg_err(op))?;
    let newest = match tx
        .query_opt(&stmt, &[&fence.key])
        .await
        .map_err(pg_err(op))?
    {
        Some(row) => uint("lock token", get::<i64>(&row, 0, "lock")?)?,
        None => 0,
    };
    if newest == fence.token {
        Ok(())
    } else {
        Err(fence.refused(newest))
    }
}

const CLUSTER_COLS: &str = "project, name, uid, provider, spec_yaml, spec_json, spec_hash, \
                            generation, status, created_at, updated_at, expires_at";

fn cluster_from_row(row: &Row) -> Result<ClusterRecord, StateError> {
    const W: &str = "cluster";
    Ok(ClusterRecord {
        project: get(row, 0, W)?,
        name: get(row, 1, W)?,
        uid: get(row, 2, W)?,
        provider: get(row, 3, W)?,
        spec_yaml: get(row, 4, W)?,
        spec_json: get(row, 5, W)?,
        spec_hash: get(row, 6, W)?,
        generation: uint("cluster generation", get::<i64>(row, 7, W)?)?,
        status: name("cluster status", get(row, 8, W)?)?,
        created_at: get(row, 9, W)?,
        updated_at: get(row, 10, W)?,
        expires_at: get(row, 11, W)?,
    })
}

const NODE_COLS: &str = "project, cluster, name, pool, idx, provider_id, address, ssh_host, \
                         ssh_port, ssh_user, state, tags, created_at, updated_at";

fn node_from_row(row: &Row) -> Result<NodeRecord, StateError> {
    const W: &str = "node";
    let tags: &str = get(row, 11, W)?;
    Ok(NodeRecord {
        project: get(row, 0, W)?,
        cluster: get(row, 1, W)?,
        name: get(row, 2, W)?,
        pool: get(row, 3, W)?,
        index: uint("node index", get::<i64>(row, 4, W)?)?,
        provider_id: get(row, 5, W)?,
        address: get(row, 6, W)?,
        ssh_host: get(row, 7, W)?,
        ssh_port: get::<Option<i32>>(row, 8, W)?
            .map(|p| uint("node ssh port", p))
            .transpose()?,
        ssh_user: get(row, 9, W)?,
        state: get(row, 10, W)?,
        tags: serde_json_tags(tags)?,
        created_at: get(row, 12, W)?,
        updated_at: get(row, 13, W)?,
    })
}

/// Node tags are stored as a JSON object in text (as in SQLite), read back in key order.
fn serde_json_tags(text: &str) -> Result<std::collections::BTreeMap<String, String>, StateError> {
    serde_json::from_str(text).map_err(|e| StateError::Corrupt {
        what: "node tags",
        source: Box::new(e),
    })
}

const RUN_COLS: &str =
    "id, project, cluster, kind, status, spec_hash, holder, started_at, finished_at, error";

fn run_from_row(row: &Row) -> Result<RunRecord, StateError> {
    const W: &str = "run";
    Ok(RunRecord {
        id: get(row, 0, W)?,
        project: get(row, 1, W)?,
        cluster: get(row, 2, W)?,
        kind: name("run kind", get(row, 3, W)?)?,
        status: name("run status", get(row, 4, W)?)?,
        spec_hash: get(row, 5, W)?,
        holder: get(row, 6, W)?,
        started_at: get(row, 7, W)?,
        finished_at: get(row, 8, W)?,
        error: get(row, 9, W)?,
    })
}

const STEP_COLS: &str =
    "run_id, step_id, node, status, attempts, error, spec_hash, started_at, finished_at";

fn step_from_row(row: &Row) -> Result<StepRecord, StateError> {
    const W: &str = "step";
    Ok(StepRecord {
        run_id: get(row, 0, W)?,
        step_id: get(row, 1, W)?,
        node: get(row, 2, W)?,
        status: name("step status", get(row, 3, W)?)?,
        attempts: uint("step attempts", get::<i64>(row, 4, W)?)?,
        error: get(row, 5, W)?,
        spec_hash: get(row, 6, W)?,
        started_at: get(row, 7, W)?,
        finished_at: get(row, 8, W)?,
    })
}

impl PostgresStore {
    /// The newest schema version this binary knows; a database past it is refused with
    /// [`StateError::SchemaTooNew`].
    pub const SCHEMA_VERSION: u32 = schema::SUPPORTED_VERSION;

    /// Connects to `url` (`postgres://user:password@host:port/db?sslmode=…`) and brings its
    /// schema up to date.
    ///
    /// `sslmode=require`, `verify-ca` or `verify-full` connect over TLS (rustls), the last two
    /// checking the certificate against `sslrootcert=PATH` or the system's roots; any other
    /// mode, or none, connects in plain TCP. The first connection is made here, so an
    /// unreachable server or a refused login is a [`StateError::Connect`] naming `host:port`
    /// (never the password) right away.
    pub async fn connect(url: &str) -> Result<PostgresStore, StateError> {
        let target = url::parse(url)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match target.tls {
            TlsMode::Plain => {
                Manager::from_config(target.config.clone(), tokio_postgres::NoTls, manager_config)
            }
            mode => {
                let config = tls::client_config(mode, target.root_cert.as_deref())?;
                Manager::from_config(
                    target.config.clone(),
                    tokio_postgres_rustls::MakeRustlsConnect::new(config),
                    manager_config,
                )
            }
        };
        // A new connection's TCP connect *and* its startup (TLS, login) are bounded: the driver's
        // connect_timeout covers the first only, and a frozen server accepts connections.
        let connect_timeout = target
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(REQUEST_TIMEOUT);
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(REQUEST_TIMEOUT))
            .build()
            .map_err(|e| StateError::Backend {
                backend: BACKEND,
                op: "create connection pool",
                source: Box::new(e),
            })?;
        let mut client = pool.get().await.map_err(|e| StateError::Connect {
            backend: BACKEND,
            target: target.endpoint.clone(),
            source: match e {
                PoolError::Backend(source) => Box::new(source),
                other => Box::new(other),
            },
        })?;
        tokio::time::timeout(OPEN_TIMEOUT, schema::migrate(&mut client))
            .await
            .map_err(|_| StateError::Connect {
                backend: BACKEND,
                target: target.endpoint.clone(),
                source: format!("no answer while reading the schema within {OPEN_TIMEOUT:?}")
                    .into(),
            })??;
        drop(client);
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                redacted: target.redacted,
            }),
            fence: None,
        })
    }

    /// The URL this store was opened with, its password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.inner.redacted
    }

    async fn client(&self, op: &'static str) -> Result<deadpool_postgres::Client, StateError> {
        self.inner.pool.get().await.map_err(|e| pool_err(op, e))
    }

    /// Runs one call of the store within [`REQUEST_TIMEOUT`], failing as `op` naming the store
    /// when the server does not answer in time.
    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = Result<T, StateError>>,
    ) -> Result<T, StateError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => Err(StateError::Backend {
                backend: BACKEND,
                op,
                source: format!(
                    "{} did not answer within {REQUEST_TIMEOUT:?}: is PostgreSQL running and \
                     reachable?",
                    self.inner.redacted
                )
                .into(),
            }),
        }
    }

    /// One statement, its rows decoded by `decode`.
    async fn query<T>(
        &self,
        op: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        decode: impl Fn(&Row) -> Result<T, StateError>,
    ) -> Result<Vec<T>, StateError> {
        self.timed(op, async {
            let client = self.client(op).await?;
            let stmt = client.prepare_cached(sql).await.map_err(pg_err(op))?;
            let rows = client.query(&stmt, params).await.map_err(pg_err(op))?;
            rows.iter().map(decode).collect()
        })
        .await
    }

    async fn query_opt<T>(
        &self,
        op: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        decode: impl Fn(&Row) -> Result<T, StateError>,
    ) -> Result<Option<T>, StateError> {
        Ok(self
            .query(op, sql, params, decode)
            .await?
            .into_iter()
            .next())
    }

    /// One statement that changes rows; answers how many. On a fenced handle it runs in a
    /// transaction after the fence check ([`check_fence`]).
    async fn execute(
        &self,
        op: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StateError> {
        self.write_statement(op, sql, params)
            .await?
            .map_err(pg_err(op))
    }

    /// [`execute`](Self::execute) without the fence: the lock methods and the world id.
    async fn execute_unfenced(
        &self,
        op: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StateError> {
        self.timed(op, async {
            let client = self.client(op).await?;
            let stmt = client.prepare_cached(sql).await.map_err(pg_err(op))?;
            client.execute(&stmt, params).await.map_err(pg_err(op))
        })
        .await
    }

    /// Runs one writing statement: in autocommit on an unfenced handle, else in a transaction
    /// that checks the fence first. The outer error is a failure around the statement
    /// (connection, fence); the inner one is the statement's own, for the caller to map.
    async fn write_statement(
        &self,
        op: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Result<u64, tokio_postgres::Error>, StateError> {
        self.timed(op, async {
            let mut client = self.client(op).await?;
            let Some(fence) = &self.fence else {
                let stmt = client.prepare_cached(sql).await.map_err(pg_err(op))?;
                return Ok(client.execute(&stmt, params).await);
            };
            let tx = client.transaction().await.map_err(pg_err(op))?;
            check_fence(&tx, fence).await?;
            let stmt = tx.prepare_cached(sql).await.map_err(pg_err(op))?;
            match tx.execute(&stmt, params).await {
                Ok(n) => {
                    tx.commit().await.map_err(pg_err(op))?;
                    Ok(Ok(n))
                }
                Err(e) => Ok(Err(e)),
            }
        })
        .await
    }

    /// Like [`execute`](Self::execute), a foreign-key violation meaning the parent `what` with
    /// `key` does not exist.
    async fn execute_child(
        &self,
        op: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        what: &'static str,
        key: impl FnOnce() -> String,
    ) -> Result<u64, StateError> {
        match self.write_statement(op, sql, params).await? {
            Ok(n) => Ok(n),
            Err(e) if is_foreign_key_violation(&e) => {
                Err(StateError::NotFound { what, key: key() })
            }
            Err(e) => Err(pg_err(op)(e)),
        }
    }
}

#[async_trait]
impl StateStore for PostgresStore {
    fn kind(&self) -> &'static str {
        BACKEND
    }

    async fn schema_version(&self) -> Result<u32, StateError> {
        let op = "read schema version";
        self.timed(op, async {
            let client = self.client(op).await?;
            schema::current_version(&client).await
        })
        .await
    }

    async fn world_id(&self) -> Result<String, StateError> {
        const SELECT: &str = "SELECT value FROM meta WHERE key = 'world'";
        let decode = |row: &Row| get::<String>(row, 0, "world id");
        if let Some(id) = self.query_opt("read world id", SELECT, &[], decode).await? {
            return Ok(id);
        }
        // A concurrent inserter of the same key makes this one wait for its commit and then do
        // nothing; the next statement sees the winner's id.
        let fresh = uuid::Uuid::new_v4().to_string();
        self.execute_unfenced(
            "create world id",
            "INSERT INTO meta (key, value) VALUES ('world', $1) ON CONFLICT (key) DO NOTHING",
            &[&fresh],
        )
        .await?;
        self.query_opt("read world id", SELECT, &[], decode)
            .await?
            .ok_or(StateError::NotFound {
                what: "world id",
                key: "world".into(),
            })
    }

    async fn put_cluster(&self, c: &ClusterRecord) -> Result<(), StateError> {
        // An upsert, not delete-and-insert: deleting would cascade to the cluster's nodes.
        self.execute(
            "write cluster",
            "INSERT INTO clusters (project, name, uid, provider, spec_yaml, spec_json,
                 spec_hash, generation, status, created_at, updated_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (project, name) DO UPDATE SET
                 uid = excluded.uid, provider = excluded.provider,
                 spec_yaml = excluded.spec_yaml, spec_json = excluded.spec_json,
                 spec_hash = excluded.spec_hash, generation = excluded.generation,
                 status = excluded.status, created_at = excluded.created_at,
                 updated_at = excluded.updated_at, expires_at = excluded.expires_at",
            &[
                &c.project,
                &c.name,
                &c.uid,
                &c.provider,
                &c.spec_yaml,
                &c.spec_json,
                &c.spec_hash,
                &int("cluster generation", c.generation)?,
                &c.status.as_str(),
                &c.created_at,
                &c.updated_at,
                &c.expires_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_cluster(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<ClusterRecord>, StateError> {
        self.query_opt(
            "read cluster",
            &format!("SELECT {CLUSTER_COLS} FROM clusters WHERE project = $1 AND name = $2"),
            &[&project, &name],
            cluster_from_row,
        )
        .await
    }

    async fn list_clusters(&self, project: &str) -> Result<Vec<ClusterRecord>, StateError> {
        self.query(
            "list clusters",
            &format!("SELECT {CLUSTER_COLS} FROM clusters WHERE project = $1 ORDER BY name"),
            &[&project],
            cluster_from_row,
        )
        .await
    }

    async fn delete_cluster(&self, project: &str, name: &str) -> Result<(), StateError> {
        // The node rows go with it (ON DELETE CASCADE), in the same statement.
        self.execute(
            "delete cluster",
            "DELETE FROM clusters WHERE project = $1 AND name = $2",
            &[&project, &name],
        )
        .await?;
        Ok(())
    }

    async fn put_node(&self, n: &NodeRecord) -> Result<(), StateError> {
        let tags = serde_json::to_string(&n.tags).map_err(|e| StateError::Encode {
            what: "node tags",
            source: Box::new(e),
        })?;
        let ssh_port = n.ssh_port.map(i32::from);
        self.execute_child(
            "write node",
            "INSERT INTO nodes (project, cluster, name, pool, idx, provider_id, address,
                 ssh_host, ssh_port, ssh_user, state, tags, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (project, cluster, name) DO UPDATE SET
                 pool = excluded.pool, idx = excluded.idx,
                 provider_id = excluded.provider_id, address = excluded.address,
                 ssh_host = excluded.ssh_host, ssh_port = excluded.ssh_port,
                 ssh_user = excluded.ssh_user, state = excluded.state, tags = excluded.tags,
                 created_at = excluded.created_at, updated_at = excluded.updated_at",
            &[
                &n.project,
                &n.cluster,
                &n.name,
                &n.pool,
                &i64::from(n.index),
                &n.provider_id,
                &n.address,
                &n.ssh_host,
                &ssh_port,
                &n.ssh_user,
                &n.state,
                &tags,
                &n.created_at,
                &n.updated_at,
            ],
            "cluster",
            || format!("{}/{}", n.project, n.cluster),
        )
        .await?;
        Ok(())
    }

    async fn list_nodes(
        &self,
        project: &str,
        cluster: &str,
    ) -> Result<Vec<NodeRecord>, StateError> {
        self.query(
            "list nodes",
            &format!(
                "SELECT {NODE_COLS} FROM nodes WHERE project = $1 AND cluster = $2
                 ORDER BY pool, idx, name"
            ),
            &[&project, &cluster],
            node_from_row,
        )
        .await
    }

    async fn delete_node(
        &self,
        project: &str,
        cluster: &str,
        name: &str,
    ) -> Result<(), StateError> {
        self.execute(
            "delete node",
            "DELETE FROM nodes WHERE project = $1 AND cluster = $2 AND name = $3",
            &[&project, &cluster, &name],
        )
        .await?;
        Ok(())
    }

    async fn create_run(&self, r: &RunRecord) -> Result<(), StateError> {
        let inserted = self
            .execute(
                "create run",
                "INSERT INTO runs (id, project, cluster, kind, status, spec_hash, holder,
                     started_at, finished_at, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &r.id,
                    &r.project,
                    &r.cluster,
                    &r.kind.as_str(),
                    &r.status.as_str(),
                    &r.spec_hash,
                    &r.holder,
                    &r.started_at,
                    &r.finished_at,
                    &r.error,
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(StateError::AlreadyExists {
                what: "run",
                key: r.id.clone(),
            });
        }
        Ok(())
    }

    async fn update_run(&self, r: &RunRecord) -> Result<(), StateError> {
        let changed = self
            .execute(
                "update run",
                "UPDATE runs SET project = $2, cluster = $3, kind = $4, status = $5,
                     spec_hash = $6, holder = $7, started_at = $8, finished_at = $9, error = $10
                 WHERE id = $1",
                &[
                    &r.id,
                    &r.project,
                    &r.cluster,
                    &r.kind.as_str(),
                    &r.status.as_str(),
                    &r.spec_hash,
                    &r.holder,
                    &r.started_at,
                    &r.finished_at,
                    &r.error,
                ],
            )
            .await?;
        if changed == 0 {
            return Err(StateError::NotFound {
                what: "run",
                key: r.id.clone(),
            });
        }
        Ok(())
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StateError> {
        self.query_opt(
            "read run",
            &format!("SELECT {RUN_COLS} FROM runs WHERE id = $1"),
            &[&id],
            run_from_row,
        )
        .await
    }

    async fn find_run(&self, id_prefix: &str) -> Result<Option<RunRecord>, StateError> {
        if id_prefix.is_empty() {
            return Err(StateError::InvalidArgument {
                what: "run id prefix",
                reason: "it is empty".into(),
            });
        }
        // One statement, so the exact match, the candidates and their count are one snapshot.
        // The exact id sorts first; the window count is taken before LIMIT.
        let rows = self
            .query(
                "find run",
                &format!(
                    "SELECT {RUN_COLS}, COUNT(*) OVER () FROM runs
                     WHERE starts_with(id, $1)
                     ORDER BY (id = $1) DESC, id LIMIT 2"
                ),
                &[&id_prefix],
                |row| Ok((run_from_row(row)?, get::<i64>(row, 10, "run count")?)),
            )
            .await?;
        let mut rows = rows.into_iter();
        let Some((first, count)) = rows.next() else {
            return Ok(None);
        };
        if first.id == id_prefix || count == 1 {
            return Ok(Some(first));
        }
        Err(StateError::AmbiguousRunId {
            prefix: id_prefix.to_owned(),
            count: uint("run count", count)?,
        })
    }

    async fn list_runs(
        &self,
        project: &str,
        cluster: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(
            "list runs",
            &format!(
                "SELECT {RUN_COLS} FROM runs
                 WHERE project = $1 AND ($2::text IS NULL OR cluster = $2)
                 ORDER BY started_at DESC, id DESC LIMIT $3"
            ),
            &[&project, &cluster, &limit],
            run_from_row,
        )
        .await
    }

    async fn put_step(&self, s: &StepRecord) -> Result<(), StateError> {
        self.execute_child(
            "write step",
            "INSERT INTO steps (run_id, step_id, node, status, attempts, error, spec_hash,
                 started_at, finished_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (run_id, step_id) DO UPDATE SET
                 node = excluded.node, status = excluded.status,
                 attempts = excluded.attempts, error = excluded.error,
                 spec_hash = excluded.spec_hash, started_at = excluded.started_at,
                 finished_at = excluded.finished_at",
            &[
                &s.run_id,
                &s.step_id,
                &s.node,
                &s.status.as_str(),
                &i64::from(s.attempts),
                &s.error,
                &s.spec_hash,
                &s.started_at,
                &s.finished_at,
            ],
            "run",
            || s.run_id.clone(),
        )
        .await?;
        Ok(())
    }

    async fn list_steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StateError> {
        self.query(
            "list steps",
            &format!(
                "SELECT {STEP_COLS} FROM steps WHERE run_id = $1 ORDER BY started_at, step_id"
            ),
            &[&run_id],
            step_from_row,
        )
        .await
    }

    async fn done_steps(
        &self,
        project: &str,
        cluster: &str,
        spec_hash: &str,
    ) -> Result<BTreeSet<String>, StateError> {
        let ids = self
            .query(
                "list done steps",
                "SELECT DISTINCT s.step_id FROM steps s JOIN runs r ON r.id = s.run_id
                 WHERE r.project = $1 AND r.cluster = $2 AND s.spec_hash = $3
                   AND s.status = 'done'",
                &[&project, &cluster, &spec_hash],
                |row| get::<String>(row, 0, "step"),
            )
            .await?;
        Ok(ids.into_iter().collect())
    }

    async fn append_event(
        &self,
        run_id: &str,
        at: OffsetDateTime,
        json: &str,
    ) -> Result<u64, StateError> {
        let op = "append event";
        self.timed(op, async {
            let mut client = self.client(op).await?;
            let tx = client.transaction().await.map_err(pg_err(op))?;
            if let Some(fence) = &self.fence {
                check_fence(&tx, fence).await?;
            }
            // The increment locks the run's row until commit: a concurrent appender waits, then
            // increments what this one committed. A failure rolls both statements back, so no
            // number is ever skipped.
            let bump = tx
                .prepare_cached(
                    "UPDATE runs SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq",
                )
                .await
                .map_err(pg_err("number event"))?;
            let Some(row) = tx
                .query_opt(&bump, &[&run_id])
                .await
                .map_err(pg_err("number event"))?
            else {
                return Err(StateError::NotFound {
                    what: "run",
                    key: run_id.to_owned(),
                });
            };
            let seq: i64 = get(&row, 0, "event seq")?;
            let insert = tx
                .prepare_cached(
                    "INSERT INTO events (run_id, seq, at, json) VALUES ($1, $2, $3, $4)",
                )
                .await
                .map_err(pg_err(op))?;
            tx.execute(&insert, &[&run_id, &seq, &at, &json])
                .await
                .map_err(pg_err(op))?;
            tx.commit().await.map_err(pg_err(op))?;
            uint("event seq", seq)
        })
        .await
    }

    async fn list_events(
        &self,
        run_id: &str,
        after_seq: u64,
    ) -> Result<Vec<EventRecord>, StateError> {
        // Nothing is numbered above i64::MAX, so clamping keeps the meaning.
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        self.query(
            "list events",
            "SELECT run_id, seq, at, json FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
            &[&run_id, &after],
            |row| {
                Ok(EventRecord {
                    run_id: get(row, 0, "event")?,
                    seq: uint("event seq", get::<i64>(row, 1, "event")?)?,
                    at: get(row, 2, "event")?,
                    json: get(row, 3, "event")?,
                })
            },
        )
        .await
    }

    async fn acquire_lock(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Acquire, StateError> {
        let micros = ttl_micros(ttl)?;
        // Taking a free or expired key and bumping its token is one statement: the upsert locks
        // the key's row, so of two racing acquirers the second sees the first's live lease and
        // its WHERE leaves the row alone.
        const TAKE: &str = "INSERT INTO locks AS l (key, holder, token, expires_at)
             VALUES ($1, $2, 1, clock_timestamp() + $3::bigint * interval '1 microsecond')
             ON CONFLICT (key) DO UPDATE SET
                 holder = excluded.holder, token = l.token + 1, expires_at = excluded.expires_at
             WHERE l.expires_at <= clock_timestamp()
             RETURNING token, expires_at";
        const HELD: &str = "SELECT holder, expires_at FROM locks
             WHERE key = $1 AND expires_at > clock_timestamp()";
        // The lease seen as live may expire or be released between the two statements; then
        // taking it is tried again.
        for _ in 0..5 {
            let taken = self
                .query_opt("acquire lock", TAKE, &[&key, &holder, &micros], |row| {
                    Ok((get::<i64>(row, 0, "lock")?, get(row, 1, "lock")?))
                })
                .await?;
            if let Some((token, expires_at)) = taken {
                return Ok(Acquire::Acquired(Lease {
                    key: key.to_owned(),
                    holder: holder.to_owned(),
                    token: uint("lock token", token)?,
                    expires_at,
                }));
            }
            let held = self
                .query_opt("read lock", HELD, &[&key], |row| {
                    Ok(Acquire::Held {
                        holder: get(row, 0, "lock")?,
                        expires_at: get(row, 1, "lock")?,
                    })
                })
                .await?;
            if let Some(held) = held {
                return Ok(held);
            }
        }
        Err(StateError::Backend {
            backend: BACKEND,
            op: "acquire lock",
            source: "the lease kept changing hands; try again".into(),
        })
    }

    async fn renew_lock(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StateError> {
        let micros = ttl_micros(ttl)?;
        let token = int("lock token", lease.token)?;
        let renewed = self
            .query_opt(
                "renew lock",
                "UPDATE locks SET expires_at = clock_timestamp() + $4::bigint * interval '1 microsecond'
                 WHERE key = $1 AND token = $2 AND holder = $3
                   AND expires_at > clock_timestamp()
                 RETURNING expires_at",
                &[&lease.key, &token, &lease.holder, &micros],
                |row| get::<OffsetDateTime>(row, 0, "lock"),
            )
            .await?;
        match renewed {
            Some(expires_at) => Ok(Lease {
                expires_at,
                ..lease.clone()
            }),
            None => Err(StateError::LockLost {
                key: lease.key.clone(),
                token: lease.token,
            }),
        }
    }

    async fn release_lock(&self, lease: &Lease) -> Result<(), StateError> {
        let token = int("lock token", lease.token)?;
        // Keyed by token: a lease that was lost cannot release its successor. The row stays
        // (expired) so the next token is still larger.
        self.execute_unfenced(
            "release lock",
            "UPDATE locks SET expires_at = 'epoch' WHERE key = $1 AND token = $2",
            &[&lease.key, &token],
        )
        .await?;
        Ok(())
    }

    async fn get_lock(&self, key: &str) -> Result<Option<Lease>, StateError> {
        self.query_opt(
            "read lock",
            "SELECT holder, token, expires_at FROM locks
             WHERE key = $1 AND expires_at > clock_timestamp()",
            &[&key],
            |row| {
                Ok(Lease {
                    key: key.to_owned(),
                    holder: get(row, 0, "lock")?,
                    token: uint("lock token", get::<i64>(row, 1, "lock")?)?,
                    expires_at: get(row, 2, "lock")?,
                })
            },
        )
        .await
    }

    async fn get_inventory(
        &self,
        project: &str,
        scope: &str,
    ) -> Result<Option<InventoryRecord>, StateError> {
        // One statement: the entry and the invalidation time are seen together.
        self.query_opt(
            "read inventory",
            "SELECT i.fetched_at, i.payload FROM inventory i
             LEFT JOIN inventory_invalidated v ON v.project = i.project
             WHERE i.project = $1 AND i.scope = $2 AND (v.at IS NULL OR i.fetched_at > v.at)",
            &[&project, &scope],
            |row| {
                Ok(InventoryRecord {
                    project: project.to_owned(),
                    scope: scope.to_owned(),
                    fetched_at: get(row, 0, "inventory")?,
                    payload: get(row, 1, "inventory")?,
                })
            },
        )
        .await
    }

    async fn put_inventory(&self, r: &InventoryRecord) -> Result<bool, StateError> {
        let op = "write inventory";
        self.timed(op, async {
            let mut client = self.client(op).await?;
            let tx = client.transaction().await.map_err(pg_err(op))?;
            if let Some(fence) = &self.fence {
                check_fence(&tx, fence).await?;
            }
            // Serialized with invalidate_inventory of the same project: without it, an
            // invalidation committing between this statement's snapshot and its insert would not
            // see (nor delete) the listing it makes stale.
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&INVENTORY_LOCK, &r.project],
            )
            .await
            .map_err(pg_err(op))?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO inventory AS i (project, scope, fetched_at, payload)
                     SELECT $1::text, $2::text, $3::timestamptz, $4::text
                     WHERE NOT EXISTS (SELECT 1 FROM inventory_invalidated
                                       WHERE project = $1 AND at >= $3)
                     ON CONFLICT (project, scope) DO UPDATE SET
                         fetched_at = excluded.fetched_at, payload = excluded.payload
                     WHERE excluded.fetched_at > i.fetched_at",
                )
                .await
                .map_err(pg_err(op))?;
            let changed = tx
                .execute(&stmt, &[&r.project, &r.scope, &r.fetched_at, &r.payload])
                .await
                .map_err(pg_err(op))?;
            tx.commit().await.map_err(pg_err(op))?;
            Ok(changed > 0)
        })
        .await
    }

    async fn invalidate_inventory(
        &self,
        project: &str,
        at: OffsetDateTime,
    ) -> Result<(), StateError> {
        let op = "invalidate inventory";
        self.timed(op, async {
            let mut client = self.client(op).await?;
            let tx = client.transaction().await.map_err(pg_err(op))?;
            if let Some(fence) = &self.fence {
                check_fence(&tx, fence).await?;
            }
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&INVENTORY_LOCK, &project],
            )
            .await
            .map_err(pg_err(op))?;
            tx.execute("DELETE FROM inventory WHERE project = $1", &[&project])
                .await
                .map_err(pg_err(op))?;
            // The remembered time only moves forward.
            tx.execute(
                "INSERT INTO inventory_invalidated AS v (project, at) VALUES ($1, $2)
                 ON CONFLICT (project) DO UPDATE SET at = excluded.at WHERE excluded.at > v.at",
                &[&project, &at],
            )
            .await
            .map_err(pg_err(op))?;
            tx.commit().await.map_err(pg_err(op))?;
            Ok(())
        })
        .await
    }

    // --- Fencing (issue 12, part 4) ---

    fn fenced(&self, fence: Fence) -> Arc<dyn StateStore> {
        Arc::new(PostgresStore {
            inner: Arc::clone(&self.inner),
            fence: Some(fence),
        })
    }

    fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }
    // --- Enumeration and identity for `gantry state migrate` (issue 12, part 6) ---------------

    async fn list_projects(&self) -> Result<Vec<String>, StateError> {
        // The key columns are "C"-collated, so this orders by bytes like every store.
        self.query(
            "list projects",
            "SELECT project FROM clusters UNION SELECT project FROM runs
             UNION SELECT project FROM inventory ORDER BY 1",
            &[],
            |row| get::<String>(row, 0, "project"),
        )
        .await
    }

    async fn list_all_runs(&self, project: &str) -> Result<Vec<RunRecord>, StateError> {
        self.query(
            "list runs",
            &format!("SELECT {RUN_COLS} FROM runs WHERE project = $1 ORDER BY id"),
            &[&project],
            run_from_row,
        )
        .await
    }

    async fn list_inventory(&self, project: &str) -> Result<Vec<InventoryRecord>, StateError> {
        self.query(
            "list inventory",
            "SELECT i.scope, i.fetched_at, i.payload FROM inventory i
             LEFT JOIN inventory_invalidated v ON v.project = i.project
             WHERE i.project = $1 AND (v.at IS NULL OR i.fetched_at > v.at)
             ORDER BY i.scope",
            &[&project],
            |row| {
                Ok(InventoryRecord {
                    project: project.to_owned(),
                    scope: get(row, 0, "inventory")?,
                    fetched_at: get(row, 1, "inventory")?,
                    payload: get(row, 2, "inventory")?,
                })
            },
        )
        .await
    }

    async fn list_locks(&self) -> Result<Vec<Lease>, StateError> {
        self.query(
            "list locks",
            "SELECT key, holder, token, expires_at FROM locks
             WHERE expires_at > clock_timestamp() ORDER BY key",
            &[],
            |row| {
                Ok(Lease {
                    key: get(row, 0, "lock")?,
                    holder: get(row, 1, "lock")?,
                    token: uint("lock token", get::<i64>(row, 2, "lock")?)?,
                    expires_at: get(row, 3, "lock")?,
                })
            },
        )
        .await
    }

    async fn put_event(&self, e: &EventRecord) -> Result<(), StateError> {
        if e.seq == 0 {
            return Err(StateError::InvalidArgument {
                what: "event seq",
                reason: "event numbers start at 1".into(),
            });
        }
        let seq = int("event seq", e.seq)?;
        let op = "write event";
        let mut client = self.client(op).await?;
        let tx = client.transaction().await.map_err(pg_err(op))?;
        // Raising the run's counter locks its row, as append_event does, so a concurrent append
        // numbers after this event.
        let bump = tx
            .prepare_cached(
                "UPDATE runs SET last_seq = GREATEST(last_seq, $2) WHERE id = $1 RETURNING id",
            )
            .await
            .map_err(pg_err(op))?;
        if tx
            .query_opt(&bump, &[&e.run_id, &seq])
            .await
            .map_err(pg_err(op))?
            .is_none()
        {
            return Err(StateError::NotFound {
                what: "run",
                key: e.run_id.clone(),
            });
        }
        let insert = tx
            .prepare_cached(
                "INSERT INTO events (run_id, seq, at, json) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (run_id, seq) DO UPDATE SET at = excluded.at, json = excluded.json",
            )
            .await
            .map_err(pg_err(op))?;
        tx.execute(&insert, &[&e.run_id, &seq, &e.at, &e.json])
            .await
            .map_err(pg_err(op))?;
        tx.commit().await.map_err(pg_err(op))?;
        Ok(())
    }

    async fn adopt_world_id(&self, id: &str) -> Result<String, StateError> {
        if id.trim().is_empty() {
            return Err(StateError::InvalidArgument {
                what: "world id",
                reason: "it is empty".into(),
            });
        }
        // A concurrent creator makes this insert wait for its commit and then do nothing.
        self.execute(
            "adopt world id",
            "INSERT INTO meta (key, value) VALUES ('world', $1) ON CONFLICT (key) DO NOTHING",
            &[&id],
        )
        .await?;
        self.query_opt(
            "read world id",
            "SELECT value FROM meta WHERE key = 'world'",
            &[],
            |row| get::<String>(row, 0, "world id"),
        )
        .await?
        .ok_or(StateError::NotFound {
            what: "world id",
            key: "world".into(),
        })
    }

    // ---- Secrets (issue 12, part 5) ----

    async fn put_secret(&self, name: &str, envelope: &str) -> Result<(), StateError> {
        self.execute(
            "write secret",
            "INSERT INTO secrets (name, envelope, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (name) DO UPDATE SET
                 envelope = excluded.envelope, updated_at = excluded.updated_at",
            &[&name, &envelope],
        )
        .await?;
        Ok(())
    }

    async fn create_secret(&self, name: &str, envelope: &str) -> Result<bool, StateError> {
        // A concurrent inserter of the same name makes this one wait for its commit, then
        // insert nothing: exactly one of them counts a row.
        let inserted = self
            .execute(
                "create secret",
                "INSERT INTO secrets (name, envelope, updated_at) VALUES ($1, $2, now())
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &envelope],
            )
            .await?;
        Ok(inserted > 0)
    }

    async fn get_secret(&self, name: &str) -> Result<Option<String>, StateError> {
        self.query_opt(
            "read secret",
            "SELECT envelope FROM secrets WHERE name = $1",
            &[&name],
            |row| get::<String>(row, 0, "secret envelope"),
        )
        .await
    }

    async fn list_secrets(&self, prefix: &str) -> Result<Vec<(String, String)>, StateError> {
        // `left(...)` rather than LIKE: names may hold `%` and `_`. The column is "C"-collated,
        // so ORDER BY is byte order.
        self.query(
            "list secrets",
            "SELECT name, envelope FROM secrets
             WHERE left(name, char_length($1::text)) = $1::text ORDER BY name",
            &[&prefix],
            |row| {
                Ok((
                    get::<String>(row, 0, "secret name")?,
                    get::<String>(row, 1, "secret envelope")?,
                ))
            },
        )
        .await
    }

    async fn delete_secret(&self, name: &str) -> Result<(), StateError> {
        self.execute(
            "delete secret",
            "DELETE FROM secrets WHERE name = $1",
            &[&name],
        )
        .await?;
        Ok(())
    }
}
