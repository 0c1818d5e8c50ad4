//! What gantry's application layer (`gantry_engine::app`) promises, through the built binary:
//! a cluster record whose spec cannot be decoded is an error naming it in every command that
//! acts on the cluster, never taken for a local cluster; and one listing of the whole project
//! (local nodes, every Docker engine, every AWS region) serves `ls`, `gc` and `inventory`, so
//! `gc` sweeps an orphaned AWS instance and the three agree on local + Docker + moto at once.
//!
//! The AWS parts run against a moto of the test's own, the Docker part against the test engine
//! (`GANTRY_TEST_DOCKER_HOST`, see `docker.rs`); without them a test skips with a printed
//! reason, and fails under `CI=true`. Every AWS spec uses `readiness: api`: no connection is
//! ever opened to an address moto invents.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use gantry_state::StateStore as _;
use serde_json::Value;

use crate::docker::Engine;
use crate::moto::Moto;
use crate::support::*;

const AWS_TIMEOUT: Duration = Duration::from_secs(300);

/// A one-node AWS spec in us-east-1 (not tracked by the fixture: its guard has no moto).
fn aws_spec(g: &Gantry, cluster: &str) -> String {
    let p = g.work().join(format!("{cluster}-aws.yaml"));
    std::fs::write(
        &p,
        format!(
            "apiVersion: gantry/v1\nname: {cluster}\nprovider:\n  aws:\n    region: us-east-1\n    \
             caller_cidr: 203.0.113.7/32\nlifetime: 1h\nreadiness: api\npools:\n  - name: db\n    \
             count: 1\n"
        ),
    )
    .unwrap();
    p.display().to_string()
}

/// `gantry ARGS` against `moto` (and the test engine as `DOCKER_HOST`, when given).
fn run_with(g: &Gantry, moto: &Moto, engine: Option<&Engine>, args: &[&str]) -> Out {
    let mut c: Command = g.command(args);
    moto.env(&mut c);
    if let Some(e) = engine {
        c.env("DOCKER_HOST", &e.host);
    }
    g.spawn_cmd(c, format!("gantry {}", args.join(" ")))
        .wait(AWS_TIMEOUT)
}

/// Drops a cluster's record straight from the state store: its nodes become orphans.
fn forget(g: &Gantry, cluster: &str) {
    let store = gantry_state::SqliteStore::open(&g.home().join("state.db")).unwrap();
    block_on(store.delete_cluster("default", cluster)).unwrap();
}

/// Resources of the project left in moto, by kind (only non-zero counts).
fn aws_left(moto: &Moto) -> Vec<(&'static str, usize)> {
    [
        "instances",
        "security-groups",
        "key-pairs",
        "vpcs",
        "subnets",
        "volumes",
    ]
    .into_iter()
    .map(|r| (r, moto.count(r, "gantry-project", "default")))
    .filter(|(_, n)| *n > 0)
    .collect()
}

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

#[test]
fn gc_sweeps_an_orphaned_aws_instance() {
    let Some(moto) = Moto::start() else { return };
    let g = Gantry::new();
    let spec = aws_spec(&g, "stray");
    run_with(&g, &moto, None, &["up", "-f", &spec]).ok();
    assert_eq!(moto.count("instances", "gantry-cluster", "stray"), 1);
    // The record is gone (a lost state file, a crash before recording): only the tags are left,
    // and no record names the region, so it comes from GANTRY_AWS_REGIONS.
    forget(&g, "stray");
    let mut c = g.command(&["gc", "--grace", "0s"]);
    moto.env(&mut c);
    c.env("GANTRY_AWS_REGIONS", "us-east-1");
    let out = g.spawn_cmd(c, "gantry gc".into()).wait(AWS_TIMEOUT).ok();
    assert!(
        out.stdout
            .contains("deleted 1 orphaned node(s) (stray-db-1)"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(
        aws_left(&moto),
        [],
        "nothing of the project is left in moto"
    );
}

/// cluster → its nodes' names, sorted.
type ByCluster = BTreeMap<String, Vec<String>>;

fn add(m: &mut ByCluster, cluster: &str, node: &str) {
    let v = m.entry(cluster.to_string()).or_default();
    v.push(node.to_string());
    v.sort();
}

#[test]
fn ls_gc_and_inventory_agree_on_local_docker_and_aws_at_once() {
    let Some(engine) = Engine::get() else { return };
    let Some(moto) = Moto::start() else { return };
    let g = Gantry::new();
    let run = |args: &[&str]| run_with(&g, &moto, Some(&engine), args);
    let local = g.simple_spec("loc", 1);
    let docker = engine.spec(&g, "dock", 2, "");
    let cloud = aws_spec(&g, "cloud");
    let lost = aws_spec(&g, "lost");
    for spec in [local.to_str().unwrap(), docker.to_str().unwrap(), &cloud] {
        run(&["up", "-f", spec, "--lifetime", "1s"]).ok();
    }
    run(&["up", "-f", &lost]).ok();
    forget(&g, "lost");
    std::thread::sleep(Duration::from_millis(1500)); // the 1 s lifetimes are over

    let want: ByCluster = [
        ("loc", vec!["loc-db-1"]),
        ("dock", vec!["dock-node-1", "dock-node-2"]),
        ("cloud", vec!["cloud-db-1"]),
        ("lost", vec!["lost-db-1"]),
    ]
    .into_iter()
    .map(|(c, n)| (c.to_string(), n.into_iter().map(str::to_string).collect()))
    .collect();

    // ls: a row per cluster of this world (the test engine may hold other homes' clusters: they
    // are another world's, noted and never touched).
    let ls = run(&["ls", "--output", "json"]).ok();
    let rows: BTreeMap<String, (String, u64, bool)> = ls
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["foreign_owner"].is_null())
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                (
                    r["provider"].as_str().unwrap().to_string(),
                    r["nodes_total"].as_u64().unwrap_or(u64::MAX),
                    r["tracked"].as_bool().unwrap(),
                ),
            )
        })
        .collect();
    let sized: BTreeMap<String, (String, u64, bool)> = [
        ("cloud", "aws", 1, true),
        ("dock", "docker", 2, true),
        ("loc", "local", 1, true),
        ("lost", "aws", 1, false),
    ]
    .into_iter()
    .map(|(c, p, n, t)| (c.to_string(), (p.to_string(), n, t)))
    .collect();
    assert_eq!(rows, sized, "{}", ls.stderr);

    // gc: the three expired clusters with every node, and lost's orphan.
    let gc = run(&["gc", "--dry-run", "--grace", "0s", "--output", "json"])
        .ok()
        .json();
    let mut seen = ByCluster::new();
    for e in gc["expired"].as_array().unwrap() {
        let c = e["cluster"].as_str().unwrap();
        seen.entry(c.to_string()).or_default();
        for n in e["nodes"].as_array().unwrap() {
            add(&mut seen, c, n.as_str().unwrap());
        }
    }
    for o in gc["orphans"].as_array().unwrap() {
        add(
            &mut seen,
            o["cluster"].as_str().unwrap(),
            o["node"].as_str().unwrap(),
        );
    }
    assert_eq!(seen, want, "gc: {gc:#}");

    // inventory: the same nodes.
    let inv = run(&["inventory", "--format", "json"]).ok().json();
    let mut listed = ByCluster::new();
    for n in inv["nodes"].as_array().unwrap() {
        let c: &Value = &n["tags"]["gantry-cluster"];
        add(
            &mut listed,
            c.as_str().unwrap(),
            n["name"].as_str().unwrap(),
        );
    }
    assert_eq!(listed, want, "inventory: {inv:#}");

    // gc for real takes everything down, wherever it runs.
    let out = run(&["gc", "--grace", "0s"]).ok();
    assert!(
        out.stdout
            .contains("destroyed 3 cluster(s) (cloud, dock, loc)")
            && out
                .stdout
                .contains("deleted 1 orphaned node(s) (lost-db-1)"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    let ls = run(&["ls", "--output", "json"]).ok().json();
    assert!(
        ls.as_array()
            .unwrap()
            .iter()
            .all(|r| !r["foreign_owner"].is_null()),
        "{ls:#}"
    );
    assert_eq!(
        aws_left(&moto),
        [],
        "nothing of the project is left in moto"
    );
    engine.assert_clean("dock");
    assert!(node_dirs(&g.home().join("local"), true).is_empty());
}
