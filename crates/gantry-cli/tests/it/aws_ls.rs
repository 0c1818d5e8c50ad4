//! `gantry ls` across AWS regions, against a moto server of the test's own: clusters made by
//! `gantry up` in us-east-1 and eu-west-1, and instances made behind gantry's back (boto3) with
//! the project's tags in ap-south-1 and later us-east-1. Checks the rows (provider, region,
//! tracked), the inventory cache (served while young, `--refresh` re-lists, `destroy`
//! invalidates it), a bad region (a warning, the rest still lists), and at the end that nothing
//! carrying the project's tags is left, asked of moto itself.
//!
//! Every spec uses `readiness: api` and no blueprint: no connection is ever opened to an
//! instance address moto invents.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::moto::Moto;
use crate::support::{Gantry, Out};

const TIMEOUT: Duration = Duration::from_secs(300);
const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-south-1"];

/// A one-pool AWS spec in `region`.
fn spec(g: &Gantry, cluster: &str, region: &str, count: u32) -> PathBuf {
    let p = g.work().join(format!("{cluster}.yaml"));
    std::fs::write(
        &p,
        format!(
            "apiVersion: gantry/v1
name: {cluster}
provider:
  aws:
    region: {region}
    caller_cidr: 203.0.113.7/32
lifetime: 1h
readiness: api
pools:
  - name: db
    count: {count}
"
        ),
    )
    .unwrap();
    p
}

fn gantry_env(g: &Gantry, moto: &Moto, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut c = g.command(args);
    moto.env(&mut c);
    for (k, v) in env {
        c.env(k, v);
    }
    g.spawn_cmd(c, format!("gantry {}", args.join(" ")))
        .wait(TIMEOUT)
}

fn gantry(g: &Gantry, moto: &Moto, args: &[&str]) -> Out {
    gantry_env(g, moto, args, &[])
}

/// boto3 against moto in `region` (moto's own Python); returns what the code prints.
fn boto(moto: &Moto, region: &str, code: &str) -> String {
    let script = format!(
        "import boto3\nec2 = boto3.client('ec2', endpoint_url='{}', region_name='{region}', \
         aws_access_key_id='test', aws_secret_access_key='test')\n{code}\n",
        moto.endpoint()
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
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Launches one instance in `region` carrying the project's gantry tags for `cluster`, without
/// gantry (and without gantry's records).
fn launch_behind_gantrys_back(moto: &Moto, region: &str, cluster: &str) {
    boto(
        moto,
        region,
        &format!(
            "img = ec2.describe_images(Owners=['amazon'])['Images'][0]['ImageId']\n\
             tags = [{{'Key': k, 'Value': v}} for k, v in [('Name', '{cluster}-db-1'), \
             ('gantry-project', 'default'), ('gantry-cluster', '{cluster}'), \
             ('gantry-cluster-uid', 'made-by-hand'), ('gantry-pool', 'db'), ('gantry-index', '1')]]\n\
             ec2.run_instances(ImageId=img, InstanceType='t3.micro', MinCount=1, MaxCount=1, \
             TagSpecifications=[{{'ResourceType': 'instance', 'Tags': tags}}])"
        ),
    );
}

/// Terminates every instance of `cluster` in `region`, without gantry.
fn terminate_behind_gantrys_back(moto: &Moto, region: &str, cluster: &str) {
    boto(
        moto,
        region,
        &format!(
            "r = ec2.describe_instances(Filters=[{{'Name': 'tag:gantry-cluster', 'Values': ['{cluster}']}}])\n\
             ids = [i['InstanceId'] for x in r['Reservations'] for i in x['Instances']]\n\
             ec2.terminate_instances(InstanceIds=ids)"
        ),
    );
}

/// Instances of the project in `region` that are not terminated, asked of moto.
fn live_project_instances(moto: &Moto, region: &str) -> usize {
    boto(
        moto,
        region,
        "r = ec2.describe_instances(Filters=[{'Name': 'tag:gantry-project', 'Values': ['default']}])\n\
         print(sum(1 for x in r['Reservations'] for i in x['Instances'] \
         if i['State']['Name'] not in ('terminated', 'shutting-down')))",
    )
    .parse()
    .unwrap()
}

/// The rows of `ls --output json` as (name, provider, region, tracked, nodes_total).
fn rows(ls: &Value) -> Vec<(String, String, String, bool, u64)> {
    ls.as_array()
        .unwrap_or_else(|| panic!("ls prints an array: {ls:#}"))
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["provider"].as_str().unwrap().to_string(),
                r["region"].as_str().unwrap_or("-").to_string(),
                r["tracked"].as_bool().unwrap(),
                r["nodes_total"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn row(name: &str, region: &str, tracked: bool, nodes: u64) -> (String, String, String, bool, u64) {
    (name.into(), "aws".into(), region.into(), tracked, nodes)
}

#[test]
fn ls_lists_every_region_caches_and_invalidates() {
    let Some(moto) = Moto::start() else { return };
    let g = Gantry::new();

    for (c, region, n) in [("east", "us-east-1", 2), ("west", "eu-west-1", 1)] {
        let path = spec(&g, c, region, n);
        gantry(&g, &moto, &["up", "-f", path.to_str().unwrap()]).ok();
    }
    launch_behind_gantrys_back(&moto, "ap-south-1", "ghost");

    // Without ap-south-1 named, the untracked cluster there is not looked for.
    let ls = gantry(&g, &moto, &["ls", "--output", "json"]).ok().json();
    assert_eq!(
        rows(&ls),
        [
            row("east", "us-east-1", true, 2),
            row("west", "eu-west-1", true, 1)
        ]
    );
    assert!(
        ls[0]["cached_age_secs"].is_null(),
        "listed live after up invalidated the cache: {ls:#}"
    );

    // Named with --region: all three, each with its provider, region and tracked flag.
    let ls = gantry(
        &g,
        &moto,
        &[
            "ls",
            "--region",
            "ap-south-1",
            "--output",
            "json",
            "--refresh",
        ],
    )
    .ok();
    let v = ls.json();
    let want = [
        row("east", "us-east-1", true, 2),
        row("west", "eu-west-1", true, 1),
        row("ghost", "ap-south-1", false, 1),
    ];
    assert_eq!(rows(&v), want, "{}", ls.stderr);
    assert_eq!(v[2]["status"], "untracked");
    // Made behind gantry's back (no world tag, no record here): shown as nobody's of this world.
    assert!(
        v[2]["foreign_owner"]
            .as_str()
            .is_some_and(|o| o.contains("world unknown")),
        "{v:#}"
    );
    assert!(v[0]["foreign_owner"].is_null(), "{v:#}");
    assert_eq!(v[0]["status"], "ready");
    assert_eq!(v[0]["nodes_up"], 2);
    for r in v.as_array().unwrap() {
        assert!(r["cached_age_secs"].is_null(), "--refresh lists live: {r}");
    }

    // Text, with the region from GANTRY_AWS_REGIONS instead: served from the cache.
    let ls = gantry_env(&g, &moto, &["ls"], &[("GANTRY_AWS_REGIONS", "ap-south-1")]).ok();
    let line = |name: &str| -> Vec<String> {
        ls.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("ls lists {name}:\n{}", ls.stdout))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert!(ls.stdout.starts_with("NAME"), "{}", ls.stdout);
    assert!(ls.stdout.lines().next().unwrap().contains("REGION"));
    assert_eq!(
        line("east")[..5],
        ["east", "aws", "us-east-1", "ready", "2/2"]
    );
    assert_eq!(
        line("west")[..5],
        ["west", "aws", "eu-west-1", "ready", "1/1"]
    );
    assert_eq!(
        line("ghost"),
        ["ghost", "aws", "ap-south-1", "untracked", "1/1", "-"]
    );
    assert!(
        ls.stderr.contains("cached") && ls.stderr.contains("s ago; --refresh re-reads"),
        "{}",
        ls.stderr
    );

    // An instance added behind gantry's back: the cached listing does not show it, --refresh
    // does.
    launch_behind_gantrys_back(&moto, "us-east-1", "sneak");
    let args = ["ls", "--region", "ap-south-1", "--output", "json"];
    let ls = gantry(&g, &moto, &args).ok();
    let v = ls.json();
    assert_eq!(rows(&v), want, "served from the cache");
    for r in v.as_array().unwrap() {
        assert!(r["cached_age_secs"].as_u64().is_some(), "cached: {r}");
    }
    assert!(ls.stderr.contains(r#""type":"cached""#), "{}", ls.stderr);
    let v = gantry(&g, &moto, &[&args[..], &["--refresh"]].concat())
        .ok()
        .json();
    let mut with_sneak = want.to_vec();
    with_sneak.push(row("sneak", "us-east-1", false, 1));
    assert_eq!(rows(&v), with_sneak);
    // --max-age 0s never serves the cache.
    let v = gantry(&g, &moto, &[&args[..], &["--max-age", "0s"]].concat())
        .ok()
        .json();
    assert!(v[0]["cached_age_secs"].is_null(), "{v:#}");

    // destroy invalidates: a plain ls (no --refresh) no longer shows the cluster.
    gantry(&g, &moto, &["destroy", "west", "--yes"]).ok();
    let v = gantry(&g, &moto, &args).ok().json();
    assert_eq!(
        rows(&v),
        [
            row("east", "us-east-1", true, 2),
            row("ghost", "ap-south-1", false, 1),
            row("sneak", "us-east-1", false, 1),
        ]
    );
    assert!(v[0]["cached_age_secs"].is_null(), "re-listed: {v:#}");

    // A bad region: a warning naming it, and the rest still lists.
    let ls = gantry(
        &g,
        &moto,
        &["ls", "--region", "us-nowhere-1,Not_A_Region", "--refresh"],
    )
    .ok();
    for w in [
        "warning: cannot list AWS region us-nowhere-1",
        "unknown region",
        "Not_A_Region",
    ] {
        assert!(ls.stderr.contains(w), "wanted {w:?} in\n{}", ls.stderr);
    }
    assert!(ls.stdout.contains("east"), "{}", ls.stdout);
    assert!(ls.stdout.contains("sneak"), "{}", ls.stdout);
    let ls = gantry(
        &g,
        &moto,
        &["ls", "--region", "us-nowhere-1", "--output", "json"],
    )
    .ok();
    let warning: Value = ls
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|w| w["type"] == "warning")
        .unwrap_or_else(|| panic!("a JSON warning on stderr:\n{}", ls.stderr));
    assert_eq!(warning["region"], "us-nowhere-1", "{warning}");
    assert_eq!(rows(&ls.json())[0], row("east", "us-east-1", true, 2));

    // Clean up: gantry's cluster through gantry, the hand-made ones by hand; then nothing with
    // the project's tags is left anywhere, asked of moto.
    gantry(&g, &moto, &["destroy", "east", "--yes"]).ok();
    terminate_behind_gantrys_back(&moto, "ap-south-1", "ghost");
    terminate_behind_gantrys_back(&moto, "us-east-1", "sneak");
    for region in REGIONS {
        assert_eq!(live_project_instances(&moto, region), 0, "{region}");
    }
    for c in ["east", "west"] {
        assert_eq!(moto.count("security-groups", "gantry-cluster", c), 0, "{c}");
        assert_eq!(moto.count("key-pairs", "gantry-cluster", c), 0, "{c}");
    }
    let v = gantry(
        &g,
        &moto,
        &["ls", "--region", "ap-south-1", "--output", "json"],
    )
    .ok()
    .json();
    assert_eq!(v, serde_json::json!([]));
}
