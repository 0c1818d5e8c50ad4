//! `kill -9` of `gantry up` at several points, then `up` again: it must converge to exactly the
//! spec — no missing node, no duplicate, exactly one agent per node — and `destroy` must then
//! leave nothing (directories, partial directories, processes, lock).
//!
//! Each kill point gets its own cluster in the same home (so they start fresh, and the lease
//! waits after the kills overlap instead of adding up). Two of them are killed a second time
//! while the resumed run is under way, so a resume of a crashed run is itself crashed and resumed.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::*;

const NODES: u32 = 10;

/// When the first `up` of a cluster is SIGKILLed.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// Milliseconds after spawning the process (start-up, spec, store, lock).
    Spawn(u64),
    /// Milliseconds after the run started (lock held, cluster recorded, steps under way), so
    /// the point lands inside the creates and readiness checks however fast the machine is.
    RunStart(u64),
}

/// One cluster per kill point.
const KILL_AT: [KillAt; 5] = [
    KillAt::Spawn(5),
    KillAt::Spawn(40),
    KillAt::RunStart(0),
    KillAt::RunStart(30),
    KillAt::RunStart(80),
];
/// Which of those are resumed and killed again (milliseconds after the resumed run started).
const RE_KILL_AFTER_MS: [Option<u64>; 5] = [None, Some(20), None, Some(10), None];

#[test]
fn kill_9_during_up_then_converge() {
    let g = Gantry::new();
    let clusters: Vec<String> = (0..KILL_AT.len()).map(|i| format!("crash-{i}")).collect();
    let specs: Vec<String> = clusters
        .iter()
        .map(|c| g.simple_spec(c, NODES).to_str().unwrap().to_string())
        .collect();

    // 1. Fresh clusters, each `up` killed at its point.
    for (i, at) in KILL_AT.iter().enumerate() {
        let mut bg = g.spawn(&["up", "-f", &specs[i]]);
        match *at {
            KillAt::Spawn(d) => std::thread::sleep(Duration::from_millis(d)),
            KillAt::RunStart(d) => {
                let started = bg.wait_for_stderr("steps (run", Duration::from_secs(60));
                assert!(
                    started,
                    "{}: up never started:\n{}",
                    clusters[i],
                    bg.stderr_now()
                );
                std::thread::sleep(Duration::from_millis(d));
            }
        }
        let out = bg.kill9();
        let made = g.cluster_uids(&clusters[i]).len();
        eprintln!(
            "{}: killed at {at:?} (exit {:?}/signal {:?}), {made} node dir(s) so far",
            clusters[i], out.code, out.signal
        );
    }

    // 2. Resume some of them and kill the resumed run too, once it is under way (after the
    //    killed run's lease lapsed).
    std::thread::scope(|s| {
        for (i, re) in RE_KILL_AFTER_MS.iter().enumerate() {
            let Some(d) = *re else { continue };
            let (g, spec, c) = (&g, &specs[i], &clusters[i]);
            s.spawn(move || {
                let mut bg = g.spawn(&["up", "-f", spec, "--lock-timeout", "60s"]);
                let started = bg.wait_for_stderr("steps (run", Duration::from_secs(60));
                assert!(
                    started,
                    "{c}: the resumed run never started:\n{}",
                    bg.stderr_now()
                );
                std::thread::sleep(Duration::from_millis(d));
                let out = bg.kill9();
                eprintln!(
                    "{c}: resumed run killed {d} ms after it started (exit {:?}/signal {:?})",
                    out.code, out.signal
                );
            });
        }
    });
    g.node_uids();

    // 3. Converge all of them (each waits for its own killed run's lease).
    std::thread::scope(|s| {
        for spec in &specs {
            let g = &g;
            s.spawn(move || {
                g.run(&["up", "-f", spec, "--lock-timeout", "60s"]).ok();
            });
        }
    });

    let mut all_addresses = BTreeSet::new();
    let mut all_uids = BTreeSet::new();
    for c in &clusters {
        let nodes = g.nodes(c);
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        let want: Vec<String> = (1..=NODES).map(|i| format!("{c}-db-{i}")).collect();
        assert_eq!(names, want, "{c}: exactly nodes 1..{NODES}, no duplicates");
        for n in &nodes {
            assert_eq!(n.state, "running", "{c}: {n:?}");
            assert!(
                all_addresses.insert(n.address.clone()),
                "address {} handed out twice",
                n.address
            );
        }
        let uids = g.cluster_uids(c);
        assert_eq!(
            uids.len(),
            NODES as usize,
            "{c}: one node directory per node: {uids:?}"
        );
        for (name, uid) in &uids {
            all_uids.insert(uid.clone());
            // A duplicate agent that lost the race for agent.lock exits by itself at once.
            let one = eventually(Duration::from_secs(3), || agent_pids(uid).len() == 1);
            assert!(
                one,
                "{name}: want exactly one agent, found {:?}",
                agent_pids(uid)
            );
            assert_eq!(
                uid_pids(uid),
                agent_pids(uid),
                "{name}: only the agent runs"
            );
        }
        g.run(&["run", c, "--", "true"]).ok();
    }
    let partial = partial_dirs(&g.home().join("local"));
    assert!(
        partial.is_empty(),
        "partial node dirs left after converging: {partial:?}"
    );

    // 4. Destroy: nothing left.
    for c in &clusters {
        g.run(&["destroy", c, "--yes"]).ok();
        assert!(!g.cluster_dir(c).exists(), "{c}: cluster dir left");
        assert_eq!(g.lock_holder(c), None, "{c}: lock left held");
    }
    let left = node_dirs(&g.home().join("local"), true);
    assert!(
        left.is_empty(),
        "node or partial dirs left after destroy: {left:?}"
    );
    for uid in &all_uids {
        assert!(
            uid_pids(uid).is_empty(),
            "node {uid}: processes {:?} survived destroy",
            uid_pids(uid)
        );
    }
    let ls = g.run(&["ls", "--output", "json"]).ok().json();
    assert_eq!(ls, serde_json::json!([]));
    assert!(
        g.home_pids().is_empty(),
        "processes of this home left: {:?}",
        g.home_pids()
    );
}
