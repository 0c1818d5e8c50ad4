//! The AWS provider as a plug-in ([`AwsKind`]): its spec section (see [`crate::options`]), the
//! provider of a spec, and its listing scopes: one per region (and endpoint) a recorded cluster
//! names, plus the regions of `GANTRY_AWS_REGIONS` and of the caller (`ls --region`). A region
//! that cannot be listed is a warning naming it; the others still list.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use gantry_core::ClusterSpec;
use gantry_core::reader::{Node, Pos, Reader};
use gantry_provider::cloud::names::{is_place_name, split_names};
use gantry_provider::registry::{
    self, BuildEnv, OnError, ProviderKind, ProviderOptions, ProviderSection, RecordedCluster,
    Scope, Warning,
};
use gantry_provider::{Provider, ProviderError};

use crate::options::{self, AwsOptions};
use crate::{AwsConfig, AwsProvider};

/// The environment variable naming regions to list besides the recorded ones (comma-separated).
pub const REGIONS_ENV: &str = "GANTRY_AWS_REGIONS";

/// The SDK's endpoint overrides (EC2's own first). Read only to key the cache, so that a listing
/// of an emulator is never served for the real region or the other way round.
const ENDPOINT_ENV: &[&str] = &["AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"];

/// How long one region's listing may take before it is given up with a warning.
const REGION_TIMEOUT: Duration = Duration::from_secs(120);

/// One AWS listing: a region, through the endpoint a tracked cluster's spec names (`None`: the
/// SDK's default, which honours `AWS_ENDPOINT_URL`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AwsTarget {
    pub region: String,
    pub endpoint: Option<String>,
}

/// The AWS listings to make: one per region (and endpoint) of a tracked cluster, plus one per
/// `named` region that no tracked cluster already covers (with the default endpoint). Sorted and
/// unique. Names that cannot be regions come back apart, once each, for a warning.
pub fn aws_targets(
    tracked: impl IntoIterator<Item = AwsTarget>,
    named: &[String],
) -> (Vec<AwsTarget>, Vec<String>) {
    let mut set: BTreeSet<AwsTarget> = tracked.into_iter().collect();
    let mut bad: Vec<String> = Vec::new();
    for n in named {
        if !is_place_name(n) {
            if !bad.contains(n) {
                bad.push(n.clone());
            }
        } else if !set.iter().any(|t| &t.region == n) {
            set.insert(AwsTarget {
                region: n.clone(),
                endpoint: None,
            });
        }
    }
    (set.into_iter().collect(), bad)
}

/// The cache key of a listing: `aws:REGION`, plus `@ENDPOINT` when an endpoint override is in
/// effect (the spec's, else the environment's).
pub fn scope_key(t: &AwsTarget, env_endpoint: Option<&str>) -> String {
    match t.endpoint.as_deref().or(env_endpoint) {
        Some(ep) => format!("aws:{}@{ep}", t.region),
        None => format!("aws:{}", t.region),
    }
}

/// The options of an aws spec, in the provider's own type.
pub fn aws_options(spec: &ClusterSpec) -> Result<AwsOptions, ProviderError> {
    spec.provider
        .options
        .to_typed()
        .map_err(|e| registry::options_error("aws", spec, e))
}

/// An AWS provider that only lists: one region, the standard credential chain, the spec's
/// endpoint override if any (else the SDK's own `AWS_ENDPOINT_URL`). For the listing of the
/// whole project, which lists whole regions by the project's tags rather than one cluster.
pub fn region_provider(region: &str, endpoint: Option<&str>) -> AwsProvider {
    AwsProvider::new(AwsConfig {
        options: AwsOptions {
            region: region.into(),
            endpoint: endpoint.map(str::to_owned),
            ..Default::default()
        },
        ssh_user: None,
        pools: vec![],
        static_credentials: None,
    })
}

/// The AWS provider's kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct AwsKind;

impl ProviderSection for AwsKind {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn read_options(&self, r: &mut Reader, at: Pos, o: Option<&Node>) -> Option<ProviderOptions> {
        options::read(r, at, o)
    }

    fn opens_firewall(&self) -> bool {
        true
    }
}

impl ProviderKind for AwsKind {
    fn check_options(&self, spec: &ClusterSpec) -> Result<(), ProviderError> {
        aws_options(spec).map(|_| ())
    }

    /// Its clients are built on first use (no IO here).
    fn build(
        &self,
        spec: &ClusterSpec,
        _env: &BuildEnv,
    ) -> Result<Arc<dyn Provider>, ProviderError> {
        Ok(Arc::new(AwsProvider::new(AwsConfig {
            options: aws_options(spec)?,
            ssh_user: spec.ssh_user.clone(),
            pools: spec
                .pools
                .iter()
                .map(|p| (p.size.clone(), p.image.clone()))
                .collect(),
            static_credentials: None,
        })))
    }

    fn listing_scopes(
        &self,
        clusters: &[RecordedCluster<'_>],
        _env: &BuildEnv,
        named: &[String],
    ) -> (Vec<Scope>, Vec<Warning>) {
        let mut warnings = Vec::new();
        let aws: Vec<(AwsTarget, String)> = clusters
            .iter()
            .filter_map(|c| {
                let o = aws_options(c.spec?).ok()?;
                Some((
                    AwsTarget {
                        region: o.region,
                        endpoint: o.endpoint,
                    },
                    c.name.to_string(),
                ))
            })
            .collect();
        let env_regions = std::env::var(REGIONS_ENV).unwrap_or_default();
        let named = split_names(
            named
                .iter()
                .map(String::as_str)
                .chain([env_regions.as_str()]),
        );
        let (targets, bad) = aws_targets(aws.iter().map(|(t, _)| t.clone()), &named);
        for b in bad {
            warnings.push(Warning {
                region: None,
                message: format!(
                    "`{b}` (from --region or {REGIONS_ENV}) is not an AWS region name; skipped"
                ),
            });
        }
        let env_endpoint = ENDPOINT_ENV
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
        let scopes = targets
            .into_iter()
            .map(|t| Scope {
                key: scope_key(&t, env_endpoint.as_deref()),
                kind: "aws".into(),
                region: Some(t.region.clone()),
                what: format!("AWS region {}", t.region),
                provider: Arc::new(region_provider(&t.region, t.endpoint.as_deref())),
                cacheable: true,
                timeout: Some(REGION_TIMEOUT),
                on_error: OnError::Warn,
                clusters: aws
                    .iter()
                    .filter(|(a, _)| a == &t)
                    .map(|(_, n)| n.clone())
                    .collect(),
            })
            .collect();
        (scopes, warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterSpec, gantry_core::SpecError> {
        gantry_core::spec::parse("spec.yaml", text, &[&AwsKind])
    }

    /// `expect` is `ok`, or one line per expected problem, in order:
    /// `line:col: message-substring` optionally followed by ` // hint-substring`.
    fn check(input: &str, expect: &str) {
        let result = parse(input);
        if expect == "ok" {
            if let Err(e) = result {
                panic!(
                    "expected ok for\n{input}\ngot:\n{}",
                    gantry_core::spec::render_error(&e, input)
                );
            }
            return;
        }
        let err = match result {
            Ok(spec) => panic!("expected errors for\n{input}\ngot ok: {spec:?}"),
            Err(e) => e,
        };
        let rendered = gantry_core::spec::render_error(&err, input);
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

    #[test]
    fn aws_provider_options() {
        let ok = "apiVersion: gantry/v1\nname: demo\nprovider:\n  aws:\n    region: us-east-1\n    zones: [us-east-1a, us-east-1b]\n    vpc: create\n    instance_types: {small: t3.nano}\n    ami: ami-0e1e769742d1cfb49\n    spot: true\n    endpoint: http://127.0.0.1:5000\n    caller_cidr: 203.0.113.7/32\nreadiness: api\npools: [{name: a, count: 1, size: huge}]\n";
        let spec = parse(ok).unwrap();
        let o = aws_options(&spec).unwrap();
        assert_eq!(o.region, "us-east-1");
        assert_eq!(o.zones, ["us-east-1a", "us-east-1b"]);
        assert_eq!(o.vpc.as_deref(), Some("create"));
        assert!(o.spot);
        assert_eq!(o.instance_type("small"), "t3.nano");
        assert_eq!(o.instance_type("medium"), "t3.large");
        assert_eq!(o.instance_type("large"), "m5.xlarge");
        assert_eq!(o.instance_type("c7g.large"), "c7g.large");
        assert_eq!(spec.provider_name(), "aws");

        let head = "apiVersion: gantry/v1\nname: demo\nprovider:\n  aws:\n";
        let pools = "pools: [{name: a, count: 1}]\n";
        let cases = [
            (
                format!("{head}    zones: [us-east-1a]\n{pools}"),
                "5:5: missing required field `region`",
            ),
            (
                format!("{head}    region: mars\n{pools}"),
                "5:13: invalid aws region \"mars\" // us-east-1",
            ),
            (
                format!("{head}    region: us-east-1\n    vpc: mine\n{pools}"),
                "6:10: invalid `vpc` \"mine\" // create",
            ),
            (
                format!("{head}    region: us-east-1\n    ami: ubuntu\n{pools}"),
                "6:10: invalid `ami` \"ubuntu\" // image",
            ),
            (
                format!("{head}    region: us-east-1\n    spot: yes please\n{pools}"),
                "6:11: invalid type for `spot`",
            ),
            (
                format!("{head}    region: us-east-1\n    endpoint: localhost:5000\n{pools}"),
                "6:15: invalid endpoint // AWS_ENDPOINT_URL",
            ),
            (
                format!("{head}    region: us-east-1\n    caller_cidr: 1.2.3.4\n{pools}"),
                "6:18: is an address, not a cidr",
            ),
            (
                format!("{head}    region: us-east-1\n    regoin: x\n{pools}"),
                "6:5: unknown field `regoin` // did you mean `region`?",
            ),
            (
                format!(
                    "{head}    region: us-east-1\nreadiness: api\n{pools}blueprints:\n  - name: hello\n"
                ),
                "6:12: `readiness: api` cannot be combined with `blueprints` // ssh",
            ),
        ];
        for (input, expect) in &cases {
            check(input, expect);
        }
    }

    #[test]
    fn rules_open_to_the_internet_warn_with_their_position() {
        let text = "apiVersion: gantry/v1
name: demo
provider:
  aws:
    region: us-east-1
pools:
  - name: db
    count: 1
network:
  allow:
    - {port: 22, from: 0.0.0.0/0}
    - {port: 8080, from: 0.0.0.0/0}
    - port: 9000
      from: ::/0
    - {port: 443, from: ::/0}
    - {port: 5432, from: 10.0.0.0/8}
";
        let spec = parse(text).unwrap();
        let w = gantry_core::spec::warnings(text, &spec, AwsKind.opens_firewall());
        let at: Vec<(usize, usize, &str)> = w
            .iter()
            .map(|i| (i.line, i.column, i.message.as_str()))
            .collect();
        assert_eq!(
            at,
            [
                (
                    12,
                    26,
                    "port 8080 is open to the whole internet (`from: 0.0.0.0/0`)"
                ),
                (
                    14,
                    13,
                    "port 9000 is open to the whole internet (`from: ::/0`)"
                ),
            ]
        );
        let shown = gantry_core::spec::render_warnings("s.yaml", &w, text);
        assert!(
            shown.starts_with(
                "s.yaml:12:26: warning: port 8080 is open to the whole internet (`from: 0.0.0.0/0`)\n"
            ),
            "{shown}"
        );
        assert!(shown.contains("  hint: give the addresses"), "{shown}");
        // A kind whose rules open no firewall (local nodes, Docker's 127.0.0.1 ports): no warning.
        assert!(gantry_core::spec::warnings(text, &spec, false).is_empty());
    }

    fn t(region: &str, endpoint: Option<&str>) -> AwsTarget {
        AwsTarget {
            region: region.into(),
            endpoint: endpoint.map(str::to_owned),
        }
    }

    #[test]
    fn targets_are_the_tracked_regions_plus_named_ones_once_each() {
        let emu = Some("http://127.0.0.1:5000");
        let (targets, bad) = aws_targets(
            [
                t("us-east-1", None),
                t("eu-west-1", emu),
                t("us-east-1", None),
            ],
            &[
                "eu-west-1".into(),
                "ap-south-1".into(),
                "Nope!".into(),
                "ap-south-1".into(),
                "Nope!".into(),
            ],
        );
        assert_eq!(
            targets,
            [
                t("ap-south-1", None),
                // Named, but a tracked cluster lists it already (through its endpoint).
                t("eu-west-1", emu),
                t("us-east-1", None),
            ]
        );
        assert_eq!(bad, ["Nope!"]);
        let (targets, bad) = aws_targets([], &[]);
        assert!(targets.is_empty() && bad.is_empty());
    }

    #[test]
    fn the_cache_key_names_the_endpoint_in_effect() {
        assert_eq!(scope_key(&t("us-east-1", None), None), "aws:us-east-1");
        assert_eq!(
            scope_key(&t("us-east-1", None), Some("http://127.0.0.1:5000")),
            "aws:us-east-1@http://127.0.0.1:5000"
        );
        assert_eq!(
            scope_key(&t("us-east-1", Some("http://spec:1")), Some("http://env:2")),
            "aws:us-east-1@http://spec:1"
        );
    }
}
