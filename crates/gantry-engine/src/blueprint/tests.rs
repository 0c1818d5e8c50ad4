//! Unit tests of validation, expansion, ordering and hashing (no nodes needed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::expand::{self, Context, Instance, NodeView};
use super::render::ClusterView;
use super::*;

fn loaded(yaml: &str, files: &[(&str, &str)]) -> Loaded {
    let mut f: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    f.insert("blueprint.yaml".into(), yaml.as_bytes().to_vec());
    let blueprint = gantry_core::blueprint::parse("t/blueprint.yaml", yaml)
        .map_err(|e| e.to_string())
        .unwrap();
    Loaded {
        blueprint,
        origin: "t".into(),
        file: "t/blueprint.yaml".into(),
        files: f,
    }
}

fn spec(count: u32, bp_params: &str) -> (ClusterSpec, String) {
    let text = format!(
        "apiVersion: gantry/v1\nname: demo\nprovider: local\npools:\n  - {{name: db, count: {count}}}\nblueprints:\n  - path: ./t\n    params: {bp_params}\n"
    );
    (
        gantry_provider::testkit::parse_spec("spec.yaml", &text).unwrap(),
        text,
    )
}

fn nodes(n: u32) -> Vec<NodeView> {
    (1..=n)
        .map(|i| NodeView {
            name: format!("demo-db-{i}"),
            pool: "db".into(),
            index: i,
            address: format!("127.0.0.{i}"),
            created_at: format!("t{i}"),
        })
        .collect()
}

const BP: &str = r#"
name: t
params:
  greeting: {type: string, default: hi}
  port: {type: int, default: 80, min: 1, max: 65535}
steps:
  - id: peers
    template: {src: peers.j2, dest: peers.txt}
  - id: greet
    template: {src: greet.j2, dest: greet.txt}
  - id: start
    after: [greet]
    run: "echo {{ params.port }}\n"
  - id: roll
    after: [start]
    target: each
    run: "echo roll\n"
  - id: init
    after: [start]
    target: first
    run: "echo init\n"
"#;

const FILES: &[(&str, &str)] = &[
    (
        "peers.j2",
        "{% for n in nodes %}{{ n.name }} {{ n.address }}\n{% endfor %}",
    ),
    ("greet.j2", "{{ params.greeting }} from {{ node.name }}\n"),
];

fn expand_with(params: &str, n: u32) -> Vec<Instance> {
    let (spec, _) = spec(n, params);
    let prepared = prepare(&spec, "spec.yaml", vec![loaded(BP, FILES)]).unwrap();
    let views = nodes(n);
    let cluster = ClusterView {
        name: "demo".into(),
        project: "default".into(),
        uid: "u".into(),
    };
    let none = BTreeMap::new();
    let cx = Context {
        cluster: &cluster,
        nodes: &views,
        members: &[],
        artifacts: &none,
        placeholder_artifacts: None,
        blueprints: &[],
        secrets: &Default::default(),
    };
    expand::expand_one(&prepared[0], &cx, None).unwrap()
}

fn by_key(v: &[Instance]) -> BTreeMap<String, Instance> {
    v.iter().map(|i| (i.key.clone(), i.clone())).collect()
}

#[test]
fn targets_and_after_order_instances() {
    let inst = expand_with("{}", 3);
    let m = by_key(&inst);
    // `first` runs once, on node 1, after start on node 1 only (start runs there).
    let init: Vec<_> = inst.iter().filter(|i| i.step == "init").collect();
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].node, "demo-db-1");
    assert_eq!(init[0].after, [m["bp/t/start@demo-db-1"].id.clone()]);
    // `each` chains in node order.
    let r2 = &m["bp/t/roll@demo-db-2"];
    assert!(r2.after.contains(&m["bp/t/roll@demo-db-1"].id));
    assert!(r2.after.contains(&m["bp/t/start@demo-db-2"].id));
    let r3 = &m["bp/t/roll@demo-db-3"];
    assert!(r3.after.contains(&m["bp/t/roll@demo-db-2"].id));
    assert!(
        !m["bp/t/roll@demo-db-1"]
            .after
            .iter()
            .any(|a| a.contains("roll"))
    );
    // Instances come out in dependency order.
    let pos = |k: &str| inst.iter().position(|i| i.key == k).unwrap();
    assert!(pos("bp/t/greet@demo-db-1") < pos("bp/t/start@demo-db-1"));
    assert!(pos("bp/t/roll@demo-db-1") < pos("bp/t/roll@demo-db-3"));
    // Rendering is per node.
    match &m["bp/t/greet@demo-db-2"].action {
        Rendered::Write { content, dest, .. } => {
            assert_eq!(String::from_utf8_lossy(content), "hi from demo-db-2\n");
            assert_eq!(dest, "greet.txt");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn cross_node_after_waits_for_every_instance() {
    let bp = "name: t\nsteps:\n  - id: a\n    target: first\n    run: \"echo a\\n\"\n  - id: b\n    after: [a]\n    run: \"echo b\\n\"\n";
    let (spec, _) = spec(3, "{}");
    let prepared = prepare(&spec, "spec.yaml", vec![loaded(bp, &[])]).unwrap();
    let views = nodes(3);
    let cluster = ClusterView {
        name: "demo".into(),
        project: "p".into(),
        uid: "u".into(),
    };
    let none = BTreeMap::new();
    let cx = Context {
        cluster: &cluster,
        nodes: &views,
        members: &[],
        artifacts: &none,
        placeholder_artifacts: None,
        blueprints: &[],
        secrets: &Default::default(),
    };
    let inst = expand::expand_one(&prepared[0], &cx, Some("bp/x/done")).unwrap();
    let m = by_key(&inst);
    let a = &m["bp/t/a@demo-db-1"];
    assert_eq!(
        a.after,
        ["bp/x/done"],
        "roots wait for the previous blueprint"
    );
    for n in 1..=3 {
        let b = &m[&format!("bp/t/b@demo-db-{n}")];
        assert_eq!(b.after, std::slice::from_ref(&a.id));
    }
    // On node 1, b depends on a's hash; on node 2 only on its order.
    let b1 = &m["bp/t/b@demo-db-1"];
    let b2 = &m["bp/t/b@demo-db-2"];
    assert_ne!(b1.hash, b2.hash);
}

#[test]
fn hashes_change_only_where_inputs_change() {
    let base = by_key(&expand_with("{}", 3));
    let again = by_key(&expand_with("{}", 3));
    assert_eq!(base, again, "expansion is deterministic");
    // A param used by `greet` re-runs greet and what depends on it on each node.
    let edited = by_key(&expand_with("{greeting: hello}", 3));
    for (k, i) in &base {
        let changed = edited[k].hash != i.hash;
        let expect = !k.starts_with("bp/t/peers@");
        assert_eq!(changed, expect, "{k}");
    }
    // Growing: old nodes keep their hashes except for the step rendering the node list.
    let grown = by_key(&expand_with("{}", 4));
    for (k, i) in &base {
        let changed = grown[k].hash != i.hash;
        assert_eq!(changed, k.starts_with("bp/t/peers@"), "{k}");
    }
    assert!(grown.contains_key("bp/t/roll@demo-db-4"));
    assert!(
        grown["bp/t/roll@demo-db-4"]
            .after
            .contains(&grown["bp/t/roll@demo-db-3"].id)
    );
    // The id carries the hash.
    let i = &base["bp/t/start@demo-db-1"];
    assert_eq!(i.id, format!("{}#{}", i.key, &i.hash[..12]));
    assert_eq!(
        expand::split_id(&i.id),
        Some((i.key.as_str(), &i.hash[..12]))
    );
}

#[test]
fn members_are_nodes_with_every_step_done() {
    let l = loaded(BP, FILES);
    let views = nodes(3);
    let mut done = BTreeSet::new();
    for s in ["peers", "greet", "start", "roll", "init"] {
        done.insert(expand::key("t", s, "demo-db-1"));
    }
    for s in ["peers", "greet", "start", "roll"] {
        done.insert(expand::key("t", s, "demo-db-2"));
    }
    done.insert(expand::key("t", "peers", "demo-db-3"));
    let m: Vec<String> = expand::members(&l.blueprint, &views, &done)
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(m, ["demo-db-1", "demo-db-2"]);
}

fn prepare_err(bp: &str, files: &[(&str, &str)], params: &str) -> String {
    let (spec, _) = spec(2, params);
    match prepare(&spec, "spec.yaml", vec![loaded(bp, files)]) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn validation_names_file_line_and_column() {
    let e = prepare_err(BP, FILES, "{greting: x}");
    assert!(
        e.contains("spec.yaml:8:14") && e.contains("unknown param `greting`"),
        "{e}"
    );
    let e = prepare_err(BP, FILES, "{port: \"80\"}");
    assert!(
        e.contains("spec.yaml:8:20") && e.contains("must be an integer"),
        "{e}"
    );
    let e = prepare_err(BP, FILES, "{port: 70000}");
    assert!(e.contains("at most 65535"), "{e}");
    let e = prepare_err(
        "name: t\nparams:\n  need: {type: string}\nsteps: []\n",
        &[],
        "{}",
    );
    assert!(
        e.contains("spec.yaml:7:5") && e.contains("needs the param `need`"),
        "{e}"
    );
    // Strict undefined: a template using an unknown variable fails at its line.
    let e = prepare_err(
        "name: t\nsteps:\n  - id: a\n    template: {src: x.j2, dest: x}\n",
        &[("x.j2", "ok\n{{ params.nope }}\n")],
        "{}",
    );
    assert!(e.contains("t/x.j2:2:") && e.contains("undefined"), "{e}");
    // Syntax errors in inline templates point into blueprint.yaml.
    let e = prepare_err(
        "name: t\nsteps:\n  - id: a\n    wait: {tcp: \"{{ node.address \"}\n",
        &[],
        "{}",
    );
    assert!(
        e.contains("t/blueprint.yaml:4:") && e.contains("template error"),
        "{e}"
    );
    // Unknown pool and missing files.
    let e = prepare_err(
        "name: t\nsteps:\n  - id: a\n    target: pool:web\n    run: nothere.sh\n",
        &[],
        "{}",
    );
    assert!(
        e.contains("t/blueprint.yaml:4:13") && e.contains("pool `web`"),
        "{e}"
    );
    assert!(e.contains("nothere.sh"), "{e}");
}

#[test]
fn cycles_are_rejected_by_the_loader() {
    let yaml = "name: t\nsteps:\n  - id: a\n    after: [c]\n    run: \"x\\n\"\n  - id: b\n    after: [a]\n    run: \"x\\n\"\n  - id: c\n    after: [b]\n    run: \"x\\n\"\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blueprint.yaml"), yaml).unwrap();
    let e = load::dir(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("blueprint.yaml:3:") && e.contains("a -> c -> b -> a"),
        "{e}"
    );
}

#[test]
fn the_builtin_hello_is_embedded_and_valid() {
    assert!(builtin::names().contains(&"hello"));
    let l = load::builtin("hello").unwrap();
    let text = "apiVersion: gantry/v1\nname: demo\nprovider: local\npools: [{name: db, count: 3}]\nblueprints: [{name: hello}]\n";
    let spec = gantry_provider::testkit::parse_spec("s.yaml", text).unwrap();
    let p = prepare(&spec, "s.yaml", vec![l]).unwrap();
    assert_eq!(p[0].params["greeting"], serde_json::json!("hello"));
    let _ = Arc::clone(&p[0].loaded);
}

/// A blueprint with a secret, used by the secret tests: `{STEPS}` is replaced.
const SECRET_BP: &str = "name: t\nparams:\n  pw: {type: secret}\noutputs:\n  user: admin\n  url: {value: \"x://admin:{{ params.pw }}@{{ nodes[0].address }}\", description: the url}\n  pw: {value: \"{{ params.pw }}\", secret: true}\nsteps:\n{STEPS}";

fn secret_bp(steps: &str) -> String {
    SECRET_BP.replace("{STEPS}", steps)
}

fn expand_secret(steps: &str, files: &[(&str, &str)], pw: &str) -> Vec<Instance> {
    let (spec, _) = spec(2, "{}");
    let prepared = prepare(&spec, "spec.yaml", vec![loaded(&secret_bp(steps), files)]).unwrap();
    let views = nodes(2);
    let cluster = ClusterView {
        name: "demo".into(),
        project: "p".into(),
        uid: "u".into(),
    };
    let none = BTreeMap::new();
    let secrets: secrets::SecretValues = BTreeMap::from([(
        "t".to_string(),
        BTreeMap::from([("pw".to_string(), gantry_core::secret::Secret::new(pw))]),
    )]);
    let cx = Context {
        cluster: &cluster,
        nodes: &views,
        members: &[],
        artifacts: &none,
        placeholder_artifacts: None,
        blueprints: &[],
        secrets: &secrets,
    };
    expand::expand_one(&prepared[0], &cx, None).unwrap()
}

#[test]
fn a_spec_cannot_set_a_secret_param() {
    let e = prepare_err(
        &secret_bp("  - id: a\n    run: \"echo\\n\"\n"),
        &[],
        "{pw: hunter2}",
    );
    assert!(
        e.contains("spec.yaml:8:14") && e.contains("param `pw` of blueprint `t` is a secret"),
        "{e}"
    );
    assert!(
        !e.contains("needs the param"),
        "a secret is not required: {e}"
    );
}

#[test]
fn secrets_never_reach_a_command_line_or_a_readable_file() {
    // A `wait: command` is a command line.
    let e = prepare_err(
        &secret_bp("  - id: a\n    wait: {command: \"redis-cli -a {{ params.pw }} ping\"}\n"),
        &[],
        "{}",
    );
    assert!(
        e.contains("t/blueprint.yaml:10:21") && e.contains("renders a secret param"),
        "{e}"
    );
    assert!(e.contains("/proc/PID/cmdline"), "{e}");
    // So is a `dest` path (gantry's mkdir/cat/mv), even reached through another variable.
    let e = prepare_err(
        &secret_bp("  - id: a\n    template: {src: c.j2, dest: \"conf/{{ params['pw'] }}\"}\n"),
        &[("c.j2", "x\n")],
        "{}",
    );
    assert!(
        e.contains("t/blueprint.yaml:10:33") && e.contains("`dest` of step `a`"),
        "{e}"
    );
    // A template rendering a secret with a mode others can read.
    let e = prepare_err(
        &secret_bp("  - id: a\n    template: {src: c.j2, dest: c, mode: \"0644\"}\n"),
        &[("c.j2", "pass {{ params.pw }}\n")],
        "{}",
    );
    assert!(
        e.contains("t/blueprint.yaml:10:42") && e.contains("mode 0644"),
        "{e}"
    );
    // Another blueprint's secret counts too (`blueprints` in templates).
    let e = prepare_err(
        &secret_bp(
            "  - id: a\n    wait: {command: \"{% for b in blueprints %}{{ b.params.pw }}{% endfor %}\"}\n",
        ),
        &[],
        "{}",
    );
    assert!(e.contains("renders a secret param"), "{e}");

    // Without a mode the file is written 0600; 0600/0400 are kept; a script may hold it.
    let pw = "Zq8d0S1xgT3v9cKpLm2NwY7rHbF4aE6u";
    let inst = expand_secret(
        "  - id: a\n    template: {src: c.j2, dest: c}\n  - id: b\n    template: {src: c.j2, dest: d, mode: \"0400\"}\n  - id: p\n    template: {src: p.j2, dest: p}\n  - id: s\n    run: \"echo {{ params.pw }}\\n\"\n",
        &[("c.j2", "pass {{ params.pw }}\n"), ("p.j2", "public\n")],
        pw,
    );
    let m = by_key(&inst);
    let mode = |k: &str| match &m[k].action {
        Rendered::Write { mode, content, .. } => {
            (*mode, String::from_utf8_lossy(content).into_owned())
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        mode("bp/t/a@demo-db-1"),
        (Some(0o600), format!("pass {pw}\n"))
    );
    assert_eq!(mode("bp/t/b@demo-db-1").0, Some(0o400));
    assert_eq!(
        mode("bp/t/p@demo-db-1").0,
        None,
        "no secret, no forced mode"
    );
    assert!(
        matches!(&m["bp/t/s@demo-db-1"].action, Rendered::Run { script } if script.contains(pw))
    );
}

#[test]
fn outputs_render_with_the_cluster_and_secret_ones_are_marked() {
    let (spec, _) = spec(2, "{}");
    let bp = secret_bp("  - id: a\n    run: \"echo\\n\"\n");
    let prepared = prepare(&spec, "spec.yaml", vec![loaded(&bp, &[])]).unwrap();
    let pw = gantry_core::secret::Secret::new("Zq8d0S1xgT3v9cKpLm2NwY7rHbF4aE6u");
    let secrets: secrets::SecretValues = BTreeMap::from([(
        "t".to_string(),
        BTreeMap::from([("pw".to_string(), pw.clone())]),
    )]);
    let cluster = ClusterView {
        name: "demo".into(),
        project: "p".into(),
        uid: "u".into(),
    };
    let out = expand::render_all_outputs(&prepared, &cluster, &nodes(2), &secrets).unwrap();
    let t = &out["t"];
    assert_eq!(t["user"].value, "admin");
    assert!(!t["user"].secret);
    // Renders the secret, so secret although it does not say so.
    assert_eq!(
        t["url"].value,
        format!("x://admin:{}@127.0.0.1", pw.expose())
    );
    assert!(t["url"].secret);
    assert_eq!(t["url"].description, "the url");
    assert!(t["pw"].secret);
    assert_eq!(t["pw"].shown(false), gantry_core::secret::MASK);
    assert_eq!(t["pw"].shown(true), pw.expose());

    // A broken output template fails validation at its line.
    let e = prepare_err(
        "name: t\nsteps: []\noutputs:\n  a: \"{{ node.name }}\"\n",
        &[],
        "{}",
    );
    assert!(
        e.contains("t/blueprint.yaml:4:6") && e.contains("output `a`"),
        "{e}"
    );
}
