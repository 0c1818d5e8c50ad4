//! Finding and stopping a node's processes.
//!
//! The agent and everything it starts carry `GANTRY_NODE_UID=<uid>` in their environment, which
//! survives `setsid`, double forks and daemonisation. Scanning `/proc/*/environ` for it finds
//! every process of a node, including ones that left the agent's process group.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Environment marker carried by every process of a node.
pub const UID_ENV: &str = "GANTRY_NODE_UID";

/// PIDs of live processes whose environment has `GANTRY_NODE_UID=<uid>`.
pub fn node_pids(uid: &str) -> Vec<i32> {
    let needle = format!("{UID_ENV}={uid}");
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) && !is_zombie(pid) {
            pids.push(pid);
        }
    }
    pids
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// SIGTERM every process of the node, wait up to `grace`, then SIGKILL what is left. Returns
/// when none remain (or after a bounded final wait).
pub fn kill_node_processes(uid: &str, grace: Duration) {
    for pid in node_pids(uid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if node_pids(uid).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let left = node_pids(uid);
        if left.is_empty() || Instant::now() > end {
            return;
        }
        for pid in left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Whether an agent holds the node's lock file (i.e. is running).
pub fn agent_running(lock: &Path) -> bool {
    let Ok(f) = File::options().write(true).open(lock) else {
        return false;
    };
    match f.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(_) => false,
    }
}
