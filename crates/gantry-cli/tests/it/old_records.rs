//! A state file written by the release before providers became plug-ins (`dd77e1e`, see
//! `tests/fixtures/state-dd77e1e/README.md`) still works with today's binary: `ls` lists its
//! local, docker and aws clusters by their recorded providers, and `show` reads a cluster. (The
//! specs' decoding, hashes and options are checked in `src/providers.rs`.)

use std::net::TcpListener;
use std::path::PathBuf;

use crate::support::Gantry;

/// The moto port the fixture's aws spec names; long gone, so the test holds it itself (a
/// listener that drops every connection) to be sure nothing else answers there.
const FIXTURE_MOTO_PORT: u16 = 33695;

#[test]
fn ls_and_show_work_on_records_written_by_dd77e1e() {
    let g = Gantry::new();
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-dd77e1e");
    std::fs::copy(fixture.join("state.db"), g.home().join("state.db")).unwrap();

    let show = g.run(&["show", "fx-local", "--output", "json"]).ok();
    assert!(show.stdout.contains("fx-local"), "{}", show.stdout);

    let Ok(guard) = TcpListener::bind(("127.0.0.1", FIXTURE_MOTO_PORT)) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "port {FIXTURE_MOTO_PORT} is taken: `ls` would list the fixture's AWS region there"
        );
        eprintln!("port {FIXTURE_MOTO_PORT} is taken by another process: ls not tried");
        return;
    };
    std::thread::spawn(move || {
        for c in guard.incoming() {
            drop(c);
        }
    });
    let mut cmd = g.command(&["ls", "--output", "json"]);
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1");
    let ls = g
        .spawn_cmd(cmd, "gantry ls".into())
        .wait(std::time::Duration::from_secs(120))
        .ok();
    let rows = ls.json();
    let mut got: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["provider"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("fx-aws".to_string(), "aws".to_string()),
            ("fx-docker".into(), "docker".into()),
            ("fx-local".into(), "local".into()),
        ],
        "{}",
        ls.stderr
    );
    // The engine and the region it names cannot be listed: warnings, not a failure.
    assert!(ls.stderr.contains("us-east-1"), "{}", ls.stderr);
}
