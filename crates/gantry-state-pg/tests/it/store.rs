//! PostgreSQL-specific behaviour beyond the shared suite: the world id raced on a fresh store by
//! two machines, and a database left at an older schema version by an older gantry.

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
            "DROP TABLE meta; DROP TABLE inventory; DROP TABLE inventory_invalidated;
             DELETE FROM schema_version WHERE version > 1;",
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
}
