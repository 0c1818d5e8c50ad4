//! The one error enum of the engine.

use gantry_provider::ProviderError;
use gantry_state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("state store: {0}")]
    State(#[from] StateError),
    #[error(
        "cluster {cluster} is locked by {holder} (lease expires in {expires_in_secs} s); waited {waited_secs} s"
    )]
    LockTimeout {
        cluster: String,
        holder: String,
        expires_in_secs: u64,
        waited_secs: u64,
    },
    /// The run's lease lapsed before it could be renewed (the process stalled, or the store
    /// was out of reach) and, when `taken_over`, another run took the lock: the run stopped, and
    /// the store refused every write it made after the takeover (fencing).
    #[error(
        "lost the lock on cluster {cluster}: {}",
        if *taken_over {
            "another run took it over after our lease lapsed; the store refused every write of ours since"
        } else {
            "our lease lapsed before it could be renewed (the process stalled or the store was out of reach)"
        }
    )]
    LockLost { cluster: String, taken_over: bool },
    #[error("cluster {cluster} not found in project {project}")]
    ClusterNotFound { project: String, cluster: String },
    /// Nodes tagged with the cluster's name belong to another gantry world (another home, or an
    /// older gantry's cluster this store has no record of): gantry never adopts, changes or
    /// deletes them.
    #[error(
        "cluster {cluster} of project {project} belongs to another gantry world: {nodes} node(s) \
         made by {owners}"
    )]
    ForeignCluster {
        project: String,
        cluster: String,
        nodes: usize,
        /// `gantry-owner` and world of each distinct maker.
        owners: String,
    },
    /// The cluster's recorded nodes are out of this home's reach (a local cluster of another
    /// gantry home sharing the team store): this home can list and reach them over SSH, but
    /// never stops, starts or destroys them, nor drops their records.
    #[error(
        "cluster {cluster} was made by another gantry home: its node {node} is {location}, out of \
         this home's reach; stop, start or destroy it from the home that made it"
    )]
    OtherHome {
        cluster: String,
        node: String,
        location: String,
    },
    /// Nodes of this world carry the cluster's name but not its recorded uid: left by an
    /// earlier cluster of that name whose record is gone. `up` does not adopt them.
    #[error(
        "cluster {cluster} has node(s) of an earlier cluster of that name: {names} (cluster uid \
         {found}, {recorded})"
    )]
    StaleNodes {
        cluster: String,
        names: String,
        found: String,
        /// What the record says: `no record` or `the record says UID`.
        recorded: String,
    },
    /// Another cluster of the project makes the same node names (cluster `a` pool `b-c` and
    /// cluster `a-b` pool `c` both make `a-b-c-1`): their nodes, host-key pins and Docker
    /// containers would be mistaken for each other.
    #[error(
        "node names collide: cluster {cluster} pool {pool} makes {example}, and so does cluster \
         {other_cluster} pool {other_pool}"
    )]
    NameCollision {
        cluster: String,
        pool: String,
        other_cluster: String,
        other_pool: String,
        example: String,
    },
    #[error("cluster {cluster} belongs to provider {existing}, the spec says {wanted}")]
    ProviderMismatch {
        cluster: String,
        existing: String,
        wanted: String,
    },
    #[error("the plan removes {count} node(s) ({names}); confirmation required")]
    NeedsConfirmation { count: usize, names: String },
    /// Asked about the nodes the plan removes (`UpOptions::confirm_delete`), the answer was no.
    #[error("not confirmed: the plan removes {count} node(s) ({names}); nothing changed")]
    NotConfirmed { count: usize, names: String },
    /// The pins of host keys (`known_hosts`) could not be read or changed.
    #[error(transparent)]
    Ssh(#[from] gantry_ssh::SshError),
    #[error("{failed} of {total} step(s) failed: {first}")]
    StepsFailed {
        failed: usize,
        total: usize,
        /// The first failed step and its message.
        first: String,
        /// That step's error, with its own causes (none for blueprint steps, whose messages
        /// are masked).
        #[source]
        source: Option<crate::dag::StepError>,
    },
    /// An expiry past the bound of lifetimes (`gantry_core::spec::MAX_LIFETIME` from now) or
    /// past what a date can hold; nothing was changed.
    #[error(
        "cluster {cluster}: the expiry would be {what}, more than the maximum lifetime of {max} from now"
    )]
    LifetimeTooLong {
        cluster: String,
        /// How it was computed, e.g. `now + 9000years`.
        what: String,
        max: &'static str,
    },
    /// The store of cluster secrets and outputs failed (see `secrets`).
    #[error("secret store: cannot {action} {}", path.display())]
    SecretStore {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A secret could not be sealed or opened: wrong key, tampered envelope, a key provider
    /// that is not configured or does not answer (the message names the secret and provider).
    #[error(transparent)]
    Secrets(#[from] gantry_secrets::SecretsError),
    /// A secret opened, but does not hold what gantry stores under its name.
    #[error("secret `{name}` is unreadable: {reason}")]
    SecretUnreadable { name: String, reason: String },
    #[error("interrupted")]
    Interrupted,
    /// The target names nodes, but none of the cluster's matches.
    #[error("no node of cluster {cluster} matches {target}")]
    NoNodes {
        cluster: String,
        target: String,
        /// The cluster's nodes, by name.
        nodes: String,
    },
    /// Nothing carries the cluster's tags.
    #[error("cluster {cluster} has no nodes in project {project}")]
    EmptyCluster { project: String, cluster: String },
    /// A bare node number (`demo/1`) that several pools have.
    #[error("node number {index} is ambiguous: {nodes}")]
    AmbiguousIndex {
        cluster: String,
        index: u32,
        nodes: String,
    },
    /// A node the cluster's transport cannot reach: it has no SSH endpoint (stopped, or not
    /// booted yet).
    #[error("node {node} has no ssh endpoint (state {state})")]
    NoEndpoint { node: String, state: String },
    /// The provider a spec names cannot be built here (a binary built without it).
    #[error("{message}")]
    ProviderUnavailable {
        message: String,
        /// How to get it.
        hint: Option<String>,
    },
    /// A cluster's record whose spec cannot be decoded (written by a newer gantry, or
    /// damaged): which provider and options it has cannot be told, so nothing acts on it.
    #[error(
        "the record of cluster {cluster} in project {project} (provider {provider}) cannot be \
         read: its recorded spec does not decode"
    )]
    RecordUnreadable {
        project: String,
        cluster: String,
        provider: String,
        #[source]
        source: serde_json::Error,
    },
    /// A blueprint or the spec's use of it is invalid; every problem at `file:line:column`.
    #[error("{}", render_located(.0))]
    BlueprintInvalid(Vec<gantry_core::SpecError>),
    /// A blueprint could not be found or read.
    #[error("blueprint {blueprint}: {message}")]
    BlueprintLoad {
        blueprint: String,
        message: String,
        /// The file system's error, when reading it failed.
        #[source]
        source: Option<std::io::Error>,
    },
    /// An artifact could not be fetched, verified or found on a node.
    #[error("artifact {artifact} of blueprint {blueprint}: {message}")]
    Artifact {
        blueprint: String,
        artifact: String,
        message: String,
        /// The download's or the file system's error, when one is known.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// What kind of failure an [`EngineError`] is, for the edges that report it (the CLI's exit
/// codes, later the server's HTTP statuses). [`EngineError::class`] is the one place engine
/// errors are classified; each edge maps classes to its own codes in one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request cannot work as given: an invalid spec or blueprint, an unknown cluster or
    /// target, a name that collides or belongs to another gantry world, a lifetime too long.
    Invalid,
    /// The cluster is locked by another run and the wait timed out.
    Busy,
    /// A destructive change needs a confirmation that was not given.
    NotConfirmed,
    /// The run was cancelled (Ctrl-C); running it again resumes it.
    Interrupted,
    /// The run lost its cluster lock (lease lapsed, lock taken over) and stopped; what it
    /// wrote after the takeover was refused.
    LockLost,
    /// A secret cannot be opened: the wrong key, a tampered or corrupted envelope, or its key
    /// provider is not configured.
    Secret,
    /// Anything else: a provider, the state store, a step of a run.
    Failed,
}

impl EngineError {
    pub fn class(&self) -> ErrorClass {
        use EngineError as E;
        match self {
            E::LockTimeout { .. } => ErrorClass::Busy,
            E::LockLost { .. } => ErrorClass::LockLost,
            E::Secrets(e) => match e {
                gantry_secrets::SecretsError::WrongKey { .. }
                | gantry_secrets::SecretsError::Tampered { .. }
                | gantry_secrets::SecretsError::UnknownProvider { .. }
                | gantry_secrets::SecretsError::UnsupportedVersion { .. } => ErrorClass::Secret,
                _ => ErrorClass::Failed,
            },
            E::SecretUnreadable { .. } => ErrorClass::Secret,
            E::Interrupted => ErrorClass::Interrupted,
            E::NeedsConfirmation { .. } | E::NotConfirmed { .. } => ErrorClass::NotConfirmed,
            E::ClusterNotFound { .. }
            | E::NameCollision { .. }
            | E::ForeignCluster { .. }
            | E::OtherHome { .. }
            | E::StaleNodes { .. }
            | E::NoNodes { .. }
            | E::EmptyCluster { .. }
            | E::AmbiguousIndex { .. }
            | E::ProviderUnavailable { .. }
            | E::BlueprintInvalid(_)
            | E::BlueprintLoad { .. }
            | E::LifetimeTooLong { .. } => ErrorClass::Invalid,
            E::Provider(_)
            | E::State(_)
            | E::RecordUnreadable { .. }
            | E::ProviderMismatch { .. }
            | E::StepsFailed { .. }
            | E::SecretStore { .. }
            | E::NoEndpoint { .. }
            | E::Artifact { .. }
            | E::Ssh(_) => ErrorClass::Failed,
        }
    }
}

impl EngineError {
    /// Whether this is, or was caused by, a write the store refused because the run's cluster
    /// lock was taken over ([`StateError::Fenced`]).
    pub fn is_fenced(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if matches!(
                e.downcast_ref::<StateError>(),
                Some(StateError::Fenced { .. })
            ) {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

fn render_located(errors: &[gantry_core::SpecError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
