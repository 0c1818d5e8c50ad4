//! The one error enum of the Docker provider crate, and how it becomes a [`ProviderError`].
//!
//! The classes matter to callers: an engine that cannot be reached or a container that is gone
//! or stopped is a *transport* problem (retryable, exit code 4 for `run`), a command that ran and
//! failed is not an error at all (an exit code), and a name taken by a container without
//! gantry's labels is a conflict that must never be "fixed" by touching that container.

use gantry_provider::{ErrorKind, ProviderError};

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine did not answer (no socket, connection refused, not a Docker API).
    #[error("cannot reach the Docker engine at {host}: {source}")]
    Unreachable {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The image is not in the engine (gantry never pulls implicitly).
    #[error("image {image} is not in the Docker engine at {host}")]
    ImageMissing { image: String, host: String },
    /// A container of that name exists and does not carry this node's labels.
    #[error(
        "a container named {name} exists and is not this gantry node (its labels: {found}); \
         gantry never touches it"
    )]
    NameConflict { name: String, found: String },
    /// A container or network of that name is gantry's, but another gantry world's (another
    /// home using this engine with the same project and cluster names).
    #[error(
        "{what} {name} belongs to another gantry world: made by {owner}; gantry never touches it"
    )]
    Foreign {
        what: &'static str,
        name: String,
        owner: String,
    },
    /// The container exists but is not running (exec needs a running container).
    #[error("container {container} is not running ({state})")]
    NotRunning { container: String, state: String },
    /// A container did not answer an exec of `true` in time.
    #[error("container {container} did not answer an exec of `true` within {secs} s: {last}")]
    BootTimeout {
        container: String,
        secs: u64,
        last: String,
    },
    /// A Docker API call failed.
    #[error("{call} {resource}: {source}")]
    Api {
        call: &'static str,
        resource: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// A local file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A file on a node is not what the transfer expects (a directory, a link, no such file).
    #[error("{0}")]
    Transfer(String),
    #[error("{0}")]
    Invalid(String),
}

impl DockerError {
    pub(crate) fn api(
        call: &'static str,
        resource: impl Into<String>,
    ) -> impl FnOnce(bollard::errors::Error) -> DockerError {
        let resource = resource.into();
        move |source| DockerError::Api {
            call,
            resource,
            source,
        }
    }

    /// The HTTP status of a failed API call, if the engine answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            DockerError::Api { source, .. } => status_of(source),
            _ => None,
        }
    }

    /// Connection-level problems (engine gone, container gone or stopped): retrying later may
    /// work, and `run` reports them as "unreachable", not as a failed command.
    pub fn is_transport(&self) -> bool {
        match self {
            DockerError::Unreachable { .. }
            | DockerError::NotRunning { .. }
            | DockerError::BootTimeout { .. } => true,
            DockerError::Api { source, .. } => match status_of(source) {
                Some(404) => message_of(source).contains("No such container"),
                Some(409) => message_of(source).contains("is not running"),
                Some(_) => false,
                None => true,
            },
            _ => false,
        }
    }

    /// The provider error callers of the `Provider` trait see: provider, call, resource, kind
    /// and a hint that says what to do.
    pub fn into_provider(self, op: &str, resource: &str) -> ProviderError {
        let (kind, hint) = match &self {
            DockerError::Unreachable { host, .. } => (
                ErrorKind::Unavailable,
                Some(format!(
                    "start dockerd or point gantry at a running engine: `provider: {{docker: \
                     {{host: ...}}}}` in the spec, or DOCKER_HOST (tried {host})"
                )),
            ),
            DockerError::ImageMissing { image, .. } => (
                ErrorKind::InvalidInput,
                Some(format!(
                    "build it (`scripts/build-test-image.sh {image}` builds gantry's test image \
                     from this machine's packages) or `docker pull {image}` against the same \
                     engine"
                )),
            ),
            DockerError::NameConflict { name, .. } => (
                ErrorKind::Conflict,
                Some(format!(
                    "remove or rename that container yourself (`docker rm {name}`), or use \
                     another cluster name or project"
                )),
            ),
            DockerError::Foreign { .. } => (
                ErrorKind::Conflict,
                Some(
                    "choose another cluster name (or --project), or ask its owner to destroy it"
                        .to_string(),
                ),
            ),
            DockerError::BootTimeout { .. } | DockerError::NotRunning { .. } => {
                (ErrorKind::Retryable, None)
            }
            DockerError::Api { source, .. } => match status_of(source) {
                Some(404) => (ErrorKind::NotFound, None),
                Some(409) => (ErrorKind::Conflict, None),
                Some(400) => (ErrorKind::InvalidInput, None),
                Some(_) => (ErrorKind::Other, None),
                // Timeouts, a dropped connection: try again.
                None => (ErrorKind::Retryable, None),
            },
            DockerError::Invalid(_) => (ErrorKind::InvalidInput, None),
            _ => (ErrorKind::Other, None),
        };
        let message = self.to_string();
        let mut e = ProviderError::new("docker", op, resource, kind, message).with_source(self);
        if let Some(h) = hint {
            e = e.with_hint(h);
        }
        e
    }
}

fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn message_of(e: &bollard::errors::Error) -> &str {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        _ => "",
    }
}
