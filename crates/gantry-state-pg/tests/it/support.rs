//! The PostgreSQL server the tests share, and a fresh database per test.
//!
//! The server is started once per test binary by `scripts/services.sh start postgres` and
//! watched by it: it stops when this process exits. Without PostgreSQL on the machine a test
//! skips with a message, except under `CI=true`, where it fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    pub password: String,
}

impl Server {
    /// `postgres://gantry:PASSWORD@127.0.0.1:PORT/DB`, plus `query` when not empty.
    pub fn url(&self, db: &str, query: &str) -> String {
        let mut url = format!(
            "postgres://gantry:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        );
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// The test CA that signed the server's certificate, when the server has TLS.
    pub fn ca(&self) -> Option<PathBuf> {
        let ca = self.dir.join("ca.crt");
        ca.exists().then_some(ca)
    }

    /// A client on database `db` (as the superuser), for looking behind the store's back.
    pub async fn admin(&self, db: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=gantry password={} dbname={db}",
                self.port, self.password
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("admin connection");
        tokio::spawn(connection);
        client
    }
}

fn start() -> Option<Server> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh");
    let out = Command::new(script)
        .args(["start", "postgres"])
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
        panic!("scripts/services.sh start postgres failed: {stderr}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut it = stdout.split_whitespace();
    let port = it.next().and_then(|p| p.parse().ok()).expect("port");
    let _pid: u32 = it.next().and_then(|p| p.parse().ok()).expect("pid");
    let dir = PathBuf::from(it.next().expect("dir"));
    let password = std::fs::read_to_string(dir.join("password"))
        .expect("password file")
        .trim()
        .to_owned();
    Some(Server {
        port,
        dir,
        password,
    })
}

/// The shared server, started on first use; `None` (the test skips) without PostgreSQL.
pub fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    SERVER.get_or_init(start).as_ref()
}

/// A new, empty database on the shared server; answers its name.
pub async fn fresh_db(server: &Server) -> String {
    let name = format!("gantry_test_{}", uuid::Uuid::new_v4().simple());
    server
        .admin("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    name
}

/// The whole `source()` chain of an error, as a user would read it.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
