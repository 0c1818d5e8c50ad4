//! The Docker provider against a real engine: the shared conformance suite, and a cluster's
//! whole life as `up` and `destroy` drive it (network, nodes, tags volumes, a stopped node, what
//! a crash leaves) ending with nothing gantry-labelled left, asked of the engine itself.
//!
//! The engine is the one `GANTRY_TEST_DOCKER_HOST` names, with the `gantry/node:test` image
//! (scripts/test.sh starts a private dockerd with `scripts/services.sh start docker`, builds the
//! image with `scripts/build-test-image.sh` and exports the variable). Tests never use the
//! developer's own `DOCKER_HOST`. Without the variable a test is skipped with a printed reason,
//! and fails under `CI=true`.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
};
use gantry_core::tags::{self, NodeTagInput, TagFilter};
use gantry_docker::{DockerConfig, DockerProvider, LABEL_KIND, container_name, network_name};
use gantry_provider::{ClusterRequest, NodeRequest, NodeState, Provider, conformance};

const IMAGE: &str = "gantry/node:test";

/// The test engine's host, or None (skip) when none is configured outside CI.
fn engine() -> Option<String> {
    match std::env::var("GANTRY_TEST_DOCKER_HOST") {
        Ok(h) if !h.is_empty() => Some(h),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "GANTRY_TEST_DOCKER_HOST is not set and CI=true: scripts/test.sh starts a \
                     private dockerd (scripts/services.sh start docker) and exports it"
                );
            }
            eprintln!(
                "skipped: GANTRY_TEST_DOCKER_HOST is not set (run scripts/test.sh, or \
                 `scripts/services.sh start docker`, build the image with \
                 scripts/build-test-image.sh and export GANTRY_TEST_DOCKER_HOST)"
            );
            None
        }
    }
}

fn client(host: &str) -> Docker {
    let host = gantry_docker::resolve_host(Some(host));
    Docker::connect_with_host(&host).expect("connect to the test engine")
}

fn by_label(label: String) -> Option<HashMap<String, Vec<String>>> {
    Some(HashMap::from([("label".to_string(), vec![label])]))
}

/// Containers, networks and volumes carrying the project's label, asked of the engine itself
/// (not through the provider under test).
async fn labelled(d: &Docker, project: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let label = format!("{}={project}", tags::PROJECT);
    let containers = d
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: by_label(label.clone()),
            ..Default::default()
        }))
        .await
        .expect("list containers")
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .collect();
    let networks = d
        .list_networks(Some(ListNetworksOptions {
            filters: by_label(label.clone()),
        }))
        .await
        .expect("list networks")
        .into_iter()
        .filter_map(|n| n.name)
        .collect();
    let volumes = d
        .list_volumes(Some(ListVolumesOptions {
            filters: by_label(label),
        }))
        .await
        .expect("list volumes")
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    (containers, networks, volumes)
}

#[track_caller]
fn assert_clean(left: (Vec<String>, Vec<String>, Vec<String>), project: &str) {
    let (c, n, v) = left;
    assert!(
        c.is_empty() && n.is_empty() && v.is_empty(),
        "gantry-labelled resources of project {project} left: containers {c:?}, networks {n:?}, \
         volumes {v:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_provider_conforms() {
    let Some(host) = engine() else { return };
    let p = DockerProvider::new(DockerConfig::new(Some(host.clone()), IMAGE));
    let project = "conformance-docker";
    conformance::run_all(&p, project).await;
    // The suite leaves no node; the cluster's network goes with its resources.
    p.delete_cluster_resources(&TagFilter::cluster(project, "conf"))
        .await
        .unwrap();
    assert_clean(labelled(&client(&host), project).await, project);
}

fn node(project: &str, cluster: &str, index: u32) -> NodeRequest {
    let extra = gantry_core::Tags::new();
    NodeRequest {
        name: gantry_core::node_name(cluster, "node", index),
        project: project.into(),
        cluster: cluster.into(),
        pool: "node".into(),
        index,
        size: "small".into(),
        image: "default".into(),
        labels: Default::default(),
        tags: tags::node_tags(&NodeTagInput {
            project,
            cluster,
            cluster_uid: "engine-test-uid",
            pool: "node",
            index,
            owner: "engine-test",
            world: conformance::WORLD,
            expires: "2099-01-01T00:00:00Z",
            extra: &extra,
        }),
    }
}

/// What `up` then `destroy` ask of the provider, with what makes destroy hard: tags volumes
/// (more than one per node over time), a stopped node, a tags volume and a probe network a
/// crash left without their owners. Afterwards the engine holds nothing labelled with the
/// project.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_leaves_no_labelled_container_network_or_volume() {
    let Some(host) = engine() else { return };
    let d = client(&host);
    let p = DockerProvider::new(DockerConfig::new(Some(host.clone()), IMAGE));
    let (project, cluster) = ("engine-destroy", "life");
    let filter = TagFilter::cluster(project, cluster);
    assert_clean(labelled(&d, project).await, project);

    // up: the cluster's network, then its nodes.
    let first = node(project, cluster, 1);
    p.ensure_cluster_resources(&ClusterRequest {
        project: project.into(),
        cluster: cluster.into(),
        tags: first.tags.clone(),
        allow: vec![],
        ssh_public_key: String::new(),
    })
    .await
    .unwrap();
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(p.create_node(&node(project, cluster, i)).await.unwrap());
    }
    let addresses: Vec<_> = nodes.iter().map(|n| n.address).collect();
    assert!(
        addresses.iter().all(Option::is_some),
        "every node has a fixed address: {addresses:?}"
    );

    // extend, twice: the newest tags volume wins, the older one goes.
    for expires in ["2098-01-01T00:00:00Z", "2097-01-01T00:00:00Z"] {
        let mut t = gantry_core::Tags::new();
        t.insert(tags::EXPIRES.into(), expires.into());
        for n in &nodes[..2] {
            p.set_tags(n, &t).await.unwrap();
        }
    }
    let listed = p.list(&filter).await.unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for n in &listed[..2] {
        assert_eq!(n.tags[tags::EXPIRES], "2097-01-01T00:00:00Z", "{n:?}");
    }
    let (_, _, volumes) = labelled(&d, project).await;
    assert_eq!(
        volumes.len(),
        2,
        "one tags volume per extended node: {volumes:?}"
    );

    // A stopped node is destroyed like a running one.
    let stopped = p.stop_node(&nodes[2]).await.unwrap();
    assert_eq!(stopped.state, NodeState::Stopped);

    // What a crash leaves: node 2's container gone without its tags volume, and a probe
    // network of a network creation that never finished.
    d.remove_container(
        &container_name(project, &nodes[1].name),
        Some(RemoveContainerOptions {
            force: true,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let mut probe_labels: HashMap<String, String> = [
        (tags::PROJECT, project),
        (tags::CLUSTER, cluster),
        (LABEL_KIND, "probe"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    probe_labels.insert(tags::WORLD.into(), conformance::WORLD.into());
    d.create_network(NetworkCreateRequest {
        name: format!("{}.probe", network_name(project, cluster)),
        driver: Some("bridge".into()),
        labels: Some(probe_labels),
        ..Default::default()
    })
    .await
    .unwrap();

    // destroy: the nodes the provider lists, then the cluster's resources.
    let listed = p.list(&filter).await.unwrap();
    assert_eq!(listed.len(), 2, "the removed container is gone: {listed:?}");
    for n in &listed {
        p.delete_node(n).await.unwrap();
    }
    p.delete_cluster_resources(&filter).await.unwrap();
    assert!(p.list(&filter).await.unwrap().is_empty());
    assert_clean(labelled(&d, project).await, project);
}
