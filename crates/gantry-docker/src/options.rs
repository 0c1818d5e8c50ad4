//! The Docker provider's part of a spec: its options ([`DockerOptions`], read from
//! `provider: {docker: {...}}` with core's position-keeping reader), its pool sizes
//! ([`DOCKER_SIZES`]) and the rule that Docker nodes are `api` ready. Kept with the provider so
//! that gantry-core knows nothing about Docker.

use gantry_core::reader::{Node, Pos, Reader, Scalar, list};
use gantry_core::spec::{ProviderOptions, ReadinessRule};
use serde::{Deserialize, Serialize};

/// Options of the Docker provider (`provider: {docker: {image: ...}}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerOptions {
    /// The engine: `unix:///path/docker.sock`, `tcp://host:2375`, or a socket path. Default:
    /// `DOCKER_HOST`, else `unix:///var/run/docker.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The image of pools whose image is `default` (required); a pool's own `image` is used as a
    /// Docker image reference.
    pub image: String,
    /// An existing user-defined network to attach nodes to instead of the one gantry creates per
    /// cluster (gantry never removes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Run the containers privileged (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
}

/// What the pool sizes mean on Docker: (size, CPUs in thousandths, memory in MiB), applied as
/// the container's CPU and memory limits. Any other size is a spec error.
pub const DOCKER_SIZES: &[(&str, u32, u64)] = &[
    ("small", 1000, 1024),
    ("medium", 2000, 4096),
    ("large", 4000, 8192),
];

/// The CPU (thousandths) and memory (MiB) limits of a Docker pool size.
pub fn docker_size(size: &str) -> Option<(u32, u64)> {
    DOCKER_SIZES
        .iter()
        .find(|(s, _, _)| *s == size)
        .map(|(_, c, m)| (*c, *m))
}

const DOCKER_FIELDS: &[&str] = &["host", "image", "network", "privileged"];

/// Docker nodes are reached through the Docker API (exec), which is also how their readiness
/// is told: the provider's create and start wait for an exec of `true`.
pub(crate) const READINESS: ReadinessRule = ReadinessRule::ApiOnly {
    message: "`readiness: ssh` does not apply to the docker provider",
    hint: "docker nodes have no sshd: gantry reaches them through the Docker exec API and waits \
           until each answers an exec of `true`; leave `readiness` out",
};

/// A size Docker does not know, as (message, hint).
pub(crate) fn check_size(size: &str) -> Option<(String, String)> {
    if docker_size(size).is_some() {
        return None;
    }
    let sizes: Vec<&str> = DOCKER_SIZES.iter().map(|(s, _, _)| *s).collect();
    Some((
        format!("unknown docker size `{size}`"),
        format!(
            "docker sizes are {} (CPU and memory limits; see README)",
            list(&sizes)
        ),
    ))
}

/// Reads `provider: {docker: ...}` (see [`gantry_core::ProviderSection::read_options`]).
pub(crate) fn read(r: &mut Reader, at: Pos, o: Option<&Node>) -> Option<ProviderOptions> {
    let Some(o) = o else {
        r.err(
            at,
            "the docker provider needs options: at least `image`",
            "write e.g. `provider: {docker: {image: gantry/node:test}}` \
             (scripts/build-test-image.sh builds that image)",
        );
        return None;
    };
    let fields = r.fields(o, "docker", "the docker provider options", DOCKER_FIELDS)?;
    let mut opts = DockerOptions::default();
    let mut ok = true;
    match fields.req(r, "image").map(|f| r.non_empty(f)) {
        Some(Some(i)) => opts.image = i,
        _ => ok = false,
    }
    if let Some(f) = fields.opt("host") {
        match r.non_empty(f) {
            Some(h)
                if h.starts_with("unix://")
                    || h.starts_with("tcp://")
                    || h.starts_with("http://")
                    || h.starts_with('/') =>
            {
                opts.host = Some(h)
            }
            Some(h) => {
                r.err(
                    f.pos(),
                    format!("invalid docker host {h:?}"),
                    "give `unix:///path/to/docker.sock`, `tcp://HOST:PORT` or a socket path, \
                     or leave it out to use DOCKER_HOST",
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(f) = fields.opt("network") {
        match r.non_empty(f) {
            Some(n) => opts.network = Some(n),
            None => ok = false,
        }
    }
    if let Some(f) = fields.opt("privileged") {
        match f.value.scalar() {
            Some(Scalar::Bool(b)) => opts.privileged = b,
            _ => {
                r.type_err(
                    f.pos(),
                    "privileged",
                    "a boolean",
                    f.value,
                    "write `privileged: true`",
                );
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    ProviderOptions::from_typed(&opts).ok()
}
