//! Reaching a node through the Docker API instead of SSH: commands through exec (exit code,
//! streamed stdout/stderr, optional stdin), files through the archive API (a one-file tar that
//! keeps the mode, built and unpacked as it streams, so a file of any size takes a few chunks of
//! memory), and an interactive exec with a tty for `gantry ssh`.
//!
//! Relative remote paths are relative to the container's `$HOME` (as with SFTP), read once from
//! its configuration.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Read as _};

use bytes::Bytes;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use gantry_provider::transport::OutputSink as ExecOutput;

use crate::DockerProvider;
use crate::error::DockerError;

/// Drops everything.
pub(crate) struct Discard;

impl ExecOutput for Discard {
    fn stdout(&mut self, _: &[u8]) {}
    fn stderr(&mut self, _: &[u8]) {}
}

static HOMES: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

impl DockerProvider {
    fn exec_error(container: &str, e: bollard::errors::Error) -> DockerError {
        if let bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message,
        } = &e
            && message.contains("is not running")
        {
            return DockerError::NotRunning {
                container: container.to_string(),
                state: "stopped".into(),
            };
        }
        DockerError::api("exec in", container)(e)
    }

    /// Runs `argv` in `container`, feeding `stdin` (then end-of-file) when given and streaming
    /// output to `out`. Returns the exit code (a signal N shows as 128+N, as in a shell).
    pub async fn exec(
        &self,
        container: &str,
        argv: &[&str],
        stdin: Option<&[u8]>,
        out: &mut dyn ExecOutput,
    ) -> Result<i64, DockerError> {
        let d = self.docker().await?;
        let created = d
            .create_exec(
                container,
                CreateExecOptions {
                    attach_stdin: Some(stdin.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(argv.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Self::exec_error(container, e))?;
        let started = d
            .start_exec(&created.id, None)
            .await
            .map_err(|e| Self::exec_error(container, e))?;
        let StartExecResults::Attached { mut output, input } = started else {
            return Err(DockerError::Invalid("exec started detached".into()));
        };
        let feed = async move {
            let mut input = input;
            if let Some(data) = stdin {
                // A command that does not read its input may exit before taking all of it.
                let _ = input.write_all(data).await;
            }
            let _ = input.shutdown().await;
        };
        let read = async {
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        out.stdout(&message)
                    }
                    Ok(LogOutput::StdErr { message }) => out.stderr(&message),
                    Ok(LogOutput::StdIn { .. }) => {}
                    Err(e) => return Err(DockerError::api("exec output of", container)(e)),
                }
            }
            Ok(())
        };
        let ((), r) = tokio::join!(feed, read);
        r?;
        self.exit_code(container, &created.id).await
    }

    /// The exit code of a finished exec (the engine may need a moment to record it).
    async fn exit_code(&self, container: &str, exec_id: &str) -> Result<i64, DockerError> {
        let d = self.docker().await?;
        for _ in 0..200 {
            let info = d
                .inspect_exec(exec_id)
                .await
                .map_err(|e| Self::exec_error(container, e))?;
            if info.running != Some(true) {
                return match info.exit_code {
                    Some(c) => Ok(c),
                    // The container went away under the command.
                    None => Err(DockerError::NotRunning {
                        container: container.to_string(),
                        state: "gone while the command ran".into(),
                    }),
                };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(DockerError::Invalid(format!(
            "the engine still reports the command in {container} as running after its output \
             ended"
        )))
    }

    /// `$HOME` of the container's configuration (`/` when it sets none).
    async fn home(&self, container: &str) -> Result<String, DockerError> {
        if let Some(h) = HOMES
            .lock()
            .ok()
            .and_then(|m| m.as_ref().and_then(|m| m.get(container).cloned()))
        {
            return Ok(h);
        }
        let d = self.docker().await?;
        let info = d
            .inspect_container(container, None)
            .await
            .map_err(DockerError::api("inspect container", container))?;
        let cfg = info.config.unwrap_or_default();
        let home = cfg
            .env
            .unwrap_or_default()
            .iter()
            .find_map(|e| e.strip_prefix("HOME=").map(str::to_string))
            .or(cfg.working_dir.filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into());
        if let Ok(mut m) = HOMES.lock() {
            m.get_or_insert_with(HashMap::new)
                .insert(container.to_string(), home.clone());
        }
        Ok(home)
    }

    async fn absolute(&self, container: &str, remote: &str) -> Result<String, DockerError> {
        if remote.starts_with('/') {
            return Ok(remote.to_string());
        }
        let home = self.home(container).await?;
        let rel = remote.strip_prefix("./").unwrap_or(remote);
        Ok(format!("{}/{rel}", home.trim_end_matches('/')))
    }

    /// Copies the local file to `remote` (relative to `$HOME`) keeping its mode; the directory
    /// must exist. Returns the bytes sent.
    pub async fn upload(
        &self,
        container: &str,
        local: &Path,
        remote: &str,
    ) -> Result<u64, DockerError> {
        let path = self.absolute(container, remote).await?;
        let (dir, file) = match path.rsplit_once('/') {
            Some((d, f)) if !f.is_empty() => (if d.is_empty() { "/" } else { d }, f.to_string()),
            _ => {
                return Err(DockerError::Transfer(format!(
                    "{remote} names a directory, not a file"
                )));
            }
        };
        let d = self.docker().await?;
        // The archive is built by a blocking thread as the engine reads it: only
        // CHUNKS_IN_FLIGHT chunks are ever held, whatever the file's size.
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
        let local2 = local.to_path_buf();
        let packer = tokio::task::spawn_blocking(move || pack_into(&local2, &file, tx));
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        let sent = d
            .upload_to_container(
                container,
                Some(UploadToContainerOptions {
                    path: dir.to_string(),
                    ..Default::default()
                }),
                bollard::body_try_stream(body),
            )
            .await;
        let packed = packer
            .await
            .map_err(|e| DockerError::Invalid(e.to_string()))?;
        match (packed, sent) {
            // A local failure (unreadable file, changed size) explains the aborted upload.
            (Err(Pack::Local(e)), _) => Err(e),
            (_, Err(e)) => Err(transfer_error(container, &path, upload_dir(remote), e)),
            (Err(Pack::Abandoned), Ok(())) => Err(DockerError::Transfer(format!(
                "{path} on {container}: the engine stopped reading the archive"
            ))),
            (Ok(size), Ok(())) => Ok(size),
        }
    }

    /// Copies `remote` (relative to `$HOME`) to the local file, with the remote mode. Returns
    /// the bytes received.
    pub async fn download(
        &self,
        container: &str,
        remote: &str,
        local: &Path,
    ) -> Result<u64, DockerError> {
        let path = self.absolute(container, remote).await?;
        let d = self.docker().await?;
        let mut stream = d.download_from_container(
            container,
            Some(DownloadFromContainerOptions { path: path.clone() }),
        );
        // The archive is unpacked by a blocking thread as it arrives: only CHUNKS_IN_FLIGHT
        // chunks are ever held, whatever the file's size.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
        let (local, path2) = (local.to_path_buf(), path.clone());
        let unpacker = tokio::task::spawn_blocking(move || {
            extract_one(
                ChunkReader {
                    rx,
                    current: Bytes::new(),
                },
                &path2,
                &local,
            )
        });
        let mut failed = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    // The unpacker is done (the file is written, or it failed): stop reading.
                    if tx.send(chunk).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop((tx, stream));
        let unpacked = unpacker
            .await
            .map_err(|e| DockerError::Invalid(e.to_string()))?;
        // The engine's error (no such file, connection lost) explains a short archive.
        match failed {
            Some(e) => Err(transfer_error(container, &path, remote, e)),
            None => unpacked,
        }
    }

    /// An interactive exec for `gantry ssh`: a login shell, or `command` through `sh -c`; with
    /// a tty (raw local terminal, size kept in step) when stdin is a terminal. Returns the exit
    /// code.
    pub async fn shell(&self, container: &str, command: Option<&str>) -> Result<i64, DockerError> {
        let tty = std::io::stdin().is_terminal();
        let argv: Vec<String> = match command {
            Some(c) => vec!["/bin/sh".into(), "-c".into(), c.into()],
            None => vec![
                "/bin/sh".into(),
                "-c".into(),
                "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi".into(),
            ],
        };
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
        let d = self.docker().await?;
        let created = d
            .create_exec(
                container,
                CreateExecOptions {
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(tty),
                    env: Some(vec![format!("TERM={term}")]),
                    working_dir: Some(self.home(container).await?),
                    cmd: Some(argv),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Self::exec_error(container, e))?;
        let started = d
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    tty,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| Self::exec_error(container, e))?;
        let StartExecResults::Attached { mut output, input } = started else {
            return Err(DockerError::Invalid("exec started detached".into()));
        };
        let mut winch = None;
        let _raw = if tty {
            winch = Some(
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                    .map_err(DockerError::Terminal)?,
            );
            Some(RawMode::enter().map_err(DockerError::Terminal)?)
        } else {
            None
        };
        if tty && let Some((w, h)) = term_size() {
            let _ = d
                .resize_exec(
                    &created.id,
                    bollard::exec::ResizeExecOptions {
                        width: w,
                        height: h,
                    },
                )
                .await;
        }
        // stdin is read on a thread of its own: a blocked read must not hold the exit back.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(n) if n > 0 => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        });
        let mut input = input;
        let mut stdin_open = true;
        let mut stdout = tokio::io::stdout();
        let mut stderr = tokio::io::stderr();
        loop {
            tokio::select! {
                item = output.next() => match item {
                    Some(Ok(LogOutput::StdOut { message })) | Some(Ok(LogOutput::Console { message })) => {
                        let _ = stdout.write_all(&message).await;
                        let _ = stdout.flush().await;
                    }
                    Some(Ok(LogOutput::StdErr { message })) => {
                        let _ = stderr.write_all(&message).await;
                        let _ = stderr.flush().await;
                    }
                    Some(Ok(LogOutput::StdIn { .. })) => {}
                    Some(Err(e)) => return Err(DockerError::api("exec output of", container)(e)),
                    None => break,
                },
                data = rx.recv(), if stdin_open => match data {
                    Some(data) => {
                        if input.write_all(&data).await.is_err() {
                            stdin_open = false;
                        }
                    }
                    None => {
                        stdin_open = false;
                        let _ = input.shutdown().await;
                    }
                },
                Some(()) = recv_winch(&mut winch) => {
                    if let Some((w, h)) = term_size() {
                        let _ = d
                            .resize_exec(&created.id, bollard::exec::ResizeExecOptions { width: w, height: h })
                            .await;
                    }
                }
            }
        }
        drop(_raw);
        self.exit_code(container, &created.id).await
    }
}

async fn recv_winch(winch: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match winch {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// The error of an archive transfer of `path` (absolute) in `container`. The engine's 404 (other
/// than for the container itself) means `missing` (the path as the user gave it: the file a
/// download reads, the directory an upload writes into) does not exist: said so in words, as
/// for SSH nodes.
fn transfer_error(
    container: &str,
    path: &str,
    missing: &str,
    e: bollard::errors::Error,
) -> DockerError {
    if let bollard::errors::Error::DockerResponseServerError {
        status_code: 404,
        message,
    } = &e
        && !message.contains("No such container")
    {
        return DockerError::Transfer(format!("{missing} does not exist on the node"));
    }
    DockerError::api("archive", format!("{container}:{path}"))(e)
}

/// The directory an upload to `remote` (as the user gave it) writes into.
fn upload_dir(remote: &str) -> &str {
    match remote.rsplit_once('/') {
        Some(("", _)) => "/",
        Some((d, _)) => d,
        None => remote,
    }
}

/// Archive chunks held at once between the engine and the thread that packs or unpacks.
const CHUNKS_IN_FLIGHT: usize = 4;
/// The size of one archive chunk sent to the engine.
const CHUNK: usize = 256 * 1024;

/// Why packing an upload stopped.
enum Pack {
    /// Reading the local file failed; the upload was aborted.
    Local(DockerError),
    /// The engine stopped reading (its own error says why).
    Abandoned,
}

/// Packs the local file as `name` into `tx` (see [`pack`]). On a local failure, the stream ends
/// with an error, so the engine never gets a truncated archive as if it were whole.
fn pack_into(
    local: &Path,
    name: &str,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<u64, Pack> {
    let mut out = ChunkWriter {
        tx,
        buf: Vec::with_capacity(CHUNK),
        abandoned: false,
    };
    match pack(local, name, &mut out) {
        Ok(size) => Ok(size),
        Err(_) if out.abandoned => Err(Pack::Abandoned),
        Err(e) => {
            let _ = out
                .tx
                .blocking_send(Err(std::io::Error::other(e.to_string())));
            Err(Pack::Local(e))
        }
    }
}

/// Writes a tar holding the local file as `name`, with its mode, to `out`, reading the file as
/// it goes; returns the file's size.
fn pack(local: &Path, name: &str, out: &mut dyn std::io::Write) -> Result<u64, DockerError> {
    use std::os::unix::fs::PermissionsExt as _;
    let io = |what: &'static str| {
        let path = local.display().to_string();
        move |source| DockerError::Io { what, path, source }
    };
    let file = std::fs::File::open(local).map_err(io("reading"))?;
    let meta = file.metadata().map_err(io("reading"))?;
    if !meta.is_file() {
        return Err(DockerError::Transfer(format!(
            "{} is not a regular file",
            local.display()
        )));
    }
    let size = meta.len();
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(meta.permissions().mode() & 0o7777);
    header.set_mtime(
        meta.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
    );
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    let mut b = tar::Builder::new(out);
    let data = ExactReader {
        file,
        remaining: size,
    };
    b.append_data(&mut header, name, data)
        .map_err(io("sending"))?;
    b.into_inner()
        .and_then(|out| out.flush())
        .map_err(io("sending"))?;
    Ok(size)
}

/// The first `remaining` bytes of a file whose size was put in a tar header: a file that
/// shrinks meanwhile is an error (a short entry would corrupt the archive); one that grows is
/// cut at the size in the header.
struct ExactReader {
    file: std::fs::File,
    remaining: u64,
}

impl std::io::Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being sent",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Collects written bytes into chunks of [`CHUNK`] and hands each to the upload.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
    /// The receiving side is gone: the engine stopped reading.
    abandoned: bool,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(Ok(Bytes::from(chunk))).map_err(|_| {
            self.abandoned = true;
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the engine stopped reading the archive",
            )
        })
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// The downloaded archive as a `Read`, chunk by chunk as the engine sends it.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Writes the archive's single regular file to `local` with its mode (see
/// [`downloaded_mode`]), reading the archive as it goes.
fn extract_one(tar: impl std::io::Read, remote: &str, local: &Path) -> Result<u64, DockerError> {
    use std::os::unix::fs::PermissionsExt as _;
    let io = |what: &'static str| {
        let path = local.display().to_string();
        move |source| DockerError::Io { what, path, source }
    };
    let mut archive = tar::Archive::new(tar);
    let mut entries = archive.entries().map_err(io("unpacking"))?;
    let Some(entry) = entries.next() else {
        return Err(DockerError::Transfer(format!("{remote}: empty archive")));
    };
    let mut entry = entry.map_err(io("unpacking"))?;
    match entry.header().entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => {}
        tar::EntryType::Directory => {
            return Err(DockerError::Transfer(format!(
                "{remote} is a directory; get copies one file"
            )));
        }
        tar::EntryType::Symlink => {
            let to = entry
                .link_name()
                .ok()
                .flatten()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(DockerError::Transfer(format!(
                "{remote} is a symbolic link to {to}; get the file it points to"
            )));
        }
        other => {
            return Err(DockerError::Transfer(format!(
                "{remote} is not a regular file ({other:?})"
            )));
        }
    }
    let mode = downloaded_mode(entry.header().mode().unwrap_or(0o644));
    let size = entry.header().size().map_err(io("unpacking"))?;
    let mut file = std::fs::File::create(local).map_err(io("writing"))?;
    let copied = std::io::copy(&mut entry, &mut file).map_err(io("writing"))?;
    if copied != size {
        return Err(DockerError::Transfer(format!(
            "{remote}: the archive ended after {copied} of {size} bytes"
        )));
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("setting the mode of"))?;
    Ok(copied)
}

/// The mode a downloaded file gets locally: the container's permission bits without setuid,
/// setgid and sticky. A container is not trusted with the local machine: a setuid-root binary
/// fetched by `gantry get` must not become one here.
fn downloaded_mode(remote: u32) -> u32 {
    remote & 0o777
}

/// The terminal size of stdin as (columns, rows), if stdin is a terminal.
fn term_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointed-to struct, which lives for the
    // whole call; fd 0 is only read from.
    let rc = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// Raw mode on stdin's terminal, undone on drop (however the shell ends).
struct RawMode {
    original: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> std::io::Result<RawMode> {
        use nix::sys::termios::{self, SetArg};
        let stdin = std::io::stdin();
        let original = termios::tcgetattr(&stdin)?;
        let mut raw = original.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSADRAIN, &raw)?;
        Ok(RawMode { original })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{self, SetArg};
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, &self.original);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_survives_the_tar_round_trip_with_its_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"hello\n").unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o751)).unwrap();
        let mut tar = Vec::new();
        assert_eq!(pack(&src, "f", &mut tar).unwrap(), 6);
        let dst = dir.path().join("dst");
        assert_eq!(extract_one(tar.as_slice(), "/x/f", &dst).unwrap(), 6);
        assert_eq!(std::fs::read(&dst).unwrap(), b"hello\n");
        let mode = std::fs::metadata(&dst).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o751);
    }

    #[test]
    fn a_local_failure_ends_the_upload_stream_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        let r = pack_into(&dir.path().join("missing"), "f", tx);
        assert!(matches!(r, Err(Pack::Local(DockerError::Io { .. }))));
        // The engine sees an error, never a short archive that looks whole.
        assert!(rx.blocking_recv().unwrap().is_err());
        assert!(rx.blocking_recv().is_none());

        // The engine stopped reading: not a local failure (the engine's error says why).
        let src = dir.path().join("src");
        std::fs::write(&src, vec![7u8; 3 * CHUNK]).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        drop(rx);
        assert!(matches!(pack_into(&src, "f", tx), Err(Pack::Abandoned)));
    }

    #[test]
    fn a_large_file_is_packed_and_unpacked_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let data: Vec<u8> = (0..5 * CHUNK + 123).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        let packer = std::thread::spawn(move || pack_into(&src, "f", tx).ok());
        let (ctx, crx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        let dst = dir.path().join("dst");
        let dst2 = dst.clone();
        let unpacker = std::thread::spawn(move || {
            extract_one(
                ChunkReader {
                    rx: crx,
                    current: Bytes::new(),
                },
                "/x/f",
                &dst2,
            )
            .unwrap()
        });
        let mut chunks = 0;
        while let Some(chunk) = rx.blocking_recv() {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= CHUNK);
            chunks += 1;
            if ctx.blocking_send(chunk).is_err() {
                break;
            }
        }
        drop(ctx);
        assert_eq!(packer.join().unwrap(), Some(data.len() as u64));
        assert_eq!(unpacker.join().unwrap(), data.len() as u64);
        assert!(chunks > 5, "{chunks} chunks");
        assert_eq!(std::fs::read(&dst).unwrap(), data);
    }

    #[test]
    fn a_download_never_keeps_setuid_setgid_or_sticky() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        for (remote_mode, local_mode) in [(0o4755, 0o755), (0o2750, 0o750), (0o1777, 0o777)] {
            let src = dir.path().join("src");
            std::fs::write(&src, b"x").unwrap();
            std::fs::set_permissions(&src, std::fs::Permissions::from_mode(remote_mode)).unwrap();
            let mut tar = Vec::new();
            pack(&src, "f", &mut tar).unwrap();
            let dst = dir.path().join(format!("dst-{remote_mode:o}"));
            extract_one(tar.as_slice(), "/x/f", &dst).unwrap();
            let mode = std::fs::metadata(&dst).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, local_mode, "remote mode {remote_mode:o}");
        }
    }
}
