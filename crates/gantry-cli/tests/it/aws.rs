//! The AWS provider through the binary, against a moto server of the test's own: a 20-node,
//! 2-pool cluster, grown to 30, stopped, started and destroyed, with every count asked of moto
//! itself (not gantry's records); and bad input (unknown AMI, instance type, region, no
//! credentials) failing clearly with nothing created. Every spec uses `readiness: api` and no
//! blueprint: no connection is ever opened to an instance address.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::moto::Moto;
use crate::support::{Gantry, Out};

const TIMEOUT: Duration = Duration::from_secs(300);

/// A two-pool spec (written by hand, not `Gantry::spec`, so the guard never runs a `destroy`
/// without moto's endpoint).
fn spec(g: &Gantry, cluster: &str, db: u32, web: u32, extra: &str) -> PathBuf {
    let p = g.work().join(format!("{cluster}-{db}-{web}.yaml"));
    std::fs::write(
        &p,
        format!(
            "apiVersion: gantry/v1
name: {cluster}
provider:
  aws:
    region: us-east-1
    caller_cidr: 203.0.113.7/32
{extra}lifetime: 1h
readiness: api
network:
  allow:
    - {{port: 22, from: caller}}
    - {{port: 8080, from: cluster}}
    - {{port: 443, from: 10.0.0.0/8}}
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

fn gantry(g: &Gantry, moto: &Moto, args: &[&str]) -> Out {
    let mut c = g.command(args);
    moto.env(&mut c);
    g.spawn_cmd(c, format!("gantry {}", args.join(" ")))
        .wait(TIMEOUT)
}

/// A question to moto through boto3 (moto's own Python): prints one line.
fn boto(moto: &Moto, code: &str) -> String {
    let script = format!(
        "import boto3\nec2 = boto3.client('ec2', endpoint_url='{}', region_name='us-east-1', \
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

/// Instances with the cluster's tag in `state`, asked of moto.
fn in_state(moto: &Moto, cluster: &str, state: &str) -> usize {
    boto(
        moto,
        &format!(
            "r = ec2.describe_instances(Filters=[{{'Name': 'tag:gantry-cluster', 'Values': ['{cluster}']}}, \
             {{'Name': 'instance-state-name', 'Values': ['{state}']}}])\n\
             print(sum(len(x['Instances']) for x in r['Reservations']))"
        ),
    )
    .parse()
    .unwrap()
}

/// Every resource kind with the tag `key=value`, asked of moto.
fn counts(moto: &Moto, key: &str, value: &str) -> Vec<usize> {
    [
        "instances",
        "security-groups",
        "key-pairs",
        "vpcs",
        "subnets",
        "internet-gateways",
        "route-tables",
    ]
    .iter()
    .map(|r| moto.count(r, key, value))
    .collect()
}

#[test]
fn aws_cluster_up_grow_stop_start_destroy_on_moto() {
    let Some(moto) = Moto::start() else { return };
    let g = Gantry::new();
    let c = "awsit";

    gantry(
        &g,
        &moto,
        &["up", "-f", spec(&g, c, 10, 10, "").to_str().unwrap()],
    )
    .ok();
    assert_eq!(moto.count("instances", "gantry-cluster", c), 20);
    assert_eq!(moto.count("instances", "gantry-pool", "db"), 10);
    assert_eq!(moto.count("security-groups", "gantry-cluster", c), 1);
    assert_eq!(moto.count("key-pairs", "gantry-cluster", c), 1);
    assert_eq!(
        moto.count("volumes", "gantry-cluster", c),
        20,
        "volumes are tagged"
    );
    let rules = boto(
        &moto,
        &format!(
            "g = ec2.describe_security_groups(Filters=[{{'Name': 'tag:gantry-cluster', 'Values': ['{c}']}}])['SecurityGroups'][0]\n\
             rs = []\n\
             for p in g['IpPermissions']:\n\
             \x20   rs += ['%s %s' % (p['FromPort'], r['CidrIp']) for r in p.get('IpRanges', [])]\n\
             \x20   rs += ['%s sg' % p['FromPort'] for r in p.get('UserIdGroupPairs', []) if r['GroupId'] == g['GroupId']]\n\
             print(','.join(sorted(rs)))"
        ),
    );
    assert_eq!(rules, "22 203.0.113.7/32,443 10.0.0.0/8,8080 sg");
    let key = boto(
        &moto,
        "print(','.join(k['KeyName'] for k in ec2.describe_key_pairs()['KeyPairs']))",
    );
    assert!(key.split(',').any(|k| k == "gantry-default-awsit"), "{key}");
    // Re-running the same spec changes nothing.
    gantry(
        &g,
        &moto,
        &["up", "-f", spec(&g, c, 10, 10, "").to_str().unwrap()],
    )
    .ok();
    assert_eq!(moto.count("instances", "gantry-cluster", c), 20);

    gantry(
        &g,
        &moto,
        &["up", "-f", spec(&g, c, 15, 15, "").to_str().unwrap()],
    )
    .ok();
    assert_eq!(moto.count("instances", "gantry-cluster", c), 30);
    let show = gantry(&g, &moto, &["show", c, "--output", "json"]).ok();
    assert!(show.stdout.contains("awsit-web-15"), "{}", show.stdout);

    gantry(&g, &moto, &["stop", c]).ok();
    assert_eq!(in_state(&moto, c, "stopped"), 30);
    gantry(&g, &moto, &["start", c]).ok();
    assert_eq!(in_state(&moto, c, "running"), 30);

    gantry(&g, &moto, &["destroy", c, "--yes"]).ok();
    assert_eq!(counts(&moto, "gantry-cluster", c), [0; 7]);
    assert_eq!(counts(&moto, "gantry-project", "default"), [0; 7]);
    let ls = gantry(&g, &moto, &["ls"]).ok();
    assert!(!ls.stdout.contains(c), "{}", ls.stdout);
}

#[test]
fn aws_bad_input_fails_clearly_and_creates_nothing() {
    let Some(moto) = Moto::start() else { return };
    let g = Gantry::new();
    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "badami",
            "    ami: ami-12345678\n",
            &["us-east-1", "DescribeImages", "InvalidAMIID", "hint"],
        ),
        (
            "badtype",
            "    instance_types: {medium: t3.bogus}\n",
            &[
                "us-east-1",
                "DescribeInstanceTypes",
                "InvalidInstanceType",
                "hint",
                "instance_types",
            ],
        ),
        (
            "badregion",
            "",
            &[
                "us-nowhere-1",
                "DescribeRegions",
                "unknown region",
                "hint",
                "us-east-1",
            ],
        ),
    ];
    for (c, extra, wanted) in cases {
        let mut path = spec(&g, c, 2, 1, extra);
        if c == "badregion" {
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("region: us-east-1", "region: us-nowhere-1");
            path = g.work().join("badregion.yaml");
            std::fs::write(&path, text).unwrap();
        }
        let out = gantry(&g, &moto, &["up", "-f", path.to_str().unwrap()]);
        assert_ne!(out.code, Some(0), "{c}: {}", out.stderr);
        for w in wanted {
            assert!(
                out.stderr.contains(w),
                "{c}: wanted {w:?} in\n{}",
                out.stderr
            );
        }
        assert_eq!(counts(&moto, "gantry-cluster", c), [0; 7], "{c}");
    }
    // No credentials anywhere: a clear error saying how to give them.
    let path = spec(&g, "nocreds", 1, 1, "");
    let mut cmd = g.command(&["up", "-f", path.to_str().unwrap()]);
    moto.env(&mut cmd);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", g.work());
    let out = g
        .spawn_cmd(cmd, "gantry up (no credentials)".into())
        .wait(TIMEOUT);
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    for w in ["us-east-1", "no AWS credentials", "AWS_ACCESS_KEY_ID"] {
        assert!(out.stderr.contains(w), "wanted {w:?} in\n{}", out.stderr);
    }
    assert_eq!(counts(&moto, "gantry-project", "default"), [0; 7]);
}

/// The world id of a home's store (what its resources carry in `gantry-world`).
fn world_of(g: &Gantry) -> String {
    use gantry_state::StateStore as _;
    let store = gantry_state::SqliteStore::open(&g.home().join("state.db")).unwrap();
    crate::support::block_on(store.world_id()).unwrap()
}

/// Two gantry homes on one AWS account (one moto), same project: B's `up` of A's cluster name
/// is refused naming A's owner, whether A's instances are there or only its security group;
/// a key pair of gantry's name holding another key is refused; nothing of A's changes.
#[test]
fn aws_two_homes_on_one_account_never_adopt_each_others_resources() {
    let Some(moto) = Moto::start() else { return };
    let a = Gantry::new();
    let b = Gantry::new();
    let c = "awsworld";
    gantry(
        &a,
        &moto,
        &["up", "-f", spec(&a, c, 1, 1, "").to_str().unwrap()],
    )
    .ok();
    let a_world = world_of(&a);
    let owner = format!("root (gantry world {a_world})");
    assert_eq!(moto.count("instances", "gantry-world", &a_world), 2);
    assert_eq!(moto.count("security-groups", "gantry-world", &a_world), 1);
    assert_eq!(moto.count("key-pairs", "gantry-world", &a_world), 1);
    let ids = || {
        boto(
            &moto,
            &format!(
                "r = ec2.describe_instances(Filters=[{{'Name': 'tag:gantry-cluster', 'Values': ['{c}']}}])\n\
                 print(sorted((i['InstanceId'], i['State']['Name'], sorted((t['Key'], t['Value']) for t in i['Tags'])) for x in r['Reservations'] for i in x['Instances']))"
            ),
        )
    };
    let before = ids();

    // B's up (and plan) of the same name: refused, naming A's owner; nothing created or changed.
    let out = gantry(
        &b,
        &moto,
        &["up", "-f", spec(&b, c, 2, 2, "").to_str().unwrap()],
    )
    .expect(2);
    assert!(
        out.stderr.contains("belongs to another gantry world") && out.stderr.contains(&owner),
        "{}",
        out.stderr
    );
    let out = gantry(
        &b,
        &moto,
        &["plan", "-f", spec(&b, c, 2, 2, "").to_str().unwrap()],
    )
    .expect(2);
    assert!(out.stderr.contains(&owner), "{}", out.stderr);
    assert_eq!(ids(), before, "B's up changed A's instances");
    assert_eq!(moto.count("instances", "gantry-cluster", c), 2);
    assert_eq!(moto.count("security-groups", "gantry-cluster", c), 1);

    // Only A's security group and key pair are left (its instances terminated behind gantry's
    // back): B's up still never uses them.
    boto(
        &moto,
        &format!(
            "r = ec2.describe_instances(Filters=[{{'Name': 'tag:gantry-cluster', 'Values': ['{c}']}}])\n\
             ids = [i['InstanceId'] for x in r['Reservations'] for i in x['Instances']]\n\
             ec2.terminate_instances(InstanceIds=ids)\nprint(len(ids))"
        ),
    );
    let out = gantry(
        &b,
        &moto,
        &["up", "-f", spec(&b, c, 1, 1, "").to_str().unwrap()],
    )
    .expect(1);
    assert!(
        out.stderr.contains("security group")
            && out.stderr.contains("another gantry world")
            && out.stderr.contains(&owner),
        "{}",
        out.stderr
    );
    assert_eq!(
        moto.count("instances", "gantry-cluster", c),
        0,
        "B launched nothing"
    );
    assert_eq!(moto.count("security-groups", "gantry-cluster", c), 1);
    let b_world = world_of(&b);
    assert_eq!(counts(&moto, "gantry-world", &b_world), [0; 7]);
    // A's destroy takes its own leftovers.
    gantry(&a, &moto, &["destroy", c, "--yes"]).ok();
    assert_eq!(counts(&moto, "gantry-cluster", c), [0; 7]);

    // A key pair of gantry's name for the cluster, holding someone else's key: refused.
    let k = "awskey";
    boto(
        &moto,
        &format!(
            "ec2.import_key_pair(KeyName='gantry-default-{k}', PublicKeyMaterial=b'ssh-ed25519 \
             AAAAC3NzaC1lZDI1NTE5AAAAIOkXYFYEuSrbmK4hXZsN5BPExivHVo8DuIZA1HEhOHvr mallory')\nprint(1)"
        ),
    );
    let out = gantry(
        &b,
        &moto,
        &["up", "-f", spec(&b, k, 1, 1, "").to_str().unwrap()],
    )
    .expect(1);
    assert!(
        out.stderr.contains(&format!("key pair gantry-default-{k}"))
            && out.stderr.contains("does not hold this project's key"),
        "{}",
        out.stderr
    );
    assert_eq!(
        moto.count("instances", "gantry-cluster", k),
        0,
        "no node launched"
    );
    gantry(&b, &moto, &["destroy", k, "--yes"]).ok();
    let left = boto(
        &moto,
        "print(','.join(k['KeyName'] for k in ec2.describe_key_pairs()['KeyPairs']))",
    );
    assert_eq!(
        left,
        format!("gantry-default-{k}"),
        "the foreign key pair is never deleted"
    );
}

/// A one-pool spec with the given `caller_cidr` and `allow` rules (YAML list items).
fn rules_spec(g: &Gantry, cluster: &str, caller: &str, allow: &[&str], n: u32) -> PathBuf {
    let p = g.work().join(format!("{cluster}-{n}.yaml"));
    let rules: String = allow.iter().map(|r| format!("    - {r}\n")).collect();
    std::fs::write(
        &p,
        format!(
            "apiVersion: gantry/v1\nname: {cluster}\nprovider:\n  aws:\n    region: us-east-1\n    \
             caller_cidr: {caller}\nlifetime: 1h\nreadiness: api\nnetwork:\n  allow:\n{rules}\
             pools:\n  - name: db\n    count: 1\n"
        ),
    )
    .unwrap();
    p
}

/// The cluster group's inbound rules as `PORT SOURCE` (`sg` for the group itself), sorted.
fn sg_rules(moto: &Moto, cluster: &str) -> String {
    boto(
        moto,
        &format!(
            "g = ec2.describe_security_groups(Filters=[{{'Name': 'tag:gantry-cluster', 'Values': ['{cluster}']}}])['SecurityGroups'][0]\n\
             rs = []\n\
             for p in g['IpPermissions']:\n\
             \x20   rs += ['%s %s' % (p['FromPort'], r['CidrIp']) for r in p.get('IpRanges', [])]\n\
             \x20   rs += ['%s %s' % (p['FromPort'], r['CidrIpv6']) for r in p.get('Ipv6Ranges', [])]\n\
             \x20   rs += ['%s sg' % p['FromPort'] for r in p.get('UserIdGroupPairs', []) if r['GroupId'] == g['GroupId']]\n\
             print(','.join(sorted(rs)))"
        ),
    )
}

/// Rules are no longer only ever authorized: a rule removed from the spec, and the rule of a
/// caller whose address changed, are revoked by `up` and shown by `plan` first; a rule added by
/// hand to gantry's group is left alone; a rule open to the whole internet on a port other than
/// 22/80/443 is warned about, at its place in the spec.
#[test]
fn aws_up_revokes_the_rules_the_spec_no_longer_holds() {
    let Some(moto) = Moto::start() else { return };
    let g = Gantry::new();
    let c = "awsrules";
    let first = rules_spec(
        &g,
        c,
        "198.51.100.7/32",
        &[
            "{port: 22, from: caller}",
            "{port: 8080, from: 0.0.0.0/0}",
            "{port: 2379, from: cluster}",
            "{port: 443, from: 10.0.0.0/8}",
            "{port: 9000, from: \"::/0\"}",
        ],
        1,
    );
    let out = gantry(&g, &moto, &["up", "-f", first.to_str().unwrap()]).ok();
    let file = first.display().to_string();
    assert!(
        out.stderr.contains(&format!(
            "{file}:12:26: warning: port 8080 is open to the whole internet (`from: 0.0.0.0/0`)"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("warning: port 9000 is open to the whole internet"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("port 443 is open"), "{}", out.stderr);
    assert_eq!(
        sg_rules(&moto, c),
        "22 198.51.100.7/32,2379 sg,443 10.0.0.0/8,8080 0.0.0.0/0,9000 ::/0"
    );
    // Someone adds a rule to gantry's group by hand.
    boto(
        &moto,
        &format!(
            "g = ec2.describe_security_groups(Filters=[{{'Name': 'tag:gantry-cluster', 'Values': ['{c}']}}])['SecurityGroups'][0]\n\
             ec2.authorize_security_group_ingress(GroupId=g['GroupId'], IpPermissions=[{{'IpProtocol': 'tcp', 'FromPort': 5432, 'ToPort': 5432, 'IpRanges': [{{'CidrIp': '192.0.2.0/24'}}]}}])\nprint(1)"
        ),
    );

    // The caller moved, and three rules left the spec.
    let second = rules_spec(
        &g,
        c,
        "203.0.113.9/32",
        &["{port: 22, from: caller}", "{port: 443, from: 10.0.0.0/8}"],
        2,
    );
    let plan = gantry(&g, &moto, &["plan", "-f", second.to_str().unwrap()]).ok();
    for want in [
        "- revoke tcp 22 from 198.51.100.7/32 (security group gantry-default-awsrules (sg-",
        "- revoke tcp 8080 from 0.0.0.0/0 (",
        "- revoke tcp 9000 from ::/0 (",
        "- revoke tcp 2379 from the cluster (sg-",
        "+ allow  tcp 22 from 203.0.113.9/32 (",
    ] {
        assert!(plan.stdout.contains(want), "{want:?} in\n{}", plan.stdout);
    }
    assert!(!plan.stdout.contains("5432"), "{}", plan.stdout);
    let json = gantry(
        &g,
        &moto,
        &["plan", "-f", second.to_str().unwrap(), "--output", "json"],
    )
    .ok()
    .json();
    let changes: Vec<(String, String)> = json["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(changes.len(), 5, "{json:#}");
    assert!(changes.contains(&("remove".into(), "tcp 8080 from 0.0.0.0/0".into())));
    assert!(changes.contains(&("add".into(), "tcp 22 from 203.0.113.9/32".into())));
    assert_eq!(
        sg_rules(&moto, c),
        "22 198.51.100.7/32,2379 sg,443 10.0.0.0/8,5432 192.0.2.0/24,8080 0.0.0.0/0,9000 ::/0",
        "plan changed nothing"
    );

    gantry(&g, &moto, &["up", "-f", second.to_str().unwrap()]).ok();
    assert_eq!(
        sg_rules(&moto, c),
        "22 203.0.113.9/32,443 10.0.0.0/8,5432 192.0.2.0/24",
        "exactly the spec's rules, and the hand-made one"
    );
    let plan = gantry(&g, &moto, &["plan", "-f", second.to_str().unwrap()]).ok();
    assert!(plan.stdout.contains("(no change)"), "{}", plan.stdout);
    gantry(&g, &moto, &["destroy", c, "--yes"]).ok();
    assert_eq!(counts(&moto, "gantry-cluster", c), [0; 7]);
}

/// `from: caller` with no way to know the caller's address (no `caller_cidr`, no
/// GANTRY_CALLER_CIDR, detection pointed at a loopback port nothing listens on: offline) fails
/// `plan` and `up` before anything starts, saying to set GANTRY_CALLER_CIDR: no run is
/// recorded and nothing is created.
#[test]
fn an_unknown_caller_fails_plan_and_up_before_anything_starts() {
    let Some(moto) = Moto::start() else { return };
    let g = Gantry::new();
    let c = "nocaller";
    let p = g.work().join("nocaller.yaml");
    std::fs::write(
        &p,
        format!(
            "apiVersion: gantry/v1\nname: {c}\nprovider:\n  aws:\n    region: us-east-1\n\
             lifetime: 1h\nreadiness: api\npools:\n  - name: db\n    count: 1\n"
        ),
    )
    .unwrap();
    // A port that was free a moment ago: nothing answers there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = |args: &[&str]| {
        let mut cmd = g.command(args);
        moto.env(&mut cmd);
        cmd.env("GANTRY_CALLER_IP_URL", format!("http://127.0.0.1:{port}/"))
            .env_remove("GANTRY_CALLER_CIDR");
        g.spawn_cmd(cmd, format!("gantry {}", args.join(" ")))
            .wait(TIMEOUT)
    };
    for args in [
        &["plan", "-f", p.to_str().unwrap()][..],
        &["up", "-f", p.to_str().unwrap()],
    ] {
        let out = run(args);
        assert_ne!(out.code, Some(0), "`gantry {}` succeeded", args.join(" "));
        assert!(
            out.stderr.contains("caller's address is not known")
                && out.stderr.contains("GANTRY_CALLER_CIDR"),
            "`gantry {}`: {}",
            args.join(" "),
            out.stderr
        );
        assert!(
            !out.stderr.contains("steps (run"),
            "`gantry {}` started a run: {}",
            args.join(" "),
            out.stderr
        );
    }
    assert_eq!(
        gantry(&g, &moto, &["runs", "--output", "json"]).ok().json(),
        serde_json::json!([])
    );
    for r in ["instances", "security-groups", "key-pairs"] {
        assert_eq!(moto.count(r, "gantry-cluster", c), 0, "{r}");
    }
}
