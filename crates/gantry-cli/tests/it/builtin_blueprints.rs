//! The built-in blueprints on real local clusters. Each test checks that the software works *as
//! a cluster* — etcd members agree and a key written on one node is read on another (also after
//! a grow and after stop/start), a redis replica serves the primary's write, a postgres replica
//! streams the primary's row, and Prometheus scrapes every target with `up == 1`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn spec(g: &Gantry, cluster: &str, count: u32, blueprints: &[&str]) -> PathBuf {
    let bps: String = blueprints
        .iter()
        .map(|b| format!("  - name: {b}\n"))
        .collect();
    g.spec(
        &format!("{cluster}-{count}.yaml"),
        cluster,
        &format!(
            "apiVersion: gantry/v1\nname: {cluster}\nprovider: local\nlifetime: 1h\npools:\n  - name: db\n    count: {count}\nblueprints:\n{bps}"
        ),
    )
}

/// Runs a shell command on one node and returns its stdout (must succeed).
#[track_caller]
fn on(g: &Gantry, node: &str, cmd: &str) -> String {
    g.run(&["run", node, "--", cmd]).ok().stdout
}

/// Like `on`, but returns None instead of failing.
fn try_on(g: &Gantry, node: &str, cmd: &str) -> Option<String> {
    let out = g.run(&["run", node, "--", cmd]);
    (out.code == Some(0)).then_some(out.stdout)
}

fn tools(paths: &[&str]) -> bool {
    paths.iter().all(|p| require_tool(p))
}

const ETCDCTL: &str = "etcdctl --endpoints=http://$GANTRY_NODE_ADDRESS:2379";

fn started_members(g: &Gantry, node: &str) -> usize {
    try_on(g, node, &format!("{ETCDCTL} member list"))
        .map(|s| s.lines().filter(|l| l.contains(", started, ")).count())
        .unwrap_or(0)
}

#[test]
fn etcd_forms_a_cluster_grows_by_joining_and_survives_stop_start() {
    if !tools(&["/usr/bin/etcd", "/usr/bin/etcdctl"]) {
        return;
    }
    let g = Gantry::new();
    let c = "etcdbp";
    g.run(&["up", "-f", spec(&g, c, 3, &["etcd"]).to_str().unwrap()])
        .ok();
    assert_eq!(started_members(&g, "etcdbp/db-1"), 3, "3 started members");
    on(
        &g,
        "etcdbp/db-1",
        &format!("{ETCDCTL} put greeting from-node-1"),
    );
    assert_eq!(
        on(
            &g,
            "etcdbp/db-3",
            &format!("{ETCDCTL} get greeting --print-value-only")
        )
        .trim(),
        "from-node-1"
    );

    // Grow: the new nodes join the existing cluster (a new cluster would not know the key).
    g.run(&["up", "-f", spec(&g, c, 5, &["etcd"]).to_str().unwrap()])
        .ok();
    assert!(
        eventually(Duration::from_secs(30), || started_members(
            &g,
            "etcdbp/db-5"
        ) == 5),
        "5 started members after the grow"
    );
    assert_eq!(
        on(
            &g,
            "etcdbp/db-5",
            &format!("{ETCDCTL} get greeting --print-value-only")
        )
        .trim(),
        "from-node-1"
    );
    let ids: std::collections::BTreeSet<String> =
        on(&g, "etcdbp/db-2", &format!("{ETCDCTL} member list"))
            .lines()
            .map(|l| l.split(',').next().unwrap_or_default().to_string())
            .collect();
    assert_eq!(ids.len(), 5, "one cluster of 5 distinct members");

    // stop/start: nothing restarts etcd on a local node but gantry's boot steps.
    g.run(&["stop", c]).ok();
    g.run(&["start", c]).ok();
    assert!(eventually(Duration::from_secs(30), || try_on(
        &g,
        "etcdbp/db-4",
        &format!("{ETCDCTL} get greeting --print-value-only")
    )
    .is_some_and(|v| v.trim() == "from-node-1")));
    g.run(&["destroy", c, "--yes"]).ok();
}

#[test]
fn redis_replica_serves_the_primarys_write() {
    if !tools(&["/usr/bin/redis-server", "/usr/bin/redis-cli"]) {
        return;
    }
    let g = Gantry::new();
    let c = "redisbp";
    g.run(&["up", "-f", spec(&g, c, 3, &["redis"]).to_str().unwrap()])
        .ok();
    // Every client authenticates, with the password the node keeps 0600 for redis-cli.
    let cli = "REDISCLI_AUTH=\"$(cat redis/password)\" redis-cli -h $GANTRY_NODE_ADDRESS -p 6379";
    let primary = on(&g, "redisbp/db-1", &format!("{cli} info replication"));
    assert!(
        primary.contains("role:master"),
        "node 1 is the primary:\n{primary}"
    );
    let replica = on(&g, "redisbp/db-2", &format!("{cli} info replication"));
    assert!(
        replica.contains("role:slave"),
        "node 2 is a replica:\n{replica}"
    );
    assert_eq!(
        on(&g, "redisbp/db-1", &format!("{cli} set answer 42")).trim(),
        "OK"
    );
    for replica in ["redisbp/db-2", "redisbp/db-3"] {
        assert!(
            eventually(Duration::from_secs(20), || try_on(
                &g,
                replica,
                &format!("{cli} get answer")
            )
            .is_some_and(|v| v.trim() == "42")),
            "{replica} serves the primary's write"
        );
    }
    let addrs: Vec<String> = g
        .nodes(c)
        .into_iter()
        .map(|n| format!("{}:6379", n.address))
        .collect();
    g.run(&["destroy", c, "--yes"]).ok();
    // Regression: redis used to rewrite its process title over its environment, erasing the
    // node marker destroy finds processes by, and outlived its cluster.
    let home = g.home().to_string_lossy().into_owned();
    let leaked = || {
        procs()
            .into_iter()
            .filter(|p| {
                p.cmdline
                    .iter()
                    .any(|c| c.contains(&home) || addrs.iter().any(|a| c.contains(a.as_str())))
            })
            .count()
    };
    assert!(
        eventually(Duration::from_secs(5), || leaked() == 0),
        "redis outlived its cluster"
    );
}

#[test]
fn postgres_replica_streams_the_primarys_row() {
    if !tools(&["/usr/local/bin/initdb", "/usr/bin/psql"])
        && !tools(&["/usr/lib/postgresql/15/bin/initdb", "/usr/bin/psql"])
    {
        return;
    }
    let g = Gantry::new();
    let c = "pgbp";
    g.run(&["up", "-f", spec(&g, c, 2, &["postgres"]).to_str().unwrap()])
        .ok();
    // Every connection needs the password, which the node keeps in libpq's password file.
    let psql = "PGPASSFILE=pg/pgpass psql -h $GANTRY_NODE_ADDRESS -p 5432 -U postgres -d app -Atc";
    on(
        &g,
        "pgbp/db-1",
        &format!("{psql} 'CREATE TABLE t (x int); INSERT INTO t VALUES (42)'"),
    );
    assert_eq!(
        on(
            &g,
            "pgbp/db-2",
            &format!("{psql} 'SELECT pg_is_in_recovery()'")
        )
        .trim(),
        "t",
        "node 2 is a standby"
    );
    assert!(
        eventually(Duration::from_secs(30), || try_on(
            &g,
            "pgbp/db-2",
            &format!("{psql} 'SELECT x FROM t'")
        )
        .is_some_and(|v| v.trim() == "42")),
        "the replica reads the primary's row"
    );
    g.run(&["destroy", c, "--yes"]).ok();
}

/// GET over plain HTTP/1.0 to a node address (loopback only).
fn http_get(addr: &str, path: &str) -> Option<String> {
    assert!(
        is_loopback(addr.split(':').next().unwrap_or_default()),
        "tests only talk to loopback"
    );
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

#[test]
fn prometheus_scrapes_every_node_and_etcd() {
    if !tools(&[
        "/usr/bin/prometheus",
        "/usr/bin/prometheus-node-exporter",
        "/usr/bin/etcd",
    ]) {
        return;
    }
    let g = Gantry::new();
    let c = "prombp";
    g.run(&[
        "up",
        "-f",
        spec(&g, c, 3, &["etcd", "prometheus"]).to_str().unwrap(),
    ])
    .ok();
    let first = g.nodes(c)[0].address.clone();
    let all_up = || {
        let Some(body) = http_get(&format!("{first}:9090"), "/api/v1/query?query=up") else {
            return false;
        };
        let Ok(v) = serde_json::from_str::<Value>(&body) else {
            return false;
        };
        let results = v["data"]["result"].as_array().cloned().unwrap_or_default();
        let jobs = |job: &str| {
            results
                .iter()
                .filter(|r| r["metric"]["job"] == job && r["value"][1] == "1")
                .count()
        };
        jobs("node") == 3 && jobs("etcd") == 3 && results.len() == 6
    };
    assert!(
        eventually(Duration::from_secs(60), all_up),
        "up == 1 for 3 node-exporters and 3 etcd members"
    );
    g.run(&["destroy", c, "--yes"]).ok();
}
