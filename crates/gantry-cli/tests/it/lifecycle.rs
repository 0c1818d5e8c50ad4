//! The whole life of a 3-node cluster through the binary: up, show, run, put/get, ssh, stop,
//! start, plan, destroy.

use std::collections::BTreeSet;

use crate::support::*;

#[test]
fn lifecycle() {
    let g = Gantry::new();
    let c = "life";
    let spec = g.simple_spec(c, 3);
    let spec_s = spec.to_str().unwrap();
    let names: Vec<String> = (1..=3).map(|i| format!("{c}-db-{i}")).collect();

    let up = g.run(&["up", "-f", spec_s]).ok();
    for n in &names {
        assert!(
            up.stdout.contains(n),
            "up's report lists {n}:\n{}",
            up.stdout
        );
    }

    // show --output json: 3 running nodes on distinct loopback addresses.
    let show = g.show(c);
    assert_eq!(show["cluster"]["name"], c);
    assert_eq!(show["cluster"]["provider"], "local");
    let nodes = g.nodes(c);
    assert_eq!(
        nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
        names,
        "show lists the 3 nodes in order"
    );
    for n in &nodes {
        assert_eq!(n.pool, "db", "{n:?}");
        assert_eq!(n.state, "running", "{n:?}");
        assert!(is_loopback(&n.address), "address in 127/8: {n:?}");
    }
    let addrs: BTreeSet<_> = nodes.iter().map(|n| n.address.clone()).collect();
    assert_eq!(addrs.len(), 3, "distinct addresses: {nodes:?}");
    let uids = g.cluster_uids(c);
    assert_eq!(uids.len(), 3, "one node.json per node: {uids:?}");
    for (name, uid) in &uids {
        assert_eq!(agent_pids(uid).len(), 1, "one agent runs for {name}");
    }

    // run on all nodes: every line prefixed with its node.
    let out = g.run(&["run", c, "--", "hostname"]).ok();
    for n in &names {
        assert!(
            out.stdout.lines().any(|l| l == format!("{n} | {n}")),
            "`{n} | {n}` in:\n{}",
            out.stdout
        );
    }
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);

    // one node: a file, and an exit code passed through.
    g.run(&["run", &format!("{c}/2"), "--", "echo hi > f"]).ok();
    let out = g.run(&["run", &format!("{c}/2"), "--", "exit 3"]).expect(3);
    assert!(out.stderr.contains(&names[1]), "{}", out.stderr);
    let out = g
        .run(&["run", &format!("{c}/2"), "--", "cat f; hostname"])
        .ok();
    assert_eq!(out.stdout, format!("hi\n{}\n", names[1]));
    // node 1 did not get node 2's file
    g.run(&["run", &format!("{c}/1"), "--", "test ! -e f"]).ok();

    // a pool target selects the pool's nodes; an unknown pool selects nothing (usage error).
    let out = g.run(&["run", &format!("{c}:db"), "--", "true"]).ok();
    assert!(out.stderr.contains("3/3 ok"), "{}", out.stderr);
    let out = g.run(&["run", &format!("{c}:web"), "--", "true"]).expect(2);
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);

    // put to every node, get back from node 1: identical bytes.
    let data = payload(300_000, 7);
    let local = g.work().join("payload.bin");
    write_file(&local, &data);
    let out = g
        .run(&["put", c, local.to_str().unwrap(), "payload.bin"])
        .ok();
    for n in &names {
        assert!(
            out.stdout
                .contains(&format!("{n}: sent {} bytes", data.len())),
            "{}",
            out.stdout
        );
    }
    let sizes = g.run(&["run", c, "--", "wc -c < payload.bin"]).ok();
    for n in &names {
        assert!(
            sizes.stdout.contains(&format!("{n} | {}", data.len())),
            "{}",
            sizes.stdout
        );
    }
    let back = g.work().join("back.bin");
    g.run(&[
        "get",
        &format!("{c}/1"),
        "payload.bin",
        back.to_str().unwrap(),
    ])
    .ok();
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the file fetched from node 1 differs from the one sent"
    );
    // A file missing everywhere: each node's line says which file it lacks (exit code 1, no
    // transport error); so does a put into a directory the nodes lack.
    let out = g
        .run(&["get", c, "nofile", g.work().join("out").to_str().unwrap()])
        .expect(1);
    for n in &names {
        assert!(
            out.stderr
                .lines()
                .any(|l| l == format!("{n}: nofile does not exist on the node")),
            "{n} in:\n{}",
            out.stderr
        );
    }
    let out = g
        .run(&["put", &format!("{c}/1"), local.to_str().unwrap(), "nodir/f"])
        .expect(1);
    assert!(
        out.stderr
            .contains(&format!("{}: nodir does not exist on the node", names[0])),
        "{}",
        out.stderr
    );

    // run --output json: an array in node order; one failing node makes exit code 3.
    let out = g
        .run(&[
            "run",
            "--output",
            "json",
            c,
            "--",
            &format!(
                "echo out-$GANTRY_INDEX; echo err >&2; test $(hostname) != {}",
                names[1]
            ),
        ])
        .expect(3);
    let items = out.json();
    let items = items.as_array().expect("an array");
    assert_eq!(items.len(), 3);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["node"], names[i].as_str(), "node order: {items:?}");
        assert_eq!(item["stdout"], format!("out-{}\n", i + 1));
        assert_eq!(item["stderr"], "err\n");
        let want = if i == 1 { 1 } else { 0 };
        assert_eq!(item["exit_code"], want, "{item}");
    }

    // ssh to one node runs in the node's environment.
    let out = g
        .run(&["ssh", &format!("{c}/1"), "--", "echo $GANTRY_NODE"])
        .ok();
    assert_eq!(out.stdout.trim(), names[0]);
    g.run(&["ssh", &format!("{c}/1"), "--", "exit 4"]).expect(4);
    // A remote command killed by a signal exits 128+N, as a shell reports it.
    g.run(&["ssh", &format!("{c}/1"), "--", "kill -TERM $$"])
        .expect(143);

    // stop: nodes stopped, and no process of theirs is left.
    g.run(&["stop", c]).ok();
    for n in g.nodes(c) {
        assert_eq!(n.state, "stopped", "{n:?}");
    }
    for (name, uid) in &uids {
        assert!(
            uid_pids(uid).is_empty(),
            "{name}: processes {:?} survived stop",
            uid_pids(uid)
        );
    }
    let out = g.run(&["run", c, "--", "true"]).expect(4);
    assert!(out.stderr.contains("unreachable"), "{}", out.stderr);

    // start: same addresses, the file written before the stop is still there.
    g.run(&["start", c]).ok();
    let after = g.nodes(c);
    assert_eq!(
        after.iter().map(|n| &n.address).collect::<Vec<_>>(),
        nodes.iter().map(|n| &n.address).collect::<Vec<_>>(),
        "addresses survive stop/start"
    );
    assert!(after.iter().all(|n| n.state == "running"), "{after:?}");
    let out = g.run(&["run", &format!("{c}/2"), "--", "cat f"]).ok();
    assert_eq!(out.stdout, "hi\n");
    for (name, uid) in &uids {
        assert_eq!(agent_pids(uid).len(), 1, "one agent for {name} after start");
    }

    // plan for 5 nodes: exactly 2 creates, nothing changed by planning.
    let spec5 = g.simple_spec(c, 5);
    let spec5_s = spec5.to_str().unwrap();
    let out = g.run(&["plan", "-f", spec5_s]).ok();
    let creates: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("+ create"))
        .collect();
    assert_eq!(creates.len(), 2, "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("+ create {c}-db-4")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("+ create {c}-db-5")),
        "{}",
        out.stdout
    );
    let plan = g
        .run(&["plan", "-f", spec5_s, "--output", "json"])
        .ok()
        .json();
    assert_eq!(
        plan["create"],
        serde_json::json!([format!("{c}-db-4"), format!("{c}-db-5")])
    );
    assert_eq!(plan["delete"], serde_json::json!([]));
    assert_eq!(plan["current"], 3);
    assert_eq!(plan["desired"], 5);
    assert_eq!(g.nodes(c).len(), 3, "plan changes nothing");

    // destroy: nothing listed, no directory, no process, no lock.
    g.run(&["destroy", c, "--yes"]).ok();
    let ls = g.run(&["ls", "--output", "json"]).ok().json();
    assert_eq!(ls, serde_json::json!([]), "ls after destroy");
    let project_dir = g.home().join("local").join("default");
    let left: Vec<_> = node_dirs(&g.home().join("local"), true);
    assert!(left.is_empty(), "node dirs left: {left:?}");
    assert!(
        !g.cluster_dir(c).exists(),
        "cluster dir {} left",
        g.cluster_dir(c).display()
    );
    assert!(
        !project_dir.exists() || std::fs::read_dir(&project_dir).unwrap().next().is_none(),
        "project dir not empty"
    );
    for (name, uid) in &uids {
        assert!(
            uid_pids(uid).is_empty(),
            "{name}: processes {:?} survived destroy",
            uid_pids(uid)
        );
    }
    assert_eq!(g.lock_holder(c), None, "the cluster lock is released");
    g.run(&["show", c]).expect(2);
}
