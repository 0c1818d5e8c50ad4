//! One conformance suite for every [`Provider`]: each implementation's tests call
//! [`run_all`] with a fresh provider and a unique project name. A check that fails panics with
//! a message naming the broken rule.

use gantry_core::tags::{self, TagFilter};

use crate::{NodeRequest, NodeState, Provider};

/// The `gantry-world` of every node the suite creates: a provider's own tests that make the
/// cluster's supporting resources first give them this world, as `up` would.
pub const WORLD: &str = "conformance-world";

fn request(project: &str, cluster: &str, pool: &str, index: u32) -> NodeRequest {
    let extra = gantry_core::Tags::new();
    let t = tags::node_tags(&tags::NodeTagInput {
        project,
        cluster,
        cluster_uid: "conformance-uid",
        pool,
        index,
        owner: "conformance",
        world: WORLD,
        expires: "2099-01-01T00:00:00Z",
        extra: &extra,
    });
    NodeRequest {
        name: gantry_core::node_name(cluster, pool, index),
        project: project.into(),
        cluster: cluster.into(),
        pool: pool.into(),
        index,
        size: "small".into(),
        image: "default".into(),
        labels: Default::default(),
        tags: t,
    }
}

/// Runs every check; leaves nothing behind on success.
pub async fn run_all(p: &dyn Provider, project: &str) {
    let cluster = "conf";
    let filter = TagFilter::cluster(project, cluster);
    assert!(
        p.list(&filter).await.unwrap().is_empty(),
        "fresh project must list no nodes"
    );

    // create is idempotent by name
    let a = p
        .create_node(&request(project, cluster, "db", 1))
        .await
        .unwrap();
    let a2 = p
        .create_node(&request(project, cluster, "db", 1))
        .await
        .unwrap();
    assert_eq!(
        a.provider_id, a2.provider_id,
        "re-create must return the same node"
    );
    let b = p
        .create_node(&request(project, cluster, "db", 2))
        .await
        .unwrap();
    assert_ne!(a.provider_id, b.provider_id);

    // list by tags finds exactly these, with tags intact
    let mut listed = p.list(&filter).await.unwrap();
    listed.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(
        listed.len(),
        2,
        "list by tags must find both nodes: {listed:?}"
    );
    assert_eq!(
        listed[0].tags.get(tags::PROJECT).map(String::as_str),
        Some(project)
    );
    assert_eq!(
        listed[1].tags.get(tags::INDEX).map(String::as_str),
        Some("2")
    );
    assert!(
        p.list(&TagFilter::cluster(project, "other"))
            .await
            .unwrap()
            .is_empty()
    );

    // stop/start
    let s = p.stop_node(&a).await.unwrap();
    assert_eq!(s.state, NodeState::Stopped);
    let listed = p.list(&filter).await.unwrap();
    let a_listed = listed.iter().find(|n| n.name == a.name).unwrap();
    assert_eq!(
        a_listed.state,
        NodeState::Stopped,
        "list must show the stopped state"
    );
    let r = p.start_node(&s).await.unwrap();
    assert_eq!(r.state, NodeState::Running);
    assert_eq!(r.address, a.address, "a restarted node keeps its address");

    // set_tags (optional): merges, and list shows the new tags
    let mut t = gantry_core::Tags::new();
    t.insert(tags::EXPIRES.into(), "2098-01-01T00:00:00Z".into());
    match p.set_tags(&a, &t).await {
        Ok(n) => {
            assert_eq!(n.tags[tags::EXPIRES], "2098-01-01T00:00:00Z");
            assert_eq!(n.tags[tags::PROJECT], project, "set_tags keeps other tags");
            let listed = p.list(&filter).await.unwrap();
            let a_listed = listed.iter().find(|n| n.name == a.name).unwrap();
            assert_eq!(
                a_listed.tags[tags::EXPIRES],
                "2098-01-01T00:00:00Z",
                "list must show tags set by set_tags"
            );
        }
        Err(e) => assert_eq!(
            e.kind,
            crate::ErrorKind::Unavailable,
            "set_tags either works or is Unavailable: {e}"
        ),
    }

    // delete, twice
    for n in [&a, &b] {
        p.delete_node(n).await.unwrap();
        p.delete_node(n).await.unwrap();
    }
    assert!(
        p.list(&filter).await.unwrap().is_empty(),
        "nothing tagged may remain"
    );
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_provider_conforms() {
        let p = crate::testkit::MemoryProvider::new();
        super::run_all(&p, "conformance").await;
    }
}
