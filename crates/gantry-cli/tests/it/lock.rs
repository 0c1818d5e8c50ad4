//! The cluster lock across processes: a second `up` waits for the first and then finds nothing
//! to do; with a short `--lock-timeout` a locked cluster is refused with exit 5 naming the holder.

use std::time::Duration;

use gantry_state::{Acquire, StateStore as _};

use crate::support::*;

#[test]
fn concurrent_up_waits_then_converges() {
    let g = Gantry::new();
    let c = "locked";
    let spec = g.simple_spec(c, 30);
    let spec_s = spec.to_str().unwrap();

    // Two `up` at once: one takes the lock, the other waits for it.
    let a = g.spawn(&["up", "-f", spec_s]);
    let b = g.spawn(&["up", "-f", spec_s]);
    let pids = [a.pid(), b.pid()];
    let t = Duration::from_secs(120);
    let outs = [a.wait(t).ok(), b.wait(t).ok()];
    let waited: Vec<usize> = (0..2)
        .filter(|i| outs[*i].stderr.contains("waiting for the lock"))
        .collect();
    assert_eq!(
        waited.len(),
        1,
        "exactly one of two simultaneous runs waits for the lock\n--- a\n{}\n--- b\n{}",
        outs[0].stderr,
        outs[1].stderr
    );
    let (w, first) = (waited[0], 1 - waited[0]);
    let holder = format!("pid {}@", pids[first]);
    assert!(
        outs[w].stderr.contains(&holder),
        "the waiting run names the holder ({holder}):\n{}",
        outs[w].stderr
    );
    assert!(
        outs[first].stdout.contains("30 created"),
        "{}",
        outs[first].stdout
    );
    assert!(
        outs[w].stdout.contains("no change"),
        "the second run re-observes after the wait and creates nothing:\n{}",
        outs[w].stdout
    );
    let nodes = g.nodes(c);
    assert_eq!(nodes.len(), 30, "{nodes:?}");
    let names: std::collections::BTreeSet<_> = nodes.iter().map(|n| n.name.clone()).collect();
    assert_eq!(names.len(), 30, "no duplicate names");
    assert!(nodes.iter().all(|n| n.state == "running"));
    for (name, uid) in g.cluster_uids(c) {
        let one = eventually(Duration::from_secs(3), || agent_pids(&uid).len() == 1);
        assert!(one, "{name}: agents {:?}", agent_pids(&uid));
    }
    assert_eq!(g.lock_holder(c), None);

    // Someone else holds the lock: a 1 s wait gives up with exit 5 and names them.
    let store = gantry_state::SqliteStore::open(&g.home().join("state.db")).unwrap();
    let key = format!("cluster/default/{c}");
    let lease = match block_on(store.acquire_lock(&key, "test-holder", Duration::from_secs(120)))
        .unwrap()
    {
        Acquire::Acquired(l) => l,
        Acquire::Held { holder, .. } => panic!("lock unexpectedly held by {holder}"),
    };
    let out = g
        .run(&["up", "-f", spec_s, "--lock-timeout", "1s"])
        .expect(5);
    assert!(out.stderr.contains("test-holder"), "{}", out.stderr);
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    let out = g
        .run(&["destroy", c, "--yes", "--lock-timeout", "1s"])
        .expect(5);
    assert!(out.stderr.contains("test-holder"), "{}", out.stderr);
    assert_eq!(g.nodes(c).len(), 30, "a refused destroy deletes nothing");
    block_on(store.release_lock(&lease)).unwrap();

    // Released: the next run goes ahead.
    let out = g.run(&["up", "-f", spec_s, "--lock-timeout", "1s"]).ok();
    assert!(out.stdout.contains("no change"), "{}", out.stdout);
    g.run(&["destroy", c, "--yes"]).ok();
    assert!(node_dirs(&g.home().join("local"), true).is_empty());
}
