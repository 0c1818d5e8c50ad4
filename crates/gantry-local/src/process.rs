//! Finding and stopping a node's processes.
//!
//! The agent and everything it starts carry `GANTRY_NODE_UID=<uid>` in their environment, which
//! survives `setsid`, double forks and daemonisation. Scanning `/proc/*/environ` for it finds
//! every process of a node, including ones that left the agent's process group.
//!
//! The agent itself is found from its node directory: it holds `agent.lock`, wrote its pid to
//! `agent.pid` once it held it and to `agent.ready` once its listener was bound, and runs as
//! `gantry agent --node-dir DIR`. That is how gantry decides an agent is up (something merely
//! answering on the node's address may be anyone's), and how it finds a node's marker when its
//! `node.json` is unreadable.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::meta::NodeDir;

/// Environment marker carried by every process of a node.
pub const UID_ENV: &str = "GANTRY_NODE_UID";

/// PIDs of live processes whose environment has `GANTRY_NODE_UID=<uid>`, from a pass over
/// `/proc` that started after this call (see [`marker_table`]).
pub fn node_pids(uid: &str) -> Vec<i32> {
    marker_table(Instant::now())
        .get(uid)
        .into_iter()
        .flatten()
        .copied()
        .filter(|pid| !is_zombie(*pid))
        .collect()
}

/// Every process carrying a node marker, by marker: one pass over `/proc/*/environ`.
type MarkerTable = HashMap<String, Vec<i32>>;

/// The last pass over `/proc` and when it started; [`SCANNING`] is held by the pass in
/// progress.
static LAST_SCAN: Mutex<Option<(Instant, Arc<MarkerTable>)>> = Mutex::new(None);
static SCANNING: Mutex<()> = Mutex::new(());

/// A marker table made by a pass over `/proc` that started at or after `asked`, shared by every
/// caller waiting at the same time. A pass reads every process's environment, so with a pass per
/// node, deleting N nodes (N agents running) read N² environments: 1,000 nodes took most of a
/// `destroy`'s time here. Concurrent deletes (and their polls) now share each pass. A pass that
/// started after the caller asked sees what a pass of the caller's own would have seen: every
/// process alive when it reads `/proc`, after the caller's signals were sent.
fn marker_table(asked: Instant) -> Arc<MarkerTable> {
    let _one_at_a_time = SCANNING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((started, table)) = &*LAST_SCAN.lock().unwrap_or_else(PoisonError::into_inner)
        && *started >= asked
    {
        return table.clone();
    }
    let started = Instant::now();
    let table = Arc::new(scan_markers());
    *LAST_SCAN.lock().unwrap_or_else(PoisonError::into_inner) = Some((started, table.clone()));
    table
}

/// One pass over `/proc`: the processes (other than this one) carrying `GANTRY_NODE_UID`.
fn scan_markers() -> MarkerTable {
    let prefix = format!("{UID_ENV}=");
    let me = std::process::id() as i32;
    let mut table = MarkerTable::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return table;
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
        let marker = env
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(prefix.as_bytes()));
        if let Some(uid) = marker.and_then(|u| std::str::from_utf8(u).ok()) {
            table.entry(uid.to_string()).or_default().push(pid);
        }
    }
    table
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

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` runs `... agent --node-dir DIR` for the node directory `dir`.
pub fn is_agent_of(pid: i32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if is_zombie(pid) {
        return false;
    }
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(3).any(|w| {
        w[0] == b"agent"
            && w[1] == b"--node-dir"
            && same_dir(Path::new(std::ffi::OsStr::from_bytes(w[2])), dir)
    })
}

/// The same directory, however it is spelled (device and inode), or the same path when either
/// is gone.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

/// The pid of the agent serving the node in `nd`, if it is up: `agent.ready` names a live
/// agent of this directory that holds the node's lock (it is the pid the lock holder wrote to
/// `agent.pid`). A node whose agent was started by an earlier version (its `agent.ready` says
/// only `ready`) counts as up when its lock holder is such an agent.
pub fn ready_agent(nd: &NodeDir) -> Option<i32> {
    let ready = std::fs::read_to_string(nd.ready()).ok()?;
    let holder = read_pid(&nd.pid())?;
    let ready = match ready.trim() {
        "ready" => holder,
        pid => pid.parse().ok()?,
    };
    (ready == holder && agent_running(&nd.lock()) && is_agent_of(ready, &nd.0)).then_some(ready)
}

/// Pids of the agents of the node directory `dir` (normally one): the pid in `agent.pid`, and
/// any process whose command line names the directory (one that lost its pid file).
pub fn agent_pids_of(nd: &NodeDir) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    if let Some(pid) = read_pid(&nd.pid()).filter(|p| is_agent_of(*p, &nd.0)) {
        out.insert(pid);
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok())
            && is_agent_of(pid, &nd.0)
        {
            out.insert(pid);
        }
    }
    out
}

/// The `GANTRY_NODE_UID` markers of the node's agents (see [`agent_pids_of`]).
pub fn agent_uids_of(nd: &NodeDir) -> BTreeSet<String> {
    let prefix = format!("{UID_ENV}=");
    agent_pids_of(nd)
        .into_iter()
        .filter_map(|pid| std::fs::read(PathBuf::from(format!("/proc/{pid}/environ"))).ok())
        .filter_map(|env| {
            env.split(|b| *b == 0)
                .find_map(|kv| kv.strip_prefix(prefix.as_bytes()).map(<[u8]>::to_vec))
        })
        .filter_map(|uid| String::from_utf8(uid).ok())
        .filter(|uid| !uid.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process whose command line is `sh -c CMD agent --node-dir DIR`: an agent of
    /// `DIR` as far as the command line goes.
    fn fake_agent(dir: &Path) -> std::process::Child {
        use std::os::unix::process::CommandExt as _;
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("sleep 30; exit 0")
            .arg("agent")
            .arg("--node-dir")
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // Its own group, so the test ends its `sleep` too.
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[test]
    fn an_agent_is_ready_only_as_the_lock_holder_named_in_both_files() {
        let tmp = tempfile::tempdir().unwrap();
        let nd = NodeDir(tmp.path().to_path_buf());
        let mut agent = fake_agent(&nd.0);
        let pid = agent.id() as i32;
        // Until it has exec'd, the child shows this test's command line.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_agent_of(pid, &nd.0) {
            assert!(
                Instant::now() < deadline,
                "the stand-in agent did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(nd.lock())
            .unwrap();
        std::fs::write(nd.pid(), format!("{pid}\n")).unwrap();
        assert_eq!(ready_agent(&nd), None, "no ready marker yet");
        std::fs::write(nd.ready(), format!("{pid}\n")).unwrap();
        assert_eq!(ready_agent(&nd), None, "the lock is not held");
        lock.lock().unwrap();
        assert_eq!(ready_agent(&nd), Some(pid));
        // A ready marker naming anyone but the lock holder, or a process that is not an agent
        // of this directory, is not an agent that is up.
        std::fs::write(nd.ready(), format!("{}\n", std::process::id())).unwrap();
        assert_eq!(ready_agent(&nd), None);
        std::fs::write(nd.pid(), format!("{}\n", std::process::id())).unwrap();
        assert_eq!(
            ready_agent(&nd),
            None,
            "this test is no agent of the directory"
        );
        // An agent of an earlier version wrote `ready` without its pid.
        std::fs::write(nd.pid(), format!("{pid}\n")).unwrap();
        std::fs::write(nd.ready(), "ready\n").unwrap();
        assert_eq!(ready_agent(&nd), Some(pid));
        assert_eq!(agent_pids_of(&nd), BTreeSet::from([pid]));
        let other = tempfile::tempdir().unwrap();
        assert!(!is_agent_of(pid, other.path()));
        nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        agent.wait().unwrap();
        assert_eq!(ready_agent(&nd), None, "a dead agent is not up");
    }
}
