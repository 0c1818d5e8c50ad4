//! The crate's single error type.
//!
//! Callers (the engine's fan-out executor above all) must tell apart failures worth retrying —
//! the network, the handshake, a channel that broke — from failures that retrying cannot fix: a
//! changed host key, a rejected key, a bad key file. [`SshError::is_transport`] is that line.
//! A remote command that exits non-zero is not an error at all: it is an
//! [`ExitStatus`](crate::ExitStatus).

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in `gantry-ssh`. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The TCP connection could not be made (refused, unreachable, DNS).
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    /// Connecting, the handshake and authentication did not finish in time.
    #[error("connecting to {addr} timed out after {}", humanize(*.timeout))]
    ConnectTimeout { addr: String, timeout: Duration },

    /// The SSH protocol failed: handshake, channel open, a dropped connection.
    #[error("ssh protocol error while {context}")]
    Protocol {
        context: &'static str,
        #[source]
        source: russh::Error,
    },

    /// A channel ended in a way the protocol does not allow (e.g. closed without an exit status).
    #[error("ssh channel failed while {context}: {reason}")]
    Channel {
        context: &'static str,
        reason: String,
    },

    /// The server presented a host key different from the one pinned for this node.
    #[error(
        "host key for {alias} changed: pinned {expected_fingerprint}, server presented \
         {actual_fingerprint} (pin kept in {}); this may be a man-in-the-middle attack. If the \
         change is expected (the node was recreated), forget the pin: remove the line starting \
         with `{alias} ` from {}",
        known_hosts.display(),
        known_hosts.display()
    )]
    HostKeyChanged {
        alias: String,
        known_hosts: PathBuf,
        expected_fingerprint: String,
        actual_fingerprint: String,
    },

    /// The server rejected our public key.
    #[error(
        "authentication as {user} on {addr} was rejected (public key {fingerprint} is not authorized)"
    )]
    AuthRejected {
        user: String,
        addr: String,
        fingerprint: String,
    },

    /// A private key file is readable by group or others.
    #[error(
        "private key {} has mode {mode:04o}, readable by others; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },

    /// A key (file or authorized_keys line) could not be parsed or is unusable.
    #[error("invalid key {what}: {reason}")]
    InvalidKey { what: String, reason: String },

    /// The known_hosts file could not be read or written.
    #[error("known_hosts file {}", path.display())]
    KnownHosts {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A local file operation failed (key files, upload sources, download targets).
    #[error("{op} {}", path.display())]
    LocalIo {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The remote SFTP server refused an operation (no such file, permission denied, ...).
    #[error("sftp {op} {path}")]
    Sftp {
        op: &'static str,
        path: String,
        #[source]
        source: russh_sftp::client::error::Error,
    },

    /// The file to download, or the directory to upload into, does not exist on the node. Said
    /// in words: the SFTP status alone ("sftp stat PATH") did not tell a user what was wrong.
    #[error("{path} does not exist on the node")]
    RemoteMissing { path: String },

    /// The SSH server could not start (bind failure, bad configuration).
    #[error("ssh server on {addr}")]
    Serve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl SshError {
    /// Whether the failure is in the transport (worth retrying with backoff): connection refused
    /// or timed out, handshake, channel or connection-level IO failures.
    ///
    /// Not transport: a changed host key, rejected authentication, key and known_hosts file
    /// problems, local file errors, SFTP status errors from the server.
    pub fn is_transport(&self) -> bool {
        match self {
            SshError::Connect { .. }
            | SshError::ConnectTimeout { .. }
            | SshError::Protocol { .. }
            | SshError::Channel { .. } => true,
            SshError::Sftp { source, .. } => !matches!(
                source,
                russh_sftp::client::error::Error::Status(_)
                    | russh_sftp::client::error::Error::Limited(_)
            ),
            SshError::HostKeyChanged { .. }
            | SshError::AuthRejected { .. }
            | SshError::KeyPermissions { .. }
            | SshError::InvalidKey { .. }
            | SshError::KnownHosts { .. }
            | SshError::LocalIo { .. }
            | SshError::RemoteMissing { .. }
            | SshError::Serve { .. } => false,
        }
    }

    pub(crate) fn protocol(context: &'static str) -> impl FnOnce(russh::Error) -> SshError {
        move |source| SshError::Protocol { context, source }
    }

    /// An SFTP failure of `op` on `path`; "no such file" becomes [`SshError::RemoteMissing`]
    /// naming `missing` (the file itself, or the directory an upload writes into).
    pub(crate) fn sftp(
        op: &'static str,
        path: &str,
        missing: &str,
    ) -> impl FnOnce(russh_sftp::client::error::Error) -> SshError {
        let (path, missing) = (path.to_string(), missing.to_string());
        move |source| match &source {
            russh_sftp::client::error::Error::Status(s)
                if s.status_code == russh_sftp::protocol::StatusCode::NoSuchFile =>
            {
                SshError::RemoteMissing { path: missing }
            }
            _ => SshError::Sftp { op, path, source },
        }
    }

    pub(crate) fn local(
        op: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> SshError {
        let path = path.to_path_buf();
        move |source| SshError::LocalIo { op, path, source }
    }
}

/// russh's client handler needs `From<russh::Error>`; inside a session it means the transport.
impl From<russh::Error> for SshError {
    fn from(source: russh::Error) -> Self {
        SshError::Protocol {
            context: "talking to the server",
            source,
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_changed_is_not_transport_and_says_how_to_forget() {
        let e = SshError::HostKeyChanged {
            alias: "c-web-1".into(),
            known_hosts: PathBuf::from("/tmp/kh"),
            expected_fingerprint: "SHA256:aaa".into(),
            actual_fingerprint: "SHA256:bbb".into(),
        };
        assert!(!e.is_transport());
        let msg = e.to_string();
        assert!(msg.contains("changed"), "{msg}");
        assert!(msg.contains("/tmp/kh"), "{msg}");
        assert!(
            msg.contains("remove the line starting with `c-web-1 `"),
            "{msg}"
        );
        assert!(
            msg.contains("SHA256:aaa") && msg.contains("SHA256:bbb"),
            "{msg}"
        );
    }

    #[test]
    fn classification() {
        let refused = SshError::Connect {
            addr: "x:22".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(refused.is_transport());
        assert!(
            SshError::ConnectTimeout {
                addr: "x:22".into(),
                timeout: Duration::from_secs(3)
            }
            .is_transport()
        );
        assert!(
            !SshError::AuthRejected {
                user: "u".into(),
                addr: "x:22".into(),
                fingerprint: "SHA256:x".into()
            }
            .is_transport()
        );
        assert!(
            !SshError::KeyPermissions {
                path: "/k".into(),
                mode: 0o644
            }
            .is_transport()
        );
    }
}
