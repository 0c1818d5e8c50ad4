//! The SFTP subsystem of the agent's SSH server: the node's filesystem, with relative paths
//! resolved against the node's work directory (so `realpath .` is the work directory, where
//! `sftp` and `scp` clients land).
//!
//! Every filesystem call runs on the blocking pool; a client's requests are handled in order.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;

/// Largest read served at once (OpenSSH clients ask for 32 KiB; some for more).
const MAX_READ: u32 = 256 * 1024;
/// Directory entries per READDIR reply.
const DIR_BATCH: usize = 128;

enum OpenHandle {
    File(Arc<fs::File>),
    Dir(Vec<File>),
}

pub(crate) struct SftpServer {
    workdir: PathBuf,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
}

impl SftpServer {
    pub(crate) fn new(workdir: PathBuf) -> SftpServer {
        SftpServer {
            workdir,
            handles: HashMap::new(),
            next_handle: 0,
        }
    }

    fn resolve(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.workdir.clone()
        } else {
            self.workdir.join(path)
        }
    }

    fn add_handle(&mut self, h: OpenHandle) -> String {
        self.next_handle += 1;
        let name = format!("h{}", self.next_handle);
        self.handles.insert(name.clone(), h);
        name
    }

    fn file(&self, handle: &str) -> Result<Arc<fs::File>, StatusReply> {
        match self.handles.get(handle) {
            Some(OpenHandle::File(f)) => Ok(f.clone()),
            _ => Err(StatusCode::Failure.with_message("invalid handle")),
        }
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

fn io_reply(e: std::io::Error) -> StatusReply {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => StatusCode::NoSuchFile,
        std::io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    };
    code.with_message(e.to_string())
}

/// Runs blocking filesystem work off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, StatusReply> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StatusCode::Failure.with_message(e.to_string()))?
        .map_err(io_reply)
}

/// Applies SFTP attributes (size, permissions, owner, times) to a path.
fn apply_attrs(path: &Path, attrs: &FileAttributes) -> std::io::Result<()> {
    if let Some(size) = attrs.size {
        fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(size)?;
    }
    if let Some(perm) = attrs.permissions {
        fs::set_permissions(path, fs::Permissions::from_mode(perm & 0o7777))?;
    }
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::chown(path, attrs.uid, attrs.gid)?;
    }
    if let (Some(atime), Some(mtime)) = (attrs.atime, attrs.mtime) {
        let times = fs::FileTimes::new()
            .set_accessed(UNIX_EPOCH + Duration::from_secs(atime.into()))
            .set_modified(UNIX_EPOCH + Duration::from_secs(mtime.into()));
        fs::File::options()
            .write(true)
            .open(path)
            .or_else(|_| fs::File::open(path))?
            .set_times(times)?;
    }
    Ok(())
}

fn apply_attrs_fd(file: &fs::File, attrs: &FileAttributes) -> std::io::Result<()> {
    if let Some(size) = attrs.size {
        file.set_len(size)?;
    }
    if let Some(perm) = attrs.permissions {
        file.set_permissions(fs::Permissions::from_mode(perm & 0o7777))?;
    }
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::fchown(file, attrs.uid, attrs.gid)?;
    }
    if let (Some(atime), Some(mtime)) = (attrs.atime, attrs.mtime) {
        let times = fs::FileTimes::new()
            .set_accessed(UNIX_EPOCH + Duration::from_secs(atime.into()))
            .set_modified(UNIX_EPOCH + Duration::from_secs(mtime.into()));
        file.set_times(times)?;
    }
    Ok(())
}

/// Lexical normalisation (`a/./b/../c` → `a/c`) for paths that do not exist yet.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl russh_sftp::server::Handler for SftpServer {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.into()
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let path = self.resolve(&filename);
        let file = blocking(move || {
            let mut opts: fs::OpenOptions = pflags.into();
            if !pflags.contains(OpenFlags::READ) && !pflags.contains(OpenFlags::WRITE) {
                opts.read(true);
            }
            if pflags.contains(OpenFlags::CREATE) {
                opts.mode(attrs.permissions.map_or(0o666, |p| p & 0o7777));
            }
            opts.open(&path)
        })
        .await?;
        let handle = self.add_handle(OpenHandle::File(Arc::new(file)));
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(StatusCode::Failure.with_message("invalid handle")),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let file = self.file(&handle)?;
        let len = len.min(MAX_READ) as usize;
        let data = blocking(move || {
            let mut buf = vec![0u8; len];
            let mut filled = 0;
            while filled < len {
                let n = file.read_at(&mut buf[filled..], offset + filled as u64)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            buf.truncate(filled);
            Ok(buf)
        })
        .await?;
        if data.is_empty() {
            return Err(StatusCode::Eof.into());
        }
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let file = self.file(&handle)?;
        blocking(move || file.write_all_at(&data, offset)).await?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let path = self.resolve(&path);
        let meta = blocking(move || fs::symlink_metadata(path)).await?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&meta),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let path = self.resolve(&path);
        let meta = blocking(move || fs::metadata(path)).await?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&meta),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let file = self.file(&handle)?;
        let meta = blocking(move || file.metadata()).await?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&meta),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let path = self.resolve(&path);
        blocking(move || apply_attrs(&path, &attrs)).await?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let file = self.file(&handle)?;
        blocking(move || apply_attrs_fd(&file, &attrs)).await?;
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let path = self.resolve(&path);
        let entries = blocking(move || {
            let mut out = Vec::new();
            for name in [".", ".."] {
                if let Ok(meta) = fs::metadata(path.join(name)) {
                    out.push(File::new(name, FileAttributes::from(&meta)));
                }
            }
            for entry in fs::read_dir(&path)? {
                let entry = entry?;
                let attrs = entry
                    .metadata()
                    .map(|m| FileAttributes::from(&m))
                    .unwrap_or_default();
                out.push(File::new(entry.file_name().to_string_lossy(), attrs));
            }
            Ok(out)
        })
        .await?;
        let handle = self.add_handle(OpenHandle::Dir(entries));
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(OpenHandle::Dir(entries)) => {
                if entries.is_empty() {
                    return Err(StatusCode::Eof.into());
                }
                let n = entries.len().min(DIR_BATCH);
                let files = entries.drain(..n).collect();
                Ok(Name { id, files })
            }
            _ => Err(StatusCode::Failure.with_message("invalid handle")),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let path = self.resolve(&filename);
        blocking(move || fs::remove_file(path)).await?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let path = self.resolve(&path);
        blocking(move || {
            fs::DirBuilder::new()
                .mode(attrs.permissions.map_or(0o777, |p| p & 0o7777))
                .create(path)
        })
        .await?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        let path = self.resolve(&path);
        blocking(move || fs::remove_dir(path)).await?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let path = self.resolve(&path);
        let real =
            blocking(move || Ok(fs::canonicalize(&path).unwrap_or_else(|_| normalize(&path))))
                .await?;
        Ok(Name {
            id,
            files: vec![File::dummy(real.to_string_lossy())],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let from = self.resolve(&oldpath);
        let to = self.resolve(&newpath);
        blocking(move || fs::rename(from, to)).await?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let path = self.resolve(&path);
        let target = blocking(move || fs::read_link(path)).await?;
        Ok(Name {
            id,
            files: vec![File::dummy(target.to_string_lossy())],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_paths() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/a/b/..")), PathBuf::from("/a"));
    }
}
