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
/// `/proc` that started after this call (see [`marker_table`]). Each one is checked again
/// against its environment as it is now, so a pid that a pass remembered but that now belongs
/// to another process is never returned (and never signalled).
pub fn node_pids(uid: &str) -> Vec<i32> {
    marker_table(Instant::now())
        .get(uid)
        .into_iter()
        .flatten()
        .copied()
        .filter(|pid| read_marker(*pid).ok().flatten().as_deref() == Some(uid))
        .filter(|pid| !is_zombie(*pid))
        .collect()
}

/// Every process carrying a node marker, by marker: one pass over `/proc/*/environ`.
type MarkerTable = HashMap<String, Vec<i32>>;

/// The last pass over `/proc` and when it started; [`SCANNING`] is held by the pass in
/// progress.
static LAST_SCAN: Mutex<Option<(Instant, Arc<MarkerTable>)>> = Mutex::new(None);
static SCANNING: Mutex<()> = Mutex::new(());

/// What passes read from each process's environment (its marker, if any) and when, by pid.
type Seen = HashMap<i32, (Instant, Option<String>)>;
static SEEN: Mutex<Option<Seen>> = Mutex::new(None);

/// How long a process's marker is taken from [`SEEN`] instead of read again. Pids are handed
/// out in a cycle over `pid_max` (32,768 at the least), so a pid remembered for this long still
/// names the same process unless that many processes were started within it; and
/// [`node_pids`] checks every process it returns afresh anyway.
const REMEMBER: Duration = Duration::from_secs(1);

/// A marker table made by a pass over `/proc` that started at or after `asked`, shared by every
/// caller waiting at the same time. A pass that started after the caller asked sees what a pass
/// of the caller's own would have seen: every process alive when it reads `/proc`, after the
/// caller's signals were sent.
///
/// Reading every process's environment costs a pass tens of milliseconds with 1,000 agents
/// running, and a 1,000-node `destroy` needs a pass after each node's agent is gone: with every
/// environment read each time, the passes were most of its time, and grew with the square of
/// the nodes. A pass now reads the environment of the processes it has not seen in the last
/// [`REMEMBER`] only (a process's marker is fixed when it starts: it comes with the environment
/// the node gave it), and lists `/proc` for the rest.
fn marker_table(asked: Instant) -> Arc<MarkerTable> {
    let _one_at_a_time = SCANNING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((started, table)) = &*LAST_SCAN.lock().unwrap_or_else(PoisonError::into_inner)
        && *started >= asked
    {
        return table.clone();
    }
    let started = Instant::now();
    let table = Arc::new(scan_markers(started));
    *LAST_SCAN.lock().unwrap_or_else(PoisonError::into_inner) = Some((started, table.clone()));
    table
}

/// One pass over `/proc`: the processes (other than this one) carrying `GANTRY_NODE_UID`.
fn scan_markers(now: Instant) -> MarkerTable {
    let me = std::process::id() as i32;
    let mut table = MarkerTable::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return table;
    };
    let mut seen = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
    let mut before = seen.take().unwrap_or_default();
    let mut now_seen = HashMap::with_capacity(before.len());
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let entry = match before.remove(&pid) {
            Some((read_at, marker)) if now.duration_since(read_at) < REMEMBER => (read_at, marker),
            // Gone since the listing: not alive, not remembered.
            _ => match read_marker(pid) {
                Ok(marker) => (now, marker),
                Err(_) => continue,
            },
        };
        if let Some(uid) = &entry.1 {
            table.entry(uid.clone()).or_default().push(pid);
        }
        now_seen.insert(pid, entry);
    }
    *seen = Some(now_seen);
    table
}

/// The `GANTRY_NODE_UID` in the process's environment (None: it has none, or its environment
/// is not ours to read); an error when the process is gone.
fn read_marker(pid: i32) -> std::io::Result<Option<String>> {
    let env = match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(env) => env,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(None),
        Err(e) => return Err(e),
    };
    let prefix = format!("{UID_ENV}=");
    Ok(env
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .and_then(|u| std::str::from_utf8(u).ok())
        .map(str::to_string))
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
///
/// The node's agent (`node`, when its directory is known) goes first, found from its pid
/// file: on SIGTERM it takes the processes of its sessions down with it. `/proc` is then
/// scanned (a pass shared with concurrent callers, see [`marker_table`]) for whatever carries
/// the node's marker, daemons that left the agent included. What a pass finds is signalled and
/// watched by pid (reading each one's small `stat` file) rather than by passes over every
/// process's environment; the node is done when a pass that started after that finds nothing.
/// With a pass per poll, or two per node, reading environments was most of a 1,000-node
/// destroy.
pub fn kill_node_processes(uid: &str, node: Option<&NodeDir>, grace: Duration) {
    let kill_from = Instant::now() + grace;
    let end = kill_from + Duration::from_secs(5);
    let mut agent: Vec<i32> = node.and_then(agent_of).into_iter().collect();
    loop {
        let pids = if agent.is_empty() {
            node_pids(uid)
        } else {
            std::mem::take(&mut agent)
        };
        if pids.is_empty() || Instant::now() > end {
            return;
        }
        // SIGTERM until the grace is over (also for processes that appear meanwhile), then
        // SIGKILL.
        let (signal, until) = if Instant::now() < kill_from {
            (Signal::SIGTERM, kill_from)
        } else {
            (Signal::SIGKILL, Instant::now() + Duration::from_millis(500))
        };
        for pid in &pids {
            let _ = kill(Pid::from_raw(*pid), signal);
        }
        wait_gone(&pids, until);
    }
}

/// The running agent of the node directory, from its pid file (checked to be an agent of this
/// directory: a pid file may name a process that has since been replaced).
fn agent_of(nd: &NodeDir) -> Option<i32> {
    read_pid(&nd.pid()).filter(|pid| is_agent_of(*pid, &nd.0))
}

/// Waits until none of `pids` runs (gone or a zombie) or `deadline` passes. Looks again after
/// 1 ms, then twice as long each time up to 16 ms: an agent is usually gone within a few.
fn wait_gone(pids: &[i32], deadline: Instant) {
    let mut left: Vec<i32> = pids.to_vec();
    let mut pause = Duration::from_millis(1);
    loop {
        left.retain(|pid| !is_zombie(*pid));
        if left.is_empty() || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(16));
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
    if let Some(pid) = agent_of(nd) {
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
