//! The local provider: clusters of machines on the user's own computer, needing nothing
//! installed.
//!
//! A node is a sandbox directory (`<root>/<project>/<cluster>/<node>/`) plus a node agent: the
//! `gantry` binary in agent mode, detached, serving SSH (exec, pty shell, SFTP) on the node's
//! own loopback address (Linux routes all of 127/8 to `lo`), so services on different nodes use
//! the same ports as on real machines and `ssh`, Ansible and gantry's SSH transport reach local
//! nodes the way they reach cloud VMs.
//!
//! Layout of a node directory:
//! - `node.json`: the node's metadata *including gantry's tags* (written before the directory
//!   appears under its final name, so listing by tags never misses a node);
//! - `host_key`: the agent's SSH host key (0600); `agent.lock`: held by the running agent (one
//!   agent per node, and "is it running?" is a lock probe, not a stale pid file);
//! - `home/`: the node's `$HOME` and working directory; `bin/`: first on its `$PATH`.
//!
//! Every process the agent starts inherits `GANTRY_NODE_UID`; stop and destroy find and kill
//! processes by that marker, so daemons that detached from the agent do not survive their node.

mod agent;
mod alloc;
mod error;
mod meta;
mod process;
mod provider;

pub use agent::run_agent;
pub use error::LocalError;
pub use meta::NodeMeta;
pub use provider::{LocalConfig, LocalProvider};

/// Default SSH port of node agents (each on its node's own address).
pub const DEFAULT_SSH_PORT: u16 = 2222;
