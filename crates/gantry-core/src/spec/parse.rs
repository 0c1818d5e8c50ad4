//! YAML → validated [`ClusterSpec`], with every problem located.
//!
//! The text is loaded and walked with [`crate::reader`] (every problem collected, each at its
//! `line:column`, with a hint); this module knows the spec's fields. The `network` section is
//! read by [`super::network`]; the `provider` section by the provider kind it names (a
//! [`ProviderSection`] the caller hands in: gantry-core knows no provider).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::DEFAULT_LIFETIME;
use super::provider::{ProviderSection, ReadinessRule};
use crate::reader::yaml::{self, Kind, Node, Pos};
use crate::reader::{Field, Reader, closest, list};
use crate::{
    API_VERSION, ClusterSpec, CoreError, NetworkSpec, PoolSpec, ProviderSpec, Readiness, SpecError,
    Tags,
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
const SSH_FIELDS: &[&str] = &["user"];

/// Parses and validates a spec. `file` is used only to label errors; `kinds`: the providers a
/// spec may name, each of which reads its own section.
pub fn parse(
    file: &str,
    text: &str,
    kinds: &[&dyn ProviderSection],
) -> Result<ClusterSpec, SpecError> {
    let mut cx = Reader::new();
    let spec = match yaml::load(text) {
        Ok(Some(root)) => cx.spec(&root, kinds),
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

pub use crate::reader::parse_duration;

impl Reader {
    fn spec(&mut self, root: &Node, kinds: &[&dyn ProviderSection]) -> Option<ClusterSpec> {
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
        let provider = top
            .req(self, "provider")
            .and_then(|f| self.provider(f, kinds));
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

        let section = provider
            .as_ref()
            .and_then(|(p, _)| kinds.iter().find(|k| k.name() == p.kind));
        // A kind whose API is how its nodes are reached (Docker exec) is always `api` ready.
        let api_only = section.is_some_and(|k| k.readiness() != ReadinessRule::Any);
        let readiness = match section.map(|k| k.readiness()) {
            Some(ReadinessRule::ApiOnly { message, hint }) => {
                match (readiness, top.opt("readiness")) {
                    (Some(Readiness::Ssh), Some(f)) => {
                        self.err(f.pos(), message, hint);
                        None
                    }
                    (Some(_), _) => Some(Readiness::Api),
                    (None, _) => None,
                }
            }
            _ => readiness,
        };
        if let Some(k) = section
            && let Some(f) = top.opt("pools")
            && let Kind::Seq(items) = &f.value.kind
        {
            self.sizes(*k, items);
        }
        if !api_only
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
            provider: provider?.0,
            pools: pools?,
            network: network?,
            lifetime: lifetime?,
            ssh_user: ssh_user?,
            readiness: readiness?,
            tags: tags?,
            blueprints: blueprints?,
        })
    }

    /// The `provider` section: the kind it names reads its own options. Returns the spec's
    /// provider and where its name is.
    fn provider(
        &mut self,
        f: Field<'_>,
        kinds: &[&dyn ProviderSection],
    ) -> Option<(ProviderSpec, Pos)> {
        let known: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        let known_hint = format!("known providers: {}", list(&known));
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
        let Some(kind) = kinds.iter().find(|k| k.name() == name) else {
            let hint = match closest(name, &known) {
                Some(s) => format!("did you mean `{s}`? {known_hint}"),
                None => known_hint,
            };
            self.err(name_pos, format!("unknown provider `{name}`"), hint);
            return None;
        };
        let options = options.map(|o| o.value).filter(|v| !v.is_null());
        let options = kind.read_options(self, name_pos, options)?;
        Some((ProviderSpec::new(kind.name(), options), name_pos))
    }

    /// Every pool size must mean something to the spec's provider.
    fn sizes(&mut self, kind: &dyn ProviderSection, pools: &[Node]) {
        for pool in pools {
            let Kind::Map(pairs) = &pool.kind else {
                continue;
            };
            for (k, v) in pairs {
                if k.text() != Some("size") {
                    continue;
                }
                if let Some(size) = v.text()
                    && let Some((message, hint)) = kind.check_size(size)
                {
                    self.err(v.pos, message, hint);
                }
            }
        }
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

    #[test]
    fn spec_blueprints_keep_param_positions() {
        let spec = super::parse(
            "s.yaml",
            "apiVersion: gantry/v1\nname: d\nprovider: local\npools: [{name: db, count: 1}]\nblueprints:\n  - name: hello\n    params: {greeting: hi, n: 3, l: [1, 2]}\n",
            &[&crate::spec::provider::StubKind],
        )
        .unwrap();
        let r = &spec.blueprints[0];
        assert_eq!(
            r.source,
            crate::blueprint::BlueprintSource::Name("hello".into())
        );
        assert_eq!(r.params["n"], serde_json::json!(3));
        assert_eq!(r.params["l"], serde_json::json!([1, 2]));
        assert_eq!(
            r.locs.params["n"].0,
            crate::blueprint::Loc { line: 7, col: 28 }
        );
    }
}
