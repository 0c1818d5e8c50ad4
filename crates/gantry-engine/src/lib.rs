//! The engine: turns a spec and what a provider reports into actions, and runs them.
//!
//! It is shared by the CLI and (later) the server, so it never touches the terminal: progress
//! leaves as typed [`gantry_core::event::Event`]s through [`events::Events`], and remote output
//! goes to sinks the caller supplies.
//!
//! - [`plan`]: desired (spec) vs observed (provider listing by tags) → a [`plan::Plan`].
//! - [`dag`]: a dispatcher that runs ready steps concurrently with bounds, retries retryable
//!   errors with exponential backoff and jitter, checkpoints steps and honours cancellation.
//! - [`lock`]: the cluster lock (a lease with a fencing token, renewed while held).
//! - [`transport`]: one fan-out executor over node transports (SSH, or one the caller hands in:
//!   Docker exec).
//! - [`gc`]: which clusters are expired and which nodes are orphans (pure; `ops` carries it out).
//! - [`blueprint`]: software recipes applied to a cluster's nodes after `up` (load, validate,
//!   render, expand into DAG steps, run over the cluster's transport, checkpoint by input hash).
//! - [`secrets`]: where the values of blueprints' `secret` params and the rendered outputs are
//!   kept (sealed in the state store), behind a small trait.
//! - [`vault`]: the state store's secrets sealed and opened with a key provider (every secret
//!   gantry keeps goes through it: nothing secret is written in plaintext).
//! - [`record`]: a cluster's stored record with its decoded spec (an undecodable one is an error
//!   naming it).
//! - [`ops`]: `up`, `destroy`, `stop`, `start` built from the above.
//! - [`app`]: the application layer the CLI (and later the server) calls: a cluster with its
//!   decoded spec, the nodes a target names, the listing of the whole project.

pub mod app;
pub mod blueprint;
pub mod dag;
pub mod error;
pub mod events;
pub mod gc;
pub mod lock;
pub mod ops;
pub mod plan;
pub mod record;
pub mod secrets;
pub mod transport;
pub mod vault;

pub use error::{EngineError, ErrorClass};
