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
    #[error("lost the lock on cluster {cluster} (another process took it after our lease expired)")]
    LockLost { cluster: String },
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
        first: String,
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
    #[error("interrupted")]
    Interrupted,
    #[error("no node of cluster {cluster} matches {target}")]
    NoNodes { cluster: String, target: String },
    /// A blueprint or the spec's use of it is invalid; every problem at `file:line:column`.
    #[error("{}", render_located(.0))]
    BlueprintInvalid(Vec<gantry_core::SpecError>),
    /// A blueprint could not be found or read.
    #[error("blueprint {blueprint}: {message}")]
    BlueprintLoad { blueprint: String, message: String },
    /// An artifact could not be fetched, verified or found on a node.
    #[error("artifact {artifact} of blueprint {blueprint}: {message}")]
    Artifact {
        blueprint: String,
        artifact: String,
        message: String,
    },
}

fn render_located(errors: &[gantry_core::SpecError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
