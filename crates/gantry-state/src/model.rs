//! The records gantry keeps, independent of where they are kept.
//!
//! These are plain data: every store maps them to its own tables or keys, and the rest of gantry
//! (engine, CLI, later the server) reads and writes only these types. Timestamps serialize as
//! RFC 3339 so `--output json` (and the planned HTTP API) print them readably. Stores must keep at least microsecond
//! precision (PostgreSQL's), which is why the conformance suite only uses whole microseconds.

use std::collections::BTreeMap;

use gantry_core::status::{ClusterStatus, RunKind, RunStatus, StepStatus};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One cluster of one project: its spec as written and as canonicalised, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub project: String,
    pub name: String,
    /// Unique per incarnation of the name; tagged on every cloud resource.
    pub uid: String,
    pub provider: String,
    /// The spec exactly as the user wrote it.
    pub spec_yaml: String,
    /// Canonical JSON of the parsed spec, the input of `spec_hash`.
    pub spec_json: String,
    pub spec_hash: String,
    /// Bumped by the engine each time the spec changes.
    pub generation: u64,
    pub status: ClusterStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// One node of a cluster, as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub project: String,
    pub cluster: String,
    /// `<cluster>-<pool>-<index>`.
    pub name: String,
    pub pool: String,
    /// 1-based position in the pool; numbering continues on grow.
    pub index: u32,
    pub provider_id: String,
    pub address: Option<String>,
    pub ssh_host: Option<String>,
    pub ssh_port: Option<u16>,
    pub ssh_user: Option<String>,
    pub state: String,
    pub tags: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// One execution of a plan (up, destroy, stop, …). Kept as history after its cluster is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub project: String,
    pub cluster: String,
    pub kind: RunKind,
    pub status: RunStatus,
    pub spec_hash: Option<String>,
    /// Who runs it, as `pid@host`.
    pub holder: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub error: Option<String>,
}

/// A checkpoint: one step of one run, possibly on one node.
///
/// The key is `(run_id, step_id)`, so a step that runs once per node must put the node into its
/// `step_id` (the engine's convention); `node` is kept for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub run_id: String,
    pub step_id: String,
    pub node: Option<String>,
    /// Only `done` counts as a checkpoint.
    pub status: StepStatus,
    pub attempts: u32,
    pub error: Option<String>,
    /// The spec hash of the run this step belongs to; a checkpoint is valid only for it.
    pub spec_hash: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

/// One entry of a run's event log, numbered per run from 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub run_id: String,
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The event itself, as JSON text; the store does not look inside.
    pub json: String,
}

/// A held lock: who holds it, until when, and the fencing token proving it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub key: String,
    pub holder: String,
    /// Strictly greater than every token issued before for this key, even after release or
    /// expiry; writers pass it along so a stale holder can be refused.
    pub token: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Outcome of [`StateStore::acquire_lock`](crate::StateStore::acquire_lock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[must_use = "the lock may be held by someone else"]
pub enum Acquire {
    Acquired(Lease),
    Held {
        holder: String,
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
}

/// A cached provider listing of one scope of a project (`aws:us-east-1`): what `gantry ls` shows
/// without asking the provider again. Never the source of truth for a change: operations always
/// list live. `payload` is opaque to the store (the CLI's JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryRecord {
    pub project: String,
    /// What was listed, e.g. `aws:us-east-1`; free text to the store.
    pub scope: String,
    /// When the listing *started*: anything that changed after it may be missing from it.
    #[serde(with = "time::serde::rfc3339")]
    pub fetched_at: OffsetDateTime,
    pub payload: String,
}
