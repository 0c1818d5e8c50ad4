//! The Docker provider: a container per node on a Docker engine (local or a remote
//! `DOCKER_HOST`), through the engine's API (`bollard`).
//!
//! It exists so a cluster can run on a laptop without a cloud account and still look like
//! machines: each node is a long-running container with its own hostname and address on one
//! user-defined network per cluster, and gantry reaches it through the Docker exec API, so the
//! image needs no sshd ([`exec`]: run with exit code and streamed output, put/get through the
//! archive API, an interactive exec with a tty; [`DockerTransport`]: all of it as gantry's
//! `Transport`, so the engine reaches Docker nodes like any other).
//!
//! What gantry keeps true here (see ARCHITECTURE.md):
//! - **Names.** A node's container is `gantry.<project>.<node>` ([`container_name`]), its network
//!   `gantry.<project>.<cluster>` ([`network_name`]): unique per engine across projects and
//!   clusters. A container of that name without this node's labels is never touched
//!   ([`DockerError::NameConflict`]).
//! - **Labels are the tags.** Every container, network and volume gantry creates carries
//!   gantry's tags as Docker labels (`gantry-project`, `gantry-cluster`, …) plus `gantry.kind`
//!   (`node`, `network`, `tags`) and, for nodes, `gantry.node` and `gantry.tags` (the exact tag
//!   set as JSON, since Docker mixes the image's labels into a container's). Listing, destroy and
//!   gc find everything by labels.
//! - **Tags that change.** Docker labels are immutable, so `set_tags` (used by `extend` and by
//!   `up` adopting nodes) writes the node's new tag set to a small labelled *tags volume*
//!   (`<container>.tags.<seq>`, `gantry.kind=tags`, `gantry.for=<container>`); `list` lays the
//!   newest one over the container's own labels. It goes with the node on delete and with the
//!   cluster on destroy.
//! - **Addresses.** gantry creates the cluster network with an explicit subnet (one the engine
//!   itself picked as free) and gives every container a fixed address in it, so a node keeps
//!   its address across stop/start, as on a VM.
//! - **Idempotent.** `create_node` adopts an existing container with its labels (starting it if
//!   needed), and returns only once the container answers an exec of `true`.

mod error;
pub mod exec;
mod kind;
pub mod options;
mod provider;
mod transport;

pub use error::DockerError;
pub use kind::{DockerKind, docker_options, engine};
pub use options::{DOCKER_SIZES, DockerOptions, docker_size};
pub use provider::{DockerConfig, DockerProvider};
pub use transport::DockerTransport;

/// Label: what a resource is to gantry (`node`, `network`, `tags`, `probe`).
pub const LABEL_KIND: &str = "gantry.kind";
/// Label of a node's container: the node's name.
pub const LABEL_NODE: &str = "gantry.node";
/// Label of a node's container or tags volume: its full tag set as JSON.
pub const LABEL_TAGS: &str = "gantry.tags";
/// Label of a node's container: its fixed IPv4 address on the cluster network.
pub const LABEL_IP: &str = "gantry.ip";
/// Label of a tags volume: the container it describes.
pub const LABEL_FOR: &str = "gantry.for";
/// Label of a tags volume: its sequence (zero-padded nanoseconds; the newest wins).
pub const LABEL_SEQ: &str = "gantry.seq";

/// The engine gantry talks to: the spec's `host`, else `DOCKER_HOST`, else the default socket.
/// A bare socket path is taken as `unix://PATH`.
pub fn resolve_host(spec_host: Option<&str>) -> String {
    let h = spec_host
        .map(str::to_string)
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
    if h.starts_with('/') {
        format!("unix://{h}")
    } else {
        h
    }
}

/// Docker names allow `[a-zA-Z0-9][a-zA-Z0-9_.-]*`; node and cluster names already fit, a
/// project name may not.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The container of node `node` of `project`: `gantry.<project>.<node>`.
pub fn container_name(project: &str, node: &str) -> String {
    format!("gantry.{}.{node}", sanitize(project))
}

/// The network of `cluster` of `project`: `gantry.<project>.<cluster>`.
pub fn network_name(project: &str, cluster: &str) -> String {
    format!("gantry.{}.{cluster}", sanitize(project))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_project_and_valid_for_docker() {
        assert_eq!(
            container_name("default", "demo-db-1"),
            "gantry.default.demo-db-1"
        );
        assert_ne!(
            container_name("a-b", "c-db-1"),
            container_name("a", "b-c-db-1")
        );
        assert_eq!(container_name("my team", "x-a-1"), "gantry.my_team.x-a-1");
        assert_eq!(network_name("p", "demo"), "gantry.p.demo");
    }

    #[test]
    fn bare_socket_paths_become_unix_urls() {
        assert_eq!(
            resolve_host(Some("/tmp/d/docker.sock")),
            "unix:///tmp/d/docker.sock"
        );
        assert_eq!(resolve_host(Some("tcp://h:2375")), "tcp://h:2375");
    }
}
