//! Round trips through `KeyProviderSpec` (by alias and by key id), a wrong or unknown key
//! (errors naming the provider and the key), and a key file's secret re-wrapped under KMS.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use gantry_secrets::{
    Aad, DataKey, Envelope, KeyFile, KeyProvider, KeyProviderSpec, ProviderInputs, SecretString,
    SecretsError, open, rewrap, seal,
};
use gantry_secrets_awskms::{AwsKmsConfig, AwsKmsProviders};

struct Moto {
    port: u16,
    pid: u32,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["stop", &self.pid.to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh")
}

/// The moto server of this binary, started on first use; `None` (skip) without moto.
fn moto() -> Option<&'static Moto> {
    static MOTO: OnceLock<Option<Moto>> = OnceLock::new();
    MOTO.get_or_init(|| {
        let out = Command::new(script())
            .args(["start", "moto"])
            .env("SERVICES_WATCH_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/services.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            if stderr.contains("not installed") && std::env::var("CI").as_deref() != Ok("true") {
                eprintln!("skipped: {}", stderr.trim());
                return None;
            }
            panic!("scripts/services.sh start moto failed: {stderr}");
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut it = stdout.split_whitespace();
        Some(Moto {
            port: it.next().and_then(|p| p.parse().ok()).expect("port"),
            pid: it.next().and_then(|p| p.parse().ok()).expect("pid"),
        })
    })
    .as_ref()
}

fn config(moto: &Moto) -> AwsKmsConfig {
    AwsKmsConfig {
        region: Some("us-east-1".into()),
        endpoint: Some(format!("http://127.0.0.1:{}", moto.port)),
        static_credentials: Some(("testing".into(), SecretString::new("testing-secret"))),
    }
}

fn inputs(moto: &Moto) -> ProviderInputs {
    ProviderInputs {
        external: Some(Arc::new(AwsKmsProviders {
            config: config(moto),
        })),
        ..ProviderInputs::default()
    }
}

fn build(moto: &Moto, spec: &str) -> Arc<dyn KeyProvider> {
    KeyProviderSpec::parse(spec)
        .unwrap()
        .build(&inputs(moto))
        .unwrap()
}

/// A fresh KMS key in moto, with `alias/NAME`; answers the key id.
async fn create_key(moto: &Moto, alias: &str) -> String {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(format!("http://127.0.0.1:{}", moto.port))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing",
            "testing-secret",
            None,
            None,
            "test",
        ))
        .load()
        .await;
    let kms = aws_sdk_kms::Client::new(&conf);
    let key = kms.create_key().send().await.unwrap();
    let id = key.key_metadata().unwrap().key_id().to_string();
    kms.create_alias()
        .alias_name(format!("alias/{alias}"))
        .target_key_id(&id)
        .send()
        .await
        .unwrap();
    id
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

const PLAIN: &[u8] = b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot really\n";

#[tokio::test]
async fn round_trip_by_alias_and_by_key_id() {
    let Some(moto) = moto() else { return };
    let alias = unique("round-trip");
    let id = create_key(moto, &alias).await;
    for spec in [format!("awskms://alias/{alias}"), format!("awskms://{id}")] {
        let kms = build(moto, &spec);
        assert_eq!(kms.kind(), "awskms");
        assert_eq!(kms.describe(), spec);
        let name = Aad::name("ssh/project-key");
        let env = seal(&*kms, name, PLAIN).await.unwrap();
        let stored = env.encode();
        assert!(stored.contains(r#""provider":"awskms""#), "{stored}");
        assert!(!stored.contains("OPENSSH"), "{stored}");
        let read = Envelope::decode("ssh/project-key", &stored).unwrap();
        assert!(read.is_wrapped_by(&*kms));
        let plain = open(&[&*kms], name, &read).await.unwrap();
        assert_eq!(plain.expose(), PLAIN);
        // Another secret's name does not open it (the envelope binds it).
        assert!(matches!(
            open(&[&*kms], Aad::name("other"), &read).await,
            Err(SecretsError::Tampered { .. })
        ));
    }
}

#[tokio::test]
async fn a_wrong_or_unknown_key_is_an_error_naming_the_provider_and_the_key() {
    let Some(moto) = moto() else { return };
    let (a, b) = (unique("key-a"), unique("key-b"));
    create_key(moto, &a).await;
    create_key(moto, &b).await;
    let ka = build(moto, &format!("awskms://alias/{a}"));
    let kb = build(moto, &format!("awskms://alias/{b}"));
    let env = seal(&*ka, Aad::name("s"), PLAIN).await.unwrap();

    let e = open(&[&*kb], Aad::name("s"), &env).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SecretsError::WrongKey { .. }), "{msg}");
    assert!(
        msg.contains(&format!("awskms://alias/{b}")) && msg.contains(&format!("alias/{a}")),
        "{msg}"
    );

    // A ciphertext of key A given to KMS under key B's name: KMS refuses (AWS answers
    // IncorrectKeyException, a wrong key; moto AccessDeniedException); never a data key.
    let wrapped = ka.wrap("s", &DataKey::generate()).await.unwrap();
    let e = kb
        .unwrap("s", &format!("alias/{b}"), &wrapped.bytes)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("awskms://alias/{b}")) && msg.len() < 400,
        "{msg}"
    );

    let missing = build(moto, "awskms://alias/does-not-exist");
    let e = seal(&*missing, Aad::name("s"), PLAIN).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("awskms://alias/does-not-exist") && msg.contains("does not exist"),
        "{msg}"
    );
    assert!(!msg.contains("testing-secret"), "{msg}");
}

#[tokio::test]
async fn a_key_files_secret_is_rewrapped_under_kms() {
    let Some(moto) = moto() else { return };
    let alias = unique("rewrap");
    create_key(moto, &alias).await;
    let dir = tempfile::tempdir().unwrap();
    let kf = KeyFile::create(dir.path().join("secrets.key")).unwrap();
    let kms = build(moto, &format!("awskms://alias/{alias}"));
    let name = Aad::name("ssh/project-key");
    let env = seal(&kf, name, PLAIN).await.unwrap();
    let rotated = rewrap("ssh/project-key", &env, &[&kf], &*kms)
        .await
        .unwrap();
    assert!(rotated.is_wrapped_by(&*kms));
    let field = |e: &Envelope, f: &str| {
        let v: serde_json::Value = serde_json::from_str(&e.encode()).unwrap();
        v[f].as_str().unwrap().to_string()
    };
    assert_eq!(
        field(&rotated, "ciphertext"),
        field(&env, "ciphertext"),
        "rewrap keeps the ciphertext"
    );
    let plain = open(&[&*kms], name, &rotated).await.unwrap();
    assert_eq!(plain.expose(), PLAIN);
    // The key file alone no longer opens it.
    assert!(matches!(
        open(&[&kf], name, &rotated).await,
        Err(SecretsError::UnknownProvider { .. })
    ));
}

#[test]
fn without_the_extension_awskms_is_not_built_in() {
    let e = KeyProviderSpec::parse("awskms://alias/x")
        .unwrap()
        .build(&ProviderInputs::default())
        .unwrap_err();
    assert!(matches!(e, SecretsError::NotBuiltIn { .. }), "{e}");
}
