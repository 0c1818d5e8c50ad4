//! YAML → validated [`ClusterSpec`], with every problem located.
//!
//! The text is first loaded into a position-keeping tree ([`super::yaml`]); this module then
//! walks it field by field, collecting *every* problem as a [`SpecErrorItem`] (1-based line and
//! column, lowercase message, hint) instead of stopping at the first.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use super::yaml::{self, Kind, Node, Pos, Scalar};
use super::{DEFAULT_LIFETIME, KNOWN_PROVIDERS};
use crate::{
    API_VERSION, AllowRule, AwsOptions, ClusterSpec, CoreError, DockerOptions, LocalOptions,
    NetworkSpec, PoolSpec, ProviderSpec, Readiness, SpecError, SpecErrorItem, Tags, validate_name,
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
const NETWORK_FIELDS: &[&str] = &["allow"];
const ALLOW_FIELDS: &[&str] = &["port", "from"];

/// Parses and validates a spec. `file` is used only to label errors.
pub fn parse(file: &str, text: &str) -> Result<ClusterSpec, SpecError> {
    let mut cx = Cx::default();
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
    match spec {
        Some(spec) if cx.items.is_empty() => Ok(spec),
        _ => {
            let mut items = cx.items;
            if items.is_empty() {
                // Every path that yields no spec records a problem; keep the contract anyway.
                items.push(SpecErrorItem {
                    line: 1,
                    column: 1,
                    message: "invalid spec".into(),
                    hint: None,
                });
            }
            items.sort_by_key(|i| (i.line, i.column));
            Err(SpecError {
                file: file.to_string(),
                items,
            })
        }
    }
}

/// `12h`, `30m`, `4h30m`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, CoreError> {
    humantime::parse_duration(s).map_err(|e| CoreError::InvalidDuration {
        input: s.into(),
        reason: e.to_string(),
    })
}

/// Ports an `allow` rule may open to the whole internet without a warning: SSH and the web.
pub const OPEN_PORTS_WITHOUT_WARNING: &[u16] = &[22, 80, 443];

/// What a valid spec asks for that is probably a mistake (nothing is refused): an `allow` rule
/// open to the whole internet (`from: 0.0.0.0/0` or `::/0`) on a port other than 22, 80 and
/// 443, for providers whose rules open a firewall. Each item points at the rule's `from` in
/// `text`, the spec's source (0:0 when it cannot be found); render with [`render_warnings`].
pub fn warnings(text: &str, spec: &ClusterSpec) -> Vec<SpecErrorItem> {
    if !spec.provider.opens_firewall() {
        return vec![];
    }
    let root = yaml::load(text).ok().flatten();
    let get = |node: &Node, key: &str| -> Option<Node> {
        let Kind::Map(pairs) = &node.kind else {
            return None;
        };
        pairs
            .iter()
            .find(|(k, _)| k.text() == Some(key))
            .map(|(_, v)| v.clone())
    };
    let rules: Vec<Node> = root
        .as_ref()
        .and_then(|r| get(r, "network"))
        .and_then(|n| get(&n, "allow"))
        .and_then(|a| match a.kind {
            Kind::Seq(items) => Some(items),
            _ => None,
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, rule) in spec.network.allow.iter().enumerate() {
        if !matches!(rule.from.as_str(), "0.0.0.0/0" | "::/0")
            || OPEN_PORTS_WITHOUT_WARNING.contains(&rule.port)
        {
            continue;
        }
        let pos = rules
            .get(i)
            .and_then(|r| get(r, "from"))
            .map(|f| f.pos)
            .unwrap_or(Pos { line: 0, col: 0 });
        out.push(SpecErrorItem {
            line: pos.line,
            column: pos.col,
            message: format!(
                "port {} is open to the whole internet (`from: {}`)",
                rule.port, rule.from
            ),
            hint: Some(
                "give the addresses that need it (a CIDR, `caller` or `cluster`) unless the \
                 service is meant to be public"
                    .into(),
            ),
        });
    }
    out
}

/// Renders every item like rustc: `file:line:col: error: message`, the source line with a caret
/// under the column, then `  hint: ...`.
pub fn render_error(err: &SpecError, text: &str) -> String {
    render_items("error", err, text)
}

/// [`warnings`] of `file`, rendered like errors but as `warning:`.
pub fn render_warnings(file: &str, items: &[SpecErrorItem], text: &str) -> String {
    let err = SpecError {
        file: file.to_string(),
        items: items.to_vec(),
    };
    render_items("warning", &err, text)
}

fn render_items(kind: &str, err: &SpecError, text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let width = err
        .items
        .iter()
        .map(|i| i.line.to_string().len())
        .max()
        .unwrap_or(1);
    let pad = " ".repeat(width);
    let mut out = String::new();
    for (n, item) in err.items.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{}:{}:{}: {kind}: {}",
            err.file, item.line, item.column, item.message
        );
        let source = item
            .line
            .checked_sub(1)
            .and_then(|i| lines.get(i))
            .or_else(|| (item.line == lines.len() + 1).then_some(&""));
        if let Some(source) = source {
            let source = source.strip_suffix('\r').unwrap_or(source);
            // Keep tabs so the caret lines up however the terminal expands them.
            let indent: String = source
                .chars()
                .take(item.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{:>width$} | {source}", item.line);
            let _ = writeln!(out, "{pad} | {indent}^");
        }
        if let Some(hint) = &item.hint {
            let _ = writeln!(out, "  hint: {hint}");
        }
    }
    out
}

#[derive(Default)]
pub(crate) struct Cx {
    pub(crate) items: Vec<SpecErrorItem>,
}

/// One `key: value` of a mapping.
#[derive(Clone, Copy)]
pub(crate) struct Field<'a> {
    pub(crate) key: &'a str,
    pub(crate) key_pos: Pos,
    pub(crate) value: &'a Node,
}

impl Field<'_> {
    /// Where to point at the value: the key itself when the value is absent (`key:`).
    pub(crate) fn pos(&self) -> Pos {
        if self.value.is_empty_null() {
            self.key_pos
        } else {
            self.value.pos
        }
    }
}

/// The known fields of a mapping, after duplicate and unknown keys were reported.
pub(crate) struct Fields<'a> {
    pub(crate) pos: Pos,
    what: &'static str,
    entries: Vec<Field<'a>>,
}

impl<'a> Fields<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<Field<'a>> {
        self.entries.iter().copied().find(|f| f.key == key)
    }

    /// An optional field; an explicit null counts as absent.
    pub(crate) fn opt(&self, key: &str) -> Option<Field<'a>> {
        self.get(key).filter(|f| !f.value.is_null())
    }

    pub(crate) fn req(&self, cx: &mut Cx, key: &str) -> Option<Field<'a>> {
        let field = self.get(key);
        if field.is_none() {
            cx.err(
                self.pos,
                format!("missing required field `{key}` in {}", self.what),
                format!("add `{key}: ...` to this mapping"),
            );
        }
        field
    }
}

impl Cx {
    pub(crate) fn err(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.items.push(SpecErrorItem {
            line: pos.line,
            column: pos.col,
            message: message.into(),
            hint: Some(hint.into()),
        });
    }

    pub(crate) fn type_err(
        &mut self,
        pos: Pos,
        what: &str,
        expected: &str,
        found: &Node,
        hint: &str,
    ) {
        self.err(
            pos,
            format!(
                "invalid type for `{what}`: expected {expected}, found {}",
                found.describe()
            ),
            hint,
        );
    }

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
            Some(f) => self.string_map(f, true),
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

    /// Checks that `node` is a mapping with string keys and no duplicates; reports and drops
    /// duplicate keys.
    pub(crate) fn entries<'a>(
        &mut self,
        node: &'a Node,
        what: &str,
        hint: &str,
    ) -> Option<Vec<Field<'a>>> {
        let Kind::Map(pairs) = &node.kind else {
            self.type_err(node.pos, what, "a mapping", node, hint);
            return None;
        };
        let mut out: Vec<Field<'a>> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            let Some(key) = k.text() else {
                self.err(
                    k.pos,
                    format!("keys of `{what}` must be strings, found {}", k.describe()),
                    "write keys as plain words, e.g. `name: value`",
                );
                continue;
            };
            if let Some(first) = out.iter().find(|f| f.key == key) {
                self.err(
                    k.pos,
                    format!(
                        "duplicate key `{key}` (first defined on line {})",
                        first.key_pos.line
                    ),
                    "remove one of the two entries",
                );
                continue;
            }
            out.push(Field {
                key,
                key_pos: k.pos,
                value: v,
            });
        }
        Some(out)
    }

    /// A mapping of the given known fields; unknown ones are reported with a suggestion.
    pub(crate) fn fields<'a>(
        &mut self,
        node: &'a Node,
        what: &str,
        context: &'static str,
        known: &[&str],
    ) -> Option<Fields<'a>> {
        let hint = format!("`{what}` takes the fields {}", list(known));
        let entries = self.entries(node, what, &hint)?;
        let mut kept = Vec::with_capacity(entries.len());
        for f in entries {
            if known.contains(&f.key) {
                kept.push(f);
                continue;
            }
            let hint = match closest(f.key, known) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("valid fields are {}", list(known)),
            };
            self.err(
                f.key_pos,
                format!("unknown field `{}` in {context}", f.key),
                hint,
            );
        }
        Some(Fields {
            pos: node.pos,
            what: context,
            entries: kept,
        })
    }

    /// Any non-null scalar, as text.
    pub(crate) fn string<'a>(&mut self, f: Field<'a>) -> Option<&'a str> {
        let text = f.value.text();
        if text.is_none() {
            self.type_err(
                f.pos(),
                f.key,
                "a string",
                f.value,
                &format!("write a single value, e.g. `{}: something`", f.key),
            );
        }
        text
    }

    pub(crate) fn int(&mut self, f: Field<'_>, example: &str) -> Option<i128> {
        match f.value.scalar() {
            Some(Scalar::Int(i)) => Some(i),
            _ => {
                self.type_err(
                    f.pos(),
                    f.key,
                    "an integer",
                    f.value,
                    &format!(
                        "write a whole number without quotes, e.g. `{}: {example}`",
                        f.key
                    ),
                );
                None
            }
        }
    }

    pub(crate) fn int_in(
        &mut self,
        f: Field<'_>,
        min: i128,
        max: i128,
        example: &str,
    ) -> Option<i128> {
        let v = self.int(f, example)?;
        if v < min {
            self.err(
                f.pos(),
                format!("`{}` must be at least {min}, found {v}", f.key),
                format!("use a value between {min} and {max}"),
            );
            None
        } else if v > max {
            self.err(
                f.pos(),
                format!("`{}` must be at most {max}, found {v}", f.key),
                format!("use a value between {min} and {max}"),
            );
            None
        } else {
            Some(v)
        }
    }

    pub(crate) fn name(&mut self, f: Field<'_>, kind: &str) -> Option<String> {
        let name = self.string(f)?;
        match validate_name(name) {
            Ok(()) => Some(name.to_string()),
            Err(e) => {
                let reason = match e {
                    CoreError::InvalidName { reason, .. } => reason,
                    other => other.to_string(),
                };
                self.err(
                    f.pos(),
                    format!("invalid {kind} name {name:?}: {reason}"),
                    "names are 1-30 characters of lowercase letters, digits and '-', \
                     starting with a letter and not ending with '-'",
                );
                None
            }
        }
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
        let mut id = |cx: &mut Cx, key: &str, prefix: &str, words: &[&str], hint: &str| {
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
            match self.string_map(f, false) {
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
            Some(f) => self.string_map(f, false),
        };
        Some(PoolSpec {
            name: name?,
            count: u32::try_from(count?).ok()?,
            size: size?,
            image: image?,
            labels: labels?,
        })
    }

    fn non_empty(&mut self, f: Field<'_>) -> Option<String> {
        let s = self.string(f)?;
        if s.trim().is_empty() {
            self.err(
                f.pos(),
                format!("`{}` must not be empty", f.key),
                format!("give a value or remove `{}` to use the default", f.key),
            );
            return None;
        }
        Some(s.to_string())
    }

    /// `labels` and `tags`: string keys to string values.
    fn string_map(&mut self, f: Field<'_>, tags: bool) -> Option<BTreeMap<String, String>> {
        let hint = format!("write `{}` as `key: value` pairs", f.key);
        let entries = self.entries(f.value, f.key, &hint)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for e in entries {
            if e.key.trim().is_empty() {
                self.err(
                    e.key_pos,
                    format!("`{}` keys must not be empty", f.key),
                    "give the key a name",
                );
                ok = false;
                continue;
            }
            if tags && e.key.starts_with("gantry-") {
                self.err(
                    e.key_pos,
                    format!("tag key `{}` uses the reserved prefix `gantry-`", e.key),
                    "gantry sets `gantry-*` tags itself; choose another prefix",
                );
                ok = false;
                continue;
            }
            match self.string(e) {
                Some(v) => {
                    out.insert(e.key.to_string(), v.to_string());
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn network(&mut self, f: Field<'_>) -> Option<NetworkSpec> {
        let fields = self.fields(f.value, "network", "`network`", NETWORK_FIELDS)?;
        let Some(allow) = fields.opt("allow") else {
            return Some(NetworkSpec::default());
        };
        let Kind::Seq(items) = &allow.value.kind else {
            self.type_err(
                allow.pos(),
                "allow",
                "a list",
                allow.value,
                "list rules as `- {port: 22, from: caller}` entries",
            );
            return None;
        };
        let mut rules = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            match self.allow_rule(item) {
                Some(r) => rules.push(r),
                None => ok = false,
            }
        }
        ok.then_some(NetworkSpec { allow: rules })
    }

    fn allow_rule(&mut self, node: &Node) -> Option<AllowRule> {
        let fields = self.fields(node, "allow", "allow rule", ALLOW_FIELDS)?;
        let port = fields
            .req(self, "port")
            .and_then(|f| self.int_in(f, 1, 65535, "22"))
            .and_then(|p| u16::try_from(p).ok());
        let from = fields.req(self, "from").and_then(|f| {
            let s = self.string(f)?;
            match check_from(s) {
                Ok(()) => Some(s.to_string()),
                Err((message, hint)) => {
                    self.err(f.pos(), message, hint);
                    None
                }
            }
        });
        Some(AllowRule {
            port: port?,
            from: from?,
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

/// `caller`, `cluster`, or a canonical IPv4/IPv6 CIDR.
fn check_from(s: &str) -> Result<(), (String, String)> {
    const HINT: &str = "use a CIDR such as `10.0.0.0/8` or `2001:db8::/32`, `caller` (the \
                        address gantry runs from) or `cluster` (the other nodes)";
    if s == "caller" || s == "cluster" {
        return Ok(());
    }
    let Some((addr, prefix)) = s.split_once('/') else {
        return Err(match s.parse::<IpAddr>() {
            Ok(ip) => (
                format!("`from` {s:?} is an address, not a cidr"),
                format!(
                    "add a prefix length for a single address: `{s}/{}`",
                    max_prefix(ip)
                ),
            ),
            Err(_) => (format!("invalid `from` {s:?}"), HINT.into()),
        });
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return Err((
            format!("invalid address {addr:?} in cidr {s:?}"),
            HINT.into(),
        ));
    };
    let max = max_prefix(ip);
    let prefix = match prefix.parse::<u8>() {
        Ok(p) if p <= max && !prefix.starts_with('+') => p,
        _ => {
            return Err((
                format!("invalid prefix length {prefix:?} in cidr {s:?}"),
                format!("the prefix length must be a number from 0 to {max}"),
            ));
        }
    };
    let network = mask(ip, prefix);
    if network != ip {
        return Err((
            format!("cidr {s:?} has host bits set"),
            format!("did you mean `{network}/{prefix}`?"),
        ));
    }
    Ok(())
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

/// `a`, `b` and `c` as "`a`, `b`, `c`".
pub(crate) fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The candidate closest to `input` by edit distance, if it is plausibly a typo of it. Ties go
/// to a candidate with the same first letter (`form` → `from`, not `port`).
pub(crate) fn closest<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let input = input.to_lowercase();
    let limit = (input.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| {
            let lower = c.to_lowercase();
            let other_start = input.chars().next() != lower.chars().next();
            (edit_distance(&input, &lower), other_start, *c)
        })
        .filter(|(d, _, _)| *d <= limit)
        .min_by_key(|(d, other_start, _)| (*d, *other_start))
        .map(|(_, _, c)| c)
}

/// Optimal-string-alignment distance: Levenshtein plus adjacent transpositions.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(closest("cont", POOL_FIELDS), Some("count"));
        assert_eq!(closest("form", ALLOW_FIELDS), Some("from"));
        assert_eq!(closest("nmae", POOL_FIELDS), Some("name"));
        assert_eq!(closest("apiversion", TOP_FIELDS), Some("apiVersion"));
        assert_eq!(closest("flavour", POOL_FIELDS), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn cidrs() {
        for ok in [
            "caller",
            "cluster",
            "0.0.0.0/0",
            "10.0.0.0/8",
            "1.2.3.4/32",
            "::/0",
            "2001:db8::/32",
        ] {
            assert!(check_from(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0.1/8",
            "::1/0",
            "x/8",
            "1.2.3.4",
        ] {
            assert!(check_from(bad).is_err(), "{bad}");
        }
    }
}
