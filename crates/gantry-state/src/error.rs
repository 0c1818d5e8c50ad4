//! The one error type of the crate.
//!
//! Every [`StateStore`](crate::StateStore) method returns [`StateError`], whatever the backend, so
//! callers (the engine, the CLI's exit-code mapping) can branch on what went wrong — a lock that
//! was lost, an ambiguous run id, a database written by a newer gantry — without knowing which
//! store they talk to. Backend failures keep their cause as a `#[source]`.

use std::path::PathBuf;

/// Boxed cause for backends that live outside this crate (see [`StateError::Backend`]).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while reading or writing gantry state.
///
/// Messages are lowercase fragments that read well after "failed to".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The state file (or its directory) could not be created or given its permissions.
    #[error("prepare state file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// SQLite could not open the database file.
    #[error("open state database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The database was written by a newer gantry whose schema this binary does not know.
    #[error(
        "use state database with schema version {found}: this gantry knows versions up to \
         {supported}; upgrade gantry"
    )]
    SchemaTooNew { found: u32, supported: u32 },

    /// Applying an embedded migration failed; the database is left at the previous version.
    #[error("migrate state database to schema version {version}")]
    Migrate {
        version: u32,
        #[source]
        source: rusqlite::Error,
    },

    /// Another process held the database past the busy timeout.
    #[error("{op}: state database is busy (another gantry process is writing to it)")]
    Busy {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// Any other SQLite failure, named by the operation that hit it.
    #[error("{op} in sqlite state database")]
    Sqlite {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// A networked store (PostgreSQL, etcd, …) could not be reached or refused to log in.
    /// `target` names where it was tried (`host:port`), never a password.
    #[error("connect to {backend} state store at {target}")]
    Connect {
        backend: &'static str,
        target: String,
        #[source]
        source: BoxError,
    },

    /// Failure of a backend implemented outside this crate (PostgreSQL, etcd, …).
    #[error("{op} in {backend} state store")]
    Backend {
        backend: &'static str,
        op: &'static str,
        #[source]
        source: BoxError,
    },

    /// An etcd call failed (unreachable endpoints, a timeout, a refused request). Kept apart
    /// from [`StateError::Backend`] so the message names the endpoints the store talks to, which
    /// is what a user needs to check first; etcd URLs carry no password.
    #[error("{op} in etcd state store at {endpoints}")]
    Etcd {
        op: &'static str,
        /// The endpoints as configured, comma-separated (`http://127.0.0.1:2379,...`).
        endpoints: String,
        #[source]
        source: BoxError,
    },

    /// The record a write depends on does not exist (e.g. a node of an unknown cluster).
    #[error("find {what} {key}")]
    NotFound { what: &'static str, key: String },

    /// A create for a key that is already taken.
    #[error("create {what} {key}: it already exists")]
    AlreadyExists { what: &'static str, key: String },

    /// A run id prefix matched more than one run.
    #[error("resolve run id prefix {prefix:?}: it matches {count} runs; give more characters")]
    AmbiguousRunId { prefix: String, count: u64 },

    /// The lease's fencing token no longer holds the lock (it expired, or someone else took it).
    #[error("keep lock {key}: lease with token {token} was lost")]
    LockLost { key: String, token: u64 },

    /// A caller passed a value the store cannot accept.
    #[error("accept {what}: {reason}")]
    InvalidArgument { what: &'static str, reason: String },

    /// A number does not fit the store's representation (or a stored one does not fit Rust's).
    #[error("convert {what}: value {value} is out of range")]
    OutOfRange { what: &'static str, value: String },

    /// A stored value could not be decoded: the database holds data gantry did not write.
    #[error("decode stored {what}")]
    Corrupt {
        what: &'static str,
        #[source]
        source: BoxError,
    },

    /// A value could not be encoded for storage.
    #[error("encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: BoxError,
    },

    /// `gantry state migrate` into a store that already holds records, without `--force`.
    #[error(
        "copy into the target store: it already holds records of {count} project(s) ({first} …)"
    )]
    MigrateTargetNotEmpty { count: usize, first: String },

    /// `gantry state migrate` into a store that is already another gantry world, without
    /// `--force`.
    #[error(
        "copy into the target store: it is gantry world {target_world}, the source is world \
         {source_world}; \
         from the target, what the source made would be another world's (shown, never touched)"
    )]
    MigrateWorldMismatch {
        source_world: String,
        target_world: String,
    },

    /// A live lock in the source or the target store: a run is using it, so a copy would
    /// not be one moment's state.
    #[error(
        "copy {side} store: lock {key} is held by {holder} (and {more} other(s)); a run is \
         using the store"
    )]
    MigrateLocked {
        side: &'static str,
        key: String,
        holder: String,
        more: usize,
    },

    /// The source's records changed while `gantry state migrate` copied them.
    #[error(
        "copy the source store: {what} changed while they were being copied (another gantry \
         is using it)"
    )]
    MigrateSourceChanged { what: &'static str },

    /// The blocking worker running a database call panicked or was cancelled.
    #[error("run state database call")]
    Worker {
        #[source]
        source: tokio::task::JoinError,
    },

    /// A write through a fenced handle ([`StateStore::fenced`](crate::StateStore::fenced))
    /// whose lock was taken over since: a newer token was issued for `key` (`newest` is 0 when
    /// the store has no token for it at all). Nothing of the write was stored.
    #[error(
        "write under the cluster lock {key}: the lock was taken over (our token {token}, newest \
         {newest}): this write was refused"
    )]
    Fenced {
        key: String,
        token: u64,
        newest: u64,
    },
}

impl StateError {
    /// Wraps a SQLite error, telling "database busy" apart from other failures.
    pub(crate) fn sqlite(op: &'static str, source: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StateError::Busy { op, source }
            }
            _ => StateError::Sqlite { op, source },
        }
    }

    /// Whether retrying the same call later may succeed (contention, not a logic error).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StateError::Busy { .. })
    }
}
