//! What gantry's application layer (`gantry_engine::app`) promises, through the built binary:
//! a cluster record whose spec cannot be decoded is an error naming it in every command that
//! acts on the cluster, never taken for a local cluster.

use gantry_state::StateStore as _;

use crate::support::*;

/// Rewrites the record of `cluster` in the home's state store: `provider` and `spec_json` as a
/// newer gantry (with a provider this one does not know) would have written them. Returns the
/// record as it was.
fn break_record(g: &Gantry, cluster: &str) -> gantry_state::ClusterRecord {
    let store = gantry_state::SqliteStore::open(&g.home().join("state.db")).unwrap();
    let was = block_on(store.get_cluster("default", cluster))
        .unwrap()
        .expect("the cluster is recorded");
    let mut broken = was.clone();
    broken.provider = "aws".into();
    let mut spec: serde_json::Value = serde_json::from_str(&was.spec_json).unwrap();
    spec["provider"] = serde_json::json!({"gcp": {"zone": "europe-west1-b"}});
    broken.spec_json = spec.to_string();
    assert_ne!(
        broken.spec_json, was.spec_json,
        "spec_json: {}",
        was.spec_json
    );
    block_on(store.put_cluster(&broken)).unwrap();
    was
}

fn restore_record(g: &Gantry, record: &gantry_state::ClusterRecord) {
    let store = gantry_state::SqliteStore::open(&g.home().join("state.db")).unwrap();
    block_on(store.put_cluster(record)).unwrap();
}

#[test]
fn an_unreadable_cluster_record_is_an_error_naming_it_not_a_local_cluster() {
    let g = Gantry::new();
    // Real local nodes carry the cluster's name: the old fallback ("no spec: local") acted on
    // them although the record says the cluster is an AWS one.
    let spec = g.simple_spec("rec", 1);
    g.run(&["up", "-f", spec.to_str().unwrap()]).ok();
    let was = break_record(&g, "rec");
    let file = g.work().join("f.txt");
    std::fs::write(&file, "x").unwrap();
    let wanted = "the record of cluster rec in project default (provider aws) cannot be read";
    for args in [
        &["run", "rec", "--", "true"][..],
        &["put", "rec", file.to_str().unwrap(), "/tmp/f.txt"],
        &[
            "get",
            "rec",
            "/etc/hostname",
            g.work().join("out").to_str().unwrap(),
        ],
        &["show", "rec"],
        &["stop", "rec"],
        &["start", "rec"],
        &["extend", "rec", "1h"],
        &["inventory", "rec"],
        &["ssh-config", "rec"],
        &["destroy", "rec", "--yes"],
    ] {
        let out = g.run(args).expect(1);
        assert!(
            out.stderr.contains(wanted),
            "`gantry {}`: {}",
            args.join(" "),
            out.stderr
        );
        assert!(
            out.stderr.contains("gantry up -f SPEC"),
            "`gantry {}` says how to fix it: {}",
            args.join(" "),
            out.stderr
        );
    }
    // `up` of another cluster cannot rule out that its node names collide with this one's.
    let other = g.simple_spec("other", 1);
    let out = g.run(&["up", "-f", other.to_str().unwrap()]).expect(1);
    assert!(out.stderr.contains(wanted), "{}", out.stderr);
    // `ls` still lists the project and names the record it cannot read.
    let out = g.run(&["ls"]).ok();
    assert!(out.stderr.contains(wanted), "{}", out.stderr);
    // Nothing was acted on: the node still runs.
    restore_record(&g, &was);
    assert_eq!(g.nodes("rec")[0].state, "running");
    g.run(&["destroy", "rec", "--yes"]).ok();
}
