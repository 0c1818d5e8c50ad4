//! The local provider: clusters of machines on the user's own computer, needing nothing
//! installed.
//!
//! A node is a sandbox directory (`<root>/<project>/<cluster>/<node>/`) plus a node agent: the
//! `gantry` binary in agent mode, detached, serving SSH (exec, pty shell, SFTP) on the node's
//! own loopback address (Linux routes all of 127/8 to `lo`), so services on different nodes use
//! the same ports as on real machines and `ssh`, Ansible and gantry's SSH transport reach local
//! nodes the way they reach cloud VMs.
//!
//! Layout of a node directory (0700, like every directory gantry makes below `local/`: a node's
//! files are its user's only):
//! - `node.json`: the node's metadata *including gantry's tags* (written before the directory
//!   appears under its final name, so listing by tags never misses a node) and the public half
//!   of its host key, which gantry pins before connecting;
//! - `host_key`: the agent's SSH host key (0600); `agent.lock`: held by the running agent (one
//!   agent per node, and "is it running?" is a lock probe, not a stale pid file); `agent.pid`:
//!   the lock holder's pid; `agent.ready`: that pid again, once the agent listens ("up" is never
//!   judged by connecting to the address: anyone may listen on a 127.x address);
//! - `home/`: the node's `$HOME` and working directory; `bin/`: first on its `$PATH`.
//!
//! Every process the agent starts inherits `GANTRY_NODE_UID`; stop and destroy find and kill
//! processes by that marker, so daemons that detached from the agent do not survive their node.

mod agent;
mod alloc;
mod error;
mod kind;
mod meta;
mod process;
mod provider;
mod spawn;

pub use agent::run_agent;
pub use alloc::{MachineDir, default_machine_dir};
pub use error::LocalError;
pub use kind::{LocalKind, LocalOptions};
pub use meta::NodeMeta;
pub use provider::{
    AGENT_EXIT_ADDRESS_IN_USE, LocalConfig, LocalProvider, Prepared, prepare_node, start_agent,
};

/// Default SSH port of node agents (each on its node's own address).
pub const DEFAULT_SSH_PORT: u16 = 2222;
