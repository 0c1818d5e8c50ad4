//! Starting a node's agent without copying the CLI, and reaping agents that exit early.
//!
//! `fork` copies the page tables of the calling process, and gantry in the middle of an `up` is
//! a large process with many threads: starting 1,000 agents through `std::process::Command`
//! with a `pre_exec` hook (the only stable way to call `setsid` in the child, and one that
//! forces a fork) spent about a third of the `up`'s CPU copying those tables and faulting them
//! back in. `posix_spawn` starts the child without that copy (glibc uses
//! `clone(CLONE_VM | CLONE_VFORK)`), and its `POSIX_SPAWN_SETSID` attribute gives the agent its
//! own session in the same call: no controlling terminal, out of the CLI's process group, so a
//! Ctrl-C in the CLI does not reach it.
//!
//! Agents outlive the command that started them (the ones running when it exits become
//! init's). One that exits while gantry still runs is reaped by a single background thread
//! ([`reap_later`]) rather than a thread per agent.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Signals whose disposition the agent starts with at its default, whatever the CLI set
/// (Rust programs ignore `SIGPIPE`; `std::process::Command` resets it the same way).
const DEFAULT_SIGNALS: [Signal; 7] = [
    Signal::SIGPIPE,
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// A started agent that this process has not waited for yet.
#[derive(Debug)]
pub struct AgentChild {
    pid: Pid,
    /// Set once waited for: its pid may then belong to another process.
    ended: Option<Exited>,
}

/// How an agent that exited ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exited {
    /// Its exit status, when it exited rather than died of a signal.
    pub code: Option<i32>,
    /// For messages: "exit status: 1", "signal: 9 (SIGKILL)".
    pub text: String,
}

impl AgentChild {
    /// Runs `exe agent --node-dir NODE_DIR` in a new session with exactly `env`, stdin from
    /// `/dev/null` and stdout and stderr appended to `log`. Its working directory is this
    /// process's; the agent moves to its node directory itself.
    pub fn spawn(
        exe: &Path,
        node_dir: &Path,
        env: &[(String, String)],
        log: &File,
    ) -> std::io::Result<AgentChild> {
        let invalid = |what: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{what} contains a NUL byte"),
            )
        };
        let path = CString::new(exe.as_os_str().as_bytes()).map_err(|_| invalid("the path"))?;
        let dir = CString::new(node_dir.as_os_str().as_bytes())
            .map_err(|_| invalid("the node directory"))?;
        let args = [path.clone(), c"agent".into(), c"--node-dir".into(), dir];
        let envp = env
            .iter()
            .map(|(k, v)| CString::new(format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| invalid("the environment"))?;

        let mut actions = PosixSpawnFileActions::init()?;
        actions.add_open(0, "/dev/null", OFlag::O_RDONLY, Mode::empty())?;
        actions.add_dup2(log.as_raw_fd(), 1)?;
        actions.add_dup2(log.as_raw_fd(), 2)?;
        let mut attr = PosixSpawnAttr::init()?;
        let setsid = PosixSpawnFlags::from_bits_retain(libc::c_int::from(libc::POSIX_SPAWN_SETSID));
        attr.set_flags(
            setsid
                | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
                | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
        )?;
        attr.set_sigmask(&SigSet::empty())?;
        attr.set_sigdefault(&DEFAULT_SIGNALS.into_iter().collect())?;
        let pid = posix_spawn(path.as_c_str(), &actions, &attr, &args, &envp)?;
        Ok(AgentChild { pid, ended: None })
    }

    #[cfg(test)]
    fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// How it ended, if it has (it is then reaped); `None` while it runs.
    pub fn try_wait(&mut self) -> std::io::Result<Option<Exited>> {
        if let Some(ended) = &self.ended {
            return Ok(Some(ended.clone()));
        }
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => Ok(None),
            Ok(status) => {
                self.ended = exited(status);
                Ok(self.ended.clone())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Kills it and waits for it.
    pub fn kill(self) {
        if self.ended.is_none() {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }

    /// Leaves it running; once it exits, the reaper collects it.
    pub fn detach(self) {
        if self.ended.is_none() {
            reap_later(self.pid);
        }
    }
}

fn exited(status: WaitStatus) -> Option<Exited> {
    match status {
        WaitStatus::Exited(_, code) => Some(Exited {
            code: Some(code),
            text: format!("exit status: {code}"),
        }),
        WaitStatus::Signaled(_, signal, _) => Some(Exited {
            code: None,
            text: format!("signal: {} ({})", signal as i32, signal.as_str()),
        }),
        // Stopped or continued: not an end (WNOHANG without WUNTRACED does not report these).
        _ => None,
    }
}

/// Agents started by this process that were running when last looked at, and whether the
/// reaper thread is running; one lock for both, so the reaper never quits while a pid is added.
static UNREAPED: Mutex<(Vec<Pid>, bool)> = Mutex::new((Vec::new(), false));

/// How often the reaper looks for agents that exited.
const REAP_EVERY: Duration = Duration::from_millis(500);

/// Has the reaper collect `pid` once it exits (so a long-running gantry, such as the server,
/// does not collect zombies).
fn reap_later(pid: Pid) {
    let mut guard = UNREAPED.lock().unwrap_or_else(PoisonError::into_inner);
    guard.0.push(pid);
    if guard.1 {
        return;
    }
    let started = std::thread::Builder::new()
        .name("agent-reaper".into())
        .spawn(reaper);
    match started {
        Ok(_) => guard.1 = true,
        // Without a thread the agent stays a zombie until this process exits: harmless
        // (nothing treats a zombie as running), so only logged.
        Err(e) => tracing::warn!(error = %e, "cannot start the thread that reaps exited agents"),
    }
}

fn reaper() {
    loop {
        std::thread::sleep(REAP_EVERY);
        let mut guard = UNREAPED.lock().unwrap_or_else(PoisonError::into_inner);
        guard.0.retain(|pid| {
            matches!(
                waitpid(*pid, Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR)
            )
        });
        if guard.0.is_empty() {
            guard.1 = false;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::Instant;

    /// Waits up to 10 s for the child to end.
    fn wait_end(child: &mut AgentChild) -> Exited {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = child.try_wait().unwrap() {
                return e;
            }
            assert!(Instant::now() < deadline, "the child did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// An executable shell script standing in for `gantry`: it is run as
    /// `SCRIPT agent --node-dir DIR`.
    fn stand_in(dir: &Path, body: &str) -> std::path::PathBuf {
        let path = dir.join("fake-gantry");
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn the_child_gets_its_own_session_exact_environment_and_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let exe = stand_in(
            tmp.path(),
            "echo \"sid=$(cut -d' ' -f6 /proc/$$/stat) pid=$$ args=$1,$2,$3 mark=$MARK home=${HOME-unset}\"\n\
             if read -r line; then echo stdin-not-empty; else echo stdin-empty; fi\n\
             echo to-stderr >&2\nexit 7\n",
        );
        let log_path = tmp.path().join("log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let env = [
            ("MARK".to_string(), "m1".to_string()),
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
        ];
        let mut child = AgentChild::spawn(&exe, Path::new("/the/node"), &env, &log).unwrap();
        let pid = child.pid();
        let end = wait_end(&mut child);
        assert_eq!(end.code, Some(7), "{end:?}");
        assert_eq!(end.text, "exit status: 7");
        let out = std::fs::read_to_string(&log_path).unwrap();
        let first = out.lines().next().unwrap_or_default();
        // A session leader: its session id is its own pid. Only the given environment.
        assert_eq!(
            first,
            format!("sid={pid} pid={pid} args=agent,--node-dir,/the/node mark=m1 home=unset"),
            "{out}"
        );
        assert!(out.contains("stdin-empty"), "{out}");
        assert!(out.contains("to-stderr"), "{out}");
    }

    #[test]
    fn a_killed_child_and_a_detached_one_are_reaped() {
        let tmp = tempfile::tempdir().unwrap();
        let log = File::create(tmp.path().join("log")).unwrap();
        let exe = stand_in(tmp.path(), "exec sleep \"${SLEEP:-30}\"\n");
        // A long one, killed: gone once `kill` returns (waited for, not a zombie).
        let path = [("PATH".to_string(), "/usr/bin:/bin".to_string())];
        let long = AgentChild::spawn(&exe, tmp.path(), &path, &log).unwrap();
        let long_pid = long.pid();
        long.kill();
        assert!(
            !Path::new(&format!("/proc/{long_pid}")).exists(),
            "a killed child is waited for"
        );
        // One that is killed by a signal while still watched reports the signal.
        let mut watched = AgentChild::spawn(&exe, tmp.path(), &path, &log).unwrap();
        kill(Pid::from_raw(watched.pid()), Signal::SIGTERM).unwrap();
        let end = wait_end(&mut watched);
        assert_eq!(end.code, None, "{end:?}");
        assert!(end.text.contains("SIGTERM"), "{end:?}");
        // Detached: the reaper collects it once it exits, so it does not stay a zombie.
        let env = [
            ("SLEEP".to_string(), "0.2".to_string()),
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
        ];
        let detached = AgentChild::spawn(&exe, tmp.path(), &env, &log).unwrap();
        let pid = detached.pid();
        detached.detach();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                Instant::now() < deadline,
                "the detached child was not reaped"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
