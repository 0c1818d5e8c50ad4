//! The template context of a step on a node and strict minijinja rendering.
//!
//! Every template, script, `dest` path and `wait` target is rendered with
//! `UndefinedBehavior::Strict`: a misspelt variable is an error, not an empty string. Errors
//! point at the template's file and line (a file of the blueprint) or at the YAML value in
//! `blueprint.yaml` that holds an inline template.

use std::collections::BTreeMap;

use gantry_core::SpecError;
use gantry_core::blueprint::{ArtifactSource, Blueprint, Loc};
use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use super::located;

/// What one instance does on its node, fully rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Rendered {
    /// A script run by the node's shell in its home.
    Run { script: String },
    /// Write `content` to `dest` (a rendered template or a file of the blueprint).
    Write {
        dest: String,
        content: Vec<u8>,
        mode: Option<u32>,
    },
    /// Copy a file already on the node (an artifact) to `dest`.
    Copy {
        src: String,
        dest: String,
        mode: Option<u32>,
    },
    /// Wait until `host:port` accepts a TCP connection (checked from gantry's machine).
    Tcp { address: String, timeout_secs: u64 },
    /// Wait until `url` answers `status` (checked from gantry's machine).
    Http {
        url: String,
        status: u16,
        timeout_secs: u64,
    },
    /// Wait until `command` exits 0 on the node.
    Command { command: String, timeout_secs: u64 },
}

/// `cluster` in templates.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub name: String,
    pub project: String,
    pub uid: String,
}

/// A node in templates (`nodes`, `node`, `members`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub pool: String,
    pub index: u32,
    pub address: String,
    /// Identity of this incarnation of the node (a recreated node of the same name differs);
    /// part of input hashes, not shown to templates.
    #[serde(skip)]
    pub created_at: String,
}

/// `artifacts` in templates: `{NAME: {path}}`.
pub type ArtifactPaths = BTreeMap<String, String>;

/// Paths shown for artifacts before any node exists.
pub fn placeholder_artifacts(bp: &Blueprint) -> ArtifactPaths {
    bp.artifacts
        .iter()
        .map(|a| {
            let p = match &a.source {
                ArtifactSource::Path { path } => path.clone(),
                ArtifactSource::Command { command, .. } => format!("<path of command {command}>"),
                ArtifactSource::Url { .. } => format!("<downloaded artifact {}>", a.name),
            };
            (a.name.clone(), p)
        })
        .collect()
}

/// The context of one step on one node.
/// What every step of a run sees alike.
pub struct Shared<'a> {
    pub cluster: &'a ClusterView,
    pub nodes: &'a [NodeView],
    pub members: &'a [NodeView],
    /// `{name, params}` of every blueprint of the spec.
    pub blueprints: &'a [serde_json::Value],
}

pub fn context(
    shared: &Shared<'_>,
    node: &NodeView,
    is_new: bool,
    params: &serde_json::Map<String, serde_json::Value>,
    artifacts: &ArtifactPaths,
) -> minijinja::Value {
    let Shared {
        cluster,
        nodes,
        members,
        blueprints,
    } = shared;
    let mut this = serde_json::to_value(node).expect("node serialises");
    this["is_new"] = serde_json::Value::Bool(is_new);
    let artifacts: BTreeMap<&String, serde_json::Value> = artifacts
        .iter()
        .map(|(k, v)| (k, serde_json::json!({ "path": v })))
        .collect();
    minijinja::Value::from(Serde(serde_json::json!({
        "cluster": cluster,
        "nodes": nodes,
        "node": this,
        "members": members,
        "params": params,
        "artifacts": artifacts,
        "blueprints": blueprints,
    })))
}

/// The context of a blueprint's outputs: the cluster as a whole (no `node`, `members` or
/// `artifacts`, which are per node).
pub fn output_context(
    cluster: &ClusterView,
    nodes: &[NodeView],
    params: &serde_json::Map<String, serde_json::Value>,
    blueprints: &[serde_json::Value],
) -> minijinja::Value {
    minijinja::Value::from(Serde(serde_json::json!({
        "cluster": cluster,
        "nodes": nodes,
        "params": params,
        "blueprints": blueprints,
    })))
}

/// `files` are the blueprint's own files: `{% include "scripts/common.sh" %}` renders one of
/// them in the same context (nothing outside the blueprint can be included).
fn env(files: &BTreeMap<String, Vec<u8>>) -> Environment<'static> {
    let mut env = Environment::new();
    // Blueprints render config files and scripts, never HTML: minijinja would otherwise
    // JSON-escape every value of a template named `*.yml.j2` or `*.json.j2`.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    let files = files.clone();
    env.set_loader(move |name| {
        Ok(files
            .get(name)
            .map(|b| String::from_utf8_lossy(b).into_owned()))
    });
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("default syntax is valid"),
    );
    env
}

/// Where a template's text lives, for errors.
pub enum Origin<'a> {
    /// A file of the blueprint (`label` is `origin/rel`).
    File(&'a str),
    /// Inline in `blueprint.yaml` (`file`) at `loc`.
    Inline { file: &'a str, loc: Loc },
}

/// Renders `source` with `ctx`; errors name the file and line.
pub fn render(
    source: &str,
    origin: Origin<'_>,
    what: &str,
    ctx: &minijinja::Value,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<String, SpecError> {
    let env = env(files);
    let name = match &origin {
        Origin::File(l) => l.to_string(),
        Origin::Inline { .. } => what.to_string(),
    };
    env.render_named_str(&name, source, ctx.clone())
        .map_err(|e| {
            let detail = match e.detail() {
                Some(d) => format!("{}: {d}", e.kind()),
                None => e.kind().to_string(),
            };
            let tline = e.line().unwrap_or(1).max(1);
            match origin {
                Origin::File(label) => located(
                    label,
                    Loc {
                        line: tline,
                        col: 1,
                    },
                    format!("template error in {what}: {detail}"),
                    Some(hint(&detail)),
                ),
                Origin::Inline { file, loc } => located(
                    file,
                    Loc {
                        line: loc.line + tline - 1,
                        col: if tline == 1 { loc.col } else { 1 },
                    },
                    format!("template error in {what}: {detail}"),
                    Some(hint(&detail)),
                ),
            }
        })
}

fn hint(detail: &str) -> String {
    if detail.contains("undefined") {
        "templates see cluster, nodes, node, members, params and artifacts; check the name \
         (undefined values are errors)"
            .into()
    } else {
        "check the template syntax (minijinja, like Jinja2)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([(
            "scripts/common.sh".to_string(),
            b"PORT={{ params.port }}".to_vec(),
        )])
    }

    fn ctx() -> minijinja::Value {
        minijinja::Value::from(Serde(
            serde_json::json!({"params": {"port": 5432, "name": "a\"b"}}),
        ))
    }

    #[test]
    fn includes_render_blueprint_files_in_the_same_context() {
        let out = render(
            "{% include 'scripts/common.sh' %}\n",
            Origin::File("t/x.sh"),
            "x",
            &ctx(),
            &files(),
        )
        .unwrap();
        assert_eq!(out, "PORT=5432\n");
        let err = render(
            "{% include '/etc/passwd' %}",
            Origin::File("t/x.sh"),
            "x",
            &ctx(),
            &files(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("template"), "{err}");
    }

    #[test]
    fn yaml_templates_are_not_escaped() {
        let out = render(
            "name: {{ params.name }}",
            Origin::File("t/conf.yml.j2"),
            "x",
            &ctx(),
            &files(),
        )
        .unwrap();
        assert_eq!(out, "name: a\"b");
    }
}
