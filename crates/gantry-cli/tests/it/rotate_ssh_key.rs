//! `gantry secrets rotate-ssh-key` on a local cluster: the new key logs in (gantry and
//! OpenSSH's `ssh`), the old one no longer does, a stopped node keeps the rotation pending
//! (same new key on the next attempt), a home whose cache still holds the retired key follows
//! the store, and each cluster gets a `rotate-ssh-key` run.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

const SSH: &str = "/usr/bin/ssh";

/// `ssh NODE true` with OpenSSH, configured by `gantry ssh-config` but logging in with the key
/// file `key` only: whether the node accepts that key.
fn openssh_accepts(g: &Gantry, cluster: &str, node: &str, key: &std::path::Path) -> bool {
    let cfg_text = g.run(&["ssh-config", cluster]).ok().stdout;
    let current = g.home().join("projects/default/id_ed25519");
    let cfg_text = cfg_text.replace(current.to_str().unwrap(), key.to_str().unwrap());
    assert!(cfg_text.contains(key.to_str().unwrap()), "{cfg_text}");
    let cfg = g.work().join("ssh_config_rotate");
    std::fs::write(&cfg, cfg_text).unwrap();
    let mut c = Command::new(SSH);
    c.arg("-F")
        .arg(&cfg)
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
        .args(["-o", "IdentitiesOnly=yes", node, "true"])
        .stdin(std::process::Stdio::null());
    let out = g
        .spawn_cmd(c, format!("ssh {node} with {}", key.display()))
        .wait(Duration::from_secs(60));
    out.code == Some(0)
}

#[test]
fn rotating_the_project_key_retires_the_old_one_on_every_node() {
    if !require_tool(SSH) {
        return;
    }
    let g = Gantry::new();
    let c = "rotkey";
    let spec = g.simple_spec(c, 2);
    g.run(&["up", "-f", spec.to_str().unwrap()]).ok();
    let key_file = g.home().join("projects/default/id_ed25519");
    let old = g.work().join("old_key");
    std::fs::copy(&key_file, &old).unwrap();
    assert!(
        openssh_accepts(&g, c, "rotkey-db-1", &old),
        "control: the old key works before"
    );

    // A stopped node cannot be given the new key: the rotation stays pending, the store's key
    // and the nodes that were reached keep working.
    g.run(&["stop", &format!("{c}/2")]).ok();
    let pending = g
        .run(&["secrets", "rotate-ssh-key", "-o", "json"])
        .expect(1);
    let first = pending.json();
    assert_eq!(first["complete"], false, "{first}");
    assert!(
        pending.stderr.contains("rotkey-db-2") && pending.stderr.contains("rotate-ssh-key` again"),
        "{}",
        pending.stderr
    );
    let node1 = first["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "rotkey-db-1")
        .cloned();
    assert_eq!(
        node1.map(|n| n["outcome"].clone()),
        Some("added (old key kept)".into()),
        "{first}"
    );
    // Nothing became unreachable: node 1 takes both keys meanwhile.
    g.run(&["run", &format!("{c}/1"), "--", "true"]).ok();
    assert!(openssh_accepts(&g, c, "rotkey-db-1", &old));

    // Once it is up again, the same new key finishes the rotation.
    g.run(&["start", &format!("{c}/2")]).ok();
    let done = g
        .run(&["secrets", "rotate-ssh-key", "-o", "json"])
        .ok()
        .json();
    assert_eq!(done["complete"], true, "{done}");
    assert_eq!(
        done["new_key"], first["new_key"],
        "the pending key is reused"
    );
    assert_ne!(done["new_key"], done["old_key"]);
    let rotated = done["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["outcome"] == "rotated")
        .count();
    assert_eq!(rotated, 2, "{done}");

    // gantry logs in with the new key; OpenSSH with the old one is refused, with the new one
    // (the cache) accepted.
    let out = g.run(&["run", c, "--", "echo still-here"]).ok();
    assert_eq!(
        out.stdout.matches("still-here").count(),
        2,
        "{}",
        out.stdout
    );
    for node in ["rotkey-db-1", "rotkey-db-2"] {
        assert!(
            !openssh_accepts(&g, c, node, &old),
            "{node} still takes the old key"
        );
        assert!(
            openssh_accepts(&g, c, node, &key_file),
            "{node} refuses the new key"
        );
    }

    // A home whose cache still holds the retired key (another machine that missed the
    // rotation) takes the store's key instead of refusing.
    std::fs::copy(&old, &key_file).unwrap();
    g.run(&["run", &format!("{c}/1"), "--", "true"]).ok();
    assert_ne!(
        std::fs::read(&key_file).unwrap(),
        std::fs::read(&old).unwrap(),
        "the cache follows the store"
    );

    // Recorded: one run per attempt on the cluster, the last one succeeded.
    let runs = g.run(&["runs", c, "-o", "json"]).ok().json();
    let kinds: Vec<(String, String)> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "rotate-ssh-key")
        .map(|r| {
            (
                r["status"].as_str().unwrap().to_string(),
                r["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(kinds.len(), 2, "{runs}");
    assert!(kinds.iter().any(|(s, _)| s == "succeeded"), "{runs}");
    assert!(kinds.iter().any(|(s, _)| s == "failed"), "{runs}");

    g.run(&["destroy", c, "--yes"]).ok();
}
