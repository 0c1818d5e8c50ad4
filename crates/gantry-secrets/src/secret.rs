//! Types that hold key material or plaintext: zeroized when dropped, and never printed (their
//! `Debug` says only how long they are), so a secret cannot leak through a log line, an error or
//! a `{:?}` by accident.

use std::fmt;

use rand::RngCore as _;
use zeroize::{Zeroize, Zeroizing};

/// Length of every AES-256 key this crate handles (data keys, key files, derived keys).
pub const KEY_LEN: usize = 32;

/// A 256-bit AES key: a secret's data key, a key file's key or a key derived from a passphrase.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    /// A fresh key from the operating system's CSPRNG (through `rand`'s thread generator, which
    /// is seeded and periodically reseeded from it).
    pub fn generate() -> DataKey {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(k.as_mut());
        DataKey(k)
    }

    /// A key from exactly [`KEY_LEN`] bytes; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<DataKey> {
        let arr: [u8; KEY_LEN] = bytes.try_into().ok()?;
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        k.copy_from_slice(&arr);
        // `arr` is a copy on the stack: wipe it too.
        let mut arr = arr;
        arr.zeroize();
        Some(DataKey(k))
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// A secret's plaintext, as [`open`](crate::open) returns it.
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(v: Vec<u8>) -> SecretBytes {
        SecretBytes::new(v)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<redacted, {} bytes>)", self.0.len())
    }
}

/// A passphrase or an API token: zeroized on drop, never printed.
#[derive(Clone)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(s: impl Into<String>) -> SecretString {
        SecretString(Zeroizing::new(s.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> SecretString {
        SecretString::new(s)
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> SecretString {
        SecretString::new(s)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}
