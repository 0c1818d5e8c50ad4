//! `passphrase`: the key-encryption key is derived from a passphrase with Argon2id, for a team
//! that would rather remember a passphrase than distribute a file.
//!
//! Where the salt and parameters live: in the key id of every envelope,
//! `argon2id$v=19$m=65536,t=3,p=1$SALT` (SALT: standard base64 without padding, 16 random
//! bytes), so an opener needs only the passphrase, and parameters can be raised later: new
//! envelopes carry the new ones, old envelopes keep theirs until `rewrap`. The wrapped data key
//! is preceded by an 8-byte check value of the derived key (a SHA-256 of a label and the key),
//! so a wrong passphrase is told apart from a tampered envelope; it lets an attacker test
//! guesses no faster than the wrapped key itself does, since each guess costs one Argon2id run.
//!
//! Argon2id is slow on purpose (default m = 64 MiB, t = 3, p = 1, the second recommended
//! setting of RFC 9106 with one lane), so a key is derived once per (salt, parameters) and
//! cached for the provider's life: opening a thousand secrets sealed by the same provider runs
//! Argon2 once. [`Passphrase::derivations`] counts the runs (tests assert it).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use super::{KeyProvider, LOCAL_WRAPPED_LEN, WrappedKey, local_unwrap, local_wrap};
use crate::error::SecretsError;
use crate::secret::{DataKey, KEY_LEN, SecretString};

const CHECK_LEN: usize = 8;
const SALT_LEN: usize = 16;

/// Argon2id cost parameters (version 0x13 always).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Argon2Params {
    /// RFC 9106's second recommended setting (64 MiB, 3 passes) with one lane: about a quarter
    /// of a second on a current core in a release build.
    pub const DEFAULT: Argon2Params = Argon2Params {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };

    /// Bounds on what an envelope may ask for, so a forged key id cannot make an opener
    /// allocate gigabytes or spin for minutes.
    fn check(&self) -> Result<(), String> {
        if !(1..=16).contains(&self.p) {
            return Err(format!("p={} is outside 1..=16", self.p));
        }
        if !(1..=16).contains(&self.t) {
            return Err(format!("t={} is outside 1..=16", self.t));
        }
        if self.m_kib < 8 * self.p || self.m_kib > 1024 * 1024 {
            return Err(format!(
                "m={} KiB is outside {}..=1048576",
                self.m_kib,
                8 * self.p
            ));
        }
        Ok(())
    }
}

impl Default for Argon2Params {
    fn default() -> Self {
        Argon2Params::DEFAULT
    }
}

struct Derived {
    key: DataKey,
    check: [u8; CHECK_LEN],
}

/// The passphrase provider: seals under its own salt and parameters, opens envelopes of any
/// salt and parameters (within bounds) derived from the same passphrase.
pub struct Passphrase {
    pass: SecretString,
    params: Argon2Params,
    salt: Vec<u8>,
    cache: tokio::sync::Mutex<HashMap<(Vec<u8>, Argon2Params), Derived>>,
    derivations: AtomicU64,
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Passphrase")
            .field("key_id", &self.key_id())
            .field("derivations", &self.derivations())
            .finish_non_exhaustive()
    }
}

impl Passphrase {
    /// Default parameters and a fresh random salt.
    pub fn new(pass: SecretString) -> Result<Passphrase, SecretsError> {
        let mut salt = vec![0u8; SALT_LEN];
        rand::rng().fill_bytes(&mut salt);
        Passphrase::with_params(pass, Argon2Params::DEFAULT, salt)
    }

    /// Given parameters and salt (a caller that keeps one salt per store, or a test that wants
    /// a cheap derivation).
    pub fn with_params(
        pass: SecretString,
        params: Argon2Params,
        salt: Vec<u8>,
    ) -> Result<Passphrase, SecretsError> {
        let bad = |reason: String| SecretsError::BadSpec {
            spec: "passphrase".into(),
            reason,
        };
        if pass.expose().is_empty() {
            return Err(SecretsError::MissingInput {
                provider: "passphrase".into(),
                what: "the passphrase (it is empty)".into(),
            });
        }
        params.check().map_err(bad)?;
        if !(8..=64).contains(&salt.len()) {
            return Err(bad(format!(
                "a salt of {} bytes; 8 to 64 are allowed",
                salt.len()
            )));
        }
        Ok(Passphrase {
            pass,
            params,
            salt,
            cache: tokio::sync::Mutex::new(HashMap::new()),
            derivations: AtomicU64::new(0),
        })
    }

    /// A provider that seals under the salt and parameters of `key_id` (an envelope's key id):
    /// a caller that keeps one salt per store takes it from an envelope already there, so that
    /// every process seals alike, `secrets rotate` finds envelopes already under the current
    /// key, and opening a store's secrets costs one derivation.
    pub fn with_key_id(pass: SecretString, key_id: &str) -> Result<Passphrase, SecretsError> {
        let (params, salt) =
            Passphrase::parse_key_id(key_id).map_err(|reason| SecretsError::BadSpec {
                spec: "passphrase".into(),
                reason: format!("key id `{key_id}`: {reason}"),
            })?;
        Passphrase::with_params(pass, params, salt)
    }

    /// How many times Argon2id ran in this provider's life.
    pub fn derivations(&self) -> u64 {
        self.derivations.load(Ordering::Relaxed)
    }

    fn format_key_id(params: &Argon2Params, salt: &[u8]) -> String {
        format!(
            "argon2id$v=19$m={},t={},p={}${}",
            params.m_kib,
            params.t,
            params.p,
            STANDARD_NO_PAD.encode(salt)
        )
    }

    fn parse_key_id(key_id: &str) -> Result<(Argon2Params, Vec<u8>), String> {
        let rest = key_id
            .strip_prefix("argon2id$v=19$")
            .ok_or("the key id is not argon2id$v=19$…")?;
        let (params, salt) = rest.split_once('$').ok_or("the key id has no salt")?;
        let mut m = None;
        let mut t = None;
        let mut p = None;
        for kv in params.split(',') {
            let (k, v) = kv.split_once('=').ok_or("unreadable parameters")?;
            let v: u32 = v.parse().map_err(|_| "unreadable parameters")?;
            let slot = match k {
                "m" => &mut m,
                "t" => &mut t,
                "p" => &mut p,
                _ => return Err(format!("unknown parameter `{k}`")),
            };
            if slot.replace(v).is_some() {
                return Err(format!("parameter `{k}` given twice"));
            }
        }
        let params = Argon2Params {
            m_kib: m.ok_or("no m parameter")?,
            t: t.ok_or("no t parameter")?,
            p: p.ok_or("no p parameter")?,
        };
        params.check()?;
        let salt = STANDARD_NO_PAD
            .decode(salt)
            .map_err(|_| "the salt is not base64")?;
        if !(8..=64).contains(&salt.len()) {
            return Err("the salt length is outside 8..=64".into());
        }
        Ok((params, salt))
    }

    /// The derived key and its check value for (salt, params): from the cache, or by running
    /// Argon2id once (on the blocking pool) while holding the cache, so concurrent openers of
    /// the same salt wait for one derivation instead of each running their own.
    async fn derive<R>(
        &self,
        secret: &str,
        salt: &[u8],
        params: Argon2Params,
        f: impl FnOnce(&Derived) -> R,
    ) -> Result<R, SecretsError> {
        let mut cache = self.cache.lock().await;
        let slot = (salt.to_vec(), params);
        if let Some(d) = cache.get(&slot) {
            return Ok(f(d));
        }
        let pass = self.pass.clone();
        let salt_owned = salt.to_vec();
        let fail = |reason: String| SecretsError::Crypto {
            secret: secret.to_string(),
            reason: format!("deriving the key from the passphrase failed: {reason}"),
        };
        let key = tokio::task::spawn_blocking(move || -> Result<DataKey, String> {
            let p = argon2::Params::new(params.m_kib, params.t, params.p, Some(KEY_LEN))
                .map_err(|e| e.to_string())?;
            let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
            let mut out = zeroize::Zeroizing::new([0u8; KEY_LEN]);
            argon
                .hash_password_into(pass.expose().as_bytes(), &salt_owned, out.as_mut())
                .map_err(|e| e.to_string())?;
            DataKey::from_slice(out.as_ref()).ok_or_else(|| "short output".to_string())
        })
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(fail)?;
        self.derivations.fetch_add(1, Ordering::Relaxed);
        let digest = Sha256::new()
            .chain_update(b"gantry-secrets/passphrase-check/v1")
            .chain_update(key.as_bytes())
            .finalize();
        let mut check = [0u8; CHECK_LEN];
        check.copy_from_slice(&digest[..CHECK_LEN]);
        let d = cache.entry(slot).or_insert(Derived { key, check });
        Ok(f(d))
    }
}

#[async_trait::async_trait]
impl KeyProvider for Passphrase {
    fn kind(&self) -> &'static str {
        "passphrase"
    }

    fn key_id(&self) -> String {
        Passphrase::format_key_id(&self.params, &self.salt)
    }

    fn describe(&self) -> String {
        "passphrase".into()
    }

    /// Any Argon2id key id: the salt and parameters come from the envelope, and whether the
    /// passphrase is the right one is known only after deriving.
    fn accepts(&self, key_id: &str) -> bool {
        key_id.starts_with("argon2id$")
    }

    async fn wrap(&self, secret: &str, key: &DataKey) -> Result<WrappedKey, SecretsError> {
        let key_id = self.key_id();
        let kind = self.kind();
        let bytes = self
            .derive(secret, &self.salt, self.params, |d| {
                local_wrap(&d.key, kind, &key_id, secret, key).map(|w| {
                    let mut out = d.check.to_vec();
                    out.extend_from_slice(&w);
                    out
                })
            })
            .await??;
        Ok(WrappedKey { key_id, bytes })
    }

    async fn unwrap(
        &self,
        secret: &str,
        key_id: &str,
        wrapped: &[u8],
    ) -> Result<DataKey, SecretsError> {
        let tampered = |reason: String| SecretsError::Tampered {
            secret: secret.to_string(),
            provider: self.describe(),
            key_id: key_id.to_string(),
            reason,
        };
        let (params, salt) = Passphrase::parse_key_id(key_id).map_err(&tampered)?;
        if wrapped.len() != CHECK_LEN + LOCAL_WRAPPED_LEN {
            return Err(tampered("the wrapped data key has the wrong length".into()));
        }
        let (check, rest) = wrapped.split_at(CHECK_LEN);
        let kind = self.kind();
        self.derive(secret, &salt, params, |d| {
            if d.check != check {
                return Err(SecretsError::WrongKey {
                    secret: secret.to_string(),
                    kind: kind.into(),
                    sealed_with: key_id.to_string(),
                    provider: "passphrase".into(),
                    have: "another passphrase".into(),
                });
            }
            local_unwrap(&d.key, kind, key_id, rest)
                .ok_or_else(|| tampered("the wrapped data key does not authenticate".into()))
        })
        .await?
    }
}
