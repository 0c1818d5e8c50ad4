//! The one etcd server of this test binary, and stores on it under fresh prefixes.
//!
//! `scripts/test.sh` starts one etcd for the whole run (`scripts/services.sh start etcd`: free
//! loopback ports, data in a temp dir, stopped by PID) and exports its `host:port` as
//! `GANTRY_TEST_ETCD_ENDPOINT`. Without the variable, this process starts its own on first use
//! and shares it between its tests; the script's watcher stops it when the process exits (so
//! under nextest, which runs each test in its own process, each test then has its own). Without
//! etcd installed a test is skipped with a printed reason, except under `CI=true`, where it
//! fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use gantry_state_etcd::EtcdStore;

pub struct Etcd {
    /// `127.0.0.1:PORT`.
    endpoint: String,
}

static ETCD: OnceLock<Option<Etcd>> = OnceLock::new();

fn start() -> Option<Etcd> {
    if let Ok(endpoint) = std::env::var("GANTRY_TEST_ETCD_ENDPOINT")
        && !endpoint.is_empty()
    {
        return Some(Etcd { endpoint });
    }
    start_private().map(|(port, _pid)| Etcd {
        endpoint: format!("127.0.0.1:{port}"),
    })
}

/// An etcd of the calling test's own (for a test that changes server-wide settings), stopped by
/// PID when dropped.
pub struct PrivateEtcd {
    pub endpoint: String,
    pid: u32,
}

impl PrivateEtcd {
    pub fn start() -> Option<PrivateEtcd> {
        start_private().map(|(port, pid)| PrivateEtcd {
            endpoint: format!("127.0.0.1:{port}"),
            pid,
        })
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["stop", &self.pid.to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh")
}

/// `scripts/services.sh start etcd`: (port, pid), or None (skip) when etcd is not installed
/// outside CI.
fn start_private() -> Option<(u16, u32)> {
    let out = Command::new(script())
        .args(["start", "etcd"])
        .env("SERVICES_WATCH_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/services.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("not installed") && std::env::var("CI").as_deref() != Ok("true") {
            eprintln!("skipped: {}", stderr.trim());
            return None;
        }
        panic!("scripts/services.sh start etcd failed: {stderr}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut words = stdout.split_whitespace();
    let mut number = |what: &str| {
        words
            .next()
            .and_then(|w| w.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("services.sh printed no {what}: {stdout:?}"))
    };
    let port = u16::try_from(number("port")).expect("a port");
    let pid: u32 = number("pid");
    Some((port, pid))
}

/// The shared server, or None (skip) when etcd is not installed outside CI.
pub fn etcd() -> Option<&'static Etcd> {
    ETCD.get_or_init(start).as_ref()
}

impl Etcd {
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// A fresh prefix nobody else uses.
    pub fn prefix(&self, test: &str) -> String {
        format!("/gantry-test/{test}-{}/", uuid::Uuid::new_v4().simple())
    }

    pub async fn store(&self, prefix: &str) -> EtcdStore {
        EtcdStore::connect(&[self.endpoint()], prefix)
            .await
            .expect("connect to the test etcd")
    }

    /// A raw client, to look at keys behind the store's back.
    pub async fn raw(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None)
            .await
            .expect("connect a raw etcd client")
    }
}
