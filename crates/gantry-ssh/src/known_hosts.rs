//! Host keys pinned per node alias (the node name), on first contact.
//!
//! gantry connects to machines whose address it just got from a cloud API, so there is no prior
//! knowledge of their host keys: the first successful contact pins the key, and every later
//! connection must present the same key (see [`SshError::HostKeyChanged`]). Where gantry does
//! know the key (it generated a local node's host key itself), it pins that key up front
//! ([`KnownHosts::pin`]), so first contact is checked too. Pins are keyed by
//! alias rather than address because cloud addresses get reused by other machines.
//!
//! The file is OpenSSH's format, one line per alias (`ALIAS ssh-ed25519 AAAA...`), so that
//! `ssh -o UserKnownHostsFile=FILE -o HostKeyAlias=ALIAS` trusts exactly what gantry trusts.
//! Many connections pin at once (a 50-node `up`), so every change is made under an exclusive
//! lock on a side file and written atomically (temporary file, then rename). The changes that
//! callers of one [`KnownHosts`] (and its clones) ask for while a write is under way are made
//! together in the next write: each change rewrites and syncs the whole file, so one write per
//! pin made a 1,000-node `up` (and each delete of a `destroy`) cost N² bytes and N fsyncs in a
//! row. Every call still returns only once its own change is on disk.
//!
//! Reading is cached the same way: every connection looks its pin up, and reading and scanning
//! the whole file for each one made a 1,000-node `run` read 1,000 × 1,000 lines. The parsed
//! pins are kept (shared by clones) for as long as the file is the same file with the same
//! size and times; any write, gantry's rename or an edit by hand, changes those.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use russh::keys::{HashAlg, PublicKey};

use crate::SshError;
use crate::keys::public_key_data_line;

/// What [`KnownHosts::verify_or_pin`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// The alias had no pin; the presented key is now pinned.
    PinnedNow,
    /// The presented key matches the pin.
    Matches,
}

/// A known_hosts file holding gantry's pins. Clones share their pending changes (see the module
/// doc).
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
    batch: Arc<Batch>,
}

/// A change to the file's lines; true when it changed them.
type Edit = Box<dyn FnOnce(&mut Vec<String>) -> bool + Send>;

/// Where the outcome of a queued change goes: the io error's kind and text on failure.
type Outcome = Arc<Mutex<Option<Result<(), (std::io::ErrorKind, String)>>>>;

/// The changes waiting for the next write of the file, and the right to write it; and the
/// pins as last read.
#[derive(Default)]
struct Batch {
    queue: Mutex<Vec<(Edit, Outcome)>>,
    writing: Mutex<()>,
    read: Mutex<Option<(Stamp, Arc<Pins>)>>,
}

/// The key (`ALGO BASE64`) of each alias's first pin.
type Pins = HashMap<String, String>;

/// What tells one version of the file from another: device, inode, size, modification and
/// change times (ns). `None` when there is no file.
pub(crate) type Stamp = Option<(u64, u64, u64, i64, i64, i64, i64)>;

pub(crate) fn stamp(path: &Path) -> std::io::Result<Stamp> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some((
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").finish_non_exhaustive()
    }
}

impl KnownHosts {
    pub fn new(path: impl Into<PathBuf>) -> KnownHosts {
        KnownHosts {
            path: path.into(),
            batch: Arc::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the pin for `alias` (when its node is destroyed). Removing a missing pin is fine.
    pub fn forget(&self, alias: &str) -> Result<(), SshError> {
        let alias = alias.to_string();
        self.update(move |lines| {
            let before = lines.len();
            lines.retain(|l| !line_matches(l, &alias));
            before != lines.len()
        })
    }

    /// Removes the pins of every alias in `aliases` in one change of the file (nodes about to be
    /// created anew); nothing is written when none of them is pinned.
    pub fn forget_all(&self, aliases: &[&str]) -> Result<(), SshError> {
        if aliases.is_empty() {
            return Ok(());
        }
        let gone: std::collections::HashSet<String> =
            aliases.iter().map(|a| a.to_string()).collect();
        self.update(move |lines| {
            let before = lines.len();
            lines.retain(|l| !hosts_of(l).any(|h| gone.contains(h)));
            before != lines.len()
        })
    }

    /// Every pin, alias → `ALGO BASE64` (the first pin of an alias, as connections use).
    pub fn all_pins(&self) -> Result<std::collections::BTreeMap<String, String>, SshError> {
        Ok(self
            .pins()?
            .iter()
            .map(|(a, k)| (a.clone(), k.clone()))
            .collect())
    }

    /// Adds the pins of `pins` (alias → `ALGO BASE64`) that the file lacks, in one change of
    /// the file. A pin the file has with another key is never replaced: its alias is returned
    /// (with the file's key) so the caller can refuse; the others are still added.
    pub fn merge(
        &self,
        pins: std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<(String, String)>, SshError> {
        let conflicts = Arc::new(Mutex::new(Vec::new()));
        let found = conflicts.clone();
        self.update(move |lines| {
            let mut have: HashMap<String, String> = HashMap::new();
            for line in lines.iter() {
                let Some(key) = key_part(line) else { continue };
                for host in hosts_of(line) {
                    have.entry(host.to_string()).or_insert_with(|| key.clone());
                }
            }
            let mut changed = false;
            for (alias, key) in pins {
                match have.get(&alias) {
                    Some(mine) if same_key(mine, &key) => {}
                    Some(mine) => found
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((alias, mine.clone())),
                    None => {
                        lines.push(format!("{alias} {key}"));
                        changed = true;
                    }
                }
            }
            changed
        })?;
        let out = std::mem::take(&mut *conflicts.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(out)
    }

    /// The pinned key for `alias` as `ALGO BASE64`, if any.
    pub fn pinned(&self, alias: &str) -> Result<Option<String>, SshError> {
        Ok(self.pins()?.get(alias).cloned())
    }

    /// Every alias's pin, from the cache while the file is unchanged (see the module doc).
    fn pins(&self) -> Result<Arc<Pins>, SshError> {
        let io = |source| SshError::KnownHosts {
            path: self.path.clone(),
            source,
        };
        let before = stamp(&self.path).map_err(io)?;
        if let Some((seen, pins)) = &*lock(&self.batch.read)
            && *seen == before
        {
            return Ok(pins.clone());
        }
        let content = self.read()?;
        let mut pins = Pins::new();
        for line in content.lines() {
            let Some(key) = key_part(line) else { continue };
            for host in hosts_of(line) {
                pins.entry(host.to_string()).or_insert_with(|| key.clone());
            }
        }
        let pins = Arc::new(pins);
        // Kept only if the file did not change while it was read.
        if stamp(&self.path).map_err(io)? == before {
            *lock(&self.batch.read) = Some((before, pins.clone()));
        }
        Ok(pins)
    }

    /// Pins `key` (an OpenSSH public key line, `ALGO BASE64 [COMMENT]`) for `alias`, replacing
    /// any earlier pin: for a key gantry knows to be the node's own, before connecting to it.
    pub fn pin(&self, alias: &str, key: &str) -> Result<(), SshError> {
        let parsed = PublicKey::from_openssh(key.trim()).map_err(|e| SshError::InvalidKey {
            what: format!("host key of {alias}"),
            reason: e.to_string(),
        })?;
        let line = format!("{alias} {}", public_key_data_line(&parsed));
        let replaced = Arc::new(Mutex::new(Vec::new()));
        let (owned, found) = (alias.to_string(), replaced.clone());
        self.update(move |lines| {
            if lines.iter().filter(|l| line_matches(l, &owned)).eq([&line]) {
                return false;
            }
            *found.lock().unwrap_or_else(PoisonError::into_inner) = lines
                .iter()
                .filter(|l| line_matches(l, &owned))
                .filter_map(|l| key_part(l))
                .collect();
            lines.retain(|l| !line_matches(l, &owned));
            lines.push(line);
            true
        })?;
        let replaced =
            std::mem::take(&mut *replaced.lock().unwrap_or_else(PoisonError::into_inner));
        for old in replaced {
            // A different key was trusted for this node: pinned on first contact by whatever
            // answered then, or left by hand.
            tracing::warn!(
                alias,
                replaced = %PublicKey::from_openssh(&old)
                    .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
                    .unwrap_or(old),
                pinned = %parsed.fingerprint(HashAlg::Sha256),
                known_hosts = %self.path.display(),
                "replaced a host key pin with the node's own key"
            );
        }
        Ok(())
    }

    /// Checks `key` against the pin for `alias`, pinning it when there is none yet.
    ///
    /// Blocking (file IO and a file lock): call it from `spawn_blocking` in async code.
    pub fn verify_or_pin(&self, alias: &str, key: &PublicKey) -> Result<HostKeyCheck, SshError> {
        let presented = public_key_data_line(key);
        // Fast path without the lock: most connections find their pin.
        if let Some(pinned) = self.pinned(alias)? {
            return self.compare(alias, &pinned, &presented, key);
        }
        let existing = Arc::new(Mutex::new(None));
        let (owned, line, found) = (
            alias.to_string(),
            format!("{alias} {presented}"),
            existing.clone(),
        );
        self.update(move |lines| {
            if let Some(pinned) = lines.iter().find(|l| line_matches(l, &owned)) {
                // Pinned by a concurrent connection since we looked.
                *found.lock().unwrap_or_else(PoisonError::into_inner) = key_part(pinned);
                return false;
            }
            lines.push(line);
            true
        })?;
        let existing = existing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match existing {
            Some(pinned) => self.compare(alias, &pinned, &presented, key),
            None => {
                tracing::info!(
                    alias,
                    fingerprint = %key.fingerprint(HashAlg::Sha256),
                    known_hosts = %self.path.display(),
                    "pinned host key on first contact"
                );
                Ok(HostKeyCheck::PinnedNow)
            }
        }
    }

    fn compare(
        &self,
        alias: &str,
        pinned: &str,
        presented: &str,
        key: &PublicKey,
    ) -> Result<HostKeyCheck, SshError> {
        if same_key(pinned, presented) {
            return Ok(HostKeyCheck::Matches);
        }
        let expected_fingerprint = PublicKey::from_openssh(pinned)
            .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
            .unwrap_or_else(|_| format!("unparseable pin {pinned:?}"));
        Err(SshError::HostKeyChanged {
            alias: alias.to_string(),
            known_hosts: self.path.clone(),
            expected_fingerprint,
            actual_fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        })
    }

    fn read(&self) -> Result<String, SshError> {
        match fs::read_to_string(&self.path) {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(SshError::KnownHosts {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Runs `edit` on the file's lines under the lock, in one write with whatever other changes
    /// are queued by then (see the module doc); returns once the file holding it is synced.
    fn update(
        &self,
        edit: impl FnOnce(&mut Vec<String>) -> bool + Send + 'static,
    ) -> Result<(), SshError> {
        let outcome = Outcome::default();
        lock(&self.batch.queue).push((Box::new(edit), outcome.clone()));
        let _writing = lock(&self.batch.writing);
        // Made by the write that ran while we waited?
        if let Some(done) = lock(&outcome).take() {
            return done.map_err(|(kind, text)| self.io_error(std::io::Error::new(kind, text)));
        }
        let queued = std::mem::take(&mut *lock(&self.batch.queue));
        let (edits, outcomes): (Vec<Edit>, Vec<Outcome>) = queued.into_iter().unzip();
        let result = self.write_edits(edits);
        let shared = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| (e.kind(), e.to_string()));
        for o in &outcomes {
            *lock(o) = Some(shared.clone());
        }
        lock(&outcome).take();
        result.map_err(|e| self.io_error(e))
    }

    fn io_error(&self, source: std::io::Error) -> SshError {
        SshError::KnownHosts {
            path: self.path.clone(),
            source,
        }
    }

    /// Applies `edits` in order to the file's lines under the file lock (other processes) and
    /// writes the result once when any of them changed it.
    fn write_edits(&self, edits: Vec<Edit>) -> std::io::Result<()> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(with_suffix(&self.path, ".lock"))?;
        lock.lock()?;
        let text = match fs::read_to_string(&self.path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut changed = false;
        for edit in edits {
            changed |= edit(&mut lines);
        }
        if changed {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let tmp = with_suffix(
                &self.path,
                &format!(
                    ".tmp.{}.{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed)
                ),
            );
            let write = || -> std::io::Result<()> {
                let mut f = std::io::BufWriter::new(fs::File::create(&tmp)?);
                for l in &lines {
                    f.write_all(l.as_bytes())?;
                    f.write_all(b"\n")?;
                }
                f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                fs::rename(&tmp, &self.path)
            };
            if let Err(e) = write() {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        // The lock is released when `lock` is closed.
        drop(lock);
        Ok(())
    }
}

/// A mutex of this module, taken even when a panicking holder poisoned it (the data is a queue
/// or an outcome, whole at every point).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a known_hosts line pins `alias` (plain host patterns only; markers and hashed
/// hosts are not gantry's and are left alone).
fn line_matches(line: &str, alias: &str) -> bool {
    hosts_of(line).any(|h| h == alias)
}

/// The host patterns a known_hosts line pins (none for comments, markers and blank lines).
fn hosts_of(line: &str) -> impl Iterator<Item = &str> {
    let line = line.trim_start();
    let plain = !(line.is_empty() || line.starts_with('#') || line.starts_with('@'));
    line.split_whitespace()
        .next()
        .filter(|_| plain)
        .into_iter()
        .flat_map(|hosts| hosts.split(','))
}

/// `ALGO BASE64` of a known_hosts line.
fn key_part(line: &str) -> Option<String> {
    let mut fields = line.split_whitespace().skip(1);
    let algo = fields.next()?;
    let data = fields.next()?;
    Some(format!("{algo} {data}"))
}

fn same_key(a: &str, b: &str) -> bool {
    let fields = |s: &str| {
        let mut f = s.split_whitespace();
        (f.next().map(str::to_string), f.next().map(str::to_string))
    };
    fields(a) == fields(b)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyPair;

    #[test]
    fn pin_verify_change_forget() {
        let dir = tempfile::tempdir().unwrap();
        let kh = KnownHosts::new(dir.path().join("sub/known_hosts"));
        let a = KeyPair::generate();
        let b = KeyPair::generate();
        let a_pub = a.private_key().public_key();
        assert_eq!(kh.pinned("n1").unwrap(), None);
        assert_eq!(
            kh.verify_or_pin("n1", a_pub).unwrap(),
            HostKeyCheck::PinnedNow
        );
        assert_eq!(
            kh.verify_or_pin("n1", a_pub).unwrap(),
            HostKeyCheck::Matches
        );
        let pinned = kh.pinned("n1").unwrap().unwrap();
        assert!(pinned.starts_with("ssh-ed25519 AAAA"));
        assert!(a.public_openssh().starts_with(&pinned));
        let err = kh
            .verify_or_pin("n1", b.private_key().public_key())
            .unwrap_err();
        assert!(matches!(err, SshError::HostKeyChanged { .. }), "{err}");
        // Another alias is independent; n10 must not match n1.
        assert_eq!(
            kh.verify_or_pin("n10", b.private_key().public_key())
                .unwrap(),
            HostKeyCheck::PinnedNow
        );
        kh.forget("n1").unwrap();
        assert_eq!(kh.pinned("n1").unwrap(), None);
        assert!(kh.pinned("n10").unwrap().is_some());
        let text = fs::read_to_string(kh.path()).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.starts_with("n10 ssh-ed25519 "));
    }

    /// Pins are read from a cache while the file stays the same; an edit in place (same inode)
    /// or a replacement by another process is seen at the next look.
    #[test]
    fn cached_pins_follow_edits_made_outside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let kh = KnownHosts::new(&path);
        let a = KeyPair::generate().public_openssh();
        let b = KeyPair::generate().public_openssh();
        let key = |k: &str| k.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        kh.pin("n1", &a).unwrap();
        assert_eq!(kh.pinned("n1").unwrap(), Some(key(&a)));
        // By hand, in place: another key for n1 (the file grows by a comment, so the change
        // shows even within one tick of the file system's clock).
        let mut f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all(format!("n1 {}\n# edited\n", key(&b)).as_bytes())
            .unwrap();
        drop(f);
        assert_eq!(kh.pinned("n1").unwrap(), Some(key(&b)));
        // Replaced by another gantry (rename over it), seen by this one's clone.
        let other = KnownHosts::new(&path);
        other.pin("n2", &a).unwrap();
        assert_eq!(kh.clone().pinned("n2").unwrap(), Some(key(&a)));
        fs::remove_file(&path).unwrap();
        assert_eq!(kh.pinned("n1").unwrap(), None);
    }

    #[test]
    fn a_known_key_replaces_the_pin_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let kh = KnownHosts::new(dir.path().join("known_hosts"));
        let (real, squatter) = (KeyPair::generate(), KeyPair::generate());
        // A stale pin (an earlier node of the name, or a squatter pinned on first contact).
        kh.verify_or_pin("n1", squatter.private_key().public_key())
            .unwrap();
        kh.verify_or_pin("n2", squatter.private_key().public_key())
            .unwrap();
        kh.pin("n1", &real.public_openssh()).unwrap();
        kh.pin("n1", &real.public_openssh()).unwrap();
        assert!(
            real.public_openssh()
                .starts_with(&kh.pinned("n1").unwrap().unwrap())
        );
        assert_eq!(
            kh.verify_or_pin("n1", real.private_key().public_key())
                .unwrap(),
            HostKeyCheck::Matches
        );
        let err = kh
            .verify_or_pin("n1", squatter.private_key().public_key())
            .unwrap_err();
        assert!(matches!(err, SshError::HostKeyChanged { .. }), "{err}");
        let text = fs::read_to_string(kh.path()).unwrap();
        assert_eq!(text.lines().filter(|l| l.starts_with("n1 ")).count(), 1);
        assert!(kh.pinned("n2").unwrap().is_some(), "other aliases are kept");
        assert!(kh.pin("n3", "ssh-ed25519 not-base64").is_err());
    }

    #[test]
    fn concurrent_pins_keep_every_alias() {
        let dir = tempfile::tempdir().unwrap();
        let kh = KnownHosts::new(dir.path().join("known_hosts"));
        let key = KeyPair::generate();
        std::thread::scope(|s| {
            for i in 0..32 {
                let kh = &kh;
                let key = &key;
                s.spawn(move || {
                    kh.verify_or_pin(&format!("node{i}"), key.private_key().public_key())
                        .unwrap();
                });
            }
        });
        for i in 0..32 {
            assert!(kh.pinned(&format!("node{i}")).unwrap().is_some(), "node{i}");
        }
    }

    #[test]
    fn ignores_foreign_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        fs::write(
            &path,
            "# comment\n|1|abc|def ssh-ed25519 AAAA\n@cert-authority n1 ssh-ed25519 AAAA\n",
        )
        .unwrap();
        let kh = KnownHosts::new(&path);
        assert_eq!(kh.pinned("n1").unwrap(), None);
        kh.forget("n1").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 3);
    }
}
