//! Blueprint secrets through the built binary (issue 10, items 1 and 13): a `secret` param is
//! generated once per cluster, kept sealed in the state store and deleted with the cluster,
//! and shows as `********` in everything gantry stores or prints, even when a step prints it
//! and fails. And the built-in services, which used to trust every local user, refuse a second
//! Unix user (created by the test) while gantry's own user connects with the outputs' password
//! and replication works.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::other_user::{OtherUser, run_bounded};
use crate::support::*;

const MASK: &str = "********";

fn spec_with(g: &Gantry, file: &str, cluster: &str, count: u32, blueprints: &str) -> PathBuf {
    g.spec(
        file,
        cluster,
        &format!(
            "apiVersion: gantry/v1\nname: {cluster}\nprovider: local\nlifetime: 1h\npools:\n  - name: db\n    count: {count}\nblueprints:\n{blueprints}"
        ),
    )
}

/// `show CLUSTER --output json` outputs, revealed or not.
#[track_caller]
fn outputs(g: &Gantry, c: &str, reveal: bool) -> Value {
    let mut args = vec!["show", c, "--output", "json"];
    if reveal {
        args.push("--show-secrets");
    }
    g.run(&args).ok().json()["outputs"].clone()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every file below `dir`, except below `skip`.
fn files_under(dir: &Path, skip: &[PathBuf], out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if skip.contains(&p) {
            continue;
        }
        match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&p, skip, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

#[track_caller]
fn assert_masked(what: &str, text: &str, secret: &str) {
    assert!(!text.contains(secret), "{what} shows the secret:\n{text}");
    assert!(text.contains(MASK), "{what} shows no mask:\n{text}");
}

/// The blueprint of the masking test: a secret in a config file, a step that prints it (and the
/// file) and fails, and outputs built from it.
fn leaky_blueprint(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("blueprint.yaml"),
        r#"name: leaky
description: prints its secret and fails
params:
  token: {type: secret, description: an API token}
outputs:
  token: {value: "{{ params.token }}", secret: true}
  url: "https://user:{{ params.token }}@{{ nodes[0].address }}/"
  user: user
steps:
  - id: config
    template: {src: conf.j2, dest: leaky/conf}
  - id: leak
    after: [config]
    retries: 1
    run: |
      echo "the token is {{ params.token }}"
      cat leaky/conf >&2
      exit 3
"#,
    )
    .unwrap();
    std::fs::write(dir.join("conf.j2"), "token={{ params.token }}\n").unwrap();
}

#[test]
fn a_step_that_prints_its_secret_and_fails_shows_it_masked_everywhere() {
    let g = Gantry::new();
    let c = "leak";
    leaky_blueprint(&g.work().join("leaky"));

    // A spec may not set a secret: it is stored in plaintext.
    let bad = spec_with(
        &g,
        "bad.yaml",
        c,
        1,
        "  - path: leaky\n    params: {token: hunter2}\n",
    );
    let out = g.run(&["validate", "-f", bad.to_str().unwrap()]).expect(2);
    assert!(
        out.stderr
            .contains(&format!("{}:10:14: error: ", bad.display()))
            && out.stderr.contains("is a secret"),
        "{}",
        out.stderr
    );

    let spec = spec_with(&g, "leak.yaml", c, 2, "  - path: leaky\n");
    let spec_s = spec.to_str().unwrap();
    // With debug logging: tracing must not show it either.
    let up = g.run(&["up", "-f", spec_s, "-vv"]).expect(1);
    let revealed = outputs(&g, c, true);
    let secret = revealed["leaky"]["token"]["value"]
        .as_str()
        .expect("the secret output")
        .to_string();
    assert_eq!(secret.len(), 32, "{secret}");
    assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric()));
    let all = format!("{}\n{}", up.stdout, up.stderr);
    assert_masked("up -vv", &all, &secret);
    for needle in ["the token is ********", "token=********", "exit code 3"] {
        assert!(all.contains(needle), "missing {needle:?}:\n{all}");
    }

    // Again, as JSON events (a retry, then the failure); the secret is kept, not regenerated.
    let up = g.run(&["up", "-f", spec_s, "--output", "json"]).expect(1);
    assert_masked("up --output json", &up.stderr, &secret);
    let events: Vec<Value> = up
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // (A retry event carries the first line of the error, which does not hold the output.)
    assert!(
        events.iter().any(|e| e["type"] == "step_retrying"),
        "{}",
        up.stderr
    );
    let failed = events
        .iter()
        .find(|e| e["type"] == "step_failed")
        .unwrap_or_else(|| panic!("no step_failed event:\n{}", up.stderr));
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("the token is ********"),
        "{failed}"
    );
    assert_eq!(outputs(&g, c, true)["leaky"]["token"]["value"], secret);

    // Run records and their replayed events.
    let runs = g.run(&["runs", "--output", "json"]).ok();
    assert_masked("runs --output json", &runs.stdout, &secret);
    let run_id = runs.json()[0]["id"].as_str().unwrap().to_string();
    for args in [
        vec!["logs", &run_id],
        vec!["logs", &run_id, "--output", "json"],
    ] {
        let out = g.run(&args).ok();
        assert_masked(&args.join(" "), &out.stdout, &secret);
    }
    // What a step would run.
    for json in [false, true] {
        let mut args = vec!["blueprint", "render", "leaky", "--node", "1", "-f", spec_s];
        if json {
            args.extend(["--output", "json"]);
        }
        let out = g.run(&args).ok();
        assert_masked("blueprint render", &out.stdout, &secret);
        assert!(
            out.stdout.contains("the token is ********"),
            "{}",
            out.stdout
        );
    }

    // Outputs: masked unless asked for, in show and inventory.
    let first = g.nodes(c)[0].address.clone();
    let masked = outputs(&g, c, false);
    assert_eq!(masked["leaky"]["token"]["value"], MASK);
    assert_eq!(masked["leaky"]["token"]["secret"], true);
    // Not marked, but it renders the secret: secret too.
    assert_eq!(masked["leaky"]["url"]["value"], MASK);
    assert_eq!(masked["leaky"]["url"]["secret"], true);
    assert_eq!(masked["leaky"]["user"]["value"], "user");
    assert_eq!(masked["leaky"]["user"]["secret"], false);
    assert_eq!(
        revealed["leaky"]["url"]["value"],
        format!("https://user:{secret}@{first}/")
    );
    let show = g.run(&["show", c]).ok();
    assert_masked("show", &show.stdout, &secret);
    assert!(show.stderr.contains("--show-secrets"), "{}", show.stderr);
    let inv = g.run(&["inventory", c, "--format", "json"]).ok();
    assert_masked("inventory --format json", &inv.stdout, &secret);
    assert_eq!(inv.json()["outputs"][c]["leaky"]["url"]["value"], MASK);
    let inv = g
        .run(&["inventory", "--format", "json", "--show-secrets"])
        .ok()
        .json();
    assert_eq!(inv["outputs"][c]["leaky"]["token"]["value"], secret);

    // Nowhere in gantry's own files (nodes hold their rendered config): the state store keeps
    // it sealed, and no plaintext secrets directory is made.
    let secrets = g.home().join("secrets");
    assert!(!secrets.exists(), "a plaintext secrets directory");
    let mut files = Vec::new();
    files_under(g.home(), &[g.home().join("local")], &mut files);
    assert!(files.iter().any(|f| f.ends_with("state.db")), "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the secret",
            f.display()
        );
    }
    // On the node: the script that renders it 0700 in a 0700 directory, the template (no
    // `mode` given) 0600.
    let home = g.cluster_dir(c).join(format!("{c}-db-1")).join("home");
    assert_eq!(mode(&home.join(".gantry/blueprints/leaky/leak.sh")), 0o700);
    assert_eq!(mode(&home.join(".gantry/blueprints/leaky")), 0o700);
    assert_eq!(mode(&home.join("leaky/conf")), 0o600);

    // A spec without the blueprint drops its outputs.
    g.run(&["up", "-f", g.simple_spec(c, 2).to_str().unwrap()])
        .ok();
    assert_eq!(outputs(&g, c, true), serde_json::json!({}));

    // Deleted with the cluster: a new cluster of the same name gets a new value.
    g.run(&["destroy", c, "--yes"]).ok();
    g.run(&["up", "-f", spec_s]).expect(1);
    let again = outputs(&g, c, true)["leaky"]["token"]["value"].clone();
    assert_ne!(
        again,
        serde_json::json!(secret),
        "the secrets outlived their cluster"
    );
    g.run(&["destroy", c, "--yes"]).ok();
}

/// Lets other users traverse to the gantry home (the test's temp dirs are 0700 and owned by
/// root), so what they cannot read is what gantry's own modes forbid.
fn open_the_way(g: &Gantry) {
    for d in [g.home().parent().unwrap(), g.home()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// The other user reads none of `paths`.
#[track_caller]
fn cannot_read(other: &OtherUser, paths: &[PathBuf]) {
    for p in paths {
        assert!(p.exists(), "{} exists", p.display());
        let (code, out, _) = other.sh(&format!("cat '{}'", p.display()), Duration::from_secs(10));
        assert!(
            code != Some(0) && out.is_empty(),
            "another user read {}",
            p.display()
        );
    }
}

/// `psql ARGS...` as gantry's user; (code, stdout, stderr).
fn psql(args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new("psql");
    cmd.args(args)
        .env("PGCONNECT_TIMEOUT", "5")
        .env_remove("PGPASSWORD")
        .env_remove("PGPASSFILE")
        .stdin(Stdio::null());
    run_bounded(cmd, Duration::from_secs(20))
}

/// Another user's attempt to run a command as gantry's user through postgres on `addr`:
/// refused for lack of the password, and `proof` never appears.
#[track_caller]
fn copy_to_program_is_refused(other: &OtherUser, addr: &str, proof: &Path) {
    assert!(is_loopback(addr));
    for password in ["", "PGPASSWORD=wrong "] {
        let (code, out, err) = other.sh(
            &format!(
                "{password}PGCONNECT_TIMEOUT=5 psql -h {addr} -p 5432 -U postgres -d postgres -c \"COPY (select 1) TO PROGRAM 'id > {}'\"",
                proof.display()
            ),
            Duration::from_secs(20),
        );
        assert_ne!(code, Some(0), "the other user got in at {addr}: {out}{err}");
        let why = if password.is_empty() {
            "no password supplied"
        } else {
            "password authentication failed for user \"postgres\""
        };
        assert!(err.contains(why), "{addr}: wanted {why:?}, got:\n{err}");
        assert!(!proof.exists(), "COPY ... TO PROGRAM ran for another user");
    }
}

#[test]
fn postgres_refuses_other_users_and_replicates_with_passwords() {
    if !require_tool("/usr/bin/psql") {
        return;
    }
    let Some(other) = OtherUser::create() else {
        return;
    };
    let g = Gantry::new();
    open_the_way(&g);
    let c = "pgsec";
    let proof = g.work().join("pwned");
    std::fs::set_permissions(g.work(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // One node.
    g.run(&[
        "up",
        "-f",
        spec_with(&g, "a.yaml", c, 1, "  - name: postgres\n")
            .to_str()
            .unwrap(),
    ])
    .ok();
    let primary = g.nodes(c)[0].address.clone();
    copy_to_program_is_refused(&other, &primary, &proof);
    // gantry's user connects with the outputs' URL, and only with it.
    let out = outputs(&g, c, true);
    let url = out["postgres"]["url"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let password = out["postgres"]["password"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        url,
        format!("postgresql://postgres:{password}@{primary}:5432/app")
    );
    assert_eq!(out["postgres"]["user"]["value"], "postgres");
    let (code, stdout, stderr) = psql(&[&url, "-Atc", "SELECT current_user"]);
    assert_eq!((code, stdout.trim()), (Some(0), "postgres"), "{stderr}");
    let (code, _, stderr) = psql(&[
        "-h", &primary, "-U", "postgres", "-d", "app", "-c", "SELECT 1",
    ]);
    assert_ne!(code, Some(0), "no password, no connection: {stderr}");
    // Nor can the other user read the password where gantry and the node keep it.
    let node_home = |i: u32| g.cluster_dir(c).join(format!("{c}-db-{i}")).join("home");
    // gantry's own copy is sealed in the state store; its key file is the home's secrets.key.
    let secret_files = vec![
        g.home().join("secrets.key"),
        g.home().join("state.db"),
        node_home(1).join("pg/pgpass"),
        node_home(1).join(".gantry/blueprints/postgres/roles.sh"),
        node_home(1).join(".gantry/blueprints/boot.json"),
    ];
    cannot_read(&other, &secret_files);

    // Grown to a primary and a streaming replica: the same password, refused to the other user
    // on both nodes, and the replica streams as the replication role.
    g.run(&[
        "up",
        "-f",
        spec_with(&g, "b.yaml", c, 2, "  - name: postgres\n")
            .to_str()
            .unwrap(),
    ])
    .ok();
    let nodes = g.nodes(c);
    assert_eq!(nodes[0].address, primary);
    let replica = nodes[1].address.clone();
    assert_eq!(
        outputs(&g, c, true)["postgres"]["url"]["value"],
        url.as_str()
    );
    for addr in [&primary, &replica] {
        copy_to_program_is_refused(&other, addr, &proof);
    }
    let (code, _, stderr) = psql(&[
        &url,
        "-c",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (42)",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let replica_url = format!("postgresql://postgres:{password}@{replica}:5432/app");
    assert!(
        eventually(Duration::from_secs(30), || psql(&[
            &replica_url,
            "-Atc",
            "SELECT x FROM t"
        ])
        .1
        .trim()
            == "42"),
        "the replica serves the primary's row"
    );
    let (_, stdout, _) = psql(&[
        &url,
        "-Atc",
        "SELECT usename || ' ' || state FROM pg_stat_replication",
    ]);
    assert_eq!(stdout.trim(), "replicator streaming");
    cannot_read(&other, &[node_home(2).join("pg/pgpass")]);

    // After a stop and a start (the boot steps bring postgres back): still passwords only,
    // and the replica streams again.
    g.run(&["stop", c]).ok();
    g.run(&["start", c]).ok();
    assert!(
        eventually(Duration::from_secs(30), || psql(&[
            &url,
            "-Atc",
            "SELECT usename || ' ' || state FROM pg_stat_replication",
        ])
        .1
        .trim()
            == "replicator streaming"),
        "the replica streams again after stop/start"
    );
    copy_to_program_is_refused(&other, &primary, &proof);
    g.run(&["destroy", c, "--yes"]).ok();
}

#[test]
fn redis_refuses_other_users_and_replicates_with_masterauth() {
    if !require_tool("/usr/bin/redis-server") || !require_tool("/usr/bin/redis-cli") {
        return;
    }
    let Some(other) = OtherUser::create() else {
        return;
    };
    let g = Gantry::new();
    open_the_way(&g);
    let c = "rdsec";
    g.run(&[
        "up",
        "-f",
        spec_with(&g, "a.yaml", c, 2, "  - name: redis\n")
            .to_str()
            .unwrap(),
    ])
    .ok();
    let nodes = g.nodes(c);
    let (primary, replica) = (nodes[0].address.clone(), nodes[1].address.clone());

    // The other user: no password, nothing but NOAUTH, on either node.
    for addr in [&primary, &replica] {
        assert!(is_loopback(addr));
        for cmd in ["set stolen 1", "config set dir /tmp", "get answer"] {
            let (_, out, err) = other.sh(
                &format!("redis-cli -h {addr} -p 6379 {cmd}"),
                Duration::from_secs(10),
            );
            assert!(
                format!("{out}{err}").contains("NOAUTH"),
                "{addr} `{cmd}`: {out}{err}"
            );
        }
    }
    let home = |i: u32| g.cluster_dir(c).join(format!("{c}-db-{i}")).join("home");
    cannot_read(
        &other,
        &[
            home(1).join("redis/redis.conf"),
            home(2).join("redis/password"),
        ],
    );

    let out = outputs(&g, c, true);
    let password = out["redis"]["password"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        out["redis"]["url"]["value"],
        format!("redis://:{password}@{primary}:6379")
    );
    assert_eq!(out["redis"]["user"]["value"], "default");
    assert_eq!(out["redis"]["host"]["value"], primary.as_str());
    // gantry's user, with the password in the environment (not on a command line): the
    // replica authenticated to the primary (masterauth) and serves its write.
    let cli = |addr: &str, args: &[&str]| {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", addr, "-p", "6379"])
            .args(args)
            .env("REDISCLI_AUTH", &password)
            .stdin(Stdio::null());
        run_bounded(cmd, Duration::from_secs(10)).1
    };
    assert_eq!(cli(&primary, &["set", "answer", "42"]).trim(), "OK");
    assert!(
        eventually(Duration::from_secs(20), || cli(
            &replica,
            &["get", "answer"]
        )
        .trim()
            == "42"),
        "the replica serves the primary's write"
    );
    assert!(cli(&replica, &["info", "replication"]).contains("master_link_status:up"));
    assert_eq!(cli(&primary, &["get", "stolen"]).trim(), "");
    g.run(&["destroy", c, "--yes"]).ok();
}
