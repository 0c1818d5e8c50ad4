//! The provider conformance suite against the real local provider (real agents, started from
//! the built binary). The Docker and AWS providers run it in their own crates
//! (`crates/gantry-docker/tests/it/engine.rs`, `crates/gantry-aws/tests/moto.rs`).

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
