//! Which key provider seals this invocation's secrets, and the [`Vault`] built on it.
//!
//! Why here: `gantry-secrets` reads no environment and never prompts; choosing a provider is
//! the binary's job. The rules (docs/secrets.md):
//! - `GANTRY_KEY_PROVIDER` names it: `keyfile:PATH`, `passphrase` (from `GANTRY_PASSPHRASE`, or
//!   a prompt when stdin is a terminal), `openbao://transit/KEY` (`BAO_ADDR`/`VAULT_ADDR`,
//!   `BAO_TOKEN`/`VAULT_TOKEN`), `awskms://KEY`.
//! - Unset, with a SQLite store: `keyfile:$GANTRY_HOME/secrets.key`, created (0600) on first
//!   use, so a single user sets nothing and is asked nothing.
//! - Unset, with a shared store (PostgreSQL, etcd): refused, because a key generated on one
//!   machine would seal the team's secrets under a key nobody else has.
//!
//! Only commands that open a secret (the project's SSH key, host pins, blueprint secrets) build
//! a provider: `ls`, `state status`, `runs` and `logs` never need one.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gantry_secrets::{
    Envelope, KeyFile, KeyProvider, KeyProviderSpec, Passphrase, ProviderInputs, SecretString,
    SecretsError,
};
use gantry_state::{StateStore, StateUrl};

use crate::env_vars;
use crate::exit::{self, Failure};

/// The key file gantry creates in `GANTRY_HOME` when no provider is configured.
pub const DEFAULT_KEY_FILE: &str = "secrets.key";

/// The provider specification of this invocation: `GANTRY_KEY_PROVIDER`, else the key file of
/// the home at `root` for a SQLite store, else a usage error.
pub fn provider_spec(root: &Path, state: &StateUrl) -> Result<KeyProviderSpec, Failure> {
    let configured = std::env::var(env_vars::GANTRY_KEY_PROVIDER)
        .ok()
        .filter(|v| !v.trim().is_empty());
    match configured {
        Some(text) => parse_spec(text.trim()),
        None => match state {
            StateUrl::Sqlite { .. } => Ok(KeyProviderSpec::KeyFile(default_key_file(root))),
            shared => Err(Failure::new(
                exit::USAGE,
                anyhow::anyhow!(
                    "the shared state store {shared} needs a key provider: GANTRY_KEY_PROVIDER is not set"
                ),
            )
            .hint(
                "set GANTRY_KEY_PROVIDER to the team's key: keyfile:PATH (a file shared through your own channel), \
                 passphrase (GANTRY_PASSPHRASE), openbao://transit/KEY (BAO_ADDR, BAO_TOKEN) — the same on every machine",
            )
            .hint(
                "commands that open secrets (up, run, ssh, put, get, show, inventory, destroy, blueprint) need it; \
                 ls, runs, logs and state status do not",
            )),
        },
    }
}

pub fn parse_spec(text: &str) -> Result<KeyProviderSpec, Failure> {
    KeyProviderSpec::parse(text).map_err(|e| {
        Failure::new(exit::USAGE, anyhow::Error::new(e)).hint(
            "GANTRY_KEY_PROVIDER takes passphrase, keyfile:PATH, openbao://transit/KEY or awskms://KEY (docs/secrets.md)",
        )
    })
}

pub fn default_key_file(root: &Path) -> PathBuf {
    root.join(DEFAULT_KEY_FILE)
}

/// Where the passphrase of a provider comes from: its environment variable, else a prompt.
pub struct PassphraseSource {
    pub env: &'static str,
    pub prompt: &'static str,
}

pub const CURRENT_PASSPHRASE: PassphraseSource = PassphraseSource {
    env: env_vars::GANTRY_PASSPHRASE,
    prompt: "gantry passphrase: ",
};

pub const OLD_PASSPHRASE: PassphraseSource = PassphraseSource {
    env: env_vars::GANTRY_OLD_PASSPHRASE,
    prompt: "gantry passphrase to rotate from: ",
};

fn env_first(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// Reads a passphrase from the terminal without echo. `None` when stdin is not a terminal.
fn prompt_passphrase(prompt: &str) -> Option<SecretString> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    let old = nix::sys::termios::tcgetattr(&stdin).ok()?;
    let mut quiet = old.clone();
    quiet
        .local_flags
        .remove(nix::sys::termios::LocalFlags::ECHO);
    let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &quiet);
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &old);
    eprintln!();
    read.ok()?;
    let kept = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(kept);
    // The buffer itself moves into the SecretString, which wipes it when dropped.
    Some(SecretString::new(line))
}

/// Builds the provider `spec` names. `store` is looked at for `passphrase` only: it seals
/// under the salt of an envelope already in the store (unless `fresh_salt`, for the target of a
/// rotation), so every process seals alike and opening costs one derivation.
pub async fn build_provider(
    spec: &KeyProviderSpec,
    store: &dyn StateStore,
    passphrase: &PassphraseSource,
    fresh_salt: bool,
) -> Result<Arc<dyn KeyProvider>, Failure> {
    let failure = |e: SecretsError| secrets_failure(e);
    match spec {
        KeyProviderSpec::KeyFile(path) => {
            let key = KeyFile::open_or_create(path).map_err(failure)?;
            Ok(Arc::new(key))
        }
        KeyProviderSpec::Passphrase => {
            let pass = match std::env::var(passphrase.env).ok().filter(|v| !v.is_empty()) {
                Some(p) => SecretString::new(p),
                None => prompt_passphrase(passphrase.prompt).ok_or_else(|| {
                    Failure::new(
                        exit::USAGE,
                        anyhow::anyhow!(
                            "key provider passphrase: {} is not set and stdin is not a terminal to ask on",
                            passphrase.env
                        ),
                    )
                    .hint(format!("set {} (or run on a terminal)", passphrase.env))
                })?,
            };
            let existing = if fresh_salt {
                None
            } else {
                passphrase_key_id(store).await?
            };
            let provider = match existing {
                Some(key_id) => Passphrase::with_key_id(pass, &key_id),
                None => Passphrase::new(pass),
            }
            .map_err(failure)?;
            Ok(Arc::new(provider))
        }
        KeyProviderSpec::OpenBao { .. } | KeyProviderSpec::AwsKms { .. } => {
            let inputs = ProviderInputs {
                passphrase: None,
                openbao_addr: env_first(&[env_vars::BAO_ADDR, env_vars::VAULT_ADDR]),
                openbao_token: env_first(&[env_vars::BAO_TOKEN, env_vars::VAULT_TOKEN])
                    .map(SecretString::new),
                external: crate::key_providers::external(),
            };
            spec.build(&inputs).map_err(failure)
        }
    }
}

/// The key id of a passphrase envelope already in the store (its salt and parameters), if any.
async fn passphrase_key_id(store: &dyn StateStore) -> Result<Option<String>, Failure> {
    let listed = store
        .list_secrets("ssh/")
        .await
        .map_err(|e| Failure::new(exit::FAILURE, anyhow::Error::new(e)))?;
    for (name, text) in listed {
        if let Ok(env) = Envelope::decode(&name, &text)
            && env.provider_kind() == "passphrase"
        {
            return Ok(Some(env.key_id().to_string()));
        }
    }
    Ok(None)
}

/// A secrets error at the binary's edge: its exit code and what to do next.
pub fn secrets_failure(e: SecretsError) -> Failure {
    let code = match &e {
        SecretsError::WrongKey { .. }
        | SecretsError::Tampered { .. }
        | SecretsError::UnknownProvider { .. }
        | SecretsError::UnsupportedVersion { .. } => exit::SECRET,
        SecretsError::BadSpec { .. }
        | SecretsError::NotBuiltIn { .. }
        | SecretsError::MissingInput { .. }
        | SecretsError::KeyFileTooOpen { .. } => exit::USAGE,
        _ => exit::FAILURE,
    };
    let h = exit::secrets_hint(&e);
    let f = Failure::new(code, anyhow::Error::new(e));
    match h {
        Some(h) => f.hint(h),
        None => f,
    }
}
