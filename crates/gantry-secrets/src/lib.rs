//! gantry's secrets at rest: envelope encryption and the key providers behind it.
//!
//! gantry keeps secrets (the project's SSH private key, host-key pins) in a state store that a
//! team may share — PostgreSQL, etcd, SQLite, and the backups of each. This crate is what makes
//! that safe: a secret is stored only as an [`Envelope`], which anyone may read and nobody
//! without the key can open or change unnoticed. It depends on no other gantry crate and reads
//! no environment; the caller (the CLI) chooses the provider and supplies passphrases and
//! tokens.
//!
//! # Use
//! ```
//! use gantry_secrets::{Aad, Envelope, KeyFile, open, rewrap, seal};
//! # let dir = tempfile::tempdir().unwrap();
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let key = KeyFile::create(dir.path().join("secrets.key"))?;
//! let name = Aad::name("ssh/project-key").with_context(b"world-1234");
//! let envelope = seal(&key, name, b"-----BEGIN OPENSSH PRIVATE KEY-----").await?;
//! let stored: String = envelope.encode(); // what goes into the store
//!
//! let read = Envelope::decode("ssh/project-key", &stored)?;
//! let plain = open(&[&key], name, &read).await?;
//! assert_eq!(plain.expose(), b"-----BEGIN OPENSSH PRIVATE KEY-----");
//!
//! // Rotation: the data key moves to the new key; the ciphertext stays.
//! let new_key = KeyFile::create(dir.path().join("new.key"))?;
//! let rotated = rewrap("ssh/project-key", &read, &[&key], &new_key).await?;
//! assert!(rotated.is_wrapped_by(&new_key));
//! # Ok::<(), gantry_secrets::SecretsError>(())
//! # }).unwrap();
//! ```
//!
//! # How a secret is sealed
//! 1. A fresh 256-bit data key and a random 96-bit nonce are drawn for every secret, every
//!    time it is sealed.
//! 2. The secret is encrypted with AES-256-GCM under the data key, with associated data
//!    `"gantry-secrets/data/v1" || len64(name) || name || len64(context) || context`: the
//!    secret's name and the caller's context are authenticated but not stored, so an envelope
//!    copied to another secret's name (or another store's context) does not open.
//! 3. The data key is wrapped by a [`KeyProvider`]: AES-256-GCM under a key file's key or a
//!    passphrase-derived key (associated data: the provider kind and key id), or the transit
//!    engine of an OpenBao/Vault server.
//! 4. The envelope records the format version, the provider kind and the key id that wrapped
//!    the data key. Rotation ([`rewrap`]) unwraps the data key with the old provider and wraps
//!    it with the new one; the ciphertext is not touched.
//!
//! # The serialised form (format version 1)
//! One line of compact JSON, ASCII only, fields in this order:
//! ```json
//! {"v":1,"provider":"keyfile","key_id":"kf-3f0c5e1a9b2d4c77","wrapped_key":"…","nonce":"…","ciphertext":"…","check":"…"}
//! ```
//! - `v`: the format version (1). A reader refuses versions it does not know.
//! - `provider`: `keyfile`, `passphrase` or `openbao`.
//! - `key_id`: which key wrapped the data key. `keyfile`: `kf-` and 16 hex digits of
//!   SHA-256("gantry-secrets/keyfile-id/v1" || key). `passphrase`:
//!   `argon2id$v=19$m=KIB,t=PASSES,p=LANES$SALT` (salt in base64 without padding: the opener
//!   finds the salt and the Argon2id parameters here). `openbao`: `MOUNT/KEY`.
//! - `wrapped_key`, `nonce`, `ciphertext`: standard base64 with padding. `wrapped_key` is
//!   `nonce(12) || AES-256-GCM(data key)(32) || tag(16)` for `keyfile`, the same preceded by an
//!   8-byte check value of the derived key for `passphrase`, and the server's `vault:vN:…`
//!   text for `openbao`. `ciphertext` ends with the 16-byte GCM tag.
//! - `check`: base64 of the first 8 bytes of SHA-256 over a label, `v` and every other field
//!   (length-prefixed). It is not a MAC (anyone can recompute it): it turns accidental
//!   corruption anywhere — a flipped bit in the provider name or the key id, which would
//!   otherwise read as "unknown provider" or "wrong key" — into the tamper error. Deliberate
//!   changes are caught by GCM's tags: the wrapped key's (bound to kind and key id) and the
//!   ciphertext's.
//!
//! JSON because every store gantry writes to keeps text well (a PostgreSQL `text`/`jsonb`
//! column, an etcd value, a SQLite `TEXT`, a backup an operator may inspect), and the envelope
//! header can be read with `jq` during an incident. About 200 bytes plus 4/3 of the secret.
//!
//! # Threat model
//! Protected: someone who reads the store, a dump, a backup or the network path to the store
//! learns neither secrets nor data keys; someone who can write there cannot make gantry accept
//! a changed secret, swap two secrets or replay one secret under another name — opening fails
//! with [`SecretsError::Tampered`] and returns no bytes. A wrong key is reported as such
//! ([`SecretsError::WrongKey`]), never as garbage plaintext.
//!
//! Not protected: someone who holds the provider's key (the key file, the passphrase, a token
//! with `decrypt` on the transit key) can open everything; someone with write access can delete
//! secrets or put back an older envelope of the same secret (rollback) — the store's access
//! control and its backups are the defence there; and a process that has opened a secret holds
//! it in memory. Plaintexts and keys are zeroized when their holders drop ([`SecretBytes`],
//! [`DataKey`], [`SecretString`]) and no `Debug` or error prints them, but copies a caller
//! makes are the caller's.
//!
//! # Providers
//! See [`provider`]: [`KeyFile`] (`keyfile:PATH`), [`Passphrase`] (`passphrase`, Argon2id),
//! [`OpenBaoTransit`] (`openbao://transit/KEY`). `awskms://KEY` parses here and is built by
//! gantry-secrets-awskms (the AWS SDK belongs in a crate of its own), which a caller plugs in
//! through [`ProviderInputs::external`] ([`ExternalKeyProviders`]).

mod envelope;
mod error;
pub mod provider;
mod secret;

pub use envelope::{Aad, Envelope, FORMAT_VERSION, open, rewrap, seal};
pub use error::SecretsError;
pub use provider::{
    Argon2Params, ExternalKeyProviders, KeyFile, KeyProvider, KeyProviderSpec, OpenBaoTransit,
    Passphrase, ProviderInputs, WrappedKey,
};
pub use secret::{DataKey, KEY_LEN, SecretBytes, SecretString};
