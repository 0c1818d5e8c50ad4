//! Resolving where things live (`GANTRY_HOME`) and building the engine's context: the state
//! store, the project's SSH key and pins, the provider of a cluster (through the registry of
//! [`crate::providers`]), and Ctrl-C handling.
//!
//! The project's SSH private key and its host-key pins live in the state store, sealed
//! ([`gantry_engine::vault`]); `GANTRY_HOME/projects/P/id_ed25519` and `known_hosts` are a cache
//! that may be deleted (OpenSSH and the SSH client read the files). [`ssh_config`] brings the
//! cache up to date from the store once per command; [`sync_pins`], after the command, sends
//! the pins the command made or removed back to the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use gantry_core::ClusterSpec;
use gantry_engine::app::LoadedCluster;
use gantry_engine::events::Listener;
use gantry_engine::ops::Context;
use gantry_engine::transport::Transport;
use gantry_engine::vault::Vault;
use gantry_provider::registry::BuildEnv;
use gantry_provider::{Provider, ProviderError};
use gantry_ssh::{ClientConfig, KeyPair, KnownHosts};
use gantry_state::{SqliteStore, StateStore, StateUrl};
use tokio_util::sync::CancellationToken;

use crate::cli::Global;
use crate::exit::{self, Failure};

/// The directory layout under `GANTRY_HOME`, and where the state lives.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
    /// `--state`/`GANTRY_STATE`, or the home's own SQLite file.
    pub state: StateUrl,
}

impl Home {
    /// The home and state store the global flags (and their environment variables) name.
    pub fn from_global(g: &Global) -> Result<Home, Failure> {
        let mut home = Home::resolve(g.home.as_deref())?;
        if let Some(url) = g.state.as_deref().filter(|u| !u.trim().is_empty()) {
            home.state = StateUrl::parse(url).map_err(|e| {
                Failure::new(exit::USAGE, anyhow::Error::new(e)).hint(
                    "set GANTRY_STATE (or --state) to sqlite://PATH, postgres://USER@HOST/DB or \
                     etcd://HOST:PORT, or unset it to use the home's own state.db",
                )
            })?;
        }
        Ok(home)
    }

    pub fn resolve(flag: Option<&Path>) -> Result<Home, Failure> {
        let root = match flag {
            Some(p) => p.to_path_buf(),
            None => {
                let base = std::env::var_os("XDG_DATA_HOME")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
                    .ok_or_else(|| {
                        Failure::new(exit::USAGE, anyhow::anyhow!("cannot tell where to keep data: neither HOME nor XDG_DATA_HOME is set"))
                            .hint("set GANTRY_HOME or pass --home DIR")
                    })?;
                base.join("gantry")
            }
        };
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map(|d| d.join(&root))
                .unwrap_or(root)
        };
        let state = StateUrl::sqlite(root.join("state.db"));
        Ok(Home { root, state })
    }

    pub fn project_dir(&self, project: &str) -> PathBuf {
        self.root.join("projects").join(project)
    }
    pub fn key_path(&self, project: &str) -> PathBuf {
        self.project_dir(project).join("id_ed25519")
    }
    pub fn known_hosts(&self, project: &str) -> PathBuf {
        self.project_dir(project).join("known_hosts")
    }
    /// Where gantry before the sealed store kept blueprints' secret params and outputs in
    /// plaintext files; imported into the state store (and removed) on first use.
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }
}

/// The vault of this process (one store, one provider per invocation): built once, on first
/// use, by [`vault`].
static VAULT: std::sync::Mutex<Option<Vault>> = std::sync::Mutex::new(None);

/// The vault of `store` under this invocation's key provider ([`crate::keys::provider_spec`]). Existing
/// homes' plaintext secret files are imported into it here, once.
pub async fn vault(home: &Home, store: &Arc<dyn StateStore>) -> Result<Vault, Failure> {
    if let Some(v) = VAULT.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(v.clone());
    }
    let spec = crate::keys::provider_spec(&home.root, &home.state)?;
    let provider = crate::keys::build_provider(
        &spec,
        store.as_ref(),
        &crate::keys::CURRENT_PASSPHRASE,
        false,
    )
    .await?;
    let v = Vault::new(store.clone(), provider).await?;
    let imported = gantry_engine::secrets::import_legacy_files(&home.secrets_dir(), &v).await?;
    if imported > 0 {
        tracing::info!(
            files = imported,
            "imported the secret files of an older gantry into the state store and removed them"
        );
    }
    *VAULT.lock().unwrap_or_else(|e| e.into_inner()) = Some(v.clone());
    Ok(v)
}

/// The store of cluster secrets and outputs: sealed in the state store.
pub async fn secret_store(
    home: &Home,
    store: &Arc<dyn StateStore>,
) -> Result<Arc<dyn gantry_engine::secrets::SecretStore>, Failure> {
    let vault = vault(home, store).await?;
    Ok(Arc::new(gantry_engine::secrets::VaultSecretStore::new(
        vault,
    )))
}

/// Opens the store `home.state` names.
pub async fn open_store(home: &Home) -> Result<Arc<dyn StateStore>, Failure> {
    exit::remember_store(home.state.to_string());
    open_store_url(&home.state).await
}

/// Opens the store `state` names (the one in use, or `gantry state migrate`'s target).
pub async fn open_store_url(state: &StateUrl) -> Result<Arc<dyn StateStore>, Failure> {
    match state {
        StateUrl::Sqlite { path } => {
            let store = SqliteStore::open(path)
                .with_context(|| format!("failed to open the state store {state}"))?;
            Ok(Arc::new(store))
        }
        StateUrl::Postgres { url } => {
            let store = gantry_state_pg::PostgresStore::connect(url)
                .await
                .map_err(|e| store_failure(state, e))?;
            Ok(Arc::new(store))
        }
        StateUrl::Etcd { .. } => {
            let store = gantry_state_etcd::EtcdStore::connect_state_url(state)
                .await
                .map_err(|e| store_failure(state, e))?;
            Ok(Arc::new(store))
        }
    }
}

/// A team store that cannot be opened: what failed, with the store's redacted URL.
fn store_failure(url: &StateUrl, e: gantry_state::StateError) -> Failure {
    Failure::new(
        exit::FAILURE,
        anyhow::Error::new(e).context(format!("failed to open the state store {url}")),
    )
    .hint("check that the store answers (`gantry state status`) and the URL's user and password")
}

/// The SSH client configuration of `project`: its key and pins from the state store (see the
/// module doc), the local files brought up to date. Needs the key provider.
pub async fn ssh_config(
    home: &Home,
    store: &Arc<dyn StateStore>,
    project: &str,
) -> Result<ClientConfig, Failure> {
    let vault = vault(home, store).await?;
    let key = project_key(home, &vault, project).await?;
    let known_hosts = KnownHosts::new(home.known_hosts(project));
    load_pins(&vault, &known_hosts, project).await?;
    Ok(ClientConfig {
        key: Arc::new(key),
        known_hosts: Arc::new(known_hosts),
        connect_timeout: std::time::Duration::from_secs(10),
    })
}

/// For listing only (`ls`, the listings of `destroy --all` and `gc`): provider kinds are built
/// with a public key, which listing never uses, so this needs no key provider — the cached
/// key when there is one, else a throwaway key that is not saved.
pub fn listing_ssh_config(home: &Home, project: &str) -> Result<ClientConfig, Failure> {
    let key_path = home.key_path(project);
    let key = KeyPair::load_if_present(&key_path)
        .with_context(|| format!("failed to load the project key {}", key_path.display()))?
        .unwrap_or_else(KeyPair::generate);
    Ok(ClientConfig {
        key: Arc::new(key),
        known_hosts: Arc::new(KnownHosts::new(home.known_hosts(project))),
        connect_timeout: std::time::Duration::from_secs(10),
    })
}

fn ssh_failure(e: gantry_ssh::SshError) -> Failure {
    Failure::new(exit::FAILURE, anyhow::Error::new(e))
}

/// The project's key: the store's (cached locally); else the home's own, imported; else a new
/// one. Created in the store only if absent, so two homes starting at once agree on one key.
async fn project_key(
    home: &Home,
    vault: &gantry_engine::vault::Vault,
    project: &str,
) -> Result<KeyPair, Failure> {
    use gantry_engine::vault::names;
    let name = names::ssh_private_key(project);
    let path = home.key_path(project);
    let local = KeyPair::load_if_present(&path)
        .with_context(|| format!("failed to load the project key {}", path.display()))?;
    let stored = match vault.get(&name).await? {
        Some(pem) => pem,
        None => {
            let candidate = match &local {
                Some(k) => k.clone(),
                None => KeyPair::generate(),
            };
            let pem = candidate.to_openssh().map_err(ssh_failure)?;
            vault
                .get_or_create(&name, || pem.as_bytes().to_vec())
                .await?
        }
    };
    let key =
        KeyPair::from_openssh(&format!("secret `{name}`"), stored.expose()).map_err(ssh_failure)?;
    match local {
        Some(l) if l.fingerprint() == key.fingerprint() => {}
        // The cached key was rotated away (`gantry secrets rotate-ssh-key`, maybe from another
        // home): the cache follows the store.
        Some(l) if is_retired(vault, project, &l.fingerprint()).await? => {
            key.save(&path).with_context(|| {
                format!("failed to cache the project key in {}", path.display())
            })?;
            tracing::info!(
                "the cached project key {} was retired; cached the current one",
                l.fingerprint()
            );
        }
        Some(l) => {
            return Err(Failure::new(
                exit::FAILURE,
                anyhow::anyhow!(
                    "the project key {} ({}) is not the key the state store keeps for project {project} ({}); \
                     gantry never replaces either silently",
                    path.display(),
                    l.fingerprint(),
                    key.fingerprint()
                ),
            )
            .hint(format!(
                "the local file is only a cache of the store's key: move {} away to use the store's \
                 (nodes that trust only the local key must be re-created or given the store's key)",
                path.display()
            )));
        }
        None => key
            .save(&path)
            .with_context(|| format!("failed to cache the project key in {}", path.display()))?,
    }
    Ok(key)
}

/// Whether `fingerprint` is one of the project's retired SSH keys.
async fn is_retired(
    vault: &gantry_engine::vault::Vault,
    project: &str,
    fingerprint: &str,
) -> Result<bool, Failure> {
    let name = gantry_engine::vault::names::ssh_retired_keys(project);
    Ok(vault.get(&name).await?.is_some_and(|list| {
        String::from_utf8_lossy(list.expose())
            .lines()
            .any(|l| l.trim() == fingerprint)
    }))
}

/// Pins as the store keeps them: `ALIAS ALGO BASE64` lines.
fn parse_pins(text: &[u8]) -> std::collections::BTreeMap<String, String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (alias, algo, data) = (f.next()?, f.next()?, f.next()?);
            Some((alias.to_string(), format!("{algo} {data}")))
        })
        .collect()
}

fn format_pins(pins: &std::collections::BTreeMap<String, String>) -> String {
    pins.iter().map(|(a, k)| format!("{a} {k}\n")).collect()
}

/// What [`load_pins`] read, for [`sync_pins`] to tell this command's changes from others'.
struct PinSync {
    vault: gantry_engine::vault::Vault,
    project: String,
    known_hosts: KnownHosts,
    base: std::collections::BTreeMap<String, String>,
}

static PINS: std::sync::Mutex<Option<PinSync>> = std::sync::Mutex::new(None);

/// Brings the store's pins into the local known_hosts file (one read of the store per
/// command). A pin the file has with another key is an error, never replaced.
async fn load_pins(
    vault: &gantry_engine::vault::Vault,
    known_hosts: &KnownHosts,
    project: &str,
) -> Result<(), Failure> {
    let name = gantry_engine::vault::names::ssh_known_hosts(project);
    let base = vault
        .get(&name)
        .await?
        .map(|t| parse_pins(t.expose()))
        .unwrap_or_default();
    let conflicts = known_hosts.merge(base.clone()).map_err(ssh_failure)?;
    if let Some((alias, local)) = conflicts.first() {
        return Err(Failure::new(
            exit::TRANSPORT,
            anyhow::anyhow!(
                "the host key pinned for {alias} in {} ({local}) is not the one the state store pins ({}); \
                 {} more such pin(s); gantry never replaces a pin silently",
                known_hosts.path().display(),
                base.get(alias).map(String::as_str).unwrap_or("?"),
                conflicts.len() - 1
            ),
        )
        .hint(format!(
            "the local known_hosts is a cache: if the store's pin is right (the node was re-created by \
             another machine), delete {} and run again; otherwise find out why the keys differ",
            known_hosts.path().display()
        )));
    }
    let mut slot = PINS.lock().unwrap_or_else(|e| e.into_inner());
    if slot.as_ref().is_none_or(|s| s.project != project) {
        *slot = Some(PinSync {
            vault: vault.clone(),
            project: project.to_string(),
            known_hosts: known_hosts.clone(),
            base,
        });
    }
    Ok(())
}

/// After a command: the pins it made (first contact, a new node's own key) and removed (a
/// destroyed node) reach the store, merged with what other machines changed meanwhile. A pin
/// both changed differently is an error naming it. Nothing to do when [`ssh_config`] was not
/// used or nothing changed.
pub async fn sync_pins() -> Result<(), Failure> {
    let Some(sync) = PINS.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return Ok(());
    };
    let mine = sync.known_hosts.all_pins().map_err(ssh_failure)?;
    if mine == sync.base {
        return Ok(());
    }
    let name = gantry_engine::vault::names::ssh_known_hosts(&sync.project);
    let theirs = sync
        .vault
        .get(&name)
        .await?
        .map(|t| parse_pins(t.expose()))
        .unwrap_or_default();
    let mut result = theirs.clone();
    let aliases: std::collections::BTreeSet<&String> = sync
        .base
        .keys()
        .chain(mine.keys())
        .chain(theirs.keys())
        .collect();
    let mut conflicts = Vec::new();
    for alias in aliases {
        let (b, m, t) = (sync.base.get(alias), mine.get(alias), theirs.get(alias));
        if m == b {
            continue;
        }
        if t == b || t == m {
            match m {
                Some(k) => result.insert(alias.clone(), k.clone()),
                None => result.remove(alias),
            };
        } else {
            conflicts.push(alias.clone());
        }
    }
    if !conflicts.is_empty() {
        return Err(Failure::new(
            exit::TRANSPORT,
            anyhow::anyhow!(
                "the host key pins of {} changed here and on another machine at once, differently; \
                 the state store keeps the other machine's",
                conflicts.join(", ")
            ),
        )
        .hint(format!(
            "delete {} to take the store's pins, then check the nodes' host keys",
            sync.known_hosts.path().display()
        )));
    }
    if result != theirs {
        sync.vault
            .put(&name, format_pins(&result).as_bytes())
            .await?;
    }
    Ok(())
}

pub fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".into())
}

/// What this binary gives every provider kind to build providers with.
pub fn build_env(home: &Home, ssh: &ClientConfig, project: &str) -> BuildEnv {
    BuildEnv {
        project: project.into(),
        data_dir: home.root.clone(),
        user: current_user(),
        ssh_public_key: ssh.key.public_openssh(),
        executable: std::env::current_exe().ok(),
    }
}

/// A provider that cannot be built (a kind this binary lacks, options that do not decode), as
/// a usage failure with the provider's hint.
pub fn provider_failure(e: ProviderError) -> Failure {
    let hint = e.hint.clone();
    let f = Failure::new(exit::USAGE, anyhow::Error::new(e));
    match hint {
        Some(h) => f.hint(h),
        None => f,
    }
}

/// The provider a spec names, built by its kind ([`crate::providers`]) and checked.
pub fn provider_for_spec(
    home: &Home,
    ssh: &ClientConfig,
    project: &str,
    spec: &ClusterSpec,
) -> Result<Arc<dyn Provider>, Failure> {
    crate::providers::registry()
        .build(spec, &build_env(home, ssh, project))
        .map_err(provider_failure)
}

/// How a spec's nodes are reached when not over SSH (Docker exec); None: SSH.
pub fn transport_for_spec(
    home: &Home,
    ssh: &ClientConfig,
    project: &str,
    spec: &ClusterSpec,
) -> Result<Option<Arc<dyn Transport>>, Failure> {
    crate::providers::registry()
        .transport(spec, &build_env(home, ssh, project))
        .map_err(provider_failure)
}

/// Where an unrecorded cluster's nodes may be, most likely first (local nodes, then the
/// default Docker engine).
pub fn default_places(home: &Home, ssh: &ClientConfig, project: &str) -> Vec<Arc<dyn Provider>> {
    crate::providers::registry().default_places(&build_env(home, ssh, project))
}

/// The provider of a cluster the store has no record of: the first default place.
pub fn unrecorded_provider(
    home: &Home,
    ssh: &ClientConfig,
    project: &str,
) -> Result<Arc<dyn Provider>, Failure> {
    default_places(home, ssh, project)
        .into_iter()
        .next()
        .ok_or_else(|| {
            Failure::new(
                exit::USAGE,
                anyhow::anyhow!("this gantry has no provider for clusters it has no record of"),
            )
        })
}

/// The provider of an existing cluster, from its recorded spec (local when there is no record:
/// the cluster may have been created by a run that crashed before recording it). A record whose
/// spec does not decode is an error naming it ([`gantry_engine::app::load_cluster`]).
pub async fn provider_for_cluster(
    home: &Home,
    store: &Arc<dyn StateStore>,
    ssh: &ClientConfig,
    project: &str,
    cluster: &str,
) -> Result<(Arc<dyn Provider>, Option<LoadedCluster>), Failure> {
    let loaded = gantry_engine::app::load_cluster(store.as_ref(), project, cluster).await?;
    let provider = match &loaded {
        Some(c) => provider_for_spec(home, ssh, project, &c.spec)?,
        None => unrecorded_provider(home, ssh, project)?,
    };
    Ok((provider, loaded))
}

static CANCEL: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();

/// Installs the Ctrl-C policy for this process: the first Ctrl-C cancels the shared token
/// (in-flight work finishes, nothing new starts); the second aborts with exit code 130.
/// Called first thing, so an early Ctrl-C is never handled by the default action.
pub fn install_ctrl_c() {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CANCEL.get_or_init(CancellationToken::new).clone();
    // Registration happens here, synchronously; only the waiting is in the task.
    let Ok(mut sigint) = signal(SignalKind::interrupt()) else {
        return;
    };
    tokio::spawn(async move {
        if sigint.recv().await.is_none() {
            return;
        }
        eprintln!(
            "\ninterrupt: finishing in-flight steps, starting nothing new (Ctrl-C again to abort)"
        );
        token.cancel();
        if sigint.recv().await.is_some() {
            eprintln!("aborted");
            std::process::exit(exit::INTERRUPTED);
        }
    });
}

/// The process-wide cancellation token fired by the first Ctrl-C.
pub fn cancel_on_ctrl_c() -> CancellationToken {
    CANCEL.get_or_init(CancellationToken::new).clone()
}

pub async fn engine_context(
    g: &Global,
    home: &Home,
    store: Arc<dyn StateStore>,
    ssh: ClientConfig,
    provider: Arc<dyn Provider>,
    listener: Option<Listener>,
) -> Result<Context, Failure> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let secrets = secret_store(home, &store).await?;
    Ok(Context {
        project: g.project.clone(),
        owner: current_user(),
        provider,
        store,
        ssh,
        cancel: cancel_on_ctrl_c(),
        listener,
        lock_timeout: g.lock_timeout,
        lock_ttl: g.lock_ttl,
        command,
        transport: None,
        secrets,
    })
}
