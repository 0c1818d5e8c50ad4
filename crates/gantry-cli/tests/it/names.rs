//! Nothing a provider returns is trusted as a name or a path (issue 10, item 7): node names
//! that are not `<cluster>-<pool>-<index>` of their tags — a newline and a `ProxyCommand`,
//! `../x`, `/abs` — never reach `ssh-config`, inventories or `known_hosts`, and are reported on
//! stderr; paths in `ssh-config` and the Ansible inventory are quoted, so a GANTRY_HOME with a
//! space works with OpenSSH's own `ssh -F`.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::moto::Moto;
use crate::support::*;

const SSH: &str = "/usr/bin/ssh";

fn ssh_ok(args: &[&str]) -> std::process::Output {
    let out = Command::new(SSH)
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh");
    assert!(
        out.status.success(),
        "ssh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The value of `var=` on an INI inventory host line, unquoted the way Ansible reads it (POSIX
/// shlex), through Python's own `shlex`.
fn ansible_var(line: &str, var: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import shlex, sys\n\
             for w in shlex.split(sys.argv[1])[1:]:\n\
             \x20   k, _, v = w.partition('=')\n\
             \x20   if k == sys.argv[2]: print(v)",
            line,
            var,
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim_end_matches('\n')
        .to_string()
}

/// Python's `shlex.split` of `s`, one word per line (how Ansible splits `ansible_ssh_common_args`).
fn shlex_split(s: &str) -> Vec<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import shlex, sys\nprint('\\n'.join(shlex.split(sys.argv[1])))",
            s,
        ])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn gantry_home_with_a_space_works_with_ssh_and_tampered_names_are_dropped() {
    if !require_tool(SSH) {
        return;
    }
    let g = Gantry::with_home_named("home with space");
    let c = "spaced";
    let spec = g.simple_spec(c, 2);
    g.run(&["up", "-f", spec.to_str().unwrap()]).ok();

    // ssh-config names the key and pins inside the spaced home, quoted; OpenSSH reads it.
    let text = g.run(&["ssh-config", c]).ok().stdout;
    let home = g.home().display().to_string();
    assert!(
        text.contains(&format!(
            "IdentityFile \"{home}/projects/default/id_ed25519\""
        )),
        "{text}"
    );
    let cfg = g.work().join("ssh config");
    std::fs::write(&cfg, &text).unwrap();
    let out = ssh_ok(&[
        "-F",
        cfg.to_str().unwrap(),
        "spaced-db-1",
        "echo via-ssh-config",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "via-ssh-config"
    );

    // The Ansible inventory: its ssh arguments, split as Ansible splits them, work too.
    let inv = g.run(&["inventory", c, "--format", "ansible"]).ok().stdout;
    let line = inv
        .lines()
        .find(|l| l.starts_with("spaced-db-2 "))
        .unwrap_or_else(|| panic!("{inv}"));
    let mut args = shlex_split(&ansible_var(line, "ansible_ssh_common_args"));
    args.extend([
        "-i".into(),
        ansible_var(line, "ansible_ssh_private_key_file"),
        "-p".into(),
        ansible_var(line, "ansible_port"),
        "-l".into(),
        ansible_var(line, "ansible_user"),
        ansible_var(line, "ansible_host"),
        "echo via-ansible-args".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ssh_ok(&args);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "via-ansible-args"
    );

    // A node whose name was tampered with (its node.json, as a hostile tag would): dropped
    // everywhere, reported on stderr, never pinned.
    let pwned = g.work().join("pwned");
    let meta_path = g.cluster_dir(c).join("spaced-db-2").join("node.json");
    let original = std::fs::read_to_string(&meta_path).unwrap();
    let mut meta: Value = serde_json::from_str(&original).unwrap();
    let hostile = format!("spaced-db-2\n  ProxyCommand touch {}", pwned.display());
    meta["name"] = Value::String(hostile.clone());
    std::fs::write(&meta_path, serde_json::to_string(&meta).unwrap()).unwrap();

    let out = g.run(&["ssh-config", c]).ok();
    assert!(!out.stdout.contains("ProxyCommand"), "{}", out.stdout);
    assert!(!out.stdout.contains("spaced-db-2"), "{}", out.stdout);
    assert!(out.stdout.contains("Host spaced-db-1\n"), "{}", out.stdout);
    assert!(
        out.stderr.contains(
            "ignoring a node the local provider listed as \"spaced-db-2\\n  ProxyCommand"
        ),
        "{}",
        out.stderr
    );
    for format in ["ansible", "ssh-config", "hosts", "json"] {
        let out = g.run(&["inventory", c, "--format", format]).ok();
        assert!(
            !out.stdout.contains("ProxyCommand"),
            "{format}: {}",
            out.stdout
        );
        assert!(
            out.stdout.contains("spaced-db-1"),
            "{format}: {}",
            out.stdout
        );
    }
    // Connecting pins host keys: only the well-named node is reached.
    let out = g.run(&["run", c, "--", "echo reached"]).ok();
    assert_eq!(out.stdout.matches("reached").count(), 1, "{}", out.stdout);
    let kh = std::fs::read_to_string(g.home().join("projects/default/known_hosts")).unwrap();
    assert!(!kh.contains("ProxyCommand"), "{kh}");
    assert!(
        kh.lines()
            .all(|l| l.is_empty() || !l.starts_with(char::is_whitespace)),
        "{kh}"
    );
    assert!(!pwned.exists(), "a ProxyCommand ran");

    std::fs::write(&meta_path, original).unwrap();
    g.run(&["destroy", c, "--yes"]).ok();
}

/// boto3 against moto (moto's own Python), printing one line.
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

#[test]
fn hostile_aws_name_tags_never_reach_ssh_config_or_inventories() {
    let Some(moto) = Moto::start() else { return };
    let g = Gantry::new();
    let c = "hostile";
    let spec = g.work().join("hostile.yaml");
    std::fs::write(
        &spec,
        format!(
            "apiVersion: gantry/v1\nname: {c}\nprovider:\n  aws:\n    region: us-east-1\n    \
             caller_cidr: 203.0.113.7/32\nreadiness: api\nlifetime: 1h\npools:\n  - name: db\n    \
             count: 2\n"
        ),
    )
    .unwrap();
    let gantry = |args: &[&str]| {
        let mut cmd = g.command(args);
        moto.env(&mut cmd);
        g.spawn_cmd(cmd, format!("gantry {}", args.join(" ")))
            .wait(Duration::from_secs(300))
    };
    gantry(&["up", "-f", spec.to_str().unwrap()]).ok();
    let pwned = g.work().join("pwned");
    // Instances with every tag of a real node of the cluster but a hostile `Name` (and one with
    // a hostile pool tag), launched by the test itself.
    let hostile = [
        (
            format!("{c}-db-3\n  ProxyCommand touch {}", pwned.display()),
            "3",
            "db",
        ),
        ("../x".to_string(), "4", "db"),
        ("/abs".to_string(), "5", "db"),
        (format!("{c}-db\nx-6"), "6", "db\nx"),
    ];
    for (name, index, pool) in &hostile {
        boto(
            &moto,
            &format!(
                "import json\n\
                 r = ec2.describe_instances(Filters=[{{'Name': 'tag:Name', 'Values': ['{c}-db-1']}}])\n\
                 i = r['Reservations'][0]['Instances'][0]\n\
                 tags = {{t['Key']: t['Value'] for t in i['Tags']}}\n\
                 tags.update({{'Name': json.loads({name:?}), 'gantry-index': '{index}', 'gantry-pool': json.loads({pool:?})}})\n\
                 ec2.run_instances(ImageId=i['ImageId'], InstanceType=i['InstanceType'], MinCount=1, MaxCount=1, \
                 TagSpecifications=[{{'ResourceType': 'instance', 'Tags': [{{'Key': k, 'Value': v}} for k, v in tags.items()]}}])\n\
                 print(1)",
                name = serde_json::to_string(name).unwrap(),
                pool = serde_json::to_string(pool).unwrap(),
            ),
        );
    }
    assert_eq!(moto.count("instances", "gantry-cluster", c), 6);

    let bad = ["ProxyCommand", "../x", "/abs", "db\nx"];
    let out = gantry(&["ssh-config", c]).ok();
    for b in bad {
        assert!(
            !out.stdout.contains(b),
            "{b:?} in ssh-config:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains(&format!("Host {c}-db-1\n")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("Host {c}-db-2\n")),
        "{}",
        out.stdout
    );
    assert_eq!(
        out.stderr
            .matches("ignoring a node the aws provider listed as")
            .count(),
        hostile.len(),
        "each hostile node is reported:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("\\n  ProxyCommand"),
        "escaped in the report: {}",
        out.stderr
    );
    for format in ["ansible", "ssh-config", "hosts", "json", "prometheus"] {
        let out = gantry(&["inventory", c, "--format", format]).ok();
        for b in bad {
            assert!(
                !out.stdout.contains(b),
                "{format}: {b:?} in\n{}",
                out.stdout
            );
        }
        assert!(
            out.stdout.contains(&format!("{c}-db-2")),
            "{format}: {}",
            out.stdout
        );
    }
    let show = gantry(&["show", c, "--output", "json"]).ok().json();
    assert_eq!(show["nodes"].as_array().unwrap().len(), 2, "{show}");
    let kh = g.home().join("projects/default/known_hosts");
    let pins = std::fs::read_to_string(&kh).unwrap_or_default();
    for b in bad {
        assert!(!pins.contains(b), "{b:?} pinned: {pins}");
    }
    assert!(!pwned.exists());
    // destroy terminates everything carrying the cluster's tags, hostile names included.
    gantry(&["destroy", c, "--yes"]).ok();
    assert_eq!(moto.count("instances", "gantry-cluster", c), 0);
}
