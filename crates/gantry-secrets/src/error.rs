//! The one error type of gantry-secrets. Every message names the secret (its name, never its
//! value) and the provider and key involved, so an operator knows which key to fetch; none
//! carries key material, plaintext or a token.

use std::path::PathBuf;

/// What can go wrong sealing, opening or re-wrapping a secret, or setting up a key provider.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The envelope was sealed under another key than the configured provider holds (another
    /// key file, another passphrase, another transit key).
    #[error(
        "secret `{secret}`: wrong key: it was sealed by {kind} key `{sealed_with}`, but the configured provider {provider} holds {have}"
    )]
    WrongKey {
        secret: String,
        kind: String,
        sealed_with: String,
        provider: String,
        /// What the provider holds instead, for the message: "key `kf-…`", "another passphrase".
        have: String,
    },

    /// The envelope or its ciphertext does not authenticate: changed, corrupted, truncated, or
    /// moved from another secret's name. Nothing was decrypted.
    #[error(
        "secret `{secret}`: the envelope is tampered with or corrupted ({reason}); provider {provider}, key `{key_id}`; nothing was decrypted"
    )]
    Tampered {
        secret: String,
        provider: String,
        key_id: String,
        reason: String,
    },

    /// The envelope is in a format version this build does not know (written by a newer
    /// gantry).
    #[error(
        "secret `{secret}`: the envelope is in format version {version}, which this gantry does not know (it knows {known}); upgrade gantry"
    )]
    UnsupportedVersion {
        secret: String,
        version: u64,
        known: u64,
    },

    /// The envelope names a provider kind none of the configured providers is.
    #[error(
        "secret `{secret}`: it was sealed by a {kind} provider (key `{key_id}`), and none is configured (configured: {configured})"
    )]
    UnknownProvider {
        secret: String,
        kind: String,
        key_id: String,
        configured: String,
    },

    /// A key file is readable or writable by group or others; like OpenSSH with a private key,
    /// it is refused rather than used.
    #[error(
        "key file {} is accessible by group or others (mode {mode:04o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyFileTooOpen { path: PathBuf, mode: u32 },

    /// A key file cannot be created or read, or is not a key file.
    #[error("key file {}: {reason}", path.display())]
    KeyFile {
        path: PathBuf,
        reason: String,
        #[source]
        source: Option<std::io::Error>,
    },

    /// A key provider specification that does not parse.
    #[error("key provider `{spec}`: {reason}")]
    BadSpec { spec: String, reason: String },

    /// A provider this build does not contain.
    #[error(
        "key provider `{spec}`: {scheme} is not built into this gantry (it needs its own crate); use passphrase, keyfile:PATH or openbao://transit/KEY"
    )]
    NotBuiltIn { spec: String, scheme: String },

    /// What a provider needs from its caller (a passphrase, an address, a token) was not given.
    #[error("key provider {provider}: {what} is not set")]
    MissingInput { provider: String, what: String },

    /// The provider could not be used (a server that does not answer, refuses the token, does
    /// not know the key, or answers something unexpected).
    #[error("secret `{secret}`: key provider {provider}: {message}")]
    Provider {
        secret: String,
        provider: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// Encrypting failed (only on impossible input sizes) or a random source failed.
    #[error("secret `{secret}`: {reason}")]
    Crypto { secret: String, reason: String },
}
