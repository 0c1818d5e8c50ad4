//! Secrets in the state store: every secret gantry keeps (the project's SSH private key, the
//! host-key pins, blueprint secret params and rendered outputs) is sealed by `gantry-secrets`
//! into an envelope before it reaches a [`StateStore`], and opened only in this process.
//!
//! Why one type: the rule "a secret is never written in plaintext" then has one place to hold.
//! A [`Vault`] pairs a store with the configured key provider (and, for `secrets rotate`, the
//! providers secrets may still be wrapped by), and binds every envelope to the store's world id
//! as associated data (with the secret's name): an envelope copied into another gantry world's
//! store, or under another name, does not open. Names are `/`-separated paths, so a cluster's
//! or a project's secrets are one prefix (see [`names`]).

use std::sync::Arc;

use gantry_secrets::{Aad, Envelope, KeyProvider, SecretBytes, open, rewrap, seal};
use gantry_state::StateStore;

use crate::EngineError;

/// Where each secret lives in the store (the one list of names).
pub mod names {
    /// The project's SSH private key (OpenSSH text).
    pub fn ssh_private_key(project: &str) -> String {
        format!("ssh/{project}/private-key")
    }

    /// The project's next SSH key while `gantry secrets rotate-ssh-key` authorizes it on the
    /// nodes: kept until every node has it, so an interrupted rotation resumes with it.
    pub fn ssh_next_private_key(project: &str) -> String {
        format!("ssh/{project}/next-private-key")
    }

    /// Fingerprints of the project's retired SSH keys, one per line: a home whose cached key
    /// is one of them replaces its cache with the store's key instead of refusing.
    pub fn ssh_retired_keys(project: &str) -> String {
        format!("ssh/{project}/retired-keys")
    }

    /// The project's host-key pins (known_hosts lines), one envelope for the project: a run on
    /// 1,000 nodes opens it once.
    pub fn ssh_known_hosts(project: &str) -> String {
        format!("ssh/{project}/known-hosts")
    }

    /// Everything the engine keeps for one cluster incarnation.
    pub fn cluster(project: &str, cluster_uid: &str) -> String {
        format!("cluster/{project}/{cluster_uid}/")
    }

    /// A blueprint secret param (`key` is `BLUEPRINT/PARAM`) of a cluster incarnation.
    pub fn cluster_param(project: &str, cluster_uid: &str, key: &str) -> String {
        format!("{}param/{key}", cluster(project, cluster_uid))
    }

    /// The rendered outputs of a cluster incarnation (JSON).
    pub fn cluster_outputs(project: &str, cluster_uid: &str) -> String {
        format!("{}outputs", cluster(project, cluster_uid))
    }
}

/// What [`Vault::rotate`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Secrets in the store.
    pub total: usize,
    /// Re-wrapped under the current provider now.
    pub rewrapped: usize,
    /// Already under the current provider and key.
    pub already: usize,
}

/// A state store's secrets, sealed and opened with a key provider.
#[derive(Clone)]
pub struct Vault {
    store: Arc<dyn StateStore>,
    current: Arc<dyn KeyProvider>,
    /// Providers that may still have wrapped some secrets (`secrets rotate --from`).
    older: Vec<Arc<dyn KeyProvider>>,
    world: String,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("store", &self.store.kind())
            .field("provider", &self.current.describe())
            .field("world", &self.world)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// The vault of `store` with `provider` (reads the store's world id, the envelopes'
    /// context).
    pub async fn new(
        store: Arc<dyn StateStore>,
        provider: Arc<dyn KeyProvider>,
    ) -> Result<Vault, EngineError> {
        let world = store.world_id().await?;
        Ok(Vault {
            store,
            current: provider,
            older: Vec::new(),
            world,
        })
    }

    /// Also opens what `older` wrapped (rotation away from it).
    pub fn with_older(mut self, older: Arc<dyn KeyProvider>) -> Vault {
        self.older.push(older);
        self
    }

    pub fn provider(&self) -> &dyn KeyProvider {
        self.current.as_ref()
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    fn aad<'a>(&'a self, name: &'a str) -> Aad<'a> {
        Aad::name(name).with_context(self.world.as_bytes())
    }

    /// The current provider, then the older ones.
    fn providers(&self) -> Vec<&dyn KeyProvider> {
        std::iter::once(self.current.as_ref())
            .chain(self.older.iter().map(|p| p.as_ref()))
            .collect()
    }

    async fn open_text(&self, name: &str, text: &str) -> Result<SecretBytes, EngineError> {
        let envelope = Envelope::decode(name, text)?;
        // Two providers of one kind (an old and a new passphrase, two key files) may both
        // claim an envelope: each is tried; the current provider's error is the one reported.
        let first = match open(&[self.current.as_ref()], self.aad(name), &envelope).await {
            Ok(plain) => return Ok(plain),
            Err(e) => e,
        };
        for p in &self.older {
            if let Ok(plain) = open(&[p.as_ref()], self.aad(name), &envelope).await {
                return Ok(plain);
            }
        }
        Err(first.into())
    }

    async fn seal_text(&self, name: &str, plain: &[u8]) -> Result<String, EngineError> {
        Ok(seal(self.current.as_ref(), self.aad(name), plain)
            .await?
            .encode())
    }

    /// The secret `name`, opened; `None` when the store has none.
    pub async fn get(&self, name: &str) -> Result<Option<SecretBytes>, EngineError> {
        match self.store.get_secret(name).await? {
            Some(text) => Ok(Some(self.open_text(name, &text).await?)),
            None => Ok(None),
        }
    }

    /// Seals `plain` and stores it as `name`, replacing what was there.
    pub async fn put(&self, name: &str, plain: &[u8]) -> Result<(), EngineError> {
        let text = self.seal_text(name, plain).await?;
        Ok(self.store.put_secret(name, &text).await?)
    }

    /// The secret `name` if the store has one, else `plain` stored as it — atomically: when two
    /// processes create it at once, both get the one that was stored first.
    pub async fn get_or_create(
        &self,
        name: &str,
        plain: impl FnOnce() -> Vec<u8>,
    ) -> Result<SecretBytes, EngineError> {
        if let Some(s) = self.get(name).await? {
            return Ok(s);
        }
        let plain = SecretBytes::new(plain());
        let text = self.seal_text(name, plain.expose()).await?;
        if self.store.create_secret(name, &text).await? {
            return Ok(plain);
        }
        self.get(name)
            .await?
            .ok_or(EngineError::State(gantry_state::StateError::NotFound {
                what: "secret",
                key: name.to_string(),
            }))
    }

    pub async fn delete(&self, name: &str) -> Result<(), EngineError> {
        Ok(self.store.delete_secret(name).await?)
    }

    /// Deletes every secret whose name starts with `prefix`.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), EngineError> {
        for (name, _) in self.store.list_secrets(prefix).await? {
            self.store.delete_secret(&name).await?;
        }
        Ok(())
    }

    /// Every secret under `prefix`, opened.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, SecretBytes)>, EngineError> {
        let mut out = Vec::new();
        for (name, text) in self.store.list_secrets(prefix).await? {
            let plain = self.open_text(&name, &text).await?;
            out.push((name, plain));
        }
        Ok(out)
    }

    /// Re-wraps every secret of the store under the current provider (the secrets themselves
    /// are never decrypted: only their data keys move). Secrets already under the current
    /// provider and key are left alone, so running it again after an interruption finishes the
    /// work and running it twice does nothing the second time. Each secret is replaced in one
    /// store write; a secret another process deleted meanwhile is not brought back.
    pub async fn rotate(&self) -> Result<Rotation, EngineError> {
        let mut r = Rotation::default();
        let providers = self.providers();
        for (name, text) in self.store.list_secrets("").await? {
            r.total += 1;
            let envelope = Envelope::decode(&name, &text)?;
            if envelope.is_wrapped_by(self.current.as_ref()) {
                r.already += 1;
                continue;
            }
            // Each provider alone (see `open_text`): the current one first, its error reported.
            let mut moved = rewrap(&name, &envelope, &[providers[0]], self.current.as_ref()).await;
            for p in &providers[1..] {
                if moved.is_ok() {
                    break;
                }
                if let Ok(m) = rewrap(&name, &envelope, &[*p], self.current.as_ref()).await {
                    moved = Ok(m);
                }
            }
            let moved = moved?;
            // Check the result opens before it replaces the old one.
            open(&[self.current.as_ref()], self.aad(&name), &moved).await?;
            if self.store.get_secret(&name).await?.is_none() {
                continue;
            }
            self.store.put_secret(&name, &moved.encode()).await?;
            r.rewrapped += 1;
        }
        Ok(r)
    }
}
