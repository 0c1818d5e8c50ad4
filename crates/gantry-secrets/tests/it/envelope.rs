//! Envelopes under the key file provider: round trips, tampering anywhere, wrong keys, moved
//! envelopes, rotation, and what the serialised form and Debug output never show.

use std::os::unix::fs::PermissionsExt as _;

use gantry_secrets::{
    Aad, Envelope, KeyFile, KeyProvider, Passphrase, SecretString, SecretsError, open, rewrap, seal,
};

use crate::{assert_absent, err, keyfile, private_key_like, reencode};

#[tokio::test]
async fn keyfile_round_trip_of_several_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let kf = keyfile(&dir, "k");
    for plain in [
        Vec::new(),
        b"x".to_vec(),
        private_key_like(),
        vec![7u8; 100_000],
    ] {
        let env = seal(&kf, Aad::name("ssh/project-key"), &plain)
            .await
            .unwrap();
        assert_eq!(env.provider_kind(), "keyfile");
        assert_eq!(env.key_id(), kf.key_id());
        let env = reencode(&env, "ssh/project-key");
        let got = open(&[&kf], Aad::name("ssh/project-key"), &env)
            .await
            .unwrap();
        assert_eq!(got.expose(), &plain[..]);
    }
    // A key file opened again (another process, another path) has the same key id and opens it.
    let copy = dir.path().join("copy");
    std::fs::copy(kf.path(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    let again = KeyFile::open(&copy).unwrap();
    assert_eq!(again.key_id(), kf.key_id());
    let env = seal(&kf, Aad::name("a"), b"hello").await.unwrap();
    assert_eq!(
        open(&[&again], Aad::name("a"), &env)
            .await
            .unwrap()
            .expose(),
        b"hello"
    );
}

#[tokio::test]
async fn fresh_data_key_and_nonce_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let kf = keyfile(&dir, "k");
    let a = seal(&kf, Aad::name("s"), b"same").await.unwrap().encode();
    let b = seal(&kf, Aad::name("s"), b"same").await.unwrap().encode();
    assert_ne!(a, b, "two seals of the same secret must differ");
}

#[tokio::test]
async fn a_flipped_bit_anywhere_is_the_tamper_error() {
    let dir = tempfile::tempdir().unwrap();
    let kf = keyfile(&dir, "k");
    let env = seal(&kf, Aad::name("pins"), b"host-key pins")
        .await
        .unwrap();
    let text = env.encode().into_bytes();
    let mut tried = 0;
    for i in 0..text.len() {
        for bit in 0..8 {
            let mut bad = text.clone();
            bad[i] ^= 1 << bit;
            tried += 1;
            // Whatever layer notices (the JSON, base64, the check value, GCM), it is the tamper
            // error, it names the secret, and no bytes come back.
            let e = match Envelope::decode("pins", &bad) {
                Err(e) => e,
                Ok(env) => err(open(&[&kf], Aad::name("pins"), &env).await),
            };
            assert!(
                matches!(e, SecretsError::Tampered { .. }),
                "bit {bit} of byte {i} ({:?}): {e}",
                text[i] as char
            );
            assert!(e.to_string().contains("secret `pins`"), "{e}");
        }
    }
    assert_eq!(tried, text.len() * 8);
}

#[tokio::test]
async fn a_changed_ciphertext_with_a_recomputed_check_is_still_refused() {
    // Deliberate tampering: the attacker rewrites the JSON with a valid check value. GCM's tag
    // is what refuses it.
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use sha2::{Digest as _, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let kf = keyfile(&dir, "k");
    let env = seal(&kf, Aad::name("s"), b"attack at dawn").await.unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&env.encode()).unwrap();
    let mut ct = STANDARD.decode(v["ciphertext"].as_str().unwrap()).unwrap();
    ct[0] ^= 1;
    let field = |k: &str| STANDARD.decode(v[k].as_str().unwrap()).unwrap();
    let mut h = Sha256::new();
    h.update(b"gantry-secrets/envelope-check");
    h.update(1u64.to_be_bytes());
    for part in [
        v["provider"].as_str().unwrap().as_bytes().to_vec(),
        v["key_id"].as_str().unwrap().as_bytes().to_vec(),
        field("wrapped_key"),
        field("nonce"),
        ct.clone(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(&part);
    }
    v["ciphertext"] = STANDARD.encode(&ct).into();
    v["check"] = STANDARD.encode(&h.finalize()[..8]).into();
    let forged = Envelope::decode("s", v.to_string()).expect("the check value is valid");
    let e = err(open(&[&kf], Aad::name("s"), &forged).await);
    assert!(matches!(e, SecretsError::Tampered { .. }), "{e}");
}

#[tokio::test]
async fn a_wrong_key_file_is_wrong_key_naming_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let a = keyfile(&dir, "a.key");
    let b = keyfile(&dir, "b.key");
    let env = seal(&a, Aad::name("ssh/project-key"), b"secret")
        .await
        .unwrap();
    let e = err(open(&[&b], Aad::name("ssh/project-key"), &env).await);
    assert!(matches!(e, SecretsError::WrongKey { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("wrong key"), "{msg}");
    assert!(msg.contains("secret `ssh/project-key`"), "{msg}");
    assert!(
        msg.contains(&format!("keyfile:{}", b.path().display())),
        "{msg}"
    );
    assert!(
        msg.contains(&a.key_id()) && msg.contains(&b.key_id()),
        "{msg}"
    );
    // With both configured, the right one is chosen.
    let got = open(&[&b, &a], Aad::name("ssh/project-key"), &env)
        .await
        .unwrap();
    assert_eq!(got.expose(), b"secret");
}

#[tokio::test]
async fn an_envelope_moved_to_another_name_or_context_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let kf = keyfile(&dir, "k");
    let env = seal(
        &kf,
        Aad::name("pins/web-1").with_context(b"store-1"),
        b"pin",
    )
    .await
    .unwrap();
    let e = err(open(
        &[&kf],
        Aad::name("pins/web-2").with_context(b"store-1"),
        &env,
    )
    .await);
    assert!(matches!(e, SecretsError::Tampered { .. }), "{e}");
    assert!(e.to_string().contains("secret `pins/web-2`"), "{e}");
    assert!(e.to_string().contains("another secret name"), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("provider keyfile:{}", kf.path().display())),
        "{e}"
    );
    let e = err(open(
        &[&kf],
        Aad::name("pins/web-1").with_context(b"store-2"),
        &env,
    )
    .await);
    assert!(matches!(e, SecretsError::Tampered { .. }), "{e}");
    let ok = open(
        &[&kf],
        Aad::name("pins/web-1").with_context(b"store-1"),
        &env,
    )
    .await
    .unwrap();
    assert_eq!(ok.expose(), b"pin");
}

#[tokio::test]
async fn rewrap_from_key_file_a_to_b() {
    let dir = tempfile::tempdir().unwrap();
    let a = keyfile(&dir, "a.key");
    let b = keyfile(&dir, "b.key");
    let plain = private_key_like();
    let old = seal(&a, Aad::name("ssh/project-key"), &plain)
        .await
        .unwrap();
    let new = rewrap("ssh/project-key", &old, &[&a], &b).await.unwrap();
    assert_eq!(new.key_id(), b.key_id());
    assert!(new.is_wrapped_by(&b) && !new.is_wrapped_by(&a));
    let new = reencode(&new, "ssh/project-key");
    let got = open(&[&b], Aad::name("ssh/project-key"), &new)
        .await
        .unwrap();
    assert_eq!(got.expose(), &plain[..]);
    let e = err(open(&[&a], Aad::name("ssh/project-key"), &new).await);
    assert!(matches!(e, SecretsError::WrongKey { .. }), "{e}");
    // Re-wrapping needs the old key: from the wrong provider it is the same wrong-key error.
    let e = err(rewrap("ssh/project-key", &old, &[&b], &b).await);
    assert!(matches!(e, SecretsError::WrongKey { .. }), "{e}");
}

#[tokio::test]
async fn an_envelope_of_a_provider_not_configured_is_unknown_provider() {
    let dir = tempfile::tempdir().unwrap();
    let kf = keyfile(&dir, "k");
    let env = seal(&kf, Aad::name("s"), b"x").await.unwrap();
    let pass = Passphrase::new(SecretString::new("correct horse")).unwrap();
    let e = err(open(&[&pass], Aad::name("s"), &env).await);
    assert!(matches!(e, SecretsError::UnknownProvider { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("keyfile") && msg.contains(env.key_id()) && msg.contains("passphrase"),
        "{msg}"
    );
    let e = err(open(&[], Aad::name("s"), &env).await);
    assert!(e.to_string().contains("configured: none"), "{e}");
}

#[tokio::test]
async fn key_files_are_private_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/secrets.key");
    let kf = KeyFile::create(&path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);
    let before = std::fs::read(&path).unwrap();
    let e = err(KeyFile::create(&path));
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(
        KeyFile::open_or_create(&path).unwrap().key_id(),
        kf.key_id()
    );

    for mode in [0o640, 0o604, 0o660, 0o644] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = err(KeyFile::open(&path));
        assert!(matches!(e, SecretsError::KeyFileTooOpen { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("{mode:04o}")) && msg.contains("chmod 600"),
            "{msg}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    KeyFile::open(&path).expect("0400 is private enough");

    let short = dir.path().join("short.key");
    std::fs::write(&short, b"too short").unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = err(KeyFile::open(&short));
    assert!(e.to_string().contains("exactly 32 bytes"), "{e}");
    let e = err(KeyFile::open(dir.path().join("missing.key")));
    assert!(e.to_string().contains("cannot open"), "{e}");
}

#[tokio::test]
async fn the_plaintext_is_never_in_the_envelope_errors_or_debug() {
    let dir = tempfile::tempdir().unwrap();
    let a = keyfile(&dir, "a.key");
    let b = keyfile(&dir, "b.key");
    let plain = private_key_like();
    let env = seal(&a, Aad::name("ssh/project-key"), &plain)
        .await
        .unwrap();
    let opened = open(&[&a], Aad::name("ssh/project-key"), &env)
        .await
        .unwrap();
    let wrong = err(open(&[&b], Aad::name("ssh/project-key"), &env).await);
    let moved = err(open(&[&a], Aad::name("elsewhere"), &env).await);
    let pass = Passphrase::new(SecretString::new("hunter2 hunter2")).unwrap();
    for (what, text) in [
        ("the serialised envelope", env.encode()),
        ("the envelope's Debug", format!("{env:?}")),
        ("the opened secret's Debug", format!("{opened:?}")),
        ("the key file's Debug", format!("{a:?}")),
        ("a wrong-key error", format!("{wrong} {wrong:?}")),
        ("a tamper error", format!("{moved} {moved:?}")),
    ] {
        assert_absent(&plain, &text, what);
    }
    assert!(format!("{opened:?}").contains("redacted"));
    assert!(!format!("{pass:?}").contains("hunter2"));
    assert!(!format!("{:?}", SecretString::new("hunter2")).contains("hunter2"));
    // The key file's key is not in its Debug either.
    let key = std::fs::read(a.path()).unwrap();
    assert_absent(&key, &format!("{a:?}"), "the key file's Debug");
}
