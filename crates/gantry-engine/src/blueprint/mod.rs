//! Blueprints: software recipes applied to a cluster's nodes once they are ready.
//!
//! This module tree exists to turn the spec's `blueprints:` list into work on nodes, and to
//! refuse a bad blueprint before anything is created. The format is `docs/blueprints.md`;
//! `gantry_core::blueprint` parses it without IO. Here:
//!
//! - [`load`]: find a blueprint (built-in, embedded by `build.rs`, or a directory) and read its
//!   files; [`builtin`] lists the embedded ones.
//! - [`params`]: check the spec's params against the blueprint's typed declarations.
//! - [`render`]: the template context and strict minijinja rendering.
//! - [`secrets`]: the values of `secret` params and the rules that keep them off command lines
//!   and out of files other users can read.
//! - [`expand`]: steps × nodes → ordered step instances with input hashes (pure).
//! - [`artifacts`]: URL downloads into the cache (verified), commands and paths on nodes.
//! - [`exec`]: instances → DAG steps over the cluster's transport (SSH, Docker exec);
//!   checkpoints; `boot` steps after a start.
//! - [`remote`]: one node as steps and artifacts see it (shell commands, uploads, output tail).
//!
//! [`prepare`] is the whole validation: it loads, checks params and targets, and dry-renders
//! every template and script for every node the spec asks for, so a typo in a template or an
//! undefined variable fails `up` before a single node exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gantry_core::blueprint::{Blueprint, BlueprintRef, BlueprintSource, Loc};
use gantry_core::{ClusterSpec, SpecError, SpecErrorItem};

use crate::EngineError;

pub mod artifacts;
pub mod builtin;
pub mod exec;
pub mod expand;
pub mod load;
pub mod params;
pub mod remote;
pub mod render;
pub mod secrets;

pub use expand::{Instance, NodeView, Rendered};

/// A blueprint read from its source, with all of its files.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub blueprint: Blueprint,
    /// `builtin:NAME` or the directory.
    pub origin: String,
    /// Label of `blueprint.yaml` in errors (`<origin>/blueprint.yaml`).
    pub file: String,
    /// Every file of the blueprint by relative path.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Loaded {
    /// `origin/rel`, for errors about one of its files.
    pub fn label(&self, rel: &str) -> String {
        format!("{}/{rel}", self.origin)
    }

    pub fn text(&self, rel: &str) -> Option<String> {
        self.files
            .get(rel)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

/// A blueprint ready to apply: loaded, its params resolved and checked.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub loaded: Arc<Loaded>,
    pub params: serde_json::Map<String, serde_json::Value>,
}

impl Prepared {
    pub fn name(&self) -> &str {
        &self.loaded.blueprint.name
    }
}

/// What `up` applies after the nodes are ready.
#[derive(Clone, Default)]
pub struct Apply {
    pub blueprints: Vec<Prepared>,
    /// `$GANTRY_HOME/cache/artifacts`.
    pub cache_dir: PathBuf,
    /// May install missing packages with apt-get (`--allow-packages`).
    pub allow_packages: bool,
    /// How the nodes are reached; None: SSH with the operation's client config. The caller
    /// picks it from the cluster's provider (Docker exec for docker clusters).
    pub transport: Option<Arc<dyn crate::transport::Transport>>,
}

impl std::fmt::Debug for Apply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apply")
            .field("blueprints", &self.blueprints)
            .field("cache_dir", &self.cache_dir)
            .field("allow_packages", &self.allow_packages)
            .field("transport", &self.transport.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// One located problem.
pub(crate) fn located(file: &str, at: Loc, message: String, hint: Option<String>) -> SpecError {
    SpecError {
        file: file.into(),
        items: vec![SpecErrorItem {
            line: at.line,
            column: at.col,
            message,
            hint,
        }],
    }
}

/// Loads every blueprint the spec names; `spec_dir` anchors relative paths.
pub fn load_all(spec: &ClusterSpec, spec_dir: &Path) -> Result<Vec<Loaded>, EngineError> {
    spec.blueprints
        .iter()
        .map(|r| match &r.source {
            BlueprintSource::Name(n) => load::builtin(n),
            BlueprintSource::Path(p) => load::dir(&spec_dir.join(p)),
        })
        .collect()
}

/// Validates the spec's blueprints: params (against the spec file `spec_file`), targets, file
/// references, and a strict dry render of every template for every node of the spec.
pub fn prepare(
    spec: &ClusterSpec,
    spec_file: &str,
    loaded: Vec<Loaded>,
) -> Result<Vec<Prepared>, EngineError> {
    let mut errors: Vec<SpecError> = Vec::new();
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (r, l) in spec.blueprints.iter().zip(loaded) {
        if let Some(line) = seen.get(&l.blueprint.name) {
            errors.push(located(
                spec_file,
                r.locs.at,
                format!(
                    "blueprint `{}` is applied twice (first on line {line})",
                    l.blueprint.name
                ),
                Some("apply each blueprint once".into()),
            ));
            continue;
        }
        seen.insert(l.blueprint.name.clone(), r.locs.at.line);
        errors.extend(check_targets(spec, &l));
        errors.extend(check_files(&l));
        match params::resolve(&l, r, spec_file) {
            Ok(p) => out.push(Prepared {
                loaded: Arc::new(l),
                params: p,
            }),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        let nodes = expand::planned_nodes(spec);
        let cluster = render::ClusterView {
            name: spec.name.clone(),
            project: String::new(),
            uid: String::new(),
        };
        let secret_values = secrets::placeholders(&out);
        let views = expand::blueprint_views(&out, &secret_values);
        for p in &out {
            let arts = render::placeholder_artifacts(&p.loaded.blueprint);
            let ctx = expand::Context {
                cluster: &cluster,
                nodes: &nodes,
                members: &[],
                artifacts: &BTreeMap::new(),
                placeholder_artifacts: Some(&arts),
                blueprints: &views,
                secrets: &secret_values,
            };
            if let Err(mut e) = expand::render_outputs(p, &cluster, &nodes, &views, &secret_values)
            {
                errors.append(&mut e);
            }
            if let Err(mut e) = expand::expand_one(p, &ctx, None)
                .map(|_| ())
                .map_err(|e| match e {
                    EngineError::BlueprintInvalid(v) => v,
                    other => vec![located(
                        &p.loaded.file,
                        Loc::default(),
                        other.to_string(),
                        None,
                    )],
                })
            {
                errors.append(&mut e);
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(EngineError::BlueprintInvalid(errors))
    }
}

fn check_targets(spec: &ClusterSpec, l: &Loaded) -> Vec<SpecError> {
    use gantry_core::blueprint::StepTarget;
    let pools: Vec<&str> = spec.pools.iter().map(|p| p.name.as_str()).collect();
    l.blueprint
        .steps
        .iter()
        .filter_map(|s| match &s.target {
            StepTarget::Pool(p) if !pools.contains(&p.as_str()) => Some(located(
                &l.file,
                s.target_loc,
                format!(
                    "step `{}` targets pool `{p}`, which the spec does not have",
                    s.id
                ),
                Some(format!("the spec's pools are {}", pools.join(", "))),
            )),
            _ => None,
        })
        .collect()
}

/// Every file a step names exists in the blueprint.
fn check_files(l: &Loaded) -> Vec<SpecError> {
    use gantry_core::blueprint::{Action, Script, UploadSource};
    let mut out = Vec::new();
    for s in &l.blueprint.steps {
        let file = match &s.action {
            Action::Run(Script::File(f)) => Some(f),
            Action::Template { src, .. } => Some(src),
            Action::Upload {
                src: UploadSource::File(f),
                ..
            } => Some(f),
            _ => None,
        };
        if let Some(f) = file
            && !l.files.contains_key(f.as_str())
        {
            out.push(located(
                &l.file,
                s.loc,
                format!(
                    "step `{}` uses the file `{f}`, which the blueprint does not have",
                    s.id
                ),
                Some(format!(
                    "files are relative to the blueprint directory ({})",
                    l.origin
                )),
            ));
        }
    }
    out
}

/// The spec entry of a blueprint, for `render` (by blueprint name or as written in the spec).
pub fn find<'a>(prepared: &'a [Prepared], spec: &ClusterSpec, name: &str) -> Option<&'a Prepared> {
    prepared
        .iter()
        .zip(&spec.blueprints)
        .find_map(|(p, r): (_, &BlueprintRef)| {
            (p.name() == name || r.source.label() == name).then_some(p)
        })
}

#[cfg(test)]
mod tests;
