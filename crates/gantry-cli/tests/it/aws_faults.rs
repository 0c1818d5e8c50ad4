//! The AWS provider under API faults, through `scripts/fault-proxy.py` in front of moto.
//!
//! 1. `gantry up` of a 10-node, 2-pool cluster while the proxy throttles (503
//!    `RequestLimitExceeded`) or fails (500 `InternalError`) a random share of all calls, loses
//!    the answer of some calls that took effect (5xx-after), and throttles the first 4
//!    `RunInstances` of every node (however the launches are batched): more than the AWS SDK's
//!    own 3 attempts, so every node's create must go through gantry's own retries
//!    (`step_retrying` events, recorded with the run: `gantry runs`, `gantry logs RUN`).
//! 2. Growing it by one node per pool while every `RunInstances` takes effect but its answer is
//!    lost, after 5 throttles: the retry must find the launched instance (by its tags or its
//!    ClientToken), never launch a second one.
//! 3. `gantry destroy` with the faults of 1 still on.
//!
//! After each: exactly the spec's instances, one per node name (or none, and no security group
//! or key pair of the cluster), asked of moto directly — never through the proxy or gantry's
//! records; and the proxy's counters show the faults happened (the test cannot pass vacuously).
//!
//! Every spec uses `readiness: api` and no blueprint: no connection to an instance address.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::moto::{FaultProxy, Faults, Moto};
use crate::support::{Gantry, Out};

const TIMEOUT: Duration = Duration::from_secs(120);
const CLUSTER: &str = "faulty";
/// Throttles per node before a `RunInstances` that launches it goes through (the proxy counts
/// per node, not per ClientToken, so that batches regrouped across retries are not refused
/// afresh): more than the SDK's 3 attempts, so gantry's own retry layer must act.
const FAIL_FIRST: u64 = 4;

fn spec(g: &Gantry, db: usize, web: usize) -> PathBuf {
    let p = g.work().join(format!("{CLUSTER}-{db}-{web}.yaml"));
    std::fs::write(
        &p,
        format!(
            "apiVersion: gantry/v1
name: {CLUSTER}
provider:
  aws:
    region: us-east-1
    caller_cidr: 127.0.0.1/32
lifetime: 1h
readiness: api
pools:
  - name: db
    count: {db}
  - name: web
    count: {web}
    size: medium
"
        ),
    )
    .unwrap();
    p
}

/// The node names of a spec with `db` and `web` nodes, sorted.
fn names(db: usize, web: usize) -> Vec<String> {
    (1..=db)
        .map(|i| format!("{CLUSTER}-db-{i}"))
        .chain((1..=web).map(|i| format!("{CLUSTER}-web-{i}")))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn gantry_at(g: &Gantry, endpoint: &str, args: &[&str]) -> Out {
    let mut c = g.command(args);
    Moto::env_for(endpoint, &mut c);
    g.spawn_cmd(c, format!("gantry {}", args.join(" ")))
        .wait(TIMEOUT)
}

/// The JSON events among the lines of `text` (stderr of `--output json`, or `logs --output json`).
fn events(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"].is_string())
        .collect()
}

fn of_type<'a>(evs: &'a [Value], ty: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["type"] == ty).collect()
}

/// Retries of `create:NODE` steps, by node; each checked to be about an injected fault.
fn create_retries(evs: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in of_type(evs, "step_retrying") {
        let Some(node) = r["step"].as_str().and_then(|s| s.strip_prefix("create:")) else {
            continue;
        };
        assert_eq!(r["node"], node, "{r}");
        assert!(r["attempt"].as_u64().is_some_and(|a| a >= 1), "{r}");
        assert!(r["delay_ms"].is_u64(), "{r}");
        let err = r["error"].as_str().unwrap_or_default();
        assert!(
            ["RequestLimitExceeded", "InternalError", "HTTP 50"]
                .iter()
                .any(|w| err.contains(w)),
            "a create retried for something else than an injected fault: {r}"
        );
        out.entry(node.to_string())
            .or_default()
            .push(err.to_string());
    }
    out
}

/// The run's id, after checking it finished `succeeded` with no failed step.
fn succeeded_run(out: &Out, evs: &[Value]) -> String {
    let finished = of_type(evs, "run_finished");
    assert_eq!(finished.len(), 1, "{}", out.stderr);
    assert_eq!(finished[0]["status"], "succeeded", "{}", out.stderr);
    assert!(of_type(evs, "step_failed").is_empty(), "{}", out.stderr);
    of_type(evs, "run_started")
        .first()
        .and_then(|e| e["run_id"].as_str())
        .unwrap_or_else(|| panic!("no run_started event:\n{}", out.stderr))
        .to_string()
}

/// What moto itself (not the proxy) holds of the cluster, through boto3 (moto's own Python; one
/// process for what would take several `Moto::count`s):
/// `{"names": [Name of every live instance with the cluster's tag, sorted, repeats kept],
/// "pools": {pool: live instances}, "groups": [security group names], "keys": [key pair
/// names]}`; groups and key pairs tagged with the cluster or named after it.
fn inventory(moto: &Moto) -> Value {
    let script = format!(
        r#"
import json, boto3
ec2 = boto3.client('ec2', endpoint_url='{endpoint}', region_name='us-east-1',
                   aws_access_key_id='test', aws_secret_access_key='test')
tagged = [{{'Name': 'tag:gantry-cluster', 'Values': ['{CLUSTER}']}}]
named = 'gantry-default-{CLUSTER}'
def ours(x, name):
    return name == named or any(
        t['Key'] == 'gantry-cluster' and t['Value'] == '{CLUSTER}' for t in x.get('Tags', []))
names, pools = [], {{}}
for page in ec2.get_paginator('describe_instances').paginate(Filters=tagged):
    for r in page['Reservations']:
        for i in r['Instances']:
            if i['State']['Name'] in ('terminated', 'shutting-down'):
                continue
            t = {{x['Key']: x['Value'] for x in i.get('Tags', [])}}
            names.append(t.get('Name', '?'))
            pools[t.get('gantry-pool', '?')] = pools.get(t.get('gantry-pool', '?'), 0) + 1
groups = [g['GroupName'] for g in ec2.describe_security_groups()['SecurityGroups']
          if ours(g, g['GroupName'])]
keys = [k['KeyName'] for k in ec2.describe_key_pairs()['KeyPairs'] if ours(k, k['KeyName'])]
print(json.dumps({{'names': sorted(names), 'pools': pools, 'groups': groups, 'keys': keys}}))
"#,
        endpoint = moto.endpoint()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "boto3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inventory JSON")
}

/// Asks moto for the cluster's instances: exactly `db` + `web`, one per node name.
#[track_caller]
fn assert_exactly(moto: &Moto, db: usize, web: usize) {
    let inv = inventory(moto);
    assert_eq!(
        inv["names"],
        json!(names(db, web)),
        "one live instance per node name"
    );
    assert_eq!(inv["pools"], json!({"db": db, "web": web}));
    assert_eq!(inv["groups"].as_array().map(Vec::len), Some(1), "{inv}");
    assert_eq!(inv["keys"].as_array().map(Vec::len), Some(1), "{inv}");
}

fn stat(s: &Value, key: &str) -> u64 {
    s[key].as_u64().unwrap_or(0)
}

fn action_stat(s: &Value, action: &str, key: &str) -> u64 {
    s["by_action"][action][key].as_u64().unwrap_or(0)
}

fn faults(s: &Value) -> u64 {
    stat(s, "throttled") + stat(s, "errors5xx") + stat(s, "errors5xx_after")
}

/// Faults that only the random share can have made: every 5xx, and throttles of actions that
/// `--fail-first` does not cover.
fn random_faults(s: &Value, fail_first_actions: &[&str]) -> u64 {
    let first: u64 = fail_first_actions
        .iter()
        .map(|a| action_stat(s, a, "throttled"))
        .sum();
    faults(s) - first
}

#[test]
fn aws_up_grow_destroy_converge_through_throttling_and_lost_answers() {
    let Some(moto) = Moto::start() else { return };
    let t0 = Instant::now();
    // A new seed each run (the calls interleave differently anyway); printed for a replay.
    let seed = u64::from(std::process::id());
    // TerminateInstances carries no ClientToken: its first 4 calls are throttled, so faults
    // certainly hit the destroy too.
    let first_actions = ["RunInstances", "TerminateInstances"];
    let proxy = FaultProxy::start(
        &moto,
        &Faults {
            throttle: 0.05,
            error5xx: 0.025,
            error5xx_after: 0.025,
            fail_first: FAIL_FIRST as u32,
            fail_first_actions: first_actions.iter().map(|a| a.to_string()).collect(),
            seed,
            ..Faults::default()
        },
    );
    let ep = proxy.endpoint();
    let g = Gantry::new();
    let (db, web) = (6, 4);

    // --- 1. up through random faults, every RunInstances throttled 4 times first.
    let t = Instant::now();
    let up = gantry_at(
        &g,
        &ep,
        &[
            "up",
            "-f",
            spec(&g, db, web).to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    let up_secs = t.elapsed().as_secs_f64();
    let s1 = proxy.stats();
    eprintln!("seed {seed}; up: {up_secs:.1} s; proxy: {s1}");
    let up = up.ok();
    assert_exactly(&moto, db, web);
    assert_eq!(
        up.json()["nodes"].as_array().map(Vec::len),
        Some(db + web),
        "{}",
        up.stdout
    );

    // Gantry's own retries: the SDK's 3 attempts cannot outlast 4 throttles per node, so every
    // node's create step was retried by the engine, visibly.
    let evs = events(&up.stderr);
    let run_id = succeeded_run(&up, &evs);
    let retried = create_retries(&evs);
    assert_eq!(
        retried.keys().cloned().collect::<Vec<_>>(),
        names(db, web),
        "every create step retried by gantry itself:\n{}",
        up.stderr
    );
    assert!(
        retried
            .values()
            .flatten()
            .any(|e| e.contains("RequestLimitExceeded")),
        "{retried:?}"
    );

    // The retries are recorded with the run: `gantry runs` lists it, `gantry logs` replays them.
    let runs = gantry_at(&g, &ep, &["runs", CLUSTER, "--output", "json"]).ok();
    let runs = runs.json();
    let run = runs
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["id"] == run_id.as_str()))
        .unwrap_or_else(|| panic!("run {run_id} not in `gantry runs`: {runs}"));
    assert_eq!(run["kind"], "up", "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    let logs = gantry_at(&g, &ep, &["logs", &run_id, "--output", "json"]).ok();
    let recorded = events(&logs.stdout);
    let key = |e: &&Value| {
        format!(
            "{} {} {}",
            e["step"].as_str().unwrap_or_default(),
            e["attempt"],
            e["error"].as_str().unwrap_or_default()
        )
    };
    let live: BTreeSet<String> = of_type(&evs, "step_retrying").iter().map(key).collect();
    let stored: BTreeSet<String> = of_type(&recorded, "step_retrying")
        .iter()
        .map(key)
        .collect();
    assert_eq!(
        stored, live,
        "`gantry logs {run_id}` replays the retries\n{}",
        logs.stdout
    );

    // The faults happened: every node was in at least 4 refused launches and one that went
    // through; at most one launch per node reached moto (repeats were answered from the token).
    for n in names(db, web) {
        let seen = s1["fail_first_seen"][format!("RunInstances:{n}")]
            .as_u64()
            .unwrap_or(0);
        assert!(seen > FAIL_FIRST, "{n}: {seen} launches seen: {s1}");
    }
    assert!(
        action_stat(&s1, "RunInstances", "throttled") >= FAIL_FIRST,
        "{s1}"
    );
    let launched = action_stat(&s1, "RunInstances", "forwarded");
    assert!((1..=(db + web) as u64).contains(&launched), "{s1}");

    // --- 2. Grow by one node per pool; every RunInstances takes effect and loses its answer,
    // after 5 throttles (so the loss falls on the SDK's last attempt of gantry's 2nd one).
    let lossy = FaultProxy::start(
        &moto,
        &Faults {
            error5xx_after: 1.0,
            fail_first: 5,
            fail_first_actions: vec!["RunInstances".into()],
            only_actions: vec!["RunInstances".into()],
            seed,
            ..Faults::default()
        },
    );
    let t = Instant::now();
    let grow = gantry_at(
        &g,
        &lossy.endpoint(),
        &[
            "up",
            "-f",
            spec(&g, db + 1, web + 1).to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    let grow_secs = t.elapsed().as_secs_f64();
    let s2 = lossy.stats();
    eprintln!("grow: {grow_secs:.1} s; lossy proxy: {s2}");
    let grow = grow.ok();
    assert_exactly(&moto, db + 1, web + 1);
    let evs = events(&grow.stderr);
    succeeded_run(&grow, &evs);
    let retried = create_retries(&evs);
    let new = [
        format!("{CLUSTER}-db-{}", db + 1),
        format!("{CLUSTER}-web-{}", web + 1),
    ];
    assert_eq!(
        retried.keys().cloned().collect::<Vec<_>>(),
        new,
        "{}",
        grow.stderr
    );
    // Each new node's launch reached moto exactly once and its answer was lost; the retry
    // found the instance — by its tags (gantry's retry after a lost answer) or by the token
    // (the proxy replays, as EC2 does) — and did not launch again.
    assert_eq!(action_stat(&s2, "RunInstances", "forwarded"), 2, "{s2}");
    assert_eq!(
        action_stat(&s2, "RunInstances", "errors5xx_after"),
        2,
        "{s2}"
    );
    let lost_then_retried = retried
        .values()
        .flatten()
        .filter(|e| e.contains("InternalError"))
        .count();
    assert!(
        lost_then_retried + stat(&s2, "replayed") as usize >= 2,
        "each lost answer was retried by gantry or replayed by token: {retried:?} {s2}"
    );
    drop(lossy);

    // --- 3. destroy, the faults of 1 still on.
    let t = Instant::now();
    let destroy = gantry_at(&g, &ep, &["destroy", CLUSTER, "--yes", "--output", "json"]);
    let destroy_secs = t.elapsed().as_secs_f64();
    let s3 = proxy.stats();
    eprintln!("destroy: {destroy_secs:.1} s; proxy: {s3}");
    let destroy = destroy.ok();
    succeeded_run(&destroy, &events(&destroy.stderr));
    assert!(
        action_stat(&s3, "TerminateInstances", "throttled") >= FAIL_FIRST,
        "{s3}"
    );
    assert!(
        random_faults(&s3, &first_actions) > 0,
        "no random fault in the whole test: {s3}"
    );
    assert_eq!(
        inventory(&moto),
        json!({"names": [], "pools": {}, "groups": [], "keys": []}),
        "left behind at moto"
    );
    eprintln!(
        "total {:.1} s (up {up_secs:.1} s, grow {grow_secs:.1} s, destroy {destroy_secs:.1} s)",
        t0.elapsed().as_secs_f64()
    );
}
