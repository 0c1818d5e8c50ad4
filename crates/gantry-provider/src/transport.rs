//! How gantry reaches a node to run a command or move a file: the [`Transport`] trait, beside
//! [`Provider`](crate::Provider) because a provider may bring its own (Docker's exec API) and
//! must not depend on the engine or on SSH to do so.
//!
//! A node is addressed transport-neutrally ([`NodeTarget`]): an SSH endpoint (address, port,
//! user) for every machine that runs sshd (local nodes, VMs), or a handle of the provider's own
//! (a Docker container's name). The SSH transport itself lives with the engine, on `gantry-ssh`;
//! provider crates never need russh.
//!
//! Every failure is a [`TransportError`] of one of two classes, the same for all transports: a
//! *transport* error (could not connect, connection dropped, engine gone, container gone or
//! stopped) is worth retrying with backoff; a *command* error (the request reached the node and
//! failed there: a changed host key, a missing file, a command that could not start) is not. A
//! remote program that exits non-zero is not an error at all but an [`ExitStatus`]. The error
//! keeps its source (an `SshError`, a `DockerError`), so nothing is flattened into a string.

use std::fmt;
use std::path::Path;

use async_trait::async_trait;

use crate::{NodeInfo, SshEndpoint};

/// How a remote command ended: an exit code, or the signal that killed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: Option<u32>,
    /// Signal name without the `SIG` prefix (`TERM`, `KILL`, ...).
    pub signal: Option<String>,
}

impl ExitStatus {
    /// An exit with `code`.
    pub fn code(code: u32) -> ExitStatus {
        ExitStatus {
            code: Some(code),
            signal: None,
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0) && self.signal.is_none()
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.signal) {
            (_, Some(sig)) => write!(f, "killed by signal {sig}"),
            (Some(code), None) => write!(f, "exit code {code}"),
            (None, None) => write!(f, "no exit status"),
        }
    }
}

/// Where a command's output goes as it arrives (the caller prefixes lines per node, masks
/// secrets, keeps a tail).
pub trait OutputSink: Send {
    fn stdout(&mut self, data: &[u8]);
    fn stderr(&mut self, data: &[u8]);
}

/// How a transport finds a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// An SSH server: address, port and login user.
    Ssh(SshEndpoint),
    /// A name the provider's own transport knows the node by (a Docker container's name).
    Handle(String),
}

/// A node as a transport needs it: its name (the host-key pin, output prefixes) and how to reach
/// it. Built by [`Transport::target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTarget {
    pub name: String,
    pub address: Address,
}

impl NodeTarget {
    /// The node's SSH endpoint as a target, or None when it has none (not running, or a node
    /// no sshd serves).
    pub fn ssh(node: &NodeInfo) -> Option<NodeTarget> {
        node.ssh.as_ref().map(|e| NodeTarget {
            name: node.name.clone(),
            address: Address::Ssh(e.clone()),
        })
    }

    /// A node reached by a handle of the provider's own.
    pub fn handle(name: &str, handle: &str) -> NodeTarget {
        NodeTarget {
            name: name.to_string(),
            address: Address::Handle(handle.to_string()),
        }
    }

    pub fn ssh_endpoint(&self) -> Option<&SshEndpoint> {
        match &self.address {
            Address::Ssh(e) => Some(e),
            Address::Handle(_) => None,
        }
    }

    pub fn handle_name(&self) -> Option<&str> {
        match &self.address {
            Address::Handle(h) => Some(h),
            Address::Ssh(_) => None,
        }
    }
}

/// Whether retrying can help (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The way to the node failed (connect, handshake, a dropped connection, the engine gone):
    /// retried with backoff.
    Transport,
    /// The node was reached and refused or failed the request: never retried.
    Command,
}

/// A failure to reach a node or to do what was asked there. Its message is its source's; the
/// source itself is kept ([`TransportError::get_ref`], and `source()` continues its chain).
#[derive(Debug)]
pub struct TransportError {
    class: ErrorClass,
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl TransportError {
    pub fn new(
        class: ErrorClass,
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> TransportError {
        TransportError {
            class,
            inner: error.into(),
        }
    }

    /// A retryable failure of the way to the node.
    pub fn transport(
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> TransportError {
        TransportError::new(ErrorClass::Transport, error)
    }

    /// A failure that retrying cannot fix.
    pub fn command(
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> TransportError {
        TransportError::new(ErrorClass::Command, error)
    }

    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// Whether it is worth retrying (a [`ErrorClass::Transport`] error).
    pub fn is_transport(&self) -> bool {
        self.class == ErrorClass::Transport
    }

    /// The error this one wraps (an `SshError`, a `DockerError`, or a message).
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.inner
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl std::error::Error for TransportError {
    // Transparent, like `#[error(transparent)]`: the wrapped error's message is this one's, so
    // its chain continues with the wrapped error's own source.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// How commands and files reach nodes. One instance serves one command (it may cache
/// connections); [`Transport::close`] ends them.
#[async_trait]
pub trait Transport: Send + Sync {
    /// The target of a listed node, or None when this transport cannot reach it. The default
    /// is the node's SSH endpoint (an SSH transport, and a node without one: None).
    fn target(&self, node: &NodeInfo) -> Option<NodeTarget> {
        NodeTarget::ssh(node)
    }

    /// Runs `command` through the node's shell, feeding `stdin` (then end-of-file) when given,
    /// streaming output to `sink`.
    async fn exec(
        &self,
        node: &NodeTarget,
        command: &str,
        stdin: Option<&[u8]>,
        sink: &mut dyn OutputSink,
    ) -> Result<ExitStatus, TransportError>;

    /// Copies the local file `local` to `remote` on the node (relative paths: the login
    /// user's home), keeping its mode; returns the bytes copied.
    async fn upload(
        &self,
        node: &NodeTarget,
        local: &Path,
        remote: &str,
    ) -> Result<u64, TransportError>;

    /// Copies `remote` from the node to the local file `local`; returns the bytes copied. The
    /// local file never gets setuid, setgid or sticky, whatever the remote mode.
    async fn download(
        &self,
        node: &NodeTarget,
        remote: &str,
        local: &Path,
    ) -> Result<u64, TransportError>;

    /// An interactive session on the node (`gantry ssh`): the local terminal is the remote
    /// one's (with a tty when stdin is a terminal) until `command` (None: a login shell) ends.
    /// Optional capability: the default says this transport has none.
    async fn shell(
        &self,
        node: &NodeTarget,
        _command: Option<&str>,
    ) -> Result<ExitStatus, TransportError> {
        Err(TransportError::command(format!(
            "{}: this transport has no interactive shell",
            node.name
        )))
    }

    /// Ends cached connections (the default has none).
    async fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn errors_keep_their_source_and_class() {
        let e = TransportError::transport(Outer(std::io::Error::other("inner")));
        assert!(e.is_transport());
        assert_eq!(e.to_string(), "outer");
        // The wrapped error is there to inspect, and its chain continues.
        assert!(e.get_ref().downcast_ref::<Outer>().is_some());
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.to_string(), "inner");
        let c = TransportError::command("no such file");
        assert_eq!(c.class(), ErrorClass::Command);
        assert!(!c.is_transport());
        assert!(std::error::Error::source(&c).is_none());
    }

    #[test]
    fn the_default_target_is_the_ssh_endpoint() {
        let mut n = NodeInfo {
            name: "demo-db-1".into(),
            provider_id: "x".into(),
            pool: "db".into(),
            index: 1,
            address: None,
            ssh: None,
            state: crate::NodeState::Running,
            tags: Default::default(),
            created_at: String::new(),
            host_key: None,
        };
        assert_eq!(NodeTarget::ssh(&n), None);
        let e = SshEndpoint {
            host: "127.0.0.2".into(),
            port: 22,
            user: "root".into(),
        };
        n.ssh = Some(e.clone());
        let t = NodeTarget::ssh(&n).unwrap();
        assert_eq!(t.ssh_endpoint(), Some(&e));
        assert_eq!(t.handle_name(), None);
        assert_eq!(
            NodeTarget::handle("demo-db-1", "gantry.p.demo-db-1").handle_name(),
            Some("gantry.p.demo-db-1")
        );
    }
}
