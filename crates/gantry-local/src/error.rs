//! The one error enum of the local provider crate.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid node metadata in {}: {source}", path.display())]
    Meta {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no free loopback address for a new node (tried {tried} addresses)")]
    NoAddress { tried: usize },
    #[error("node agent for {node} ({address}) was not ready within {secs} s; see {}", log.display())]
    AgentTimeout {
        node: String,
        address: String,
        secs: u64,
        log: PathBuf,
    },
    /// The machine-wide directory is not this user's private directory.
    #[error("unsafe machine-wide directory {}: {problem}; {fix}", path.display())]
    UnsafeDir {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    /// Something else listens on the node's address, so its agent cannot serve there.
    #[error(
        "{address} (the SSH address of node {node}) is taken by another process, so the node's \
         agent cannot listen there; {hint}"
    )]
    AddressInUse {
        node: String,
        address: String,
        hint: String,
    },
    /// The agent exited before it was ready.
    #[error("node agent for {node} exited before it was ready ({status}); see {}", log.display())]
    AgentFailed {
        node: String,
        status: String,
        log: PathBuf,
    },
    #[error("ssh: {0}")]
    Ssh(#[from] gantry_ssh::SshError),
    #[error("{0}")]
    Other(String),
}

impl LocalError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> LocalError {
        let path = path.into();
        move |source| LocalError::Io { op, path, source }
    }
}
