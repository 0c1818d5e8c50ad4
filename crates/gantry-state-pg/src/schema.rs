//! The PostgreSQL schema, as an ordered list of embedded migrations.
//!
//! Versions follow the SQLite store's (1: records, events and locks; 2: the inventory cache;
//! 3: store-wide facts; 4: secrets), so `schema_version` means the same on both. The database records what it
//! has in `schema_version`. Connecting applies the missing migrations in one transaction that
//! first takes a transaction-level advisory lock ([`MIGRATION_LOCK`]): two processes migrating a
//! fresh database at once serialize on it, and the second finds the work done. DDL is
//! transactional in PostgreSQL, so a failed migration leaves the previous version intact. A
//! database past what this binary knows was written by a newer gantry and is refused.
//!
//! Rules for editing: never change a migration that has shipped; append a new one. Text columns
//! that are keys or sort orders use the `"C"` collation, so ordering is by bytes as in SQLite,
//! whatever the database's locale.

use deadpool_postgres::GenericClient;
use gantry_state::StateError;

use crate::error::pg_err;

/// Migration `i` (0-based) brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The newest schema version this binary knows.
pub(crate) const SUPPORTED_VERSION: u32 = MIGRATIONS.len() as u32;

/// The advisory lock key that serializes migrations ("gantry" in ASCII, then 1). Advisory locks
/// are per database, so gantry stores in different databases of one server do not contend.
pub(crate) const MIGRATION_LOCK: i64 = 0x6761_6e74_7279_0001;

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL
);";

const V1: &str = r#"
CREATE TABLE clusters (
    project    TEXT COLLATE "C" NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    uid        TEXT NOT NULL,
    provider   TEXT NOT NULL,
    spec_yaml  TEXT NOT NULL,
    spec_json  TEXT NOT NULL,
    spec_hash  TEXT NOT NULL,
    generation BIGINT NOT NULL,
    status     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project, name)
);

CREATE TABLE nodes (
    project     TEXT COLLATE "C" NOT NULL,
    cluster     TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    pool        TEXT COLLATE "C" NOT NULL,
    idx         BIGINT NOT NULL,
    provider_id TEXT NOT NULL,
    address     TEXT,
    ssh_host    TEXT,
    ssh_port    INTEGER,
    ssh_user    TEXT,
    state       TEXT NOT NULL,
    tags        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project, cluster, name),
    FOREIGN KEY (project, cluster) REFERENCES clusters (project, name) ON DELETE CASCADE
);

-- Runs outlive their cluster (history), so they do not reference it. `last_seq` numbers the
-- run's events: appending one increments it in the same transaction, and the row lock that
-- the increment takes is what keeps concurrent appenders from sharing or skipping a number.
CREATE TABLE runs (
    id          TEXT COLLATE "C" PRIMARY KEY,
    project     TEXT COLLATE "C" NOT NULL,
    cluster     TEXT COLLATE "C" NOT NULL,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL,
    spec_hash   TEXT,
    holder      TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    error       TEXT,
    last_seq    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_project ON runs (project, started_at);
CREATE INDEX runs_by_cluster ON runs (project, cluster, started_at);

CREATE TABLE steps (
    run_id      TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id     TEXT COLLATE "C" NOT NULL,
    node        TEXT,
    status      TEXT NOT NULL,
    attempts    BIGINT NOT NULL,
    error       TEXT,
    spec_hash   TEXT,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    PRIMARY KEY (run_id, step_id)
);
CREATE INDEX steps_by_hash ON steps (spec_hash, status);

CREATE TABLE events (
    run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq    BIGINT NOT NULL,
    at     TIMESTAMPTZ NOT NULL,
    json   TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- One row per key ever locked: a released or expired lease keeps its row so the next token
-- is still larger than every token issued before.
CREATE TABLE locks (
    key        TEXT COLLATE "C" PRIMARY KEY,
    holder     TEXT NOT NULL,
    token      BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
"#;

/// The inventory cache; `inventory_invalidated` keeps, per project, the time of the last
/// invalidation (see `StateStore::put_inventory`).
const V2: &str = r#"
CREATE TABLE inventory (
    project    TEXT COLLATE "C" NOT NULL,
    scope      TEXT COLLATE "C" NOT NULL,
    fetched_at TIMESTAMPTZ NOT NULL,
    payload    TEXT NOT NULL,
    PRIMARY KEY (project, scope)
);

CREATE TABLE inventory_invalidated (
    project TEXT COLLATE "C" PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL
);
"#;

/// Store-wide facts, one row per key (`world`: see `StateStore::world_id`).
const V3: &str = r#"
CREATE TABLE meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);
"#;

/// Secrets, as envelopes sealed by `gantry-secrets` (opaque text to the store), keyed by name.
const V4: &str = r#"
CREATE TABLE secrets (
    name       TEXT COLLATE "C" PRIMARY KEY,
    envelope   TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"#;

/// The version recorded in the database (0 for a database gantry has never migrated).
pub(crate) async fn current_version(client: &impl GenericClient) -> Result<u32, StateError> {
    let op = "read schema version";
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(pg_err(op))?
        .try_get(0)
        .map_err(pg_err(op))?;
    if !exists {
        return Ok(0);
    }
    let version: Option<i32> = client
        .query_one("SELECT MAX(version) FROM schema_version", &[])
        .await
        .map_err(pg_err(op))?
        .try_get(0)
        .map_err(pg_err(op))?;
    match version {
        None => Ok(0),
        Some(v) => u32::try_from(v).map_err(|_| StateError::OutOfRange {
            what: "schema version",
            value: v.to_string(),
        }),
    }
}

/// Brings the database to [`SUPPORTED_VERSION`], or refuses a newer one.
pub(crate) async fn migrate(client: &mut deadpool_postgres::Client) -> Result<u32, StateError> {
    // Fast path without the lock: the usual case is an up-to-date database.
    let found = current_version(&*client).await?;
    check_not_newer(found)?;
    if found == SUPPORTED_VERSION {
        return Ok(found);
    }
    let op = "migrate schema";
    let tx = client.transaction().await.map_err(pg_err(op))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err("take the schema migration lock"))?;
    tx.batch_execute(VERSION_TABLE)
        .await
        .map_err(pg_err("create schema_version table"))?;
    // Another process may have migrated between the check above and taking the lock.
    let found = current_version(&tx).await?;
    check_not_newer(found)?;
    for (version, sql) in (1i32..).zip(MIGRATIONS).skip(found as usize) {
        tx.batch_execute(sql).await.map_err(pg_err(op))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, clock_timestamp())",
            &[&version],
        )
        .await
        .map_err(pg_err(op))?;
    }
    tx.commit().await.map_err(pg_err(op))?;
    Ok(SUPPORTED_VERSION)
}

fn check_not_newer(found: u32) -> Result<(), StateError> {
    if found > SUPPORTED_VERSION {
        return Err(StateError::SchemaTooNew {
            found,
            supported: SUPPORTED_VERSION,
        });
    }
    Ok(())
}
