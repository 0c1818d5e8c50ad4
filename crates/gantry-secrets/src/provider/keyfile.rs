//! `keyfile:PATH`: the key-encryption key is 32 random bytes in a file, as private as an SSH
//! private key. This is what a single user gets without configuring anything (the CLI creates
//! one in `GANTRY_HOME` on first use); a team shares the file through its own channel.
//!
//! The file holds exactly 32 raw bytes. [`KeyFile::create`] makes it with mode 0600 (and never
//! overwrites one); [`KeyFile::open`] refuses a file that group or others may read or write, as
//! OpenSSH refuses such a private key. The key id is a fingerprint of the key
//! (`kf-` and 16 hex digits of SHA-256 over a label and the key), so the same key at another
//! path on another machine opens the same envelopes, and a different key is recognised as the
//! wrong one before any decryption is tried.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::{KeyProvider, WrappedKey, local_unwrap, local_wrap};
use crate::error::SecretsError;
use crate::secret::{DataKey, KEY_LEN};

/// A key file, loaded.
pub struct KeyFile {
    path: PathBuf,
    key: DataKey,
    key_id: String,
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("path", &self.path)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path, reason: impl Into<String>, e: std::io::Error) -> SecretsError {
    SecretsError::KeyFile {
        path: path.to_path_buf(),
        reason: format!("{}: {e}", reason.into()),
        source: Some(e),
    }
}

impl KeyFile {
    /// Creates a new key file at `path` (mode 0600, parent directories as needed) holding a
    /// fresh random key. An existing file is an error, never overwritten: the envelopes sealed
    /// under it would be lost.
    pub fn create(path: impl AsRef<Path>) -> Result<KeyFile, SecretsError> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| io_err(path, "cannot create its directory", e))?;
        }
        // Written whole under a temporary name, then linked into place only if no key is there
        // (link(2) never replaces): two processes creating the key at once (two first commands
        // in a new home) never see a half-written file, and exactly one key wins.
        let mut suffix = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut suffix);
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err(path, "cannot create", e))?;
        let key = DataKey::generate();
        let written = file
            .write_all(key.as_bytes())
            .and_then(|()| file.sync_all());
        drop(file);
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        if let Err(e) = linked {
            let reason = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "already exists; not overwriting a key"
            } else {
                "cannot write"
            };
            return Err(io_err(path, reason, e));
        }
        Ok(KeyFile::from_key(path, key))
    }

    /// Loads the key file at `path`, refusing one accessible by group or others.
    pub fn open(path: impl AsRef<Path>) -> Result<KeyFile, SecretsError> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| io_err(path, "cannot open", e))?;
        // The metadata of the open file, not of the path: what is checked is what is read.
        let meta = file
            .metadata()
            .map_err(|e| io_err(path, "cannot stat", e))?;
        if !meta.is_file() {
            return Err(SecretsError::KeyFile {
                path: path.to_path_buf(),
                reason: "is not a regular file".into(),
                source: None,
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretsError::KeyFileTooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_LEN + 1));
        // One byte more than a key: enough to tell a longer file without reading a huge one.
        (&mut file)
            .take(KEY_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_err(path, "cannot read", e))?;
        let key = DataKey::from_slice(&bytes).ok_or_else(|| SecretsError::KeyFile {
            path: path.to_path_buf(),
            reason: format!(
                "is not a gantry key file: it must hold exactly {KEY_LEN} bytes, it holds {}{}",
                if bytes.len() > KEY_LEN {
                    "more than "
                } else {
                    ""
                },
                bytes.len().min(KEY_LEN)
            ),
            source: None,
        })?;
        Ok(KeyFile::from_key(path, key))
    }

    /// [`KeyFile::open`] if `path` exists, else [`KeyFile::create`].
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<KeyFile, SecretsError> {
        let path = path.as_ref();
        match KeyFile::create(path) {
            Err(SecretsError::KeyFile {
                source: Some(e), ..
            }) if e.kind() == std::io::ErrorKind::AlreadyExists => KeyFile::open(path),
            other => other,
        }
    }

    fn from_key(path: &Path, key: DataKey) -> KeyFile {
        let digest = Sha256::new()
            .chain_update(b"gantry-secrets/keyfile-id/v1")
            .chain_update(key.as_bytes())
            .finalize();
        let key_id = format!(
            "kf-{}",
            digest[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        KeyFile {
            path: path.to_path_buf(),
            key,
            key_id,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait::async_trait]
impl KeyProvider for KeyFile {
    fn kind(&self) -> &'static str {
        "keyfile"
    }

    fn key_id(&self) -> String {
        self.key_id.clone()
    }

    fn describe(&self) -> String {
        format!("keyfile:{}", self.path.display())
    }

    async fn wrap(&self, secret: &str, key: &DataKey) -> Result<WrappedKey, SecretsError> {
        Ok(WrappedKey {
            key_id: self.key_id.clone(),
            bytes: local_wrap(&self.key, self.kind(), &self.key_id, secret, key)?,
        })
    }

    async fn unwrap(
        &self,
        secret: &str,
        key_id: &str,
        wrapped: &[u8],
    ) -> Result<DataKey, SecretsError> {
        if key_id != self.key_id {
            return Err(SecretsError::WrongKey {
                secret: secret.to_string(),
                kind: self.kind().into(),
                sealed_with: key_id.to_string(),
                provider: self.describe(),
                have: format!("key `{}`", self.key_id),
            });
        }
        local_unwrap(&self.key, self.kind(), key_id, wrapped).ok_or_else(|| {
            SecretsError::Tampered {
                secret: secret.to_string(),
                provider: self.describe(),
                key_id: key_id.to_string(),
                reason: "the wrapped data key does not authenticate".into(),
            }
        })
    }
}

#[cfg(test)]
mod race_tests {
    use super::*;

    /// Several processes' first use of a new home at once: one key wins, nobody reads a
    /// half-written file, no temporary file is left.
    #[test]
    fn concurrent_open_or_create_agree_on_one_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("secrets.key");
            let ids: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| KeyFile::open_or_create(&path).unwrap().key_id()))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        }
    }
}
