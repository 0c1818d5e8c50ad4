//! Data-driven tests of `spec::parse`: every case is a YAML text and the expected outcome.

use std::time::Duration;

use gantry_core::reader::{Node, Pos, Reader};
use gantry_core::spec::{self, DEFAULT_LIFETIME, render_error};
use gantry_core::{AllowRule, ProviderOptions, ProviderSection, ProviderSpec, Readiness};

/// gantry-core knows no provider: these tests hand the parser a stand-in kind `local` with one
/// option, `ssh_port` (each provider crate tests its own section).
struct StubLocal;

impl ProviderSection for StubLocal {
    fn name(&self) -> &'static str {
        "local"
    }

    fn read_options(&self, r: &mut Reader, _at: Pos, o: Option<&Node>) -> Option<ProviderOptions> {
        let mut port = None;
        if let Some(o) = o {
            let fields = r.fields(o, "local", "the local provider options", &["ssh_port"])?;
            if let Some(p) = fields.opt("ssh_port") {
                port = Some(r.int_in(p, 1, 65535, "2222")?);
            }
        }
        ProviderOptions::from_typed(&serde_json::json!({ "ssh_port": port })).ok()
    }
}

fn parse(text: &str) -> Result<gantry_core::ClusterSpec, gantry_core::SpecError> {
    spec::parse("spec.yaml", text, &[&StubLocal])
}

fn local(port: Option<u16>) -> ProviderSpec {
    ProviderSpec::new(
        "local",
        ProviderOptions::from_typed(&serde_json::json!({ "ssh_port": port })).unwrap(),
    )
}

/// Lines 1-3 of most cases: a valid header, so the interesting part starts on line 4.
macro_rules! head {
    ($($s:literal),* $(,)?) => {
        concat!("apiVersion: gantry/v1\nname: demo\nprovider: local\n", $($s),*)
    };
}

/// Minimal valid pools block (lines 4-6 after `head!`).
macro_rules! with_pool {
    ($($s:literal),* $(,)?) => {
        head!("pools:\n  - name: db\n    count: 3\n", $($s),*)
    };
}

/// `expect` is `ok`, or one line per expected problem, in order:
/// `line:col: message-substring` optionally followed by ` // hint-substring`.
fn check(input: &str, expect: &str) {
    let result = parse(input);
    if expect == "ok" {
        if let Err(e) = result {
            panic!(
                "expected ok for\n{input}\ngot:\n{}",
                render_error(&e, input)
            );
        }
        return;
    }
    let err = match result {
        Ok(spec) => panic!("expected errors for\n{input}\ngot ok: {spec:?}"),
        Err(e) => e,
    };
    let rendered = render_error(&err, input);
    let expected: Vec<&str> = expect
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        err.items.len(),
        expected.len(),
        "wrong number of problems for\n{input}\ngot:\n{rendered}"
    );
    for (item, want) in err.items.iter().zip(&expected) {
        let (want, hint) = match want.split_once(" // ") {
            Some((w, h)) => (w, Some(h)),
            None => (*want, None),
        };
        let (loc, message) = want.split_at(want.find(": ").expect("`line:col: message`"));
        let message = &message[2..];
        let got_loc = format!("{}:{}", item.line, item.column);
        assert_eq!(
            got_loc, loc,
            "wrong location for {want:?}; got:\n{rendered}"
        );
        assert!(
            item.message.contains(message),
            "message {:?} lacks {message:?}; got:\n{rendered}",
            item.message
        );
        assert!(
            !item.message.starts_with(|c: char| c.is_uppercase()),
            "messages are lowercase fragments: {:?}",
            item.message
        );
        let got_hint = item.hint.as_deref().unwrap_or_default();
        assert!(
            !got_hint.is_empty(),
            "every problem has a hint; got:\n{rendered}"
        );
        if let Some(hint) = hint {
            assert!(got_hint.contains(hint), "hint {got_hint:?} lacks {hint:?}");
        }
    }
}

const MINIMAL: &str =
    "apiVersion: gantry/v1\nname: demo\nprovider: local\npools:\n  - name: db\n    count: 1\n";

const FULL: &str = "\
apiVersion: gantry/v1
name: demo-2
provider:
  local:
    ssh_port: 2200
lifetime: 4h30m
readiness: api
ssh: {user: alice}
pools:
  - name: db
    count: 3
    size: medium
    image: debian-12
    labels: {role: db, tier: \"1\"}
  - {name: web, count: 2}
network:
  allow:
    - {port: 5432, from: 10.0.0.0/8}
    - port: 22
      from: caller
    - {port: 8080, from: cluster}
    - {port: 443, from: \"2001:db8::/32\"}
tags: {team: storage, cost-center: \"42\"}
";

#[test]
fn table() {
    let cases: &[(&str, &str)] = &[
        // Happy paths.
        (MINIMAL, "ok"),
        (FULL, "ok"),
        (head!("pools: [{name: a, count: 1000}]\n"), "ok"),
        (head!("pools:\n- name: a\n  count: 1\n"), "ok"),
        (concat!("---\n", head!("pools: [{name: a, count: 1}]\n"), "...\n"), "ok"),
        (with_pool!("network:\n", "tags:\n", "ssh:\n", "lifetime:\n"), "ok"),
        (with_pool!("network: {allow: []}\n"), "ok"),
        // YAML syntax and document shape.
        (head!("pools:\n  - name: db\n    count: [1\n"), "6:12: yaml syntax error"),
        (head!("pools: {a: 1\n"), "4:8: yaml syntax error: unclosed bracket"),
        ("", "1:1: the spec is empty // apiVersion: gantry/v1"),
        ("# only a comment\n", "1:1: the spec is empty"),
        ("- a\n- b\n", "1:1: the spec must be a mapping, found a list"),
        ("just text\n", "1:1: the spec must be a mapping"),
        (with_pool!("---\nname: other\n"), "7:1: exactly one yaml document"),
        // Unknown fields, with a suggestion by edit distance or the list of valid fields.
        (
            head!("pools:\n  - name: db\n    cont: 3\n"),
            "5:5: missing required field `count` in pool // add `count: ...`
             6:5: unknown field `cont` in pool // did you mean `count`?",
        ),
        (
            with_pool!("    lables: {a: b}\n"),
            "7:5: unknown field `lables` // did you mean `labels`?",
        ),
        (
            with_pool!("    flavour: big\n"),
            "7:5: unknown field `flavour` in pool // valid fields are `name`, `count`, `size`",
        ),
        (with_pool!("pool: x\n"), "7:1: unknown field `pool` // did you mean `pools`?"),
        (
            concat!("apiversion: gantry/v1\n", "name: demo\nprovider: local\npools: [{name: a, count: 1}]\n"),
            "1:1: unknown field `apiversion` in the spec // did you mean `apiVersion`?
             1:1: missing required field `apiVersion`",
        ),
        // Wrong types point at the value.
        (
            head!("pools:\n  - name: db\n    count: three\n"),
            "6:12: invalid type for `count`: expected an integer, found a string \"three\"",
        ),
        (
            head!("pools:\n  - name: db\n    count: \"3\"\n"),
            "6:12: expected an integer, found a string \"3\" // without quotes",
        ),
        (head!("pools:\n  - name: db\n    count: 1.5\n"), "6:12: expected an integer, found a number"),
        (head!("pools:\n  - name: db\n    count:\n"), "6:5: expected an integer, found nothing"),
        (head!("pools: {name: db}\n"), "4:8: invalid type for `pools`: expected a list"),
        (head!("pools:\n  - db\n"), "5:5: invalid type for `pools`: expected a mapping"),
        (with_pool!("    size: [a]\n"), "7:11: invalid type for `size`: expected a string, found a list"),
        (with_pool!("    labels: [a]\n"), "7:13: invalid type for `labels`: expected a mapping"),
        (with_pool!("    labels: {a: [b]}\n"), "7:17: invalid type for `a`: expected a string"),
        (with_pool!("    labels: {? [a] : b}\n"), "7:16: keys of `labels` must be strings"),
        (with_pool!("ssh: alice\n"), "7:6: invalid type for `ssh`: expected a mapping"),
        // Counts.
        (head!("pools:\n  - name: db\n    count: 0\n"), "6:12: `count` must be at least 1, found 0"),
        (head!("pools:\n  - name: db\n    count: -2\n"), "6:12: must be at least 1, found -2"),
        (head!("pools:\n  - name: db\n    count: 1001\n"), "6:12: must be at most 1000"),
        (
            head!("pools:\n  - name: db\n    count: 99999999999999999999999999999999999999999\n"),
            "6:12: must be at most 1000",
        ),
        // Names.
        ("apiVersion: gantry/v1\nname: Demo\nprovider: local\npools: [{name: a, count: 1}]\n",
            "2:7: invalid cluster name \"Demo\": must start with a lowercase letter // lowercase letters"),
        ("apiVersion: gantry/v1\nname: demo-\nprovider: local\npools: [{name: a, count: 1}]\n",
            "2:7: must not end with '-'"),
        ("apiVersion: gantry/v1\nname: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nprovider: local\npools: [{name: a, count: 1}]\n",
            "2:7: must be at most 30 characters"),
        (head!("pools: [{name: db_1, count: 1}]\n"), "4:16: invalid pool name \"db_1\": contains '_'"),
        (head!("pools: [{name: 7, count: 1}]\n"), "4:16: invalid pool name \"7\""),
        (
            head!("pools:\n  - name: db\n    count: 1\n  - name: web\n    count: 1\n  - name: db\n    count: 2\n"),
            "9:11: duplicate pool name `db` (first defined on line 5) // unique",
        ),
        // Providers.
        (
            "apiVersion: gantry/v1\nname: demo\nprovider: {gcpx: {}}\npools: [{name: a, count: 1}]\n",
            "3:12: unknown provider `gcpx` // known providers: `local`",
        ),
        (
            "apiVersion: gantry/v1\nname: demo\nprovider: {}\npools: [{name: a, count: 1}]\n",
            "3:11: `provider` names no provider",
        ),
        (
            "apiVersion: gantry/v1\nname: demo\nprovider: {local: {}, gcp: {}}\npools: [{name: a, count: 1}]\n",
            "3:23: exactly one key",
        ),
        (
            "apiVersion: gantry/v1\nname: demo\nprovider:\n  local:\n    port: 22\npools: [{name: a, count: 1}]\n",
            "5:5: unknown field `port` in the local provider options // `ssh_port`",
        ),
        (
            "apiVersion: gantry/v1\nname: demo\nprovider: {local: {ssh_port: 70000}}\npools: [{name: a, count: 1}]\n",
            "3:30: `ssh_port` must be at most 65535",
        ),
        (
            "apiVersion: gantry/v1\nname: demo\nprovider:\npools: [{name: a, count: 1}]\n",
            "3:1: invalid type for `provider`: expected a provider name",
        ),
        // Missing required fields point at the enclosing mapping.
        ("pools: [{name: a, count: 1}]\n", "1:1: missing required field `apiVersion`
                                          1:1: missing required field `name`
                                          1:1: missing required field `provider`"),
        (head!(), "1:1: missing required field `pools` in the spec // add `pools: ...`"),
        (head!("pools:\n  - {count: 1}\n"), "5:5: missing required field `name` in pool"),
        (head!("pools: []\n"), "4:8: `pools` must not be empty"),
        // Duplicate keys.
        (with_pool!("name: again\n"), "7:1: duplicate key `name` (first defined on line 2)"),
        (head!("pools:\n  - name: db\n    count: 3\n    count: 4\n"), "7:5: duplicate key `count` (first defined on line 6)"),
        // Other top-level fields.
        ("apiVersion: gantry/v2\nname: demo\nprovider: local\npools: [{name: a, count: 1}]\n",
            "1:13: unsupported apiVersion \"gantry/v2\" // use `apiVersion: gantry/v1`"),
        (with_pool!("lifetime: 12x\n"), "7:11: invalid lifetime \"12x\" // `12h`"),
        (with_pool!("lifetime: 12\n"), "7:11: invalid lifetime \"12\""),
        (with_pool!("lifetime: 0s\n"), "7:11: `lifetime` must be greater than zero"),
        // Bounded (`9000y` overflowed the expiry and panicked); the maximum itself is fine.
        (with_pool!("lifetime: 9000y\n"), "7:11: `lifetime` 9000y is longer than the maximum of 10y // at most `10y`"),
        (with_pool!("lifetime: 10y 1s\n"), "7:11: longer than the maximum of 10y"),
        (with_pool!("lifetime: 10y\n"), "ok"),
        (with_pool!("readiness: ping\n"), "7:12: unknown readiness `ping` // `ssh`"),
        (with_pool!("ssh: {usr: bob}\n"), "7:7: unknown field `usr` in `ssh` // did you mean `user`?"),
        (with_pool!("ssh: {user: \"bob smith\"}\n"), "7:6: invalid ssh user"),
        // Network rules.
        (with_pool!("network:\n  allow:\n    - {port: 0, from: caller}\n"), "9:14: `port` must be at least 1"),
        (with_pool!("network:\n  allow:\n    - {port: 65536, from: caller}\n"), "9:14: `port` must be at most 65535"),
        (with_pool!("network:\n  allow:\n    - {port: ssh, from: caller}\n"), "9:14: expected an integer"),
        (with_pool!("network:\n  allow:\n    - {port: 22, from: anywhere}\n"), "9:24: invalid `from` \"anywhere\" // `caller`"),
        (with_pool!("network:\n  allow:\n    - {port: 22, from: 10.0.0.1/8}\n"), "9:24: host bits set // did you mean `10.0.0.0/8`?"),
        (with_pool!("network:\n  allow:\n    - {port: 22, from: 10.0.0.0/33}\n"), "9:24: invalid prefix length \"33\""),
        (with_pool!("network:\n  allow:\n    - {port: 22, from: 10.0.0.300/8}\n"), "9:24: invalid address \"10.0.0.300\""),
        (with_pool!("network:\n  allow:\n    - {port: 22, from: 1.2.3.4}\n"), "9:24: not a cidr // `1.2.3.4/32`"),
        (with_pool!("network:\n  allow:\n    - {port: 22, from: \"fe80::1/64\"}\n"), "9:24: host bits set // `fe80::/64`"),
        (with_pool!("network:\n  allow:\n    - {port: 22}\n"), "9:7: missing required field `from` in allow rule"),
        (with_pool!("network:\n  allow:\n    - {port: 22, form: caller}\n"), "9:7: missing required field `from`
                                                                              9:18: unknown field `form` // did you mean `from`?"),
        (with_pool!("network:\n  deny: []\n"), "8:3: unknown field `deny` in `network` // valid fields are `allow`"),
        (with_pool!("network:\n  allow: {port: 22}\n"), "8:10: invalid type for `allow`: expected a list"),
        // Tags.
        (with_pool!("tags: {gantry-owner: me}\n"), "7:8: tag key `gantry-owner` uses the reserved prefix `gantry-`"),
        (with_pool!("tags: {team: [a, b]}\n"), "7:14: invalid type for `team`: expected a string"),
        // Every problem is reported, sorted by position.
        (
            "apiVersion: gantry/v9\nname: Demo\nprovider: {gcpx: {}}\nlifetime: soon\npools:\n  - name: db\n    cont: 3\n  - name: db\n    count: 0\ntags: {gantry-x: y}\n",
            "1:13: unsupported apiVersion
             2:7: invalid cluster name
             3:12: unknown provider `gcpx`
             4:11: invalid lifetime
             6:5: missing required field `count`
             7:5: unknown field `cont`
             8:11: duplicate pool name `db` (first defined on line 6)
             9:12: must be at least 1
             10:8: reserved prefix",
        ),
    ];
    for (input, expect) in cases {
        check(input, expect);
    }
}

#[test]
fn minimal_spec_gets_defaults() {
    let spec = parse(MINIMAL).unwrap();
    assert_eq!(spec.name, "demo");
    assert_eq!(spec.provider, local(None));
    assert_eq!(spec.lifetime, DEFAULT_LIFETIME);
    assert_eq!(spec.readiness, Readiness::Ssh);
    assert_eq!(spec.ssh_user, None);
    assert!(spec.network.allow.is_empty());
    assert!(spec.tags.is_empty());
    assert_eq!(spec.pools.len(), 1);
    let pool = &spec.pools[0];
    assert_eq!((pool.name.as_str(), pool.count), ("db", 1));
    assert_eq!(
        (pool.size.as_str(), pool.image.as_str()),
        ("small", "default")
    );
    assert!(pool.labels.is_empty());
}

#[test]
fn full_spec_fills_every_field() {
    let spec = parse(FULL).unwrap();
    assert_eq!(spec.name, "demo-2");
    assert_eq!(spec.provider, local(Some(2200)));
    assert_eq!(spec.lifetime, Duration::from_secs(4 * 3600 + 30 * 60));
    assert_eq!(spec.readiness, Readiness::Api);
    assert_eq!(spec.ssh_user.as_deref(), Some("alice"));
    assert_eq!(spec.node_count(), 5);
    let db = &spec.pools[0];
    assert_eq!(
        (db.name.as_str(), db.count, db.size.as_str()),
        ("db", 3, "medium")
    );
    assert_eq!(db.image, "debian-12");
    assert_eq!(db.labels["role"], "db");
    assert_eq!(db.labels["tier"], "1");
    assert_eq!(spec.pools[1].name, "web");
    assert_eq!(spec.pools[1].size, "small");
    let rule = |port: u16, from: &str| AllowRule {
        port,
        from: from.into(),
    };
    assert_eq!(
        spec.network.allow,
        vec![
            rule(5432, "10.0.0.0/8"),
            rule(22, "caller"),
            rule(8080, "cluster"),
            rule(443, "2001:db8::/32"),
        ]
    );
    assert_eq!(spec.tags["team"], "storage");
    assert_eq!(spec.tags["cost-center"], "42");
}

#[test]
fn anchors_and_aliases_are_expanded() {
    let text = head!(
        "pools:\n  - &p {name: a, count: 2, labels: &l {x: y}}\n  - {name: b, count: 1, labels: *l}\n"
    );
    let spec = parse(text).unwrap();
    assert_eq!(spec.pools[1].labels, spec.pools[0].labels);
}

#[test]
fn hash_ignores_layout_but_not_content() {
    let a = "apiVersion: gantry/v1\nname: demo\nprovider: local\npools:\n  - name: db\n    count: 3\n    labels: {a: '1', b: '2'}\ntags: {x: y, z: w}\n";
    let b = "# same spec, other layout\ntags:\n  z: w\n  x: y\npools: [ { count: 3, labels: {b: \"2\", a: \"1\"}, name: db } ]\nprovider: {local: {}}\nname:   demo\napiVersion: \"gantry/v1\"\nlifetime: 12h\n";
    let c = a.replace("count: 3", "count: 4");
    let hash = |t: &str| parse(t).unwrap().hash();
    assert_eq!(hash(a), hash(b));
    assert_eq!(hash(a), hash(a));
    assert_ne!(hash(a), hash(&c));
}

#[test]
fn render_error_points_like_rustc() {
    let text = head!("pools:\n  - name: db\n    cont: 3\n");
    let err = spec::parse("demo.yaml", text, &[&StubLocal]).unwrap_err();
    let expected = "\
demo.yaml:5:5: error: missing required field `count` in pool
  |
5 |   - name: db
  |     ^
  hint: add `count: ...` to this mapping

demo.yaml:6:5: error: unknown field `cont` in pool
  |
6 |     cont: 3
  |     ^
  hint: did you mean `count`?
";
    assert_eq!(render_error(&err, text), expected);
    // Display stays one line per item plus its hint.
    assert_eq!(
        err.to_string(),
        "demo.yaml:5:5: missing required field `count` in pool\n  hint: add `count: ...` to this mapping\n\
         demo.yaml:6:5: unknown field `cont` in pool\n  hint: did you mean `count`?"
    );
}

#[test]
fn render_error_keeps_tabs_aligned_and_survives_eof_positions() {
    let err = gantry_core::SpecError {
        file: "t.yaml".into(),
        items: vec![
            gantry_core::SpecErrorItem {
                line: 1,
                column: 3,
                message: "m".into(),
                hint: None,
            },
            gantry_core::SpecErrorItem {
                line: 9,
                column: 1,
                message: "far".into(),
                hint: Some("h".into()),
            },
        ],
    };
    let out = render_error(&err, "\tab: c\n");
    assert!(out.contains("1 | \tab: c\n  | \t ^\n"), "{out}");
    assert!(out.contains("t.yaml:9:1: error: far\n  hint: h\n"), "{out}");
}
