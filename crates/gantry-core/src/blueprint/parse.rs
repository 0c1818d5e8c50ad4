//! `blueprint.yaml` → [`Blueprint`], and the spec's `blueprints:` list, with every problem
//! located. Read with [`crate::reader`], like the spec, so both formats report errors the same
//! way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::{
    Action, Artifact, ArtifactSource, Blueprint, BlueprintRef, BlueprintSource,
    DEFAULT_STEP_TIMEOUT, DEFAULT_WAIT_TIMEOUT, Loc, Output, Param, ParamType, RefLocs, Script,
    StepDef, StepTarget, Text, UploadSource, WaitCheck,
};
use crate::SpecError;
use crate::reader::parse_duration;
use crate::reader::yaml::{self, Kind, Node, Pos, Scalar};
use crate::reader::{Field, Reader, closest, list};

const TOP: &[&str] = &[
    "name",
    "description",
    "params",
    "artifacts",
    "steps",
    "outputs",
];
const PARAM: &[&str] = &[
    "type",
    "default",
    "description",
    "min",
    "max",
    "enum",
    "pattern",
];
const ARTIFACT: &[&str] = &["url", "sha256", "command", "package", "path"];
const STEP: &[&str] = &[
    "id", "after", "target", "run", "template", "upload", "wait", "timeout", "retries", "boot",
];
const ACTIONS: &[&str] = &["run", "template", "upload", "wait"];
const TEMPLATE: &[&str] = &["src", "dest", "mode"];
const WAIT: &[&str] = &["tcp", "http", "command", "status", "timeout"];
const REF: &[&str] = &["name", "path", "params"];
const OUTPUT: &[&str] = &["value", "description", "secret"];
/// Rules a `secret` param cannot have: its value is generated, never written.
const NOT_FOR_SECRETS: &[&str] = &["default", "min", "max", "enum", "pattern"];

fn loc(p: Pos) -> Loc {
    Loc {
        line: p.line,
        col: p.col,
    }
}

/// Parses and checks a `blueprint.yaml`. `file` labels errors.
pub fn parse(file: &str, text: &str) -> Result<Blueprint, SpecError> {
    let mut cx = Reader::new();
    let bp = match yaml::load(text) {
        Ok(Some(root)) => cx.blueprint(&root),
        Ok(None) => {
            cx.err(
                Pos::START,
                "the blueprint is empty",
                "start with `name:`, `description:` and `steps:`",
            );
            None
        }
        Err(e) => {
            cx.err(e.pos, e.message, e.hint);
            None
        }
    };
    cx.finish(file, bp)
}

/// A YAML value as JSON (params are free-form data).
fn to_json(n: &Node) -> serde_json::Value {
    use serde_json::Value;
    match &n.kind {
        Kind::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        Kind::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.text().unwrap_or_default().to_string(), to_json(v)))
                .collect(),
        ),
        Kind::Scalar { value, .. } => match n.scalar() {
            Some(Scalar::Null) | None => Value::Null,
            Some(Scalar::Bool(b)) => Value::Bool(b),
            Some(Scalar::Int(i)) => i64::try_from(i)
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(value.clone())),
            Some(Scalar::Float) => value
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(value.clone())),
            Some(Scalar::Str(s)) => Value::String(s.to_string()),
        },
    }
}

fn is_step_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && s.len() <= 63
}

impl Reader {
    /// The spec's `blueprints:` list.
    pub(crate) fn blueprint_refs(&mut self, f: Field<'_>) -> Option<Vec<BlueprintRef>> {
        let Kind::Seq(items) = &f.value.kind else {
            self.type_err(
                f.pos(),
                "blueprints",
                "a list",
                f.value,
                "list blueprints as `- {name: etcd, params: {...}}` or `- {path: ./dir}` entries",
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match self.blueprint_ref(item) {
                Some(r) => out.push(r),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn blueprint_ref(&mut self, node: &Node) -> Option<BlueprintRef> {
        let fields = self.fields(node, "blueprints", "blueprint entry", REF)?;
        let name = fields.opt("name");
        let path = fields.opt("path");
        let source = match (name, path) {
            (Some(n), None) => {
                let s = self.string(n)?;
                (BlueprintSource::Name(s.to_string()), n.pos())
            }
            (None, Some(p)) => {
                let s = self.string(p)?;
                if s.trim().is_empty() {
                    self.err(p.pos(), "`path` must not be empty", "name a directory");
                    return None;
                }
                (BlueprintSource::Path(s.to_string()), p.pos())
            }
            (Some(_), Some(p)) => {
                self.err(
                    p.key_pos,
                    "a blueprint entry has either `name` or `path`, not both",
                    "`name` picks a built-in, `path` a directory",
                );
                return None;
            }
            (None, None) => {
                self.err(
                    node.pos,
                    "a blueprint entry needs `name` (a built-in) or `path` (a directory)",
                    "e.g. `- name: etcd` or `- path: ./my-blueprint`; `gantry blueprint ls` \
                     lists the built-ins",
                );
                return None;
            }
        };
        let mut params = BTreeMap::new();
        let mut param_locs = BTreeMap::new();
        if let Some(p) = fields.opt("params") {
            for e in self.entries(p.value, "params", "write params as `name: value` pairs")? {
                params.insert(e.key.to_string(), to_json(e.value));
                param_locs.insert(e.key.to_string(), (loc(e.key_pos), loc(e.pos())));
            }
        }
        Some(BlueprintRef {
            source: source.0,
            params,
            locs: RefLocs {
                at: loc(node.pos),
                source: loc(source.1),
                params: param_locs,
            },
        })
    }

    fn blueprint(&mut self, root: &Node) -> Option<Blueprint> {
        let top = self.fields(root, "blueprint", "the blueprint", TOP)?;
        let name = top
            .req(self, "name")
            .and_then(|f| self.name(f, "blueprint"));
        let description = match top.opt("description") {
            Some(f) => self.string(f).map(str::to_string),
            None => Some(String::new()),
        };
        let params = match top.opt("params") {
            Some(f) => self.params(f),
            None => Some(Vec::new()),
        };
        let artifacts = match top.opt("artifacts") {
            Some(f) => self.artifacts(f),
            None => Some(Vec::new()),
        };
        let steps = top.req(self, "steps").and_then(|f| {
            let steps = self.steps(f, artifacts.as_deref().unwrap_or_default())?;
            self.check_after(&steps).then_some(steps)
        });
        let outputs = match top.opt("outputs") {
            Some(f) => self.outputs(f),
            None => Some(Vec::new()),
        };
        Some(Blueprint {
            name: name?,
            description: description?,
            params: params?,
            artifacts: artifacts?,
            steps: steps?,
            outputs: outputs?,
        })
    }

    /// `outputs:` — `name: "template"` or `name: {value: "template", description, secret}`.
    fn outputs(&mut self, f: Field<'_>) -> Option<Vec<Output>> {
        let mut out = Vec::new();
        let mut ok = true;
        for e in self.entries(
            f.value,
            "outputs",
            "declare outputs as `name: {value: \"{{ ... }}\", secret: true}`",
        )? {
            if !is_step_id(e.key) {
                self.err(
                    e.key_pos,
                    format!("invalid output name {:?}", e.key),
                    "use lowercase letters, digits, `-` and `_` (at most 63 characters)",
                );
                ok = false;
                continue;
            }
            let o = if matches!(e.value.kind, Kind::Map(_)) {
                self.output_map(e)
            } else {
                self.string(e).map(|v| Output {
                    name: e.key.to_string(),
                    loc: loc(e.key_pos),
                    value: Text {
                        text: v.to_string(),
                        loc: loc(e.pos()),
                    },
                    description: String::new(),
                    secret: false,
                })
            };
            match o {
                Some(o) => out.push(o),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn output_map(&mut self, e: Field<'_>) -> Option<Output> {
        let fields = self.fields(e.value, e.key, "output", OUTPUT)?;
        let value = fields.req(self, "value").and_then(|v| {
            Some(Text {
                text: self.string(v)?.to_string(),
                loc: loc(v.pos()),
            })
        });
        let description = match fields.opt("description") {
            Some(f) => self.string(f).map(str::to_string),
            None => Some(String::new()),
        };
        let secret = match fields.opt("secret") {
            Some(b) => match b.value.scalar() {
                Some(Scalar::Bool(v)) => Some(v),
                _ => {
                    self.type_err(
                        b.pos(),
                        "secret",
                        "true or false",
                        b.value,
                        "`secret: true`",
                    );
                    None
                }
            },
            None => Some(false),
        };
        Some(Output {
            name: e.key.to_string(),
            loc: loc(e.key_pos),
            value: value?,
            description: description?,
            secret: secret?,
        })
    }

    fn params(&mut self, f: Field<'_>) -> Option<Vec<Param>> {
        let mut out = Vec::new();
        let mut ok = true;
        for e in self.entries(
            f.value,
            "params",
            "declare params as `name: {type: int, ...}`",
        )? {
            match self.param(e) {
                Some(p) => out.push(p),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn param(&mut self, e: Field<'_>) -> Option<Param> {
        let fields = self.fields(e.value, e.key, "param", PARAM)?;
        let ty = fields.req(self, "type").and_then(|t| {
            Some(match self.string(t)? {
                "string" => ParamType::String,
                "int" => ParamType::Int,
                "bool" => ParamType::Bool,
                "list" => ParamType::List,
                "map" => ParamType::Map,
                "secret" => ParamType::Secret,
                other => {
                    self.err(
                        t.pos(),
                        format!("unknown param type `{other}`"),
                        "use `string`, `int`, `bool`, `list`, `map` or `secret`",
                    );
                    return None;
                }
            })
        });
        if ty == Some(ParamType::Secret) {
            for k in NOT_FOR_SECRETS {
                if let Some(f) = fields.get(k) {
                    self.err(
                        f.key_pos,
                        format!("the secret param `{}` cannot have `{k}`", e.key),
                        "gantry generates a secret's value (random, per cluster); remove it",
                    );
                    return None;
                }
            }
        }
        let int = |cx: &mut Reader, k: &str| match fields.opt(k) {
            Some(f) => cx.int(f, "1").and_then(|v| i64::try_from(v).ok()).map(Some),
            None => Some(None),
        };
        let min = int(self, "min");
        let max = int(self, "max");
        let choices = match fields.opt("enum") {
            Some(f) => match &f.value.kind {
                Kind::Seq(items) => Some(Some(items.iter().map(to_json).collect())),
                _ => {
                    self.type_err(
                        f.pos(),
                        "enum",
                        "a list",
                        f.value,
                        "list the allowed values: `enum: [a, b]`",
                    );
                    None
                }
            },
            None => Some(None),
        };
        let pattern = match fields.opt("pattern") {
            Some(f) => self.string(f).map(|s| Some(s.to_string())),
            None => Some(None),
        };
        let description = match fields.opt("description") {
            Some(f) => self.string(f).map(str::to_string),
            None => Some(String::new()),
        };
        Some(Param {
            name: e.key.to_string(),
            loc: loc(e.key_pos),
            ty: ty?,
            default: fields.opt("default").map(|f| to_json(f.value)),
            description: description?,
            min: min?,
            max: max?,
            choices: choices?,
            pattern: pattern?,
        })
    }

    fn artifacts(&mut self, f: Field<'_>) -> Option<Vec<Artifact>> {
        let mut out = Vec::new();
        let mut ok = true;
        for e in self.entries(
            f.value,
            "artifacts",
            "declare artifacts as `name: {command: ...}`, `{url: ..., sha256: ...}` or \
             `{path: ...}`",
        )? {
            match self.artifact(e) {
                Some(a) => out.push(a),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn artifact(&mut self, e: Field<'_>) -> Option<Artifact> {
        let fields = self.fields(e.value, e.key, "artifact", ARTIFACT)?;
        let mut s = |k: &str| {
            fields
                .opt(k)
                .map(|f| (f, self.string(f).map(str::to_string)))
        };
        let (url, sha, command, package, path) =
            (s("url"), s("sha256"), s("command"), s("package"), s("path"));
        let kinds = [url.is_some(), command.is_some(), path.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if kinds != 1 {
            self.err(
                e.key_pos,
                format!(
                    "artifact `{}` needs exactly one of `url`, `command` or `path`",
                    e.key
                ),
                "a URL (with `sha256`), a command on the node's PATH (with an optional \
                 `package`), or a file on the node",
            );
            return None;
        }
        let source = if let Some((uf, u)) = url {
            let Some((sf, sha)) = sha else {
                self.err(
                    uf.pos(),
                    format!("artifact `{}` has a `url` but no `sha256`", e.key),
                    "add `sha256: <64 hex digits>` (e.g. from `sha256sum FILE`); downloads are \
                     always verified",
                );
                return None;
            };
            let sha = sha?.to_ascii_lowercase();
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.err(
                    sf.pos(),
                    format!("`sha256` of artifact `{}` is not 64 hex digits", e.key),
                    "copy the sum from `sha256sum FILE`",
                );
                return None;
            }
            let u = u?;
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                self.err(
                    uf.pos(),
                    format!("unsupported url {u:?}"),
                    "use an http:// or https:// url",
                );
                return None;
            }
            ArtifactSource::Url {
                url: u,
                sha256: sha,
            }
        } else if let Some((_, c)) = command {
            ArtifactSource::Command {
                command: c?,
                package: match package {
                    Some((_, p)) => Some(p?),
                    None => None,
                },
            }
        } else {
            ArtifactSource::Path {
                path: path.and_then(|(_, p)| p)?,
            }
        };
        Some(Artifact {
            name: e.key.to_string(),
            loc: loc(e.key_pos),
            source,
        })
    }

    fn steps(&mut self, f: Field<'_>, artifacts: &[Artifact]) -> Option<Vec<StepDef>> {
        let Kind::Seq(items) = &f.value.kind else {
            self.type_err(
                f.pos(),
                "steps",
                "a list",
                f.value,
                "list steps as `- id: ...` entries",
            );
            return None;
        };
        let mut out: Vec<StepDef> = Vec::new();
        let mut ok = true;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for item in items {
            match self.step(item, artifacts) {
                Some(s) => {
                    if let Some(line) = seen.get(&s.id) {
                        self.err(
                            pos(s.loc),
                            format!("duplicate step id `{}` (first on line {line})", s.id),
                            "step ids are unique within a blueprint",
                        );
                        ok = false;
                    } else {
                        seen.insert(s.id.clone(), s.loc.line);
                        out.push(s);
                    }
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn step(&mut self, node: &Node, artifacts: &[Artifact]) -> Option<StepDef> {
        let fields = self.fields(node, "steps", "step", STEP)?;
        let id_field = fields.req(self, "id")?;
        let id = self.string(id_field)?.to_string();
        if !is_step_id(&id) {
            self.err(
                id_field.pos(),
                format!("invalid step id {id:?}"),
                "use lowercase letters, digits, `-` and `_` (at most 63 characters)",
            );
            return None;
        }
        let mut after = Vec::new();
        let mut after_locs = Vec::new();
        if let Some(a) = fields.opt("after") {
            match &a.value.kind {
                Kind::Seq(items) => {
                    for i in items {
                        match i.text() {
                            Some(t) => {
                                after.push(t.to_string());
                                after_locs.push(loc(i.pos));
                            }
                            None => {
                                self.err(
                                    i.pos,
                                    format!("`after` lists step ids, found {}", i.describe()),
                                    "e.g. `after: [config]`",
                                );
                                return None;
                            }
                        }
                    }
                }
                _ => {
                    let t = self.string(a)?;
                    after.push(t.to_string());
                    after_locs.push(loc(a.pos()));
                }
            }
        }
        let (target, target_loc) = match fields.opt("target") {
            None => (StepTarget::All, loc(node.pos)),
            Some(t) => {
                let s = self.string(t)?;
                let target = match s {
                    "all" => StepTarget::All,
                    "first" => StepTarget::First,
                    "each" => StepTarget::Each,
                    _ => match s.strip_prefix("pool:") {
                        Some(p) if !p.is_empty() => StepTarget::Pool(p.to_string()),
                        _ => {
                            self.err(
                                t.pos(),
                                format!("unknown target {s:?}"),
                                "use `all`, `first`, `each` or `pool:NAME`",
                            );
                            return None;
                        }
                    },
                };
                (target, loc(t.pos()))
            }
        };
        let timeout = match fields.opt("timeout") {
            Some(t) => self.duration(t)?,
            None => DEFAULT_STEP_TIMEOUT,
        };
        let retries = match fields.opt("retries") {
            Some(r) => u32::try_from(self.int_in(r, 0, 100, "2")?).ok()?,
            None => 0,
        };
        let boot = match fields.opt("boot") {
            Some(b) => match b.value.scalar() {
                Some(Scalar::Bool(v)) => v,
                _ => {
                    self.type_err(b.pos(), "boot", "true or false", b.value, "`boot: true`");
                    return None;
                }
            },
            None => false,
        };
        let present: Vec<Field<'_>> = ACTIONS.iter().filter_map(|k| fields.opt(k)).collect();
        if present.len() != 1 {
            let at = present.get(1).map(|f| f.key_pos).unwrap_or(node.pos);
            self.err(
                at,
                format!(
                    "step `{id}` needs exactly one action, found {}",
                    present.len()
                ),
                format!("give one of {}", list(ACTIONS)),
            );
            return None;
        }
        let a = present[0];
        let action = match a.key {
            "run" => {
                let text = self.string(a)?;
                Action::Run(if text.contains('\n') {
                    Script::Inline(Text {
                        text: text.to_string(),
                        loc: loc(a.pos()),
                    })
                } else {
                    Script::File(text.trim().to_string())
                })
            }
            "template" | "upload" => {
                let f = self.fields(a.value, a.key, "file action", TEMPLATE)?;
                let src = f.req(self, "src").and_then(|s| self.string(s));
                let dest = f.req(self, "dest").and_then(|d| {
                    Some(Text {
                        text: self.string(d)?.to_string(),
                        loc: loc(d.pos()),
                    })
                });
                let mode = match f.opt("mode") {
                    Some(m) => Some(self.mode(m)?),
                    None => None,
                };
                let mode_loc = loc(f.opt("mode").map(|m| m.pos()).unwrap_or(a.key_pos));
                let (src, dest) = (src?, dest?);
                if a.key == "template" {
                    Action::Template {
                        src: src.to_string(),
                        dest,
                        mode,
                        mode_loc,
                    }
                } else {
                    let src = match src.strip_prefix("artifact:") {
                        Some(name) => {
                            if !artifacts.iter().any(|x| x.name == name) {
                                let known: Vec<&str> =
                                    artifacts.iter().map(|x| x.name.as_str()).collect();
                                self.err(
                                    f.get("src").map(|s| s.pos()).unwrap_or(a.key_pos),
                                    format!("unknown artifact `{name}`"),
                                    format!("declared artifacts: {}", list(&known)),
                                );
                                return None;
                            }
                            UploadSource::Artifact(name.to_string())
                        }
                        None => UploadSource::File(src.to_string()),
                    };
                    Action::Upload { src, dest, mode }
                }
            }
            _ => {
                let f = self.fields(a.value, "wait", "`wait`", WAIT)?;
                let text = |cx: &mut Reader, k: &str| {
                    f.opt(k).and_then(|v| {
                        Some(Text {
                            text: cx.string(v)?.to_string(),
                            loc: loc(v.pos()),
                        })
                    })
                };
                let timeout = match f.opt("timeout") {
                    Some(t) => self.duration(t)?,
                    None => DEFAULT_WAIT_TIMEOUT,
                };
                let status = match f.opt("status") {
                    Some(s) => u16::try_from(self.int_in(s, 100, 599, "200")?).ok()?,
                    None => 200,
                };
                let checks = ["tcp", "http", "command"]
                    .iter()
                    .filter(|k| f.opt(k).is_some())
                    .count();
                if checks != 1 {
                    self.err(
                        a.key_pos,
                        "`wait` needs exactly one of `tcp`, `http` or `command`",
                        "e.g. `wait: {tcp: \"{{ node.address }}:2379\"}`",
                    );
                    return None;
                }
                let check = if let Some(t) = text(self, "tcp") {
                    WaitCheck::Tcp(t)
                } else if let Some(t) = text(self, "http") {
                    WaitCheck::Http { url: t, status }
                } else {
                    WaitCheck::Command(text(self, "command")?)
                };
                Action::Wait { check, timeout }
            }
        };
        Some(StepDef {
            id,
            loc: loc(id_field.pos()),
            after,
            after_locs,
            target,
            target_loc,
            action,
            timeout,
            retries,
            boot,
        })
    }

    fn duration(&mut self, f: Field<'_>) -> Option<Duration> {
        let hint = "use a duration like `30s`, `5m` or `1h`";
        let text = match f.value.scalar() {
            Some(Scalar::Int(i)) => format!("{i}s"),
            _ => self.string(f)?.to_string(),
        };
        match parse_duration(&text) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                self.err(
                    f.pos(),
                    format!("invalid duration {text:?} for `{}`", f.key),
                    hint,
                );
                None
            }
        }
    }

    fn mode(&mut self, f: Field<'_>) -> Option<u32> {
        let text = f.value.text().unwrap_or_default();
        match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
            Ok(m) if m <= 0o7777 && !text.is_empty() => Some(m),
            _ => {
                self.err(
                    f.pos(),
                    format!("invalid file mode {:?}", text),
                    "write an octal mode in quotes, e.g. `mode: \"0644\"`",
                );
                None
            }
        }
    }

    /// Every `after` names a step of the blueprint, and `after` has no cycle.
    fn check_after(&mut self, steps: &[StepDef]) -> bool {
        let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        let mut ok = true;
        for s in steps {
            for (a, l) in s.after.iter().zip(&s.after_locs) {
                if !ids.contains(&a.as_str()) {
                    let hint = match closest(a, &ids) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => format!("steps are {}", list(&ids)),
                    };
                    self.err(
                        pos(*l),
                        format!("step `{}` is after an unknown step `{a}`", s.id),
                        hint,
                    );
                    ok = false;
                } else if *a == s.id {
                    self.err(
                        pos(*l),
                        format!("step `{}` is after itself", s.id),
                        "remove it from its own `after`",
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return false;
        }
        if let Some(cycle) = find_cycle(steps) {
            let first = steps
                .iter()
                .find(|s| s.id == cycle[0])
                .expect("cycle names steps");
            self.err(
                pos(first.loc),
                format!("steps form a cycle through `after`: {}", cycle.join(" -> ")),
                "remove one of these `after` entries",
            );
            return false;
        }
        true
    }
}

fn pos(l: Loc) -> Pos {
    Pos {
        line: l.line,
        col: l.col,
    }
}

/// A cycle `a -> b -> … -> a` (each after the next) if `after` has one.
pub(crate) fn find_cycle(steps: &[StepDef]) -> Option<Vec<String>> {
    let after: BTreeMap<&str, &[String]> = steps
        .iter()
        .map(|s| (s.id.as_str(), s.after.as_slice()))
        .collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for s in steps {
        let mut path: Vec<&str> = Vec::new();
        if let Some(c) = visit(&s.id, &after, &mut done, &mut path) {
            return Some(c);
        }
    }
    None
}

fn visit<'a>(
    id: &'a str,
    after: &BTreeMap<&'a str, &'a [String]>,
    done: &mut BTreeSet<&'a str>,
    path: &mut Vec<&'a str>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|p| *p == id) {
        let mut c: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
        c.push(id.to_string());
        return Some(c);
    }
    if done.contains(id) {
        return None;
    }
    path.push(id);
    for a in after.get(id).copied().unwrap_or_default() {
        if let Some(c) = visit(a, after, done, path) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(id);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name: demo
description: a demo
params:
  port: {type: int, default: 80, min: 1, max: 65535}
  who: {type: string}
artifacts:
  tool: {command: sh, package: dash}
  blob: {url: "https://example.invalid/x", sha256: "0000000000000000000000000000000000000000000000000000000000000000"}
steps:
  - id: config
    template: {src: t.j2, dest: "app/{{ node.name }}.conf", mode: "0600"}
  - id: start
    after: [config]
    target: each
    run: |
      echo hi
    retries: 2
    timeout: 10s
    boot: true
  - id: up
    after: start
    target: pool:db
    wait: {tcp: "{{ node.address }}:80", timeout: 5s}
  - id: put
    target: first
    upload: {src: "artifact:blob", dest: bin/blob}
"#;

    #[test]
    fn parses_a_full_blueprint() {
        let bp = parse("bp.yaml", OK).unwrap();
        assert_eq!(bp.name, "demo");
        assert_eq!(bp.params.len(), 2);
        assert_eq!(bp.param("who").unwrap().default, None);
        assert_eq!(bp.steps.len(), 4);
        assert_eq!(bp.steps[1].target, StepTarget::Each);
        assert_eq!(bp.steps[1].retries, 2);
        assert!(bp.steps[1].boot);
        assert_eq!(bp.steps[2].after, ["start"]);
        assert_eq!(bp.steps[2].target, StepTarget::Pool("db".into()));
        assert!(matches!(
            bp.steps[0].action,
            Action::Template {
                mode: Some(0o600),
                ..
            }
        ));
        assert_eq!(bp.steps[0].loc.line, 11);
    }

    fn err(text: &str) -> String {
        parse("bp.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn rejects_with_locations() {
        let e = err(
            "name: x\nsteps:\n  - id: a\n    after: [b]\n    run: a.sh\n  - id: b\n    after: [a]\n    run: b.sh\n",
        );
        assert!(e.contains("bp.yaml:3:9"), "{e}");
        assert!(e.contains("cycle") && e.contains("a -> b -> a"), "{e}");
        let e = err("name: x\nsteps:\n  - id: a\n    after: [nope]\n    run: a.sh\n");
        assert!(
            e.contains("bp.yaml:4:13") && e.contains("unknown step `nope`"),
            "{e}"
        );
        let e = err("name: x\nartifacts:\n  t: {url: \"https://x.invalid/t\"}\nsteps: []\n");
        assert!(e.contains("bp.yaml:3:") && e.contains("no `sha256`"), "{e}");
        let e = err("name: x\nsteps:\n  - id: a\n    target: some\n    run: a.sh\n");
        assert!(
            e.contains("bp.yaml:4:13") && e.contains("unknown target"),
            "{e}"
        );
        let e = err("name: x\nsteps:\n  - id: a\n    run: a.sh\n    wait: {tcp: x}\n");
        assert!(e.contains("exactly one action"), "{e}");
    }

    #[test]
    fn secret_params_and_outputs() {
        let bp = parse(
            "bp.yaml",
            "name: x\nparams:\n  pw: {type: secret, description: the password}\nsteps: []\noutputs:\n  host: \"{{ nodes[0].address }}\"\n  url: {value: \"x://{{ params.pw }}\", secret: true, description: d}\n",
        )
        .unwrap();
        assert_eq!(bp.param("pw").unwrap().ty, ParamType::Secret);
        assert_eq!(bp.secret_params().count(), 1);
        assert_eq!(bp.outputs.len(), 2);
        assert_eq!(bp.outputs[0].name, "host");
        assert!(!bp.outputs[0].secret);
        assert_eq!(bp.outputs[0].value.loc, Loc { line: 6, col: 9 });
        assert!(bp.outputs[1].secret);
        assert_eq!(bp.outputs[1].description, "d");

        // A secret's value is generated: no default, no rules.
        let e = err("name: x\nparams:\n  pw: {type: secret, default: hunter2}\nsteps: []\n");
        assert!(
            e.contains("bp.yaml:3:22") && e.contains("cannot have `default`"),
            "{e}"
        );
        let e = err("name: x\nsteps: []\noutputs:\n  Bad: x\n");
        assert!(
            e.contains("bp.yaml:4:3") && e.contains("invalid output name"),
            "{e}"
        );
        let e = err("name: x\nsteps: []\noutputs:\n  a: {value: x, secret: maybe}\n");
        assert!(e.contains("bp.yaml:4:") && e.contains("secret"), "{e}");
        let e = err("name: x\nsteps: []\noutputs:\n  a: {secret: true}\n");
        assert!(e.contains("value"), "{e}");
    }
}
