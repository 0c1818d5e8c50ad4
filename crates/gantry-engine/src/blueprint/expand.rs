//! Steps × nodes → step instances, in dependency order, each with its input hash.
//!
//! Pure: given the nodes, members and artifact paths it renders every instance and decides its
//! ordering (`after`, `each` chains, the barrier between blueprints) and its input hash:
//! sha256 of the step's definition, the node's identity, what the step renders to on that node,
//! and the hashes of the instances it depends on *on the same node*. Cross-node dependencies
//! (a step after an `all` step that does not run on this node, `each` chains, barriers) order
//! instances but do not feed hashes, so growing a cluster does not re-run steps on the nodes
//! that were already there unless what they render changes.

use std::collections::{BTreeMap, BTreeSet};

use gantry_core::blueprint::{Action, Script, StepDef, StepTarget, UploadSource, WaitCheck};
use gantry_core::{ClusterSpec, SpecError, node_name};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::Prepared;
pub use super::render::NodeView;
pub use super::render::Rendered;
use super::render::{self, ArtifactPaths, ClusterView, Origin};
use super::secrets::{self, SecretValues};
use crate::EngineError;
use crate::secrets::{OutputValue, Outputs};

/// One step on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub blueprint: String,
    pub step: String,
    pub node: String,
    /// `bp/BLUEPRINT/STEP@NODE`.
    pub key: String,
    /// `KEY#HASH12`: the DAG step id and the checkpoint id.
    pub id: String,
    /// Full hex input hash.
    pub hash: String,
    /// DAG ids this instance runs after.
    pub after: Vec<String>,
    pub action: Rendered,
    pub timeout_secs: u64,
    pub retries: u32,
    pub boot: bool,
}

/// `bp/BLUEPRINT/STEP@NODE`.
pub fn key(blueprint: &str, step: &str, node: &str) -> String {
    format!("bp/{blueprint}/{step}@{node}")
}

/// The id of the no-op step that finishes once every instance of `blueprint` did.
pub fn barrier_id(blueprint: &str) -> String {
    format!("bp/{blueprint}/done")
}

/// Splits a checkpoint id `bp/B/S@N#H` into (`bp/B/S@N`, `H`).
pub fn split_id(id: &str) -> Option<(&str, &str)> {
    id.strip_prefix("bp/")?;
    id.split_once('#')
}

/// What `expand_one` needs besides the blueprint.
pub struct Context<'a> {
    pub cluster: &'a ClusterView,
    /// Every node, in order (pool order of the spec, then index).
    pub nodes: &'a [NodeView],
    /// Nodes that completed this blueprint before this run.
    pub members: &'a [NodeView],
    /// Artifact paths per node name.
    pub artifacts: &'a BTreeMap<String, ArtifactPaths>,
    /// Used for nodes without an entry in `artifacts` (dry renders).
    pub placeholder_artifacts: Option<&'a ArtifactPaths>,
    /// Every blueprint of the spec as `{name, params}` (`blueprints` in templates), so one
    /// blueprint can adapt to another (Prometheus scrapes etcd when both are applied).
    pub blueprints: &'a [serde_json::Value],
    /// The values of every blueprint's secret params (or their placeholders).
    pub secrets: &'a SecretValues,
}

/// `blueprints` in templates (secret params included: a blueprint may use another's).
pub fn blueprint_views(prepared: &[Prepared], secrets: &SecretValues) -> Vec<serde_json::Value> {
    prepared
        .iter()
        .map(|p| {
            let params = secrets::with_secrets(&p.params, secrets.get(p.name()));
            serde_json::json!({"name": p.name(), "params": params})
        })
        .collect()
}

/// Renders the outputs of one blueprint with the cluster's context. An output is secret when
/// the blueprint says so or when its value contains a secret value.
pub fn render_outputs(
    p: &Prepared,
    cluster: &ClusterView,
    nodes: &[NodeView],
    blueprints: &[serde_json::Value],
    secret_values: &SecretValues,
) -> Result<std::collections::BTreeMap<String, OutputValue>, Vec<SpecError>> {
    let l = &p.loaded;
    let params = secrets::with_secrets(&p.params, secret_values.get(p.name()));
    let masker = secrets::masker(secret_values);
    let ctx = render::output_context(cluster, nodes, &params, blueprints);
    let mut out = std::collections::BTreeMap::new();
    let mut errors = Vec::new();
    for o in &l.blueprint.outputs {
        match render::render(
            &o.value.text,
            Origin::Inline {
                file: &l.file,
                loc: o.value.loc,
            },
            &format!("output `{}`", o.name),
            &ctx,
            &l.files,
        ) {
            Ok(value) => {
                let secret = o.secret || masker.finds(&value);
                out.insert(
                    o.name.clone(),
                    OutputValue {
                        value,
                        secret,
                        description: o.description.clone(),
                    },
                );
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The outputs of every blueprint (see [`render_outputs`]).
pub fn render_all_outputs(
    prepared: &[Prepared],
    cluster: &ClusterView,
    nodes: &[NodeView],
    secret_values: &SecretValues,
) -> Result<Outputs, EngineError> {
    let views = blueprint_views(prepared, secret_values);
    let mut out = Outputs::new();
    for p in prepared {
        if p.loaded.blueprint.outputs.is_empty() {
            continue;
        }
        let o = render_outputs(p, cluster, nodes, &views, secret_values)
            .map_err(EngineError::BlueprintInvalid)?;
        out.insert(p.name().to_string(), o);
    }
    Ok(out)
}

/// The nodes a spec asks for, with placeholder addresses (for dry renders).
pub fn planned_nodes(spec: &ClusterSpec) -> Vec<NodeView> {
    spec.pools
        .iter()
        .flat_map(|p| {
            (1..=p.count).map(move |i| {
                let name = node_name(&spec.name, &p.name, i);
                NodeView {
                    address: format!("<address of {name}>"),
                    name,
                    pool: p.name.clone(),
                    index: i,
                    created_at: String::new(),
                }
            })
        })
        .collect()
}

/// The nodes a step runs on, in order.
pub fn targets<'a>(step: &StepDef, nodes: &'a [NodeView]) -> Vec<&'a NodeView> {
    match &step.target {
        StepTarget::All | StepTarget::Each => nodes.iter().collect(),
        StepTarget::First => nodes.iter().take(1).collect(),
        StepTarget::Pool(p) => nodes.iter().filter(|n| &n.pool == p).collect(),
    }
}

/// Steps in an order where every step comes after those it is `after` (stable otherwise).
pub fn step_order(steps: &[StepDef]) -> Vec<&StepDef> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut out: Vec<&StepDef> = Vec::new();
    while out.len() < steps.len() {
        let before = out.len();
        for s in steps {
            if !done.contains(s.id.as_str()) && s.after.iter().all(|a| done.contains(a.as_str())) {
                done.insert(&s.id);
                out.push(s);
            }
        }
        if out.len() == before {
            // A cycle: the parser rejects those; keep the rest in file order.
            out.extend(steps.iter().filter(|s| !done.contains(s.id.as_str())));
            break;
        }
    }
    out
}

/// Renders and orders every instance of one blueprint. `prev` is the barrier id of the
/// blueprint before it, if any.
pub fn expand_one(
    p: &Prepared,
    cx: &Context<'_>,
    prev: Option<&str>,
) -> Result<Vec<Instance>, EngineError> {
    let l = &p.loaded;
    let bp = &l.blueprint;
    let mut out: Vec<Instance> = Vec::new();
    // (step, node) → index into `out`.
    let mut at: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut errors: Vec<SpecError> = Vec::new();
    let empty = ArtifactPaths::new();
    let params = secrets::with_secrets(&p.params, cx.secrets.get(&bp.name));
    // Every secret of the spec: a template may render another blueprint's.
    let masker = secrets::masker(cx.secrets);
    for s in step_order(&bp.steps) {
        let nodes = targets(s, cx.nodes);
        let def = serde_json::to_value(s).expect("steps serialise");
        for (i, n) in nodes.iter().enumerate() {
            let is_new = !cx.members.iter().any(|m| m.name == n.name);
            let arts = cx
                .artifacts
                .get(&n.name)
                .or(cx.placeholder_artifacts)
                .unwrap_or(&empty);
            let shared = render::Shared {
                cluster: cx.cluster,
                nodes: cx.nodes,
                members: cx.members,
                blueprints: cx.blueprints,
            };
            let ctx = render::context(&shared, n, is_new, &params, arts);
            let action = match render_action(p, s, &ctx, arts)
                .and_then(|a| secrets::check_rendered(&l.file, s, a, &masker))
            {
                Ok(a) => a,
                Err(e) => {
                    if !errors.contains(&e) {
                        errors.push(e);
                    }
                    continue;
                }
            };
            let mut after: Vec<String> = Vec::new();
            let mut hash_deps: Vec<String> = Vec::new();
            for a in &s.after {
                let Some(a_def) = bp.step(a) else { continue };
                let a_nodes = targets(a_def, cx.nodes);
                if a_nodes.iter().any(|m| m.name == n.name) {
                    if let Some(&j) = at.get(&(a.clone(), n.name.clone())) {
                        after.push(out[j].id.clone());
                        hash_deps.push(out[j].hash.clone());
                    }
                } else {
                    for m in a_nodes {
                        if let Some(&j) = at.get(&(a.clone(), m.name.clone())) {
                            after.push(out[j].id.clone());
                        }
                    }
                }
            }
            if s.target == StepTarget::Each
                && i > 0
                && let Some(&j) = at.get(&(s.id.clone(), nodes[i - 1].name.clone()))
            {
                after.push(out[j].id.clone());
            }
            if s.after.is_empty()
                && let Some(b) = prev
            {
                after.push(b.to_string());
            }
            hash_deps.sort();
            let hash = hex::encode(sha2::Sha256::digest(
                serde_json::to_vec(&serde_json::json!({
                    "blueprint": bp.name,
                    "step": def,
                    "node": {"name": n.name, "created_at": n.created_at},
                    "action": action,
                    "deps": hash_deps,
                }))
                .expect("hash input serialises"),
            ));
            let key = key(&bp.name, &s.id, &n.name);
            at.insert((s.id.clone(), n.name.clone()), out.len());
            out.push(Instance {
                blueprint: bp.name.clone(),
                step: s.id.clone(),
                node: n.name.clone(),
                id: format!("{key}#{}", &hash[..12]),
                key,
                hash,
                after,
                action,
                timeout_secs: s.timeout.as_secs(),
                retries: s.retries,
                boot: s.boot,
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(EngineError::BlueprintInvalid(errors))
    }
}

fn render_action(
    p: &Prepared,
    s: &StepDef,
    ctx: &minijinja::Value,
    arts: &ArtifactPaths,
) -> Result<Rendered, SpecError> {
    let l = &p.loaded;
    let inline = |t: &gantry_core::blueprint::Text, what: &str| {
        render::render(
            &t.text,
            Origin::Inline {
                file: &l.file,
                loc: t.loc,
            },
            what,
            ctx,
            &l.files,
        )
    };
    let file = |rel: &str, what: &str| {
        let label = l.label(rel);
        let text = l.text(rel).unwrap_or_default();
        render::render(&text, Origin::File(&label), what, ctx, &l.files)
    };
    let id = &s.id;
    Ok(match &s.action {
        Action::Run(Script::File(f)) => Rendered::Run {
            script: file(f, &format!("the script of step `{id}`"))?,
        },
        Action::Run(Script::Inline(t)) => Rendered::Run {
            script: inline(t, &format!("the script of step `{id}`"))?,
        },
        Action::Template {
            src, dest, mode, ..
        } => Rendered::Write {
            content: file(src, &format!("the template of step `{id}`"))?.into_bytes(),
            dest: inline(dest, &format!("`dest` of step `{id}`"))?,
            mode: *mode,
        },
        Action::Upload { src, dest, mode } => {
            let dest = inline(dest, &format!("`dest` of step `{id}`"))?;
            match src {
                UploadSource::File(f) => Rendered::Write {
                    content: l.files.get(f).cloned().unwrap_or_default(),
                    dest,
                    mode: *mode,
                },
                UploadSource::Artifact(a) => Rendered::Copy {
                    src: arts.get(a).cloned().unwrap_or_default(),
                    dest,
                    mode: *mode,
                },
            }
        }
        Action::Wait { check, timeout } => {
            let timeout_secs = timeout.as_secs();
            match check {
                WaitCheck::Tcp(t) => Rendered::Tcp {
                    address: inline(t, &format!("`wait` of step `{id}`"))?,
                    timeout_secs,
                },
                WaitCheck::Http { url, status } => Rendered::Http {
                    url: inline(url, &format!("`wait` of step `{id}`"))?,
                    status: *status,
                    timeout_secs,
                },
                WaitCheck::Command(t) => Rendered::Command {
                    command: inline(t, &format!("`wait` of step `{id}`"))?,
                    timeout_secs,
                },
            }
        }
    })
}

/// A blueprint's members and its artifact paths per node.
pub type PerBlueprint = (Vec<NodeView>, BTreeMap<String, ArtifactPaths>);

/// Every instance, and each barrier id with the ids it waits for.
pub type Expanded = (Vec<Instance>, Vec<(String, Vec<String>)>);

/// Every blueprint's instances, the later ones after the earlier ones' barriers. Returns the
/// instances and the barrier ids with what each waits for.
pub fn expand_all(
    prepared: &[Prepared],
    cx_for: &dyn Fn(&Prepared) -> PerBlueprint,
    cluster: &ClusterView,
    nodes: &[NodeView],
    secrets: &SecretValues,
) -> Result<Expanded, EngineError> {
    let mut all = Vec::new();
    let mut barriers = Vec::new();
    let mut prev: Option<String> = None;
    let views = blueprint_views(prepared, secrets);
    for p in prepared {
        let (members, artifacts) = cx_for(p);
        let cx = Context {
            cluster,
            nodes,
            members: &members,
            artifacts: &artifacts,
            placeholder_artifacts: None,
            blueprints: &views,
            secrets,
        };
        let inst = expand_one(p, &cx, prev.as_deref())?;
        let b = barrier_id(p.name());
        let mut waits: Vec<String> = inst.iter().map(|i| i.id.clone()).collect();
        waits.extend(prev.clone());
        barriers.push((b.clone(), waits));
        prev = Some(b);
        all.extend(inst);
    }
    Ok((all, barriers))
}

/// Nodes that completed `bp` before: every step that targets the node has a done checkpoint
/// for it (with any hash). `done_keys` holds `bp/B/S@N` keys.
pub fn members(
    bp: &gantry_core::blueprint::Blueprint,
    nodes: &[NodeView],
    done_keys: &BTreeSet<String>,
) -> Vec<NodeView> {
    nodes
        .iter()
        .filter(|n| {
            let mine: Vec<&StepDef> = bp
                .steps
                .iter()
                .filter(|s| targets(s, nodes).iter().any(|m| m.name == n.name))
                .collect();
            !mine.is_empty()
                && mine
                    .iter()
                    .all(|s| done_keys.contains(&key(&bp.name, &s.id, &n.name)))
        })
        .cloned()
        .collect()
}
