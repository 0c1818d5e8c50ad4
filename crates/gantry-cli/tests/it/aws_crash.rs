//! `kill -9` of `gantry up` against the AWS provider, at several points after the run started:
//! the re-run converges to exactly the spec's instances (ClientToken and tags; never a
//! duplicate), and `destroy` leaves nothing tagged — all counted at moto itself.
//!
//! moto records RunInstances' ClientToken but does not honour it, so the calls go through
//! `scripts/fault-proxy.py` with no faults: it replays a RunInstances answer for a repeated
//! token, as EC2 does. Every spec uses `readiness: api`: no connection to an instance.

use std::path::PathBuf;
use std::time::Duration;

use crate::moto::{FaultProxy, Faults, Moto};
use crate::support::{Bg, Gantry, Out};

const TIMEOUT: Duration = Duration::from_secs(240);
const NODES: usize = 10;

fn aws_spec(g: &Gantry, cluster: &str, count: usize) -> PathBuf {
    let p = g.work().join(format!("{cluster}-{count}.yaml"));
    std::fs::write(
        &p,
        format!(
            "apiVersion: gantry/v1\nname: {cluster}\nprovider:\n  aws:\n    region: us-east-1\n    caller_cidr: 127.0.0.1/32\nlifetime: 1h\nreadiness: api\npools:\n  - name: db\n    count: {count}\n"
        ),
    )
    .unwrap();
    p
}

fn spawn_at(g: &Gantry, endpoint: &str, args: &[&str]) -> Bg {
    let mut c = g.command(args);
    Moto::env_for(endpoint, &mut c);
    g.spawn_cmd(c, format!("gantry {}", args.join(" ")))
}

fn run_at(g: &Gantry, endpoint: &str, args: &[&str]) -> Out {
    spawn_at(g, endpoint, args).wait(TIMEOUT)
}

#[test]
fn kill9_during_up_then_rerun_gives_exactly_n_instances() {
    let Some(moto) = Moto::start() else { return };
    let proxy = FaultProxy::start(&moto, &Faults::default());
    let ep = proxy.endpoint();
    let g = Gantry::new();
    let spec = aws_spec(&g, "crash", NODES);
    let spec = spec.to_str().unwrap();
    let count = || moto.count("instances", "gantry-cluster", "crash");

    // Points after `run_started`: at once, and after small delays (the creates are in flight
    // somewhere in there on moto, which answers in milliseconds).
    for delay_ms in [0u64, 20, 60, 150, 400] {
        let mut up = spawn_at(&g, &ep, &["up", "-f", spec, "--output", "json"]);
        let started = up.wait_for_stderr("\"run_started\"", Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(delay_ms));
        let killed = up.kill9();
        assert!(
            started || killed.code == Some(0),
            "up never started its run:\n{}",
            killed.stderr
        );
        let after_kill = count();
        assert!(
            after_kill <= NODES,
            "{after_kill} instances after kill -9 at +{delay_ms} ms (at most {NODES})"
        );

        let rerun = run_at(&g, &ep, &["up", "-f", spec, "--output", "json"]).ok();
        assert_eq!(
            count(),
            NODES,
            "re-run after kill -9 at +{delay_ms} ms ({after_kill} instances then)\n{}",
            rerun.stderr
        );
        assert_eq!(
            rerun.json()["nodes"].as_array().map(Vec::len),
            Some(NODES),
            "{}",
            rerun.stdout
        );
        assert_eq!(moto.count("security-groups", "gantry-cluster", "crash"), 1);
        assert_eq!(moto.count("key-pairs", "gantry-cluster", "crash"), 1);

        run_at(&g, &ep, &["destroy", "crash", "--yes"]).ok();
        for r in ["instances", "security-groups", "key-pairs"] {
            assert_eq!(
                moto.count(r, "gantry-cluster", "crash"),
                0,
                "{r} left behind (kill at +{delay_ms} ms)"
            );
        }
    }

    // A crash during destroy: the re-run finishes it.
    run_at(&g, &ep, &["up", "-f", spec]).ok();
    assert_eq!(count(), NODES);
    let mut d = spawn_at(&g, &ep, &["destroy", "crash", "--yes", "--output", "json"]);
    d.wait_for_stderr("\"run_started\"", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(30));
    let _ = d.kill9();
    // 2: the killed destroy had already got rid of everything, record included.
    let again = run_at(&g, &ep, &["destroy", "crash", "--yes"]);
    assert!(
        matches!(again.code, Some(0) | Some(2)),
        "destroy after a killed destroy: {again:?}"
    );
    for r in ["instances", "security-groups", "key-pairs"] {
        assert_eq!(
            moto.count(r, "gantry-cluster", "crash"),
            0,
            "{r} left behind"
        );
    }
    let stats = proxy.stats();
    eprintln!("proxy: {stats}");
}
