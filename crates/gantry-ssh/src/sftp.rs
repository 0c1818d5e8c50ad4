//! The SFTP subsystem of the agent's SSH server: the node's filesystem, with relative paths
//! resolved against the node's work directory (so `realpath .` is the work directory, where
//! `sftp` and `scp` clients land).
//!
//! Every filesystem call runs on the blocking pool; a client's requests are handled in order.
//!
//! Besides the protocol's requests, the OpenSSH extensions its clients use for everyday
//! operations are served and advertised as OpenSSH's `sftp-server` does: `posix-rename` (`rename`
//! in `sftp`), `statvfs`/`fstatvfs` (`df`), `hardlink` (`ln`) and `fsync`.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use russh_sftp::extensions::{
    FSYNC, FsyncExtension, HARDLINK, HardlinkExtension, STATVFS, Statvfs, StatvfsExtension,
};
use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use serde::Deserialize;

/// Largest read served at once (OpenSSH clients ask for 32 KiB; some for more).
const MAX_READ: u32 = 256 * 1024;
/// Directory entries per READDIR reply.
const DIR_BATCH: usize = 128;

const POSIX_RENAME: &str = "posix-rename@openssh.com";
const FSTATVFS: &str = "fstatvfs@openssh.com";

/// The extensions advertised in the version reply, with the versions OpenSSH's `sftp-server`
/// gives them (its client checks them).
const EXTENSIONS: [(&str, &str); 5] = [
    (POSIX_RENAME, "1"),
    (STATVFS, "2"),
    (FSTATVFS, "2"),
    (HARDLINK, "1"),
    (FSYNC, "1"),
];

/// `posix-rename@openssh.com`'s request data (the same two strings as `hardlink@openssh.com`).
#[derive(Deserialize)]
struct PosixRename {
    oldpath: String,
    newpath: String,
}

/// `fstatvfs@openssh.com`'s request data.
#[derive(Deserialize)]
struct Fstatvfs {
    handle: String,
}

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

/// Widens the platform's `statvfs` field types (`c_ulong`, `fsblkcnt_t`, ...) to the
/// protocol's `uint64`.
fn wide<T: Into<u64>>(v: T) -> u64 {
    v.into()
}

/// The reply of `statvfs@openssh.com` / `fstatvfs@openssh.com` (OpenSSH's PROTOCOL, 4.4).
fn statvfs_reply(st: &nix::sys::statvfs::Statvfs) -> Statvfs {
    use nix::sys::statvfs::FsFlags;
    // SSH_FXE_STATVFS_ST_RDONLY and SSH_FXE_STATVFS_ST_NOSUID.
    let mut flags = 0;
    if st.flags().contains(FsFlags::ST_RDONLY) {
        flags |= 0x1;
    }
    if st.flags().contains(FsFlags::ST_NOSUID) {
        flags |= 0x2;
    }
    Statvfs {
        block_size: wide(st.block_size()),
        fragment_size: wide(st.fragment_size()),
        blocks: wide(st.blocks()),
        blocks_free: wide(st.blocks_free()),
        blocks_avail: wide(st.blocks_available()),
        inodes: wide(st.files()),
        inodes_free: wide(st.files_free()),
        inodes_avail: wide(st.files_available()),
        fs_id: wide(st.filesystem_id()),
        flags,
        name_max: wide(st.name_max()),
    }
}

fn decode<'a, T: Deserialize<'a>>(request: &str, data: &'a mut Bytes) -> Result<T, StatusReply> {
    russh_sftp::de::from_bytes(data)
        .map_err(|e| StatusCode::BadMessage.with_message(format!("{request}: {e}")))
}

fn extended_reply<T: serde::Serialize>(id: u32, value: &T) -> Result<Packet, StatusReply> {
    let data = russh_sftp::ser::to_bytes(value)
        .map_err(|e| StatusCode::Failure.with_message(e.to_string()))?;
    Ok(Packet::ExtendedReply(ExtendedReply {
        id,
        data: data.to_vec(),
    }))
}

fn status_packet(id: u32) -> Packet {
    Packet::Status(ok(id))
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
        let mut version = Version::new();
        version.extensions = EXTENSIONS
            .iter()
            .map(|(name, v)| (name.to_string(), v.to_string()))
            .collect();
        Ok(version)
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

    /// SSH_FXP_SYMLINK. OpenSSH's client sends the link's target first and the new link's path
    /// second, the reverse of the draft, and OpenSSH's `sftp-server` reads them that way, as
    /// every OpenSSH tool expects; so does this server. russh-sftp names the fields in draft
    /// order: its `linkpath` is the first string (the target), `targetpath` the second (where
    /// the link is made). The target is stored as given, relative or not, as `ln -s` does.
    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        let target = PathBuf::from(linkpath);
        let link = self.resolve(&targetpath);
        blocking(move || std::os::unix::fs::symlink(target, link)).await?;
        Ok(ok(id))
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> Result<Packet, Self::Error> {
        let mut data = Bytes::from(data);
        match request.as_str() {
            POSIX_RENAME => {
                // rename(2): replaces an existing target, unlike SSH_FXP_RENAME.
                let r: PosixRename = decode(&request, &mut data)?;
                let (from, to) = (self.resolve(&r.oldpath), self.resolve(&r.newpath));
                blocking(move || fs::rename(from, to)).await?;
                Ok(status_packet(id))
            }
            HARDLINK => {
                let r: HardlinkExtension = decode(&request, &mut data)?;
                let (from, to) = (self.resolve(&r.oldpath), self.resolve(&r.newpath));
                blocking(move || fs::hard_link(from, to)).await?;
                Ok(status_packet(id))
            }
            FSYNC => {
                let r: FsyncExtension = decode(&request, &mut data)?;
                let file = self.file(&r.handle)?;
                blocking(move || file.sync_all()).await?;
                Ok(status_packet(id))
            }
            STATVFS => {
                let r: StatvfsExtension = decode(&request, &mut data)?;
                let path = self.resolve(&r.path);
                let st = blocking(move || {
                    nix::sys::statvfs::statvfs(&path).map_err(std::io::Error::from)
                })
                .await?;
                extended_reply(id, &statvfs_reply(&st))
            }
            FSTATVFS => {
                let r: Fstatvfs = decode(&request, &mut data)?;
                let file = self.file(&r.handle)?;
                let st = blocking(move || {
                    nix::sys::statvfs::fstatvfs(&*file).map_err(std::io::Error::from)
                })
                .await?;
                extended_reply(id, &statvfs_reply(&st))
            }
            _ => Err(StatusCode::OpUnsupported.with_message(format!("{request} is not supported"))),
        }
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

    use russh_sftp::server::Handler as _;

    fn request<T: serde::Serialize>(value: &T) -> Vec<u8> {
        russh_sftp::ser::to_bytes(value).unwrap().to_vec()
    }

    #[derive(serde::Serialize)]
    struct TwoPaths<'a> {
        oldpath: &'a str,
        newpath: &'a str,
    }

    #[derive(serde::Serialize)]
    struct OneString<'a> {
        s: &'a str,
    }

    fn assert_ok(p: Packet) {
        match p {
            Packet::Status(s) => assert_eq!(s.status_code, StatusCode::Ok, "{s:?}"),
            other => panic!("wanted a status, got {other:?}"),
        }
    }

    fn statvfs_of(p: Packet) -> Statvfs {
        match p {
            Packet::ExtendedReply(r) => {
                let mut data = Bytes::from(r.data);
                russh_sftp::de::from_bytes(&mut data).unwrap()
            }
            other => panic!("wanted an extended reply, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn openssh_extensions_are_advertised_and_served() {
        let dir = tempfile::tempdir().unwrap();
        let mut srv = SftpServer::new(dir.path().to_path_buf());
        let version = srv.init(3, HashMap::new()).await.unwrap();
        for (name, v) in EXTENSIONS {
            assert_eq!(version.extensions.get(name).map(String::as_str), Some(v));
        }
        fs::write(dir.path().join("a"), b"x").unwrap();
        fs::write(dir.path().join("b"), b"old").unwrap();

        // posix-rename replaces an existing target.
        let r = request(&TwoPaths {
            oldpath: "a",
            newpath: "b",
        });
        assert_ok(srv.extended(1, POSIX_RENAME.into(), r).await.unwrap());
        assert_eq!(fs::read(dir.path().join("b")).unwrap(), b"x");
        assert!(!dir.path().join("a").exists());

        let r = request(&TwoPaths {
            oldpath: "b",
            newpath: "c",
        });
        assert_ok(srv.extended(2, HARDLINK.into(), r).await.unwrap());
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(
            fs::metadata(dir.path().join("c")).unwrap().ino(),
            fs::metadata(dir.path().join("b")).unwrap().ino()
        );

        let st = statvfs_of(
            srv.extended(3, STATVFS.into(), request(&OneString { s: "." }))
                .await
                .unwrap(),
        );
        let want = nix::sys::statvfs::statvfs(dir.path()).unwrap();
        assert_eq!(st.block_size, wide(want.block_size()));
        assert_eq!(st.blocks, wide(want.blocks()));
        assert!(st.name_max > 0);

        let h = srv
            .open(4, "c".into(), OpenFlags::WRITE, FileAttributes::empty())
            .await
            .unwrap()
            .handle;
        let st = statvfs_of(
            srv.extended(5, FSTATVFS.into(), request(&OneString { s: &h }))
                .await
                .unwrap(),
        );
        assert_eq!(st.blocks, wide(want.blocks()));
        assert_ok(
            srv.extended(6, FSYNC.into(), request(&OneString { s: &h }))
                .await
                .unwrap(),
        );

        let unknown = srv.extended(7, "nope@example.com".into(), vec![]).await;
        assert!(matches!(
            unknown,
            Err(StatusReply {
                status_code: StatusCode::OpUnsupported,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn symlink_takes_openssh_order_target_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut srv = SftpServer::new(dir.path().to_path_buf());
        // What OpenSSH's `sftp` sends for `ln -s moved.bin link`: the target, then the link.
        srv.symlink(1, "moved.bin".into(), "link".into())
            .await
            .unwrap();
        assert_eq!(
            fs::read_link(dir.path().join("link")).unwrap(),
            PathBuf::from("moved.bin")
        );
    }

    #[test]
    fn normalize_paths() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/a/b/..")), PathBuf::from("/a"));
    }
}
