//! Lifetimes through the binary: `up --lifetime`, `extend` (record and every node's
//! `gantry-expires` tag), `ls` warnings, and `destroy` of several clusters.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::*;

fn parse(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
}

/// Seconds from now to the cluster's recorded expiry.
fn left_secs(show: &Value) -> i64 {
    let at = parse(show["cluster"]["expires_at"].as_str().expect("expires_at"));
    (at - OffsetDateTime::now_utc()).whole_seconds()
}

/// The record's expiry, and every node's tag (from `show`) and `node.json` (on disk) agree.
#[track_caller]
fn assert_tags_match_record(g: &Gantry, c: &str) -> OffsetDateTime {
    let show = g.show(c);
    let at = parse(show["cluster"]["expires_at"].as_str().unwrap());
    let nodes = show["nodes"].as_array().unwrap();
    assert!(!nodes.is_empty());
    for n in nodes {
        let tag = parse(n["tags"]["gantry-expires"].as_str().unwrap());
        assert_eq!(tag, at, "tag of {} vs record: {show:#}", n["name"]);
        let dir = g.cluster_dir(c).join(n["name"].as_str().unwrap());
        let meta: Value =
            serde_json::from_slice(&std::fs::read(dir.join("node.json")).unwrap()).unwrap();
        assert_eq!(
            parse(meta["tags"]["gantry-expires"].as_str().unwrap()),
            at,
            "node.json of {}",
            n["name"]
        );
    }
    at
}

#[test]
fn lifetime_flag_extend_and_ls_warnings() {
    let g = Gantry::new();
    let c = "life";
    let spec = g.simple_spec(c, 2); // spec lifetime: 1h
    let spec_s = spec.to_str().unwrap();

    // --lifetime overrides the spec's for a new cluster.
    g.run(&["up", "-f", spec_s, "--lifetime", "2h"]).ok();
    let left = left_secs(&g.show(c));
    assert!((7100..=7200).contains(&left), "about 2h left: {left}");
    let first = assert_tags_match_record(&g, c);

    // A plain re-run keeps the expiry.
    g.run(&["up", "-f", spec_s]).ok();
    assert_eq!(assert_tags_match_record(&g, c), first);

    // extend adds to the current expiry: 2h + 3h.
    let out = g.run(&["extend", c, "3h", "--output", "json"]).ok();
    let r = out.json();
    assert_eq!(r["cluster"], c);
    assert_eq!(r["tracked"], true);
    assert_eq!(parse(r["previous"].as_str().unwrap()), first);
    assert_eq!(r["nodes"].as_array().unwrap().len(), 2);
    let extended = assert_tags_match_record(&g, c);
    assert_eq!(extended, first + time::Duration::hours(3));
    assert_eq!(parse(r["expires_at"].as_str().unwrap()), extended);

    // --from-now sets now + D (here shortening it to under an hour): ls warns.
    let out = g.run(&["extend", c, "50m", "--from-now"]).ok();
    assert!(
        out.stdout.contains(&format!("extend {c}: expires in")),
        "{}",
        out.stdout
    );
    assert_tags_match_record(&g, c);
    let left = left_secs(&g.show(c));
    assert!((2900..=3000).contains(&left), "about 50m left: {left}");
    let ls = g.run(&["ls"]).ok();
    let row = ls
        .stdout
        .lines()
        .find(|l| l.starts_with(c))
        .unwrap_or_else(|| panic!("ls lists {c}:\n{}", ls.stdout));
    assert!(row.contains("(expires soon)"), "{row}");
    assert!(
        ls.stderr.contains("warning: expiring within 1h") && ls.stderr.contains(c),
        "{}",
        ls.stderr
    );
    let ls = g.run(&["ls", "--output", "json"]).ok().json();
    let secs = ls[0]["expires_in_secs"].as_i64().unwrap();
    assert!((2900..=3000).contains(&secs), "{ls:#}");

    // up --lifetime on an existing cluster: expiry = now + lifetime, tags follow.
    g.run(&["up", "-f", spec_s, "--lifetime", "5h"]).ok();
    assert_tags_match_record(&g, c);
    let left = left_secs(&g.show(c));
    assert!((17900..=18000).contains(&left), "about 5h left: {left}");

    // Bad input is a usage error.
    g.run(&["extend", c, "0s"]).expect(2);
    g.run(&["extend", c, "soon"]).expect(2);
    g.run(&["extend", "nosuch", "1h"]).expect(2);
    g.run(&["up", "-f", spec_s, "--lifetime", "0s"]).expect(2);
}

#[test]
fn destroy_several_clusters() {
    let g = Gantry::new();
    for c in ["da", "db", "dc"] {
        let spec = g.simple_spec(c, 1);
        g.run(&["up", "-f", spec.to_str().unwrap()]).ok();
    }
    let names = |g: &Gantry| -> Vec<String> {
        let v = g.run(&["ls", "--output", "json"]).ok().json();
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&g), ["da", "db", "dc"]);

    // Nothing named, no filter: refused.
    let out = g.run(&["destroy"]).expect(2);
    assert!(out.stderr.contains("--all"), "{}", out.stderr);
    // --all asks; without a terminal and --yes it refuses and changes nothing.
    g.run(&["destroy", "--all"]).expect(6);
    // An unknown name among several: nothing is destroyed.
    let out = g.run(&["destroy", "da", "nosuch", "--yes"]).expect(2);
    assert!(out.stderr.contains("nosuch"), "{}", out.stderr);
    // --expired: none is.
    let out = g.run(&["destroy", "--expired", "--yes"]).ok();
    assert!(out.stderr.contains("nothing to destroy"), "{}", out.stderr);
    assert_eq!(names(&g), ["da", "db", "dc"]);

    // Two by name: an array of two reports.
    let out = g
        .run(&["destroy", "da", "db", "--yes", "--output", "json"])
        .ok();
    let reports = out.json();
    let reports = reports.as_array().expect("an array of reports");
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["cluster"], "da");
    assert_eq!(reports[0]["deleted"][0], "da-db-1");
    assert_eq!(reports[1]["cluster"], "db");
    assert_eq!(names(&g), ["dc"]);
    assert!(!g.cluster_dir("da").join("da-db-1").exists());

    // --all with --yes takes the rest.
    let out = g.run(&["destroy", "--all", "--yes"]).ok();
    assert!(out.stdout.contains("destroy dc"), "{}", out.stdout);
    assert!(names(&g).is_empty());
    assert!(g.home_pids().is_empty(), "no agent left");
}

/// Regression (issue 10, item 9): `lifetime: 9000y`, `up --lifetime 9000y` and `extend demo
/// 9000y` panicked on time overflow, the last one while holding the cluster lock. Huge values
/// are now clear errors that change nothing and leave the lock free.
#[test]
fn huge_lifetimes_are_errors_not_panics() {
    let g = Gantry::new();
    let c = "huge";
    let spec = g.spec(
        "huge.yaml",
        c,
        "apiVersion: gantry/v1\nname: huge\nprovider: local\nlifetime: 9000y\npools:\n  - name: db\n    count: 1\n",
    );
    let out = g.run(&["up", "-f", spec.to_str().unwrap()]).expect(2);
    assert!(
        out.stderr.contains(&format!("{}:4:11", spec.display()))
            && out.stderr.contains("longer than the maximum of 10y"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);

    let spec = g.simple_spec(c, 1);
    let spec_s = spec.to_str().unwrap();
    let out = g
        .run(&["up", "-f", spec_s, "--lifetime", "9000y"])
        .expect(2);
    assert!(out.stderr.contains("maximum of 10y"), "{}", out.stderr);
    g.run(&["up", "-f", spec_s]).ok();
    let before = assert_tags_match_record(&g, c);

    // Refused by the flag's parser, before any lock.
    let out = g.run(&["extend", c, "9000y"]).expect(2);
    assert!(
        out.stderr.contains("maximum of 10y") && !out.stderr.contains("panicked"),
        "{}",
        out.stderr
    );
    // Within the flag's bound, but past it once added to the time left: refused by the
    // engine under the lock, which it releases.
    let out = g.run(&["extend", c, "10y"]).expect(2);
    assert!(
        out.stderr.contains("more than the maximum lifetime of 10y")
            && out.stderr.contains("--from-now")
            && !out.stderr.contains("panicked"),
        "{}",
        out.stderr
    );
    assert_eq!(g.lock_holder(c), None, "the lock is free again");
    assert_eq!(assert_tags_match_record(&g, c), before, "nothing changed");
    // The next run does not wait for a lock.
    g.run(&["extend", c, "1h", "--lock-timeout", "1s"]).ok();
    // The maximum itself, from now, is fine.
    g.run(&["extend", c, "10y", "--from-now"]).ok();
    assert_tags_match_record(&g, c);
}
