//! gantry's own SSH identity: one private key per user (or per agent host key), kept on disk in
//! OpenSSH format so `ssh -i` can use the same file.
//!
//! The key never leaves this type in printable form: `Debug` shows only the algorithm and the
//! fingerprint, and errors name the file, never its contents.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};

use zeroize::Zeroizing;

use crate::SshError;

/// The comment written into public key lines gantry produces.
const KEY_COMMENT: &str = "gantry";

/// A private key (ed25519 when gantry generates it). `Debug` redacts the secret.
#[derive(Clone)]
pub struct KeyPair {
    key: Arc<PrivateKey>,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("algorithm", &self.key.algorithm().as_str())
            .field("fingerprint", &self.fingerprint())
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl KeyPair {
    /// Loads an OpenSSH-format private key, or generates ed25519 and writes it with mode 0600
    /// (and `<path>.pub`, 0644). Parent dirs are created (0700). Refuses a key file readable by
    /// group/other, as OpenSSH does.
    ///
    /// Safe against concurrent callers, threads of one process included: each writes its key to
    /// a temporary file of its own and moves it into place only if no key is there yet, so
    /// exactly one generated key wins and every caller loads that one.
    pub fn load_or_generate(path: &Path) -> Result<KeyPair, SshError> {
        Self::load_or_generate_with(path, true)
    }

    /// [`KeyPair::load_or_generate`] without the `.pub` file: for keys whose public half is
    /// recorded elsewhere (a local node's host key is in its `node.json`). One file fewer per
    /// node matters at a thousand nodes.
    pub fn load_or_generate_private(path: &Path) -> Result<KeyPair, SshError> {
        Self::load_or_generate_with(path, false)
    }

    fn load_or_generate_with(path: &Path, public_file: bool) -> Result<KeyPair, SshError> {
        match fs::metadata(path) {
            Ok(_) => return Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SshError::local("reading private key", path)(e)),
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(SshError::local("creating key directory", parent))?;
        }
        let pair = Self::generate();
        let pem = pair
            .key
            .to_openssh(LineEnding::LF)
            .map_err(|e| SshError::InvalidKey {
                what: "generated key".into(),
                reason: e.to_string(),
            })?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // A temporary file of its own (O_EXCL, a random name, mode 0600) in the same directory,
        // so concurrent callers in one process never write into each other's file, then moved
        // into place only if no key is there yet (renameat2 RENAME_NOREPLACE, or link+unlink).
        let write = || -> std::io::Result<tempfile::NamedTempFile> {
            let mut f = tempfile::Builder::new()
                .prefix(".id.tmp.")
                .permissions(fs::Permissions::from_mode(0o600))
                .tempfile_in(dir)?;
            f.write_all(pem.as_bytes())?;
            f.as_file().sync_all()?;
            Ok(f)
        };
        let tmp = write().map_err(SshError::local("writing private key", path))?;
        match tmp.persist_noclobber(path) {
            Ok(_) => {}
            // Another caller generated the key first: use theirs (the temporary file goes).
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                return Self::load(path);
            }
            Err(e) => return Err(SshError::local("writing private key", path)(e.error)),
        }
        if !public_file {
            return Ok(pair);
        }
        let pub_path = sibling(path, ".pub");
        let write_pub = || -> std::io::Result<()> {
            let mut f = tempfile::Builder::new()
                .prefix(".id.pub.tmp.")
                .permissions(fs::Permissions::from_mode(0o644))
                .tempfile_in(dir)?;
            f.write_all(pair.public_openssh().as_bytes())?;
            f.write_all(b"\n")?;
            // The mode given at creation is subject to the umask.
            f.as_file()
                .set_permissions(fs::Permissions::from_mode(0o644))?;
            f.persist(&pub_path).map_err(|e| e.error)?;
            Ok(())
        };
        write_pub().map_err(SshError::local("writing public key", &pub_path))?;
        Ok(pair)
    }

    fn load(path: &Path) -> Result<KeyPair, SshError> {
        let meta = fs::metadata(path).map_err(SshError::local("reading private key", path))?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SshError::KeyPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text =
            Zeroizing::new(fs::read(path).map_err(SshError::local("reading private key", path))?);
        let key = PrivateKey::from_openssh(&*text).map_err(|e| SshError::InvalidKey {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if key.is_encrypted() {
            return Err(SshError::InvalidKey {
                what: path.display().to_string(),
                reason: "the key is passphrase-protected; gantry needs an unencrypted key".into(),
            });
        }
        Ok(KeyPair { key: Arc::new(key) })
    }

    /// The key at `path` if there is a file, `None` if there is none (the file is a cache of
    /// the key the state store keeps; see gantry-cli's `context::ssh_config`).
    pub fn load_if_present(path: &Path) -> Result<Option<KeyPair>, SshError> {
        match fs::metadata(path) {
            Ok(_) => Self::load(path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SshError::local("reading private key", path)(e)),
        }
    }

    /// The private key in OpenSSH format (what the state store keeps, sealed). Wiped on drop.
    pub fn to_openssh(&self) -> Result<Zeroizing<String>, SshError> {
        let pem = self
            .key
            .to_openssh(LineEnding::LF)
            .map_err(|e| SshError::InvalidKey {
                what: "private key".into(),
                reason: e.to_string(),
            })?;
        Ok(Zeroizing::new(pem.to_string()))
    }

    /// A key from OpenSSH-format text; `what` names where it came from, for errors (never the
    /// text itself).
    pub fn from_openssh(what: &str, text: &[u8]) -> Result<KeyPair, SshError> {
        let key = PrivateKey::from_openssh(text).map_err(|e| SshError::InvalidKey {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
        if key.is_encrypted() {
            return Err(SshError::InvalidKey {
                what: what.to_string(),
                reason: "the key is passphrase-protected; gantry needs an unencrypted key".into(),
            });
        }
        Ok(KeyPair { key: Arc::new(key) })
    }

    /// Writes this key to `path` (0600, parent 0700) and `<path>.pub`, replacing what is there,
    /// atomically (a temporary file renamed into place): for the local cache of a key the state
    /// store keeps.
    pub fn save(&self, path: &Path) -> Result<(), SshError> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(SshError::local("creating key directory", dir))?;
        let pem = self.to_openssh()?;
        let write = |target: &Path, bytes: &[u8], mode: u32| -> std::io::Result<()> {
            let mut f = tempfile::Builder::new()
                .prefix(".id.tmp.")
                .permissions(fs::Permissions::from_mode(mode))
                .tempfile_in(dir)?;
            f.write_all(bytes)?;
            f.as_file()
                .set_permissions(fs::Permissions::from_mode(mode))?;
            f.as_file().sync_all()?;
            f.persist(target).map_err(|e| e.error)?;
            Ok(())
        };
        write(path, pem.as_bytes(), 0o600).map_err(SshError::local("writing private key", path))?;
        let pub_path = sibling(path, ".pub");
        write(
            &pub_path,
            format!("{}\n", self.public_openssh()).as_bytes(),
            0o644,
        )
        .map_err(SshError::local("writing public key", &pub_path))?;
        Ok(())
    }

    /// A fresh in-memory ed25519 key.
    pub fn generate() -> KeyPair {
        let mut key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
            .expect("ed25519 key generation cannot fail with a working RNG");
        key.set_comment(KEY_COMMENT);
        KeyPair { key: Arc::new(key) }
    }

    /// The public key as an OpenSSH line: `ssh-ed25519 AAAA... gantry`.
    pub fn public_openssh(&self) -> String {
        public_line(self.key.public_key())
    }

    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The private key, for russh.
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    pub(crate) fn shared_private_key(&self) -> Arc<PrivateKey> {
        self.key.clone()
    }
}

/// `ALGO BASE64 gantry` for any public key (the comment normalised to gantry's).
fn public_line(key: &PublicKey) -> String {
    let mut key = key.clone();
    key.set_comment(KEY_COMMENT);
    key.to_openssh()
        .unwrap_or_else(|_| format!("{} <unencodable>", key.algorithm().as_str()))
}

/// `ALGO BASE64` (no comment): the form pinned in known_hosts.
pub(crate) fn public_key_data_line(key: &PublicKey) -> String {
    let mut key = key.clone();
    key.set_comment("");
    key.to_openssh()
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| key.algorithm().as_str().to_string())
}

/// Parses an OpenSSH public key line (`ALGO BASE64 [comment]`, options prefix not supported).
pub(crate) fn parse_public_key(line: &str) -> Result<PublicKey, SshError> {
    PublicKey::from_openssh(line.trim()).map_err(|e| SshError::InvalidKey {
        what: format!("public key line {:?}", truncate(line.trim(), 40)),
        reason: e.to_string(),
    })
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_and_public_line_has_comment() {
        let k = KeyPair::generate();
        let dbg = format!("{k:?}");
        assert!(dbg.contains("redacted"));
        assert!(!dbg.contains("PRIVATE"));
        assert!(k.public_openssh().starts_with("ssh-ed25519 AAAA"));
        assert!(k.public_openssh().ends_with(" gantry"));
        assert!(k.fingerprint().starts_with("SHA256:"));
    }

    #[test]
    fn generate_then_load_same_key_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/id_ed25519");
        let k1 = KeyPair::load_or_generate(&path).unwrap();
        let k2 = KeyPair::load_or_generate(&path).unwrap();
        assert_eq!(k1.fingerprint(), k2.fingerprint());
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(sibling(&path, ".pub")).unwrap().mode() & 0o777,
            0o644
        );
        assert_eq!(
            fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        let pub_line = fs::read_to_string(sibling(&path, ".pub")).unwrap();
        assert_eq!(pub_line.trim(), k1.public_openssh());
        // Without the public file: only the private key is written, and loads as the same key.
        let host = dir.path().join("node/host_key");
        let h1 = KeyPair::load_or_generate_private(&host).unwrap();
        assert_eq!(fs::metadata(&host).unwrap().mode() & 0o777, 0o600);
        assert!(!sibling(&host, ".pub").exists());
        let names: Vec<_> = fs::read_dir(host.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["host_key"], "no temporary file is left either");
        assert_eq!(
            KeyPair::load_or_generate(&host).unwrap().fingerprint(),
            h1.fingerprint()
        );
    }

    #[test]
    fn threads_generating_one_key_at_once_all_get_the_same_valid_key() {
        const THREADS: usize = 16;
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("id_ed25519");
            let start = std::sync::Barrier::new(THREADS);
            let results: Vec<Result<KeyPair, SshError>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            KeyPair::load_or_generate(&path)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let keys: Vec<KeyPair> = results
                .into_iter()
                .map(|r| r.unwrap_or_else(|e| panic!("round {round}: {e}")))
                .collect();
            let on_disk = KeyPair::load(&path).unwrap().fingerprint();
            for k in &keys {
                assert_eq!(k.fingerprint(), on_disk, "round {round}");
            }
            let pub_line = fs::read_to_string(sibling(&path, ".pub")).unwrap();
            assert_eq!(pub_line.trim(), keys[0].public_openssh(), "round {round}");
            // No temporary file is left behind.
            let mut names: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, ["id_ed25519", "id_ed25519.pub"], "round {round}");
        }
    }

    #[test]
    fn refuses_group_readable_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        KeyPair::load_or_generate(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = KeyPair::load_or_generate(&path).unwrap_err();
        assert!(
            matches!(err, SshError::KeyPermissions { mode: 0o640, .. }),
            "{err}"
        );
        assert!(!err.is_transport());
    }

    #[test]
    fn garbage_key_is_invalid_not_transport() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        fs::write(&path, "not a key").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = KeyPair::load_or_generate(&path).unwrap_err();
        assert!(matches!(err, SshError::InvalidKey { .. }), "{err}");
        assert!(!err.is_transport());
    }
}
