//! Loopback address allocation under a file lock.
//!
//! Each node gets its own 127.x.y.z. Two concurrent creates (threads or processes, in one
//! gantry home or several) must never get the same address, so allocation happens under one
//! machine-wide lock (`$TMPDIR/gantry-<uid>/alloc.lock`). An address is free when no node of
//! this home records it (derived from the `node.json` files, so there is no table to drift),
//! no other home's node reserves it (`$TMPDIR/gantry-<uid>/addresses/<ip>` names the owning
//! node directory; a reservation whose directory is gone is reclaimed), and its SSH port can be
//! bound right now (nothing else listens there). Homes start at different second octets
//! (derived from their path), so they rarely even look at the same addresses.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};

use crate::LocalError;
use crate::meta::{META_FILE, NodeMeta};

/// An exclusive lock on a file, released on drop.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until the lock is held. Call from a blocking context.
    pub fn acquire(path: &Path) -> Result<FileLock, LocalError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(LocalError::io("create", parent))?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(LocalError::io("open", path))?;
        file.lock().map_err(LocalError::io("lock", path))?;
        Ok(FileLock { _file: file })
    }
}

/// Where allocation state shared by every gantry home of this user lives.
pub fn machine_dir() -> PathBuf {
    std::env::temp_dir().join(format!("gantry-{}", nix::unistd::getuid()))
}

/// The machine-wide allocation lock.
pub fn alloc_lock_path() -> PathBuf {
    machine_dir().join("alloc.lock")
}

fn reservation(addr: Ipv4Addr) -> PathBuf {
    machine_dir().join("addresses").join(addr.to_string())
}

/// How long a reservation whose node directory does not exist yet counts as a create in
/// progress.
const CREATING_GRACE: std::time::Duration = std::time::Duration::from_secs(300);

/// Whether another node (of any home) holds `addr`.
fn reserved_elsewhere(addr: Ipv4Addr, node_dir: &Path) -> bool {
    let path = reservation(addr);
    let Ok(owner) = std::fs::read_to_string(&path) else {
        return false;
    };
    let owner = PathBuf::from(owner.trim_end());
    if owner == node_dir {
        return false;
    }
    if owner.join(META_FILE).is_file() {
        return true;
    }
    std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < CREATING_GRACE)
}

/// Records that `node_dir` owns `addr`. Call under the allocation lock.
pub fn reserve(addr: Ipv4Addr, node_dir: &Path) -> Result<(), LocalError> {
    let path = reservation(addr);
    let dir = path.parent().expect("reservation has a parent");
    std::fs::create_dir_all(dir).map_err(LocalError::io("create", dir))?;
    std::fs::write(&path, node_dir.as_os_str().as_encoded_bytes())
        .map_err(LocalError::io("write", &path))
}

/// Drops `node_dir`'s reservation of `addr` (someone else's is left alone).
pub fn release(addr: Ipv4Addr, node_dir: &Path) {
    let path = reservation(addr);
    if std::fs::read_to_string(&path).is_ok_and(|o| Path::new(o.trim_end()) == node_dir) {
        let _ = std::fs::remove_file(path);
    }
}

/// Every `node.json` below `root` (any project, any cluster), skipping unreadable ones.
pub fn all_nodes(root: &Path) -> Vec<(PathBuf, NodeMeta)> {
    let mut out = Vec::new();
    let Ok(projects) = std::fs::read_dir(root) else {
        return out;
    };
    for p in projects.flatten().filter(|e| e.path().is_dir()) {
        let Ok(clusters) = std::fs::read_dir(p.path()) else {
            continue;
        };
        for c in clusters.flatten().filter(|e| e.path().is_dir()) {
            let Ok(nodes) = std::fs::read_dir(c.path()) else {
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
            if used.contains(&addr) || reserved_elsewhere(addr, node_dir) {
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

    #[test]
    fn reservations_of_live_nodes_are_respected_and_stale_ones_reclaimed() {
        let root = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let owner = other.path().join("node");
        std::fs::create_dir_all(&owner).unwrap();
        std::fs::write(owner.join(META_FILE), "{}").unwrap();
        let mine = root.path().join("mine");
        let _guard = FileLock::acquire(&alloc_lock_path()).unwrap();
        let first = pick_address(root.path(), &BTreeSet::new(), 0, &mine).unwrap();
        reserve(first, &owner).unwrap();
        let second = pick_address(root.path(), &BTreeSet::new(), 0, &mine).unwrap();
        assert_ne!(
            first, second,
            "an address reserved by a live node of another home is skipped"
        );
        std::fs::remove_dir_all(&owner).unwrap();
        // A reservation whose node is gone is not a live one (the grace only covers creates).
        let old = std::time::SystemTime::now() - CREATING_GRACE * 2;
        std::fs::File::options()
            .write(true)
            .open(reservation(first))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(
            pick_address(root.path(), &BTreeSet::new(), 0, &mine).unwrap(),
            first
        );
        release(first, &owner);
        assert!(!reservation(first).exists());
    }

    #[test]
    fn picks_distinct_bindable_addresses() {
        let root = tempfile::tempdir().unwrap();
        let mut used = BTreeSet::new();
        for _ in 0..5 {
            let a = pick_address(root.path(), &used, 0, &root.path().join("n")).unwrap();
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
}
