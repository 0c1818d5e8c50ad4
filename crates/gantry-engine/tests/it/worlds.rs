//! Two gantry worlds (two homes: two stores) on one provider, as on a shared Docker engine or
//! AWS account with the same project: neither adopts, destroys, stops, extends nor gc's the
//! other's cluster, and an older gantry's nodes (no world tag) are adopted only by the world
//! that records their uid.

use std::sync::Arc;
use std::time::Duration;

use gantry_core::tags::{self, TagFilter};
use gantry_engine::EngineError;
use gantry_engine::ops::{self, Power, UpOptions};
use gantry_provider::Provider;
use gantry_provider::testkit::MemoryProvider;

use super::{spec, world_on};

async fn all(p: &MemoryProvider) -> Vec<gantry_provider::NodeInfo> {
    p.list(&TagFilter::cluster("test", "demo")).await.unwrap()
}

#[tokio::test]
async fn another_worlds_cluster_of_the_same_name_is_never_adopted_or_touched() {
    let shared = Arc::new(MemoryProvider::new());
    let a = world_on(shared.clone(), "alice");
    let b = world_on(shared.clone(), "bob");
    let (s, t) = spec(2);
    ops::up(&a.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    let a_world = a.store.world_id().await.unwrap();
    let before = all(&shared).await;
    assert!(before.iter().all(|n| n.tags[tags::WORLD] == a_world));

    // B's `up` and `plan` of the same name: refused, naming A's owner and world.
    let err = ops::up(&b.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, EngineError::ForeignCluster { nodes: 2, .. }),
        "{text}"
    );
    assert!(text.contains("alice") && text.contains(&a_world), "{text}");
    assert!(
        b.store.get_cluster("test", "demo").await.unwrap().is_none(),
        "a refused up records nothing"
    );
    let err = ops::plan_up(&b.ctx, &s).await.unwrap_err();
    assert!(matches!(err, EngineError::ForeignCluster { .. }), "{err}");

    // Nor do destroy, stop, extend or gc of B touch them.
    for err in [
        ops::destroy(&b.ctx, "demo").await.unwrap_err(),
        ops::power(&b.ctx, "demo", Power::Stop, None)
            .await
            .unwrap_err(),
        ops::extend(
            &b.ctx,
            "demo",
            Duration::from_secs(60),
            ops::ExtendFrom::Now,
        )
        .await
        .unwrap_err(),
    ] {
        assert!(matches!(err, EngineError::ForeignCluster { .. }), "{err}");
        assert!(err.to_string().contains("alice"), "{err}");
    }
    assert!(ops::gc_destroy(&b.ctx, "demo").await.unwrap().is_none());
    let names: Vec<String> = before.iter().map(|n| n.name.clone()).collect();
    let gone = ops::gc_orphans(&b.ctx, "demo", &names, Duration::ZERO)
        .await
        .unwrap();
    assert!(gone.is_empty(), "{gone:?}");
    assert_eq!(
        all(&shared).await,
        before,
        "A's nodes are exactly as they were"
    );
    assert!(
        !shared
            .calls()
            .iter()
            .any(|c| c.starts_with("delete") || c.starts_with("stop") || c.starts_with("set_tags")),
        "{:?}",
        shared.calls()
    );

    // A still owns and converges its cluster.
    let again = ops::up(&a.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    assert!(again.created.is_empty());
    ops::destroy(&a.ctx, "demo").await.unwrap();
    assert!(all(&shared).await.is_empty());
}

#[tokio::test]
async fn nodes_of_an_older_gantry_are_adopted_only_by_the_world_recording_their_uid() {
    let shared = Arc::new(MemoryProvider::new());
    let a = world_on(shared.clone(), "alice");
    let b = world_on(shared.clone(), "bob");
    let (s, t) = spec(2);
    ops::up(&a.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    // What an older gantry left: the same nodes without a world tag.
    for n in all(&shared).await {
        let mut tags = n.tags.clone();
        tags.remove(tags::WORLD);
        shared.delete_node(&n).await.unwrap();
        let mut req = gantry_provider::NodeRequest {
            name: n.name.clone(),
            project: "test".into(),
            cluster: "demo".into(),
            pool: n.pool.clone(),
            index: n.index,
            size: "small".into(),
            image: "default".into(),
            labels: Default::default(),
            tags,
        };
        req.tags.remove(tags::WORLD);
        shared.create_node(&req).await.unwrap();
    }
    assert!(
        all(&shared)
            .await
            .iter()
            .all(|n| !n.tags.contains_key(tags::WORLD))
    );

    // B has no record of their uid: they are not B's.
    let err = ops::up(&b.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("world unknown"), "{err}");

    // A records their uid: `up` adopts them and tags them with A's world.
    let r = ops::up(&a.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    assert!(r.created.is_empty(), "{r:?}");
    let a_world = a.store.world_id().await.unwrap();
    assert!(
        all(&shared)
            .await
            .iter()
            .all(|n| n.tags[tags::WORLD] == a_world)
    );
    ops::destroy(&a.ctx, "demo").await.unwrap();
}
