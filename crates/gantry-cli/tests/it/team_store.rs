//! Two gantry homes on one team store (PostgreSQL, etcd): what one records, the other sees; a
//! store's password never reaches the output.
//!
//! Each test starts its own server through `scripts/services.sh start postgres|etcd` (stopped
//! by PID when the fixture drops, and by the script's watcher if this process dies first). A
//! machine without the server skips the test with a reason; under `CI=true` it fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::support::{CMD_TIMEOUT, Gantry, Out};

fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// A server started by `scripts/services.sh`, stopped on drop (shared by the fencing, outage,
/// migrate and team Docker tests).
pub(crate) struct Service {
    pub(crate) port: u16,
    pub(crate) pid: String,
    pub(crate) dir: PathBuf,
}

impl Service {
    pub(crate) fn start(name: &str) -> Option<Service> {
        let out = Command::new(scripts_dir().join("services.sh"))
            .args(["start", name])
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/services.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            if stderr.contains("not installed") && std::env::var("CI").as_deref() != Ok("true") {
                eprintln!("skipped: {}", stderr.trim());
                return None;
            }
            panic!("scripts/services.sh start {name} failed: {stderr}");
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut it = stdout.split_whitespace();
        let (Some(port), Some(pid), Some(dir)) = (it.next(), it.next(), it.next()) else {
            panic!("scripts/services.sh start {name} printed {stdout:?}, wanted PORT PID DIR");
        };
        Some(Service {
            port: port.parse().expect("port"),
            pid: pid.to_string(),
            dir: PathBuf::from(dir),
        })
    }
}

impl Service {
    /// The URL of a started `postgres` service's database, with its password.
    pub(crate) fn postgres_url(&self) -> String {
        let password = std::fs::read_to_string(self.dir.join("password")).expect("DIR/password");
        format!(
            "postgres://gantry:{}@127.0.0.1:{}/postgres",
            password.trim(),
            self.port
        )
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new(scripts_dir().join("services.sh"))
            .args(["stop", &self.pid])
            .stdin(Stdio::null())
            .output();
    }
}

/// A key file (32 random bytes, 0600) in `dir` that every home of a test shares, as a team
/// shares its `GANTRY_KEY_PROVIDER=keyfile:PATH`.
pub fn shared_key_provider(dir: &std::path::Path) -> PathBuf {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join("team.key");
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .expect("read /dev/urandom");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(&key))
        .expect("write the team key file");
    path
}

/// The team's key file, shared by both homes (as a team shares it through its own channel).
fn team_key(dir: &std::path::Path) -> String {
    format!("keyfile:{}", dir.join("team.key").display())
}

/// `gantry ARGS` from `g`'s home with `GANTRY_STATE=url` (and no key provider: only commands
/// that open no secret work on a shared store).
pub(crate) fn with_state(g: &Gantry, url: &str, args: &[&str]) -> Out {
    with_state_key(g, url, None, args)
}

/// `gantry ARGS` from `g`'s home with `GANTRY_STATE=url` and the team's key provider `key`.
pub(crate) fn with_state_key(g: &Gantry, url: &str, key: Option<&str>, args: &[&str]) -> Out {
    let mut cmd = g.command(args);
    cmd.env("GANTRY_STATE", url);
    if let Some(key) = key {
        cmd.env("GANTRY_KEY_PROVIDER", key);
    }
    g.spawn_cmd(cmd, format!("gantry {}", args.join(" ")))
        .wait(CMD_TIMEOUT)
}

fn cluster_names(out: &Out) -> Vec<String> {
    out.json()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect()
}

/// Home A brings a (local) cluster up on the store at `url`; home B lists it and sees the store
/// healthy, and is refused when it tries to destroy it (the nodes are A's directories); A
/// destroys it and B sees that too. `secret` must appear in no output.
fn two_homes_share(url: &str, kind: &str, secret: Option<&str>) {
    let a = Gantry::new();
    let b = Gantry::new();
    let key = team_key(a.work());
    let with_state =
        |g: &Gantry, url: &str, args: &[&str]| with_state_key(g, url, Some(&key), args);
    let spec = a.simple_spec("team", 1);
    let mut outs = vec![with_state(&a, url, &["up", "-f", spec.to_str().unwrap()]).ok()];
    let listed = with_state(&b, url, &["ls", "-o", "json"]).ok();
    assert_eq!(cluster_names(&listed), ["team"], "{}", listed.stdout);
    let status = with_state(&b, url, &["state", "status", "-o", "json"]).ok();
    let json = status.json();
    assert_eq!(json["kind"], kind);
    assert_eq!(json["healthy"], true);
    outs.extend([listed, status]);
    assert!(
        !b.home().join("projects/default/id_ed25519").exists(),
        "ls and state status need no key"
    );
    // The cluster's nodes are directories of A's home: B must refuse to destroy it (and keep
    // its records), not report it gone.
    let refused = with_state(&b, url, &["destroy", "team", "--yes"]).expect(2);
    assert!(
        refused.stderr.contains("made by another gantry home")
            && refused.stderr.contains("team-db-1"),
        "{}",
        refused.stderr
    );
    for verb in ["stop", "start"] {
        let refused = with_state(&b, url, &[verb, "team"]).expect(2);
        assert!(
            refused.stderr.contains("made by another gantry home"),
            "{verb}: {}",
            refused.stderr
        );
        outs.push(refused);
    }
    // B runs a command and fetches a file on A's cluster over SSH: the project key and the
    // host-key pins come from the store.
    let ran = with_state(&b, url, &["run", "team", "--", "hostname; echo from-b"]).ok();
    assert!(ran.stdout.contains("from-b"), "{}", ran.stdout);
    let got = b.work().join("hostname-copy");
    let fetched = with_state(
        &b,
        url,
        &["get", "team", "/etc/hostname", got.to_str().unwrap()],
    )
    .ok();
    assert!(got.exists(), "{}", fetched.stderr);
    let pins = |g: &Gantry| {
        std::fs::read_to_string(g.home().join("projects/default/known_hosts")).unwrap_or_default()
    };
    assert!(
        pins(&b).contains("team-db-1"),
        "B's cache has A's pin: {}",
        pins(&b)
    );
    assert_eq!(
        std::fs::read(a.home().join("projects/default/id_ed25519")).unwrap(),
        std::fs::read(b.home().join("projects/default/id_ed25519")).unwrap(),
        "both homes use the store's project key"
    );
    outs.extend([ran, fetched]);
    // B's local files are only a cache: deleted, they come back from the store.
    std::fs::remove_file(b.home().join("projects/default/id_ed25519")).unwrap();
    std::fs::remove_file(b.home().join("projects/default/known_hosts")).unwrap();
    outs.push(with_state(&b, url, &["run", "team", "--", "true"]).ok());
    // Without the key provider, a shared store is refused with a usage error naming the
    // variable; `ls` and `state status` need no key.
    let refused_key = with_state_key(&b, url, None, &["run", "team", "--", "true"]).expect(2);
    assert!(
        refused_key.stderr.contains("GANTRY_KEY_PROVIDER"),
        "{}",
        refused_key.stderr
    );
    with_state_key(&b, url, None, &["ls"]).ok();
    with_state_key(&b, url, None, &["state", "status"]).ok();
    // Another key: every secret is refused clearly (exit 7), naming the secret and the provider.
    let other_key = format!("keyfile:{}", b.work().join("other.key").display());
    let wrong = with_state_key(&b, url, Some(&other_key), &["run", "team", "--", "true"]).expect(8);
    assert!(
        wrong.stderr.contains("wrong key") && wrong.stderr.contains("ssh/default/private-key"),
        "{}",
        wrong.stderr
    );
    assert!(wrong.stderr.contains("hint:"), "{}", wrong.stderr);
    outs.push(wrong);
    let still = with_state(&a, url, &["ls", "-o", "json"]).ok();
    assert_eq!(cluster_names(&still), ["team"], "{}", still.stdout);
    assert_eq!(still.json()[0]["status"], "ready", "{}", still.stdout);
    outs.extend([refused, still]);
    outs.push(with_state(&a, url, &["destroy", "team", "--yes"]).ok());
    let after = with_state(&b, url, &["ls", "-o", "json"]).ok();
    assert!(cluster_names(&after).is_empty(), "{}", after.stdout);
    outs.push(after);
    if let Some(secret) = secret {
        for o in &outs {
            assert!(
                !o.stdout.contains(secret) && !o.stderr.contains(secret),
                "`{}` printed the store's password:\n{}\n{}",
                o.what,
                o.stdout,
                o.stderr
            );
        }
    }
}

#[test]
fn two_homes_share_a_postgres_store() {
    let Some(pg) = Service::start("postgres") else {
        return;
    };
    let password = std::fs::read_to_string(pg.dir.join("password")).expect("DIR/password");
    let password = password.trim();
    let url = format!(
        "postgres://gantry:{password}@127.0.0.1:{}/postgres",
        pg.port
    );
    two_homes_share(&url, "postgres", Some(password));
    // A wrong password: a clear failure naming the server, not the password.
    let g = Gantry::new();
    let bad = format!(
        "postgres://gantry:not-{password}@127.0.0.1:{}/postgres",
        pg.port
    );
    let out = with_state_key(&g, &bad, None, &["ls"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{}", pg.port)),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(password), "{}", out.stderr);
}

#[test]
fn two_homes_share_an_etcd_store() {
    let Some(etcd) = Service::start("etcd") else {
        return;
    };
    let url = format!("etcd://127.0.0.1:{}/team-test", etcd.port);
    two_homes_share(&url, "etcd", None);
}
