//! The blueprint model: what a `blueprint.yaml` says, and how a cluster spec refers to one.
//!
//! A blueprint is a software recipe (params, artifacts, steps) applied to a cluster's nodes; the
//! format is documented in `docs/blueprints.md`. This module exists so that the *shape* of a
//! blueprint is decided without IO, like the spec's: [`parse()`] turns the text of a
//! `blueprint.yaml` into a [`Blueprint`] whose every part keeps its source position, or into a
//! [`SpecError`] listing every problem at `file:line:column` (unknown fields, bad targets, a URL
//! artifact without `sha256`, an unknown or cyclic `after`). Reading the files, resolving params
//! against a spec, rendering templates and running steps belong to the engine.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SpecError;

mod parse;
pub use parse::parse;

/// Default timeout of a step.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(300);
/// Default timeout of a `wait` action.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(120);

/// A 1-based source position (`0:0` when unknown, e.g. for a spec read back from JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loc {
    pub line: usize,
    pub col: usize,
}

/// One entry of the spec's `blueprints:` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlueprintRef {
    pub source: BlueprintSource,
    /// Values as written in the spec; checked against the blueprint's params by the engine.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Where things were written, for errors; not part of the spec's identity.
    #[serde(skip)]
    pub locs: RefLocs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlueprintSource {
    /// A built-in blueprint (`gantry blueprint ls`).
    Name(String),
    /// A directory; relative paths are relative to the spec file (resolved by the caller).
    Path(String),
}

impl BlueprintSource {
    /// `etcd` or `./my-blueprint`, for messages.
    pub fn label(&self) -> &str {
        match self {
            BlueprintSource::Name(n) | BlueprintSource::Path(n) => n,
        }
    }
}

/// Source positions of a [`BlueprintRef`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefLocs {
    /// The list entry.
    pub at: Loc,
    /// The `name:` or `path:` value.
    pub source: Loc,
    /// Each param: (key, value).
    pub params: BTreeMap<String, (Loc, Loc)>,
}

/// A parsed `blueprint.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blueprint {
    pub name: String,
    pub description: String,
    pub params: Vec<Param>,
    pub artifacts: Vec<Artifact>,
    pub steps: Vec<StepDef>,
    /// What the blueprint tells its users once applied (connection strings, user names),
    /// rendered with the cluster's context (`gantry show`, `gantry inventory --format json`).
    pub outputs: Vec<Output>,
}

impl Blueprint {
    /// The params gantry generates (`type: secret`).
    pub fn secret_params(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| p.ty == ParamType::Secret)
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }
    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.name == name)
    }
    pub fn step(&self, id: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.id == id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Int,
    Bool,
    List,
    Map,
    /// A string gantry generates once per cluster (random) and keeps out of the state store;
    /// a spec may not set it, and every output gantry stores or prints masks it.
    Secret,
}

impl ParamType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Bool => "bool",
            ParamType::List => "list",
            ParamType::Map => "map",
            ParamType::Secret => "secret",
        }
    }
}

/// A typed parameter; one without a default is required.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Param {
    pub name: String,
    #[serde(skip)]
    pub loc: Loc,
    #[serde(rename = "type")]
    pub ty: ParamType,
    pub default: Option<serde_json::Value>,
    pub description: String,
    pub min: Option<i64>,
    pub max: Option<i64>,
    #[serde(rename = "enum")]
    pub choices: Option<Vec<serde_json::Value>>,
    /// A regular expression a string value must match (checked by the engine).
    pub pattern: Option<String>,
}

/// One entry of `outputs:`: a template rendered with the cluster's context (`cluster`, `nodes`,
/// `params`, `blueprints`; no `node`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    pub name: String,
    #[serde(skip)]
    pub loc: Loc,
    pub value: Text,
    pub description: String,
    /// Shown masked unless asked for (`--show-secrets`). An output whose value renders a
    /// secret param is secret whether or not it says so.
    pub secret: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Artifact {
    pub name: String,
    #[serde(skip)]
    pub loc: Loc,
    pub source: ArtifactSource,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactSource {
    /// Downloaded once into the artifact cache and verified.
    Url { url: String, sha256: String },
    /// A command on the node's PATH, else a package installed when allowed.
    Command {
        command: String,
        package: Option<String>,
    },
    /// A file on the node.
    Path { path: String },
}

/// Which nodes a step runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepTarget {
    /// Every node, concurrently.
    All,
    /// The first node (pool order, then index).
    First,
    /// Every node, one at a time in order.
    Each,
    /// Every node of a pool, concurrently.
    Pool(String),
}

/// A template: text plus where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Text {
    pub text: String,
    /// In `blueprint.yaml` (inline text) — the file is the blueprint's.
    #[serde(skip)]
    pub loc: Loc,
}

/// A script: a file of the blueprint, or inline text (anything containing a newline).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Script {
    File(String),
    Inline(Text),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadSource {
    /// A file of the blueprint directory.
    File(String),
    /// `artifact:NAME`.
    Artifact(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitCheck {
    /// `host:port` accepts a TCP connection.
    Tcp(Text),
    /// The URL answers with `status`.
    Http { url: Text, status: u16 },
    /// The command exits 0 on the node.
    Command(Text),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Run(Script),
    Template {
        /// A file of the blueprint, rendered per node.
        src: String,
        dest: Text,
        mode: Option<u32>,
        /// Where `mode` is written (the step when it is not), for errors.
        #[serde(skip)]
        mode_loc: Loc,
    },
    Upload {
        src: UploadSource,
        dest: Text,
        mode: Option<u32>,
    },
    Wait {
        check: WaitCheck,
        #[serde(with = "secs")]
        timeout: Duration,
    },
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Run(_) => "run",
            Action::Template { .. } => "template",
            Action::Upload { .. } => "upload",
            Action::Wait { .. } => "wait",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepDef {
    pub id: String,
    #[serde(skip)]
    pub loc: Loc,
    pub after: Vec<String>,
    #[serde(skip)]
    pub after_locs: Vec<Loc>,
    pub target: StepTarget,
    #[serde(skip)]
    pub target_loc: Loc,
    pub action: Action,
    #[serde(with = "secs")]
    pub timeout: Duration,
    pub retries: u32,
    /// Run again on every node gantry starts (services that must come back after a stop).
    pub boot: bool,
}

mod secs {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}

/// Parse errors are spec errors: a file and located items.
pub type BlueprintError = SpecError;
