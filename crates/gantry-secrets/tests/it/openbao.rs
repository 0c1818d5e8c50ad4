//! The OpenBao transit provider against a real OpenBao dev server: one per test binary, started
//! by `scripts/services.sh start openbao` and stopped by its watcher when this binary exits.
//! The test setup enables transit and creates the keys through the HTTP API. Without `bao`
//! installed the test skips with a message, except under `CI=true`, where it fails.
//!
//! nextest runs every test in a process of its own, so a server shared by several `#[test]`s
//! would be started once per test: the cases are functions run in turn by one test instead.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use gantry_secrets::{
    Aad, KeyProvider, KeyProviderSpec, OpenBaoTransit, ProviderInputs, SecretString, SecretsError,
    open, rewrap, seal,
};

use crate::{assert_absent, err, keyfile, private_key_like, reencode};

const TOKEN: &str = "root";

struct Bao {
    addr: String,
}

fn post(addr: &str, path: &str, body: &str) -> u16 {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .new_agent();
    let resp = agent
        .post(format!("{addr}{path}"))
        .header("X-Vault-Token", TOKEN)
        .content_type("application/json")
        .send(body)
        .expect("the OpenBao dev server answers");
    resp.status().as_u16()
}

fn start() -> Option<Bao> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh");
    let out = Command::new(script)
        .args(["start", "openbao"])
        // The watcher stops the server when this test binary exits.
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
        panic!("scripts/services.sh start openbao failed: {stderr}");
    }
    let port: u16 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("services.sh prints the port first");
    let addr = format!("http://127.0.0.1:{port}");
    assert!(
        matches!(
            post(&addr, "/v1/sys/mounts/transit", r#"{"type":"transit"}"#),
            200 | 204
        ),
        "enabling transit"
    );
    for key in ["gantry-a", "gantry-b"] {
        assert!(
            matches!(
                post(&addr, &format!("/v1/transit/keys/{key}"), "{}"),
                200 | 204
            ),
            "creating transit key {key}"
        );
    }
    Some(Bao { addr })
}

/// The server of this test binary, started on first use.
fn bao() -> Option<&'static Bao> {
    static BAO: OnceLock<Option<Bao>> = OnceLock::new();
    BAO.get_or_init(start).as_ref()
}

#[tokio::test]
async fn openbao_transit() {
    let Some(bao) = bao() else { return };
    openbao_round_trip_through_the_spec(bao).await;
    another_transit_key_is_wrong_key_and_a_missing_one_is_named(bao).await;
    a_bad_token_or_an_unreachable_server_is_a_clear_error_without_the_token(bao).await;
    a_changed_transit_ciphertext_is_tampered(bao).await;
    rotation_from_a_key_file_to_openbao_and_between_transit_keys(bao).await;
}

fn transit(bao: &Bao, key: &str) -> OpenBaoTransit {
    OpenBaoTransit::new(&bao.addr, SecretString::new(TOKEN), "transit", key).unwrap()
}

async fn openbao_round_trip_through_the_spec(bao: &Bao) {
    let provider = KeyProviderSpec::parse("openbao://transit/gantry-a")
        .unwrap()
        .build(&ProviderInputs {
            openbao_addr: Some(format!("{}/", bao.addr)),
            openbao_token: Some(SecretString::new(TOKEN)),
            ..ProviderInputs::default()
        })
        .unwrap();
    assert_eq!(provider.kind(), "openbao");
    assert_eq!(provider.key_id(), "transit/gantry-a");
    let plain = private_key_like();
    let env = seal(&*provider, Aad::name("ssh/project-key"), &plain)
        .await
        .unwrap();
    assert_eq!(env.provider_kind(), "openbao");
    assert_eq!(env.key_id(), "transit/gantry-a");
    let text = env.encode();
    assert!(text.contains(r#""wrapped_key":""#));
    assert_absent(&plain, &text, "the serialised envelope");
    assert_absent(&plain, &format!("{env:?} {provider:?}"), "Debug output");
    assert!(!format!("{provider:?}").contains(TOKEN), "{provider:?}");
    let env = reencode(&env, "ssh/project-key");
    let got = open(&[&*provider], Aad::name("ssh/project-key"), &env)
        .await
        .unwrap();
    assert_eq!(got.expose(), &plain[..]);
}

async fn another_transit_key_is_wrong_key_and_a_missing_one_is_named(bao: &Bao) {
    let a = transit(bao, "gantry-a");
    let b = transit(bao, "gantry-b");
    let env = seal(&a, Aad::name("pins"), b"pin").await.unwrap();
    let e = err(open(&[&b], Aad::name("pins"), &env).await);
    assert!(matches!(e, SecretsError::WrongKey { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("wrong key")
            && msg.contains("openbao://transit/gantry-b")
            && msg.contains("transit/gantry-a"),
        "{msg}"
    );

    // A transit key that does not exist on the server: the server's answer, with a hint.
    let wrapped = a
        .wrap("pins", &gantry_secrets::DataKey::generate())
        .await
        .unwrap();
    let missing = transit(bao, "no-such-key");
    let e = err(missing
        .unwrap("pins", "transit/no-such-key", &wrapped.bytes)
        .await);
    assert!(matches!(e, SecretsError::Provider { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("openbao://transit/no-such-key")
            && msg.contains("encryption key not found")
            && msg.contains("transit key name"),
        "{msg}"
    );
}

async fn a_bad_token_or_an_unreachable_server_is_a_clear_error_without_the_token(bao: &Bao) {
    let bad = OpenBaoTransit::new(
        &bao.addr,
        SecretString::new("s.not-the-token-123"),
        "transit",
        "gantry-a",
    )
    .unwrap();
    let e = err(seal(&bad, Aad::name("s"), b"v").await);
    let msg = format!("{e} {e:?}");
    assert!(
        msg.contains("HTTP 403") && msg.contains("permission denied"),
        "{msg}"
    );
    assert!(!msg.contains("not-the-token"), "{msg}");

    // A port nothing listens on (bound and closed again).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = OpenBaoTransit::new(
        &format!("http://127.0.0.1:{port}"),
        SecretString::new(TOKEN),
        "transit",
        "gantry-a",
    )
    .unwrap();
    let e = err(seal(&gone, Aad::name("s"), b"v").await);
    let msg = e.to_string();
    assert!(
        msg.contains("secret `s`") && msg.contains(&port.to_string()),
        "{msg}"
    );
}

async fn a_changed_transit_ciphertext_is_tampered(bao: &Bao) {
    let a = transit(bao, "gantry-a");
    let mut wrapped = a
        .wrap("s", &gantry_secrets::DataKey::generate())
        .await
        .unwrap()
        .bytes;
    // Change one base64 character of the server's ciphertext (after "vault:v1:").
    let i = wrapped.len() - 5;
    wrapped[i] = if wrapped[i] == b'A' { b'B' } else { b'A' };
    let e = err(a.unwrap("s", "transit/gantry-a", &wrapped).await);
    assert!(matches!(e, SecretsError::Tampered { .. }), "{e}");
    let e = err(a
        .unwrap("s", "transit/gantry-a", b"not a transit ciphertext")
        .await);
    assert!(matches!(e, SecretsError::Tampered { .. }), "{e}");
}

async fn rotation_from_a_key_file_to_openbao_and_between_transit_keys(bao: &Bao) {
    let dir = tempfile::tempdir().unwrap();
    let kf = keyfile(&dir, "k");
    let a = transit(bao, "gantry-a");
    let b = transit(bao, "gantry-b");
    let env = seal(&kf, Aad::name("s"), b"rotate me").await.unwrap();
    let on_a = rewrap("s", &env, &[&kf], &a).await.unwrap();
    assert!(on_a.is_wrapped_by(&a));
    let on_b = rewrap("s", &on_a, &[&kf, &a], &b).await.unwrap();
    assert_eq!(on_b.key_id(), "transit/gantry-b");
    assert_eq!(
        open(&[&b], Aad::name("s"), &on_b).await.unwrap().expose(),
        b"rotate me"
    );
    let e = err(open(&[&kf], Aad::name("s"), &on_b).await);
    assert!(matches!(e, SecretsError::UnknownProvider { .. }), "{e}");
}
