//! Key providers: what wraps (encrypts) and unwraps a secret's data key. A provider is chosen
//! by a specification string (`keyfile:PATH`, `passphrase`, `openbao://transit/KEY`,
//! `awskms://KEY`), parsed by [`KeyProviderSpec::parse`] and built by
//! [`KeyProviderSpec::build`] from what the caller supplies ([`ProviderInputs`]: a passphrase,
//! a server address and token — the CLI reads them from the environment or a prompt; this
//! crate reads no environment).
//!
//! The trait is small on purpose: a kind, the key id new envelopes are wrapped under, and
//! wrap/unwrap. Everything else (the envelope format, which provider opens which envelope,
//! errors that name the secret) lives in [`crate::envelope`], once for every provider.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore as _;

use crate::error::SecretsError;
use crate::secret::{DataKey, SecretString};

pub mod keyfile;
pub mod openbao;
pub mod passphrase;

pub use keyfile::KeyFile;
pub use openbao::OpenBaoTransit;
pub use passphrase::{Argon2Params, Passphrase};

/// A data key wrapped by a provider, and the id of the key that wrapped it.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("key_id", &self.key_id)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Wraps and unwraps data keys.
///
/// Contract:
/// - `wrap` returns the id of the key it used; `unwrap` is given that id back (from the
///   envelope) and must either return the very data key that was wrapped or fail: a key it does
///   not hold is [`SecretsError::WrongKey`], bytes that do not authenticate are
///   [`SecretsError::Tampered`], a server that cannot be used is [`SecretsError::Provider`].
///   Never a wrong key silently.
/// - `secret` is the secret's name, for error messages only.
/// - No method logs or returns key material, passphrases or tokens in an error.
#[async_trait::async_trait]
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// The provider kind written in envelopes: `keyfile`, `passphrase`, `openbao`.
    fn kind(&self) -> &'static str;

    /// The id of the key new envelopes are wrapped under (what rotation compares).
    fn key_id(&self) -> String;

    /// How to name this provider to a person: its specification, without secrets
    /// (`keyfile:/home/me/.gantry/secrets.key`, `openbao://transit/gantry`).
    fn describe(&self) -> String;

    /// Whether this provider can try to unwrap what was wrapped under `key_id` (same kind).
    /// Default: it is the provider's own key id.
    fn accepts(&self, key_id: &str) -> bool {
        key_id == self.key_id()
    }

    async fn wrap(&self, secret: &str, key: &DataKey) -> Result<WrappedKey, SecretsError>;

    async fn unwrap(
        &self,
        secret: &str,
        key_id: &str,
        wrapped: &[u8],
    ) -> Result<DataKey, SecretsError>;
}

/// A parsed key provider specification (what `GANTRY_KEY_PROVIDER` holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProviderSpec {
    /// `keyfile:PATH`: a 32-byte key in a file of mode 0600.
    KeyFile(PathBuf),
    /// `passphrase`: a key derived with Argon2id from a passphrase the caller gives.
    Passphrase,
    /// `openbao://MOUNT/KEY` (usually `openbao://transit/KEY`): OpenBao's or Vault's transit
    /// engine encrypts the data key.
    OpenBao { mount: String, key: String },
    /// `awskms://KEY` (a key id, ARN or `alias/NAME`): parsed here, built by the
    /// [`ExternalKeyProviders`] the caller gives (gantry-secrets-awskms).
    AwsKms { key: String },
}

const SCHEMES: &str = "passphrase, keyfile:PATH, openbao://transit/KEY or awskms://KEY";

impl KeyProviderSpec {
    pub fn parse(spec: &str) -> Result<KeyProviderSpec, SecretsError> {
        let bad = |reason: String| SecretsError::BadSpec {
            spec: spec.to_string(),
            reason,
        };
        if spec.is_empty() {
            return Err(bad(format!("empty; expected {SCHEMES}")));
        }
        if spec == "passphrase" {
            return Ok(KeyProviderSpec::Passphrase);
        }
        if let Some(path) = spec.strip_prefix("keyfile:") {
            if path.is_empty() {
                return Err(bad("no path after `keyfile:`".into()));
            }
            return Ok(KeyProviderSpec::KeyFile(PathBuf::from(path)));
        }
        if let Some(rest) = spec.strip_prefix("openbao://") {
            let (mount, key) = rest.rsplit_once('/').ok_or_else(|| {
                bad("expected openbao://MOUNT/KEY, for example openbao://transit/gantry".into())
            })?;
            let ok = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            };
            if !mount.split('/').all(ok) || !ok(key) {
                return Err(bad(
                    "the mount and key names may hold letters, digits, `-`, `_` and `.` only, for example openbao://transit/gantry".into(),
                ));
            }
            return Ok(KeyProviderSpec::OpenBao {
                mount: mount.to_string(),
                key: key.to_string(),
            });
        }
        if let Some(key) = spec.strip_prefix("awskms://") {
            if key.is_empty() {
                return Err(bad(
                    "no key after `awskms://` (a key id, an ARN or alias/NAME)".into(),
                ));
            }
            return Ok(KeyProviderSpec::AwsKms {
                key: key.to_string(),
            });
        }
        let scheme = spec
            .split_once("://")
            .map(|(s, _)| s)
            .or_else(|| spec.split_once(':').map(|(s, _)| s))
            .unwrap_or(spec);
        Err(bad(format!(
            "unknown key provider `{scheme}`; expected {SCHEMES}"
        )))
    }

    /// The provider this specification names, from what the caller supplies. A key file must
    /// exist (create it with [`KeyFile::create`]); `awskms` is built by
    /// [`ProviderInputs::external`], and is [`SecretsError::NotBuiltIn`] without it.
    pub fn build(&self, inputs: &ProviderInputs) -> Result<Arc<dyn KeyProvider>, SecretsError> {
        match self {
            KeyProviderSpec::KeyFile(path) => Ok(Arc::new(KeyFile::open(path)?)),
            KeyProviderSpec::Passphrase => {
                let pass = inputs
                    .passphrase
                    .clone()
                    .ok_or_else(|| SecretsError::MissingInput {
                        provider: self.to_string(),
                        what: "the passphrase".into(),
                    })?;
                Ok(Arc::new(Passphrase::new(pass)?))
            }
            KeyProviderSpec::OpenBao { mount, key } => {
                let addr =
                    inputs
                        .openbao_addr
                        .clone()
                        .ok_or_else(|| SecretsError::MissingInput {
                            provider: self.to_string(),
                            what: "the server address (VAULT_ADDR or BAO_ADDR)".into(),
                        })?;
                let token =
                    inputs
                        .openbao_token
                        .clone()
                        .ok_or_else(|| SecretsError::MissingInput {
                            provider: self.to_string(),
                            what: "the token (VAULT_TOKEN or BAO_TOKEN)".into(),
                        })?;
                Ok(Arc::new(OpenBaoTransit::new(&addr, token, mount, key)?))
            }
            // Built by the crate the caller plugged in (gantry-secrets-awskms), if any.
            KeyProviderSpec::AwsKms { .. } => inputs
                .external
                .as_ref()
                .and_then(|x| x.build(self))
                .unwrap_or_else(|| {
                    Err(SecretsError::NotBuiltIn {
                        spec: self.to_string(),
                        scheme: "awskms".into(),
                    })
                }),
        }
    }
}

impl fmt::Display for KeyProviderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProviderSpec::KeyFile(p) => write!(f, "keyfile:{}", p.display()),
            KeyProviderSpec::Passphrase => f.write_str("passphrase"),
            KeyProviderSpec::OpenBao { mount, key } => write!(f, "openbao://{mount}/{key}"),
            KeyProviderSpec::AwsKms { key } => write!(f, "awskms://{key}"),
        }
    }
}

impl std::str::FromStr for KeyProviderSpec {
    type Err = SecretsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyProviderSpec::parse(s)
    }
}

/// What a provider needs from its caller; this crate reads no environment variable.
#[derive(Debug, Clone, Default)]
pub struct ProviderInputs {
    /// For `passphrase`.
    pub passphrase: Option<SecretString>,
    /// For `openbao://`: the server's base URL (`https://bao.internal:8200`).
    pub openbao_addr: Option<String>,
    /// For `openbao://`: the token sent as `X-Vault-Token`.
    pub openbao_token: Option<SecretString>,
    /// Builds the providers that live in crates of their own (`awskms://`: the AWS SDK is
    /// built only into the binaries that want it); `None`: they are not built in.
    pub external: Option<Arc<dyn ExternalKeyProviders>>,
}

/// The extension point of [`KeyProviderSpec::build`]: a crate outside this one (so that this
/// one never builds a cloud SDK) builds the specifications it knows. Today that is `awskms://`
/// (gantry-secrets-awskms); the built-in kinds are never asked.
pub trait ExternalKeyProviders: Send + Sync + fmt::Debug {
    /// The provider `spec` names, or `None` when this builder does not know its kind.
    fn build(&self, spec: &KeyProviderSpec) -> Option<Result<Arc<dyn KeyProvider>, SecretsError>>;
}

/// Length of a data key wrapped locally: nonce, encrypted key, GCM tag.
pub(crate) const LOCAL_WRAPPED_LEN: usize = 12 + 32 + 16;

/// Wraps `key` with AES-256-GCM under `kek`, binding the provider kind and key id as associated
/// data (a wrapped key relabelled to another key id does not unwrap). Used by the key file and
/// passphrase providers: `nonce (12) || ciphertext (32) || tag (16)`.
pub(crate) fn local_wrap(
    kek: &DataKey,
    kind: &str,
    key_id: &str,
    secret: &str,
    key: &DataKey,
) -> Result<Vec<u8>, SecretsError> {
    let cipher = Aes256Gcm::new(kek.as_bytes().into());
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let aad = wrap_aad(kind, key_id);
    let ct = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: key.as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| SecretsError::Crypto {
            secret: secret.to_string(),
            reason: "wrapping the data key failed".into(),
        })?;
    let mut out = Vec::with_capacity(LOCAL_WRAPPED_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// The inverse of [`local_wrap`]: `None` when the bytes do not authenticate under `kek`.
pub(crate) fn local_unwrap(
    kek: &DataKey,
    kind: &str,
    key_id: &str,
    wrapped: &[u8],
) -> Option<DataKey> {
    if wrapped.len() != LOCAL_WRAPPED_LEN {
        return None;
    }
    let (nonce, ct) = wrapped.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    let cipher = Aes256Gcm::new(kek.as_bytes().into());
    let aad = wrap_aad(kind, key_id);
    let plain = zeroize::Zeroizing::new(
        cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad: &aad })
            .ok()?,
    );
    DataKey::from_slice(&plain)
}

fn wrap_aad(kind: &str, key_id: &str) -> Vec<u8> {
    let mut aad = b"gantry-secrets/wrap/v1".to_vec();
    for part in [kind, key_id] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}
