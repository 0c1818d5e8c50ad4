//! Providers as plug-ins: a [`ProviderKind`] is everything gantry needs to know about one
//! provider, and the [`Registry`] holds the kinds a binary was built with.
//!
//! A kind (implemented in its provider's crate)
//! - reads its own `provider:` section of a spec with core's position-keeping reader (its
//!   [`ProviderSection`] part), so its errors still name `file:line:column`, and decodes the
//!   options it wrote into its own types;
//! - builds the provider of a spec, from its options and what the binary gives every kind
//!   ([`BuildEnv`]: project, data directory, user, key, executable);
//! - gives the transport of the spec's nodes when it brings its own (Docker exec; None: SSH);
//! - names its listing scopes ([`Scope`]): where the project's nodes of this kind are listed by
//!   tags, for `ls`, `gc` and `inventory` (AWS regions, Docker engines).
//!
//! Nothing above the provider crates names a provider: the binary registers its kinds in one
//! place and everything else asks the registry. Adding a provider is its crate plus one
//! registration line (see docs/adding-a-provider.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use gantry_core::spec::{ProviderOptions, ProviderSection, ReadinessRule};
use gantry_core::{ClusterSpec, SpecError};

use crate::transport::Transport;
use crate::{ErrorKind, Provider, ProviderError, Result};

/// What the binary gives every kind to build providers with.
#[derive(Debug, Clone)]
pub struct BuildEnv {
    pub project: String,
    /// Where gantry keeps its data (`GANTRY_HOME`); a provider keeps its own files below it
    /// (local: `local/`).
    pub data_dir: PathBuf,
    /// The user running gantry (the login user on local nodes).
    pub user: String,
    /// The project's public key, OpenSSH format, authorised on every node.
    pub ssh_public_key: String,
    /// The gantry binary (local nodes' agents run it); None when it cannot be found.
    pub executable: Option<PathBuf>,
}

/// A recorded cluster as the listing asks about it: its name, the kind its record names, and
/// its spec (None: the record's spec does not decode).
#[derive(Debug, Clone, Copy)]
pub struct RecordedCluster<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub spec: Option<&'a ClusterSpec>,
}

/// What a scope's failed listing means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// The whole listing fails (local nodes: a directory scan that should never fail).
    Fail,
    /// A warning naming the scope; the others still list.
    Warn,
    /// Nothing to say unless a recorded cluster lives there (the default Docker engine: none
    /// running is the usual case), then a warning.
    Quiet,
}

/// One place nodes are listed by the project's tags.
pub struct Scope {
    /// Unique among the scopes; the inventory cache's key for a cacheable scope
    /// (`aws:REGION`, `aws:REGION@ENDPOINT`).
    pub key: String,
    /// The provider it lists, as `ls` shows it: `local`, `docker`, `aws`.
    pub kind: String,
    /// Shown beside its clusters (an AWS region).
    pub region: Option<String>,
    /// For messages: `AWS region us-east-1`, `docker engine unix:///…`.
    pub what: String,
    pub provider: Arc<dyn Provider>,
    /// Its listings may be kept in, and served from, the inventory cache.
    pub cacheable: bool,
    /// How long one listing may take.
    pub timeout: Option<Duration>,
    pub on_error: OnError,
    /// The recorded clusters whose nodes live here.
    pub clusters: Vec<String>,
}

/// Something worth telling, tied to a region when it is about one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub region: Option<String>,
    pub message: String,
}

/// One provider, as a plug-in (see the module's doc).
pub trait ProviderKind: ProviderSection {
    /// Whether `spec`'s options (read by this kind, perhaps by an earlier version) decode; an
    /// error names the cluster.
    fn check_options(&self, spec: &ClusterSpec) -> Result<()>;

    /// The provider of a spec of this kind (cheap: no IO until it is used).
    fn build(&self, spec: &ClusterSpec, env: &BuildEnv) -> Result<Arc<dyn Provider>>;

    /// How the spec's nodes are reached when not over SSH (Docker exec); None: SSH.
    fn transport(&self, spec: &ClusterSpec, env: &BuildEnv) -> Result<Option<Arc<dyn Transport>>> {
        let _ = (spec, env);
        Ok(None)
    }

    /// Where this kind's nodes of the project are listed: the places the recorded `clusters`
    /// of this kind name (each scope says which of them live there), plus the places the
    /// environment or the defaults name. `named`: places the user asked for (`ls --region`),
    /// which a kind uses if they mean something to it. Warnings: places that cannot be listed.
    fn listing_scopes(
        &self,
        clusters: &[RecordedCluster<'_>],
        env: &BuildEnv,
        named: &[String],
    ) -> (Vec<Scope>, Vec<Warning>);

    /// Where a cluster the store has no record of may have nodes of this kind (a run that
    /// crashed before recording it): the default place, if the kind has one.
    fn default_place(&self, env: &BuildEnv) -> Option<Arc<dyn Provider>> {
        let _ = env;
        None
    }
}

/// The provider kinds a binary was built with, in registration order (the first is where an
/// unrecorded cluster is looked for first).
#[derive(Default, Clone)]
pub struct Registry {
    kinds: Vec<Arc<dyn ProviderKind>>,
}

/// Every provider a registry builds goes through here: what it returns is checked
/// ([`crate::checked`]) before any name, address or user reaches a file or a path.
fn checked(p: Arc<dyn Provider>) -> Arc<dyn Provider> {
    crate::checked::Checked::wrap(p)
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a kind (a later kind of the same name replaces the earlier).
    pub fn register(&mut self, kind: impl ProviderKind + 'static) -> &mut Registry {
        self.kinds.retain(|k| k.name() != kind.name());
        self.kinds.push(Arc::new(kind));
        self
    }

    /// The kind named `name`.
    pub fn kind(&self, name: &str) -> Option<&dyn ProviderKind> {
        self.kinds
            .iter()
            .find(|k| k.name() == name)
            .map(|k| k.as_ref())
    }

    /// The kinds' names, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }

    /// The kinds as the spec parser takes them.
    pub fn sections(&self) -> Vec<&dyn ProviderSection> {
        self.kinds
            .iter()
            .map(|k| k.as_ref() as &dyn ProviderSection)
            .collect()
    }

    /// Parses and validates a spec, every kind reading its own section.
    pub fn parse_spec(
        &self,
        file: &str,
        text: &str,
    ) -> std::result::Result<ClusterSpec, SpecError> {
        gantry_core::spec::parse(file, text, &self.sections())
    }

    /// Whether the spec's `allow` rules open a firewall (see
    /// [`ProviderSection::opens_firewall`]); false for a kind this binary lacks.
    pub fn opens_firewall(&self, spec: &ClusterSpec) -> bool {
        self.kind(spec.provider_name())
            .is_some_and(|k| k.opens_firewall())
    }

    /// The kind of `spec`, or an error saying this binary was built without it.
    pub fn kind_of(&self, spec: &ClusterSpec) -> Result<&dyn ProviderKind> {
        let name = spec.provider_name();
        self.kind(name).ok_or_else(|| {
            ProviderError::new(
                name,
                "build",
                &spec.name,
                ErrorKind::Unavailable,
                format!("this gantry was built without the {name} provider"),
            )
            .with_hint(format!(
                "rebuild with the default features (`cargo build` without \
                 --no-default-features); this gantry has {}",
                self.names().join(", ")
            ))
        })
    }

    /// The provider of `spec`, checked.
    pub fn build(&self, spec: &ClusterSpec, env: &BuildEnv) -> Result<Arc<dyn Provider>> {
        let kind = self.kind_of(spec)?;
        kind.check_options(spec)?;
        Ok(checked(kind.build(spec, env)?))
    }

    /// How `spec`'s nodes are reached when not over SSH; None: SSH.
    pub fn transport(
        &self,
        spec: &ClusterSpec,
        env: &BuildEnv,
    ) -> Result<Option<Arc<dyn Transport>>> {
        let kind = self.kind_of(spec)?;
        kind.check_options(spec)?;
        kind.transport(spec, env)
    }

    /// Where an unrecorded cluster's nodes may be, most likely first: each kind's default
    /// place, checked.
    pub fn default_places(&self, env: &BuildEnv) -> Vec<Arc<dyn Provider>> {
        self.kinds
            .iter()
            .filter_map(|k| k.default_place(env))
            .map(checked)
            .collect()
    }

    /// Every listing scope of the project, kind by kind in registration order, with the
    /// warnings about places that cannot be listed. A recorded cluster of a kind this binary
    /// lacks is listed nowhere (the listing says its spec cannot be read).
    pub fn listing_scopes(
        &self,
        clusters: &[RecordedCluster<'_>],
        env: &BuildEnv,
        named: &[String],
    ) -> (Vec<Scope>, Vec<Warning>) {
        let mut scopes = Vec::new();
        let mut warnings = Vec::new();
        for k in &self.kinds {
            let mine: Vec<RecordedCluster<'_>> = clusters
                .iter()
                .filter(|c| c.spec.map_or(c.kind, |s| s.provider_name()) == k.name())
                .copied()
                .collect();
            let (s, w) = k.listing_scopes(&mine, env, named);
            for mut scope in s {
                scope.provider = checked(scope.provider);
                scopes.push(scope);
            }
            warnings.extend(w);
        }
        (scopes, warnings)
    }
}

/// An option error of `spec`'s kind `kind`: its recorded or parsed options do not decode into
/// the kind's type (a record another gantry wrote, a kind's options that changed).
pub fn options_error(kind: &str, spec: &ClusterSpec, e: serde_json::Error) -> ProviderError {
    ProviderError::new(
        kind,
        "decode options",
        &spec.name,
        ErrorKind::InvalidInput,
        format!(
            "the {kind} options of cluster {} cannot be read: {e}",
            spec.name
        ),
    )
    .with_hint("re-run `gantry up -f SPEC` with the cluster's spec to record it again")
}
