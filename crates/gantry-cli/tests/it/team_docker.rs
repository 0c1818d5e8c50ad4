//! Two gantry homes, one team store (PostgreSQL, and in a second test etcd), one shared Docker
//! engine: the second home
//! works on the first home's cluster as if it were its own — `ls`, `run`, `get`, `up` and
//! finally `destroy` — and two `up` of the same cluster started at once from both homes
//! serialize on the store's cluster lock and converge to exactly the spec.
//!
//! Unlike a local-provider cluster (directories of one home, see `team_store`), a Docker
//! cluster belongs to nobody's home: it is reachable by every home that shares the store and
//! the engine. The stores and the engine are started by `scripts/services.sh` and
//! `scripts/test.sh`; without them the tests are skipped, and fail under `CI=true`.

use std::path::Path;
use std::time::Duration;

use crate::docker::Engine;
use crate::support::{CMD_TIMEOUT, Gantry, Out};
use crate::team_store::{Service, shared_key_provider};

/// `gantry ARGS` from `g`'s home on the team store.
fn team(g: &Gantry, url: &str, key: &Path, args: &[&str]) -> Out {
    team_bg(g, url, key, args).wait(CMD_TIMEOUT)
}

fn team_bg(g: &Gantry, url: &str, key: &Path, args: &[&str]) -> crate::support::Bg {
    let mut cmd = g.command(args);
    cmd.env("GANTRY_STATE", url)
        .env("GANTRY_KEY_PROVIDER", format!("keyfile:{}", key.display()));
    g.spawn_cmd(cmd, format!("gantry {}", args.join(" ")))
}

/// Destroys the cluster through the team store when the test ends, however it ends: the homes'
/// own guards only know their own SQLite stores.
struct Cleanup<'a> {
    g: &'a Gantry,
    url: String,
    key: std::path::PathBuf,
    cluster: &'static str,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let mut bg = team_bg(
            self.g,
            &self.url,
            &self.key,
            &["destroy", self.cluster, "--yes", "--lock-timeout", "20s"],
        );
        let _ = bg.try_wait_for(Duration::from_secs(60));
    }
}

fn node_names(out: &Out) -> Vec<String> {
    let json = out.json();
    let mut names: Vec<String> = json["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes in {}", out.stdout))
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn a_second_home_runs_grows_and_destroys_a_docker_cluster_on_a_postgres_store() {
    let Some(e) = Engine::get() else { return };
    let Some(pg) = Service::start("postgres") else {
        return;
    };
    let password = std::fs::read_to_string(pg.dir.join("password")).expect("DIR/password");
    let url = format!(
        "postgres://gantry:{}@127.0.0.1:{}/postgres",
        password.trim(),
        pg.port
    );
    second_home_runs_grows_and_destroys(&e, &url, "teamdock");
}

#[test]
fn a_second_home_runs_grows_and_destroys_a_docker_cluster_on_an_etcd_store() {
    let Some(e) = Engine::get() else { return };
    let Some(etcd) = Service::start("etcd") else {
        return;
    };
    let url = format!("etcd://127.0.0.1:{}/team-docker", etcd.port);
    second_home_runs_grows_and_destroys(&e, &url, "teametcd");
}

/// Home A makes a one-node Docker cluster on the store at `url`; home B lists it, runs on it
/// and copies a file from it; both grow it to three at once; B destroys it.
fn second_home_runs_grows_and_destroys(e: &Engine, url: &str, cluster: &'static str) {
    let (a, b) = (Gantry::new(), Gantry::new());
    let key = shared_key_provider(a.work());
    let _cleanup = Cleanup {
        g: &b,
        url: url.to_string(),
        key: key.clone(),
        cluster,
    };

    // A makes it; B sees it, runs on it and copies a file from it.
    let one = e.spec(&a, cluster, 1, "");
    team(&a, url, &key, &["up", "-f", one.to_str().unwrap()]).ok();
    let listed = team(&b, url, &key, &["ls", "-o", "json"]).ok();
    assert!(listed.stdout.contains(cluster), "{}", listed.stdout);
    let ran = team(
        &b,
        url,
        &key,
        &["run", cluster, "--", "echo made-by-a > /tmp/f; hostname"],
    )
    .ok();
    assert!(
        ran.stdout.contains(&format!("{cluster}-node-1")),
        "{}",
        ran.stdout
    );
    let back = b.work().join("f");
    team(
        &b,
        url,
        &key,
        &[
            "get",
            &format!("{cluster}/1"),
            "/tmp/f",
            back.to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "made-by-a\n");

    // Both homes grow it to 3 at once: the shared lock serializes the two runs (one waits for
    // the other), and the cluster ends with exactly three nodes, no duplicates.
    let three_a = e.spec(&a, cluster, 3, "");
    let three_b = e.spec(&b, cluster, 3, "");
    let up_a = team_bg(&a, url, &key, &["up", "-f", three_a.to_str().unwrap()]);
    let up_b = team_bg(&b, url, &key, &["up", "-f", three_b.to_str().unwrap()]);
    let (out_a, out_b) = (up_a.wait(CMD_TIMEOUT).ok(), up_b.wait(CMD_TIMEOUT).ok());
    assert!(
        out_a
            .stderr
            .contains(&format!("waiting for the lock on {cluster}"))
            || out_b
                .stderr
                .contains(&format!("waiting for the lock on {cluster}")),
        "neither run waited for the other:\n{}\n{}",
        out_a.stderr,
        out_b.stderr
    );
    let (containers, _, _) = e.labelled(cluster);
    assert_eq!(containers.len(), 3, "containers: {containers:?}");
    let shown = team(&a, url, &key, &["show", cluster, "-o", "json"]).ok();
    assert_eq!(
        node_names(&shown),
        [1, 2, 3].map(|i| format!("{cluster}-node-{i}")),
        "{}",
        shown.stdout
    );

    // B destroys it; nothing labelled is left on the engine and A sees it gone.
    team(&b, url, &key, &["destroy", cluster, "--yes"]).ok();
    e.assert_clean(cluster);
    let after = team(&a, url, &key, &["ls", "-o", "json"]).ok();
    assert!(!after.stdout.contains(cluster), "{}", after.stdout);
}
