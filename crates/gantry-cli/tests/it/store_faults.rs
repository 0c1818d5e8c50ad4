//! The state store failing under gantry: PostgreSQL stopped (`pg_ctl stop -m immediate`) or etcd
//! killed (SIGKILL) in the middle of `gantry up`, each a server this test started itself
//! (`scripts/services.sh start`, `crash PID`, `restart DIR`). The run must stop within a bound,
//! with exit 1 and an error that names the store (its URL without the password); once the store
//! is back on the same data and port, `up` again converges: every node once, by the provider's
//! listing and by the records. And a store at a newer schema version is refused clearly.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::*;
use crate::team_store::Service;

const NODES: u32 = 8;

/// How long a run may take to give up once its store is gone: the pool's and the client's
/// timeouts bound it (10 s per call to a store that does not answer, a few calls in a row: the
/// end of the run, the events it gives up recording).
const GIVE_UP_WITHIN: Duration = Duration::from_secs(120);

fn services(args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh");
    let out = Command::new(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/services.sh");
    assert!(
        out.status.success(),
        "scripts/services.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Signals a server this test started, by its PID, and its children: PostgreSQL's backends
/// and workers are children of the postmaster, each in a session of its own.
fn signal(pid: &str, sig: Signal) {
    let pid: i32 = pid.parse().expect("a PID");
    let parent_of = |child: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let mut pids = vec![pid];
    pids.extend(
        procs()
            .into_iter()
            .map(|p| p.pid)
            .filter(|p| parent_of(*p) == Some(pid)),
    );
    for p in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
    }
}

/// `gantry ARGS` on the store at `url`, with the key provider a shared store needs (a key file
/// beside the home, made on first use).
fn with_state(g: &Gantry, url: &str, args: &[&str]) -> Bg {
    let mut cmd = g.command(args);
    cmd.env("GANTRY_STATE", url).env(
        "GANTRY_KEY_PROVIDER",
        format!("keyfile:{}", g.work().join("team.key").display()),
    );
    g.spawn_cmd(cmd, format!("gantry {}", args.join(" ")))
}

/// How the store goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// `services.sh crash` (PostgreSQL: `pg_ctl stop -m immediate`; etcd: SIGKILL), then
    /// `services.sh restart` on the same data and port.
    Crash,
    /// SIGSTOP: the server keeps its TCP connections open and answers nothing (a frozen host,
    /// a dead link); then SIGCONT.
    Freeze,
}

/// `up` of an 8-node local cluster; the store goes away once the run is creating nodes; the
/// run fails naming `shown` (the store as printed) within a bound; the store comes back; `up`
/// converges.
fn store_goes_away_during_up(
    mut svc: Service,
    url: &str,
    shown: &str,
    secret: Option<&str>,
    how: Outage,
) {
    let g = Gantry::new();
    let c = "outage";
    let spec = g.simple_spec(c, NODES);
    let spec_s = spec.to_str().unwrap();

    let mut first = with_state(&g, url, &["up", "-f", spec_s]);
    let started = first.wait_for_stderr("create started", Duration::from_secs(90));
    assert!(
        started,
        "up never started creating:\n{}",
        first.stderr_now()
    );
    let crashed_at = Instant::now();
    match how {
        Outage::Crash => {
            services(&["crash", &svc.pid]);
        }
        Outage::Freeze => signal(&svc.pid, Signal::SIGSTOP),
    }
    let out = first.wait(Duration::from_secs(180));
    let took = crashed_at.elapsed();
    eprintln!(
        "--- up with its store gone (gave up after {took:?})\n{}",
        out.stderr
    );
    assert_eq!(
        out.code,
        Some(1),
        "a run whose store went away fails with exit 1 (state store failure)\n{}",
        out.stderr
    );
    assert!(
        took < GIVE_UP_WITHIN,
        "the run gave up {took:?} after the store went away: it must not hang"
    );
    assert!(
        out.stderr.contains(shown),
        "the error names the store ({shown}):\n{}",
        out.stderr
    );
    if let Some(secret) = secret {
        assert!(!out.stderr.contains(secret), "{}", out.stderr);
    }

    // While the store is down, a command that needs it fails the same way, at once.
    let down = with_state(&g, url, &["ls"]).wait(CMD_TIMEOUT);
    assert_eq!(down.code, Some(1), "{down:?}");
    assert!(down.stderr.contains(shown), "{}", down.stderr);

    // The store comes back on the same data and port: `up` converges.
    match how {
        Outage::Crash => {
            let back = services(&["restart", svc.dir.to_str().unwrap()]);
            svc.pid = back
                .split_whitespace()
                .nth(1)
                .expect("PORT PID DIR")
                .to_string();
        }
        Outage::Freeze => signal(&svc.pid, Signal::SIGCONT),
    }
    let again = with_state(&g, url, &["up", "-f", spec_s, "-o", "json"]).wait(CMD_TIMEOUT);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    let want: Vec<String> = (1..=NODES).map(|i| format!("{c}-db-{i}")).collect();
    // By the provider: one node directory (and one agent) per node.
    let uids = g.cluster_uids(c);
    assert_eq!(
        uids.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        want,
        "the provider lists every node once: {uids:?}"
    );
    for (name, uid) in &uids {
        let one = eventually(Duration::from_secs(3), || agent_pids(uid).len() == 1);
        assert!(one, "{name}: agents {:?}", agent_pids(uid));
    }
    // By the records.
    let shown_json = with_state(&g, url, &["show", c, "-o", "json"])
        .wait(CMD_TIMEOUT)
        .ok()
        .json();
    let recorded: Vec<String> = shown_json["nodes"]
        .as_array()
        .expect("show lists nodes")
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(recorded, want, "the records hold every node once");
    // The run the outage cut short is closed, not left running.
    let runs = with_state(&g, url, &["runs", c, "-o", "json"])
        .wait(CMD_TIMEOUT)
        .ok()
        .json();
    let statuses: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    // A crashed store lost the run's last writes: the next run closes it as abandoned. A
    // frozen one may apply them when it thaws (a call that timed out on our side had reached
    // it): then the run closed itself as failed.
    let closed: &[&str] = match how {
        Outage::Crash => &["abandoned"],
        Outage::Freeze => &["abandoned", "failed"],
    };
    assert!(
        statuses.len() == 2 && statuses[0] == "succeeded" && closed.contains(&statuses[1]),
        "{runs}"
    );
    with_state(&g, url, &["destroy", c, "--yes"])
        .wait(CMD_TIMEOUT)
        .ok();
    assert!(g.cluster_uids(c).is_empty());
}

#[test]
fn postgres_stopped_during_up_then_converges() {
    let Some(pg) = Service::start("postgres") else {
        return;
    };
    let url = pg.postgres_url();
    let password = std::fs::read_to_string(pg.dir.join("password")).unwrap();
    let shown = format!("postgres://gantry:***@127.0.0.1:{}/postgres", pg.port);
    store_goes_away_during_up(pg, &url, &shown, Some(password.trim()), Outage::Crash);
}

#[test]
fn postgres_frozen_during_up_fails_within_a_bound_then_converges() {
    let Some(pg) = Service::start("postgres") else {
        return;
    };
    let url = pg.postgres_url();
    let password = std::fs::read_to_string(pg.dir.join("password")).unwrap();
    let shown = format!("postgres://gantry:***@127.0.0.1:{}/postgres", pg.port);
    store_goes_away_during_up(pg, &url, &shown, Some(password.trim()), Outage::Freeze);
}

#[test]
fn etcd_killed_during_up_then_converges() {
    let Some(etcd) = Service::start("etcd") else {
        return;
    };
    let url = format!("etcd://127.0.0.1:{}/outage", etcd.port);
    let shown = url.clone();
    store_goes_away_during_up(etcd, &url, &shown, None, Outage::Crash);
}

/// A store written by a newer gantry (its schema version past this binary's) is refused with
/// exit 1 and a message that says to upgrade, before anything is read or written.
#[test]
fn a_store_at_a_newer_schema_version_is_refused() {
    let check = |g: &Gantry, url: Option<&str>, what: &str| {
        let mut cmd = g.command(&["ls"]);
        if let Some(url) = url {
            cmd.env("GANTRY_STATE", url);
        }
        let out = g
            .spawn_cmd(cmd, format!("gantry ls ({what})"))
            .wait(CMD_TIMEOUT);
        assert_eq!(out.code, Some(1), "{what}: {out:?}");
        assert!(
            out.stderr.contains("schema version 99") && out.stderr.contains("upgrade gantry"),
            "{what}: {}",
            out.stderr
        );
    };
    // SQLite (with the sqlite3 tool, when the machine has it).
    if require_tool("/usr/bin/sqlite3") {
        let g = Gantry::new();
        g.run(&["ls"]).ok();
        let db = g.home().join("state.db");
        let status = Command::new("sqlite3")
            .arg(&db)
            .arg("INSERT INTO schema_version (version, applied_at) VALUES (99, 'later')")
            .status()
            .unwrap();
        assert!(status.success());
        check(&g, None, "sqlite");
    }
    if let Some(pg) = Service::start("postgres") {
        let url = pg.postgres_url();
        let g = Gantry::new();
        with_state(&g, &url, &["ls"]).wait(CMD_TIMEOUT).ok();
        let password = std::fs::read_to_string(pg.dir.join("password")).unwrap();
        let status = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "gantry",
                "-d",
                "postgres",
            ])
            .args([
                "-Atqc",
                "INSERT INTO schema_version (version, applied_at) VALUES (99, now())",
            ])
            .env("PGPASSWORD", password.trim())
            .status()
            .unwrap();
        assert!(status.success());
        check(&g, Some(&url), "postgres");
    }
    if let Some(etcd) = Service::start("etcd") {
        let url = format!("etcd://127.0.0.1:{}/newer", etcd.port);
        let g = Gantry::new();
        with_state(&g, &url, &["ls"]).wait(CMD_TIMEOUT).ok();
        let status = Command::new("etcdctl")
            .args(["--endpoints", &format!("http://127.0.0.1:{}", etcd.port)])
            .args(["put", "/newer/schema", "99"])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        check(&g, Some(&url), "etcd");
    }
}
