//! Shared fixture for the CLI tests: a private `GANTRY_HOME`, bounded command runs, process
//! scans by `GANTRY_NODE_UID`, and a guard that leaves no cluster and no agent behind.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_gantry");

/// Default bound for one CLI command.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(90);

/// The finished run of one CLI command.
#[derive(Debug)]
pub struct Out {
    pub what: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Panics (showing everything) unless the command exited with `code`.
    #[track_caller]
    pub fn expect(self, code: i32) -> Out {
        assert_eq!(
            self.code,
            Some(code),
            "`{}` exited {:?} (signal {:?}), wanted {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.code,
            self.signal,
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn ok(self) -> Out {
        self.expect(0)
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}` printed no JSON on stdout ({e})\n--- stdout\n{}\n--- stderr\n{}",
                self.what, self.stdout, self.stderr
            )
        })
    }
}

/// Whether an external tool can be used; fails under CI, skips (with a printed reason) elsewhere.
pub fn require_tool(path: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{path} is missing and CI=true: install it (apt-get install openssh-client)");
    }
    eprintln!("skipped: {path} is not installed");
    false
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A private gantry home. Dropping it destroys every tracked cluster and then kills, as a last
/// resort, every process of any node under the home (by `GANTRY_NODE_UID`), and any process
/// whose environment or command line points into the home.
pub struct Gantry {
    dir: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
    clusters: Mutex<BTreeSet<String>>,
    uids: Mutex<BTreeSet<String>>,
}

impl Gantry {
    pub fn new() -> Gantry {
        Gantry::with_home_named("home")
    }

    /// A home named `name` inside the fixture's temp dir (e.g. one with a space in its path).
    pub fn with_home_named(name: &str) -> Gantry {
        let dir = tempfile::Builder::new()
            .prefix("gantry-it-")
            .tempdir()
            .expect("tempdir");
        let home = dir.path().join(name);
        let work = dir.path().join("work");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        Gantry {
            dir,
            home,
            work,
            clusters: Mutex::new(BTreeSet::new()),
            uids: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// A scratch directory outside the home.
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// `$HOME/local/<project>/<cluster>`.
    pub fn cluster_dir(&self, cluster: &str) -> PathBuf {
        self.home.join("local").join("default").join(cluster)
    }

    /// Writes a spec file into the scratch dir and remembers its cluster for cleanup.
    pub fn spec(&self, file: &str, cluster: &str, yaml: &str) -> PathBuf {
        self.track(cluster);
        let p = self.work.join(file);
        std::fs::write(&p, yaml).unwrap();
        p
    }

    /// A plain local-provider spec with one pool `db`.
    pub fn simple_spec(&self, cluster: &str, count: u32) -> PathBuf {
        self.spec(
            &format!("{cluster}-{count}.yaml"),
            cluster,
            &format!(
                "apiVersion: gantry/v1\nname: {cluster}\nprovider: local\nlifetime: 1h\npools:\n  - name: db\n    count: {count}\n"
            ),
        )
    }

    pub fn track(&self, cluster: &str) {
        self.clusters.lock().unwrap().insert(cluster.to_string());
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("GANTRY_HOME", &self.home)
            .env_remove("GANTRY_PROJECT")
            .env_remove("GANTRY_STATE")
            .env_remove("GANTRY_OUTPUT")
            .env_remove("GANTRY_LOCK_TIMEOUT")
            .env_remove("GANTRY_CONCURRENCY")
            .env_remove("GANTRY_LOG")
            // gc looks for docker orphans on DOCKER_HOST's engine: never the developer's own.
            .env_remove("DOCKER_HOST")
            .env_remove("GANTRY_AWS_REGIONS")
            .env_remove("GANTRY_LS_MAX_AGE")
            .env_remove("GANTRY_LOCK_TTL_MS")
            // Secrets: the home's own key file unless a test names a provider.
            .env_remove("GANTRY_KEY_PROVIDER")
            .env_remove("GANTRY_PASSPHRASE")
            .env_remove("GANTRY_OLD_PASSPHRASE")
            .env_remove("BAO_ADDR")
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .current_dir(&self.work)
            .stdin(Stdio::null());
        c
    }

    fn log_paths(&self) -> (PathBuf, PathBuf) {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let logs = self.dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        (logs.join(format!("{n}.out")), logs.join(format!("{n}.err")))
    }

    /// Starts a command in the background (output to files, so no pipe can block it).
    pub fn spawn(&self, args: &[&str]) -> Bg {
        self.spawn_cmd(self.command(args), format!("gantry {}", args.join(" ")))
    }

    pub fn spawn_cmd(&self, mut cmd: Command, what: String) -> Bg {
        let (out, err) = self.log_paths();
        cmd.stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start `{what}`: {e}"));
        Bg {
            child: Some(child),
            what,
            out,
            err,
        }
    }

    /// Runs `gantry ARGS` to completion (bounded by [`CMD_TIMEOUT`]).
    pub fn run(&self, args: &[&str]) -> Out {
        self.spawn(args).wait(CMD_TIMEOUT)
    }

    /// `show CLUSTER --output json`, parsed.
    #[track_caller]
    pub fn show(&self, cluster: &str) -> Value {
        self.run(&["show", cluster, "--output", "json"]).ok().json()
    }

    /// The nodes of `show`, as (name, pool, address, state) rows in printed order.
    #[track_caller]
    pub fn nodes(&self, cluster: &str) -> Vec<NodeRow> {
        let v = self.show(cluster);
        v["nodes"]
            .as_array()
            .expect("show: nodes is an array")
            .iter()
            .map(|n| NodeRow {
                name: n["name"].as_str().unwrap_or_default().to_string(),
                pool: n["pool"].as_str().unwrap_or_default().to_string(),
                address: n["address"].as_str().unwrap_or_default().to_string(),
                state: n["state"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// (node name, uid) of every node directory under the home, complete or partial
    /// (hidden `.NAME.tmp-*` ones included). Remembered for the guard.
    pub fn node_uids(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for dir in node_dirs(&self.home.join("local"), true) {
            let Ok(text) = std::fs::read(dir.join("node.json")) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<Value>(&text) else {
                continue;
            };
            if let (Some(name), Some(uid)) = (v["name"].as_str(), v["uid"].as_str()) {
                out.push((name.to_string(), uid.to_string()));
            }
        }
        out.sort();
        self.uids
            .lock()
            .unwrap()
            .extend(out.iter().map(|(_, u)| u.clone()));
        out
    }

    /// Uids of one cluster's nodes, by node name.
    pub fn cluster_uids(&self, cluster: &str) -> Vec<(String, String)> {
        let prefix = format!("{cluster}-");
        self.node_uids()
            .into_iter()
            .filter(|(n, _)| n.starts_with(&prefix))
            .collect()
    }

    /// Whether the cluster lock of `cluster` is held, read straight from the state DB.
    pub fn lock_holder(&self, cluster: &str) -> Option<String> {
        use gantry_state::StateStore as _;
        let store = gantry_state::SqliteStore::open(&self.home.join("state.db")).unwrap();
        block_on(store.get_lock(&format!("cluster/default/{cluster}")))
            .unwrap()
            .map(|l| l.holder)
    }

    /// Every process that belongs to this home: carries the uid of one of its nodes, has
    /// `GANTRY_HOME=<home>` in its environment, or names a path inside the home on its command
    /// line (agents: `gantry agent --node-dir <home>/local/...`).
    pub fn home_pids(&self) -> Vec<i32> {
        let uids: BTreeSet<String> = self.uids.lock().unwrap().clone();
        let home_env = format!("GANTRY_HOME={}", self.home.display());
        let home_str = self.home.display().to_string();
        procs()
            .into_iter()
            .filter(|p| {
                p.env.iter().any(|kv| {
                    kv == &home_env
                        || kv
                            .strip_prefix("GANTRY_NODE_UID=")
                            .is_some_and(|u| uids.contains(u))
                }) || p.cmdline.iter().any(|a| a.starts_with(&home_str))
            })
            .map(|p| p.pid)
            .collect()
    }
}

impl Drop for Gantry {
    fn drop(&mut self) {
        self.node_uids();
        let clusters: Vec<String> = self.clusters.lock().unwrap().iter().cloned().collect();
        for c in clusters {
            // Also when no node dir is left: the state store may still record the cluster.
            let mut bg = self.spawn(&["destroy", &c, "--yes", "--lock-timeout", "20s"]);
            let _ = bg.try_wait_for(Duration::from_secs(40));
        }
        // Last resort: whatever destroy did not take down.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.home_pids();
            if left.is_empty() || Instant::now() > deadline {
                if !left.is_empty() {
                    eprintln!("guard: processes {left:?} survived SIGKILL");
                }
                break;
            }
            for pid in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub name: String,
    pub pool: String,
    pub address: String,
    pub state: String,
}

/// A background CLI process; killed (SIGKILL) if still running when dropped.
pub struct Bg {
    child: Option<Child>,
    pub what: String,
    out: PathBuf,
    err: PathBuf,
}

impl Bg {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("signal the child");
    }

    pub fn stderr_now(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Whether the process has exited (without reaping the output).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))))
    }

    /// Waits until stderr contains `needle`; false if the process exits or `timeout` passes
    /// first.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr_now().contains(needle) {
                return true;
            }
            if self.exited() || Instant::now() > deadline {
                return self.stderr_now().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn try_wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// Waits for the exit (killing it and panicking after `timeout`) and collects its output.
    #[track_caller]
    pub fn wait(mut self, timeout: Duration) -> Out {
        let status = self.try_wait_for(timeout);
        self.child = None;
        let out = Out {
            what: self.what.clone(),
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| {
                use std::os::unix::process::ExitStatusExt as _;
                s.signal()
            }),
            stdout: std::fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.err).unwrap_or_default(),
        };
        assert!(
            status.is_some(),
            "`{}` did not finish within {timeout:?}; killed\n--- stdout\n{}\n--- stderr\n{}",
            out.what,
            out.stdout,
            out.stderr
        );
        out
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill9(mut self) -> Out {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
        self.wait(Duration::from_secs(10))
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Node directories below `<home>/local` (`<project>/<cluster>/<node>`); with `hidden`, also the
/// partial `.NAME.tmp-*` ones.
pub fn node_dirs(local_root: &Path, hidden: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let read = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    for project in read(local_root) {
        for cluster in read(&project) {
            for node in read(&cluster) {
                let is_hidden = node
                    .file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with('.'));
                if hidden || !is_hidden {
                    out.push(node);
                }
            }
        }
    }
    out
}

/// Partial-create leftovers (`.NAME.tmp-*`) anywhere below `<home>/local`.
pub fn partial_dirs(local_root: &Path) -> Vec<PathBuf> {
    node_dirs(local_root, true)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with('.'))
        })
        .collect()
}

pub struct ProcInfo {
    pub pid: i32,
    pub env: Vec<String>,
    pub cmdline: Vec<String>,
}

/// Live (non-zombie) processes other than this one, with environment and command line.
pub fn procs() -> Vec<ProcInfo> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    let split = |b: Vec<u8>| -> Vec<String> {
        b.split(|c| *c == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || is_zombie(pid) {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        out.push(ProcInfo {
            pid,
            env: split(env),
            cmdline: split(cmd),
        });
    }
    out
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
        .unwrap_or(true)
}

/// Live processes carrying `GANTRY_NODE_UID=<uid>`.
pub fn uid_pids(uid: &str) -> Vec<i32> {
    let needle = format!("GANTRY_NODE_UID={uid}");
    procs()
        .into_iter()
        .filter(|p| p.env.iter().any(|kv| kv == &needle))
        .map(|p| p.pid)
        .collect()
}

/// Live agent processes of a node: its uid in the environment and `agent` on the command line.
pub fn agent_pids(uid: &str) -> Vec<i32> {
    let needle = format!("GANTRY_NODE_UID={uid}");
    procs()
        .into_iter()
        .filter(|p| p.env.iter().any(|kv| kv == &needle) && p.cmdline.iter().any(|a| a == "agent"))
        .map(|p| p.pid)
        .collect()
}

/// Polls `f` until it returns true or `timeout` passes; returns the last answer.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Deterministic pseudo-random bytes (every byte value, NULs and newlines included).
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn write_file(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
}

/// Whether `addr` is a dotted IPv4 address in 127.0.0.0/8.
pub fn is_loopback(addr: &str) -> bool {
    addr.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|a| a.octets()[0] == 127)
}
