//! The provider conformance suite against the real local provider (real agents, started from
//! the built binary) and the real Docker provider (a real dockerd, see `docker.rs`).

use gantry_local::{LocalConfig, LocalProvider};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_provider_conforms() {
    // The guard kills any agent left below its home if the suite panics half-way.
    let g = Gantry::new();
    let root = g.home().join("local");
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into());
    let key = gantry_ssh::KeyPair::generate();
    let p = LocalProvider::new(LocalConfig {
        root: root.clone(),
        agent_exe: BIN.into(),
        ssh_port: gantry_local::DEFAULT_SSH_PORT,
        user,
        authorized_keys: vec![key.public_openssh()],
        machine_dir: gantry_local::default_machine_dir(),
    });
    gantry_provider::conformance::run_all(&p, "conformance").await;

    let left = node_dirs(&root, true);
    assert!(left.is_empty(), "node dirs left: {left:?}");
    // Agents are `gantry agent --node-dir <root>/...`: none may outlive its node.
    let pids = g.home_pids();
    assert!(pids.is_empty(), "agents left running: {pids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_provider_conforms() {
    let Some(engine) = crate::docker::Engine::get() else {
        return;
    };
    let p = gantry_docker::DockerProvider::new(gantry_docker::DockerConfig::new(
        Some(engine.host.clone()),
        crate::docker::IMAGE,
    ));
    let project = "conformance-docker";
    gantry_provider::conformance::run_all(&p, project).await;
    // The suite leaves no node; the cluster's network goes with its resources.
    gantry_provider::Provider::delete_cluster_resources(
        &p,
        &gantry_core::tags::TagFilter::cluster(project, "conf"),
    )
    .await
    .unwrap();
    engine.assert_clean("conf");
}
