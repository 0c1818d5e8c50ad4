//! `awskms://KEY`: AWS KMS wraps each secret's data key, so the key-encryption key never leaves
//! KMS, access is an IAM policy (`kms:Encrypt` and `kms:Decrypt` on the key), and rotation and
//! audit (CloudTrail) are AWS's.
//!
//! It is a crate of its own so that only the binaries that want it build the AWS SDK; it plugs
//! into gantry-secrets through [`AwsKmsProviders`], an
//! [`ExternalKeyProviders`] that a caller puts in
//! [`ProviderInputs::external`](gantry_secrets::ProviderInputs): then
//! `KeyProviderSpec::parse("awskms://alias/gantry")?.build(&inputs)` builds an [`AwsKms`].
//!
//! - **Key id**: the key as given — a key id, a key ARN, an alias (`alias/NAME`) or an alias ARN.
//!   Envelopes record it as given, and an envelope is opened only with the same text (another
//!   alias of the same key is a wrong key to gantry, as another key file would be).
//! - **Calls**: `Encrypt` of the 32-byte data key with an encryption context
//!   (`gantry` = `secrets/data-key/v1`, so a KMS ciphertext made for something else does not
//!   open here), `Decrypt` naming the key (KMS refuses a ciphertext of another key). The
//!   wrapped key in the envelope is KMS's ciphertext blob as it is.
//! - **Credentials and region**: the standard AWS chain (environment, profile, SSO cache, web
//!   identity, container and instance roles), built on first use. The region comes from
//!   [`AwsKmsConfig::region`], else from the key's ARN, else from the chain (`AWS_REGION`,
//!   the profile). The endpoint can be overridden for an emulator ([`AwsKmsConfig::endpoint`],
//!   or the SDK's own `AWS_ENDPOINT_URL`).
//! - **Errors** name the secret, the provider (`awskms://KEY`) and the key: a key KMS does not
//!   know, access denied, no credentials, a ciphertext of another key (wrong key) or one that
//!   does not authenticate (tampered). None carries key material or credentials.
//!
//! The data key passes through the SDK's request and response buffers, which this crate cannot
//! wipe; the copies it holds itself are zeroized.

use std::fmt;
use std::sync::Arc;

use aws_sdk_kms::error::{DisplayErrorContext, SdkError};
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::operation::encrypt::EncryptError;
use aws_sdk_kms::primitives::Blob;
use gantry_secrets::{
    DataKey, ExternalKeyProviders, KeyProvider, KeyProviderSpec, SecretString, SecretsError,
    WrappedKey,
};
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

/// The provider kind written in envelopes.
pub const KIND: &str = "awskms";

/// The encryption context every data key is wrapped with.
const CONTEXT: (&str, &str) = ("gantry", "secrets/data-key/v1");

/// Where and as whom to reach KMS; everything left `None` comes from the standard AWS chain.
#[derive(Clone, Default)]
pub struct AwsKmsConfig {
    /// The region of the KMS endpoint (default: the key ARN's, else the chain's).
    pub region: Option<String>,
    /// Another endpoint (an emulator such as moto, or a VPC endpoint).
    pub endpoint: Option<String>,
    /// An access key id and secret instead of the chain (tests).
    pub static_credentials: Option<(String, SecretString)>,
}

impl fmt::Debug for AwsKmsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsConfig")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field(
                "static_credentials",
                &self.static_credentials.as_ref().map(|(id, _)| id),
            )
            .finish()
    }
}

/// The [`ExternalKeyProviders`] that builds `awskms://` providers with one configuration.
#[derive(Debug, Clone, Default)]
pub struct AwsKmsProviders {
    pub config: AwsKmsConfig,
}

impl ExternalKeyProviders for AwsKmsProviders {
    fn build(&self, spec: &KeyProviderSpec) -> Option<Result<Arc<dyn KeyProvider>, SecretsError>> {
        match spec {
            KeyProviderSpec::AwsKms { key } => Some(
                AwsKms::new(key, self.config.clone()).map(|p| Arc::new(p) as Arc<dyn KeyProvider>),
            ),
            _ => None,
        }
    }
}

/// A KMS key that wraps data keys.
pub struct AwsKms {
    key: String,
    config: AwsKmsConfig,
    client: OnceCell<aws_sdk_kms::Client>,
}

impl fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKms")
            .field("key", &self.key)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AwsKms {
    /// The provider for `key` (a key id, key ARN, `alias/NAME` or alias ARN). Nothing is
    /// contacted until the first wrap or unwrap.
    pub fn new(key: &str, config: AwsKmsConfig) -> Result<AwsKms, SecretsError> {
        if key.trim().is_empty() || key.chars().any(char::is_whitespace) {
            return Err(SecretsError::BadSpec {
                spec: format!("awskms://{key}"),
                reason: "expected a key id, a key ARN or alias/NAME, without spaces".into(),
            });
        }
        Ok(AwsKms {
            key: key.to_string(),
            config,
            client: OnceCell::new(),
        })
    }

    /// The region of an ARN key (`arn:PARTITION:kms:REGION:ACCOUNT:…`).
    fn arn_region(&self) -> Option<&str> {
        let mut parts = self.key.strip_prefix("arn:")?.split(':');
        let (_partition, service, region) = (parts.next()?, parts.next()?, parts.next()?);
        (service == "kms" && !region.is_empty()).then_some(region)
    }

    async fn client(&self) -> &aws_sdk_kms::Client {
        self.client
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                let region = self
                    .config
                    .region
                    .clone()
                    .or_else(|| self.arn_region().map(str::to_string));
                if let Some(region) = region {
                    loader = loader.region(aws_config::Region::new(region));
                }
                if let Some(ep) = &self.config.endpoint {
                    loader = loader.endpoint_url(ep);
                }
                if let Some((id, secret)) = &self.config.static_credentials {
                    loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                        id,
                        secret.expose(),
                        None,
                        None,
                        "gantry-static",
                    ));
                }
                aws_sdk_kms::Client::new(&loader.load().await)
            })
            .await
    }

    fn provider_error(&self, secret: &str, message: String) -> SecretsError {
        SecretsError::Provider {
            secret: secret.to_string(),
            provider: self.describe(),
            message,
            source: None,
        }
    }

    fn tampered(&self, secret: &str, key_id: &str, reason: &str) -> SecretsError {
        SecretsError::Tampered {
            secret: secret.to_string(),
            provider: self.describe(),
            key_id: key_id.to_string(),
            reason: reason.to_string(),
        }
    }

    fn wrong_key(&self, secret: &str, sealed_with: &str) -> SecretsError {
        SecretsError::WrongKey {
            secret: secret.to_string(),
            kind: KIND.into(),
            sealed_with: sealed_with.to_string(),
            provider: self.describe(),
            have: format!("KMS key `{}`", self.key),
        }
    }

    /// What a failed call means to a person: the cases that need a different fix are told
    /// apart; the SDK's own text (without credentials) follows.
    fn sdk_error<E, R>(&self, secret: &str, op: &str, e: &SdkError<E, R>) -> SecretsError
    where
        E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        let key = &self.key;
        // A service error as KMS's code and message (its Display would dump the whole HTTP
        // response); anything else (no connection, no credentials) with its causes.
        let detail = match e.as_service_error() {
            Some(s) => match (s.code(), s.message()) {
                (Some(code), Some(m)) => format!("{code}: {m}"),
                (Some(code), None) => code.to_string(),
                _ => DisplayErrorContext(e).to_string(),
            },
            None => DisplayErrorContext(e).to_string(),
        };
        let message = match e.as_service_error().and_then(|s| s.code()) {
            Some("NotFoundException") => {
                format!("KMS key `{key}` does not exist (or is not visible to these credentials)")
            }
            Some("AccessDeniedException") => {
                format!("{op} on KMS key `{key}` was denied: {detail}")
            }
            Some("DisabledException") => format!("KMS key `{key}` is disabled"),
            Some("KMSInvalidStateException") => {
                format!("KMS key `{key}` cannot be used in its state (pending deletion?): {detail}")
            }
            _ if matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)) => {
                format!("KMS did not answer {op} for key `{key}`: {detail}")
            }
            _ if detail.contains("credentials") => format!(
                "no usable AWS credentials for {op} on KMS key `{key}` (set AWS_PROFILE or \
                 AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or use a role): {detail}"
            ),
            _ if detail.contains("region") => format!(
                "no AWS region for KMS key `{key}` (set AWS_REGION, or give the key's ARN): \
                 {detail}"
            ),
            _ => format!("{op} with KMS key `{key}` failed: {detail}"),
        };
        self.provider_error(secret, message)
    }
}

#[async_trait::async_trait]
impl KeyProvider for AwsKms {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn key_id(&self) -> String {
        self.key.clone()
    }

    fn describe(&self) -> String {
        format!("awskms://{}", self.key)
    }

    async fn wrap(&self, secret: &str, key: &DataKey) -> Result<WrappedKey, SecretsError> {
        let out = self
            .client()
            .await
            .encrypt()
            .key_id(&self.key)
            .plaintext(Blob::new(key.as_bytes().to_vec()))
            .encryption_context(CONTEXT.0, CONTEXT.1)
            .send()
            .await
            .map_err(|e: SdkError<EncryptError, _>| self.sdk_error(secret, "Encrypt", &e))?;
        let blob = out.ciphertext_blob.ok_or_else(|| {
            self.provider_error(secret, "KMS answered Encrypt without a ciphertext".into())
        })?;
        Ok(WrappedKey {
            key_id: self.key.clone(),
            bytes: blob.into_inner(),
        })
    }

    async fn unwrap(
        &self,
        secret: &str,
        key_id: &str,
        wrapped: &[u8],
    ) -> Result<DataKey, SecretsError> {
        if key_id != self.key {
            return Err(self.wrong_key(secret, key_id));
        }
        let out = self
            .client()
            .await
            .decrypt()
            .key_id(&self.key)
            .ciphertext_blob(Blob::new(wrapped.to_vec()))
            .encryption_context(CONTEXT.0, CONTEXT.1)
            .send()
            .await
            .map_err(|e: SdkError<DecryptError, _>| match e.as_service_error() {
                Some(DecryptError::IncorrectKeyException(_)) => self.wrong_key(secret, key_id),
                Some(DecryptError::InvalidCiphertextException(_)) => self.tampered(
                    secret,
                    key_id,
                    "KMS does not accept the wrapped data key as its ciphertext",
                ),
                _ => self.sdk_error(secret, "Decrypt", &e),
            })?;
        let plain = Zeroizing::new(
            out.plaintext
                .ok_or_else(|| {
                    self.provider_error(secret, "KMS answered Decrypt without a plaintext".into())
                })?
                .into_inner(),
        );
        DataKey::from_slice(&plain)
            .ok_or_else(|| self.tampered(secret, key_id, "the unwrapped data key is not 32 bytes"))
    }
}
