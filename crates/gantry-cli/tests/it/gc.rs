//! `gantry gc` with an expired cluster and an orphaned tagged node, next to a healthy cluster
//! and a cluster of another project: the dry run changes nothing, gc removes exactly the two,
//! and a second gc has nothing to do.

use std::time::Duration;

use gantry_state::StateStore as _;

use crate::support::*;

#[test]
fn gc_expired_cluster_and_orphan() {
    let g = Gantry::new();
    let up = |c: &str, extra: &[&str]| {
        let spec = g.simple_spec(c, 1);
        let mut args = vec!["up", "-f", spec.to_str().unwrap()];
        args.extend_from_slice(extra);
        g.run(&args).ok();
    };
    up("old", &["--lifetime", "1s"]);
    up("lost", &[]);
    up("keep", &[]);
    // Another project's expired cluster: never gc's business here.
    let other = g.spec(
        "other.yaml",
        "other",
        "apiVersion: gantry/v1\nname: other\nprovider: local\npools:\n  - name: db\n    count: 1\n",
    );
    g.run(&[
        "up",
        "-f",
        other.to_str().unwrap(),
        "--project",
        "p2",
        "--lifetime",
        "1s",
    ])
    .ok();
    let uids = g.node_uids();
    let uid = |n: &str| uids.iter().find(|(name, _)| name == n).unwrap().1.clone();

    // Orphan lost's node: drop its record straight from the state store.
    let store = gantry_state::SqliteStore::open(&g.home().join("state.db")).unwrap();
    block_on(store.delete_cluster("default", "lost")).unwrap();
    std::thread::sleep(Duration::from_millis(1500)); // old's (and other's) 1s lifetime is over

    let node_dirs_now = || {
        let mut v: Vec<String> = node_dirs(&g.home().join("local"), false)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let all = ["keep-db-1", "lost-db-1", "old-db-1", "other-db-1"];
    assert_eq!(node_dirs_now(), all);

    // Default grace (1h): the young orphan waits; the expired cluster would go.
    let out = g.run(&["gc", "--dry-run"]).ok();
    assert!(
        out.stdout.contains("destroy cluster old: expired"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "wait    node lost-db-1 (cluster lost): no record of its cluster, deletable in"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("dry run: nothing changed"),
        "{}",
        out.stdout
    );

    // Grace 0: both; the dry run says so and changes nothing.
    let out = g.run(&["gc", "--dry-run", "--grace", "0s"]).ok();
    assert!(
        out.stdout.contains("destroy cluster old: expired"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("old-db-1"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("delete  node lost-db-1 (cluster lost): no record of its cluster"),
        "{}",
        out.stdout
    );
    for untouched in ["keep", "other"] {
        assert!(
            !out.stdout.contains(untouched),
            "{untouched}: {}",
            out.stdout
        );
    }
    let plan = g
        .run(&["gc", "--dry-run", "--grace", "0s", "--output", "json"])
        .ok()
        .json();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["expired"].as_array().unwrap().len(), 1, "{plan:#}");
    assert_eq!(plan["expired"][0]["cluster"], "old");
    assert_eq!(plan["expired"][0]["tracked"], true);
    assert_eq!(plan["expired"][0]["nodes"][0], "old-db-1");
    assert_eq!(plan["orphans"].as_array().unwrap().len(), 1, "{plan:#}");
    assert_eq!(plan["orphans"][0]["node"], "lost-db-1");
    assert_eq!(plan["orphans"][0]["reason"], "no_record");
    assert_eq!(plan["destroyed"].as_array().unwrap().len(), 0);
    assert_eq!(node_dirs_now(), all, "the dry run changed nothing");
    for n in all {
        assert_eq!(agent_pids(&uid(n)).len(), 1, "{n} still runs");
    }
    let ls = g.run(&["ls", "--output", "json"]).ok().json();
    let listed: Vec<(&str, bool)> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["tracked"].as_bool().unwrap()))
        .collect();
    assert_eq!(listed, [("keep", true), ("old", true), ("lost", false)]);
    let out = g.run(&["ls"]).ok();
    assert!(
        out.stderr.contains("warning: expired: old"),
        "{}",
        out.stderr
    );

    // The real thing.
    let out = g.run(&["gc", "--grace", "0s"]).ok();
    assert!(
        out.stdout
            .contains("gc: destroyed 1 cluster(s) (old), deleted 1 orphaned node(s) (lost-db-1)"),
        "{}",
        out.stdout
    );
    assert_eq!(node_dirs_now(), ["keep-db-1", "other-db-1"]);
    for gone in ["old-db-1", "lost-db-1"] {
        assert!(
            eventually(Duration::from_secs(5), || uid_pids(&uid(gone)).is_empty()),
            "every process of {gone} ended"
        );
    }
    assert!(
        !g.cluster_dir("lost").exists(),
        "lost's empty directory went too"
    );
    let ls = g.run(&["ls", "--output", "json"]).ok().json();
    assert_eq!(ls.as_array().unwrap().len(), 1, "{ls:#}");
    assert_eq!(ls[0]["name"], "keep");
    // The healthy cluster still works; the other project's cluster is untouched.
    g.run(&["run", "keep", "--", "true"]).ok();
    assert_eq!(agent_pids(&uid("other-db-1")).len(), 1);
    let runs = g.run(&["runs", "--output", "json"]).ok().json();
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "gc" && r["cluster"] == "old" && r["status"] == "succeeded"),
        "gc runs are recorded: {runs:#}"
    );

    // Idempotent.
    let out = g.run(&["gc", "--grace", "0s"]).ok();
    assert_eq!(out.stdout.trim(), "gc: nothing to do in project default");
    let again = g.run(&["gc", "--output", "json"]).ok().json();
    assert!(again["expired"].as_array().unwrap().is_empty());
    assert!(again["orphans"].as_array().unwrap().is_empty());

    // In its own project, the other cluster is expired and gc takes it.
    let out = g.run(&["gc", "--project", "p2"]).ok();
    assert!(
        out.stdout.contains("destroyed 1 cluster(s) (other)"),
        "{}",
        out.stdout
    );
    assert_eq!(node_dirs_now(), ["keep-db-1"]);
}
