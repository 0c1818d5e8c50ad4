//! gantry's durable state: clusters, nodes, runs, checkpoints, events, locks and the inventory
//! cache.
//!
//! Everything above this crate talks to an `Arc<dyn` [`StateStore`]`>`; which database sits
//! behind it (SQLite by default, PostgreSQL or etcd when a team shares state) is chosen once at
//! startup. [`conformance::run_all`] is the executable form of the trait's contract: every store
//! must pass it.

pub mod conformance;
mod error;
mod model;
mod sqlite;
mod store;

pub use error::{BoxError, StateError};
pub use gantry_core::status::{ClusterStatus, RunKind, RunStatus, StepStatus};
pub use model::{
    Acquire, ClusterRecord, EventRecord, InventoryRecord, Lease, NodeRecord, RunRecord, StepRecord,
};
pub use sqlite::{BUSY_TIMEOUT, SqliteStore};
pub use store::StateStore;
pub use time::OffsetDateTime;
