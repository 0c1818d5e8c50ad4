//! Ctrl-C (one SIGINT) during `up`: exit 130, lock released, run recorded as interrupted, and
//! `up` again converges.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::*;

/// Milliseconds after the run started before SIGINT; shorter each time the run won the race.
const DELAYS_MS: [u64; 6] = [60, 30, 15, 5, 1, 0];

#[test]
fn ctrl_c_during_up() {
    let g = Gantry::new();
    let c = "intr";
    let spec = g.simple_spec(c, 10);
    let spec_s = spec.to_str().unwrap();

    let mut interrupted = None;
    for d in DELAYS_MS {
        let mut bg = g.spawn(&["up", "-f", spec_s]);
        // The signal handler is in place once the run has started (the lock is held by then).
        let started = bg.wait_for_stderr("steps (run", Duration::from_secs(60));
        assert!(started, "up never started:\n{}", bg.stderr_now());
        std::thread::sleep(Duration::from_millis(d));
        bg.signal(Signal::SIGINT);
        let out = bg.wait(Duration::from_secs(60));
        match out.code {
            Some(130) => {
                assert!(out.stderr.contains("interrupt"), "{}", out.stderr);
                assert!(out.stderr.contains("hint:"), "{}", out.stderr);
                interrupted = Some(d);
                break;
            }
            Some(0) => {
                eprintln!("up finished before SIGINT after {d} ms; retrying sooner");
                g.run(&["destroy", c, "--yes"]).ok();
            }
            _ => panic!(
                "up after SIGINT: exit {:?} signal {:?}, wanted 130 or 0\n--- stdout\n{}\n--- stderr\n{}",
                out.code, out.signal, out.stdout, out.stderr
            ),
        }
    }
    let d = interrupted.expect("never observed exit 130 from an interrupted up");
    eprintln!("interrupted {d} ms after the run started");

    // The interrupted run let go of its lock and says so in the run history.
    assert_eq!(
        g.lock_holder(c),
        None,
        "an interrupted run releases the lock"
    );
    let runs = g.run(&["runs", c, "--output", "json"]).ok().json();
    let latest = &runs.as_array().expect("runs is an array")[0];
    assert_eq!(latest["kind"], "up", "{runs}");
    assert_eq!(latest["status"], "interrupted", "{runs}");
    assert_eq!(latest["cluster"], c, "{runs}");

    // Converge.
    g.run(&["up", "-f", spec_s]).ok();
    let nodes = g.nodes(c);
    let want: Vec<String> = (1..=10).map(|i| format!("{c}-db-{i}")).collect();
    assert_eq!(
        nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
        want
    );
    assert!(nodes.iter().all(|n| n.state == "running"), "{nodes:?}");
    for (name, uid) in g.cluster_uids(c) {
        let one = eventually(Duration::from_secs(3), || agent_pids(&uid).len() == 1);
        assert!(one, "{name}: agents {:?}", agent_pids(&uid));
    }
    let runs = g.run(&["runs", c, "--output", "json"]).ok().json();
    assert_eq!(runs[0]["status"], "succeeded", "{runs}");
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .any(|r| r["status"] == "interrupted"),
        "{runs}"
    );

    g.run(&["destroy", c, "--yes"]).ok();
    assert!(g.home_pids().is_empty(), "{:?}", g.home_pids());
}
