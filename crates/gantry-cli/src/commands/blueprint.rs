//! `gantry blueprint ls | show | render`, and loading a spec's blueprints for `up`/`validate`
//! (relative paths resolved against the spec file, every problem printed with its source line).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gantry_core::ClusterSpec;
use gantry_core::blueprint::{Action, ArtifactSource, Blueprint, Script, StepTarget, WaitCheck};
use gantry_engine::EngineError;
use gantry_engine::blueprint::{
    self as bp, Prepared, Rendered, builtin, exec, expand, load, render,
};
use serde_json::json;

use super::load_spec;
use crate::cli::{BlueprintCommand, Global, OutputFormat};
use crate::context::{self, Home};
use crate::exit::{self, CliResult, Failure};
use crate::output;

pub async fn run(g: &Global, c: BlueprintCommand) -> CliResult {
    match c {
        BlueprintCommand::Ls => ls(g),
        BlueprintCommand::Show { name } => show(g, &name),
        BlueprintCommand::Render { name, node, file } => render_cmd(g, &name, &node, &file).await,
    }
}

/// The directory relative blueprint paths start from.
fn spec_dir(file: &Path) -> PathBuf {
    let dir = if file == Path::new("-") {
        PathBuf::from(".")
    } else {
        file.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    };
    std::path::absolute(&dir).unwrap_or(dir)
}

/// The text of a file named in an error, to show the offending line.
fn source_of(label: &str, spec_label: &str, spec_text: &str) -> Option<String> {
    if label == spec_label {
        return Some(spec_text.to_string());
    }
    if let Some(rest) = label.strip_prefix("builtin:") {
        let (name, rel) = rest.split_once('/')?;
        let files = builtin::files(name)?;
        return files
            .get(rel)
            .map(|b| String::from_utf8_lossy(b).into_owned());
    }
    std::fs::read_to_string(label).ok()
}

/// Turns a blueprint error into a usage failure, printing located problems with their lines.
fn failure(e: EngineError, spec_label: &str, spec_text: &str) -> Failure {
    match e {
        EngineError::BlueprintInvalid(errors) => {
            let n: usize = errors.iter().map(|e| e.items.len()).sum();
            for err in &errors {
                match source_of(&err.file, spec_label, spec_text) {
                    Some(text) => eprint!("{}", gantry_core::spec::render_error(err, &text)),
                    None => eprintln!("{err}"),
                }
            }
            Failure::new(
                exit::USAGE,
                anyhow::anyhow!("{n} problem(s) in the blueprints of {spec_label}"),
            )
            .hint("nothing was created; fix the problems above and run the command again")
        }
        e @ EngineError::BlueprintLoad { .. } => Failure::new(exit::USAGE, e)
            .hint("`name:` picks a built-in (`gantry blueprint ls`); `path:` a directory with a blueprint.yaml"),
        e => e.into(),
    }
}

/// Loads and validates the spec's blueprints (before anything is created).
pub fn prepare_for(spec: &ClusterSpec, file: &Path, text: &str) -> CliResult<Vec<Prepared>> {
    let label = if file == Path::new("-") {
        "<stdin>".to_string()
    } else {
        file.display().to_string()
    };
    if spec.blueprints.is_empty() {
        return Ok(vec![]);
    }
    bp::load_all(spec, &spec_dir(file))
        .and_then(|loaded| bp::prepare(spec, &label, loaded))
        .map_err(|e| failure(e, &label, text))
}

/// What `up` applies, from validated blueprints.
pub fn apply_options(home: &Home, prepared: Vec<Prepared>, allow_packages: bool) -> bp::Apply {
    bp::Apply {
        blueprints: prepared,
        cache_dir: home.root.join("cache").join("artifacts"),
        allow_packages,
        transport: None,
    }
}

fn ls(g: &Global) -> CliResult {
    let items: Vec<_> = builtin::names()
        .into_iter()
        .filter_map(|n| load::builtin(n).ok())
        .map(|l| (l.blueprint.name.clone(), l.blueprint.description.clone()))
        .collect();
    match g.output {
        OutputFormat::Json => output::print_json(
            &items
                .iter()
                .map(|(n, d)| json!({"name": n, "description": d}))
                .collect::<Vec<_>>(),
        ),
        OutputFormat::Text => println!(
            "{}",
            output::table(
                &["name", "description"],
                items.into_iter().map(|(n, d)| vec![n, d]).collect()
            )
        ),
    }
    Ok(exit::OK)
}

fn load_named(name: &str) -> CliResult<bp::Loaded> {
    let as_dir = Path::new(name);
    let r = if name.contains('/') || as_dir.join("blueprint.yaml").is_file() {
        load::dir(as_dir)
    } else {
        load::builtin(name)
    };
    r.map_err(|e| failure(e, "", ""))
}

fn target_str(t: &StepTarget) -> String {
    match t {
        StepTarget::All => "all".into(),
        StepTarget::First => "first".into(),
        StepTarget::Each => "each".into(),
        StepTarget::Pool(p) => format!("pool:{p}"),
    }
}

fn action_str(a: &Action) -> String {
    match a {
        Action::Run(Script::File(f)) => format!("run {f}"),
        Action::Run(Script::Inline(_)) => "run (inline script)".into(),
        Action::Template { src, dest, .. } => format!("template {src} -> {}", dest.text),
        Action::Upload { src, dest, .. } => format!(
            "upload {} -> {}",
            match src {
                gantry_core::blueprint::UploadSource::File(f) => f.clone(),
                gantry_core::blueprint::UploadSource::Artifact(a) => format!("artifact:{a}"),
            },
            dest.text
        ),
        Action::Wait { check, timeout } => format!(
            "wait {} ({} s)",
            match check {
                WaitCheck::Tcp(t) => format!("tcp {}", t.text),
                WaitCheck::Http { url, status } => format!("http {} = {status}", url.text),
                WaitCheck::Command(c) => format!("command {}", c.text),
            },
            timeout.as_secs()
        ),
    }
}

fn show(g: &Global, name: &str) -> CliResult {
    let l = load_named(name)?;
    let b: &Blueprint = &l.blueprint;
    if g.output == OutputFormat::Json {
        output::print_json(&json!({"origin": l.origin, "blueprint": b}));
        return Ok(exit::OK);
    }
    println!("{} ({})", b.name, l.origin);
    if !b.description.is_empty() {
        println!("{}", b.description);
    }
    println!("\nparams:");
    let rows = b
        .params
        .iter()
        .map(|p| {
            let mut rules = vec![];
            if let Some(m) = p.min {
                rules.push(format!("min {m}"));
            }
            if let Some(m) = p.max {
                rules.push(format!("max {m}"));
            }
            if let Some(c) = &p.choices {
                rules.push(format!(
                    "one of {}",
                    c.iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if let Some(pat) = &p.pattern {
                rules.push(format!("matches {pat}"));
            }
            vec![
                p.name.clone(),
                p.ty.as_str().into(),
                match (&p.default, p.ty) {
                    (_, gantry_core::blueprint::ParamType::Secret) => {
                        "(generated per cluster)".into()
                    }
                    (Some(d), _) => d.to_string(),
                    (None, _) => "(required)".into(),
                },
                rules.join("; "),
                p.description.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        output::table(&["param", "type", "default", "rules", "description"], rows)
    );
    if !b.artifacts.is_empty() {
        println!("\nartifacts:");
        let rows = b
            .artifacts
            .iter()
            .map(|a| {
                vec![
                    a.name.clone(),
                    match &a.source {
                        ArtifactSource::Url { url, sha256 } => format!("{url} (sha256 {sha256})"),
                        ArtifactSource::Command { command, package } => match package {
                            Some(p) => format!("command {command} (package {p})"),
                            None => format!("command {command}"),
                        },
                        ArtifactSource::Path { path } => format!("path {path}"),
                    },
                ]
            })
            .collect();
        println!("{}", output::table(&["artifact", "source"], rows));
    }
    if !b.outputs.is_empty() {
        println!("\noutputs:");
        let rows = b
            .outputs
            .iter()
            .map(|o| {
                vec![
                    o.name.clone(),
                    o.value.text.clone(),
                    if o.secret { "yes" } else { "" }.into(),
                    o.description.clone(),
                ]
            })
            .collect();
        println!(
            "{}",
            output::table(&["output", "value", "secret", "description"], rows)
        );
    }
    println!("\nsteps:");
    let rows = b
        .steps
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                target_str(&s.target),
                s.after.join(", "),
                action_str(&s.action),
                format!(
                    "{} s{}{}",
                    s.timeout.as_secs(),
                    if s.retries > 0 {
                        format!(", {} retries", s.retries)
                    } else {
                        String::new()
                    },
                    if s.boot { ", boot" } else { "" }
                ),
            ]
        })
        .collect();
    println!(
        "{}",
        output::table(&["step", "target", "after", "action", "limits"], rows)
    );
    Ok(exit::OK)
}

async fn render_cmd(g: &Global, name: &str, node: &str, file: &Path) -> CliResult {
    let (spec, text) = load_spec(file)?;
    let prepared = prepare_for(&spec, file, &text)?;
    if bp::find(&prepared, &spec, name).is_none() {
        let names: Vec<&str> = prepared.iter().map(|p| p.name()).collect();
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!("the spec applies no blueprint named {name}"),
        )
        .hint(format!("it applies: {}", names.join(", "))));
    }
    let home = Home::from_global(g)?;
    let store = context::open_store(&home).await?;
    let ssh = context::ssh_config(&home, &store, &g.project).await?;
    let provider = context::provider_for_spec(&home, &ssh, &g.project, &spec)?;
    let listed = provider
        .list(&gantry_core::tags::TagFilter::cluster(
            &g.project, &spec.name,
        ))
        .await
        .map_err(EngineError::from)?;
    let live = exec::ordered_nodes(&spec, &listed);
    let views: Vec<bp::NodeView> = if live.is_empty() {
        expand::planned_nodes(&spec)
    } else {
        live.iter().map(exec::node_view).collect()
    };
    let chosen = views
        .iter()
        .find(|v| {
            v.name == node
                || format!("{}-{}", v.pool, v.index) == node
                || (spec.pools.len() == 1 && v.index.to_string() == node)
        })
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
            Failure::new(
                exit::USAGE,
                anyhow::anyhow!("no node {node} in cluster {}", spec.name),
            )
            .hint(format!("its nodes are: {}", names.join(", ")))
        })?;
    let record = store
        .get_cluster(&g.project, &spec.name)
        .await
        .map_err(EngineError::from)?;
    let uid = record.map(|r| r.uid).unwrap_or_default();
    let (done_keys, done_ids) = if uid.is_empty() {
        Default::default()
    } else {
        exec::done(&store, &g.project, &spec.name, &uid).await?
    };
    let cache = home.root.join("cache").join("artifacts");
    let shares = provider.shares_host_filesystem();
    // The cluster's secrets when it has them (so the hashes are those `up` recorded), their
    // placeholders otherwise; either way every value is shown masked.
    let secret_values = bp::secrets::resolve(
        context::secret_store(&home, &store).await?.as_ref(),
        &g.project,
        &uid,
        &prepared,
        false,
    )
    .await?;
    let masker = bp::secrets::masker(&secret_values);
    let m = |s: &str| masker.masked(s);
    let cluster = render::ClusterView {
        name: spec.name.clone(),
        project: g.project.clone(),
        uid,
    };
    let (instances, _) = expand::expand_all(
        &prepared,
        &|p| {
            let mut arts = render::placeholder_artifacts(&p.loaded.blueprint);
            for a in &p.loaded.blueprint.artifacts {
                if let ArtifactSource::Url { sha256, .. } = &a.source {
                    let path = if shares {
                        cache.join(sha256).display().to_string()
                    } else {
                        format!("~/.gantry/artifacts/{sha256}")
                    };
                    arts.insert(a.name.clone(), path);
                }
            }
            let per_node: BTreeMap<String, render::ArtifactPaths> = views
                .iter()
                .map(|v| (v.name.clone(), arts.clone()))
                .collect();
            (
                expand::members(&p.loaded.blueprint, &views, &done_keys),
                per_node,
            )
        },
        &cluster,
        &views,
        &secret_values,
    )
    .map_err(|e| failure(e, &file.display().to_string(), &text))?;
    let target = bp::find(&prepared, &spec, name)
        .expect("checked above")
        .name()
        .to_string();
    let mine: Vec<_> = instances
        .iter()
        .filter(|i| i.blueprint == target && i.node == chosen.name)
        .collect();
    if g.output == OutputFormat::Json {
        let items: Vec<_> = mine
            .iter()
            .map(|i| {
                let mut v = json!({
                    "blueprint": i.blueprint, "step": i.step, "node": i.node, "id": i.id,
                    "hash": i.hash, "done": done_ids.contains(&i.id), "after": i.after,
                    "timeout_secs": i.timeout_secs, "retries": i.retries, "boot": i.boot,
                });
                match &i.action {
                    Rendered::Run { script } => {
                        v["action"] = json!("run");
                        v["script"] = json!(m(script));
                    }
                    Rendered::Write {
                        dest,
                        content,
                        mode,
                    } => {
                        v["action"] = json!("write");
                        v["dest"] = json!(m(dest));
                        v["mode"] = json!(mode.map(|m| format!("{m:04o}")));
                        v["content"] = json!(m(&String::from_utf8_lossy(content)));
                    }
                    Rendered::Copy { src, dest, mode } => {
                        v["action"] = json!("copy");
                        v["src"] = json!(m(src));
                        v["dest"] = json!(m(dest));
                        v["mode"] = json!(mode.map(|m| format!("{m:04o}")));
                    }
                    Rendered::Tcp {
                        address,
                        timeout_secs,
                    } => {
                        v["action"] = json!("wait");
                        v["wait"] = json!({"tcp": m(address), "timeout_secs": timeout_secs});
                    }
                    Rendered::Http {
                        url,
                        status,
                        timeout_secs,
                    } => {
                        v["action"] = json!("wait");
                        v["wait"] =
                            json!({"http": m(url), "status": status, "timeout_secs": timeout_secs});
                    }
                    Rendered::Command {
                        command,
                        timeout_secs,
                    } => {
                        v["action"] = json!("wait");
                        v["wait"] = json!({"command": m(command), "timeout_secs": timeout_secs});
                    }
                }
                v
            })
            .collect();
        output::print_json(&items);
        return Ok(exit::OK);
    }
    for i in mine {
        let state = if done_ids.contains(&i.id) {
            "up to date"
        } else {
            "would run"
        };
        let head = format!("# {} step {} on {} ({state})", i.blueprint, i.step, i.node);
        match &i.action {
            Rendered::Run { script } => {
                let script = m(script);
                println!("{head}: run in ~ with sh");
                print!("{script}");
                if !script.ends_with('\n') {
                    println!();
                }
            }
            Rendered::Write {
                dest,
                content,
                mode,
            } => {
                let mode = mode.map(|m| format!(" (mode {m:04o})")).unwrap_or_default();
                println!("{head}: write {}{mode}", m(dest));
                let s = m(&String::from_utf8_lossy(content));
                print!("{s}");
                if !s.ends_with('\n') {
                    println!();
                }
            }
            Rendered::Copy { src, dest, mode } => {
                let mode = mode.map(|m| format!(" (mode {m:04o})")).unwrap_or_default();
                println!("{head}: copy {} to {}{mode}", m(src), m(dest));
            }
            Rendered::Tcp {
                address,
                timeout_secs,
            } => println!("{head}: wait up to {timeout_secs} s for tcp {}", m(address)),
            Rendered::Http {
                url,
                status,
                timeout_secs,
            } => println!(
                "{head}: wait up to {timeout_secs} s for {} to answer {status}",
                m(url)
            ),
            Rendered::Command {
                command,
                timeout_secs,
            } => println!(
                "{head}: wait up to {timeout_secs} s for `{}` to succeed",
                m(command)
            ),
        }
    }
    Ok(exit::OK)
}
