//! `gantry ls`: every cluster of the project, from its records and from every node that carries
//! the project's tags — local nodes, and each AWS region that matters, all regions at once.
//!
//! Why one listing per region rather than per cluster: a cluster whose record is gone (a crash
//! between "created" and "recorded", a lost state file) is found only by its tags, and one
//! tag-filtered listing per region costs the same however many clusters live there. The regions
//! are those of the tracked AWS clusters, `--region` and `GANTRY_AWS_REGIONS`. A region that
//! cannot be listed (credentials, unknown region, endpoint down) is a warning naming it; the
//! others still list. Tracked clusters of any other provider are asked for their own nodes, live,
//! and the default Docker engine (`DOCKER_HOST`, else the local socket) is asked for the
//! project's containers by label, so a docker cluster without a record shows too; no engine
//! running is the usual case and says nothing.
//!
//! Why a cache: listing a dozen regions takes seconds. Each region's listing is kept in the
//! state store's inventory cache and served while younger than `--max-age` (default 60 s);
//! `--refresh` re-lists. It never hides gantry's own changes: every run that changes resources
//! drops the project's cache when it starts and when it ends (gantry-engine's `RunGuard`), and
//! the store refuses a listing that started before the last such drop. Only changes made behind
//! gantry's back can be up to `--max-age` late. Nothing that changes resources reads the cache:
//! `up`, `destroy`, `gc`, … always list live. Local nodes are never cached: their listing is a
//! directory scan, cheap and always fresh.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gantry_core::tags::{self, TagFilter, World};
use gantry_core::{ClusterSpec, ProviderSpec};
use gantry_provider::{NodeInfo, NodeState};
use gantry_state::{ClusterRecord, InventoryRecord, StateStore};
use serde_json::json;
use time::OffsetDateTime;

use crate::cli::{Global, LsArgs, OutputFormat};
use crate::context::{self, Home};
use crate::env_vars as env;
use crate::exit::{self, CliResult};
use crate::output;

/// The SDK's endpoint overrides (EC2's own first). Read only to key the cache, so that a listing
/// of an emulator is never served for the real region or the other way round.
const ENDPOINT_ENV: &[&str] = &["AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"];

/// Version of the cached payload. A payload of another version (written by another gantry) is a
/// cache miss, not an error.
const PAYLOAD_VERSION: u32 = 1;

/// How long the default Docker engine may take to list the project's containers.
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

/// The AWS listings `ls` makes: one per region (and endpoint) of a tracked cluster, plus one per
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
pub(crate) fn scope(t: &AwsTarget, env_endpoint: Option<&str>) -> String {
    match t.endpoint.as_deref().or(env_endpoint) {
        Some(ep) => format!("aws:{}@{ep}", t.region),
        None => format!("aws:{}", t.region),
    }
}

/// How old a cached listing is, if it may be served: fetched at or before `now` and less than
/// `max_age` ago (`max_age` zero: never). A listing from the future (a clock set back since) is
/// not served.
pub(crate) fn servable_age(
    fetched_at: OffsetDateTime,
    now: OffsetDateTime,
    max_age: Duration,
) -> Option<Duration> {
    let age = Duration::try_from(now - fetched_at).ok()?;
    (age < max_age).then_some(age)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    version: u32,
    nodes: Vec<NodeInfo>,
}

fn encode(nodes: Vec<NodeInfo>) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Payload {
        version: PAYLOAD_VERSION,
        nodes,
    })
}

fn decode(payload: &str) -> Option<Vec<NodeInfo>> {
    serde_json::from_str::<Payload>(payload)
        .ok()
        .filter(|p| p.version == PAYLOAD_VERSION)
        .map(|p| p.nodes)
}

/// Something worth telling on stderr, tied to a region when it is about one.
struct Warning {
    region: Option<String>,
    message: String,
}

/// What one AWS listing gave.
struct RegionListing {
    nodes: Result<Vec<NodeInfo>, String>,
    /// Some: served from the cache, this old.
    cached_age: Option<Duration>,
    warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct CacheUse {
    refresh: bool,
    max_age: Duration,
}

/// Lists one region by the project's tags: from the cache when allowed and young enough, else
/// from AWS (and then caches it).
async fn list_region(
    store: Arc<dyn StateStore>,
    project: String,
    target: AwsTarget,
    scope: String,
    cache: CacheUse,
) -> RegionListing {
    let mut warnings = Vec::new();
    if !cache.refresh && !cache.max_age.is_zero() {
        match store.get_inventory(&project, &scope).await {
            Ok(Some(r)) => {
                let age = servable_age(r.fetched_at, OffsetDateTime::now_utc(), cache.max_age);
                if let (Some(age), Some(nodes)) = (age, decode(&r.payload)) {
                    return RegionListing {
                        nodes: Ok(nodes),
                        cached_age: Some(age),
                        warnings,
                    };
                }
            }
            Ok(None) => {}
            Err(e) => warnings.push(format!(
                "cannot read the cached listing of {scope}: {}; listing it now",
                chain(&e)
            )),
        }
    }
    let provider = match context::aws_region_provider(&target.region, target.endpoint.as_deref()) {
        Ok(p) => p,
        Err(f) => {
            return RegionListing {
                nodes: Err(f.error.to_string()),
                cached_age: None,
                warnings,
            };
        }
    };
    // The start of the listing: whatever changes after it may be missing from it.
    let fetched_at = OffsetDateTime::now_utc();
    let listed =
        tokio::time::timeout(REGION_TIMEOUT, provider.list(&TagFilter::project(&project))).await;
    let nodes = match listed {
        Err(_) => Err(format!("no answer within {} s", REGION_TIMEOUT.as_secs())),
        Ok(Err(e)) => Err(match &e.hint {
            Some(h) => format!("{e}; hint: {h}"),
            None => e.to_string(),
        }),
        Ok(Ok(nodes)) => Ok(nodes),
    };
    if let Ok(nodes) = &nodes {
        let stored = match encode(nodes.clone()) {
            Ok(payload) => store
                .put_inventory(&InventoryRecord {
                    project,
                    scope: scope.clone(),
                    fetched_at,
                    payload,
                })
                .await
                .map(|_| ())
                .map_err(|e| chain(&e)),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            warnings.push(format!("cannot cache the listing of {scope}: {e}"));
        }
    }
    RegionListing {
        nodes,
        cached_age: None,
        warnings,
    }
}

/// An error and its causes on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Where a tracked cluster's nodes are listed.
enum Place {
    Local,
    Aws(AwsTarget),
    /// Any other provider: asked for this cluster's nodes only, live.
    Other(Box<ClusterSpec>),
    /// Its recorded spec cannot be read: its nodes cannot be counted.
    Unknown,
}

/// One line of the listing.
struct Row<'a> {
    name: String,
    provider: String,
    region: Option<String>,
    record: Option<&'a ClusterRecord>,
    /// `None`: could not be listed (see the warnings).
    nodes: Option<Vec<NodeInfo>>,
    cached_age: Option<Duration>,
    /// An untracked cluster none of whose nodes is this world's: who made it. Shown, since
    /// gantry never touches it.
    foreign: Option<String>,
}

/// Who made an untracked cluster's nodes, when none of them is `world`'s.
fn foreign_owner(world: &World, nodes: &[NodeInfo]) -> Option<String> {
    if nodes.is_empty() || nodes.iter().any(|n| world.owns(&n.tags)) {
        return None;
    }
    let mut owners: Vec<String> = nodes.iter().map(|n| tags::owner_of(&n.tags)).collect();
    owners.sort();
    owners.dedup();
    Some(owners.join(", "))
}

pub async fn ls(g: &Global, a: &LsArgs) -> CliResult {
    let home = Home::resolve(g.home.as_deref())?;
    let store = context::open_store(&home)?;
    let ssh = context::ssh_config(&home, &g.project)?;
    let records = store
        .list_clusters(&g.project)
        .await
        .context("failed to read the state store")?;
    let mut world = World::new(
        store
            .world_id()
            .await
            .context("failed to read the state store")?,
    );
    world
        .legacy_uids
        .extend(records.iter().map(|r| r.uid.clone()));
    let mut warnings: Vec<Warning> = Vec::new();

    let places: Vec<Place> = records
        .iter()
        .map(|r| match gantry_engine::app::decode_spec(r) {
            Ok(s) => {
                if let ProviderSpec::Aws(o) = &s.provider {
                    Place::Aws(AwsTarget {
                        region: o.region.clone(),
                        endpoint: o.endpoint.clone(),
                    })
                } else if let ProviderSpec::Local(_) = &s.provider {
                    Place::Local
                } else {
                    Place::Other(Box::new(s))
                }
            }
            Err(_) if r.provider == "local" => Place::Local,
            Err(e) => {
                warnings.push(Warning {
                    region: None,
                    message: format!("{}; its nodes are not counted", chain(&e)),
                });
                Place::Unknown
            }
        })
        .collect();
    let env_regions = std::env::var(env::GANTRY_AWS_REGIONS).unwrap_or_default();
    let named = split_names(
        a.regions
            .iter()
            .map(String::as_str)
            .chain([env_regions.as_str()]),
    );
    let tracked = places.iter().filter_map(|p| match p {
        Place::Aws(t) => Some(t.clone()),
        _ => None,
    });
    let (targets, bad) = aws_targets(tracked, &named);
    for b in bad {
        warnings.push(Warning {
            region: None,
            message: format!(
                "`{b}` (from --region or {}) is not an AWS region name; skipped",
                env::GANTRY_AWS_REGIONS
            ),
        });
    }

    // Every region at once; the local scan meanwhile.
    let env_endpoint = ENDPOINT_ENV
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    let cache = CacheUse {
        refresh: a.refresh,
        max_age: a.max_age,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (i, t) in targets.iter().enumerate() {
        let fut = list_region(
            store.clone(),
            g.project.clone(),
            t.clone(),
            scope(t, env_endpoint.as_deref()),
            cache,
        );
        tasks.spawn(async move { (i, fut.await) });
    }
    let mut others = tokio::task::JoinSet::new();
    for (r, place) in records.iter().zip(&places) {
        if let Place::Other(spec) = place {
            let provider = context::provider_for_spec(&home, &ssh, spec)?;
            let filter = TagFilter::cluster(&g.project, &r.name);
            let name = r.name.clone();
            others.spawn(async move { (name, provider.list(&filter).await) });
        }
    }
    // The default Docker engine, for docker clusters without a record.
    let docker = crate::docker::default_engine().map(|engine| {
        let filter = TagFilter::project(&g.project);
        tokio::spawn(
            async move { tokio::time::timeout(DOCKER_TIMEOUT, engine.list(&filter)).await },
        )
    });
    let local = context::local_provider(&home, &ssh, None)?;
    let local_nodes = local
        .list(&TagFilter::project(&g.project))
        .await
        .map_err(gantry_engine::EngineError::from)?;
    let mut listings: Vec<Option<RegionListing>> = targets.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, l)) => listings[i] = Some(l),
            Err(e) => warnings.push(Warning {
                region: None,
                message: format!("listing a region failed: {e}"),
            }),
        }
    }

    let mut other_nodes: BTreeMap<String, Vec<NodeInfo>> = BTreeMap::new();
    while let Some(joined) = others.join_next().await {
        match joined {
            Ok((name, Ok(nodes))) => {
                other_nodes.insert(name, nodes);
            }
            Ok((name, Err(e))) => warnings.push(Warning {
                region: None,
                message: format!("cannot list the nodes of {name}: {e}"),
            }),
            Err(e) => warnings.push(Warning {
                region: None,
                message: format!("listing failed: {e}"),
            }),
        }
    }

    let mut docker_untracked: BTreeMap<String, Vec<NodeInfo>> = BTreeMap::new();
    if let Some(task) = docker {
        match task.await {
            Ok(Ok(Ok(nodes))) => {
                for n in nodes {
                    if let Some(c) = n.tags.get(tags::CLUSTER)
                        && !records.iter().any(|r| &r.name == c)
                    {
                        docker_untracked.entry(c.clone()).or_default().push(n);
                    }
                }
            }
            Ok(Ok(Err(e))) => tracing::debug!("not looking for docker nodes: {e}"),
            Ok(Err(_)) => tracing::debug!("the docker engine did not answer in time"),
            Err(e) => tracing::debug!("listing docker nodes failed: {e}"),
        }
    }

    // Nodes by (cluster, source): source None is local, Some(i) is targets[i].
    let mut groups: BTreeMap<(String, Option<usize>), Vec<NodeInfo>> = BTreeMap::new();
    let mut add = |source: Option<usize>, nodes: Vec<NodeInfo>| {
        for n in nodes {
            if let Some(c) = n.tags.get(tags::CLUSTER) {
                groups.entry((c.clone(), source)).or_default().push(n);
            }
        }
    };
    add(None, local_nodes);
    let mut cached: Vec<(String, Duration)> = Vec::new();
    for (i, (t, l)) in targets.iter().zip(&mut listings).enumerate() {
        let region = Some(t.region.clone());
        let Some(l) = l else {
            warnings.push(Warning {
                region,
                message: format!(
                    "cannot list AWS region {}: the listing did not finish",
                    t.region
                ),
            });
            continue;
        };
        for w in l.warnings.drain(..) {
            warnings.push(Warning {
                region: region.clone(),
                message: w,
            });
        }
        match &mut l.nodes {
            Ok(nodes) => add(Some(i), std::mem::take(nodes)),
            Err(e) => warnings.push(Warning {
                region,
                message: format!("cannot list AWS region {}: {e}", t.region),
            }),
        }
        if let Some(age) = l.cached_age {
            cached.push((t.region.clone(), age));
        }
    }
    let listed = |i: usize| listings[i].as_ref().filter(|l| l.nodes.is_ok());

    let mut rows: Vec<Row<'_>> = Vec::new();
    for (r, place) in records.iter().zip(&places) {
        let (region, nodes, cached_age) = match place {
            Place::Local => (None, groups.remove(&(r.name.clone(), None)), None),
            Place::Aws(t) => {
                let i = targets.iter().position(|x| x == t);
                let l = i.and_then(listed);
                let nodes = l.map(|_| groups.remove(&(r.name.clone(), i)).unwrap_or_default());
                (Some(t.region.clone()), nodes, l.and_then(|l| l.cached_age))
            }
            Place::Other(_) => (None, other_nodes.remove(&r.name), None),
            Place::Unknown => (None, None, None),
        };
        rows.push(Row {
            name: r.name.clone(),
            provider: r.provider.clone(),
            region,
            record: Some(r),
            nodes: match place {
                Place::Local => Some(nodes.unwrap_or_default()),
                _ => nodes,
            },
            cached_age,
            foreign: None,
        });
    }
    // What is left carries the project's tags but has no record: untracked.
    for ((name, source), nodes) in groups {
        let (provider, region, cached_age) = match source {
            None => ("local", None, None),
            Some(i) => (
                "aws",
                Some(targets[i].region.clone()),
                listings[i].as_ref().and_then(|l| l.cached_age),
            ),
        };
        rows.push(Row {
            name,
            provider: provider.into(),
            region,
            record: None,
            foreign: foreign_owner(&world, &nodes),
            nodes: Some(nodes),
            cached_age,
        });
    }
    for (name, nodes) in docker_untracked {
        rows.push(Row {
            name,
            provider: "docker".into(),
            region: None,
            record: None,
            foreign: foreign_owner(&world, &nodes),
            nodes: Some(nodes),
            cached_age: None,
        });
    }
    print(g, &rows, &warnings, &cached);
    Ok(exit::OK)
}

fn print(g: &Global, rows: &[Row<'_>], warnings: &[Warning], cached: &[(String, Duration)]) {
    let now = OffsetDateTime::now_utc();
    let counts = |nodes: &Option<Vec<NodeInfo>>| {
        nodes.as_ref().map(|n| {
            let up = n.iter().filter(|n| n.state == NodeState::Running).count();
            (up, n.len())
        })
    };
    match g.output {
        OutputFormat::Json => {
            let items: Vec<_> = rows
                .iter()
                .map(|row| {
                    let c = counts(&row.nodes);
                    let mut item = json!({
                        "name": row.name,
                        "provider": row.provider,
                        "region": row.region,
                        "status": row.record.map_or("untracked", |r| r.status.as_str()),
                        "foreign_owner": row.foreign,
                        "nodes_up": c.map(|c| c.0),
                        "nodes_total": c.map(|c| c.1),
                        "tracked": row.record.is_some(),
                        "cached_age_secs": row.cached_age.map(|a| a.as_secs()),
                    });
                    if let Some(r) = row.record {
                        item["expires_at"] = json!(output::rfc3339(r.expires_at));
                        item["expires_in_secs"] = json!((r.expires_at - now).whole_seconds());
                        item["generation"] = json!(r.generation);
                        item["created_at"] = json!(output::rfc3339(r.created_at));
                    }
                    item
                })
                .collect();
            output::print_json(&items);
            // Like run events: one JSON object per line on stderr.
            for (region, age) in cached {
                eprintln!(
                    "{}",
                    json!({"type": "cached", "provider": "aws", "region": region, "age_secs": age.as_secs()})
                );
            }
            for w in warnings {
                eprintln!(
                    "{}",
                    json!({"type": "warning", "region": w.region, "message": w.message})
                );
            }
        }
        OutputFormat::Text => {
            let mut table = Vec::new();
            let mut soon: Vec<String> = Vec::new();
            let mut expired: Vec<String> = Vec::new();
            for row in rows {
                let nodes = counts(&row.nodes)
                    .map(|(up, total)| format!("{up}/{total}"))
                    .unwrap_or_else(|| "?".into());
                let (status, expires) = match row.record {
                    Some(r) => {
                        // Exact, like gc's `expires_at < now`: whole seconds would call a
                        // cluster expired less than a second ago "expiring soon".
                        let left = r.expires_at - now;
                        let expiring = !left.is_negative() && left < time::Duration::HOUR;
                        if expiring {
                            soon.push(format!("{} ({})", r.name, output::time_left(r.expires_at)));
                        } else if left.is_negative() {
                            expired.push(r.name.clone());
                        }
                        let note = if expiring { " (expires soon)" } else { "" };
                        (r.status.to_string(), output::time_left(r.expires_at) + note)
                    }
                    None => ("untracked".into(), "-".into()),
                };
                table.push(vec![
                    row.name.clone(),
                    row.provider.clone(),
                    row.region.clone().unwrap_or_else(|| "-".into()),
                    status,
                    nodes,
                    expires,
                ]);
            }
            if table.is_empty() {
                eprintln!("no clusters in project {}", g.project);
            } else {
                println!(
                    "{}",
                    output::table(
                        &[
                            "name",
                            "provider",
                            "region",
                            "status",
                            "nodes",
                            "expires in"
                        ],
                        table
                    )
                );
            }
            if !cached.is_empty() {
                let list = cached
                    .iter()
                    .map(|(region, age)| format!("aws {region} cached {}s ago", age.as_secs()))
                    .collect::<Vec<_>>()
                    .join(", ");
                eprintln!("note: {list}; --refresh re-reads");
            }
            for w in warnings {
                eprintln!("warning: {}", w.message);
            }
            for row in rows {
                if let Some(owner) = &row.foreign {
                    eprintln!(
                        "note: cluster {} belongs to another gantry world (made by {owner}); \
                         gantry never touches it",
                        row.name
                    );
                }
            }
            if !soon.is_empty() {
                eprintln!(
                    "warning: expiring within 1h: {}; `gantry extend CLUSTER 4h` keeps one longer",
                    soon.join(", ")
                );
            }
            if !expired.is_empty() {
                eprintln!(
                    "warning: expired: {}; `gantry gc` destroys expired clusters",
                    expired.join(", ")
                );
            }
        }
    }
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
        assert_eq!(scope(&t("us-east-1", None), None), "aws:us-east-1");
        assert_eq!(
            scope(&t("us-east-1", None), Some("http://127.0.0.1:5000")),
            "aws:us-east-1@http://127.0.0.1:5000"
        );
        assert_eq!(
            scope(&t("us-east-1", Some("http://spec:1")), Some("http://env:2")),
            "aws:us-east-1@http://spec:1"
        );
    }

    #[test]
    fn a_cached_listing_is_served_while_younger_than_max_age() {
        let now = OffsetDateTime::now_utc();
        let ago = |s: i64| now - time::Duration::seconds(s);
        let max = Duration::from_secs(60);
        assert_eq!(servable_age(now, now, max), Some(Duration::ZERO));
        assert_eq!(
            servable_age(ago(12), now, max),
            Some(Duration::from_secs(12))
        );
        assert_eq!(servable_age(ago(60), now, max), None, "60 s old is stale");
        assert_eq!(servable_age(ago(3600), now, max), None);
        assert_eq!(servable_age(ago(-5), now, max), None, "from the future");
        assert_eq!(
            servable_age(now, now, Duration::ZERO),
            None,
            "max age 0: never"
        );
    }

    #[test]
    fn payloads_round_trip_and_other_versions_are_misses() {
        let node = NodeInfo {
            name: "c-db-1".into(),
            provider_id: "i-1".into(),
            pool: "db".into(),
            index: 1,
            address: None,
            ssh: None,
            state: NodeState::Running,
            tags: [(tags::CLUSTER.to_string(), "c".to_string())].into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            host_key: None,
        };
        let p = encode(vec![node.clone()]).unwrap();
        assert_eq!(decode(&p), Some(vec![node]));
        assert_eq!(decode(r#"{"version":2,"nodes":[]}"#), None);
        assert_eq!(decode("not json"), None);
    }
}
