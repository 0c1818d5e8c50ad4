//! gantry-state's one conformance suite, unchanged, against etcd.

use gantry_state::conformance;

use crate::support::etcd;

#[tokio::test]
async fn etcd_store_passes_conformance() {
    let Some(etcd) = etcd() else { return };
    let prefix = etcd.prefix("conformance");
    let store = etcd.store(&prefix).await;
    // The suite's second handle: another client on the same prefix, as a second machine.
    let other = etcd.store(&prefix).await;
    conformance::run_all(&store, &other).await;
}

#[tokio::test]
async fn conformance_passes_twice_through_two_handles_on_one_prefix() {
    // Two machines sharing the store: the second runs the suite on data the first left.
    let Some(etcd) = etcd() else { return };
    let prefix = etcd.prefix("conformance-shared");
    let first = etcd.store(&prefix).await;
    let second = etcd.store(&prefix).await;
    conformance::run_all(&first, &second).await;
    conformance::run_all(&second, &first).await;
}

#[tokio::test]
async fn adopt_world_id_sets_a_fresh_prefixs_id() {
    let Some(etcd) = etcd() else { return };
    let prefix = etcd.prefix("adopt-world");
    let first = etcd.store(&prefix).await;
    let second = etcd.store(&prefix).await;
    conformance::check_adopt_world_fresh(&first, &second).await;
}
