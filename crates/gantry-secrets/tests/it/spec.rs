//! Key provider specifications: what parses, what does not, and what the factory builds.

use std::path::PathBuf;

use gantry_secrets::{KeyFile, KeyProviderSpec, ProviderInputs, SecretString, SecretsError};

use crate::err;

#[test]
fn specs_parse_and_print_back() {
    for (text, spec) in [
        ("passphrase", KeyProviderSpec::Passphrase),
        (
            "keyfile:/home/me/.gantry/secrets.key",
            KeyProviderSpec::KeyFile(PathBuf::from("/home/me/.gantry/secrets.key")),
        ),
        (
            "keyfile:rel.key",
            KeyProviderSpec::KeyFile(PathBuf::from("rel.key")),
        ),
        (
            "openbao://transit/gantry",
            KeyProviderSpec::OpenBao {
                mount: "transit".into(),
                key: "gantry".into(),
            },
        ),
        (
            "openbao://team/transit/gantry-prod",
            KeyProviderSpec::OpenBao {
                mount: "team/transit".into(),
                key: "gantry-prod".into(),
            },
        ),
        (
            "awskms://alias/gantry",
            KeyProviderSpec::AwsKms {
                key: "alias/gantry".into(),
            },
        ),
    ] {
        assert_eq!(KeyProviderSpec::parse(text).unwrap(), spec, "{text}");
        assert_eq!(spec.to_string(), text);
        assert_eq!(text.parse::<KeyProviderSpec>().unwrap(), spec);
    }
}

#[test]
fn bad_specs_say_what_is_wrong() {
    for (text, expect) in [
        ("", "empty"),
        (
            "gcpkms://projects/p/keys/k",
            "unknown key provider `gcpkms`",
        ),
        ("file:/tmp/k", "unknown key provider `file`"),
        ("Passphrase", "unknown key provider `Passphrase`"),
        ("keyfile:", "no path"),
        ("openbao://transit", "expected openbao://MOUNT/KEY"),
        ("openbao://transit/", "letters, digits"),
        ("openbao://transit/a b", "letters, digits"),
        ("awskms://", "no key"),
    ] {
        let e = err(KeyProviderSpec::parse(text));
        assert!(matches!(e, SecretsError::BadSpec { .. }), "{text}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(expect), "{text}: {msg}");
        assert!(msg.contains(&format!("`{text}`")), "{text}: {msg}");
    }
    let e = err(KeyProviderSpec::parse("vault://transit/k"));
    assert!(
        e.to_string()
            .contains("expected passphrase, keyfile:PATH, openbao://transit/KEY or awskms://KEY"),
        "{e}"
    );
}

#[test]
fn the_factory_builds_what_is_built_in_and_says_what_is_not() {
    let e = err(KeyProviderSpec::parse("awskms://alias/gantry")
        .unwrap()
        .build(&ProviderInputs::default()));
    assert!(matches!(e, SecretsError::NotBuiltIn { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("awskms is not built into this gantry"),
        "{e}"
    );

    let e = err(KeyProviderSpec::Passphrase.build(&ProviderInputs::default()));
    assert!(e.to_string().contains("passphrase is not set"), "{e}");
    let p = KeyProviderSpec::Passphrase
        .build(&ProviderInputs {
            passphrase: Some(SecretString::new("pw")),
            ..ProviderInputs::default()
        })
        .unwrap();
    assert_eq!(p.kind(), "passphrase");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let spec = KeyProviderSpec::KeyFile(path.clone());
    let e = err(spec.build(&ProviderInputs::default()));
    assert!(e.to_string().contains("cannot open"), "{e}");
    let kf = KeyFile::create(&path).unwrap();
    let built = spec.build(&ProviderInputs::default()).unwrap();
    assert_eq!(built.key_id(), gantry_secrets::KeyProvider::key_id(&kf));
    assert_eq!(built.describe(), format!("keyfile:{}", path.display()));

    let bao = KeyProviderSpec::parse("openbao://transit/k").unwrap();
    let e = err(bao.build(&ProviderInputs::default()));
    assert!(e.to_string().contains("VAULT_ADDR or BAO_ADDR"), "{e}");
    let e = err(bao.build(&ProviderInputs {
        openbao_addr: Some("http://127.0.0.1:1".into()),
        ..ProviderInputs::default()
    }));
    assert!(e.to_string().contains("VAULT_TOKEN or BAO_TOKEN"), "{e}");
    let e = err(bao.build(&ProviderInputs {
        openbao_addr: Some("ftp://user:pw@host".into()),
        openbao_token: Some(SecretString::new("t")),
        ..ProviderInputs::default()
    }));
    let msg = e.to_string();
    assert!(
        msg.contains("not an http") && !msg.contains(":pw@"),
        "{msg}"
    );
}

#[test]
fn server_addresses_are_shown_without_passwords() {
    use gantry_secrets::provider::openbao::redact_url;
    for (url, shown) in [
        ("https://bao.internal:8200", "https://bao.internal:8200"),
        (
            "https://me:s3cret@bao.internal:8200/v1/x",
            "https://me:***@bao.internal:8200/v1/x",
        ),
        ("https://token@bao.internal", "https://token@bao.internal"),
        ("http://a:b@h/p@q", "http://a:***@h/p@q"),
    ] {
        assert_eq!(redact_url(url), shown);
    }
}

#[test]
fn errors_cross_threads_and_tasks() {
    fn check<T: Send + Sync + std::error::Error + 'static>() {}
    check::<SecretsError>();
}
