//! Where a cluster's secrets (the values of blueprints' `secret` params) and its rendered
//! blueprint outputs are kept: outside the state store, which holds specs and events in
//! plaintext and is meant to be shared and backed up.
//!
//! [`SecretStore`] is the small interface the engine uses; the encrypted store planned for team
//! state replaces [`FileSecretStore`] behind it. Until then each cluster incarnation (project +
//! cluster uid) has one JSON file, mode 0600, in a 0700 directory under `GANTRY_HOME`, written
//! atomically and deleted with the cluster. Outputs live next to the secrets because secret
//! outputs (a connection URL with its password) are secrets themselves.
//!
//! A value is generated once per cluster: 32 characters from `[A-Za-z0-9]` (about 190 bits)
//! drawn from the operating system's CSPRNG, so it needs no quoting in a config file, a URL or
//! a shell script.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gantry_core::secret::{MASK, Secret};
use serde::{Deserialize, Serialize};

use crate::EngineError;

/// Length of a generated secret.
pub const SECRET_LEN: usize = 32;

/// A fresh random secret.
pub fn generate() -> Secret {
    use rand::Rng as _;
    use rand::TryRngCore as _;
    use rand::rngs::OsRng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = OsRng.unwrap_err();
    let s: String = (0..SECRET_LEN)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    Secret::new(s)
}

/// One rendered output of a blueprint.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputValue {
    pub value: String,
    /// Masked unless explicitly revealed.
    pub secret: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl OutputValue {
    /// The value as shown: itself, or [`MASK`] for a secret unless `reveal`.
    pub fn shown(&self, reveal: bool) -> &str {
        if self.secret && !reveal {
            MASK
        } else {
            &self.value
        }
    }
}

impl std::fmt::Debug for OutputValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputValue")
            .field("value", &self.shown(false))
            .field("secret", &self.secret)
            .finish()
    }
}

/// A cluster's outputs: blueprint name → output name → value.
pub type Outputs = BTreeMap<String, BTreeMap<String, OutputValue>>;

/// Keeps a cluster's secrets and outputs. Keys of secrets are `BLUEPRINT/PARAM`. Every method
/// names the cluster incarnation by project and cluster uid, so a destroyed and re-created
/// cluster of the same name starts with fresh secrets.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    /// The secret `key`, generated and kept the first time it is asked for.
    async fn get_or_create(
        &self,
        project: &str,
        cluster_uid: &str,
        key: &str,
    ) -> Result<Secret, EngineError>;

    /// Every secret kept for the cluster (never creates any).
    async fn all(
        &self,
        project: &str,
        cluster_uid: &str,
    ) -> Result<BTreeMap<String, Secret>, EngineError>;

    /// Replaces the cluster's outputs.
    async fn put_outputs(
        &self,
        project: &str,
        cluster_uid: &str,
        outputs: &Outputs,
    ) -> Result<(), EngineError>;

    /// The cluster's outputs (empty when none were kept).
    async fn outputs(&self, project: &str, cluster_uid: &str) -> Result<Outputs, EngineError>;

    /// Forgets everything of the cluster (idempotent).
    async fn delete_cluster(&self, project: &str, cluster_uid: &str) -> Result<(), EngineError>;
}

/// What one cluster's file holds.
#[derive(Default, Serialize, Deserialize)]
struct ClusterSecrets {
    #[serde(default)]
    secrets: BTreeMap<String, Secret>,
    #[serde(default)]
    outputs: Outputs,
}

/// [`SecretStore`] in files: `ROOT/<project>/<cluster uid>.json`, 0600, in 0700 directories.
pub struct FileSecretStore {
    root: PathBuf,
    /// Serialises this process's read-modify-write cycles (runs of other processes on the same
    /// cluster are excluded by the cluster lock; readers see whole files thanks to renames).
    lock: Mutex<()>,
}

impl std::fmt::Debug for FileSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSecretStore")
            .field("root", &self.root)
            .finish()
    }
}

fn io_err(action: &'static str, path: &Path, source: std::io::Error) -> EngineError {
    EngineError::SecretStore {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// One plain path component (a project or a uid never escapes the root, nor hides as a dot
/// file).
fn component(s: &str, root: &Path) -> Result<(), EngineError> {
    let ok = !s.is_empty()
        && !s.starts_with('.')
        && s.len() <= 200
        && !s.bytes().any(|b| b == b'/' || b == 0);
    if ok {
        Ok(())
    } else {
        Err(io_err(
            "use",
            &root.join(s),
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{s:?} is not a valid project or cluster uid"),
            ),
        ))
    }
}

impl FileSecretStore {
    /// A store under `root` (`$GANTRY_HOME/secrets`); nothing is created until a secret is.
    pub fn new(root: impl Into<PathBuf>) -> FileSecretStore {
        FileSecretStore {
            root: root.into(),
            lock: Mutex::new(()),
        }
    }

    fn path(&self, project: &str, uid: &str) -> Result<PathBuf, EngineError> {
        component(project, &self.root)?;
        component(uid, &self.root)?;
        Ok(self.root.join(project).join(format!("{uid}.json")))
    }

    /// Creates `dir` 0700 (and the root), and makes an existing one 0700 again.
    fn private_dir(dir: &Path) -> Result<(), EngineError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_err("create", dir, e))?;
        for d in [dir.parent(), Some(dir)].into_iter().flatten() {
            let meta = std::fs::symlink_metadata(d).map_err(|e| io_err("inspect", d, e))?;
            if meta.file_type().is_symlink() || !meta.is_dir() {
                return Err(io_err(
                    "use",
                    d,
                    std::io::Error::other("not a directory (a symlink is refused)"),
                ));
            }
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| io_err("restrict", d, e))?;
            }
        }
        Ok(())
    }

    fn read(path: &Path) -> Result<ClusterSecrets, EngineError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io_err("read", path, std::io::Error::other(e.to_string()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClusterSecrets::default()),
            Err(e) => Err(io_err("read", path, e)),
        }
    }

    /// Writes `data` to `path` atomically: a new 0600 file (never readable by others, not even
    /// for a moment), synced, then renamed over the old one.
    fn write(path: &Path, data: &ClusterSecrets) -> Result<(), EngineError> {
        let dir = path.parent().expect("a file in a directory");
        Self::private_dir(dir)?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy(),
            uuid::Uuid::new_v4().simple()
        ));
        let json = serde_json::to_vec(data).expect("secrets serialise");
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err("write", path, e));
        }
        Ok(())
    }

    fn update<T>(
        &self,
        project: &str,
        uid: &str,
        f: impl FnOnce(&mut ClusterSecrets) -> (T, bool),
    ) -> Result<T, EngineError> {
        let path = self.path(project, uid)?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut data = Self::read(&path)?;
        let (out, changed) = f(&mut data);
        if changed {
            Self::write(&path, &data)?;
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl SecretStore for FileSecretStore {
    async fn get_or_create(
        &self,
        project: &str,
        cluster_uid: &str,
        key: &str,
    ) -> Result<Secret, EngineError> {
        self.update(project, cluster_uid, |d| match d.secrets.get(key) {
            Some(s) => (s.clone(), false),
            None => {
                let s = generate();
                d.secrets.insert(key.to_string(), s.clone());
                (s, true)
            }
        })
    }

    async fn all(
        &self,
        project: &str,
        cluster_uid: &str,
    ) -> Result<BTreeMap<String, Secret>, EngineError> {
        Ok(Self::read(&self.path(project, cluster_uid)?)?.secrets)
    }

    async fn put_outputs(
        &self,
        project: &str,
        cluster_uid: &str,
        outputs: &Outputs,
    ) -> Result<(), EngineError> {
        self.update(project, cluster_uid, |d| {
            let changed = d.outputs != *outputs;
            d.outputs = outputs.clone();
            ((), changed)
        })
    }

    async fn outputs(&self, project: &str, cluster_uid: &str) -> Result<Outputs, EngineError> {
        Ok(Self::read(&self.path(project, cluster_uid)?)?.outputs)
    }

    async fn delete_cluster(&self, project: &str, cluster_uid: &str) -> Result<(), EngineError> {
        let path = self.path(project, cluster_uid)?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("delete", &path, e)),
        }
        // The project's directory goes with its last cluster (fails harmlessly otherwise).
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }
}

/// [`SecretStore`] in memory, for tests.
#[derive(Default)]
pub struct MemorySecretStore {
    data: Mutex<BTreeMap<(String, String), ClusterSecrets>>,
}

impl MemorySecretStore {
    pub fn new() -> MemorySecretStore {
        MemorySecretStore::default()
    }
}

#[async_trait::async_trait]
impl SecretStore for MemorySecretStore {
    async fn get_or_create(
        &self,
        project: &str,
        cluster_uid: &str,
        key: &str,
    ) -> Result<Secret, EngineError> {
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let c = data
            .entry((project.into(), cluster_uid.into()))
            .or_default();
        Ok(c.secrets.entry(key.into()).or_insert_with(generate).clone())
    }

    async fn all(
        &self,
        project: &str,
        cluster_uid: &str,
    ) -> Result<BTreeMap<String, Secret>, EngineError> {
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        Ok(data
            .get(&(project.into(), cluster_uid.into()))
            .map(|c| c.secrets.clone())
            .unwrap_or_default())
    }

    async fn put_outputs(
        &self,
        project: &str,
        cluster_uid: &str,
        outputs: &Outputs,
    ) -> Result<(), EngineError> {
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        data.entry((project.into(), cluster_uid.into()))
            .or_default()
            .outputs = outputs.clone();
        Ok(())
    }

    async fn outputs(&self, project: &str, cluster_uid: &str) -> Result<Outputs, EngineError> {
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        Ok(data
            .get(&(project.into(), cluster_uid.into()))
            .map(|c| c.outputs.clone())
            .unwrap_or_default())
    }

    async fn delete_cluster(&self, project: &str, cluster_uid: &str) -> Result<(), EngineError> {
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        data.remove(&(project.into(), cluster_uid.into()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[tokio::test]
    async fn file_store_keeps_secrets_private_and_forgets_them_with_the_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("secrets");
        let s = FileSecretStore::new(&root);
        let a = s
            .get_or_create("default", "uid-1", "pg/password")
            .await
            .unwrap();
        assert_eq!(a.expose().len(), SECRET_LEN);
        assert!(a.expose().bytes().all(|b| b.is_ascii_alphanumeric()));
        // Once per cluster: the same value again, another one for another key or cluster.
        let again = s
            .get_or_create("default", "uid-1", "pg/password")
            .await
            .unwrap();
        assert_eq!(a, again);
        let b = s
            .get_or_create("default", "uid-1", "pg/other")
            .await
            .unwrap();
        let c = s
            .get_or_create("default", "uid-2", "pg/password")
            .await
            .unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);

        let file = root.join("default").join("uid-1.json");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("default")), 0o700);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(root.join("default"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        let mut outputs = Outputs::new();
        outputs.entry("pg".into()).or_default().insert(
            "url".into(),
            OutputValue {
                value: format!("x://{}", a.expose()),
                secret: true,
                description: String::new(),
            },
        );
        s.put_outputs("default", "uid-1", &outputs).await.unwrap();
        assert_eq!(s.outputs("default", "uid-1").await.unwrap(), outputs);
        assert!(!format!("{outputs:?}").contains(a.expose()));
        assert_eq!(s.all("default", "uid-1").await.unwrap().len(), 2);

        // A directory made readable by others is made private again.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        s.get_or_create("default", "uid-1", "pg/third")
            .await
            .unwrap();
        assert_eq!(mode(&root), 0o700);

        s.delete_cluster("default", "uid-1").await.unwrap();
        s.delete_cluster("default", "uid-1").await.unwrap();
        assert!(!file.exists());
        assert!(s.all("default", "uid-1").await.unwrap().is_empty());
        assert!(s.outputs("default", "uid-1").await.unwrap().is_empty());
        s.delete_cluster("default", "uid-2").await.unwrap();
        assert!(!root.join("default").exists(), "the empty project dir goes");

        // Nothing outside the root.
        let e = s.get_or_create("../x", "u", "k").await.unwrap_err();
        let cause = std::error::Error::source(&e).map(|c| c.to_string());
        assert!(cause.is_some_and(|c| c.contains("not a valid")), "{e}");
        assert!(s.get_or_create("p", "a/b", "k").await.is_err());
    }
}
