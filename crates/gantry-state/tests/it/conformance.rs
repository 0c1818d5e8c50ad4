//! The shared store contract, run against both flavours of SQLite store.

use gantry_state::{SqliteStore, conformance};

#[tokio::test]
async fn sqlite_file_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn sqlite_in_memory_passes_conformance() {
    let store = SqliteStore::open_in_memory().unwrap();
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn conformance_can_run_twice_on_one_store() {
    // Backends shared by a team run the suite against a store that already holds data.
    let store: std::sync::Arc<dyn gantry_state::StateStore> =
        std::sync::Arc::new(SqliteStore::open_in_memory().unwrap());
    conformance::run_all(store.as_ref()).await;
    conformance::run_all(store.as_ref()).await;
}
