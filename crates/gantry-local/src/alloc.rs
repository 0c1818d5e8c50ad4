//! Loopback address allocation under a file lock.
//!
//! Each node gets its own 127.x.y.z. Two concurrent creates (threads or processes, in one
//! gantry home or several) must never get the same address, so allocation happens under one
//! machine-wide lock (`<machine dir>/alloc.lock`). An address is free when no node of this home
//! records it (derived from the `node.json` files, so there is no table to drift), no other
//! home's node reserves it (`<machine dir>/addresses/<ip>` names the owning node directory; a
//! reservation whose directory is gone is reclaimed), and its SSH port can be bound right now
//! (nothing else listens there). Homes start at different second octets (derived from their
//! path), so they rarely even look at the same addresses.
//!
//! The machine dir is `$TMPDIR/gantry-<uid>`: a world-writable place, so it is trusted only
//! after checking it (see [`MachineDir::open`]). It stays under `$TMPDIR` rather than
//! `$XDG_RUNTIME_DIR` because every gantry process of the user must find the same directory,
//! and `XDG_RUNTIME_DIR` is set in login sessions but not under cron, CI runners, `su` or `sudo`;
//! two processes disagreeing on it would hand out one address twice. `$TMPDIR` is also where
//! the reservations of nodes created by earlier versions live.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::LocalError;
use crate::meta::{META_FILE, NodeMeta};

/// An exclusive lock on a file, released on drop.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until the lock is held. Call from a blocking context. The lock file is never
    /// followed through a symbolic link; its directory must exist.
    pub fn acquire(path: &Path) -> Result<FileLock, LocalError> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(LocalError::io("open", path))?;
        file.lock().map_err(LocalError::io("lock", path))?;
        Ok(FileLock { _file: file })
    }
}

/// The default place of the machine-wide directory: `$TMPDIR/gantry-<uid>` (`/tmp` when
/// `TMPDIR` is unset).
pub fn default_machine_dir() -> PathBuf {
    std::env::temp_dir().join(format!("gantry-{}", nix::unistd::getuid()))
}

/// Allocation state shared by every gantry home of this user on this machine, checked to be
/// this user's own private directory.
#[derive(Debug, Clone)]
pub struct MachineDir {
    path: PathBuf,
}

impl MachineDir {
    /// Creates `path` (0700) or checks the existing one: it must be a real directory (not a
    /// symbolic link) owned by this user. One made by an earlier gantry with mode 0755 is
    /// tightened to 0700. Anything else is an error that says how to fix it: a directory that
    /// someone else owns, under a world-writable `/tmp`, may have been planted to read or
    /// redirect gantry's reservations.
    pub fn open(path: &Path) -> Result<MachineDir, LocalError> {
        private_dir(path, path)?;
        private_dir(&path.join("addresses"), path)?;
        Ok(MachineDir {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The machine-wide allocation lock.
    pub fn alloc_lock(&self) -> PathBuf {
        self.path.join("alloc.lock")
    }

    fn reservation(&self, addr: Ipv4Addr) -> PathBuf {
        self.path.join("addresses").join(addr.to_string())
    }
}

/// Makes sure `dir` exists as a directory of this user with mode 0700 (see [`MachineDir::open`]);
/// `top` is the machine dir named in errors.
fn private_dir(dir: &Path, top: &Path) -> Result<(), LocalError> {
    let unsafe_dir = |problem: String| LocalError::UnsafeDir {
        path: dir.to_path_buf(),
        problem,
        fix: format!(
            "remove {} (as its owner or root), or set TMPDIR to a directory only you can write \
             (gantry then uses $TMPDIR/gantry-{}; every gantry run of yours must use the same \
             TMPDIR)",
            top.display(),
            nix::unistd::getuid()
        ),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(LocalError::io("create", dir)(e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(LocalError::io("inspect", dir))?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("it is a symbolic link, not a directory".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    // Checked and changed through a descriptor opened without following links, so a rename
    // between the look and the change cannot redirect the chmod.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(LocalError::io("open", dir))?;
    let meta = file.metadata().map_err(LocalError::io("inspect", dir))?;
    let me = nix::unistd::getuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "it is owned by uid {}, not by you (uid {me}), so another user controls gantry's \
             address reservations",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o700))
            .map_err(LocalError::io("chmod", dir))?;
    }
    Ok(())
}

/// How long a reservation whose node directory does not exist yet counts as a create in
/// progress.
const CREATING_GRACE: std::time::Duration = std::time::Duration::from_secs(300);

/// Reads a reservation without following a symbolic link (None: none, or unreadable).
fn read_reservation(path: &Path) -> Option<PathBuf> {
    let mut f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut buf).ok()?;
    let s = String::from_utf8(buf).ok()?;
    Some(PathBuf::from(s.trim_end()))
}

/// Whether another node (of any home) holds `addr`.
fn reserved_elsewhere(machine: &MachineDir, addr: Ipv4Addr, node_dir: &Path) -> bool {
    let path = machine.reservation(addr);
    let Some(owner) = read_reservation(&path) else {
        return false;
    };
    if owner == node_dir {
        return false;
    }
    if owner.join(META_FILE).is_file() {
        return true;
    }
    std::fs::symlink_metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < CREATING_GRACE)
}

/// Records that `node_dir` owns `addr`. Call under the allocation lock.
///
/// Written to a new file (`O_EXCL`, never through a link) and renamed over the old
/// reservation: a rename replaces a planted symbolic link itself, never what it points to.
pub fn reserve(machine: &MachineDir, addr: Ipv4Addr, node_dir: &Path) -> Result<(), LocalError> {
    let path = machine.reservation(addr);
    let tmp = path.with_file_name(format!(
        ".{addr}.tmp-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(node_dir.as_os_str().as_encoded_bytes())?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        LocalError::io("write", &path)(e)
    })
}

/// Drops `node_dir`'s reservation of `addr` (someone else's is left alone).
pub fn release(machine: &MachineDir, addr: Ipv4Addr, node_dir: &Path) {
    let path = machine.reservation(addr);
    if read_reservation(&path).is_some_and(|o| o == node_dir) {
        // unlink never follows a link.
        let _ = std::fs::remove_file(path);
    }
}

/// Drops every reservation naming `node_dir` (its address is unknown when its `node.json` is
/// unreadable).
pub fn release_all_of(machine: &MachineDir, node_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(machine.path().join("addresses")) else {
        return;
    };
    for e in entries.flatten() {
        if read_reservation(&e.path()).is_some_and(|o| o == node_dir) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The addresses this home's nodes record, read from their `node.json` files once (at the first
/// allocation) and then kept up to date by the allocations made through it: one `up` of N nodes
/// reads every `node.json` once, not once per node (N² reads, under the machine-wide lock, made
/// a 1,000-node `up` spend most of its time here). Clones share the set.
///
/// A node another process creates after the set was read is not in it, and needs not be: every
/// create reserves its address in the machine dir under the same lock before its `node.json`
/// appears, and [`pick_address`] skips reserved addresses whose node exists (or is being
/// created). A node deleted meanwhile only keeps its address out of use until the next command.
#[derive(Debug, Clone, Default)]
pub struct UsedAddresses(Arc<Mutex<Option<BTreeSet<Ipv4Addr>>>>);

impl UsedAddresses {
    /// Picks a free address for the node in `node_dir` (see [`pick_address`]) and counts it as
    /// used from now on. Call under the allocation lock, then [`reserve`] it.
    pub fn pick(
        &self,
        machine: &MachineDir,
        root: &Path,
        port: u16,
        node_dir: &Path,
    ) -> Result<Ipv4Addr, LocalError> {
        let mut used = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let used = used.get_or_insert_with(|| {
            all_nodes(root)
                .into_iter()
                .map(|(_, m)| m.address)
                .collect()
        });
        let address = pick_address(machine, root, used, port, node_dir)?;
        used.insert(address);
        Ok(address)
    }
}

/// Every `node.json` below `root` (any project, any cluster), skipping unreadable ones.
pub fn all_nodes(root: &Path) -> Vec<(PathBuf, NodeMeta)> {
    nodes_below(root, None, None)
}

/// The `node.json` files below `root` of one project and one cluster when given (None: all),
/// skipping unreadable ones. A node lives in `<root>/<project>/<cluster>/<node>/`, named by the
/// tags it was created with, so a listing of one cluster reads only that cluster's nodes. A
/// name that is not one plain path component is ignored (all are read, the caller filters).
pub fn nodes_below(
    root: &Path,
    project: Option<&str>,
    cluster: Option<&str>,
) -> Vec<(PathBuf, NodeMeta)> {
    let plain = |n: &&str| !n.is_empty() && *n != "." && *n != ".." && !n.contains('/');
    // The directories of one level: the named one only, or every one.
    let level = |dir: &Path, name: Option<&str>| -> Vec<PathBuf> {
        match name.filter(plain) {
            Some(n) => vec![dir.join(n)],
            None => std::fs::read_dir(dir)
                .map(|r| r.flatten().map(|e| e.path()).collect())
                .unwrap_or_default(),
        }
    };
    let mut out = Vec::new();
    for p in level(root, project).into_iter().filter(|p| p.is_dir()) {
        for c in level(&p, cluster).into_iter().filter(|c| c.is_dir()) {
            let Ok(nodes) = std::fs::read_dir(&c) else {
                continue;
            };
            for n in nodes.flatten() {
                let dir = n.path();
                let hidden = n.file_name().to_string_lossy().starts_with('.');
                if hidden || !dir.join(META_FILE).is_file() {
                    continue;
                }
                if let Ok(meta) = NodeMeta::read(&dir) {
                    out.push((dir, meta));
                }
            }
        }
    }
    out
}

/// The second octet used by this root: stable per root path, in 64..=191.
fn second_octet(root: &Path) -> u8 {
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    let mut h: u32 = 0x811c_9dc5;
    for b in root.as_os_str().as_encoded_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    64 + (h % 128) as u8
}

/// Picks a free address for the node that will live in `node_dir`. `used` are the addresses
/// recorded by this home's nodes. Call under the allocation lock, then [`reserve`] it.
pub fn pick_address(
    machine: &MachineDir,
    root: &Path,
    used: &BTreeSet<Ipv4Addr>,
    port: u16,
    node_dir: &Path,
) -> Result<Ipv4Addr, LocalError> {
    let b = second_octet(root);
    let mut tried = 0;
    for c in 0..=255u8 {
        for d in 2..=254u8 {
            let addr = Ipv4Addr::new(127, b, c, d);
            if used.contains(&addr) || reserved_elsewhere(machine, addr, node_dir) {
                continue;
            }
            tried += 1;
            // Someone else (another gantry home, another program) may be on it.
            if TcpListener::bind(SocketAddrV4::new(addr, port)).is_ok() {
                return Ok(addr);
            }
            if tried > 4096 {
                return Err(LocalError::NoAddress { tried });
            }
        }
    }
    Err(LocalError::NoAddress { tried })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh machine dir below a private temp dir (never the real one: tests of other
    /// processes share that).
    fn machine() -> (tempfile::TempDir, MachineDir) {
        let parent = tempfile::tempdir().unwrap();
        let m = MachineDir::open(&parent.path().join("gantry-test")).unwrap();
        (parent, m)
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    /// Whether this process may give files away (chown to another uid needs root).
    fn can_chown() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but the tests do not run as root: they cannot chown to another uid");
        }
        eprintln!("skipped: chown to another uid needs root");
        false
    }

    #[test]
    fn reservations_of_live_nodes_are_respected_and_stale_ones_reclaimed() {
        let (_t, m) = machine();
        let root = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let owner = other.path().join("node");
        std::fs::create_dir_all(&owner).unwrap();
        std::fs::write(owner.join(META_FILE), "{}").unwrap();
        let mine = root.path().join("mine");
        let _guard = FileLock::acquire(&m.alloc_lock()).unwrap();
        let first = pick_address(&m, root.path(), &BTreeSet::new(), 0, &mine).unwrap();
        reserve(&m, first, &owner).unwrap();
        let second = pick_address(&m, root.path(), &BTreeSet::new(), 0, &mine).unwrap();
        assert_ne!(
            first, second,
            "an address reserved by a live node of another home is skipped"
        );
        std::fs::remove_dir_all(&owner).unwrap();
        // A reservation whose node is gone is not a live one (the grace only covers creates).
        let old = std::time::SystemTime::now() - CREATING_GRACE * 2;
        std::fs::File::options()
            .write(true)
            .open(m.reservation(first))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(
            pick_address(&m, root.path(), &BTreeSet::new(), 0, &mine).unwrap(),
            first
        );
        release(&m, first, &owner);
        assert!(!m.reservation(first).exists());
    }

    #[test]
    fn picks_distinct_bindable_addresses() {
        let (_t, m) = machine();
        let root = tempfile::tempdir().unwrap();
        let mut used = BTreeSet::new();
        for _ in 0..5 {
            let a = pick_address(&m, root.path(), &used, 0, &root.path().join("n")).unwrap();
            assert_eq!(a.octets()[0], 127);
            assert!(used.insert(a), "address {a} handed out twice");
        }
    }

    #[test]
    fn file_lock_excludes_other_holders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.lock");
        let held = FileLock::acquire(&path).unwrap();
        let f = File::options().write(true).open(&path).unwrap();
        assert!(
            f.try_lock().is_err(),
            "a second lock must not be granted while held"
        );
        drop(held);
        assert!(f.try_lock().is_ok());
    }

    #[test]
    fn a_new_machine_dir_is_private() {
        let (_t, m) = machine();
        assert_eq!(mode(m.path()), 0o700);
        assert_eq!(mode(&m.path().join("addresses")), 0o700);
    }

    #[test]
    fn a_machine_dir_an_older_gantry_left_open_is_tightened() {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("gantry-test");
        std::fs::create_dir_all(path.join("addresses")).unwrap();
        for d in [path.clone(), path.join("addresses")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        MachineDir::open(&path).unwrap();
        assert_eq!(mode(&path), 0o700);
        assert_eq!(mode(&path.join("addresses")), 0o700);
    }

    #[test]
    fn a_machine_dir_owned_by_another_user_is_refused() {
        if !can_chown() {
            return;
        }
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("gantry-test");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::chown(&path, Some(4_000_321), Some(4_000_321)).unwrap();
        let err = MachineDir::open(&path).unwrap_err().to_string();
        assert!(err.contains("owned by uid 4000321"), "{err}");
        assert!(err.contains("TMPDIR") && err.contains("remove"), "{err}");
        assert_eq!(
            mode(&path),
            0o777,
            "someone else's directory is not changed"
        );
        assert!(
            !path.join("addresses").exists(),
            "nothing is created in someone else's directory"
        );

        // The same for its `addresses/` (e.g. made by the other user in a window before the
        // directory became ours).
        let path = parent.path().join("gantry-test2");
        std::fs::create_dir_all(path.join("addresses")).unwrap();
        std::os::unix::fs::chown(path.join("addresses"), Some(4_000_321), None).unwrap();
        let err = MachineDir::open(&path).unwrap_err().to_string();
        assert!(err.contains("owned by uid 4000321"), "{err}");
    }

    #[test]
    fn a_symlinked_machine_dir_is_refused_and_its_target_left_alone() {
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = parent.path().join("gantry-test");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = MachineDir::open(&path).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(err.contains("TMPDIR"), "{err}");
        assert_eq!(mode(&target), 0o755);
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    }

    #[test]
    fn planted_symlinks_in_the_machine_dir_are_not_followed() {
        let (t, m) = machine();
        let precious = t.path().join("precious");
        std::fs::write(&precious, "keep me\n").unwrap();
        let node = t.path().join("node");
        let addr = Ipv4Addr::new(127, 1, 2, 3);
        std::os::unix::fs::symlink(&precious, m.reservation(addr)).unwrap();
        assert!(
            !reserved_elsewhere(&m, addr, &node),
            "a link is not a reservation"
        );
        reserve(&m, addr, &node).unwrap();
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
        let meta = std::fs::symlink_metadata(m.reservation(addr)).unwrap();
        assert!(meta.is_file(), "the link was replaced by a reservation");
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(read_reservation(&m.reservation(addr)).unwrap(), node);

        std::os::unix::fs::symlink(&precious, m.alloc_lock()).unwrap();
        let err = FileLock::acquire(&m.alloc_lock()).err().expect("refused");
        assert!(err.to_string().contains("alloc.lock"), "{err}");
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
    }
}
