//! `gantry_state::migrate` with PostgreSQL on one or both sides (SQLite ↔ PostgreSQL); the
//! PostgreSQL → etcd pair runs in gantry-cli's tests, which build both.

use gantry_state::SqliteStore;
use gantry_state::migrate::check;
use gantry_state_pg::PostgresStore;

use crate::support;

async fn fresh(server: &support::Server) -> PostgresStore {
    let url = server.url(&support::fresh_db(server).await, "");
    PostgresStore::connect(&url).await.unwrap()
}

#[tokio::test]
async fn copy_from_sqlite_to_postgres() {
    let Some(server) = support::server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    check::check_copy(&sqlite, &fresh(server).await).await;
}

#[tokio::test]
async fn resume_from_postgres_into_a_partly_copied_sqlite_store() {
    let Some(server) = support::server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    check::check_resume(&fresh(server).await, &sqlite).await;
}

#[tokio::test]
async fn postgres_refusals() {
    let Some(server) = support::server() else {
        return;
    };
    check::check_refusals(&fresh(server).await, &fresh(server).await).await;
}
