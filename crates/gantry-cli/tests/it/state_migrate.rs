//! `gantry state migrate --to URL`: a home's records moved into another store, where gantry
//! carries on as the same world; what it refuses, and how it fails.
//!
//! PostgreSQL and etcd are started once for this module (`scripts/services.sh`, stopped by its
//! watcher when the test binary exits); every test gets a database or key prefix of its own.
//! Without the server a test skips with a reason; under `CI=true` it fails.

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use gantry_state::migrate::check;
use gantry_state::{Acquire, SqliteStore, StateStore};

use crate::support::{Gantry, Out, node_dirs};
use crate::team_store::{Service, with_state, with_state_key};

/// The PostgreSQL server of this module and its password.
struct Pg {
    service: Service,
    password: String,
}

fn postgres() -> Option<&'static Pg> {
    static PG: OnceLock<Option<Pg>> = OnceLock::new();
    PG.get_or_init(|| {
        let service = Service::start("postgres")?;
        let password = std::fs::read_to_string(service.dir.join("password"))
            .expect("DIR/password")
            .trim()
            .to_owned();
        Some(Pg { service, password })
    })
    .as_ref()
}

impl Pg {
    /// A new database; answers its URL (with the password).
    fn fresh_db(&self) -> String {
        let name = format!("migrate_{}", uuid::Uuid::new_v4().simple());
        let admin = self.url("postgres");
        let out = Command::new("psql")
            .args([admin.as_str(), "-qc", &format!("CREATE DATABASE {name}")])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    fn url(&self, db: &str) -> String {
        format!(
            "postgres://gantry:{}@127.0.0.1:{}/{db}",
            self.password, self.service.port
        )
    }
}

fn etcd() -> Option<&'static Service> {
    static ETCD: OnceLock<Option<Service>> = OnceLock::new();
    ETCD.get_or_init(|| Service::start("etcd")).as_ref()
}

fn names(out: &Out) -> Vec<String> {
    out.json()
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect()
}

fn assert_no_secret(outs: &[&Out], secret: &str) {
    for o in outs {
        assert!(
            !o.stdout.contains(secret) && !o.stderr.contains(secret),
            "`{}` printed the password:\n{}\n{}",
            o.what,
            o.stdout,
            o.stderr
        );
    }
}

/// The story: a home brings a local cluster up on its SQLite file, migrates to
/// PostgreSQL, and from then on (GANTRY_STATE set) lists, shows and destroys it there — it is
/// still this world's. A second migrate is refused without --force and converges with it; the
/// password never shows.
#[test]
fn a_local_cluster_moves_from_sqlite_to_postgres_and_stays_ours() {
    let Some(pg) = postgres() else { return };
    let url = pg.fresh_db();
    let g = Gantry::new();
    let spec = g.simple_spec("moved", 2);
    g.run(&["up", "-f", spec.to_str().unwrap()]).ok();
    g.run(&["extend", "moved", "1h"]).ok();

    let first = g.run(&["state", "migrate", "--to", &url]).ok();
    for kind in [
        "clusters",
        "nodes",
        "runs",
        "steps",
        "events",
        "inventory",
        "secrets",
    ] {
        let line = first
            .stdout
            .lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} row:\n{}", first.stdout));
        assert!(line.trim_end().ends_with("ok"), "{line}");
    }
    assert!(
        first.stderr.contains("postgres://gantry:***@127.0.0.1"),
        "{}",
        first.stderr
    );

    let refused = g.run(&["state", "migrate", "--to", &url]).expect(6);
    assert!(
        refused.stderr.contains("already holds records") && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    let again = g
        .run(&["state", "migrate", "--to", &url, "--force", "-o", "json"])
        .ok();
    let report = again.json();
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["source_world"], report["target_world"], "{report}");
    assert!(
        report["target"]
            .as_str()
            .is_some_and(|t| t.contains("gantry:***@")),
        "{report}"
    );
    for k in report["kinds"].as_array().expect("kinds") {
        assert_eq!(k["written"], 0, "a converged copy writes nothing: {k}");
        assert_eq!(k["source"], k["target"], "{k}");
    }
    let runs = report["kinds"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kind"] == "runs"))
        .expect("runs row");
    assert!(runs["source"]["count"].as_u64() >= Some(2), "{runs}");

    let listed = with_state(&g, &url, &["ls", "-o", "json"]).ok();
    assert_eq!(names(&listed), ["moved"], "{}", listed.stdout);
    // The secrets moved sealed under the home's key file: that is the provider to name on the
    // shared store. With the local key and pins deleted, they come from PostgreSQL.
    let key = format!("keyfile:{}", g.home().join("secrets.key").display());
    let key = Some(key.as_str());
    for cache in ["id_ed25519", "known_hosts"] {
        std::fs::remove_file(g.home().join("projects/default").join(cache)).unwrap();
    }
    let ran = with_state_key(&g, &url, key, &["run", "moved", "--", "echo moved-ok"]).ok();
    assert_eq!(ran.stdout.matches("moved-ok").count(), 2, "{}", ran.stdout);
    let shown = with_state_key(&g, &url, key, &["show", "moved", "-o", "json"]).ok();
    assert!(shown.stdout.contains("moved-db-2"), "{}", shown.stdout);
    let logs = with_state(&g, &url, &["runs", "moved"]).ok();
    let destroyed = with_state_key(&g, &url, key, &["destroy", "moved", "--yes"]).ok();
    let after = with_state(&g, &url, &["ls", "-o", "json"]).ok();
    assert!(names(&after).is_empty(), "{}", after.stdout);
    let left = node_dirs(&g.home().join("local"), false);
    assert!(left.is_empty(), "node directories left: {left:?}");
    assert!(
        g.home_pids().is_empty(),
        "node processes left: {:?}",
        g.home_pids()
    );
    assert_no_secret(
        &[
            &first, &refused, &again, &listed, &ran, &shown, &logs, &destroyed, &after,
        ],
        &pg.password,
    );
}

/// The same move into etcd, through the binary: the cluster is listed and destroyed there.
#[test]
fn a_local_cluster_moves_from_sqlite_to_etcd() {
    let Some(etcd) = etcd() else { return };
    let url = format!(
        "etcd://127.0.0.1:{}/migrate-{}",
        etcd.port,
        uuid::Uuid::new_v4().simple()
    );
    let g = Gantry::new();
    let spec = g.simple_spec("to-etcd", 1);
    g.run(&["up", "-f", spec.to_str().unwrap()]).ok();
    let report = g
        .run(&["state", "migrate", "--to", &url, "-o", "json"])
        .ok()
        .json();
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["source_world"], report["target_world"], "{report}");
    let listed = with_state(&g, &url, &["ls", "-o", "json"]).ok();
    assert_eq!(names(&listed), ["to-etcd"], "{}", listed.stdout);
    let key = format!("keyfile:{}", g.home().join("secrets.key").display());
    with_state_key(&g, &url, Some(&key), &["destroy", "to-etcd", "--yes"]).ok();
    let after = with_state(&g, &url, &["ls", "-o", "json"]).ok();
    assert!(names(&after).is_empty(), "{}", after.stdout);
    assert!(node_dirs(&g.home().join("local"), false).is_empty());
}

/// A source with a live lock (a run in progress) is refused with exit 5, naming the lock;
/// nothing is written to the target.
#[test]
fn a_locked_source_is_refused() {
    let g = Gantry::new();
    let spec = g.simple_spec("busy", 1);
    g.run(&["up", "-f", spec.to_str().unwrap()]).ok();
    let store = SqliteStore::open(&g.home().join("state.db")).unwrap();
    let lease = crate::support::block_on(store.acquire_lock(
        "test-lock",
        "4242@elsewhere",
        Duration::from_secs(120),
    ))
    .unwrap();
    let target = g.work().join("target.db");
    let to = format!("sqlite://{}", target.display());
    let out = g.run(&["state", "migrate", "--to", &to]).expect(5);
    assert!(
        out.stderr.contains("test-lock") && out.stderr.contains("4242@elsewhere"),
        "{}",
        out.stderr
    );
    let target = SqliteStore::open(&target).unwrap();
    assert!(
        crate::support::block_on(target.list_projects())
            .unwrap()
            .is_empty()
    );
    if let Acquire::Acquired(lease) = lease {
        crate::support::block_on(store.release_lock(&lease)).unwrap();
    }
    g.run(&["state", "migrate", "--to", &to]).ok();
}

/// A copy that cannot be made equal (the target's run went on after the copy) fails the
/// verification with exit 1, naming the kind that differs; an interrupted copy (the target
/// holds part of it) is finished by --force.
#[test]
fn a_difference_fails_the_verification_and_force_finishes_a_partial_copy() {
    let g = Gantry::new();
    let spec = g.simple_spec("partial", 1);
    g.run(&["up", "-f", spec.to_str().unwrap()]).ok();
    let source = SqliteStore::open(&g.home().join("state.db")).unwrap();
    let target_path = g.work().join("target.db");
    let to = format!("sqlite://{}", target_path.display());
    let target = SqliteStore::open(&target_path).unwrap();
    // Part of a copy: the world, the cluster record and one run without its events.
    let (world, cluster, run) = crate::support::block_on(async {
        let world = source.world_id().await.unwrap();
        let cluster = source.get_cluster("default", "partial").await.unwrap();
        let runs = source.list_all_runs("default").await.unwrap();
        (world, cluster.expect("recorded"), runs[0].clone())
    });
    crate::support::block_on(async {
        target.adopt_world_id(&world).await.unwrap();
        target.put_cluster(&cluster).await.unwrap();
        target.create_run(&run).await.unwrap();
    });
    g.run(&["state", "migrate", "--to", &to]).expect(6);
    let finished = g
        .run(&["state", "migrate", "--to", &to, "--force", "-o", "json"])
        .ok();
    assert_eq!(finished.json()["verified"], true, "{}", finished.stdout);

    // The run goes on in the target only: the sides now differ in events.
    crate::support::block_on(target.append_event(
        &run.id,
        gantry_state::OffsetDateTime::now_utc(),
        "{}",
    ))
    .unwrap();
    let differs = g
        .run(&["state", "migrate", "--to", &to, "--force"])
        .expect(1);
    assert!(
        differs
            .stderr
            .contains("the target differs from the source in events"),
        "{}",
        differs.stderr
    );
    assert!(differs.stdout.contains("DIFFERS"), "{}", differs.stdout);
}

/// The copy between the two team stores, through the library as the server would call it:
/// PostgreSQL into etcd, and etcd back into SQLite (the other pairs run in the stores' crates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_between_team_stores() {
    let (Some(pg), Some(etcd)) = (postgres(), etcd()) else {
        return;
    };
    let pg_store = gantry_state_pg::PostgresStore::connect(&pg.fresh_db())
        .await
        .unwrap();
    let prefix = |name: &str| format!("/migrate-{name}-{}/", uuid::Uuid::new_v4().simple());
    let endpoint = [format!("127.0.0.1:{}", etcd.port)];
    let etcd_store = gantry_state_etcd::EtcdStore::connect(&endpoint, &prefix("pg-etcd"))
        .await
        .unwrap();
    check::check_copy(&pg_store, &etcd_store).await;

    let etcd_source = gantry_state_etcd::EtcdStore::connect(&endpoint, &prefix("etcd-sqlite"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    check::check_copy(&etcd_source, &sqlite).await;
    let resumed = gantry_state_pg::PostgresStore::connect(&pg.fresh_db())
        .await
        .unwrap();
    let etcd_resume = gantry_state_etcd::EtcdStore::connect(&endpoint, &prefix("resume"))
        .await
        .unwrap();
    check::check_resume(&etcd_resume, &resumed).await;
}
