//! The shared store contract, unchanged, on a real PostgreSQL with two handles (two pools, as
//! two machines would have).

use gantry_state::conformance;
use gantry_state_pg::PostgresStore;

use crate::support;

#[tokio::test]
async fn postgres_passes_conformance_with_two_handles() {
    let Some(server) = support::server() else {
        return;
    };
    let db = support::fresh_db(server).await;
    let url = server.url(&db, "");
    let first = PostgresStore::connect(&url).await.unwrap();
    let second = PostgresStore::connect(&url).await.unwrap();
    conformance::run_all(&first, &second).await;
    // A team's store already holds data when the suite runs again.
    conformance::run_all(&second, &first).await;
}

#[tokio::test]
async fn adopt_world_id_sets_a_fresh_databases_id() {
    let Some(server) = support::server() else {
        return;
    };
    let url = server.url(&support::fresh_db(server).await, "");
    let first = PostgresStore::connect(&url).await.unwrap();
    let second = PostgresStore::connect(&url).await.unwrap();
    conformance::check_adopt_world_fresh(&first, &second).await;
}
