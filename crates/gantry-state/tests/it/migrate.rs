//! `gantry_state::migrate` between SQLite stores (a file and an in-memory one); the pairs with
//! PostgreSQL and etcd run in their crates' tests and in gantry-cli's.

use gantry_state::SqliteStore;
use gantry_state::migrate::check;

fn file_store(dir: &tempfile::TempDir, name: &str) -> SqliteStore {
    SqliteStore::open(&dir.path().join(name)).unwrap()
}

#[tokio::test]
async fn copy_between_sqlite_stores() {
    let dir = tempfile::tempdir().unwrap();
    check::check_copy(
        &file_store(&dir, "a.db"),
        &SqliteStore::open_in_memory().unwrap(),
    )
    .await;
}

#[tokio::test]
async fn resume_into_a_partly_copied_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    check::check_resume(&file_store(&dir, "a.db"), &file_store(&dir, "b.db")).await;
}

#[tokio::test]
async fn sqlite_refusals() {
    let dir = tempfile::tempdir().unwrap();
    check::check_refusals(&file_store(&dir, "a.db"), &file_store(&dir, "b.db")).await;
}
