//! One node as blueprint steps see it: a [`Remote`] runs shell commands in the login user's home
//! and uploads files over whatever transport the cluster uses (SSH, Docker exec), collecting a
//! bounded tail of the output for error messages. Kept apart from [`super::exec`] (which turns
//! steps into DAG steps) so that artifacts and steps share these helpers without a circle.

use std::path::Path;
use std::sync::Arc;

use crate::transport::{ExitStatus, NodeTarget, OutputSink, Transport, TransportError};

/// Single-quotes `s` for a POSIX shell.
pub fn shq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The last `n` lines of `out`, indented, for error messages.
pub fn tail(out: &str, n: usize) -> String {
    let lines: Vec<&str> = out.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Collects stdout and stderr interleaved, bounded to the last 64 KiB.
#[derive(Default)]
struct TailSink(Vec<u8>);

impl TailSink {
    fn push(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
        const MAX: usize = 64 << 10;
        if self.0.len() > MAX {
            let cut = self.0.len() - MAX;
            self.0.drain(..cut);
        }
    }
}

impl OutputSink for TailSink {
    fn stdout(&mut self, data: &[u8]) {
        self.push(data);
    }
    fn stderr(&mut self, data: &[u8]) {
        self.push(data);
    }
}

/// One node reached over the shared transport.
#[derive(Clone)]
pub struct Remote {
    pub transport: Arc<dyn Transport>,
    pub target: NodeTarget,
}

impl Remote {
    /// Runs `command` in the node's home (stdin optional); returns the status and the combined
    /// output.
    pub async fn sh(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
    ) -> Result<(ExitStatus, String), TransportError> {
        let mut sink = TailSink::default();
        let cmd = format!("cd \"$HOME\" && {command}");
        let st = self
            .transport
            .exec(&self.target, &cmd, stdin, &mut sink)
            .await?;
        Ok((st, String::from_utf8_lossy(&sink.0).into_owned()))
    }

    pub async fn upload(&self, local: &Path, remote: &str) -> Result<u64, TransportError> {
        self.transport.upload(&self.target, local, remote).await
    }
}
