//! gantry's durable state: clusters, nodes, runs, checkpoints, events, locks and the inventory
//! cache.
//!
//! Everything above this crate talks to an `Arc<dyn` [`StateStore`]`>`, so which database sits
//! behind it is chosen once at startup: SQLite here; PostgreSQL in the `gantry-state-pg` crate
//! and etcd in `gantry-state-etcd`, for a team that shares state (each its own crate, so this
//! one builds no database driver but SQLite). [`conformance::run_all`] is the executable form
//! of the trait's contract: every store must pass it.

pub mod conformance;
mod error;
mod fence;
pub mod migrate;
mod model;
mod sqlite;
mod store;
mod url;

pub use error::{BoxError, StateError};
pub use fence::Fence;
pub use gantry_core::status::{ClusterStatus, RunKind, RunStatus, StepStatus};
pub use model::{
    Acquire, ClusterRecord, EventRecord, InventoryRecord, Lease, NodeRecord, RunRecord, StepRecord,
};
pub use sqlite::{BUSY_TIMEOUT, SqliteStore};
pub use store::StateStore;
pub use time::OffsetDateTime;
pub use url::{DEFAULT_ETCD_PREFIX, REDACTED, StateUrl};
