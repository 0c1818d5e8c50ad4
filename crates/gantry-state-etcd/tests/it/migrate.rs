//! `gantry_state::migrate` with etcd on one or both sides (etcd ↔ SQLite); the PostgreSQL →
//! etcd pair runs in gantry-cli's tests, which build both.

use gantry_state::SqliteStore;
use gantry_state::migrate::check;

use crate::support::etcd;

#[tokio::test]
async fn copy_from_etcd_to_sqlite() {
    let Some(etcd) = etcd() else { return };
    let source = etcd.store(&etcd.prefix("migrate-copy")).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    check::check_copy(&source, &sqlite).await;
}

#[tokio::test]
async fn resume_from_sqlite_into_a_partly_copied_etcd_prefix() {
    let Some(etcd) = etcd() else { return };
    let target = etcd.store(&etcd.prefix("migrate-resume")).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    check::check_resume(&sqlite, &target).await;
}

#[tokio::test]
async fn etcd_refusals() {
    let Some(etcd) = etcd() else { return };
    let source = etcd.store(&etcd.prefix("migrate-refuse-a")).await;
    let target = etcd.store(&etcd.prefix("migrate-refuse-b")).await;
    check::check_refusals(&source, &target).await;
}
