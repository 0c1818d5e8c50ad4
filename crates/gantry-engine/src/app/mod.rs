//! The application layer: what a command means, below any front end. The CLI calls it today and
//! the HTTP server will call it tomorrow, so nothing here parses arguments, prompts, renders or
//! builds a provider (the caller hands providers in, already built): only the decisions that
//! both front ends must make the same way.
//!
//! - [`cluster`]: a cluster's record with its decoded spec ([`load_cluster`]; an undecodable
//!   record is an error that names it, never taken for a local cluster), and the nodes a
//!   target names ([`select_nodes`]).
//! - [`inventory`]: everything the project has, across the listing scopes the caller hands in
//!   (local, every Docker engine, every AWS region), merged with the records
//!   ([`list_project`]); the one answer `ls`, `gc` and `inventory` give.
//! - [`keys`]: rotating the project's SSH key on every node reached with it.
//! - [`ops`]: operations by cluster name on the [`App`] context (the binary hands in how
//!   providers are built, [`Providers`]); [`remote`]: `run`, `put` and `get` on the nodes a
//!   target names, over their cluster's transport.

pub mod cluster;
pub mod inventory;
pub mod keys;
pub mod ops;
pub mod remote;

pub use cluster::{LoadedCluster, decode_spec, load_cluster, select_nodes};
pub use inventory::{
    CacheUse, ListedCluster, OnError, ProjectInventory, ProjectRecords, Scope, ScopeListing,
    Tracked, Warning, list_project,
};
pub use ops::{App, ClusterOps, DestroyTarget, Providers};
pub use remote::RemoteTarget;
