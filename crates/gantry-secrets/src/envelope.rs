//! Envelope encryption: sealing a secret under a fresh data key, wrapping that key with a
//! [`KeyProvider`], and the envelope's serialised form (see the crate docs for the format).
//!
//! Why envelopes: the secret's bytes are encrypted once, locally, with a key used for nothing
//! else; the provider (a key file, a passphrase, a transit server) only ever sees 32 random
//! bytes. Rotating the provider's key re-wraps those 32 bytes ([`rewrap`]) and never touches
//! the ciphertext, and one compromised data key exposes one secret.

use std::fmt;

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::SecretsError;
use crate::provider::KeyProvider;
use crate::secret::{DataKey, SecretBytes};

/// The envelope format this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;

const NONCE_LEN: usize = 12;
const CHECK_LEN: usize = 8;

/// What a secret's ciphertext is bound to: its name, and whatever context the caller adds (a
/// store id, a cluster). Neither is stored in the envelope: the opener supplies both again, and
/// an envelope moved to another name or context does not open.
#[derive(Debug, Clone, Copy)]
pub struct Aad<'a> {
    pub name: &'a str,
    pub context: &'a [u8],
}

impl<'a> Aad<'a> {
    pub fn name(name: &'a str) -> Aad<'a> {
        Aad { name, context: &[] }
    }

    pub fn with_context(self, context: &'a [u8]) -> Aad<'a> {
        Aad { context, ..self }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = b"gantry-secrets/data/v1".to_vec();
        for part in [self.name.as_bytes(), self.context] {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }
}

/// A sealed secret: the data key wrapped by a provider, and the secret encrypted with it.
/// Holds nothing secret (it is what gets stored), but still prints only its header.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    kind: String,
    key_id: String,
    wrapped_key: Vec<u8>,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("version", &FORMAT_VERSION)
            .field("provider", &self.kind)
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// The serialised form, field for field (see the crate docs).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u64,
    provider: String,
    key_id: String,
    wrapped_key: String,
    nonce: String,
    ciphertext: String,
    check: String,
}

fn check_value(
    v: u64,
    kind: &str,
    key_id: &str,
    wrapped: &[u8],
    nonce: &[u8],
    ct: &[u8],
) -> [u8; CHECK_LEN] {
    let mut h = Sha256::new();
    h.update(b"gantry-secrets/envelope-check");
    h.update(v.to_be_bytes());
    for part in [kind.as_bytes(), key_id.as_bytes(), wrapped, nonce, ct] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let d = h.finalize();
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(&d[..CHECK_LEN]);
    out
}

impl Envelope {
    /// The provider kind that wrapped the data key (`keyfile`, `passphrase`, `openbao`).
    pub fn provider_kind(&self) -> &str {
        &self.kind
    }

    /// The id of the key that wrapped the data key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Whether `provider` would wrap a new envelope the same way: same kind and key id. What
    /// `secrets rotate` asks to skip envelopes already under the current key.
    pub fn is_wrapped_by(&self, provider: &dyn KeyProvider) -> bool {
        self.kind == provider.kind() && self.key_id == provider.key_id()
    }

    /// The serialised form: one line of compact JSON, ASCII only.
    pub fn encode(&self) -> String {
        let check = check_value(
            FORMAT_VERSION,
            &self.kind,
            &self.key_id,
            &self.wrapped_key,
            &self.nonce,
            &self.ciphertext,
        );
        let wire = Wire {
            v: FORMAT_VERSION,
            provider: self.kind.clone(),
            key_id: self.key_id.clone(),
            wrapped_key: STANDARD.encode(&self.wrapped_key),
            nonce: STANDARD.encode(self.nonce),
            ciphertext: STANDARD.encode(&self.ciphertext),
            check: STANDARD.encode(check),
        };
        // Serialising a struct of strings and a number cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Reads what [`Envelope::encode`] wrote (bytes, so that a store's corrupted non-UTF-8
    /// value is reported like any other corruption). `secret` names it in errors. Anything that does
    /// not parse, or whose check value does not match, is [`SecretsError::Tampered`]; a valid
    /// envelope of a newer format is [`SecretsError::UnsupportedVersion`].
    pub fn decode(secret: &str, text: impl AsRef<[u8]>) -> Result<Envelope, SecretsError> {
        let tampered = |provider: &str, key_id: &str, reason: String| SecretsError::Tampered {
            secret: secret.to_string(),
            provider: if provider.is_empty() {
                "unknown".into()
            } else {
                provider.to_string()
            },
            key_id: if key_id.is_empty() {
                "unknown".into()
            } else {
                key_id.to_string()
            },
            reason,
        };
        let wire: Wire = serde_json::from_slice(text.as_ref())
            .map_err(|e| tampered("", "", format!("not a readable envelope: {e}")))?;
        let b64 = |field: &str, v: &str| {
            STANDARD.decode(v).map_err(|_| {
                tampered(
                    &wire.provider,
                    &wire.key_id,
                    format!("`{field}` is not base64"),
                )
            })
        };
        let wrapped_key = b64("wrapped_key", &wire.wrapped_key)?;
        let nonce = b64("nonce", &wire.nonce)?;
        let ciphertext = b64("ciphertext", &wire.ciphertext)?;
        let check = b64("check", &wire.check)?;
        let expected = check_value(
            wire.v,
            &wire.provider,
            &wire.key_id,
            &wrapped_key,
            &nonce,
            &ciphertext,
        );
        if check != expected {
            return Err(tampered(
                &wire.provider,
                &wire.key_id,
                "its check value does not match its content".into(),
            ));
        }
        if wire.v != FORMAT_VERSION {
            return Err(SecretsError::UnsupportedVersion {
                secret: secret.to_string(),
                version: wire.v,
                known: FORMAT_VERSION,
            });
        }
        let nonce: [u8; NONCE_LEN] = nonce.as_slice().try_into().map_err(|_| {
            tampered(
                &wire.provider,
                &wire.key_id,
                "the nonce is not 12 bytes".into(),
            )
        })?;
        Ok(Envelope {
            kind: wire.provider,
            key_id: wire.key_id,
            wrapped_key,
            nonce,
            ciphertext,
        })
    }
}

impl fmt::Display for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// Encrypts `plaintext` under a fresh data key bound to `aad`, and wraps the data key with
/// `provider`.
pub async fn seal(
    provider: &dyn KeyProvider,
    aad: Aad<'_>,
    plaintext: &[u8],
) -> Result<Envelope, SecretsError> {
    let data_key = DataKey::generate();
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let cipher = Aes256Gcm::new(data_key.as_bytes().into());
    let aad_bytes = aad.bytes();
    let ciphertext = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad_bytes,
            },
        )
        .map_err(|_| SecretsError::Crypto {
            secret: aad.name.to_string(),
            reason: "encrypting the secret failed (is it larger than 64 GiB?)".into(),
        })?;
    let wrapped = provider.wrap(aad.name, &data_key).await?;
    Ok(Envelope {
        kind: provider.kind().to_string(),
        key_id: wrapped.key_id,
        wrapped_key: wrapped.bytes,
        nonce,
        ciphertext,
    })
}

/// The data key of `envelope`, unwrapped by the provider among `providers` that wrapped it,
/// and that provider's name.
async fn unwrap_data_key(
    providers: &[&dyn KeyProvider],
    secret: &str,
    envelope: &Envelope,
) -> Result<(DataKey, String), SecretsError> {
    let same_kind: Vec<&dyn KeyProvider> = providers
        .iter()
        .copied()
        .filter(|p| p.kind() == envelope.kind)
        .collect();
    let Some(first) = same_kind.first() else {
        let configured = if providers.is_empty() {
            "none".to_string()
        } else {
            providers
                .iter()
                .map(|p| p.describe())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(SecretsError::UnknownProvider {
            secret: secret.to_string(),
            kind: envelope.kind.clone(),
            key_id: envelope.key_id.clone(),
            configured,
        });
    };
    // The provider that holds the key; else the first of the kind, whose unwrap says why not
    // (wrong key, unreadable key id).
    let provider = same_kind
        .iter()
        .find(|p| p.accepts(&envelope.key_id))
        .unwrap_or(first);
    let key = provider
        .unwrap(secret, &envelope.key_id, &envelope.wrapped_key)
        .await?;
    Ok((key, provider.describe()))
}

/// Decrypts `envelope`, sealed for `aad`, with whichever of `providers` wrapped its data key.
/// Fails (never returns other bytes) if the key is not there, the envelope was changed, or it
/// was sealed for another name or context.
pub async fn open(
    providers: &[&dyn KeyProvider],
    aad: Aad<'_>,
    envelope: &Envelope,
) -> Result<SecretBytes, SecretsError> {
    let (data_key, provider) = unwrap_data_key(providers, aad.name, envelope).await?;
    let cipher = Aes256Gcm::new(data_key.as_bytes().into());
    let aad_bytes = aad.bytes();
    let plain = cipher
        .decrypt(
            &Nonce::from(envelope.nonce),
            Payload {
                msg: &envelope.ciphertext,
                aad: &aad_bytes,
            },
        )
        .map_err(|_| SecretsError::Tampered {
            secret: aad.name.to_string(),
            provider,
            key_id: envelope.key_id.clone(),
            reason: "the ciphertext does not authenticate: changed, or sealed for another secret name or context".into(),
        })?;
    Ok(SecretBytes::new(plain))
}

/// Re-wraps the data key of `envelope` (named `secret`, for errors) from whichever of `from`
/// wrapped it to `to`. The ciphertext and nonce stay as they are: the secret itself is never
/// decrypted, and the new envelope opens exactly as the old one did, with `to`'s key.
pub async fn rewrap(
    secret: &str,
    envelope: &Envelope,
    from: &[&dyn KeyProvider],
    to: &dyn KeyProvider,
) -> Result<Envelope, SecretsError> {
    let (data_key, _) = unwrap_data_key(from, secret, envelope).await?;
    let wrapped = to.wrap(secret, &data_key).await?;
    Ok(Envelope {
        kind: to.kind().to_string(),
        key_id: wrapped.key_id,
        wrapped_key: wrapped.bytes,
        nonce: envelope.nonce,
        ciphertext: envelope.ciphertext.clone(),
    })
}
