//! What another local user (or a program) can do to local nodes, as regression tests: read a
//! node's files, squat the node's address before its agent binds it, plant a machine-wide
//! directory; and what gantry itself must not leak or leave: its environment in the agent, a
//! node's processes after a delete.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_core::tags::{self, TagFilter};
use gantry_local::{LocalConfig, LocalProvider};
use gantry_provider::{NodeRequest, Provider as _};

use crate::other_user::OtherUser;
use crate::support::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The directories leading to the gantry home (test homes live in 0700 temp dirs): opened, so
/// only the modes gantry sets keep another user out.
fn open_path_to_home(g: &Gantry) {
    chmod(g.home().parent().unwrap(), 0o755);
    chmod(g.home(), 0o755);
}

fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into())
}

/// The local provider as the binary builds it for this home (real agents from the built binary).
fn local_config(g: &Gantry, port: u16) -> LocalConfig {
    LocalConfig {
        root: g.home().join("local"),
        agent_exe: BIN.into(),
        ssh_port: port,
        user: current_user(),
        authorized_keys: vec![gantry_ssh::KeyPair::generate().public_openssh()],
        machine_dir: gantry_local::default_machine_dir(),
    }
}

fn node_request(cluster: &str, index: u32) -> NodeRequest {
    let extra = gantry_core::Tags::new();
    let t = tags::node_tags(&tags::NodeTagInput {
        project: "default",
        cluster,
        cluster_uid: "hardening-uid",
        pool: "db",
        index,
        owner: "hardening",
        world: "hardening-world",
        expires: "2099-01-01T00:00:00Z",
        extra: &extra,
    });
    NodeRequest {
        name: gantry_core::node_name(cluster, "db", index),
        project: "default".into(),
        cluster: cluster.into(),
        pool: "db".into(),
        index,
        size: "small".into(),
        image: "default".into(),
        labels: Default::default(),
        tags: t,
    }
}

/// The second octet of the addresses a home's nodes get (as `gantry-local`'s allocator derives
/// it from the home's `local` path): what a neighbour who knows the home can predict.
fn second_octet(root: &Path) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for b in root.as_os_str().as_encoded_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    64 + (h % 128) as u8
}

/// A TCP port free on 127.0.0.1 right now (node agents of these tests listen on it, on their
/// own addresses, so no other test's nodes share it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ALGO BASE64` of an OpenSSH public key line.
fn key_data(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The host key pinned for `alias` in the home's known_hosts, as `ALGO BASE64`.
fn pinned(g: &Gantry, alias: &str) -> Option<String> {
    let kh = g.home().join("projects/default/known_hosts");
    let text = std::fs::read_to_string(kh).unwrap_or_default();
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(alias))
        .map(|l| key_data(l.split_once(' ').unwrap().1))
}

/// The node's real host key (the public half of the key its agent serves), as `ALGO BASE64`.
fn real_host_key(node_dir: &Path) -> String {
    let key = gantry_ssh::KeyPair::load_or_generate(&node_dir.join("host_key")).unwrap();
    key_data(&key.public_openssh())
}

/// Whether anyone connected to `l` (a non-blocking listener): a squatter must never be reached.
fn was_contacted(l: &TcpListener) -> bool {
    match l.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept on the squatter's listener: {e}"),
    }
}

#[test]
fn node_directories_are_private_to_their_user() {
    let Some(other) = OtherUser::create() else {
        return;
    };
    let g = Gantry::new();
    open_path_to_home(&g);
    let c = "private";
    let spec = g.simple_spec(c, 1);
    g.run(&["up", "-f", spec.to_str().unwrap()]).ok();
    g.run(&["run", c, "--", "echo s3cret > secret.txt"]).ok();

    let local = g.home().join("local");
    let node = g.cluster_dir(c).join(format!("{c}-db-1"));
    let dirs = [
        local.clone(),
        local.join("default"),
        g.cluster_dir(c),
        node.clone(),
        node.join("home"),
        node.join("bin"),
    ];
    let files = [node.join("home/secret.txt"), node.join("node.json")];
    // What the other user manages to list or read, one line each.
    let probe = || {
        let mut script = String::new();
        for d in &dirs {
            script += &format!(
                "ls '{}' >/dev/null 2>&1 && echo 'listed {}'\n",
                d.display(),
                d.display()
            );
        }
        for f in &files {
            script += &format!(
                "cat '{}' 2>/dev/null | grep -q . && echo 'read {}'\n",
                f.display(),
                f.display()
            );
        }
        script += "true\n";
        let (code, out, err) = other.sh(&script, Duration::from_secs(20));
        assert_eq!(code, Some(0), "probe as {}: {err}", other.name);
        out
    };

    for d in &dirs {
        assert_eq!(mode(d), 0o700, "{} must be private", d.display());
    }
    let seen = probe();
    assert!(seen.is_empty(), "another user got into the node:\n{seen}");

    // A home made by a version that used 0755: open to everyone, until gantry next touches it.
    for d in &dirs {
        chmod(d, 0o755);
    }
    let seen = probe();
    assert!(
        seen.contains("read ") && seen.contains("secret.txt"),
        "the probe must be able to see an open home (else it proves nothing):\n{seen}"
    );
    g.run(&["ls"]).ok();
    for d in &dirs {
        assert_eq!(
            mode(d),
            0o700,
            "{} tightened by the next command",
            d.display()
        );
    }
    let seen = probe();
    assert!(seen.is_empty(), "another user got into the node:\n{seen}");
}

#[test]
fn start_of_a_node_whose_address_is_taken_fails_and_never_contacts_the_squatter() {
    let g = Gantry::new();
    let c = "squatstart";
    let port = free_port();
    let spec = g.spec(
        "squatstart.yaml",
        c,
        &format!(
            "apiVersion: gantry/v1\nname: {c}\nprovider: {{local: {{ssh_port: {port}}}}}\nlifetime: 1h\npools:\n  - name: db\n    count: 1\n"
        ),
    );
    g.run(&["up", "-f", spec.to_str().unwrap()]).ok();
    let name = format!("{c}-db-1");
    let node = g.cluster_dir(c).join(&name);
    let key = real_host_key(&node);
    assert_eq!(pinned(&g, &name).as_deref(), Some(key.as_str()));
    let addr = g.nodes(c)[0].address.clone();
    g.run(&["stop", c]).ok();

    // Someone listens on the stopped node's address before its agent is back.
    let squatter = TcpListener::bind((addr.parse::<Ipv4Addr>().unwrap(), port)).unwrap();
    squatter.set_nonblocking(true).unwrap();
    let out = g.run(&["start", c]);
    assert!(
        !was_contacted(&squatter),
        "gantry connected to the squatter:\n{}",
        out.stderr
    );
    assert_ne!(out.code, Some(0), "start must fail:\n{}", out.stderr);
    let endpoint = format!("{addr}:{port}");
    assert!(
        out.stderr.contains(&endpoint) && out.stderr.contains("taken by another process"),
        "the error names the taken address:\n{}",
        out.stderr
    );
    assert_eq!(pinned(&g, &name).as_deref(), Some(key.as_str()));

    // Once the address is free again the node starts as it was.
    drop(squatter);
    g.run(&["start", c]).ok();
    g.run(&["run", c, "--", "true"]).ok();
}

#[test]
fn a_local_node_s_own_host_key_replaces_a_pin_taken_on_first_contact() {
    let g = Gantry::new();
    let c = "repin";
    let spec = g.simple_spec(c, 1);
    let spec_s = spec.to_str().unwrap();
    g.run(&["up", "-f", spec_s]).ok();
    let name = format!("{c}-db-1");
    let real = real_host_key(&g.cluster_dir(c).join(&name));
    assert_eq!(pinned(&g, &name).as_deref(), Some(real.as_str()));
    assert_eq!(
        g.show(c)["nodes"][0]["host_key"]
            .as_str()
            .map(key_data)
            .as_deref(),
        Some(real.as_str()),
        "show reports the node's host key"
    );

    // What an earlier gantry pinned when a squatter answered first on the node's address.
    let kh = g.home().join("projects/default/known_hosts");
    let squatter = key_data(&gantry_ssh::KeyPair::generate().public_openssh());
    let text = std::fs::read_to_string(&kh).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{name} ")) {
                format!("{name} {squatter}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&kh, text).unwrap();
    // The state store pins the real key: the local pin conflicts with it, which is refused
    // before any connection, never silently replaced either way.
    let out = g.run(&["run", c, "--", "true"]).expect(4);
    assert!(
        out.stderr.contains("is not the one the state store pins"),
        "{}",
        out.stderr
    );
    // An earlier gantry kept its pins only in the file: without the store's pins, the wrong
    // one is refused at the connection.
    let db = g.home().join("state.db");
    let forget = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("DELETE FROM secrets WHERE name = 'ssh/default/known-hosts'")
        .status()
        .unwrap();
    assert!(forget.success());
    let out = g.run(&["run", c, "--", "true"]);
    assert_ne!(out.code, Some(0), "the wrong pin is refused");
    assert!(out.stderr.contains("changed"), "{}", out.stderr);

    // The next `up` pins the key gantry made for the node, whatever was pinned before.
    let up = g.run(&["up", "-f", spec_s]).ok();
    assert!(
        up.stderr.contains("replaced a host key pin"),
        "the replacement is reported:\n{}",
        up.stderr
    );
    assert_eq!(pinned(&g, &name).as_deref(), Some(real.as_str()));
    g.run(&["run", c, "--", "true"]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_whose_address_is_taken_moves_and_never_hands_back_the_squatter() {
    let g = Gantry::new();
    let cfg = local_config(&g, free_port());
    let p = LocalProvider::new(cfg.clone());
    let req = node_request("squatnew", 1);

    // The window: the node's directory exists and its address is picked, its agent not started.
    let prepared = {
        let (cfg, req) = (cfg.clone(), req.clone());
        tokio::task::spawn_blocking(move || gantry_local::prepare_node(&cfg, &req))
            .await
            .unwrap()
            .unwrap()
    };
    g.node_uids();
    let taken = prepared.meta.address;
    let squatter = TcpListener::bind((taken, cfg.ssh_port)).unwrap();
    squatter.set_nonblocking(true).unwrap();

    // An existing node cannot move: a clear error naming the address.
    let existing = gantry_local::Prepared {
        dir: prepared.dir.clone(),
        meta: prepared.meta.clone(),
        fresh: false,
    };
    let err = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || gantry_local::start_agent(&cfg, existing))
            .await
            .unwrap()
            .expect_err("the agent cannot be up on a taken address")
    };
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{taken}:{}", cfg.ssh_port))
            && msg.contains("taken by another process"),
        "{msg}"
    );
    assert!(
        !was_contacted(&squatter),
        "gantry connected to the squatter"
    );
    assert!(
        uid_pids(&prepared.meta.uid).is_empty(),
        "no agent may be left running for the node"
    );

    // A new node moves to a free address and is served there by its own agent.
    let meta = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || gantry_local::start_agent(&cfg, prepared))
            .await
            .unwrap()
            .unwrap()
    };
    assert_ne!(
        meta.address, taken,
        "the new node must not stay on the squatted address"
    );
    assert!(
        !was_contacted(&squatter),
        "gantry connected to the squatter"
    );
    let listed = p
        .list(&TagFilter::cluster("default", "squatnew"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let info = &listed[0];
    assert_eq!(info.address, Some(meta.address.into()));
    assert_eq!(
        info.host_key.as_deref().map(key_data),
        meta.host_public_key.as_deref().map(key_data),
        "the provider reports the key it generated"
    );
    // The agent answers there with that key (pinned up front, so anything else is refused).
    let kh = g.work().join("known_hosts");
    let known = gantry_ssh::KnownHosts::new(&kh);
    known
        .pin(&info.name, info.host_key.as_deref().unwrap())
        .unwrap();
    let ssh = gantry_ssh::ClientConfig {
        key: std::sync::Arc::new(gantry_ssh::KeyPair::generate()),
        known_hosts: std::sync::Arc::new(known),
        connect_timeout: Duration::from_secs(10),
    };
    let spec = gantry_ssh::ConnectSpec {
        alias: info.name.clone(),
        host: meta.address.to_string(),
        port: cfg.ssh_port,
        user: cfg.user.clone(),
    };
    // Not authorized (the key above is a stranger's), but only after the host key matched.
    let Err(err) = gantry_ssh::Session::connect(&spec, &ssh).await else {
        panic!("an unauthorized key must be rejected");
    };
    assert!(
        matches!(err, gantry_ssh::SshError::AuthRejected { .. }),
        "the node's own agent answered with its pinned key: {err}"
    );
    p.delete_node(info).await.unwrap();
    assert!(uid_pids(&meta.uid).is_empty());
}

/// The squatter of the race test: binds the addresses gantry is about to use, each for a
/// millisecond at a time, over and over; accepts and reads whatever connects, and logs it.
const SQUATTER: &str = r#"
import os, socket, sys, time
addrs, port, log, stop = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3], sys.argv[4]
out = open(log, "a", buffering=1)
held, freed, conns, won = {}, {}, [], 0
def drain(s, a):
    while True:
        try:
            c, _ = s.accept()
        except OSError:
            return
        out.write("CONN %s\n" % a)
        c.setblocking(False)
        conns.append((c, a))
out.write("started\n")
deadline = time.time() + 120
while time.time() < deadline and not os.path.exists(stop):
    now = time.time()
    for a in addrs:
        h = held.get(a)
        if h is not None:
            drain(h[0], a)
            if now - h[1] > 0.001:
                h[0].close()
                del held[a]
                freed[a] = now
            continue
        # Each address is held about half the time: free often enough that gantry picks it,
        # held often enough that its agent then finds it taken.
        if now - freed.get(a, 0) < 0.001:
            continue
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((a, port))
            s.listen(64)
        except OSError:
            s.close()
            continue
        s.setblocking(False)
        held[a] = (s, now)
        won += 1
    for c, a in list(conns):
        try:
            d = c.recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            d = b""
        if d:
            out.write("BYTES %s %r\n" % (a, d[:60]))
        else:
            c.close()
            conns.remove((c, a))
out.write("done binds=%d\n" % won)
"#;

#[test]
fn a_neighbour_spinning_on_bind_is_never_pinned_nor_contacted() {
    let Some(other) = OtherUser::create() else {
        return;
    };
    if !require_tool("/usr/bin/python3") {
        return;
    }
    let g = Gantry::new();
    let c = "race";
    let port = free_port();
    let spec = g.spec(
        "race.yaml",
        c,
        &format!(
            "apiVersion: gantry/v1\nname: {c}\nprovider: {{local: {{ssh_port: {port}}}}}\nlifetime: 1h\npools:\n  - name: db\n    count: 4\n"
        ),
    );
    // The addresses a new home's first nodes get, as a neighbour can predict them.
    let b = second_octet(&g.home().join("local"));
    let addrs: Vec<String> = (2..=13).map(|d| format!("127.{b}.0.{d}")).collect();

    // The squatter's files: readable and writable by the other user.
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let script = dir.path().join("squat.py");
    std::fs::write(&script, SQUATTER).unwrap();
    chmod(&script, 0o644);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::os::unix::fs::chown(&out_dir, Some(other.uid), Some(other.gid)).unwrap();
    let log = out_dir.join("log");
    let stop = out_dir.join("stop");
    let mut cmd = other.command("/usr/bin/python3");
    cmd.arg(&script)
        .arg(addrs.join(","))
        .arg(port.to_string())
        .arg(&log)
        .arg(&stop);
    let squatter = g.spawn_cmd(cmd, "squatter".into());
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(20), || read_log().contains("started")),
        "the squatter did not start: {}",
        squatter.stderr_now()
    );

    // The squatter wins some races and loses others: `up` again (after a destroy) until it
    // has taken an address gantry had picked at least once, so the race really happened.
    let mut won = 0;
    for round in 1..=6 {
        let up = g.run(&["up", "-f", spec.to_str().unwrap()]);
        let moved = up.stderr.matches("took the new node's address").count();
        let failed = up.code != Some(0);
        eprintln!(
            "race round {round}: up exited {:?}; the squatter took {moved} address(es) gantry had picked",
            up.code
        );
        // Never contacted: gantry decides its agents are up from the agents themselves.
        let log = read_log();
        assert!(
            !log.contains("CONN") && !log.contains("BYTES"),
            "gantry connected to the squatter:\n{log}\n--- up stderr\n{}",
            up.stderr
        );
        // Pins are the nodes' own keys, whatever the outcome.
        for node in node_dirs(&g.home().join("local"), false) {
            let name = node.file_name().unwrap().to_string_lossy().into_owned();
            if let Some(pin) = pinned(&g, &name) {
                assert_eq!(pin, real_host_key(&node), "pin of {name}");
            }
        }
        if failed {
            assert!(
                up.stderr.contains("taken by another process"),
                "a failed up says why:\n{}",
                up.stderr
            );
        } else {
            for n in g.nodes(c) {
                assert_eq!(
                    pinned(&g, &n.name),
                    Some(real_host_key(&g.cluster_dir(c).join(&n.name)))
                );
            }
            g.run(&["run", c, "--", "true"]).ok();
        }
        g.run(&["destroy", c, "--yes"]).ok();
        won += moved + usize::from(failed);
        if won > 0 {
            break;
        }
    }

    std::fs::write(&stop, "").unwrap();
    let squatter = squatter.wait(Duration::from_secs(20));
    let log = read_log();
    eprintln!("race: squatter {}", log.lines().last().unwrap_or_default());
    assert!(
        log.contains("done"),
        "the squatter ran to its end: {log}\n{}",
        squatter.stderr
    );
    assert!(
        !log.contains("CONN"),
        "gantry connected to the squatter:\n{log}"
    );
    assert!(
        won > 0,
        "in 6 rounds the squatter never took an address gantry had picked: the race was not \
         exercised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_node_with_unreadable_metadata_stops_all_its_processes() {
    let g = Gantry::new();
    let c = "corrupt";
    let spec = g.simple_spec(c, 1);
    let spec_s = spec.to_str().unwrap().to_string();
    let g = std::sync::Arc::new(g);
    let g2 = g.clone();
    tokio::task::spawn_blocking(move || {
        g2.run(&["up", "-f", &spec_s]).ok();
        // A daemon that left the agent's process group.
        g2.run(&[
            "run",
            "corrupt",
            "--",
            "setsid sleep 600 </dev/null >/dev/null 2>&1 &",
        ])
        .ok();
    })
    .await
    .unwrap();
    let uids = g.cluster_uids(c);
    let uid = uids[0].1.clone();
    assert!(
        eventually(Duration::from_secs(10), || uid_pids(&uid).len() >= 2),
        "the agent and the daemon run"
    );

    let p = LocalProvider::new(local_config(&g, gantry_local::DEFAULT_SSH_PORT));
    let node = p
        .list(&TagFilter::cluster("default", c))
        .await
        .unwrap()
        .remove(0);
    let dir = PathBuf::from(&node.provider_id);
    std::fs::write(dir.join("node.json"), "{ not json").unwrap();
    p.delete_node(&node).await.unwrap();

    assert!(!dir.exists(), "the node's directory is gone");
    let left = uid_pids(&uid);
    assert!(
        left.is_empty(),
        "processes of the deleted node survive: {left:?}"
    );
}

#[test]
fn the_agent_does_not_inherit_the_cli_environment() {
    let g = Gantry::new();
    let c = "cleanenv";
    let spec = g.simple_spec(c, 1);
    let secrets = [
        ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-test-not-a-real-key"),
        ("GANTRY_TEST_SECRET", "s3cret-from-the-cli-environment"),
    ];
    let with_secrets = |args: &[&str]| {
        let mut cmd = g.command(args);
        cmd.envs(secrets);
        g.spawn_cmd(cmd, format!("gantry {}", args.join(" ")))
            .wait(CMD_TIMEOUT)
    };
    with_secrets(&["up", "-f", spec.to_str().unwrap()]).ok();
    with_secrets(&[
        "run",
        c,
        "--",
        "setsid sleep 600 </dev/null >/dev/null 2>&1 &",
    ])
    .ok();
    let out = with_secrets(&["run", c, "--", "env"]).ok();

    let uid = g.cluster_uids(c)[0].1.clone();
    let needle = format!("GANTRY_NODE_UID={uid}");
    let node_procs: Vec<ProcInfo> = procs()
        .into_iter()
        .filter(|p| p.env.iter().any(|kv| kv == &needle))
        .collect();
    assert!(
        node_procs
            .iter()
            .any(|p| p.cmdline.iter().any(|a| a == "agent")),
        "the agent is among the node's processes"
    );
    assert!(
        node_procs
            .iter()
            .any(|p| p.cmdline.iter().any(|a| a == "sleep")),
        "the daemon is among the node's processes"
    );
    for (k, v) in secrets {
        for p in &node_procs {
            assert!(
                !p.env
                    .iter()
                    .any(|kv| kv.starts_with(&format!("{k}=")) || kv.contains(v)),
                "{k} is in the environment of node process {} ({:?})",
                p.pid,
                p.cmdline
            );
        }
        assert!(!out.stdout.contains(v), "{k} reached a command on the node");
    }
}

/// `gantry up` with `TMPDIR` pointing at a directory prepared by the test (the binary's own
/// machine dir is `$TMPDIR/gantry-<uid>`).
fn up_with_tmpdir(g: &Gantry, spec: &Path, tmpdir: &Path) -> Out {
    let mut cmd = g.command(&["up", "-f", spec.to_str().unwrap()]);
    cmd.env("TMPDIR", tmpdir);
    g.spawn_cmd(cmd, "gantry up (own TMPDIR)".into())
        .wait(CMD_TIMEOUT)
}

fn destroy_with_tmpdir(g: &Gantry, cluster: &str, tmpdir: &Path) {
    let mut cmd = g.command(&["destroy", cluster, "--yes"]);
    cmd.env("TMPDIR", tmpdir);
    g.spawn_cmd(cmd, "gantry destroy (own TMPDIR)".into())
        .wait(CMD_TIMEOUT)
        .ok();
}

#[test]
fn a_machine_dir_owned_by_someone_else_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true needs root to chown"
        );
        eprintln!("skipped: giving a directory to another uid needs root");
        return;
    }
    let g = Gantry::new();
    let c = "foreigndir";
    let spec = g.simple_spec(c, 1);
    let tmp = tempfile::tempdir().unwrap();
    chmod(tmp.path(), 0o1777);
    let planted = tmp.path().join(format!("gantry-{}", nix::unistd::getuid()));
    std::fs::create_dir(&planted).unwrap();
    chmod(&planted, 0o777);
    std::os::unix::fs::chown(&planted, Some(4_000_321), Some(4_000_321)).unwrap();

    let out = up_with_tmpdir(&g, &spec, tmp.path());
    assert_ne!(
        out.code,
        Some(0),
        "up must refuse the planted directory:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&planted.display().to_string())
            && out.stderr.contains("owned by uid 4000321")
            && out.stderr.contains("TMPDIR"),
        "the error says what is wrong and how to fix it:\n{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_dir(&planted).unwrap().count(),
        0,
        "nothing was written into someone else's directory"
    );
    assert!(node_dirs(&g.home().join("local"), true).is_empty());
}

#[test]
fn a_machine_dir_of_an_older_gantry_is_tightened_and_planted_links_not_followed() {
    let g = Gantry::new();
    let c = "planted";
    let spec = g.simple_spec(c, 1);
    let tmp = tempfile::tempdir().unwrap();
    let machine = tmp.path().join(format!("gantry-{}", nix::unistd::getuid()));
    let addresses = machine.join("addresses");
    std::fs::create_dir_all(&addresses).unwrap();
    chmod(&machine, 0o755);
    chmod(&addresses, 0o755);
    // Links where the reservations of this home's first addresses go, pointing at a file the
    // planter wants overwritten.
    let precious = tmp.path().join("precious");
    std::fs::write(&precious, "keep me\n").unwrap();
    // Old enough that a reservation read through the link would count as stale, not live.
    std::fs::File::options()
        .write(true)
        .open(&precious)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let b = second_octet(&g.home().join("local"));
    for d in 2..=254 {
        std::os::unix::fs::symlink(&precious, addresses.join(format!("127.{b}.0.{d}"))).unwrap();
    }

    up_with_tmpdir(&g, &spec, tmp.path()).ok();
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
    assert_eq!(mode(&machine), 0o700);
    assert_eq!(mode(&addresses), 0o700);
    let addr = g.nodes(c)[0].address.clone();
    let reservation = std::fs::symlink_metadata(addresses.join(&addr)).unwrap();
    assert!(
        reservation.is_file(),
        "the node's reservation is a plain file"
    );
    destroy_with_tmpdir(&g, c, tmp.path());
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
}
