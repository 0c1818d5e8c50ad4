//! Secrets at rest through the built binary (issue 12, part 5): after a whole run — `up` with a
//! blueprint that has a secret param, `run`, `get`, `show`, `logs`, `destroy`, all with debug
//! logging — the project's private key (its bytes, its base64, the base64 of its PEM text) and
//! the secret param's value appear in no table or key of the store (SQLite, PostgreSQL, etcd,
//! dumped with their own tools), in no output of gantry and in no `gantry logs`. Positive
//! controls show the search would find them (in the local key cache, in `show --show-secrets`).
//! And `gantry secrets rotate` moves every secret to a new key file, idempotently.

use std::path::Path;
use std::process::Command;

use crate::support::*;
use crate::team_store::Service;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decode(text: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let Some(v) = B64.iter().position(|&x| x == c) else {
            continue;
        };
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// What must never be found: the key's PEM text, each line of its base64 body, the decoded
/// key blob, the base64 of the whole PEM, and the secret param's value.
struct Needles(Vec<(String, Vec<u8>)>);

impl Needles {
    fn new(pem: &str, secret: &str) -> Needles {
        let body: Vec<&str> = pem
            .lines()
            .filter(|l| !l.starts_with("-----") && !l.is_empty())
            .collect();
        let mut v = vec![
            ("the private key's PEM".to_string(), pem.as_bytes().to_vec()),
            (
                "the private key's base64 body".into(),
                body.concat().into_bytes(),
            ),
            ("the private key's bytes".into(), b64_decode(&body.concat())),
            (
                "the base64 of the private key's PEM".into(),
                b64_encode(pem.as_bytes()).into_bytes(),
            ),
            (
                "the secret param's value".into(),
                secret.as_bytes().to_vec(),
            ),
        ];
        // Every full line of the body but the last (short, may be mostly padding).
        for (i, l) in body.iter().enumerate().take(body.len().saturating_sub(1)) {
            v.push((
                format!("line {i} of the private key's base64"),
                l.as_bytes().to_vec(),
            ));
        }
        Needles(v)
    }

    #[track_caller]
    fn assert_absent(&self, what: &str, hay: &[u8]) {
        for (name, needle) in &self.0 {
            assert!(!contains(hay, needle), "{what} holds {name}");
        }
    }
}

fn tool(args: &[&str], env: &[(&str, &str)]) -> Vec<u8> {
    let mut c = Command::new(args[0]);
    c.args(&args[1..]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A blueprint with a secret param, used in a file on the nodes and in a secret output.
fn blueprint(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("blueprint.yaml"),
        r#"name: vaulty
description: keeps a secret
params:
  token: {type: secret, description: an API token}
outputs:
  token: {value: "{{ params.token }}", secret: true}
steps:
  - id: config
    template: {src: conf.j2, dest: vaulty/conf}
"#,
    )
    .unwrap();
    std::fs::write(dir.join("conf.j2"), "token={{ params.token }}\n").unwrap();
}

/// The whole run on the store `url` (None: the home's SQLite) with `key` (None: the default
/// key file); `dump` reads every table or key of the store.
fn whole_run(url: Option<&str>, key: Option<&str>, dump: &dyn Fn(&Gantry) -> Vec<u8>) {
    let g = Gantry::new();
    let c = "vault";
    blueprint(&g.work().join("vaulty"));
    let spec = g.spec(
        "vault.yaml",
        c,
        &format!(
            "apiVersion: gantry/v1\nname: {c}\nprovider: local\nlifetime: 1h\npools:\n  - name: db\n    count: 2\nblueprints:\n  - path: vaulty\n"
        ),
    );
    let gantry = |args: &[&str]| -> Out {
        let mut cmd = g.command(args);
        if let Some(url) = url {
            cmd.env("GANTRY_STATE", url);
        }
        if let Some(key) = key {
            cmd.env("GANTRY_KEY_PROVIDER", key);
        }
        g.spawn_cmd(cmd, format!("gantry {}", args.join(" ")))
            .wait(CMD_TIMEOUT)
    };
    let mut outs = vec![gantry(&["up", "-f", spec.to_str().unwrap(), "-vv"]).ok()];
    outs.push(
        gantry(&[
            "run",
            c,
            "-vv",
            "--",
            "cat vaulty/conf >/dev/null; hostname",
        ])
        .ok(),
    );
    let got = g.work().join("fetched");
    outs.push(
        gantry(&[
            "get",
            &format!("{c}/1"),
            "vaulty/conf",
            got.to_str().unwrap(),
            "-vv",
        ])
        .ok(),
    );
    outs.push(gantry(&["show", c, "-vv"]).ok());
    outs.push(gantry(&["inventory", c, "--format", "json"]).ok());
    let revealed = gantry(&["show", c, "--show-secrets", "-o", "json"]).ok();
    let secret = revealed.json()["outputs"]["vaulty"]["token"]["value"]
        .as_str()
        .expect("the secret output")
        .to_string();
    assert_eq!(secret.len(), 32);

    let key_file = g.home().join("projects/default/id_ed25519");
    let pem = std::fs::read_to_string(&key_file).expect("the key cache");
    let needles = Needles::new(&pem, &secret);
    // Positive controls: the search finds the key in its local cache and the secret where it
    // was asked for, so a zero below means something.
    let cached = std::fs::read(&key_file).unwrap();
    for (name, needle) in needles
        .0
        .iter()
        .filter(|(n, _)| n.starts_with("line ") || n.ends_with("PEM"))
    {
        if name.starts_with("the base64 of") {
            continue;
        }
        assert!(contains(&cached, needle), "control: {name}");
    }
    let flat: Vec<u8> = cached.iter().copied().filter(|&b| b != b'\n').collect();
    assert!(contains(&flat, &needles.0[1].1), "control: the base64 body");
    assert!(
        needles.0[2].1.starts_with(b"openssh-key-v1\0"),
        "control: the key's bytes"
    );
    assert!(contains(revealed.stdout.as_bytes(), secret.as_bytes()));
    assert!(
        contains(&std::fs::read(&got).unwrap(), secret.as_bytes()),
        "control: the node's file"
    );
    let control = b64_encode(pem.as_bytes());
    assert!(
        contains(control.as_bytes(), &needles.0[3].1),
        "control: base64 of the PEM"
    );

    let runs = gantry(&["runs", "-o", "json"]).ok();
    for run in runs.json().as_array().unwrap() {
        let id = run["id"].as_str().unwrap();
        outs.push(gantry(&["logs", id]).ok());
        outs.push(gantry(&["logs", id, "-o", "json"]).ok());
    }
    outs.push(runs);
    let before = dump(&g);
    assert!(
        (contains(&before, b"ssh/default/private-key")
            || contains(&before, b"ssh%2Fdefault%2Fprivate-key"))
            && contains(&before, b"\"provider\":\"keyfile\""),
        "control: the dump holds the secrets' envelopes"
    );
    assert!(
        contains(&before, b"/param/vaulty/token")
            || contains(&before, b"%2Fparam%2Fvaulty%2Ftoken"),
        "control: the dump holds the param's envelope"
    );
    needles.assert_absent("the store before destroy", &before);
    // The local cache is a cache: deleted, it comes back from the store, the same key.
    std::fs::remove_file(&key_file).unwrap();
    std::fs::remove_file(g.home().join("projects/default/known_hosts")).unwrap();
    outs.push(gantry(&["run", c, "--", "true"]).ok());
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), pem);
    outs.push(gantry(&["destroy", c, "--yes", "-vv"]).ok());
    let after = dump(&g);
    needles.assert_absent("the store after destroy", &after);
    assert!(
        !contains(&after, b"/param/vaulty/token")
            && !contains(&after, b"%2Fparam%2Fvaulty%2Ftoken"),
        "the cluster's secrets are deleted with it"
    );
    for o in &outs {
        needles.assert_absent(&format!("`{}` stdout", o.what), o.stdout.as_bytes());
        needles.assert_absent(&format!("`{}` stderr", o.what), o.stderr.as_bytes());
    }
}

fn sqlite_dump(g: &Gantry) -> Vec<u8> {
    let db = g.home().join("state.db");
    tool(&["sqlite3", db.to_str().unwrap(), ".dump"], &[])
}

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{tool} is not installed"
        );
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

#[test]
fn no_plaintext_secret_in_a_sqlite_store_or_any_output() {
    if !have("sqlite3") {
        return;
    }
    whole_run(None, None, &sqlite_dump);
}

#[test]
fn no_plaintext_secret_in_a_postgres_store() {
    if !have("pg_dump") {
        return;
    }
    let Some(pg) = Service::start("postgres") else {
        return;
    };
    let password = std::fs::read_to_string(pg.dir.join("password")).expect("DIR/password");
    let password = password.trim().to_string();
    let url = format!(
        "postgres://gantry:{password}@127.0.0.1:{}/postgres",
        pg.port
    );
    let keydir = tempfile::tempdir().unwrap();
    let key = format!("keyfile:{}", keydir.path().join("team.key").display());
    let port = pg.port.to_string();
    whole_run(Some(&url), Some(&key), &|_| {
        tool(
            &[
                "pg_dump",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "gantry",
                "-d",
                "postgres",
            ],
            &[("PGPASSWORD", &password)],
        )
    });
}

#[test]
fn no_plaintext_secret_in_an_etcd_store() {
    let Some(etcd) = Service::start("etcd") else {
        return;
    };
    let url = format!("etcd://127.0.0.1:{}/grep-test", etcd.port);
    let keydir = tempfile::tempdir().unwrap();
    let key = format!("keyfile:{}", keydir.path().join("team.key").display());
    let endpoint = format!("127.0.0.1:{}", etcd.port);
    whole_run(Some(&url), Some(&key), &|_| {
        tool(
            &["etcdctl", "--endpoints", &endpoint, "get", "--prefix", ""],
            &[("ETCDCTL_API", "3")],
        )
    });
}

/// `gantry secrets rotate`: from the home's key file to another, every secret moves; a second
/// run moves nothing; the old key alone then opens nothing (exit 8, naming the secret).
#[test]
fn secrets_rotate_moves_every_secret_to_the_new_key_once() {
    let g = Gantry::new();
    let c = "rot";
    blueprint(&g.work().join("vaulty"));
    let spec = g.spec(
        "rot.yaml",
        c,
        &format!(
            "apiVersion: gantry/v1\nname: {c}\nprovider: local\nlifetime: 1h\npools:\n  - name: db\n    count: 1\nblueprints:\n  - path: vaulty\n"
        ),
    );
    g.run(&["up", "-f", spec.to_str().unwrap()]).ok();
    let secret_before = g
        .run(&["show", c, "--show-secrets", "-o", "json"])
        .ok()
        .json()["outputs"]["vaulty"]["token"]["value"]
        .clone();
    let old = format!("keyfile:{}", g.home().join("secrets.key").display());
    let new = format!("keyfile:{}", g.work().join("new.key").display());
    let with_key = |key: &str, args: &[&str]| {
        let mut cmd = g.command(args);
        cmd.env("GANTRY_KEY_PROVIDER", key);
        g.spawn_cmd(cmd, format!("gantry {}", args.join(" ")))
            .wait(CMD_TIMEOUT)
    };
    // Under the new key alone the old secrets do not open: exit 8, the secret and provider named.
    let refused = with_key(&new, &["run", c, "--", "true"]).expect(8);
    assert!(
        refused.stderr.contains("ssh/default/private-key") && refused.stderr.contains("wrong key"),
        "{}",
        refused.stderr
    );
    let first = with_key(&new, &["secrets", "rotate", "--from", &old, "-o", "json"])
        .ok()
        .json();
    // The project key, the pins, the param and the outputs.
    assert_eq!(first["total"], 4, "{first}");
    assert_eq!(first["rotated"], 4, "{first}");
    let second = with_key(&new, &["secrets", "rotate", "--from", &old, "-o", "json"])
        .ok()
        .json();
    assert_eq!(
        (second["rotated"].clone(), second["already"].clone()),
        (0.into(), 4.into()),
        "{second}"
    );
    with_key(&new, &["run", c, "--", "true"]).ok();
    let shown = with_key(&new, &["show", c, "--show-secrets", "-o", "json"])
        .ok()
        .json();
    assert_eq!(shown["outputs"]["vaulty"]["token"]["value"], secret_before);
    // The old key no longer opens anything.
    let stale = with_key(&old, &["run", c, "--", "true"]).expect(8);
    assert!(stale.stderr.contains("hint:"), "{}", stale.stderr);
    with_key(&new, &["destroy", c, "--yes"]).ok();
}

/// An existing home's own project key is imported into a store that has none (and stays the
/// home's key); a home whose key differs from the one a store already keeps is refused with an
/// error naming its key file, never silently switched.
#[test]
fn a_homes_own_key_is_imported_and_a_different_one_is_refused() {
    let a = Gantry::new();
    let b = Gantry::new();
    let shared = a.work().join("shared.db");
    let url = format!("sqlite://{}", shared.display());
    let key = format!("keyfile:{}", a.work().join("team.key").display());
    let on_shared = |g: &Gantry, args: &[&str]| {
        let mut cmd = g.command(args);
        cmd.env("GANTRY_STATE", &url)
            .env("GANTRY_KEY_PROVIDER", &key);
        g.spawn_cmd(cmd, format!("gantry {}", args.join(" ")))
            .wait(CMD_TIMEOUT)
    };
    // Both homes make their own key on their own store first.
    a.run(&["inventory", "--format", "json"]).ok();
    b.run(&["inventory", "--format", "json"]).ok();
    let key_of = |g: &Gantry| std::fs::read(g.home().join("projects/default/id_ed25519")).unwrap();
    let (key_a, key_b) = (key_of(&a), key_of(&b));
    assert_ne!(key_a, key_b);
    // A joins the shared store first: its key is imported.
    on_shared(&a, &["inventory", "--format", "json"]).ok();
    assert_eq!(key_of(&a), key_a);
    let names = tool(
        &[
            "sqlite3",
            shared.to_str().unwrap(),
            "SELECT name FROM secrets",
        ],
        &[],
    );
    assert!(
        contains(&names, b"ssh/default/private-key"),
        "{}",
        String::from_utf8_lossy(&names)
    );
    // B's own key differs from the store's: refused, naming the file; nothing replaced.
    let refused = on_shared(&b, &["inventory", "--format", "json"]).expect(1);
    assert!(
        refused.stderr.contains("id_ed25519")
            && refused
                .stderr
                .contains("is not the key the state store keeps"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("hint:"), "{}", refused.stderr);
    assert_eq!(key_of(&b), key_b);
    // Moved away (it is only a cache), B gets the store's key: A's.
    std::fs::rename(
        b.home().join("projects/default/id_ed25519"),
        b.work().join("old_id_ed25519"),
    )
    .unwrap();
    on_shared(&b, &["inventory", "--format", "json"]).ok();
    assert_eq!(key_of(&b), key_a);
}

/// `GANTRY_KEY_PROVIDER=passphrase` reads `GANTRY_PASSPHRASE` (no terminal here to ask on:
/// without it, a usage error naming the variable); a wrong passphrase exits 8; an `awskms://`
/// key that cannot be reached and an unknown provider are clear errors.
#[test]
fn passphrase_and_unbuilt_providers_from_the_environment() {
    let g = Gantry::new();
    let with = |env: &[(&str, &str)]| {
        let mut cmd = g.command(&["inventory", "--format", "json"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        g.spawn_cmd(cmd, format!("gantry inventory {env:?}"))
            .wait(CMD_TIMEOUT)
    };
    let missing = with(&[("GANTRY_KEY_PROVIDER", "passphrase")]).expect(2);
    assert!(
        missing.stderr.contains("GANTRY_PASSPHRASE"),
        "{}",
        missing.stderr
    );
    with(&[
        ("GANTRY_KEY_PROVIDER", "passphrase"),
        ("GANTRY_PASSPHRASE", "correct horse"),
    ])
    .ok();
    let names = tool(
        &[
            "sqlite3",
            g.home().join("state.db").to_str().unwrap(),
            "SELECT envelope FROM secrets",
        ],
        &[],
    );
    assert!(
        contains(&names, b"\"provider\":\"passphrase\""),
        "{}",
        String::from_utf8_lossy(&names)
    );
    let wrong = with(&[
        ("GANTRY_KEY_PROVIDER", "passphrase"),
        ("GANTRY_PASSPHRASE", "wrong"),
    ])
    .expect(8);
    assert!(
        wrong.stderr.contains("wrong key") && wrong.stderr.contains("passphrase"),
        "{}",
        wrong.stderr
    );
    // awskms is built in (the default features): a KMS that does not answer (a closed
    // loopback endpoint: no request leaves the machine) is a clear failure naming the provider.
    let kms = with(&[
        ("GANTRY_KEY_PROVIDER", "awskms://alias/gantry"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]);
    assert!(
        matches!(kms.code, Some(1) | Some(8)) && kms.stderr.contains("awskms"),
        "{kms:?}"
    );
    let bad = with(&[("GANTRY_KEY_PROVIDER", "rot13:x")]).expect(2);
    assert!(
        bad.stderr.contains("unknown key provider"),
        "{}",
        bad.stderr
    );
}

/// `openbao://transit/KEY` with `BAO_ADDR`/`BAO_TOKEN`, and `VAULT_ADDR`/`VAULT_TOKEN` as the
/// fallback, against a real OpenBao dev server: the envelopes name the transit key.
#[test]
fn openbao_transit_from_the_environment() {
    let Some(bao) = Service::start("openbao") else {
        return;
    };
    let addr = format!("http://127.0.0.1:{}", bao.port);
    let post = |path: &str, body: &str| {
        tool(
            &[
                "curl",
                "-sf",
                "-X",
                "POST",
                "-H",
                "X-Vault-Token: root",
                "-d",
                body,
                &format!("{addr}{path}"),
            ],
            &[],
        )
    };
    post("/v1/sys/mounts/transit", r#"{"type":"transit"}"#);
    post("/v1/transit/keys/gantry", "{}");
    let g = Gantry::new();
    let with = |env: &[(&str, &str)]| {
        let mut cmd = g.command(&["inventory", "--format", "json"]);
        cmd.env("GANTRY_KEY_PROVIDER", "openbao://transit/gantry");
        for (k, v) in env {
            cmd.env(k, v);
        }
        g.spawn_cmd(cmd, "gantry inventory (openbao)".into())
            .wait(CMD_TIMEOUT)
    };
    let missing = with(&[]).expect(2);
    assert!(missing.stderr.contains("BAO_ADDR"), "{}", missing.stderr);
    with(&[("BAO_ADDR", &addr), ("BAO_TOKEN", "root")]).ok();
    with(&[("VAULT_ADDR", &addr), ("VAULT_TOKEN", "root")]).ok();
    let envelopes = tool(
        &[
            "sqlite3",
            g.home().join("state.db").to_str().unwrap(),
            "SELECT envelope FROM secrets",
        ],
        &[],
    );
    assert!(
        contains(
            &envelopes,
            b"\"provider\":\"openbao\",\"key_id\":\"transit/gantry\""
        ),
        "{}",
        String::from_utf8_lossy(&envelopes)
    );
    let refused = with(&[("BAO_ADDR", &addr), ("BAO_TOKEN", "not-root")]);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(!refused.stderr.contains("not-root"), "{}", refused.stderr);
}

/// Two new homes starting on one new store at the same moment agree on one project key (the
/// store's create-if-absent): both caches end up holding the same key.
#[test]
fn two_homes_starting_at_once_agree_on_one_project_key() {
    let a = Gantry::new();
    let b = Gantry::new();
    let url = format!("sqlite://{}", a.work().join("shared.db").display());
    let key = format!("keyfile:{}", a.work().join("team.key").display());
    // The key file first, so that both homes use the same one.
    let mut first = a.command(&["state", "status"]);
    first.env("GANTRY_STATE", &url);
    a.spawn_cmd(first, "state status".into())
        .wait(CMD_TIMEOUT)
        .ok();
    std::fs::write(a.work().join("team.key"), [7u8; 32]).unwrap();
    std::fs::set_permissions(
        a.work().join("team.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let start = |g: &Gantry| {
        let mut cmd = g.command(&["inventory", "--format", "json"]);
        cmd.env("GANTRY_STATE", &url)
            .env("GANTRY_KEY_PROVIDER", &key);
        g.spawn_cmd(cmd, "gantry inventory".into())
    };
    for _ in 0..3 {
        for g in [&a, &b] {
            let _ = std::fs::remove_file(g.home().join("projects/default/id_ed25519"));
        }
        let _ = tool(
            &[
                "sqlite3",
                a.work().join("shared.db").to_str().unwrap(),
                "DELETE FROM secrets",
            ],
            &[],
        );
        let (pa, pb) = (start(&a), start(&b));
        pa.wait(CMD_TIMEOUT).ok();
        pb.wait(CMD_TIMEOUT).ok();
        let key_of =
            |g: &Gantry| std::fs::read(g.home().join("projects/default/id_ed25519")).unwrap();
        assert_eq!(key_of(&a), key_of(&b), "the two homes made two keys");
    }
}
