//! Blueprints through the built binary on real local clusters: applying the built-in `hello`,
//! skipping what is up to date, re-running what changed, growing, a failing step and resuming,
//! rejecting bad blueprints before anything exists, and URL artifacts (downloaded once,
//! verified) from a local HTTP server.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn spec_with(g: &Gantry, file: &str, cluster: &str, count: u32, blueprints: &str) -> PathBuf {
    g.spec(
        file,
        cluster,
        &format!(
            "apiVersion: gantry/v1\nname: {cluster}\nprovider: local\nlifetime: 1h\npools:\n  - name: db\n    count: {count}\nblueprints:\n{blueprints}"
        ),
    )
}

/// `up --output json`; returns the output and the blueprint step instances it started, as
/// `STEP@NODE`. Checks that the run announced every step it ran (see [`assert_steps_announced`]).
fn up_json(g: &Gantry, spec: &Path, code: i32) -> (Out, BTreeSet<String>) {
    let out = g
        .run(&["up", "-f", spec.to_str().unwrap(), "--output", "json"])
        .expect(code);
    assert_steps_announced(&out);
    let started = events(&out)
        .iter()
        .filter(|e| e["type"] == "step_started")
        .filter_map(|e| e["step"].as_str())
        .filter(|s| s.starts_with("bp/") && !s.ends_with("/done"))
        .map(|s| {
            // bp/NAME/STEP@NODE#HASH -> STEP@NODE
            let s = s.split('#').next().unwrap();
            s.splitn(3, '/').nth(2).unwrap().to_string()
        })
        .collect();
    (out, started)
}

/// The steps a run announced (`run_started`'s, plus the blueprint phase's `steps_added`) are the
/// steps that ended (finished, failed or skipped): what the terminal's total bar counts to, so it
/// never passes its end (it showed `66/25 steps` for 12 etcd nodes).
#[track_caller]
fn assert_steps_announced(out: &Out) {
    let evs = events(out);
    let count = |ty: &str| evs.iter().filter(|e| e["type"] == ty).count();
    let sum = |ty: &str| -> u64 {
        evs.iter()
            .filter(|e| e["type"] == ty)
            .map(|e| e["steps"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(count("run_started"), 1, "{}", out.stderr);
    let announced = sum("run_started") + sum("steps_added");
    let ended = count("step_finished") + count("step_failed") + count("step_skipped");
    assert_eq!(
        announced, ended as u64,
        "announced steps vs steps that ended:\n{}",
        out.stderr
    );
}

fn events(out: &Out) -> Vec<Value> {
    out.stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `gantry run TARGET -- CMD` stdout per node.
fn run_on(g: &Gantry, target: &str, cmd: &str) -> Vec<(String, String)> {
    let out = g
        .run(&["run", target, "--output", "json", "--", cmd])
        .ok()
        .json();
    out.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["node"].as_str().unwrap().to_string(),
                r["stdout"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn hello_applies_skips_reruns_what_changed_and_grows() {
    let g = Gantry::new();
    let c = "bphello";
    let hello = |greeting: &str| format!("  - name: hello\n    params: {{greeting: {greeting}}}\n");
    let s3 = spec_with(&g, "a.yaml", c, 3, &hello("hi"));

    let (_, started) = up_json(&g, &s3, 0);
    let all3: BTreeSet<String> = ["greet", "peers", "start", "ready"]
        .iter()
        .flat_map(|s| (1..=3).map(move |i| format!("{s}@{c}-db-{i}")))
        .collect();
    assert_eq!(started, all3);
    for (node, out) in run_on(
        &g,
        c,
        "cat hello/greeting.txt hello/started hello/peers.txt",
    ) {
        let i: u32 = node.rsplit('-').next().unwrap().parse().unwrap();
        let line = format!("hi from {node} (node {i} of cluster {c})\n");
        assert!(out.starts_with(&format!("{line}{line}")), "{node}: {out}");
        assert_eq!(
            out.matches(&format!("{c}-db-")).count(),
            3 + 2,
            "{node}: {out}"
        );
    }

    // Nothing changed: nothing runs.
    let (_, started) = up_json(&g, &s3, 0);
    assert!(started.is_empty(), "{started:?}");

    // A param: the steps rendering it and their dependants re-run, on every node; peers not.
    let s3b = spec_with(&g, "b.yaml", c, 3, &hello("hey"));
    let (_, started) = up_json(&g, &s3b, 0);
    let want: BTreeSet<String> = ["greet", "start", "ready"]
        .iter()
        .flat_map(|s| (1..=3).map(move |i| format!("{s}@{c}-db-{i}")))
        .collect();
    assert_eq!(started, want);
    let out = run_on(&g, &format!("{c}/2"), "cat hello/started");
    assert_eq!(
        out[0].1,
        format!("hey from {c}-db-2 (node 2 of cluster {c})\n")
    );

    // Grow: the new node gets every step; the others only re-render the peer list.
    let s4 = spec_with(&g, "c.yaml", c, 4, &hello("hey"));
    let (_, started) = up_json(&g, &s4, 0);
    let mut want: BTreeSet<String> = ["greet", "peers", "start", "ready"]
        .iter()
        .map(|s| format!("{s}@{c}-db-4"))
        .collect();
    for i in 1..=3 {
        want.insert(format!("peers@{c}-db-{i}"));
    }
    assert_eq!(started, want);
    for (node, out) in run_on(&g, c, "cat hello/peers.txt") {
        assert_eq!(out.matches(&format!("{c}-db-")).count(), 4, "{node}: {out}");
    }
    let (_, started) = up_json(&g, &s4, 0);
    assert!(started.is_empty(), "{started:?}");
}

#[test]
fn a_failing_step_stops_its_node_and_a_rerun_resumes() {
    let g = Gantry::new();
    let c = "bpfail";
    let dir = g.work().join("flaky");
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    let marker = g.work().join("fixed");
    std::fs::write(
        dir.join("blueprint.yaml"),
        "name: flaky\ndescription: fails on node 2 until a marker exists\nsteps:\n  - id: prepare\n    run: \"echo prepared > flaky-prepared\\n\"\n  - id: work\n    after: [prepare]\n    run: scripts/work.sh\n  - id: finish\n    after: [work]\n    run: \"echo finished > flaky-finished\\n\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("scripts/work.sh"),
        format!(
            "if [ \"$GANTRY_INDEX\" = 2 ] && [ ! -f {} ]; then\n  for i in $(seq -w 1 30); do echo \"out$i\"; done\n  echo boom >&2\n  exit 7\nfi\necho worked > flaky-work\n",
            marker.display()
        ),
    )
    .unwrap();
    let spec = spec_with(&g, "a.yaml", c, 3, "  - path: flaky\n");

    let (out, started) = up_json(&g, &spec, 1);
    assert!(
        !started.contains(&format!("finish@{c}-db-2")),
        "{started:?}"
    );
    let err = &out.stderr;
    for needle in [
        &format!("{c}-db-2"),
        "step work",
        "exit code 7",
        "boom",
        "out30",
        "out12",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let failure = err
        .lines()
        .filter(|l| !l.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        failure.contains("exit code 7") && !failure.contains("out11"),
        "the error shows the last 20 lines only:\n{failure}"
    );
    let skipped: Vec<String> = events(&out)
        .iter()
        .filter(|e| e["type"] == "step_skipped")
        .filter_map(|e| e["step"].as_str().map(String::from))
        .collect();
    assert!(
        skipped
            .iter()
            .any(|s| s.starts_with(&format!("bp/flaky/finish@{c}-db-2#"))),
        "{skipped:?}"
    );
    // Nodes 1 and 3 completed.
    for (node, out) in run_on(&g, c, "cat flaky-finished 2>/dev/null || echo missing") {
        let want = if node.ends_with("-2") {
            "missing\n"
        } else {
            "finished\n"
        };
        assert_eq!(out, want, "{node}");
    }

    // Fix the cause (the script is unchanged, so its hash is too) and resume.
    std::fs::write(&marker, "").unwrap();
    let (_, started) = up_json(&g, &spec, 0);
    assert_eq!(
        started,
        set(&[&format!("work@{c}-db-2"), &format!("finish@{c}-db-2")])
    );
    let out = run_on(&g, &format!("{c}/2"), "cat flaky-work flaky-finished");
    assert_eq!(out[0].1, "worked\nfinished\n");
}

#[test]
fn bad_blueprints_are_rejected_before_anything_exists() {
    let g = Gantry::new();
    let write = |name: &str, yaml: &str, files: &[(&str, &str)]| {
        let d = g.work().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("blueprint.yaml"), yaml).unwrap();
        for (f, t) in files {
            std::fs::write(d.join(f), t).unwrap();
        }
    };
    write(
        "cycle",
        "name: cycle\nsteps:\n  - id: a\n    after: [b]\n    run: \"true\\n\"\n  - id: b\n    after: [a]\n    run: \"true\\n\"\n",
        &[],
    );
    write(
        "tmpl",
        "name: tmpl\nsteps:\n  - id: a\n    template: {src: x.j2, dest: x}\n",
        &[("x.j2", "fine\n{{ params.missing }}\n")],
    );
    write(
        "nosum",
        "name: nosum\nartifacts:\n  tool:\n    url: http://127.0.0.1:9/tool\nsteps: []\n",
        &[],
    );
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "  - name: hello\n    params: {greting: x}\n",
            "unknown param",
            &["p0.yaml:10:14", "greting"],
        ),
        (
            "  - path: cycle\n",
            "cycle",
            &["cycle/blueprint.yaml:3:9", "a -> b -> a"],
        ),
        (
            "  - path: tmpl\n",
            "template",
            &["tmpl/x.j2:2:", "undefined"],
        ),
        (
            "  - path: nosum\n",
            "checksum",
            &["nosum/blueprint.yaml:4:10", "sha256"],
        ),
    ];
    for (i, (bp, what, needles)) in cases.iter().enumerate() {
        let spec = spec_with(&g, &format!("p{i}.yaml"), "bpbad", 2, bp);
        let out = g.run(&["up", "-f", spec.to_str().unwrap()]).expect(2);
        for n in *needles {
            assert!(
                out.stderr.contains(n),
                "{what}: missing {n:?} in\n{}",
                out.stderr
            );
        }
        assert!(
            !g.home().join("local").exists(),
            "{what}: nothing may be created"
        );
        g.run(&["validate", "-f", spec.to_str().unwrap()]).expect(2);
    }
}

/// A `python3 -m http.server` on a free loopback port, stopped by PID on drop.
struct HttpServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl HttpServer {
    fn start(dir: &Path, log: PathBuf) -> Option<HttpServer> {
        if !require_tool("/usr/bin/python3") {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start python3 -m http.server");
        let up = eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "http.server did not start on port {port}");
        Some(HttpServer { child, port, log })
    }

    fn gets(&self, path: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches(&format!("\"GET {path} "))
            .count()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn url_artifacts_download_once_and_are_verified() {
    let g = Gantry::new();
    let c = "bpart";
    let served = g.work().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let payload = b"#!/bin/sh\necho tool-ok\n";
    std::fs::write(served.join("tool.sh"), payload).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(payload))
    };
    let Some(server) = HttpServer::start(&served, g.work().join("http.log")) else {
        return;
    };
    let dir = g.work().join("arty");
    std::fs::create_dir_all(&dir).unwrap();
    let write_bp = |sum: &str| {
        std::fs::write(
            dir.join("blueprint.yaml"),
            format!(
                "name: arty\nartifacts:\n  tool: {{url: \"http://127.0.0.1:{}/tool.sh\", sha256: \"{sum}\"}}\n  shell: {{command: sh}}\nsteps:\n  - id: install\n    upload: {{src: \"artifact:tool\", dest: bin/tool, mode: \"0755\"}}\n  - id: use\n    after: [install]\n    run: \"{{{{ artifacts.shell.path }}}} bin/tool > tool.out\\n\"\n",
                server.port
            ),
        )
        .unwrap();
    };
    write_bp(&sha);
    let spec = spec_with(&g, "a.yaml", c, 2, "  - path: arty\n");
    up_json(&g, &spec, 0);
    for (node, out) in run_on(&g, c, "cat tool.out") {
        assert_eq!(out, "tool-ok\n", "{node}");
    }
    let cached = g.home().join("cache/artifacts").join(&sha);
    let mtime = std::fs::metadata(&cached).unwrap().modified().unwrap();
    assert_eq!(server.gets("/tool.sh"), 1);

    // Again: served from the cache.
    up_json(&g, &spec, 0);
    assert_eq!(server.gets("/tool.sh"), 1, "downloaded once");
    assert_eq!(
        std::fs::metadata(&cached).unwrap().modified().unwrap(),
        mtime
    );

    // A wrong checksum: the error names both sums, and nothing wrong is cached.
    let wrong = "ab".repeat(32);
    write_bp(&wrong);
    let (out, _) = up_json(&g, &spec, 1);
    assert!(
        out.stderr.contains(&wrong) && out.stderr.contains(&sha),
        "{}",
        out.stderr
    );
    assert!(!g.home().join("cache/artifacts").join(&wrong).exists());
}

#[test]
fn boot_steps_come_back_after_stop_and_start() {
    let g = Gantry::new();
    let c = "bpboot";
    let spec = spec_with(&g, "a.yaml", c, 2, "  - name: hello\n");
    up_json(&g, &spec, 0);
    run_on(&g, c, "rm hello/started");
    g.run(&["stop", c]).ok();
    g.run(&["start", c]).ok();
    for (node, out) in run_on(&g, c, "cat hello/started") {
        assert!(
            out.starts_with(&format!("hello from {node}")),
            "{node}: {out}"
        );
    }
}

#[test]
fn blueprint_commands_list_show_and_render() {
    let g = Gantry::new();
    let out = g.run(&["blueprint", "ls", "--output", "json"]).ok().json();
    assert!(
        out.as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == "hello"
                && b["description"].as_str().is_some_and(|d| !d.is_empty()))
    );
    let out = g.run(&["blueprint", "show", "hello"]).ok();
    assert!(out.stdout.contains("greeting") && out.stdout.contains("templates/greeting.txt.j2"));
    let spec = spec_with(
        &g,
        "r.yaml",
        "bprender",
        2,
        "  - name: hello\n    params: {greeting: howdy}\n",
    );
    let out = g
        .run(&[
            "blueprint",
            "render",
            "hello",
            "--node",
            "2",
            "-f",
            spec.to_str().unwrap(),
        ])
        .ok();
    assert!(
        out.stdout
            .contains("howdy from bprender-db-2 (node 2 of cluster bprender)"),
        "{}",
        out.stdout
    );
    let pos = |s: &str| {
        out.stdout
            .find(s)
            .unwrap_or_else(|| panic!("{s}: {}", out.stdout))
    };
    assert!(pos("step greet") < pos("step start") && pos("step start") < pos("step ready"));
    let json = g
        .run(&[
            "blueprint",
            "render",
            "hello",
            "--node",
            "bprender-db-1",
            "-f",
            spec.to_str().unwrap(),
            "--output",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(json.as_array().unwrap().len(), 4);
    assert!(!g.home().join("local").exists(), "render creates nothing");
}

/// A blueprint whose one step records the node address it was given, under both names.
pub fn address_env_blueprint(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("blueprint.yaml"),
        "name: addrenv\ndescription: records the address a step sees\nsteps:\n  - id: record\n    run: \"echo step $GANTRY_NODE_ADDRESS $GANTRY_ADDRESS > addrenv.txt\\n\"\n",
    )
    .unwrap();
}

/// Every node of `cluster` saw its own address as `GANTRY_NODE_ADDRESS` (and `GANTRY_ADDRESS`)
/// in the blueprint step, and sees it as `GANTRY_NODE_ADDRESS` in `gantry run`.
#[track_caller]
pub fn assert_address_env(g: &Gantry, cluster: &str) {
    let nodes = g.nodes(cluster);
    assert!(!nodes.is_empty());
    let seen: std::collections::BTreeMap<String, String> =
        run_on(g, cluster, "cat addrenv.txt; echo run $GANTRY_NODE_ADDRESS")
            .into_iter()
            .collect();
    for n in &nodes {
        assert!(!n.address.is_empty(), "{} has no address", n.name);
        let a = &n.address;
        assert_eq!(
            seen.get(&n.name).map(String::as_str),
            Some(format!("step {a} {a}\nrun {a}\n").as_str()),
            "what {} saw as its address (it is {a})",
            n.name
        );
    }
}

#[test]
fn blueprint_steps_and_run_see_the_node_address_as_gantry_node_address() {
    let g = Gantry::new();
    let c = "bpaddr";
    address_env_blueprint(&g.work().join("addrenv"));
    let spec = spec_with(&g, "a.yaml", c, 2, "  - path: addrenv\n");
    g.run(&["up", "-f", spec.to_str().unwrap()]).ok();
    assert_address_env(&g, c);
}
