//! A second, unprivileged Unix user, created for one test and removed after it: the hostile
//! neighbour of the hardening tests (another user of the same build machine).
//!
//! Creating users needs root. Without root the tests that need one fail under `CI=true` (CI
//! runs as root) and are skipped with a printed reason elsewhere.

use std::process::{Command, Stdio};
use std::time::Duration;

/// A freshly created user with its own home and group; deleted (with every process it still
/// runs and its home) when dropped.
pub struct OtherUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl OtherUser {
    /// Creates the user, or returns None (skip) when this process cannot (not root).
    pub fn create() -> Option<OtherUser> {
        if !nix::unistd::geteuid().is_root() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "CI=true but the tests do not run as root: they cannot create a second user"
                );
            }
            eprintln!("skipped: creating a second Unix user needs root");
            return None;
        }
        // Short, unique, valid: useradd's default NAME_REGEX is [a-z_][a-z0-9_-]*.
        let name = format!("gt{:08x}", rand_u32());
        let status = Command::new("useradd")
            .args(["--create-home", "--user-group", "--shell", "/bin/sh", &name])
            .stdout(Stdio::null())
            .status()
            .expect("run useradd");
        assert!(status.success(), "useradd {name} failed: {status}");
        let user = nix::unistd::User::from_name(&name)
            .expect("look up the new user")
            .expect("the new user exists");
        Some(OtherUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }

    /// `program ARGS` as this user: its uid and gid, no supplementary groups, and the
    /// environment of a login of that user (HOME, USER, SHELL, a plain PATH).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--reset-env")
            .arg("--")
            .arg(program)
            .stdin(Stdio::null());
        c
    }

    /// Runs `sh -c SCRIPT` as this user, bounded by `timeout`; returns (exit code, stdout,
    /// stderr). A script still running at the timeout is killed and reported as code None.
    pub fn sh(&self, script: &str, timeout: Duration) -> (Option<i32>, String, String) {
        let mut cmd = self.command("/bin/sh");
        cmd.arg("-c").arg(script);
        run_bounded(cmd, timeout)
    }
}

impl Drop for OtherUser {
    fn drop(&mut self) {
        // userdel refuses while the user runs processes.
        let _ = Command::new("pkill")
            .args(["-KILL", "-U", &self.uid.to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(50));
        let _ = Command::new("userdel")
            .args(["--remove", "--force", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `cmd` with its output captured, killing it after `timeout`.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    cmd.stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = std::time::Instant::now() + timeout;
    let code = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s.code(),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    (
        code,
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(&err).unwrap_or_default(),
    )
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish() as u32
}
