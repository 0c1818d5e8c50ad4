//! PostgreSQL-specific behaviour beyond the shared suite: the world id raced on a fresh store by
//! two machines, a database left at an older schema version by an older gantry, and the server
//! ending the store's connections.

use gantry_state::{OffsetDateTime, RunKind, RunRecord, RunStatus, StateStore};
use gantry_state_pg::PostgresStore;

use crate::support;

#[tokio::test]
async fn two_machines_creating_the_world_id_at_once_agree() {
    let Some(server) = support::server() else {
        return;
    };
    let db = support::fresh_db(server).await;
    let url = server.url(&db, "");
    let (a, b) = tokio::join!(PostgresStore::connect(&url), PostgresStore::connect(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    let (x, y, z) = tokio::join!(a.world_id(), b.world_id(), a.world_id());
    let (x, y, z) = (x.unwrap(), y.unwrap(), z.unwrap());
    assert_eq!((&x, &x), (&y, &z), "every handle must get the one world id");
    let rows: i64 = server
        .admin(&db)
        .await
        .query_one("SELECT COUNT(*) FROM meta WHERE key = 'world'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn a_database_at_an_older_version_is_migrated_and_keeps_its_data() {
    let Some(server) = support::server() else {
        return;
    };
    let db = support::fresh_db(server).await;
    let url = server.url(&db, "");
    let store = PostgresStore::connect(&url).await.unwrap();
    let run = RunRecord {
        id: "r-old".into(),
        project: "p".into(),
        cluster: "c".into(),
        kind: RunKind::Up,
        status: RunStatus::Running,
        spec_hash: None,
        holder: "1@host".into(),
        started_at: OffsetDateTime::now_utc(),
        finished_at: None,
        error: None,
    };
    store.create_run(&run).await.unwrap();
    drop(store);
    // What a version-1 gantry left: no inventory tables, no meta table.
    server
        .admin(&db)
        .await
        .batch_execute(
            "DROP TABLE secrets; DROP TABLE meta; DROP TABLE inventory;
             DROP TABLE inventory_invalidated; DELETE FROM schema_version WHERE version > 1;",
        )
        .await
        .unwrap();

    let store = PostgresStore::connect(&url).await.unwrap();
    assert_eq!(
        store.schema_version().await.unwrap(),
        PostgresStore::SCHEMA_VERSION
    );
    assert!(
        store.get_run("r-old").await.unwrap().is_some(),
        "migrating must keep existing rows"
    );
    assert!(!store.world_id().await.unwrap().is_empty());
    assert_eq!(store.get_inventory("p", "s").await.unwrap(), None);
    assert_eq!(store.get_secret("s").await.unwrap(), None);
}

/// The server ending every connection (a restart, a failover, an administrator) costs at most
/// the calls already in flight, as a clear error naming the operation; the pool then connects
/// again by itself.
#[tokio::test]
async fn connections_ended_by_the_server_are_replaced() {
    let Some(server) = support::server() else {
        return;
    };
    let db = support::fresh_db(server).await;
    let app = format!("gantry-recover-{}", uuid::Uuid::new_v4().simple());
    let store = PostgresStore::connect(&server.url(&db, &format!("application_name={app}")))
        .await
        .unwrap();
    let world = store.world_id().await.unwrap();
    let ended: i64 = server
        .admin("postgres")
        .await
        .query_one(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                                   WHERE application_name = $1) t",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ended >= 1, "no connection of the store was found to end");

    // Calls racing the termination may fail, each with an error naming what it did, and each
    // dead connection at most once: a connection that failed is dropped, not handed out again.
    let mut failures = 0;
    loop {
        match store.world_id().await {
            Ok(id) => {
                assert_eq!(id, world);
                break;
            }
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        gantry_state::StateError::Backend {
                            op: "read world id",
                            ..
                        }
                    ),
                    "unexpected error: {}",
                    support::chain(&e)
                );
                failures += 1;
                assert!(
                    failures <= ended,
                    "the store must reconnect after its connections were ended; {failures} \
                     calls failed: {}",
                    support::chain(&e)
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
