//! gantry-secrets' tests: envelopes with every provider, tampering, wrong keys, rotation, and
//! the OpenBao transit provider against a real dev server (`scripts/services.sh start openbao`,
//! one per test binary).

mod envelope;
mod format;
mod openbao;
mod passphrase;
mod spec;

use gantry_secrets::{Envelope, KeyFile, SecretsError};

/// A fresh key file in `dir`.
pub fn keyfile(dir: &tempfile::TempDir, name: &str) -> KeyFile {
    KeyFile::create(dir.path().join(name)).expect("create key file")
}

/// A plaintext that looks like what gantry stores: an OpenSSH private key (not a real one).
pub fn private_key_like() -> Vec<u8> {
    let mut s = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for i in 0..6 {
        s.push_str(&format!(
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW{i:04}\n"
        ));
    }
    s.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    s.into_bytes()
}

/// Asserts that neither `plain` nor its base64 (any alignment, padded or not, standard or URL
/// alphabet) appears in `text`.
pub fn assert_absent(plain: &[u8], text: &str, what: &str) {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    assert!(
        !text.contains(&*String::from_utf8_lossy(plain)),
        "{what} contains the plaintext"
    );
    for shift in 0..3 {
        for enc in [
            STANDARD.encode(&plain[shift..]),
            URL_SAFE_NO_PAD.encode(&plain[shift..]),
        ] {
            // Skip the first 4 characters: at a shift they depend on the bytes before.
            let needle = &enc[4..40];
            assert!(
                !text.contains(needle),
                "{what} contains the plaintext's base64 ({needle})"
            );
        }
    }
}

/// The error of `r`, which must be an error.
pub fn err<T: std::fmt::Debug>(r: Result<T, SecretsError>) -> SecretsError {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

/// Round trip through the serialised form.
pub fn reencode(e: &Envelope, name: &str) -> Envelope {
    Envelope::decode(name, e.encode()).expect("decode what was encoded")
}
