//! gantry's durable state: clusters, nodes, runs, checkpoints, events, locks and the inventory
//! cache.
//!
//! Everything above this crate talks to an `Arc<dyn` [`StateStore`]`>`, so which database sits
//! behind it is chosen once at startup: SQLite here; etcd in the `gantry-state-etcd` crate, for a
//! team that shares state (PostgreSQL is planned behind the same trait). [`conformance::run_all`] is the executable form of the trait's contract: every store
//! must pass it.

pub mod conformance;
mod error;
mod model;
mod sqlite;
mod store;
mod url;

pub use error::{BoxError, StateError};
pub use gantry_core::status::{ClusterStatus, RunKind, RunStatus, StepStatus};
pub use model::{
    Acquire, ClusterRecord, EventRecord, InventoryRecord, Lease, NodeRecord, RunRecord, StepRecord,
};
pub use sqlite::{BUSY_TIMEOUT, SqliteStore};
pub use store::StateStore;
pub use time::OffsetDateTime;
pub use url::{DEFAULT_ETCD_PREFIX, REDACTED, StateUrl};
