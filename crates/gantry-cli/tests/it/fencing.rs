//! Fencing through the built binary: a `gantry up` frozen with SIGSTOP past its lease, another
//! process takes the cluster lock and destroys the cluster, and the first is resumed. Its
//! writes are refused by the store (none lands: the destroyed cluster is not recorded again, its
//! own run log gains nothing), it ends as "lock lost" with exit 7, and the run that took the
//! lock over closed its run record as abandoned.
//!
//! On SQLite always; on PostgreSQL and etcd with the servers of `scripts/services.sh` (skipped
//! with a reason when they are not installed, failing under `CI=true`).

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::*;
use crate::team_store::Service;

/// The first run's lease: short, so that a SIGSTOP of a few seconds outlives it.
const SHORT_LEASE_MS: &str = "1000";

/// `gantry ARGS` in `g`'s home, on the store at `state` (the home's SQLite when None), with the
/// key provider a shared store needs (a key file beside the home, made on first use).
fn cmd(g: &Gantry, state: Option<&str>, args: &[&str]) -> std::process::Command {
    let mut c = g.command(args);
    if let Some(url) = state {
        c.env("GANTRY_STATE", url).env(
            "GANTRY_KEY_PROVIDER",
            format!("keyfile:{}", g.work().join("team.key").display()),
        );
    }
    c
}

fn run(g: &Gantry, state: Option<&str>, args: &[&str]) -> Out {
    g.spawn_cmd(cmd(g, state, args), format!("gantry {}", args.join(" ")))
        .wait(CMD_TIMEOUT)
}

/// A one-node local cluster whose only blueprint step touches `marker` and then sleeps: the
/// first `up` is frozen inside it.
fn sleepy_spec(g: &Gantry, cluster: &str, marker: &std::path::Path) -> PathBuf {
    let dir = g.work().join("sleepy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("blueprint.yaml"),
        format!(
            "name: sleepy\ndescription: holds the run inside a step\nsteps:\n  - id: nap\n    run: \"touch {}; sleep 8\\n\"\n",
            marker.display()
        ),
    )
    .unwrap();
    g.spec(
        &format!("{cluster}.yaml"),
        cluster,
        &format!(
            "apiVersion: gantry/v1\nname: {cluster}\nprovider: local\nlifetime: 1h\npools:\n  - name: db\n    count: 1\nblueprints:\n  - path: sleepy\n"
        ),
    )
}

fn json_lines(out: &Out) -> Vec<Value> {
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn stale_holder_is_fenced_out(state: Option<&str>) {
    let g = Gantry::new();
    let c = "fenced";
    let marker = g.work().join("napping");
    let spec = sleepy_spec(&g, c, &marker);
    let spec_s = spec.to_str().unwrap();

    // 1. The first `up`, with a 1 s lease, is frozen inside its sleeping step.
    let mut first_cmd = cmd(&g, state, &["up", "-f", spec_s]);
    first_cmd.env("GANTRY_LOCK_TTL_MS", SHORT_LEASE_MS);
    let mut first = g.spawn_cmd(first_cmd, format!("gantry up -f {spec_s} (first)"));
    let napping = eventually(Duration::from_secs(90), || {
        marker.exists() || first.exited()
    });
    assert!(
        napping && marker.exists(),
        "the first up never reached its sleeping step:\n{}",
        first.stderr_now()
    );
    first.signal(Signal::SIGSTOP);
    // Past its lease (1 s; the renewer cannot run while the process is stopped).
    std::thread::sleep(Duration::from_millis(2500));

    // 2. Another process takes the lock over and destroys the cluster.
    let destroyed = run(&g, state, &["destroy", c, "--yes", "--lock-timeout", "30s"]).ok();
    let listed = run(&g, state, &["ls", "-o", "json"]).ok();
    assert!(
        !listed.stdout.contains(&format!("\"{c}\"")),
        "destroy removed the cluster:\n{}",
        listed.stdout
    );

    // 3. The first resumes: every write it tries is refused, and it ends as "lock lost".
    first.signal(Signal::SIGCONT);
    let out = first.wait(Duration::from_secs(90));
    eprintln!(
        "--- the resumed up\n{}\n--- the destroy\n{}",
        out.stderr, destroyed.stderr
    );
    assert_eq!(
        out.code,
        Some(7),
        "a run that lost its lock exits 7\n--- stdout\n{}\n--- stderr\n{}",
        out.stdout,
        out.stderr
    );
    for needle in [
        &format!("lost the lock on cluster {c}"),
        "another run took it over",
        "hint:",
    ] {
        assert!(
            out.stderr.contains(needle),
            "missing {needle:?} in:\n{}",
            out.stderr
        );
    }

    // 4. The store holds only what the second process wrote.
    let listed = run(&g, state, &["ls", "-o", "json"]).ok();
    assert!(
        !listed.stdout.contains(&format!("\"{c}\"")),
        "the stale run must not record the destroyed cluster again:\n{}",
        listed.stdout
    );
    assert!(
        g.cluster_uids(c).is_empty(),
        "no node of the cluster is left: {:?}",
        g.cluster_uids(c)
    );
    let runs = run(&g, state, &["runs", c, "-o", "json"]).ok().json();
    let runs = runs.as_array().expect("runs is an array");
    let kinds: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("destroy", "succeeded"), ("up", "abandoned")],
        "the run that took the lock over closed the stale one: {runs:?}"
    );
    let stale = &runs[1];
    assert!(
        stale["error"]
            .as_str()
            .is_some_and(|e| e.contains("lost the cluster lock")),
        "{stale}"
    );
    let log = run(
        &g,
        state,
        &["logs", stale["id"].as_str().unwrap(), "-o", "json"],
    )
    .ok();
    let events = json_lines(&log);
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(
        types.contains(&"run_started"),
        "the stale run's log keeps what it wrote before the takeover: {types:?}"
    );
    for late in ["run_finished", "interrupted"] {
        assert!(
            !types.contains(&late),
            "nothing the stale run emitted after the takeover may land in its log ({late}): \
             {types:?}"
        );
    }
    assert!(
        !events.iter().any(|e| e["type"] == "step_finished"
            && e["step"].as_str().is_some_and(|s| s.contains("/nap@"))),
        "the step the run was frozen in never finished in the log: {types:?}"
    );
    if state.is_none() {
        assert_eq!(g.lock_holder(c), None, "no lock is left behind");
    }
    drop(destroyed);
}

#[test]
fn a_holder_stopped_past_its_lease_is_fenced_out_sqlite() {
    stale_holder_is_fenced_out(None);
}

#[test]
fn a_holder_stopped_past_its_lease_is_fenced_out_postgres() {
    let Some(pg) = Service::start("postgres") else {
        return;
    };
    stale_holder_is_fenced_out(Some(&pg.postgres_url()));
}

#[test]
fn a_holder_stopped_past_its_lease_is_fenced_out_etcd() {
    let Some(etcd) = Service::start("etcd") else {
        return;
    };
    stale_holder_is_fenced_out(Some(&format!("etcd://127.0.0.1:{}/fencing", etcd.port)));
}
