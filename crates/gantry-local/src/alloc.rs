//! Loopback address allocation under a file lock.
//!
//! Each node gets its own 127.x.y.z. Two concurrent creates (threads or processes) must never
//! get the same address, so allocation happens while holding an exclusive lock on
//! `<root>/alloc.lock`, and the set of used addresses is *derived* from the `node.json` files on
//! disk (no separate table to drift out of date). Several gantry homes on one machine must not
//! collide either: the second octet is derived from the root path, and a candidate address is
//! only taken if its SSH port can actually be bound right now.

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

/// Picks a free address. `used` are the addresses recorded by existing nodes.
pub fn pick_address(
    root: &Path,
    used: &BTreeSet<Ipv4Addr>,
    port: u16,
) -> Result<Ipv4Addr, LocalError> {
    let b = second_octet(root);
    let mut tried = 0;
    for c in 0..=255u8 {
        for d in 2..=254u8 {
            let addr = Ipv4Addr::new(127, b, c, d);
            if used.contains(&addr) {
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
    fn picks_distinct_bindable_addresses() {
        let root = tempfile::tempdir().unwrap();
        let mut used = BTreeSet::new();
        for _ in 0..5 {
            let a = pick_address(root.path(), &used, 0).unwrap();
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
