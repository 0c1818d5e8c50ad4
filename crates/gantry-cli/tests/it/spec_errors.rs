//! Invalid specs: `validate` reports each problem at FILE:LINE:COL with a hint and exits 2;
//! `up` with an invalid spec creates nothing.

use crate::support::*;

struct Case {
    file: &'static str,
    yaml: &'static str,
    /// (line, column, words of the message)
    want: &'static [(usize, usize, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        file: "unknown-field.yaml",
        yaml: "apiVersion: gantry/v1\nname: demo\nprovider: local\ncolour: red\npools:\n  - name: db\n    count: 1\n",
        want: &[(4, 1, "unknown field `colour`")],
    },
    Case {
        file: "count-zero.yaml",
        yaml: "apiVersion: gantry/v1\nname: demo\nprovider: local\npools:\n  - name: db\n    count: 0\n",
        want: &[(6, 12, "`count` must be at least 1")],
    },
    Case {
        file: "duplicate-pool.yaml",
        yaml: "apiVersion: gantry/v1\nname: demo\nprovider: local\npools:\n  - name: db\n    count: 1\n  - name: db\n    count: 2\n",
        want: &[(7, 11, "duplicate pool name `db`")],
    },
    Case {
        file: "bad-name.yaml",
        yaml: "apiVersion: gantry/v1\nname: Bad_Name\nprovider: local\npools:\n  - name: db\n    count: 1\n",
        want: &[(2, 7, "invalid cluster name \"Bad_Name\"")],
    },
    Case {
        file: "unknown-provider.yaml",
        yaml: "apiVersion: gantry/v1\nname: demo\nprovider: aws2\npools:\n  - name: db\n    count: 1\n",
        want: &[(3, 11, "unknown provider `aws2`")],
    },
    Case {
        file: "two-problems.yaml",
        yaml: "apiVersion: gantry/v1\nname: demo\nprovider: aws2\npools:\n  - name: db\n    count: 0\n",
        want: &[
            (3, 11, "unknown provider `aws2`"),
            (6, 12, "`count` must be at least 1"),
        ],
    },
];

#[test]
fn validate_reports_every_problem_with_location_and_hint() {
    let g = Gantry::new();
    let good = g.simple_spec("good", 2);
    let out = g.run(&["validate", "-f", good.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("ok"), "{}", out.stdout);
    let v = g
        .run(&["validate", "-f", good.to_str().unwrap(), "--output", "json"])
        .ok()
        .json();
    assert_eq!(v["valid"], true);

    for case in CASES {
        let path = g.spec(case.file, "demo", case.yaml);
        let p = path.to_str().unwrap();
        let out = g.run(&["validate", "-f", p]).expect(2);
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.contains(": error: "))
            .collect();
        assert_eq!(
            errors.len(),
            case.want.len(),
            "{}: one error line per problem:\n{}",
            case.file,
            out.stderr
        );
        for (line, col, words) in case.want {
            let at = format!("{p}:{line}:{col}: error: ");
            assert!(
                errors
                    .iter()
                    .any(|l| l.starts_with(&at) && l.contains(words)),
                "{}: want `{at}...{words}` in:\n{}",
                case.file,
                out.stderr
            );
        }
        let hints = out
            .stderr
            .lines()
            .filter(|l| l.trim_start().starts_with("hint: "))
            .count();
        assert!(
            hints >= case.want.len(),
            "{}: a hint per problem:\n{}",
            case.file,
            out.stderr
        );
        assert!(
            out.stderr
                .contains(&format!("{} problem(s) in the spec", case.want.len())),
            "{}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "nothing on stdout: {}", out.stdout);

        // `up` refuses the same spec before touching anything.
        g.run(&["up", "-f", p]).expect(2);
        assert!(
            !g.home().join("local").exists(),
            "{}: up with an invalid spec created {}",
            case.file,
            g.home().join("local").display()
        );
    }
    g.run(&[
        "plan",
        "-f",
        g.work().join("count-zero.yaml").to_str().unwrap(),
    ])
    .expect(2);
    let missing = g.work().join("missing.yaml");
    g.run(&["validate", "-f", missing.to_str().unwrap()])
        .expect(2);
    let ls = g.run(&["ls", "--output", "json"]).ok().json();
    assert_eq!(ls, serde_json::json!([]));
}
