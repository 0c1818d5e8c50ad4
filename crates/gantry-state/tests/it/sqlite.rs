//! SQLite-specific behaviour: files, migrations, and several handles on one file at once.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use gantry_state::{
    Acquire, ClusterStatus, OffsetDateTime, RunKind, RunRecord, RunStatus, SqliteStore, StateError,
    StateStore, StepStatus,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn run_record(id: &str) -> RunRecord {
    RunRecord {
        id: id.into(),
        project: "p".into(),
        cluster: "c".into(),
        kind: RunKind::Up,
        status: RunStatus::Running,
        spec_hash: None,
        holder: "1@host".into(),
        started_at: OffsetDateTime::now_utc(),
        finished_at: None,
        error: None,
    }
}

#[tokio::test]
async fn open_creates_parent_dirs_and_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/state.db");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.path(), Some(path.as_path()));
    assert_eq!(store.kind(), "sqlite");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "state file must be private");
    }
}

#[tokio::test]
async fn migrations_are_idempotent_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.schema_version().await.unwrap(),
        SqliteStore::SCHEMA_VERSION
    );
    store.create_run(&run_record("r1")).await.unwrap();
    drop(store);

    for _ in 0..2 {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.schema_version().await.unwrap(),
            SqliteStore::SCHEMA_VERSION
        );
        assert!(
            store.get_run("r1").await.unwrap().is_some(),
            "reopen must keep data"
        );
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        rows,
        i64::from(SqliteStore::SCHEMA_VERSION),
        "each migration recorded once"
    );
}

#[test]
fn newer_schema_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(SqliteStore::open(&path).unwrap());
    let newer = SqliteStore::SCHEMA_VERSION + 1;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, 'later')",
            [newer],
        )
        .unwrap();

    let err = SqliteStore::open(&path).unwrap_err();
    match &err {
        StateError::SchemaTooNew { found, supported } => {
            assert_eq!((*found, *supported), (newer, SqliteStore::SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("upgrade gantry"),
        "message must say what to do: {message}"
    );
}

#[test]
fn garbage_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(
        &path,
        b"this is not a database, just some text padding it out".repeat(20),
    )
    .unwrap();
    assert!(SqliteStore::open(&path).is_err());
}

#[tokio::test]
async fn corrupt_rows_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path).unwrap();
    store.create_run(&run_record("r1")).await.unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE runs SET started_at = 'last tuesday'", [])
        .unwrap();
    assert!(matches!(
        store.get_run("r1").await,
        Err(StateError::Corrupt { .. })
    ));
}

/// Kinds and statuses were free text before they became closed enums: rows holding the names
/// earlier versions wrote read back as those values, and a name this gantry does not know is an
/// error that names it (not a panic, not another value).
#[tokio::test]
async fn stored_kinds_and_statuses_read_back_and_unknown_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path).unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "INSERT INTO clusters (project, name, uid, provider, spec_yaml, spec_json, spec_hash,
             generation, status, created_at, updated_at, expires_at)
         VALUES ('p', 'c', 'u', 'local', '', '{}', 'h', 1, 'degraded',
             '2026-01-01T00:00:00.000000000Z', '2026-01-01T00:00:00.000000000Z',
             '2026-01-02T00:00:00.000000000Z');
         INSERT INTO runs (id, project, cluster, kind, status, spec_hash, holder, started_at)
         VALUES ('r1', 'p', 'c', 'gc', 'abandoned', NULL, '1@h',
             '2026-01-01T00:00:00.000000000Z');
         INSERT INTO steps (run_id, step_id, node, status, attempts, started_at)
         VALUES ('r1', 's1', NULL, 'skipped', 1, '2026-01-01T00:00:00.000000000Z');",
    )
    .unwrap();
    let c = store.get_cluster("p", "c").await.unwrap().unwrap();
    assert_eq!(c.status, ClusterStatus::Degraded);
    let r = store.get_run("r1").await.unwrap().unwrap();
    assert_eq!((r.kind, r.status), (RunKind::Gc, RunStatus::Abandoned));
    let steps = store.list_steps("r1").await.unwrap();
    assert_eq!(steps[0].status, StepStatus::Skipped);

    raw.execute("UPDATE runs SET kind = 'scale'", []).unwrap();
    let e = store.get_run("r1").await.unwrap_err();
    assert!(matches!(e, StateError::Corrupt { .. }), "{e:?}");
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(
        chain.contains("run kind") && chain.contains("\"scale\""),
        "{chain}"
    );
}

#[test]
fn racing_acquire_lock_has_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let stores = [
        SqliteStore::open(&path).unwrap(),
        SqliteStore::open(&path).unwrap(),
    ];
    let rounds = 50;
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let rt = runtime();
                (0..rounds)
                    .map(|round| {
                        barrier.wait();
                        let key = format!("race/{round}");
                        rt.block_on(store.acquire_lock(
                            &key,
                            &format!("t{i}"),
                            Duration::from_secs(60),
                        ))
                        .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<Vec<Acquire>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (round, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
        match (a, b) {
            (Acquire::Acquired(lease), Acquire::Held { holder, .. })
            | (Acquire::Held { holder, .. }, Acquire::Acquired(lease)) => {
                assert_eq!(
                    &lease.holder, holder,
                    "round {round}: loser must see the winner"
                );
                assert_eq!(lease.token, 1, "round {round}: first token of a key is 1");
            }
            _ => panic!("round {round}: exactly one must win, got {a:?} and {b:?}"),
        }
    }
}

#[test]
fn concurrent_append_event_never_duplicates_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let stores = [
        SqliteStore::open(&path).unwrap(),
        SqliteStore::open(&path).unwrap(),
    ];
    runtime()
        .block_on(stores[0].create_run(&run_record("r1")))
        .unwrap();
    let per_thread = 100;
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = stores
        .clone()
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let rt = runtime();
                barrier.wait();
                (0..per_thread)
                    .map(|n| {
                        let json = format!(r#"{{"thread":{i},"n":{n}}}"#);
                        rt.block_on(store.append_event("r1", OffsetDateTime::now_utc(), &json))
                            .unwrap()
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    seqs.sort_unstable();
    let want: Vec<u64> = (1..=2 * per_thread).collect();
    assert_eq!(seqs, want, "seqs must be 1..=N with no duplicates or gaps");

    let events = runtime().block_on(stores[1].list_events("r1", 0)).unwrap();
    let listed: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        listed, want,
        "list_events must see every event once, in order"
    );
}

#[tokio::test]
async fn store_is_usable_as_shared_trait_object() {
    let store: Arc<dyn StateStore> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.create_run(&run_record(&format!("r{i}"))).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(store.list_runs("p", Some("c"), 100).await.unwrap().len(), 8);
}

#[tokio::test]
async fn zero_ttl_is_rejected() {
    let store = SqliteStore::open_in_memory().unwrap();
    assert!(matches!(
        store.acquire_lock("k", "me", Duration::ZERO).await,
        Err(StateError::InvalidArgument { .. })
    ));
}

/// Regression: two commands opening a brand-new state file at once; switching it to WAL got
/// `SQLITE_BUSY` without waiting and the second command failed.
#[test]
fn many_processes_opening_a_new_database_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..10 {
        let path = dir.path().join(format!("race-{round}.db"));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    SqliteStore::open(&path).map(|_| ())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: concurrent open failed: {e}"));
        }
    }
}

/// Two handles on a fresh file ask for the world id at once (as two gantry commands would right
/// after an upgrade): one id is created, and both, and every later open, answer it.
#[test]
fn world_id_is_created_once_across_handles() {
    let dir = tempfile::tempdir().unwrap();
    let path = Arc::new(dir.path().join("state.db"));
    let barrier = Arc::new(Barrier::new(4));
    let ids: Vec<String> = (0..4)
        .map(|_| {
            let (path, barrier) = (path.clone(), barrier.clone());
            std::thread::spawn(move || {
                let store = SqliteStore::open(&path).unwrap();
                barrier.wait();
                runtime().block_on(store.world_id()).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(!ids[0].is_empty());
    assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    let again = SqliteStore::open(&path).unwrap();
    assert_eq!(runtime().block_on(again.world_id()).unwrap(), ids[0]);
    // Another store is another world.
    let other = SqliteStore::open(&dir.path().join("other.db")).unwrap();
    assert_ne!(runtime().block_on(other.world_id()).unwrap(), ids[0]);
}
