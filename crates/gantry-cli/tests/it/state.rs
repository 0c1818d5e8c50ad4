//! `--state`/`GANTRY_STATE` and `gantry state status`: which store a command uses, and what a
//! user sees of it (never a password).

use crate::support::Gantry;

#[test]
fn state_status_names_the_store_and_that_it_answers() {
    let g = Gantry::new();
    let text = g.run(&["state", "status"]).ok();
    let db = g.home().join("state.db");
    assert!(
        text.stdout.contains("store      sqlite")
            && text
                .stdout
                .contains(&format!("url        sqlite://{}", db.display()))
            && text.stdout.contains("health     ok"),
        "{}",
        text.stdout
    );
    let json = g.run(&["state", "status", "-o", "json"]).ok().json();
    assert_eq!(json["kind"], "sqlite");
    assert_eq!(json["healthy"], true);
    assert!(json["schema_version"].as_u64().unwrap_or(0) >= 1, "{json}");
    assert!(json["latency_ms"].as_f64().is_some(), "{json}");
}

#[test]
fn a_state_url_picks_the_store_and_a_bad_one_fails_clearly_without_its_password() {
    let g = Gantry::new();
    let other = g.work().join("team.db");
    let url = format!("sqlite://{}", other.display());
    let spec = g.simple_spec("elsewhere", 1);
    let spec = spec.to_str().unwrap();
    g.run(&["--state", &url, "up", "-f", spec]).ok();
    assert!(other.is_file(), "the records went to {}", other.display());
    let names = |out: serde_json::Value| -> Vec<String> {
        out.as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect()
    };
    let mut ls = g.command(&["ls", "-o", "json"]);
    ls.env("GANTRY_STATE", &url);
    let listed = g.spawn_cmd(ls, "gantry ls (GANTRY_STATE)".into());
    let listed = listed.wait(crate::support::CMD_TIMEOUT).ok().json();
    assert_eq!(names(listed), ["elsewhere"]);
    let status = g.run(&["--state", &url, "state", "status"]).ok();
    assert!(status.stdout.contains(&url), "{}", status.stdout);
    g.run(&["--state", &url, "destroy", "elsewhere", "--yes"])
        .ok();
    let after = g.run(&["--state", &url, "ls", "-o", "json"]).ok().json();
    assert!(names(after).is_empty());

    // Unknown scheme, no scheme, an unreachable team store: each fails, says what to write,
    // and never prints the password it was given.
    for (bad, code, needle) in [
        ("mysql://u:hunter2@db/g", 2, "unknown scheme \"mysql\""),
        ("u:hunter2@db.internal:5432/g", 2, "has no scheme"),
        // Unreachable team stores: exit 1 (a state store failure), naming the store.
        (
            "postgres://u:hunter2@127.0.0.1:1/g",
            1,
            "postgres://u:***@127.0.0.1:1/g",
        ),
        (
            "etcd://127.0.0.1:1/unreachable",
            1,
            "etcd://127.0.0.1:1/unreachable",
        ),
    ] {
        for args in [&["ls"][..], &["state", "status"][..]] {
            let mut cmd = g.command(args);
            cmd.env("GANTRY_STATE", bad);
            let out = g
                .spawn_cmd(cmd, format!("gantry {args:?} with GANTRY_STATE={bad}"))
                .wait(crate::support::CMD_TIMEOUT);
            assert_eq!(out.code, Some(code), "{bad}: {out:?}");
            let all = format!("{}{}", out.stdout, out.stderr);
            assert!(all.contains(needle), "{bad}: {all}");
            assert!(!all.contains("hunter2"), "{bad}: {all}");
        }
    }
}
