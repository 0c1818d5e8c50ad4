//! The passphrase provider: round trips, a wrong passphrase, parameters that change, bounds on
//! what an envelope may ask for, and the derivation cache.

use std::sync::Arc;

use gantry_secrets::{
    Aad, Argon2Params, KeyProvider, Passphrase, SecretString, SecretsError, open, rewrap, seal,
};

use crate::{err, keyfile, reencode};

/// Cheap parameters: the tests are about the logic, not the cost.
const CHEAP: Argon2Params = Argon2Params {
    m_kib: 1024,
    t: 1,
    p: 1,
};

fn cheap(pass: &str, salt: u8) -> Passphrase {
    Passphrase::with_params(SecretString::new(pass), CHEAP, vec![salt; 16]).unwrap()
}

#[tokio::test]
async fn passphrase_round_trip_with_default_parameters() {
    let p = Passphrase::new(SecretString::new("correct horse battery staple")).unwrap();
    assert!(
        p.key_id().starts_with("argon2id$v=19$m=65536,t=3,p=1$"),
        "{}",
        p.key_id()
    );
    let env = seal(&p, Aad::name("s"), b"value").await.unwrap();
    assert_eq!(env.provider_kind(), "passphrase");
    assert_eq!(env.key_id(), p.key_id());
    // Another process: the same passphrase, its own salt; the salt comes from the envelope.
    let other = Passphrase::new(SecretString::new("correct horse battery staple")).unwrap();
    assert_ne!(other.key_id(), p.key_id());
    let env = reencode(&env, "s");
    let got = open(&[&other], Aad::name("s"), &env).await.unwrap();
    assert_eq!(got.expose(), b"value");
}

#[tokio::test]
async fn a_wrong_passphrase_is_wrong_key() {
    let env = seal(&cheap("right", 1), Aad::name("ssh/project-key"), b"v")
        .await
        .unwrap();
    let e = err(open(&[&cheap("wrong", 1)], Aad::name("ssh/project-key"), &env).await);
    assert!(matches!(e, SecretsError::WrongKey { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("wrong key") && msg.contains("passphrase") && msg.contains("ssh/project-key"),
        "{msg}"
    );
    assert!(!msg.contains("right") && !msg.contains("wrong,"), "{msg}");
}

#[tokio::test]
async fn parameters_can_change_and_old_envelopes_still_open() {
    let old = cheap("pw", 1);
    let env = seal(&old, Aad::name("s"), b"v").await.unwrap();
    let stronger = Passphrase::with_params(
        SecretString::new("pw"),
        Argon2Params {
            m_kib: 2048,
            t: 2,
            p: 2,
        },
        vec![9; 16],
    )
    .unwrap();
    assert_eq!(
        open(&[&stronger], Aad::name("s"), &env)
            .await
            .unwrap()
            .expose(),
        b"v"
    );
    // Rotation onto the new parameters: the envelope now carries them.
    let new = rewrap("s", &env, &[&stronger], &stronger).await.unwrap();
    assert!(new.key_id().contains("m=2048,t=2,p=2"), "{}", new.key_id());
    assert!(new.is_wrapped_by(&stronger));
    assert_eq!(
        open(&[&cheap("pw", 5)], Aad::name("s"), &new)
            .await
            .unwrap()
            .expose(),
        b"v"
    );
}

#[tokio::test]
async fn a_key_id_asking_for_absurd_parameters_is_refused_without_deriving() {
    let p = cheap("pw", 1);
    for key_id in [
        "argon2id$v=19$m=99999999,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA",
        "argon2id$v=19$m=1024,t=1000,p=1$AAAAAAAAAAAAAAAAAAAAAA",
        "argon2id$v=19$m=1024,t=1,p=1$AA",
        "argon2id$v=19$m=1024,t=1$AAAAAAAAAAAAAAAAAAAAAA",
        "argon2id$v=19$m=1024,t=1,p=1,x=2$AAAAAAAAAAAAAAAAAAAAAA",
        "argon2id$v=18$m=1024,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let e = err(p.unwrap("s", key_id, &[0u8; 68]).await);
        assert!(matches!(e, SecretsError::Tampered { .. }), "{key_id}: {e}");
    }
    assert_eq!(p.derivations(), 0);
}

#[tokio::test]
async fn derivation_runs_once_per_salt_and_parameters() {
    let sealer = cheap("pw", 1);
    let mut envs = Vec::new();
    for i in 0..100 {
        let name = format!("pins/node-{i}");
        envs.push((
            name.clone(),
            seal(&sealer, Aad::name(&name), b"pin").await.unwrap(),
        ));
    }
    assert_eq!(
        sealer.derivations(),
        1,
        "sealing 100 secrets derived more than once"
    );

    // Another process opens all of them, concurrently: one derivation (the envelopes' salt;
    // its own salt is never needed to open).
    let opener = Arc::new(cheap("pw", 2));
    let mut tasks = Vec::new();
    for (name, env) in envs.clone() {
        let opener = opener.clone();
        tasks.push(tokio::spawn(async move {
            open(&[&*opener], Aad::name(&name), &env)
                .await
                .map(|s| s.expose().to_vec())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), b"pin");
    }
    assert_eq!(opener.derivations(), 1);

    // Sealing with the opener derives its own salt once more, and only once.
    for i in 0..10 {
        seal(&*opener, Aad::name(&format!("x{i}")), b"v")
            .await
            .unwrap();
    }
    assert_eq!(opener.derivations(), 2);

    // Envelopes sealed under a key file do not make it derive at all.
    let dir = tempfile::tempdir().unwrap();
    let kf = keyfile(&dir, "k");
    let env = seal(&kf, Aad::name("k"), b"v").await.unwrap();
    assert!(open(&[&*opener, &kf], Aad::name("k"), &env).await.is_ok());
    assert_eq!(opener.derivations(), 2);
}

#[tokio::test]
async fn an_empty_passphrase_or_a_short_salt_is_refused() {
    let e = err(Passphrase::new(SecretString::new("")));
    assert!(e.to_string().contains("empty"), "{e}");
    let e = err(Passphrase::with_params(
        SecretString::new("x"),
        CHEAP,
        vec![1; 4],
    ));
    assert!(e.to_string().contains("salt"), "{e}");
}
