//! The values of the blueprints' `secret` params, and the rules that keep them secret.
//!
//! Values come from the [`crate::secrets::SecretStore`] when `up` applies the blueprints (one
//! per cluster, generated on first use); a dry render (`validate`, `blueprint render` of a
//! cluster that has none yet) uses a fixed placeholder per param instead, made of the same
//! characters, so the same checks catch the same mistakes. The checks run on every rendering
//! ([`check_rendered`]): a secret must never reach a process's command line (other users read
//! `/proc/*/cmdline`), so one rendered into a `wait: command` or a `dest` path is an error at
//! the template's `file:line:column`; a template that renders one is written 0600 when it has
//! no `mode`, and an explicit `mode` that lets the group or others read it is an error (gantry
//! does not silently override a mode the blueprint asked for).

use std::collections::BTreeMap;

use gantry_core::SpecError;
use gantry_core::blueprint::{Action, Loc, StepDef};
use gantry_core::secret::{Masker, Secret};
use serde_json::{Map, Value};
use sha2::Digest;

use super::render::Rendered;
use super::{Prepared, located};
use crate::EngineError;
use crate::secrets::SecretStore;

/// Blueprint name → secret param → value.
pub type SecretValues = BTreeMap<String, BTreeMap<String, Secret>>;

/// The store key of a secret param: `BLUEPRINT/PARAM`.
pub fn key(blueprint: &str, param: &str) -> String {
    format!("{blueprint}/{param}")
}

/// The fixed stand-in for a secret that does not exist yet (dry renders).
pub fn placeholder(blueprint: &str, param: &str) -> Secret {
    let h = hex::encode(sha2::Sha256::digest(
        format!("gantry-secret-placeholder/{blueprint}/{param}").as_bytes(),
    ));
    Secret::new(format!("gantrySecretPlaceholder{}", &h[..16]))
}

/// Placeholders for every secret param of `prepared`.
pub fn placeholders(prepared: &[Prepared]) -> SecretValues {
    prepared
        .iter()
        .map(|p| {
            let bp = &p.loaded.blueprint;
            (
                bp.name.clone(),
                bp.secret_params()
                    .map(|s| (s.name.clone(), placeholder(&bp.name, &s.name)))
                    .collect(),
            )
        })
        .collect()
}

/// The cluster's values of every secret param of `prepared`: generated and kept on first use
/// when `create`, else the kept ones, with placeholders for those that do not exist (yet).
pub async fn resolve(
    store: &dyn SecretStore,
    project: &str,
    cluster_uid: &str,
    prepared: &[Prepared],
    create: bool,
) -> Result<SecretValues, EngineError> {
    let kept = if create || cluster_uid.is_empty() {
        BTreeMap::new()
    } else {
        store.all(project, cluster_uid).await?
    };
    let mut out = SecretValues::new();
    for p in prepared {
        let bp = &p.loaded.blueprint;
        let mut values = BTreeMap::new();
        for s in bp.secret_params() {
            let k = key(&bp.name, &s.name);
            let v = if create {
                store.get_or_create(project, cluster_uid, &k).await?
            } else {
                kept.get(&k)
                    .cloned()
                    .unwrap_or_else(|| placeholder(&bp.name, &s.name))
            };
            values.insert(s.name.clone(), v);
        }
        out.insert(bp.name.clone(), values);
    }
    Ok(out)
}

/// A masker for every value.
pub fn masker(values: &SecretValues) -> Masker {
    Masker::new(values.values().flat_map(|m| m.values()))
}

/// `params` with the blueprint's secrets added (for a template context only: the result holds
/// the values in plaintext and must not be kept).
pub fn with_secrets(
    params: &Map<String, Value>,
    secrets: Option<&BTreeMap<String, Secret>>,
) -> Map<String, Value> {
    let mut out = params.clone();
    for (k, v) in secrets.into_iter().flatten() {
        out.insert(k.clone(), Value::String(v.expose().to_string()));
    }
    out
}

fn mode_hint(m: u32) -> String {
    format!(
        "it renders a secret param, so no other user may read it: use `mode: \"0600\"` (or \
         `\"0400\"`; `{m:04o}` lets the group or others read it), or leave `mode` out and \
         gantry writes it 0600"
    )
}

/// Applies the secret rules to what step `s` of the blueprint in `file` rendered (see the
/// module's doc). Returns the action to run, with mode 0600 for a template that renders a
/// secret and has no mode.
pub fn check_rendered(
    file: &str,
    s: &StepDef,
    action: Rendered,
    masker: &Masker,
) -> Result<Rendered, SpecError> {
    if masker.is_empty() {
        return Ok(action);
    }
    let dest_loc = |what: &str| match &s.action {
        Action::Template { dest, .. } | Action::Upload { dest, .. } => {
            (dest.loc, format!("`dest` of step `{}` {what}", s.id))
        }
        _ => (s.loc, format!("step `{}` {what}", s.id)),
    };
    let on_command_line = |(at, message): (Loc, String)| {
        located(
            file,
            at,
            message,
            Some(
                "a command line is readable by every user of the machine (/proc/PID/cmdline): \
                 pass the secret in a file or in the environment of a script (e.g. \
                 REDISCLI_AUTH, PGPASSFILE), and refer to that file here"
                    .into(),
            ),
        )
    };
    match action {
        Rendered::Write {
            dest,
            content,
            mode,
        } => {
            if masker.finds(&dest) {
                return Err(on_command_line(dest_loc("renders a secret param")));
            }
            if !masker.finds(&String::from_utf8_lossy(&content)) {
                return Ok(Rendered::Write {
                    dest,
                    content,
                    mode,
                });
            }
            match mode {
                None => Ok(Rendered::Write {
                    dest,
                    content,
                    mode: Some(0o600),
                }),
                Some(m) if m & 0o077 != 0 => {
                    let at = match &s.action {
                        Action::Template { mode_loc, .. } => *mode_loc,
                        _ => s.loc,
                    };
                    Err(located(
                        file,
                        at,
                        format!(
                            "step `{}` writes a secret into a file of mode {m:04o}, which \
                             other users can read",
                            s.id
                        ),
                        Some(mode_hint(m)),
                    ))
                }
                Some(m) => Ok(Rendered::Write {
                    dest,
                    content,
                    mode: Some(m),
                }),
            }
        }
        Rendered::Copy { src, dest, mode } => {
            if masker.finds(&dest) || masker.finds(&src) {
                return Err(on_command_line(dest_loc("renders a secret param")));
            }
            Ok(Rendered::Copy { src, dest, mode })
        }
        Rendered::Command {
            command,
            timeout_secs,
        } => {
            if masker.finds(&command) {
                let at = match &s.action {
                    Action::Wait {
                        check: gantry_core::blueprint::WaitCheck::Command(t),
                        ..
                    } => t.loc,
                    _ => s.loc,
                };
                return Err(on_command_line((
                    at,
                    format!(
                        "the `wait: command` of step `{}` renders a secret param, and gantry \
                         runs it as a command line",
                        s.id
                    ),
                )));
            }
            Ok(Rendered::Command {
                command,
                timeout_secs,
            })
        }
        // A script reaches the node on the standard input of `cat` and is written 0700 (see
        // `exec`); tcp and http waits are checked from gantry's own process, and every message
        // about them is masked.
        other => Ok(other),
    }
}
