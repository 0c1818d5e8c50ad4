//! moto (the AWS API emulator) for the CLI tests, and the fault-injecting proxy in front of it.
//!
//! [`Moto::start`] runs `scripts/services.sh start moto`: `moto_server` on a free 127.0.0.1 port
//! with AMI, instance type and key pair validation on; it is stopped by PID when the fixture is
//! dropped (and by the script's watcher if this test process dies first). When `moto_server` is
//! not installed, `start` returns `None` after printing why (the test is then skipped), and
//! panics under `CI=true`.
//!
//! ```ignore
//! let Some(moto) = Moto::start() else { return };
//! let mut cmd = g.command(&["up", "-f", spec]);
//! moto.env(&mut cmd);                        // AWS_ENDPOINT_URL, dummy credentials, no IMDS
//! assert_eq!(moto.count("instances", "gantry-cluster", "c"), 10);  // asked of moto itself
//! ```
//!
//! [`FaultProxy::start`] puts `scripts/fault-proxy.py` in front of a moto: a share of the calls
//! is answered like EC2 throttling (503 `RequestLimitExceeded`) or failing (500 `InternalError`);
//! the rest is forwarded. Point gantry at [`FaultProxy::endpoint`] and count at the moto.
//!
//! The fixture's own test (`fault_proxy_answers_like_ec2_and_honours_client_tokens`, at the end)
//! checks the proxy's error shapes and ClientToken replay with raw EC2 Query calls.
//!
//! Never connect to the instance addresses moto invents: every test against moto uses
//! `readiness: api` and no blueprint.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A moto server of this test, on 127.0.0.1.
pub struct Moto {
    port: u16,
    pid: u32,
    log: PathBuf,
}

impl Moto {
    /// Starts moto, or says why not: `None` (skip) when `moto_server` is not installed; panics
    /// under `CI=true`, or when it is installed but does not come up.
    pub fn start() -> Option<Moto> {
        let out = Command::new(scripts_dir().join("services.sh"))
            .args(["start", "moto"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .output()
            .expect("run scripts/services.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            if stderr.contains("not installed") && !in_ci() {
                eprintln!("skipped: {}", stderr.trim());
                return None;
            }
            panic!("scripts/services.sh start moto failed: {stderr}");
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut it = stdout.split_whitespace();
        let (Some(port), Some(pid), Some(log)) = (it.next(), it.next(), it.next()) else {
            panic!("scripts/services.sh start moto printed {stdout:?}, wanted PORT PID LOGFILE");
        };
        Some(Moto {
            port: port.parse().expect("port"),
            pid: pid.parse().expect("pid"),
            log: PathBuf::from(log),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// moto's own log (requests, tracebacks).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sets what an AWS client needs to talk to `endpoint` (moto or a proxy in front of it) and
    /// to nothing else: `AWS_ENDPOINT_URL`, dummy credentials, region us-east-1, no IMDS, no
    /// profile files.
    pub fn env_for(endpoint: &str, cmd: &mut Command) {
        cmd.env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE");
    }

    /// [`Moto::env_for`] this moto.
    pub fn env(&self, cmd: &mut Command) {
        Moto::env_for(&self.endpoint(), cmd);
    }

    /// How many `resource`s carry the tag `key=value`, asked of moto directly (DescribeX with a
    /// tag filter, every page). `resource`: `instances` (those not terminated or shutting down),
    /// `security-groups`, `key-pairs`, `vpcs`, `subnets`, `internet-gateways`, `route-tables`,
    /// `volumes`.
    #[track_caller]
    pub fn count(&self, resource: &str, key: &str, value: &str) -> usize {
        let out = Command::new(scripts_dir().join("services.sh"))
            .args(["count", &self.port.to_string(), resource, key, value])
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/services.sh count");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "services.sh count {resource} {key}={value} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("services.sh count printed {stdout:?}"))
    }

    /// Forgets every resource (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let out = Command::new(scripts_dir().join("services.sh"))
            .args(["reset", &self.port.to_string()])
            .output()
            .expect("run scripts/services.sh reset");
        assert!(out.status.success(), "moto reset failed");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new(scripts_dir().join("services.sh"))
            .args(["stop", &self.pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
    }
}

/// What share of the calls [`FaultProxy`] spoils, and how.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Share answered 503 `RequestLimitExceeded` (not forwarded).
    pub throttle: f64,
    /// Share answered 500 `InternalError` (not forwarded).
    pub error5xx: f64,
    /// Share forwarded, then answered 500 (the call took effect).
    pub error5xx_after: f64,
    /// The first N calls of every action (of `fail_first_actions`, when given) are throttled;
    /// for RunInstances counted per node it launches (its gantry batch tags or `Name` tag, so a
    /// batch regrouped on retry is not refused afresh), else per ClientToken.
    pub fail_first: u32,
    pub fail_first_actions: Vec<String>,
    /// The first N calls of each of `lose_first_actions` take effect, then are answered 500.
    pub lose_first: u32,
    pub lose_first_actions: Vec<String>,
    /// Only these actions are spoiled (empty: all).
    pub only_actions: Vec<String>,
    pub seed: u64,
}

/// `scripts/fault-proxy.py` in front of a moto; killed when dropped (and it exits by itself when
/// this process does).
pub struct FaultProxy {
    child: Child,
    port: u16,
}

impl FaultProxy {
    pub fn start(moto: &Moto, f: &Faults) -> FaultProxy {
        let mut cmd = Command::new("python3");
        cmd.arg(scripts_dir().join("fault-proxy.py"))
            .args(["--upstream", &moto.endpoint()])
            .args(["--throttle", &f.throttle.to_string()])
            .args(["--error5xx", &f.error5xx.to_string()])
            .args(["--error5xx-after", &f.error5xx_after.to_string()])
            .args(["--fail-first", &f.fail_first.to_string()])
            .args(["--seed", &f.seed.to_string()])
            .args(["--max-seconds", "1800"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if !f.fail_first_actions.is_empty() {
            cmd.args(["--fail-first-actions", &f.fail_first_actions.join(",")]);
        }
        if !f.only_actions.is_empty() {
            cmd.args(["--only-actions", &f.only_actions.join(",")]);
        }
        if f.lose_first > 0 {
            cmd.args(["--lose-first", &f.lose_first.to_string()])
                .args(["--lose-first-actions", &f.lose_first_actions.join(",")]);
        }
        let mut child = cmd.spawn().expect("start scripts/fault-proxy.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the proxy's port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("fault-proxy.py printed {line:?}, wanted its port"));
        FaultProxy { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The proxy's counters: `{requests, forwarded, throttled, errors5xx, errors5xx_after,
    /// replayed, by_action: {Action: {...}}}`.
    pub fn stats(&self) -> Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the proxy");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /__fault-proxy/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read the proxy's stats");
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("stats: {e}: {resp}"))
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw EC2 Query call (moto ignores the signature; the Authorization header only names the
/// service and region). Returns (status, body).
pub fn ec2_call(endpoint: &str, params: &str) -> (u16, String) {
    let hostport = endpoint.strip_prefix("http://").unwrap();
    let body = format!("{params}&Version=2016-11-15");
    let mut s = TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

const RUN_ONE: &str = "Action=RunInstances&ImageId=ami-0e1e769742d1cfb49&InstanceType=t3.micro&MinCount=1&MaxCount=1\
     &TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=gantry-cluster&TagSpecification.1.Tag.1.Value=proxytest";

/// The proxy itself, without gantry: EC2's error shapes, and RunInstances' ClientToken honoured
/// the way EC2 does (moto alone would launch again).
#[test]
fn fault_proxy_answers_like_ec2_and_honours_client_tokens() {
    let Some(moto) = Moto::start() else { return };

    let all = FaultProxy::start(
        &moto,
        &Faults {
            throttle: 1.0,
            ..Faults::default()
        },
    );
    let (status, body) = ec2_call(&all.endpoint(), "Action=DescribeInstances");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("<Response><Errors><Error><Code>RequestLimitExceeded</Code>")
            && body.contains("<RequestID>"),
        "not EC2's error shape: {body}"
    );
    let internal = FaultProxy::start(
        &moto,
        &Faults {
            error5xx: 1.0,
            ..Faults::default()
        },
    );
    let (status, body) = ec2_call(&internal.endpoint(), "Action=DescribeInstances");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("<Code>InternalError</Code>"), "{body}");
    // Never faulted: moto's own API.
    assert_eq!(all.stats()["throttled"], 1);

    // The call takes effect, the answer is lost; the retry with the same token must not launch
    // a second instance.
    let after = FaultProxy::start(
        &moto,
        &Faults {
            error5xx_after: 1.0,
            only_actions: vec!["RunInstances".into()],
            ..Faults::default()
        },
    );
    let call = format!("{RUN_ONE}&ClientToken=tok-1");
    let (status, _) = ec2_call(&after.endpoint(), &call);
    assert_eq!(status, 500);
    assert_eq!(moto.count("instances", "gantry-cluster", "proxytest"), 1);
    let (status, body) = ec2_call(&after.endpoint(), &call);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<instanceId>"), "{body}");
    assert_eq!(moto.count("instances", "gantry-cluster", "proxytest"), 1);
    // A new token launches again; unrelated actions pass through.
    let (status, _) = ec2_call(&after.endpoint(), &format!("{RUN_ONE}&ClientToken=tok-2"));
    assert_eq!(status, 500);
    assert_eq!(moto.count("instances", "gantry-cluster", "proxytest"), 2);
    let (status, _) = ec2_call(&after.endpoint(), "Action=DescribeInstances");
    assert_eq!(status, 200);
    let stats = after.stats();
    assert_eq!(stats["errors5xx_after"], 2, "{stats}");
    assert_eq!(stats["replayed"], 1, "{stats}");
}
