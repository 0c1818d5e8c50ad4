//! The format is a promise: envelopes written by this version, kept in stores and backups,
//! must open with every later gantry. These were sealed once (by format version 1) and are
//! checked in; a change that breaks them breaks every user's stored secrets.

use std::os::unix::fs::PermissionsExt as _;

use gantry_secrets::{
    Aad, Argon2Params, Envelope, KeyFile, Passphrase, SecretString, SecretsError, open,
};

use crate::err;

const PLAIN: &[u8] = b"gantry envelope format v1 fixture";

/// Sealed for `ssh/project-key`, context `world-1`, by the key file holding bytes 0..32.
const KEYFILE_V1: &str = r#"{"v":1,"provider":"keyfile","key_id":"kf-e087cfc4c7cd93e4","wrapped_key":"pARYcV847wESOzialMJBfaqG8htrt/ywwvIOk5MkD6WJw/RPIQ3JrrqBgbVH/xwqFg/84zvwE+Qanu+o","nonce":"HLlOGLbnNS0yjG2k","ciphertext":"68uINgfUOtDt/JohoqAkujwIOyjjE17JM+2uwQdOHy6PFCj/VIYSV3cfWReWmGjIaQ==","check":"oQIkeKMUQOo="}"#;

/// Sealed for `pins/web-1` by the passphrase `fixture passphrase` (m=1024, t=1, p=1, salt 7s).
const PASSPHRASE_V1: &str = r#"{"v":1,"provider":"passphrase","key_id":"argon2id$v=19$m=1024,t=1,p=1$BwcHBwcHBwcHBwcHBwcHBw","wrapped_key":"mRruN2tVOo8/L4KCisIaPWRW/Bfnfz/YU93jkgEjq/XUIhptWiQadCb+ux21JsBfIWKB2pxd3vDy39SffzbYrk651VQ=","nonce":"HNnuyMI5GqToDM9D","ciphertext":"2rVy2b71ysimrhtdyZ7Nh/wkvTTH+9Z43DeM3NP/XQyebG8VxRKU63ZdfkqblF9tjQ==","check":"r6oPhSVgAWI="}"#;

#[tokio::test]
async fn version_1_envelopes_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixture.key");
    std::fs::write(&path, (0u8..32).collect::<Vec<_>>()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let kf = KeyFile::open(&path).unwrap();
    let env = Envelope::decode("ssh/project-key", KEYFILE_V1).unwrap();
    assert_eq!(env.key_id(), "kf-e087cfc4c7cd93e4");
    let aad = Aad::name("ssh/project-key").with_context(b"world-1");
    assert_eq!(open(&[&kf], aad, &env).await.unwrap().expose(), PLAIN);
    // Re-encoding gives the very same text: the form is canonical.
    assert_eq!(env.encode(), KEYFILE_V1);

    // Another process, its own random salt and default parameters: the envelope's win.
    let pp = Passphrase::new(SecretString::new("fixture passphrase")).unwrap();
    let env = Envelope::decode("pins/web-1", PASSPHRASE_V1).unwrap();
    assert_eq!(
        open(&[&pp], Aad::name("pins/web-1"), &env)
            .await
            .unwrap()
            .expose(),
        PLAIN
    );
    let other = Passphrase::with_params(
        SecretString::new("not it"),
        Argon2Params {
            m_kib: 1024,
            t: 1,
            p: 1,
        },
        vec![1; 16],
    )
    .unwrap();
    let e = err(open(&[&other], Aad::name("pins/web-1"), &env).await);
    assert!(matches!(e, SecretsError::WrongKey { .. }), "{e}");
}

#[test]
fn an_unknown_version_with_a_valid_check_says_upgrade() {
    // What a future gantry would write: version 2 (check value recomputed for it).
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use sha2::{Digest as _, Sha256};
    let mut v: serde_json::Value = serde_json::from_str(KEYFILE_V1).unwrap();
    v["v"] = 2.into();
    let field = |k: &str| STANDARD.decode(v[k].as_str().unwrap()).unwrap();
    let mut h = Sha256::new();
    h.update(b"gantry-secrets/envelope-check");
    h.update(2u64.to_be_bytes());
    for part in [
        v["provider"].as_str().unwrap().as_bytes().to_vec(),
        v["key_id"].as_str().unwrap().as_bytes().to_vec(),
        field("wrapped_key"),
        field("nonce"),
        field("ciphertext"),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(&part);
    }
    v["check"] = STANDARD.encode(&h.finalize()[..8]).into();
    let e = err(Envelope::decode("ssh/project-key", v.to_string()));
    assert!(
        matches!(e, SecretsError::UnsupportedVersion { version: 2, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("upgrade gantry"), "{e}");
}
