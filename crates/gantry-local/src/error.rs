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
    #[error("node agent for {node} did not answer on {address} within {secs} s; see {}", log.display())]
    AgentTimeout {
        node: String,
        address: String,
        secs: u64,
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
