//! Where the project's nodes are listed: the listing scopes handed to
//! [`gantry_engine::app::list_project`] by `ls`, `gc`, `destroy --all/--expired` and
//! `inventory`. Building them is provider knowledge, so it is kept here in one function,
//! [`listing_scopes`], for the provider registry to take over.
//!
//! The scopes: local nodes; every Docker engine a record names plus the default one
//! (`DOCKER_HOST`, else the local socket; no engine running is the usual case and says
//! nothing); every AWS region a record names (through the endpoint its spec names) plus the
//! regions of `GANTRY_AWS_REGIONS` and of the caller (`ls --region`). A region that cannot be
//! listed is a warning naming it; the others still list.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gantry_core::ProviderSpec;
use gantry_engine::app::{CacheUse, OnError, ProjectInventory, ProjectRecords, Scope, Warning};
use gantry_ssh::ClientConfig;

use crate::cli::Global;
use crate::context::{self, Home};
use crate::env_vars as env;
use crate::exit::CliResult;

/// The SDK's endpoint overrides (EC2's own first). Read only to key the cache, so that a listing
/// of an emulator is never served for the real region or the other way round.
const ENDPOINT_ENV: &[&str] = &["AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"];

/// How long a Docker engine may take to list the project's containers.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one region's listing may take before it is given up with a warning.
const REGION_TIMEOUT: Duration = Duration::from_secs(120);

/// One AWS listing: a region, through the endpoint a tracked cluster's spec names (`None`: the
/// SDK's default, which honours `AWS_ENDPOINT_URL`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct AwsTarget {
    pub region: String,
    pub endpoint: Option<String>,
}

/// Comma-separated lists (`--region a,b --region c`, `GANTRY_AWS_REGIONS=a,b`) → names, trimmed,
/// without empty ones.
pub(crate) fn split_names<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `s` can be an AWS region name (`us-east-1`, `eu-central-2`, `us-gov-west-1`):
/// lowercase letters and digits in dash-separated parts. Anything else is never sent anywhere.
pub(crate) fn is_region_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('-').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// The AWS listings to make: one per region (and endpoint) of a tracked cluster, plus one per
/// `named` region that no tracked cluster already covers (with the default endpoint). Sorted and
/// unique. Names that cannot be regions come back apart, once each, for a warning.
pub(crate) fn aws_targets(
    tracked: impl IntoIterator<Item = AwsTarget>,
    named: &[String],
) -> (Vec<AwsTarget>, Vec<String>) {
    let mut set: BTreeSet<AwsTarget> = tracked.into_iter().collect();
    let mut bad: Vec<String> = Vec::new();
    for n in named {
        if !is_region_name(n) {
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
pub(crate) fn scope_key(t: &AwsTarget, env_endpoint: Option<&str>) -> String {
    match t.endpoint.as_deref().or(env_endpoint) {
        Some(ep) => format!("aws:{}@{ep}", t.region),
        None => format!("aws:{}", t.region),
    }
}

/// The listing scopes of the project (see the module's doc), and warnings about region names
/// that cannot be regions. `regions`: what the caller adds to the tracked regions and
/// `GANTRY_AWS_REGIONS` (`ls --region`).
pub(crate) fn listing_scopes(
    home: &Home,
    ssh: &ClientConfig,
    records: &ProjectRecords,
    regions: &[String],
) -> CliResult<(Vec<Scope>, Vec<Warning>)> {
    let mut warnings = Vec::new();
    let mut local: Vec<String> = Vec::new();
    // Engine address → (provider, its recorded clusters); the default engine first.
    let mut engines: BTreeMap<
        String,
        (std::sync::Arc<dyn gantry_provider::Provider>, Vec<String>),
    > = BTreeMap::new();
    let default_engine = crate::docker::engine(None).map(|(host, p)| {
        engines.insert(host.clone(), (p, vec![]));
        host
    });
    let mut aws: Vec<(AwsTarget, String)> = Vec::new();
    for t in &records.clusters {
        let name = t.record.name.clone();
        match &t.spec {
            Ok(s) => match &s.provider {
                ProviderSpec::Local(_) => local.push(name),
                ProviderSpec::Docker(o) => {
                    if let Some((host, p)) = crate::docker::engine(o.host.as_deref()) {
                        engines.entry(host).or_insert((p, vec![])).1.push(name);
                    }
                }
                ProviderSpec::Aws(o) => aws.push((
                    AwsTarget {
                        region: o.region.clone(),
                        endpoint: o.endpoint.clone(),
                    },
                    name,
                )),
            },
            // Its record says local: its nodes are where every local node is.
            Err(_) if t.record.provider == "local" => local.push(name),
            Err(_) => {}
        }
    }
    let mut scopes = vec![Scope {
        key: "local".into(),
        kind: "local".into(),
        region: None,
        what: "local nodes".into(),
        provider: context::local_provider(home, ssh, None)?,
        cacheable: false,
        timeout: None,
        on_error: OnError::Fail,
        clusters: local,
    }];
    for (host, (provider, clusters)) in engines {
        let default = default_engine.as_deref() == Some(host.as_str());
        scopes.push(Scope {
            key: format!("docker:{host}"),
            kind: "docker".into(),
            region: None,
            what: format!("docker engine {host}"),
            provider,
            cacheable: false,
            timeout: Some(DOCKER_TIMEOUT),
            on_error: if default {
                OnError::Quiet
            } else {
                OnError::Warn
            },
            clusters,
        });
    }
    let env_regions = std::env::var(env::GANTRY_AWS_REGIONS).unwrap_or_default();
    let named = split_names(
        regions
            .iter()
            .map(String::as_str)
            .chain([env_regions.as_str()]),
    );
    let (targets, bad) = aws_targets(aws.iter().map(|(t, _)| t.clone()), &named);
    for b in bad {
        warnings.push(Warning {
            region: None,
            message: format!(
                "`{b}` (from --region or {}) is not an AWS region name; skipped",
                env::GANTRY_AWS_REGIONS
            ),
        });
    }
    let env_endpoint = ENDPOINT_ENV
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    for t in targets {
        let what = format!("AWS region {}", t.region);
        let provider = match context::aws_region_provider(&t.region, t.endpoint.as_deref()) {
            Ok(p) => p,
            Err(f) => {
                warnings.push(Warning {
                    region: Some(t.region.clone()),
                    message: format!("cannot list {what}: {}", f.error),
                });
                continue;
            }
        };
        scopes.push(Scope {
            key: scope_key(&t, env_endpoint.as_deref()),
            kind: "aws".into(),
            region: Some(t.region.clone()),
            what,
            provider,
            cacheable: true,
            timeout: Some(REGION_TIMEOUT),
            on_error: OnError::Warn,
            clusters: aws
                .iter()
                .filter(|(a, _)| a == &t)
                .map(|(_, n)| n.clone())
                .collect(),
        });
    }
    Ok((scopes, warnings))
}

/// The whole project ([`gantry_engine::app::list_project`]) over [`listing_scopes`]; the
/// warnings about region names come first.
pub(crate) async fn list_project(
    g: &Global,
    home: &Home,
    regions: &[String],
    cache: CacheUse,
) -> CliResult<ProjectInventory> {
    let store = context::open_store(home)?;
    let ssh = context::ssh_config(home, &g.project)?;
    let records = ProjectRecords::load(store.as_ref(), &g.project).await?;
    let (scopes, warnings) = listing_scopes(home, &ssh, &records, regions)?;
    let mut inventory = gantry_engine::app::list_project(&store, records, scopes, cache).await?;
    inventory.warnings.splice(0..0, warnings);
    Ok(inventory)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(region: &str, endpoint: Option<&str>) -> AwsTarget {
        AwsTarget {
            region: region.into(),
            endpoint: endpoint.map(str::to_owned),
        }
    }

    #[test]
    fn region_names_come_from_flags_and_the_environment_split_on_commas() {
        assert_eq!(
            split_names(["us-east-1, eu-west-1", "", " ap-south-1 ,,", "us-east-1"]),
            ["us-east-1", "eu-west-1", "ap-south-1", "us-east-1"]
        );
        assert!(split_names([" , "]).is_empty());
    }

    #[test]
    fn region_name_check() {
        for ok in ["us-east-1", "eu-central-2", "us-gov-west-1", "cn-north-1"] {
            assert!(is_region_name(ok), "{ok}");
        }
        for bad in [
            "",
            "US-EAST-1",
            "us_east_1",
            "us-east-1/../x",
            "-us",
            "us-",
            "us--1",
            "us east",
            "a.b",
        ] {
            assert!(!is_region_name(bad), "{bad:?}");
        }
        assert!(!is_region_name(&"a".repeat(65)));
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
