//! A local user who opens idle sockets to a node's SSH address (any local user can) must not
//! take the node down nor lock gantry out, even when the agent runs short of file descriptors.

use std::io::Read as _;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::support::*;

const PRLIMIT: &str = "/usr/bin/prlimit";

/// `prlimit --pid PID --nofile=LIMIT`: `64:64` sets both limits, `20:` only the soft one (a
/// lowered hard limit cannot be raised again without CAP_SYS_RESOURCE).
fn set_nofile(pid: i32, limit: &str) {
    let out = Command::new(PRLIMIT)
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--nofile={limit}"))
        .output()
        .expect("run prlimit");
    assert!(
        out.status.success(),
        "prlimit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Opens `n` idle connections and waits until the agent has dealt with each (sent its version
/// line, or closed it), so nothing is left pending in the listen backlog.
fn idle_sockets(host: &str, port: u16, n: usize) -> Vec<TcpStream> {
    let socks: Vec<TcpStream> = (0..n)
        .map(|i| {
            TcpStream::connect((host, port))
                .unwrap_or_else(|e| panic!("idle connection {i} to {host}:{port}: {e}"))
        })
        .collect();
    for s in &socks {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r = s;
        let mut buf = [0u8; 64];
        // The version line, EOF or a reset: either way the agent got to this connection.
        let _ = r.read(&mut buf);
    }
    socks
}

#[test]
fn idle_sockets_at_the_fd_limit_neither_kill_the_agent_nor_lock_gantry_out() {
    if !require_tool(PRLIMIT) {
        return;
    }
    let g = Gantry::new();
    let c = "fdlimit";
    let spec = g.simple_spec(c, 1);
    g.run(&["up", "-f", spec.to_str().unwrap()]).ok();
    let uids = g.cluster_uids(c);
    let pids = agent_pids(&uids[0].1);
    assert_eq!(pids.len(), 1, "one agent: {pids:?}");
    let agent = pids[0];
    let hosts = g.run(&["ssh-config", c, "--output", "json"]).ok().json();
    let host = hosts[0]["hostname"].as_str().unwrap().to_string();
    let port = u16::try_from(hosts[0]["port"].as_u64().unwrap()).unwrap();
    assert!(is_loopback(&host), "{host}");

    // The scenario: 64 descriptors, 70 idle sockets.
    set_nofile(agent, "64:64");
    let socks = idle_sockets(&host, port, 70);
    assert!(alive(agent), "the agent died with 70 idle sockets open");
    // gantry gets in while they are all still held.
    g.run(&["run", c, "--", "true"]).ok();
    let out = g.run(&["run", c, "--", "echo", "in"]).ok();
    assert!(out.stdout.contains("in"), "{}", out.stdout);
    drop(socks);

    // Out of descriptors for real: accept() fails with EMFILE. The agent keeps serving once
    // descriptors are back.
    assert!(
        eventually(Duration::from_secs(20), || open_fds(agent) < 40),
        "the agent still holds {} descriptors after the idle sockets closed",
        open_fds(agent)
    );
    set_nofile(agent, &format!("{}:", open_fds(agent) + 2));
    let socks = idle_sockets(&host, port, 20);
    assert!(
        alive(agent),
        "the agent died when accept() ran out of descriptors"
    );
    let log = std::fs::read_to_string(g.cluster_dir(c).join(format!("{c}-db-1")).join("agent.log"))
        .unwrap_or_default();
    assert!(
        log.contains("accept failed"),
        "accept() never failed, so this test did not reach the limit; agent log:\n{log}"
    );
    set_nofile(agent, "64:");
    g.run(&["run", c, "--", "true"]).ok();
    drop(socks);
    assert!(alive(agent));
    g.run(&["destroy", c, "--yes"]).ok();
}
