//! Resolving where things live (`GANTRY_HOME`) and building the engine's context: the state
//! store, the project's SSH key and pins, the provider of a cluster (through the registry of
//! [`crate::providers`]), and Ctrl-C handling.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use gantry_core::ClusterSpec;
use gantry_engine::app::LoadedCluster;
use gantry_engine::events::Listener;
use gantry_engine::ops::Context;
use gantry_engine::transport::Transport;
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
    /// The values of blueprints' secret params and the rendered outputs, per project and
    /// cluster uid (0700; files 0600), until the encrypted store replaces it.
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }
}

/// The store of cluster secrets and outputs.
pub fn secret_store(home: &Home) -> Arc<dyn gantry_engine::secrets::SecretStore> {
    Arc::new(gantry_engine::secrets::FileSecretStore::new(
        home.secrets_dir(),
    ))
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

pub fn ssh_config(home: &Home, project: &str) -> Result<ClientConfig, Failure> {
    let key_path = home.key_path(project);
    let key = KeyPair::load_or_generate(&key_path)
        .with_context(|| format!("failed to load the project key {}", key_path.display()))?;
    Ok(ClientConfig {
        key: Arc::new(key),
        known_hosts: Arc::new(KnownHosts::new(home.known_hosts(project))),
        connect_timeout: std::time::Duration::from_secs(10),
    })
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

pub fn engine_context(
    g: &Global,
    home: &Home,
    store: Arc<dyn StateStore>,
    ssh: ClientConfig,
    provider: Arc<dyn Provider>,
    listener: Option<Listener>,
) -> Context {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    Context {
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
        secrets: secret_store(home),
    }
}
