//! `gantry inventory` in every format, and real Ansible (an ad-hoc ping and a playbook) against
//! a local cluster through the exported inventory.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// `ansible` and `ansible-playbook` on PATH; fails under CI=true, skips (printed) elsewhere.
fn ansible_tools() -> Option<(PathBuf, PathBuf)> {
    let find = |name: &str| {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
    };
    match (find("ansible"), find("ansible-playbook")) {
        (Some(a), Some(p)) => Some((a, p)),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "ansible is missing and CI=true: run scripts/install-deps.sh (pip install ansible-core)"
            )
        }
        _ => {
            eprintln!("skipped: ansible is not installed (pip install ansible-core)");
            None
        }
    }
}

fn ansible_cmd(g: &Gantry, tool: &PathBuf) -> Command {
    let mut c = Command::new(tool);
    let tmp = g.work().join("ansible-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    // No ControlPersist master may outlive the test; no user or system config may interfere.
    c.env("ANSIBLE_SSH_ARGS", "-o ControlMaster=no")
        .env("ANSIBLE_LOCAL_TEMP", &tmp)
        .env("ANSIBLE_CONFIG", g.work().join("no-ansible.cfg"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .current_dir(g.work())
        .stdin(std::process::Stdio::null());
    c
}

#[test]
fn inventory_formats_and_ansible() {
    let g = Gantry::new();
    let c = "inv";
    let spec = g.spec(
        "inv.yaml",
        c,
        "apiVersion: gantry/v1\nname: inv\nprovider: local\nlifetime: 1h\npools:\n  - name: db\n    count: 2\n  - name: web-tier\n    count: 1\n",
    );
    g.run(&["up", "-f", spec.to_str().unwrap()]).ok();
    let show = g.show(c);
    let nodes = show["nodes"].as_array().unwrap().clone();
    let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["inv-db-1", "inv-db-2", "inv-web-tier-1"]);

    // json: the nodes exactly as `show` has them; without CLUSTER, every cluster (here one).
    // No blueprint, no outputs.
    let json = g.run(&["inventory", c, "--format", "json"]).ok().json();
    assert_eq!(json["nodes"].as_array().unwrap(), &nodes);
    assert_eq!(json["outputs"], serde_json::json!({}));
    let all = g.run(&["inventory", "--format", "json"]).ok().json();
    assert_eq!(all["nodes"].as_array().unwrap(), &nodes);

    // hosts: ADDRESS NAME
    let hosts = g.run(&["inventory", c, "--format", "hosts"]).ok().stdout;
    let want: String = nodes
        .iter()
        .map(|n| {
            format!(
                "{} {}\n",
                n["address"].as_str().unwrap(),
                n["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(hosts, want);

    // prometheus file_sd
    let sd = g
        .run(&["inventory", c, "--format", "prometheus", "--port", "9200"])
        .ok()
        .json();
    let sd = sd.as_array().expect("file_sd is an array of target groups");
    assert_eq!(sd.len(), 3);
    for (group, n) in sd.iter().zip(&nodes) {
        let obj = group.as_object().unwrap();
        assert_eq!(obj.len(), 2, "only targets and labels: {group}");
        assert_eq!(
            group["targets"],
            serde_json::json!([format!("{}:9200", n["address"].as_str().unwrap())])
        );
        assert_eq!(group["labels"]["cluster"], c);
        assert_eq!(group["labels"]["pool"], n["pool"]);
        assert_eq!(group["labels"]["node"], n["name"]);
    }
    let default_port = g
        .run(&["inventory", c, "--format", "prometheus"])
        .ok()
        .json();
    assert!(
        default_port[0]["targets"][0]
            .as_str()
            .unwrap()
            .ends_with(":9100")
    );

    // ssh-config: the same text as `gantry ssh-config`.
    let a = g
        .run(&["inventory", c, "--format", "ssh-config"])
        .ok()
        .stdout;
    let b = g.run(&["ssh-config", c]).ok().stdout;
    assert_eq!(a, b);

    // Unknown cluster: usage error.
    g.run(&["inventory", "nosuch"]).expect(2);

    // ansible (the default format): groups per cluster and per pool.
    let ini = g.run(&["inventory", c]).ok().stdout;
    for section in ["[inv]", "[inv_db]", "[inv_web_tier]"] {
        assert!(ini.lines().any(|l| l == section), "{section} in:\n{ini}");
    }
    assert!(ini.contains("StrictHostKeyChecking=yes"), "{ini}");
    assert!(
        ini.contains("ansible_python_interpreter=auto_silent"),
        "{ini}"
    );
    let Some((ansible, playbook)) = ansible_tools() else {
        return;
    };
    let inv = g.work().join("inventory.ini");
    std::fs::write(&inv, &ini).unwrap();

    let mut ping = ansible_cmd(&g, &ansible);
    ping.arg("all").arg("-i").arg(&inv).args(["-m", "ping"]);
    let out = g
        .spawn_cmd(ping, "ansible all -m ping".into())
        .wait(Duration::from_secs(180))
        .ok();
    for n in &names {
        assert!(
            out.stdout.contains(&format!("{n} | SUCCESS")),
            "{n} answered ping:\n{}\n{}",
            out.stdout,
            out.stderr
        );
    }
    // A pool group selects only its nodes.
    let mut ping = ansible_cmd(&g, &ansible);
    ping.arg("inv_web_tier")
        .arg("-i")
        .arg(&inv)
        .args(["-m", "ping"]);
    let out = g
        .spawn_cmd(ping, "ansible inv_web_tier -m ping".into())
        .wait(Duration::from_secs(120))
        .ok();
    assert!(
        out.stdout.contains("inv-web-tier-1 | SUCCESS"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("inv-db-1"), "{}", out.stdout);

    let play = g.work().join("play.yml");
    std::fs::write(
        &play,
        "- hosts: inv\n  gather_facts: false\n  tasks:\n    - name: leave a mark\n      ansible.builtin.shell: echo \"{{ inventory_hostname }} {{ gantry_pool }}\" > \"$HOME/ansible-was-here\"\n",
    )
    .unwrap();
    let mut run = ansible_cmd(&g, &playbook);
    run.arg("-i").arg(&inv).arg(&play);
    let out = g
        .spawn_cmd(run, "ansible-playbook play.yml".into())
        .wait(Duration::from_secs(180))
        .ok();
    assert!(out.stdout.contains("failed=0"), "{}", out.stdout);

    let marks = g.run(&["run", c, "--", "cat ansible-was-here"]).ok().stdout;
    for n in &nodes {
        let (name, pool) = (n["name"].as_str().unwrap(), n["pool"].as_str().unwrap());
        assert!(
            marks
                .lines()
                .any(|l| l == format!("{name} | {name} {pool}")),
            "{name}'s mark in:\n{marks}"
        );
    }
    // No ssh client of this test (its known_hosts is in the home) outlives ansible.
    let home = g.home().display().to_string();
    assert!(
        eventually(Duration::from_secs(5), || procs().iter().all(|p| {
            !(p.cmdline.first().is_some_and(|c| c.ends_with("ssh"))
                && p.cmdline.iter().any(|a| a.contains(&home)))
        })),
        "an ssh client of ansible survived"
    );
}
