//! The shared store contract, run against both flavours of SQLite store.

use gantry_state::{SqliteStore, conformance};

#[tokio::test]
async fn sqlite_file_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path).unwrap();
    // A second handle on the same file, as a second process would open it.
    let second = SqliteStore::open(&path).unwrap();
    conformance::run_all(&store, &second).await;
}

#[tokio::test]
async fn sqlite_in_memory_passes_conformance() {
    let store = SqliteStore::open_in_memory().unwrap();
    // An in-memory database cannot be opened twice: the second handle is a clone.
    conformance::run_all(&store, &store.clone()).await;
}

#[tokio::test]
async fn conformance_can_run_twice_on_one_store() {
    // Backends shared by a team run the suite against a store that already holds data.
    let store: std::sync::Arc<dyn gantry_state::StateStore> =
        std::sync::Arc::new(SqliteStore::open_in_memory().unwrap());
    conformance::run_all(store.as_ref(), store.as_ref()).await;
    conformance::run_all(store.as_ref(), store.as_ref()).await;
}

#[tokio::test]
async fn adopt_world_id_sets_a_fresh_stores_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path).unwrap();
    let second = SqliteStore::open(&path).unwrap();
    conformance::check_adopt_world_fresh(&store, &second).await;
}
