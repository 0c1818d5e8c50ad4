//! Grow and shrink through `up`: existing nodes keep their identity and address; removing nodes
//! needs confirmation. Node names another cluster of the project makes too are refused.

use crate::support::*;

#[test]
fn grow_then_shrink() {
    let g = Gantry::new();
    let c = "scale";
    let spec2 = g.simple_spec(c, 2);
    let spec4 = g.simple_spec(c, 4);
    let spec1 = g.simple_spec(c, 1);
    let names = |n: u32| -> Vec<String> { (1..=n).map(|i| format!("{c}-db-{i}")).collect() };

    g.run(&["up", "-f", spec2.to_str().unwrap()]).ok();
    let before = g.nodes(c);
    let uids_before = g.cluster_uids(c);
    assert_eq!(uids_before.len(), 2);

    // Grow: 2 -> 4.
    let out = g.run(&["up", "-f", spec4.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("2 created"), "{}", out.stdout);
    let grown = g.nodes(c);
    assert_eq!(
        grown.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
        names(4)
    );
    assert!(grown.iter().all(|n| n.state == "running"), "{grown:?}");
    assert_eq!(
        grown[..2],
        before[..],
        "the first two keep name, address and state"
    );
    let uids = g.cluster_uids(c);
    assert_eq!(
        uids[..2],
        uids_before[..],
        "the first two are the same nodes"
    );
    let addrs: std::collections::BTreeSet<_> = grown.iter().map(|n| &n.address).collect();
    assert_eq!(addrs.len(), 4, "distinct addresses: {grown:?}");
    let out = g.run(&["run", c, "--", "hostname"]).ok();
    assert_eq!(out.stdout.lines().count(), 4, "{}", out.stdout);

    // Shrink without --yes and without a terminal: refused, nothing deleted.
    let plan = g
        .run(&["plan", "-f", spec1.to_str().unwrap(), "--output", "json"])
        .ok()
        .json();
    let mut delete: Vec<String> = serde_json::from_value(plan["delete"].clone()).unwrap();
    delete.sort();
    assert_eq!(delete, names(4)[1..].to_vec(), "{plan}");
    let out = g.run(&["up", "-f", spec1.to_str().unwrap()]).expect(6);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    assert_eq!(g.nodes(c), grown, "a refused shrink changes nothing");
    for (name, uid) in &uids {
        assert_eq!(agent_pids(uid).len(), 1, "{name} still runs");
    }

    // With --yes: only node 1 remains, unchanged; the others are gone with their processes.
    let out = g.run(&["up", "-f", spec1.to_str().unwrap(), "--yes"]).ok();
    assert!(out.stdout.contains("3 deleted"), "{}", out.stdout);
    let left = g.nodes(c);
    assert_eq!(left, grown[..1].to_vec());
    for (name, uid) in &uids[1..] {
        assert!(
            uid_pids(uid).is_empty(),
            "{name}: processes {:?} survived the shrink",
            uid_pids(uid)
        );
        assert!(!g.cluster_dir(c).join(name).exists(), "{name}: dir left");
    }
    assert_eq!(g.cluster_uids(c), uids[..1].to_vec());
    let out = g.run(&["run", c, "--", "hostname"]).ok();
    assert_eq!(out.stdout, format!("{c}-db-1\n"));

    g.run(&["destroy", c, "--yes"]).ok();
    assert!(g.home_pids().is_empty(), "{:?}", g.home_pids());
}

/// Cluster `a` with pool `b-c` and cluster `a-b` with pool `c` would both make `a-b-c-1` (and
/// overwrite each other's host-key pin): the second `up` (and `plan`) is refused, naming both
/// clusters and pools, and creates nothing; the first cluster is untouched.
#[test]
fn clusters_whose_node_names_collide_are_refused() {
    let g = Gantry::new();
    let first = g.spec(
        "a.yaml",
        "a",
        "apiVersion: gantry/v1\nname: a\nprovider: local\nlifetime: 1h\npools:\n  - name: b-c\n    count: 1\n",
    );
    g.run(&["up", "-f", first.to_str().unwrap()]).ok();
    let second = g.spec(
        "a-b.yaml",
        "a-b",
        "apiVersion: gantry/v1\nname: a-b\nprovider: local\nlifetime: 1h\npools:\n  - name: c\n    count: 2\n",
    );
    for cmd in ["plan", "up"] {
        let out = g.run(&[cmd, "-f", second.to_str().unwrap()]).expect(2);
        assert!(
            out.stderr.contains(
                "node names collide: cluster a-b pool c makes a-b-c-1, and so does cluster a pool b-c"
            ),
            "{cmd}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("hint: rename the pool or the cluster"),
            "{}",
            out.stderr
        );
    }
    assert!(!g.cluster_dir("a-b").exists(), "nothing of a-b was created");
    let ls = g.run(&["ls", "--output", "json"]).ok().json();
    let names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a"], "a-b was not recorded");
    assert_eq!(g.nodes("a").len(), 1);
    g.run(&["run", "a", "--", "true"]).ok();
    // Without the record, the provider's listing still tells: `a`'s node carries its tags.
    {
        use gantry_state::StateStore as _;
        let store = gantry_state::SqliteStore::open(&g.home().join("state.db")).unwrap();
        block_on(store.delete_cluster("default", "a")).unwrap();
    }
    let out = g.run(&["up", "-f", second.to_str().unwrap()]).expect(2);
    assert!(out.stderr.contains("node names collide"), "{}", out.stderr);
}
