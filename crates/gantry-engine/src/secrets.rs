//! Where a cluster's secrets (the values of blueprints' `secret` params) and its rendered
//! blueprint outputs are kept: in the state store, sealed ([`crate::vault`]), never in the
//! plaintext records (specs, events) beside them.
//!
//! [`SecretStore`] is the small interface the engine uses; [`VaultSecretStore`] keeps each
//! value as an envelope named after the cluster incarnation (project + cluster uid), deleted
//! with the cluster. Outputs live next to the secrets because secret outputs (a connection URL
//! with its password) are secrets themselves. Older gantry versions kept them in plaintext files
//! under `GANTRY_HOME/secrets`: [`import_legacy_files`] moves those into the store.
//!
//! A value is generated once per cluster: 32 characters from `[A-Za-z0-9]` (about 190 bits)
//! drawn from the operating system's CSPRNG, so it needs no quoting in a config file, a URL or
//! a shell script.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use gantry_core::secret::{MASK, Secret};
use serde::{Deserialize, Serialize};

use crate::EngineError;
use crate::vault::{Vault, names};

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

/// What one cluster's file of an older gantry holds (read only to import it).
#[derive(Default, Serialize, Deserialize)]
struct ClusterSecrets {
    #[serde(default)]
    secrets: BTreeMap<String, Secret>,
    #[serde(default)]
    outputs: Outputs,
}

/// [`SecretStore`] in the state store, through a [`Vault`]: one envelope per secret param
/// (`cluster/PROJECT/UID/param/BLUEPRINT/PARAM`) and one for the cluster's outputs
/// (`cluster/PROJECT/UID/outputs`, replaced as a whole as `put_outputs` is).
///
/// Why one envelope per param rather than one per cluster: creating a param is then the store's
/// atomic create-if-absent (two runs can never keep two values), no read-modify-write of a
/// shared blob is needed, and deleting the cluster is deleting one name prefix.
#[derive(Debug, Clone)]
pub struct VaultSecretStore {
    vault: Vault,
}

impl VaultSecretStore {
    pub fn new(vault: Vault) -> VaultSecretStore {
        VaultSecretStore { vault }
    }
}

fn utf8(name: &str, bytes: &[u8]) -> Result<String, EngineError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| EngineError::SecretUnreadable {
        name: name.to_string(),
        reason: "it is not UTF-8 text".into(),
    })
}

#[async_trait::async_trait]
impl SecretStore for VaultSecretStore {
    async fn get_or_create(
        &self,
        project: &str,
        cluster_uid: &str,
        key: &str,
    ) -> Result<Secret, EngineError> {
        let name = names::cluster_param(project, cluster_uid, key);
        let plain = self
            .vault
            .get_or_create(&name, || generate().expose().as_bytes().to_vec())
            .await?;
        Ok(Secret::new(utf8(&name, plain.expose())?))
    }

    async fn all(
        &self,
        project: &str,
        cluster_uid: &str,
    ) -> Result<BTreeMap<String, Secret>, EngineError> {
        let prefix = names::cluster_param(project, cluster_uid, "");
        let mut out = BTreeMap::new();
        for (name, plain) in self.vault.list(&prefix).await? {
            let key = name[prefix.len()..].to_string();
            out.insert(key, Secret::new(utf8(&name, plain.expose())?));
        }
        Ok(out)
    }

    async fn put_outputs(
        &self,
        project: &str,
        cluster_uid: &str,
        outputs: &Outputs,
    ) -> Result<(), EngineError> {
        let name = names::cluster_outputs(project, cluster_uid);
        if self.outputs(project, cluster_uid).await? == *outputs {
            return Ok(());
        }
        let json = zeroize_json(outputs);
        self.vault.put(&name, json.expose()).await
    }

    async fn outputs(&self, project: &str, cluster_uid: &str) -> Result<Outputs, EngineError> {
        let name = names::cluster_outputs(project, cluster_uid);
        match self.vault.get(&name).await? {
            None => Ok(Outputs::new()),
            Some(plain) => {
                serde_json::from_slice(plain.expose()).map_err(|e| EngineError::SecretUnreadable {
                    name,
                    reason: format!("not the outputs gantry writes: {e}"),
                })
            }
        }
    }

    async fn delete_cluster(&self, project: &str, cluster_uid: &str) -> Result<(), EngineError> {
        self.vault
            .delete_prefix(&names::cluster(project, cluster_uid))
            .await
    }
}

/// Outputs as JSON, held so that it is wiped when dropped.
fn zeroize_json(outputs: &Outputs) -> gantry_secrets::SecretBytes {
    // Serialising maps of strings cannot fail.
    gantry_secrets::SecretBytes::new(serde_json::to_vec(outputs).unwrap_or_default())
}

/// Imports the secret files an older gantry kept under `root` (`$GANTRY_HOME/secrets`:
/// `ROOT/PROJECT/UID.json`, plaintext) into `vault`, then removes each file once its content
/// is in the store, and the directories when empty. A value the store already has is kept (the
/// store is the newer truth). Answers how many files were imported; a root that does not exist
/// is nothing to do.
pub async fn import_legacy_files(root: &Path, vault: &Vault) -> Result<usize, EngineError> {
    let io = |action, path: &Path, source| EngineError::SecretStore {
        action,
        path: path.to_path_buf(),
        source,
    };
    let projects = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("read", root, e)),
    };
    let store = VaultSecretStore::new(vault.clone());
    let mut imported = 0;
    for project in projects {
        let project = project.map_err(|e| io("read", root, e))?;
        let dir = project.path();
        if !project
            .file_type()
            .map_err(|e| io("read", &dir, e))?
            .is_dir()
        {
            continue;
        }
        let project_name = project.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(&dir).map_err(|e| io("read", &dir, e))? {
            let file = file.map_err(|e| io("read", &dir, e))?;
            let path = file.path();
            let fname = file.file_name().to_string_lossy().into_owned();
            // Leftover temporary files of an interrupted write hold nothing the real file lacks.
            if fname.starts_with('.') && fname.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(uid) = fname.strip_suffix(".json") else {
                continue;
            };
            let bytes =
                zeroize::Zeroizing::new(std::fs::read(&path).map_err(|e| io("read", &path, e))?);
            let data: ClusterSecrets = serde_json::from_slice(&bytes)
                .map_err(|e| io("read", &path, std::io::Error::other(e.to_string())))?;
            for (key, value) in &data.secrets {
                let name = names::cluster_param(&project_name, uid, key);
                vault
                    .get_or_create(&name, || value.expose().as_bytes().to_vec())
                    .await?;
            }
            if !data.outputs.is_empty() && store.outputs(&project_name, uid).await?.is_empty() {
                store.put_outputs(&project_name, uid, &data.outputs).await?;
            }
            std::fs::remove_file(&path).map_err(|e| io("remove", &path, e))?;
            imported += 1;
        }
        let _ = std::fs::remove_dir(&dir);
    }
    let _ = std::fs::remove_dir(root);
    Ok(imported)
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
    use std::sync::Arc;

    use gantry_secrets::KeyFile;
    use gantry_state::{SqliteStore, StateStore};

    use super::*;

    async fn vault(dir: &Path) -> (Vault, Arc<dyn StateStore>) {
        let store: Arc<dyn StateStore> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let key = Arc::new(KeyFile::create(dir.join("secrets.key")).unwrap());
        (Vault::new(store.clone(), key).await.unwrap(), store)
    }

    #[tokio::test]
    async fn vault_store_keeps_secrets_sealed_and_forgets_them_with_the_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let (v, store) = vault(dir.path()).await;
        let s = VaultSecretStore::new(v);
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
        assert_eq!(s.all("default", "uid-1").await.unwrap().len(), 2);

        // The store holds envelopes only: no value in any of them.
        let stored = store.list_secrets("").await.unwrap();
        assert_eq!(stored.len(), 4, "{stored:?}");
        for (_, envelope) in &stored {
            for secret in [&a, &b, &c] {
                assert!(!envelope.contains(secret.expose()));
            }
        }

        s.delete_cluster("default", "uid-1").await.unwrap();
        s.delete_cluster("default", "uid-1").await.unwrap();
        assert!(s.all("default", "uid-1").await.unwrap().is_empty());
        assert!(s.outputs("default", "uid-1").await.unwrap().is_empty());
        assert_eq!(s.all("default", "uid-2").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn legacy_files_are_imported_once_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (v, store) = vault(dir.path()).await;
        let root = dir.path().join("secrets");
        std::fs::create_dir_all(root.join("default")).unwrap();
        let mut old = ClusterSecrets::default();
        old.secrets
            .insert("pg/password".into(), Secret::new("old-value-123"));
        old.outputs.entry("pg".into()).or_default().insert(
            "url".into(),
            OutputValue {
                value: "x://old-value-123".into(),
                secret: true,
                description: String::new(),
            },
        );
        let file = root.join("default").join("uid-1.json");
        std::fs::write(&file, serde_json::to_vec(&old).unwrap()).unwrap();

        assert_eq!(import_legacy_files(&root, &v).await.unwrap(), 1);
        assert!(!file.exists(), "the plaintext file is removed");
        assert!(!root.exists(), "and its empty directories");
        let s = VaultSecretStore::new(v.clone());
        assert_eq!(
            s.get_or_create("default", "uid-1", "pg/password")
                .await
                .unwrap()
                .expose(),
            "old-value-123"
        );
        assert_eq!(s.outputs("default", "uid-1").await.unwrap(), old.outputs);
        for (_, envelope) in store.list_secrets("").await.unwrap() {
            assert!(!envelope.contains("old-value-123"));
        }
        // Nothing left: a second import does nothing.
        assert_eq!(import_legacy_files(&root, &v).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn rotate_rewraps_every_secret_once() {
        let dir = tempfile::tempdir().unwrap();
        let (v, store) = vault(dir.path()).await;
        let s = VaultSecretStore::new(v.clone());
        let a = s.get_or_create("p", "u", "bp/a").await.unwrap();
        v.put(&names::ssh_private_key("p"), b"PRIVATE")
            .await
            .unwrap();

        let old_key: Arc<dyn gantry_secrets::KeyProvider> =
            Arc::new(KeyFile::open(dir.path().join("secrets.key")).unwrap());
        let new_key = Arc::new(KeyFile::create(dir.path().join("new.key")).unwrap());
        // Without the old provider, the new one cannot open the secrets: a clear error.
        let only_new = Vault::new(store.clone(), new_key.clone()).await.unwrap();
        let e = only_new
            .get(&names::ssh_private_key("p"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("wrong key"), "{e}");

        let rotating = only_new.clone().with_older(old_key.clone());
        // An interrupted rotation: one secret already moved, one not. Running it finishes the
        // work, moving only what is left.
        let name = names::ssh_private_key("p");
        let text = store.get_secret(&name).await.unwrap().unwrap();
        let moved = gantry_secrets::rewrap(
            &name,
            &gantry_secrets::Envelope::decode(&name, &text).unwrap(),
            &[old_key.as_ref()],
            new_key.as_ref(),
        )
        .await
        .unwrap();
        store.put_secret(&name, &moved.encode()).await.unwrap();
        let r = rotating.rotate().await.unwrap();
        assert_eq!((r.total, r.rewrapped, r.already), (2, 1, 1));
        let r = rotating.rotate().await.unwrap();
        assert_eq!((r.total, r.rewrapped, r.already), (2, 0, 2), "idempotent");
        // The new key alone opens everything now.
        let s2 = VaultSecretStore::new(only_new.clone());
        assert_eq!(s2.get_or_create("p", "u", "bp/a").await.unwrap(), a);
        assert_eq!(
            only_new
                .get(&names::ssh_private_key("p"))
                .await
                .unwrap()
                .unwrap()
                .expose(),
            b"PRIVATE"
        );
    }
}
