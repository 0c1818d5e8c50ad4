//! `openbao://MOUNT/KEY`: the data key is encrypted by OpenBao's (or Vault's) transit engine,
//! so the key-encryption key never leaves the server, access is a token's policy, and rotation
//! and audit are the server's.
//!
//! The API is two calls, `POST /v1/MOUNT/encrypt/KEY` and `POST /v1/MOUNT/decrypt/KEY`, with
//! the token in `X-Vault-Token`; the wrapped key is the server's `vault:vN:…` ciphertext as it
//! is (it names the transit key version, so keys rotated on the server still decrypt). The
//! client is `ureq`, already in the workspace and synchronous, run on tokio's blocking pool: a
//! request per secret sealed or opened does not justify an async HTTP stack. TLS goes through
//! rustls with aws-lc-rs, like gantry's other HTTP clients; `http://` is accepted for a dev
//! server on loopback.
//!
//! Transit creates a key on the first `encrypt` when the token's policy allows it (upsert), so
//! a misspelt key name is found when opening (its envelopes name the key they were sealed
//! under); operators should create the key explicitly and grant only `update` on the two
//! paths.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::{KeyProvider, WrappedKey};
use crate::error::SecretsError;
use crate::secret::{DataKey, SecretString};

const TIMEOUT: Duration = Duration::from_secs(30);
const MAX_ANSWER: u64 = 1 << 20;

/// A transit key on an OpenBao or Vault server.
#[derive(Clone)]
pub struct OpenBaoTransit {
    addr: String,
    token: SecretString,
    mount: String,
    key: String,
    agent: ureq::Agent,
}

impl fmt::Debug for OpenBaoTransit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenBaoTransit")
            .field("addr", &redact_url(&self.addr))
            .field("mount", &self.mount)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// `url` without a password (`https://user:pw@host` -> `https://user:***@host`).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{path}"),
        None => format!("{authority}{path}"),
    }
}

fn is_loopback(addr: &str) -> bool {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    let host = rest.split(['/', ':']).next().unwrap_or("");
    host == "localhost" || host == "127.0.0.1" || rest.starts_with("[::1]")
}

impl OpenBaoTransit {
    /// `addr`: the server's base URL (`https://bao.internal:8200`); `mount`: the transit
    /// engine's mount (`transit`); `key`: the transit key's name.
    pub fn new(
        addr: &str,
        token: SecretString,
        mount: &str,
        key: &str,
    ) -> Result<OpenBaoTransit, SecretsError> {
        let addr = addr.trim_end_matches('/').to_string();
        if !(addr.starts_with("https://") || addr.starts_with("http://")) {
            return Err(SecretsError::BadSpec {
                spec: format!("openbao://{mount}/{key}"),
                reason: format!(
                    "the server address `{}` is not an http:// or https:// URL",
                    redact_url(&addr)
                ),
            });
        }
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .build();
        let mut cfg = ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0);
        if is_loopback(&addr) {
            cfg = cfg.proxy(None);
        }
        Ok(OpenBaoTransit {
            addr,
            token,
            mount: mount.to_string(),
            key: key.to_string(),
            agent: cfg.build().new_agent(),
        })
    }

    /// POSTs `body` to `/v1/MOUNT/OP/KEY` on the blocking pool; the `data` object of a 200
    /// answer, else an error that says what the server said (never the body we sent).
    async fn call(
        &self,
        secret: &str,
        op: &'static str,
        body: Zeroizing<String>,
    ) -> Result<serde_json::Value, SecretsError> {
        let url = format!("{}/v1/{}/{op}/{}", self.addr, self.mount, self.key);
        let shown = redact_url(&url);
        let this = self.clone();
        let answer = tokio::task::spawn_blocking(move || -> Result<(u16, String), String> {
            let mut resp = this
                .agent
                .post(&url)
                .header("X-Vault-Token", this.token.expose())
                .content_type("application/json")
                .send(body.as_bytes())
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let text = resp
                .body_mut()
                .with_config()
                .limit(MAX_ANSWER)
                .read_to_string()
                .map_err(|e| format!("reading the answer: {e}"))?;
            Ok((status, text))
        })
        .await;
        let fail = |message: String| SecretsError::Provider {
            secret: secret.to_string(),
            provider: self.describe(),
            message,
            source: None,
        };
        let (status, text) = answer
            .map_err(|e| fail(format!("the request task failed: {e}")))?
            .map_err(|e| fail(format!("POST {shown}: {e}")))?;
        // The answer to a decrypt holds the data key: wipe it once parsed.
        let text = Zeroizing::new(text);
        let mut json: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
            fail(format!(
                "POST {shown}: HTTP {status} with an answer that is not JSON"
            ))
        })?;
        if status != 200 {
            let errors = json
                .get("errors")
                .and_then(|e| e.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            if op == "decrypt" && errors.contains("message authentication failed") {
                return Err(SecretsError::Tampered {
                    secret: secret.to_string(),
                    provider: self.describe(),
                    key_id: self.key_id(),
                    reason: format!("the server could not authenticate the wrapped key: {errors}"),
                });
            }
            let hint = match status {
                403 => " (check the token and its policy: it needs `update` on this path)",
                400 if errors.contains("not found") => {
                    " (is the transit key name right, and does the key exist on the server?)"
                }
                404 => " (is the transit engine mounted at this path?)",
                _ => "",
            };
            return Err(fail(format!(
                "POST {shown}: HTTP {status}: {}{hint}",
                if errors.is_empty() {
                    "no error message"
                } else {
                    &errors
                }
            )));
        }
        // Taken, not cloned: a decrypt's `data` holds the data key, and a copy left in `json`
        // would be freed without being wiped.
        json.get_mut("data")
            .map(serde_json::Value::take)
            .filter(|d| !d.is_null())
            .ok_or_else(|| fail(format!("POST {shown}: the answer has no `data`")))
    }
}

#[async_trait::async_trait]
impl KeyProvider for OpenBaoTransit {
    fn kind(&self) -> &'static str {
        "openbao"
    }

    fn key_id(&self) -> String {
        format!("{}/{}", self.mount, self.key)
    }

    fn describe(&self) -> String {
        format!("openbao://{}/{}", self.mount, self.key)
    }

    async fn wrap(&self, secret: &str, key: &DataKey) -> Result<WrappedKey, SecretsError> {
        let b64 = Zeroizing::new(STANDARD.encode(key.as_bytes()));
        let body = Zeroizing::new(serde_json::json!({ "plaintext": b64.as_str() }).to_string());
        let data = self.call(secret, "encrypt", body).await?;
        let ct = data
            .get("ciphertext")
            .and_then(|c| c.as_str())
            .ok_or_else(|| SecretsError::Provider {
                secret: secret.to_string(),
                provider: self.describe(),
                message: "the encrypt answer has no ciphertext".into(),
                source: None,
            })?;
        Ok(WrappedKey {
            key_id: self.key_id(),
            bytes: ct.as_bytes().to_vec(),
        })
    }

    async fn unwrap(
        &self,
        secret: &str,
        key_id: &str,
        wrapped: &[u8],
    ) -> Result<DataKey, SecretsError> {
        if key_id != self.key_id() {
            return Err(SecretsError::WrongKey {
                secret: secret.to_string(),
                kind: self.kind().into(),
                sealed_with: key_id.to_string(),
                provider: self.describe(),
                have: format!("transit key `{}`", self.key_id()),
            });
        }
        let tampered = |reason: &str| SecretsError::Tampered {
            secret: secret.to_string(),
            provider: self.describe(),
            key_id: key_id.to_string(),
            reason: reason.to_string(),
        };
        let ct = std::str::from_utf8(wrapped)
            .ok()
            .filter(|c| c.starts_with("vault:v"))
            .ok_or_else(|| tampered("the wrapped data key is not a transit ciphertext"))?;
        let body = Zeroizing::new(serde_json::json!({ "ciphertext": ct }).to_string());
        let mut data = self.call(secret, "decrypt", body).await?;
        let plain = match data.get_mut("plaintext") {
            Some(serde_json::Value::String(s)) => Zeroizing::new(std::mem::take(s)),
            _ => {
                return Err(SecretsError::Provider {
                    secret: secret.to_string(),
                    provider: self.describe(),
                    message: "the decrypt answer has no plaintext".into(),
                    source: None,
                });
            }
        };
        let bytes = Zeroizing::new(
            STANDARD
                .decode(plain.as_bytes())
                .map_err(|_| tampered("the server's plaintext is not base64"))?,
        );
        DataKey::from_slice(&bytes)
            .ok_or_else(|| tampered("the unwrapped data key is not 32 bytes long"))
    }
}
