//! The spec's params for a blueprint, checked against its typed declarations: unknown names,
//! wrong types, missing required ones, `min`/`max`/`enum`/`pattern`. Problems in the spec point
//! into the spec file; problems in a declaration (a default of the wrong type, a bad pattern)
//! point into `blueprint.yaml`. A `secret` param is never set by the spec (the spec is kept in
//! the state store): gantry generates it, so it is neither resolved here nor required.

use gantry_core::SpecError;
use gantry_core::blueprint::{BlueprintRef, Loc, Param, ParamType};
use serde_json::{Map, Value};

use super::{Loaded, located};

fn type_ok(ty: ParamType, v: &Value) -> bool {
    match ty {
        ParamType::String | ParamType::Secret => v.is_string(),
        ParamType::Int => v.is_i64(),
        ParamType::Bool => v.is_boolean(),
        ParamType::List => v.is_array(),
        ParamType::Map => v.is_object(),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("a boolean `{b}`"),
        Value::Number(n) if n.is_i64() => format!("an integer `{n}`"),
        Value::Number(n) => format!("a number `{n}`"),
        Value::String(s) => format!("a string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// Checks one value against its declaration; `Err((message, hint))`.
fn check(p: &Param, v: &Value) -> Result<(), (String, String)> {
    if !type_ok(p.ty, v) {
        return Err((
            format!(
                "param `{}` must be {}, found {}",
                p.name,
                match p.ty {
                    ParamType::String | ParamType::Secret => "a string",
                    ParamType::Int => "an integer",
                    ParamType::Bool => "true or false",
                    ParamType::List => "a list",
                    ParamType::Map => "a mapping",
                },
                describe(v)
            ),
            format!("`{}` is declared `type: {}`", p.name, p.ty.as_str()),
        ));
    }
    if let Some(i) = v.as_i64() {
        if let Some(min) = p.min
            && i < min
        {
            return Err((
                format!("param `{}` must be at least {min}, found {i}", p.name),
                range_hint(p),
            ));
        }
        if let Some(max) = p.max
            && i > max
        {
            return Err((
                format!("param `{}` must be at most {max}, found {i}", p.name),
                range_hint(p),
            ));
        }
    }
    if let Some(choices) = &p.choices
        && !choices.contains(v)
    {
        let list: Vec<String> = choices.iter().map(|c| c.to_string()).collect();
        return Err((
            format!(
                "param `{}` must be one of {}, found {v}",
                p.name,
                list.join(", ")
            ),
            "use one of the listed values".into(),
        ));
    }
    if let (Some(pat), Some(s)) = (&p.pattern, v.as_str()) {
        // The pattern itself was checked by `resolve` before any value.
        if let Ok(re) = regex::Regex::new(pat)
            && !re.is_match(s)
        {
            return Err((
                format!(
                    "param `{}` {s:?} does not match the pattern {pat:?}",
                    p.name
                ),
                "change the value to match".into(),
            ));
        }
    }
    Ok(())
}

fn range_hint(p: &Param) -> String {
    match (p.min, p.max) {
        (Some(a), Some(b)) => format!("use a value between {a} and {b}"),
        (Some(a), None) => format!("use a value of at least {a}"),
        (None, Some(b)) => format!("use a value of at most {b}"),
        (None, None) => String::new(),
    }
}

/// The resolved params (spec values over defaults) or every problem found.
pub fn resolve(
    l: &Loaded,
    r: &BlueprintRef,
    spec_file: &str,
) -> Result<Map<String, Value>, Vec<SpecError>> {
    let bp = &l.blueprint;
    let mut errors = Vec::new();
    let mut out = Map::new();
    for p in &bp.params {
        if let Some(pat) = &p.pattern
            && let Err(e) = regex::Regex::new(pat)
        {
            errors.push(located(
                &l.file,
                p.loc,
                format!("invalid pattern of param `{}`: {e}", p.name),
                Some("write a regular expression (Rust regex syntax)".into()),
            ));
        }
        if let Some(d) = &p.default
            && let Err((m, h)) = check(p, d)
        {
            errors.push(located(&l.file, p.loc, format!("default of {m}"), Some(h)));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let names: Vec<&str> = bp.params.iter().map(|p| p.name.as_str()).collect();
    for (k, v) in &r.params {
        let (key_loc, value_loc) = r.locs.params.get(k).copied().unwrap_or_default();
        let Some(p) = bp.param(k) else {
            let hint = if names.is_empty() {
                format!("blueprint `{}` takes no params", bp.name)
            } else {
                format!(
                    "blueprint `{}` takes {} (`gantry blueprint show {}`)",
                    bp.name,
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    bp.name
                )
            };
            errors.push(located(
                spec_file,
                key_loc,
                format!("unknown param `{k}` for blueprint `{}`", bp.name),
                Some(hint),
            ));
            continue;
        };
        if p.ty == ParamType::Secret {
            errors.push(located(
                spec_file,
                key_loc,
                format!(
                    "param `{k}` of blueprint `{}` is a secret: gantry generates it, a spec cannot \
                     set it",
                    bp.name
                ),
                Some(format!(
                    "remove `{k}` from this entry: specs are kept in the state store in \
                     plaintext; gantry makes a random value per cluster and keeps it out of \
                     there (`gantry show CLUSTER --show-secrets` prints it)"
                )),
            ));
            continue;
        }
        match check(p, v) {
            Ok(()) => {
                out.insert(k.clone(), v.clone());
            }
            Err((m, h)) => errors.push(located(spec_file, value_loc, m, Some(h))),
        }
    }
    for p in &bp.params {
        if out.contains_key(&p.name) || r.params.contains_key(&p.name) || p.ty == ParamType::Secret
        {
            continue;
        }
        match &p.default {
            Some(d) => {
                out.insert(p.name.clone(), d.clone());
            }
            None => errors.push(located(
                spec_file,
                if r.locs.at == Loc::default() {
                    Loc { line: 1, col: 1 }
                } else {
                    r.locs.at
                },
                format!(
                    "blueprint `{}` needs the param `{}` ({})",
                    bp.name,
                    p.name,
                    p.ty.as_str()
                ),
                Some(format!("add `params: {{{}: ...}}` to this entry", p.name)),
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
