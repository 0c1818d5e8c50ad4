//! The SQLite schema, as an ordered list of embedded migrations.
//!
//! The binary carries every migration; a database records which ones it has in
//! `schema_version`. Opening applies the missing ones in one `BEGIN IMMEDIATE` transaction, so
//! two gantry processes opening a fresh file at once cannot both migrate it, and a failed
//! migration leaves the previous version intact. A database already past what this binary knows
//! was written by a newer gantry and is refused rather than misread.
//!
//! Rules for editing: never change a migration that has shipped; append a new one. Tables are
//! `STRICT` so a wrong type is an error at write time, not a surprise at read time.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use time::OffsetDateTime;

use super::codec;
use crate::error::StateError;

/// Migration `i` (0-based) brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The newest schema version this binary knows.
pub(crate) const SUPPORTED_VERSION: u32 = MIGRATIONS.len() as u32;

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL
) STRICT;";

const V1: &str = "
CREATE TABLE clusters (
    project    TEXT NOT NULL,
    name       TEXT NOT NULL,
    uid        TEXT NOT NULL,
    provider   TEXT NOT NULL,
    spec_yaml  TEXT NOT NULL,
    spec_json  TEXT NOT NULL,
    spec_hash  TEXT NOT NULL,
    generation INTEGER NOT NULL,
    status     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (project, name)
) STRICT;

CREATE TABLE nodes (
    project     TEXT NOT NULL,
    cluster     TEXT NOT NULL,
    name        TEXT NOT NULL,
    pool        TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    provider_id TEXT NOT NULL,
    address     TEXT,
    ssh_host    TEXT,
    ssh_port    INTEGER,
    ssh_user    TEXT,
    state       TEXT NOT NULL,
    tags        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (project, cluster, name),
    FOREIGN KEY (project, cluster) REFERENCES clusters (project, name) ON DELETE CASCADE
) STRICT;

-- Runs outlive their cluster (history), so they do not reference it.
CREATE TABLE runs (
    id          TEXT PRIMARY KEY,
    project     TEXT NOT NULL,
    cluster     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL,
    spec_hash   TEXT,
    holder      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    error       TEXT
) STRICT;
CREATE INDEX runs_by_project ON runs (project, started_at);
CREATE INDEX runs_by_cluster ON runs (project, cluster, started_at);

CREATE TABLE steps (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id     TEXT NOT NULL,
    node        TEXT,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    error       TEXT,
    spec_hash   TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (run_id, step_id)
) STRICT;
CREATE INDEX steps_by_hash ON steps (spec_hash, status);

CREATE TABLE events (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    at     TEXT NOT NULL,
    json   TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;

-- One row per key ever locked: a released or expired lease keeps its row so the next token
-- is still larger than every token issued before.
CREATE TABLE locks (
    key        TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    token      INTEGER NOT NULL,
    expires_at TEXT NOT NULL
) STRICT;
";

/// The inventory cache (`gantry ls` without a provider round trip). `inventory_invalidated`
/// keeps, per project, the time of the last invalidation: a listing that started before it is
/// refused, so a slow `ls` racing a mutating run cannot store what it saw before the change.
const V2: &str = "
CREATE TABLE inventory (
    project    TEXT NOT NULL,
    scope      TEXT NOT NULL,
    fetched_at TEXT NOT NULL,
    payload    TEXT NOT NULL,
    PRIMARY KEY (project, scope)
) STRICT;

CREATE TABLE inventory_invalidated (
    project TEXT PRIMARY KEY,
    at      TEXT NOT NULL
) STRICT;
";

/// Store-wide facts, one row per key: `world` is the id of the gantry world this store is
/// (see `StateStore::world_id`), created on first use rather than here so that every store
/// (including ones without SQL) makes it the same way.
const V3: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
";

/// Secrets, as envelopes sealed by `gantry-secrets` (never plaintext: the store cannot tell
/// one from the other and does not try), keyed by a `/`-separated name.
const V4: &str = "
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    envelope   TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
";

/// The version recorded in the database (0 for a database gantry has never migrated).
pub(crate) fn current_version(conn: &Connection) -> Result<u32, StateError> {
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master
                            WHERE type = 'table' AND name = 'schema_version')",
            [],
            |row| row.get(0),
        )
        .map_err(|e| StateError::sqlite("read schema version", e))?;
    if !exists {
        return Ok(0);
    }
    let version: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
            row.get(0)
        })
        .optional()
        .map_err(|e| StateError::sqlite("read schema version", e))?
        .flatten();
    version.map_or(Ok(0), |v| codec::uint("schema version", v))
}

/// Brings the database to [`SUPPORTED_VERSION`], or refuses a newer one.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, StateError> {
    // Fast path without taking the write lock: the usual case is an up-to-date database.
    let found = current_version(conn)?;
    check_not_newer(found)?;
    if found == SUPPORTED_VERSION {
        return Ok(found);
    }

    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| StateError::sqlite("begin schema migration", e))?;
    tx.execute_batch(VERSION_TABLE)
        .map_err(|e| StateError::sqlite("create schema_version table", e))?;
    // Another process may have migrated between the check above and taking the lock.
    let found = current_version(&tx)?;
    check_not_newer(found)?;
    let now = codec::ts(OffsetDateTime::now_utc())?;
    for (version, sql) in (1u32..).zip(MIGRATIONS).skip(found as usize) {
        let migrate_err = |source| StateError::Migrate { version, source };
        tx.execute_batch(sql).map_err(migrate_err)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            (version, &now),
        )
        .map_err(migrate_err)?;
    }
    tx.commit().map_err(|source| StateError::Migrate {
        version: SUPPORTED_VERSION,
        source,
    })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A database left at version 1 by an older gantry gets the inventory and meta tables and
    /// keeps its data.
    #[test]
    fn version_1_database_migrates_and_keeps_its_data() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(VERSION_TABLE).unwrap();
        conn.execute_batch(V1).unwrap();
        conn.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (1, 'then')",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO locks (key, holder, token, expires_at) VALUES ('k', 'h', 7, 'x')",
            [],
        )
        .unwrap();
        assert_eq!(current_version(&conn).unwrap(), 1);

        assert_eq!(migrate(&mut conn).unwrap(), SUPPORTED_VERSION);
        assert_eq!(current_version(&conn).unwrap(), SUPPORTED_VERSION);
        let token: i64 = conn
            .query_row("SELECT token FROM locks WHERE key = 'k'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(token, 7, "migrating must keep existing rows");
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'
                 AND name IN ('inventory', 'inventory_invalidated')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 2);
        let meta: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(meta, 1, "version 3 adds the meta table");
        // Migrating again is a no-op.
        assert_eq!(migrate(&mut conn).unwrap(), SUPPORTED_VERSION);
    }
}
