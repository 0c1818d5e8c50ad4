//! YAML → validated [`ClusterSpec`], with every problem located.
//!
//! The text is loaded and walked with [`crate::reader`] (every problem collected, each at its
//! `line:column`, with a hint); this module knows the spec's fields. The `network` section is
//! read by [`super::network`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::network::check_from;
use super::{DEFAULT_LIFETIME, KNOWN_PROVIDERS};
use crate::reader::yaml::{self, Kind, Node, Pos, Scalar};
use crate::reader::{Field, Reader, closest, list};
use crate::{
    API_VERSION, AwsOptions, ClusterSpec, CoreError, DockerOptions, LocalOptions, NetworkSpec,
    PoolSpec, ProviderSpec, Readiness, SpecError, Tags,
};

/// Most nodes one pool may ask for.
pub const MAX_POOL_COUNT: i128 = 1000;

const TOP_FIELDS: &[&str] = &[
    "apiVersion",
    "name",
    "provider",
    "lifetime",
    "readiness",
    "ssh",
    "pools",
    "network",
    "tags",
    "blueprints",
];
const POOL_FIELDS: &[&str] = &["name", "count", "size", "image", "labels"];
const LOCAL_FIELDS: &[&str] = &["ssh_port"];
const AWS_FIELDS: &[&str] = &[
    "region",
    "zones",
    "vpc",
    "subnet",
    "instance_types",
    "ami",
    "image",
    "spot",
    "endpoint",
    "caller_cidr",
];
const DOCKER_FIELDS: &[&str] = &["host", "image", "network", "privileged"];
const SSH_FIELDS: &[&str] = &["user"];

/// Parses and validates a spec. `file` is used only to label errors.
pub fn parse(file: &str, text: &str) -> Result<ClusterSpec, SpecError> {
    let mut cx = Reader::new();
    let spec = match yaml::load(text) {
        Ok(Some(root)) => cx.spec(&root),
        Ok(None) => {
            cx.err(
                Pos::START,
                "the spec is empty",
                "start with `apiVersion: gantry/v1`, a `name`, a `provider` and `pools`",
            );
            None
        }
        Err(e) => {
            cx.err(e.pos, e.message, e.hint);
            None
        }
    };
    cx.finish(file, spec)
}

/// `12h`, `30m`, `4h30m`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, CoreError> {
    humantime::parse_duration(s).map_err(|e| CoreError::InvalidDuration {
        input: s.into(),
        reason: e.to_string(),
    })
}

impl Reader {
    fn spec(&mut self, root: &Node) -> Option<ClusterSpec> {
        if !matches!(root.kind, Kind::Map(_)) {
            self.err(
                root.pos,
                format!("the spec must be a mapping, found {}", root.describe()),
                format!("write the spec as `key: value` lines: {}", list(TOP_FIELDS)),
            );
            return None;
        }
        let top = self.fields(root, "spec", "the spec", TOP_FIELDS)?;

        if let Some(f) = top.req(self, "apiVersion")
            && let Some(v) = self.string(f)
            && v != API_VERSION
        {
            self.err(
                f.pos(),
                format!("unsupported apiVersion {v:?}"),
                format!("use `apiVersion: {API_VERSION}`"),
            );
        }
        let name = top.req(self, "name").and_then(|f| self.name(f, "cluster"));
        let provider = top.req(self, "provider").and_then(|f| self.provider(f));
        let lifetime = match top.opt("lifetime") {
            None => Some(DEFAULT_LIFETIME),
            Some(f) => self.lifetime(f),
        };
        let readiness = match top.opt("readiness") {
            None => Some(Readiness::default()),
            Some(f) => self.readiness(f),
        };
        let ssh_user = match top.opt("ssh") {
            None => Some(None),
            Some(f) => self.ssh(f),
        };
        let pools = top.req(self, "pools").and_then(|f| self.pools(f));
        let network = match top.opt("network") {
            None => Some(NetworkSpec::default()),
            Some(f) => self.network(f),
        };
        let tags = match top.opt("tags") {
            None => Some(Tags::new()),
            Some(f) => self.tags(f),
        };
        let blueprints = match top.opt("blueprints") {
            None => Some(Vec::new()),
            Some(f) => self.blueprint_refs(f),
        };

        let docker = matches!(provider, Some(ProviderSpec::Docker(_)));
        // Docker nodes are reached through the Docker API (exec), which is also how their
        // readiness is told: the provider's create and start wait for an exec of `true`.
        let readiness = if docker {
            match (readiness, top.opt("readiness")) {
                (Some(Readiness::Ssh), Some(f)) => {
                    self.err(
                        f.pos(),
                        "`readiness: ssh` does not apply to the docker provider",
                        "docker nodes have no sshd: gantry reaches them through the Docker exec \
                         API and waits until each answers an exec of `true`; leave `readiness` out",
                    );
                    None
                }
                (Some(_), _) => Some(Readiness::Api),
                (None, _) => None,
            }
        } else {
            readiness
        };
        if docker
            && let Some(f) = top.opt("pools")
            && let Kind::Seq(items) = &f.value.kind
        {
            self.docker_sizes(items);
        }
        if !docker
            && readiness == Some(Readiness::Api)
            && blueprints.as_ref().is_some_and(|b| !b.is_empty())
            && let Some(f) = top.opt("readiness")
        {
            self.err(
                f.pos(),
                "`readiness: api` cannot be combined with `blueprints`",
                "blueprints run over ssh, which `readiness: api` never opens; use `readiness: \
                 ssh` or remove `blueprints`",
            );
            return None;
        }

        Some(ClusterSpec {
            name: name?,
            provider: provider?,
            pools: pools?,
            network: network?,
            lifetime: lifetime?,
            ssh_user: ssh_user?,
            readiness: readiness?,
            tags: tags?,
            blueprints: blueprints?,
        })
    }

    fn provider(&mut self, f: Field<'_>) -> Option<ProviderSpec> {
        let known_hint = format!("known providers: {}", list(KNOWN_PROVIDERS));
        let (name, name_pos, options) = match &f.value.kind {
            Kind::Map(_) => {
                let hint = "write e.g. `provider: local` or `provider: {local: {}}`";
                let entries = self.entries(f.value, "provider", hint)?;
                let Some(first) = entries.first() else {
                    self.err(
                        f.value.pos,
                        "`provider` names no provider",
                        format!("{hint}; {known_hint}"),
                    );
                    return None;
                };
                for extra in &entries[1..] {
                    self.err(
                        extra.key_pos,
                        format!(
                            "`provider` must have exactly one key, found a second one `{}`",
                            extra.key
                        ),
                        "a cluster uses one provider; remove the others",
                    );
                }
                (first.key, first.key_pos, Some(*first))
            }
            Kind::Scalar { .. } if !f.value.is_null() => (self.string(f)?, f.pos(), None),
            _ => {
                self.type_err(
                    f.pos(),
                    "provider",
                    "a provider name or a mapping with one key",
                    f.value,
                    &format!("write e.g. `provider: local`; {known_hint}"),
                );
                return None;
            }
        };
        match name {
            "local" => {
                let mut opts = LocalOptions::default();
                if let Some(o) = options.filter(|o| !o.value.is_null()) {
                    let fields =
                        self.fields(o.value, "local", "the local provider options", LOCAL_FIELDS)?;
                    if let Some(p) = fields.opt("ssh_port") {
                        opts.ssh_port =
                            Some(u16::try_from(self.int_in(p, 1, 65535, "2222")?).ok()?);
                    }
                }
                Some(ProviderSpec::Local(opts))
            }
            "docker" => {
                let Some(o) = options.filter(|o| !o.value.is_null()) else {
                    self.err(
                        name_pos,
                        "the docker provider needs options: at least `image`",
                        "write e.g. `provider: {docker: {image: gantry/node:test}}` \
                         (scripts/build-test-image.sh builds that image)",
                    );
                    return None;
                };
                self.docker(o)
            }
            "aws" => {
                let Some(o) = options.filter(|o| !o.value.is_null()) else {
                    self.err(
                        name_pos,
                        "the aws provider needs options: at least `region`",
                        "write e.g. `provider: {aws: {region: us-east-1}}`",
                    );
                    return None;
                };
                self.aws(o)
            }
            other => {
                let hint = match closest(other, KNOWN_PROVIDERS) {
                    Some(s) => format!("did you mean `{s}`? {known_hint}"),
                    None => known_hint,
                };
                self.err(name_pos, format!("unknown provider `{other}`"), hint);
                None
            }
        }
    }

    fn docker(&mut self, o: Field<'_>) -> Option<ProviderSpec> {
        let fields = self.fields(
            o.value,
            "docker",
            "the docker provider options",
            DOCKER_FIELDS,
        )?;
        let mut opts = DockerOptions::default();
        let mut ok = true;
        match fields.req(self, "image").map(|f| self.non_empty(f)) {
            Some(Some(i)) => opts.image = i,
            _ => ok = false,
        }
        if let Some(f) = fields.opt("host") {
            match self.non_empty(f) {
                Some(h)
                    if h.starts_with("unix://")
                        || h.starts_with("tcp://")
                        || h.starts_with("http://")
                        || h.starts_with('/') =>
                {
                    opts.host = Some(h)
                }
                Some(h) => {
                    self.err(
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
            match self.non_empty(f) {
                Some(n) => opts.network = Some(n),
                None => ok = false,
            }
        }
        if let Some(f) = fields.opt("privileged") {
            match f.value.scalar() {
                Some(Scalar::Bool(b)) => opts.privileged = b,
                _ => {
                    self.type_err(
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
        ok.then_some(ProviderSpec::Docker(opts))
    }

    /// Every pool size of a docker spec must be one of [`crate::spec::DOCKER_SIZES`].
    fn docker_sizes(&mut self, pools: &[Node]) {
        for pool in pools {
            let Kind::Map(pairs) = &pool.kind else {
                continue;
            };
            for (k, v) in pairs {
                if k.text() != Some("size") {
                    continue;
                }
                if let Some(size) = v.text()
                    && crate::spec::docker_size(size).is_none()
                {
                    let sizes: Vec<&str> = crate::spec::DOCKER_SIZES
                        .iter()
                        .map(|(s, _, _)| *s)
                        .collect();
                    self.err(
                        v.pos,
                        format!("unknown docker size `{size}`"),
                        format!(
                            "docker sizes are {} (CPU and memory limits; see README)",
                            list(&sizes)
                        ),
                    );
                }
            }
        }
    }

    fn aws(&mut self, o: Field<'_>) -> Option<ProviderSpec> {
        let fields = self.fields(o.value, "aws", "the aws provider options", AWS_FIELDS)?;
        let mut opts = AwsOptions::default();
        let mut ok = true;
        match fields.req(self, "region") {
            Some(f) => match self.string(f) {
                Some(r) if is_region(r) => opts.region = r.to_string(),
                Some(r) => {
                    self.err(
                        f.pos(),
                        format!("invalid aws region {r:?}"),
                        "write a region name such as `us-east-1` or `eu-west-2`",
                    );
                    ok = false;
                }
                None => ok = false,
            },
            None => ok = false,
        }
        if let Some(f) = fields.opt("zones") {
            match &f.value.kind {
                Kind::Seq(items) => {
                    for item in items {
                        match item.text() {
                            Some(z) if is_region(z.trim_end_matches(char::is_alphabetic)) => {
                                opts.zones.push(z.to_string())
                            }
                            _ => {
                                self.err(
                                    item.pos,
                                    format!("invalid availability zone {}", item.describe()),
                                    "write zones of the region, e.g. `[us-east-1a, us-east-1b]`",
                                );
                                ok = false;
                            }
                        }
                    }
                }
                _ => {
                    self.type_err(
                        f.pos(),
                        "zones",
                        "a list",
                        f.value,
                        "write e.g. `zones: [us-east-1a, us-east-1b]`",
                    );
                    ok = false;
                }
            }
        }
        let mut id = |cx: &mut Reader, key: &str, prefix: &str, words: &[&str], hint: &str| {
            let f = fields.opt(key)?;
            let v = cx.string(f)?;
            let good = words.contains(&v)
                || v.strip_prefix(prefix).is_some_and(|rest| {
                    !rest.is_empty() && rest.chars().all(|c| c.is_ascii_hexdigit())
                });
            if !good {
                cx.err(f.pos(), format!("invalid `{key}` {v:?}"), hint);
                ok = false;
                return None;
            }
            Some(v.to_string())
        };
        opts.vpc = id(
            self,
            "vpc",
            "vpc-",
            &["default", "create"],
            "use `default` (the region's default vpc), `create` (one per cluster) or a `vpc-…` id",
        );
        opts.subnet = id(self, "subnet", "subnet-", &[], "give a `subnet-…` id");
        opts.ami = id(
            self,
            "ami",
            "ami-",
            &[],
            "give an `ami-…` id, or use `image: al2023`",
        );
        if let Some(f) = fields.opt("instance_types") {
            match self.string_map(f) {
                Some(m) => opts.instance_types = m,
                None => ok = false,
            }
        }
        for (key, slot) in [("image", &mut opts.image), ("endpoint", &mut opts.endpoint)] {
            if let Some(f) = fields.opt(key) {
                match self.non_empty(f) {
                    Some(v) => *slot = Some(v),
                    None => ok = false,
                }
            }
        }
        if let Some(f) = &opts.endpoint
            && !(f.starts_with("http://") || f.starts_with("https://"))
            && let Some(field) = fields.opt("endpoint")
        {
            self.err(
                field.pos(),
                format!("invalid endpoint {f:?}"),
                "give a url such as `http://127.0.0.1:5000`, or leave it out and set \
                 AWS_ENDPOINT_URL",
            );
            ok = false;
        }
        if let Some(f) = fields.opt("spot") {
            match f.value.scalar() {
                Some(Scalar::Bool(b)) => opts.spot = b,
                _ => {
                    self.type_err(f.pos(), "spot", "a boolean", f.value, "write `spot: true`");
                    ok = false;
                }
            }
        }
        if let Some(f) = fields.opt("caller_cidr") {
            match self.string(f) {
                Some(c) if c != "caller" && c != "cluster" && check_from(c).is_ok() => {
                    opts.caller_cidr = Some(c.to_string())
                }
                Some(c) => {
                    let (message, hint) = check_from(c).err().unwrap_or_else(|| {
                        (
                            format!("invalid caller_cidr {c:?}"),
                            "give a cidr such as `203.0.113.7/32`".into(),
                        )
                    });
                    self.err(f.pos(), message, hint);
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then_some(ProviderSpec::Aws(opts))
    }

    fn lifetime(&mut self, f: Field<'_>) -> Option<Duration> {
        let text = self.string(f)?;
        let hint = "use a duration like `12h`, `30m`, `4h30m` or `2d`";
        match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.err(f.pos(), "`lifetime` must be greater than zero", hint);
                None
            }
            Ok(d) if d > super::MAX_LIFETIME => {
                self.err(
                    f.pos(),
                    format!(
                        "`lifetime` {text} is longer than the maximum of {}",
                        super::MAX_LIFETIME_TEXT
                    ),
                    format!(
                        "use at most `{}`; `gantry extend` moves the expiry later",
                        super::MAX_LIFETIME_TEXT
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(CoreError::InvalidDuration { reason, .. }) => {
                self.err(
                    f.pos(),
                    format!("invalid lifetime {text:?}: {reason}"),
                    hint,
                );
                None
            }
            Err(e) => {
                self.err(f.pos(), e.to_string(), hint);
                None
            }
        }
    }

    fn readiness(&mut self, f: Field<'_>) -> Option<Readiness> {
        match self.string(f)? {
            "ssh" => Some(Readiness::Ssh),
            "api" => Some(Readiness::Api),
            other => {
                self.err(
                    f.pos(),
                    format!("unknown readiness `{other}`"),
                    "use `ssh` (wait until nodes answer ssh) or `api` (the provider reports \
                     them running)",
                );
                None
            }
        }
    }

    /// `tags`: like `labels`, but gantry's own prefix is reserved.
    fn tags(&mut self, f: Field<'_>) -> Option<Tags> {
        self.string_map_with(f, |key| {
            if key.starts_with("gantry-") {
                Err((
                    format!("tag key `{key}` uses the reserved prefix `gantry-`"),
                    "gantry sets `gantry-*` tags itself; choose another prefix".into(),
                ))
            } else {
                Ok(())
            }
        })
    }

    fn ssh(&mut self, f: Field<'_>) -> Option<Option<String>> {
        let fields = self.fields(f.value, "ssh", "`ssh`", SSH_FIELDS)?;
        let Some(user) = fields.opt("user") else {
            return Some(None);
        };
        let user = self.string(user)?;
        if let Err(e) = crate::names::validate_user(user) {
            self.err(
                f.pos(),
                format!("invalid ssh user: {e}"),
                "give a login name (letters, digits, '.', '_', '-'), or remove `user` to use the \
                 default",
            );
            return None;
        }
        Some(Some(user.to_string()))
    }

    fn pools(&mut self, f: Field<'_>) -> Option<Vec<PoolSpec>> {
        let Kind::Seq(items) = &f.value.kind else {
            self.type_err(
                f.pos(),
                "pools",
                "a list",
                f.value,
                "list pools as `- name: ...` entries under `pools:`",
            );
            return None;
        };
        if items.is_empty() {
            self.err(
                f.pos(),
                "`pools` must not be empty",
                "add at least one pool, e.g. `- {name: main, count: 1}`",
            );
            return None;
        }
        let mut seen: HashMap<String, Pos> = HashMap::new();
        let mut pools = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            match self.pool(item, &mut seen) {
                Some(p) => pools.push(p),
                None => ok = false,
            }
        }
        ok.then_some(pools)
    }

    fn pool(&mut self, node: &Node, seen: &mut HashMap<String, Pos>) -> Option<PoolSpec> {
        let fields = self.fields(node, "pools", "pool", POOL_FIELDS)?;
        let name_field = fields.req(self, "name");
        let mut name = name_field.and_then(|f| self.name(f, "pool"));
        if let (Some(n), Some(f)) = (&name, name_field) {
            if let Some(first) = seen.get(n) {
                self.err(
                    f.pos(),
                    format!(
                        "duplicate pool name `{n}` (first defined on line {})",
                        first.line
                    ),
                    "pool names must be unique; rename one of the pools or merge them",
                );
                name = None;
            } else {
                seen.insert(n.clone(), f.pos());
            }
        }
        let count = fields
            .req(self, "count")
            .and_then(|f| self.int_in(f, 1, MAX_POOL_COUNT, "3"));
        let size = match fields.opt("size") {
            None => Some("small".to_string()),
            Some(f) => self.non_empty(f),
        };
        let image = match fields.opt("image") {
            None => Some("default".to_string()),
            Some(f) => self.non_empty(f),
        };
        let labels = match fields.opt("labels") {
            None => Some(BTreeMap::new()),
            Some(f) => self.string_map(f),
        };
        Some(PoolSpec {
            name: name?,
            count: u32::try_from(count?).ok()?,
            size: size?,
            image: image?,
            labels: labels?,
        })
    }
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`: lowercase words and a number, `-`-separated.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(closest("cont", POOL_FIELDS), Some("count"));
        assert_eq!(
            closest("form", super::super::network::ALLOW_FIELDS),
            Some("from")
        );
        assert_eq!(closest("nmae", POOL_FIELDS), Some("name"));
        assert_eq!(closest("apiversion", TOP_FIELDS), Some("apiVersion"));
        assert_eq!(closest("flavour", POOL_FIELDS), None);
    }
}
