//! What the project has, in one answer that `ls`, `gc`, `destroy --all` and `inventory` (and
//! later the server) share: the records, merged with every node carrying the project's tags in
//! every listing scope the caller hands in (local nodes, each Docker engine, each AWS region).
//!
//! Why the caller builds the scopes: which scopes exist is provider knowledge (the regions the
//! records name, the engines, the default ones), and providers are built by the binary. This
//! module only lists them, all at once, and merges: it never names a provider.
//!
//! Why one listing per scope rather than per cluster: a cluster whose record is gone (a crash
//! between "created" and "recorded", a lost state file) is found only by its tags, and one
//! tag-filtered listing per scope costs the same however many clusters live there.
//!
//! The inventory cache: a scope marked cacheable (an AWS region: listing a dozen takes seconds)
//! is served from the state store's inventory cache while younger than [`CacheUse::max_age`],
//! and a fresh listing is cached. Only `ls` reads the cache; everything that acts on what it
//! finds lists live ([`CacheUse::LIVE`]). The cache never hides gantry's own changes: every run
//! drops the project's cache when it starts and ends (`ops::RunGuard`) and the store refuses a
//! listing that started before that.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gantry_core::ClusterSpec;
use gantry_core::tags::{self, TagFilter, World};
pub use gantry_provider::registry::{OnError, Scope, Warning};
use gantry_provider::{NodeInfo, Provider, ProviderError};
use gantry_state::{ClusterRecord, InventoryRecord, StateStore};
use time::OffsetDateTime;

use super::cluster::decode_spec;
use crate::EngineError;

/// Version of the cached payload. A payload of another version (written by another gantry) is a
/// cache miss, not an error.
const PAYLOAD_VERSION: u32 = 1;

/// A recorded cluster and its spec, or why the spec cannot be read.
#[derive(Debug)]
pub struct Tracked {
    pub record: ClusterRecord,
    pub spec: Result<ClusterSpec, EngineError>,
}

/// The project's records, with their specs decoded, and this world.
#[derive(Debug)]
pub struct ProjectRecords {
    pub project: String,
    /// This world: the store's id, and the uid of every recorded cluster (for nodes an older
    /// gantry made).
    pub world: World,
    pub clusters: Vec<Tracked>,
}

impl ProjectRecords {
    pub async fn load(
        store: &dyn StateStore,
        project: &str,
    ) -> Result<ProjectRecords, EngineError> {
        let records = store.list_clusters(project).await?;
        let mut world = World::new(store.world_id().await?);
        world
            .legacy_uids
            .extend(records.iter().map(|r| r.uid.clone()));
        let clusters = records
            .into_iter()
            .map(|record| Tracked {
                spec: decode_spec(&record),
                record,
            })
            .collect();
        Ok(ProjectRecords {
            project: project.into(),
            world,
            clusters,
        })
    }
}

/// Whether listings may come from the inventory cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheUse {
    /// Serve a cached listing younger than this; zero: list live.
    pub max_age: Duration,
}

impl CacheUse {
    /// Every scope listed now (what every command that acts on the listing uses).
    pub const LIVE: CacheUse = CacheUse {
        max_age: Duration::ZERO,
    };
}

/// What one scope's listing gave.
pub struct ScopeListing {
    pub scope: Scope,
    /// Err: why it could not be listed (also among the warnings, unless quiet).
    pub nodes: Result<Vec<NodeInfo>, String>,
    /// Served from the cache, this old.
    pub cached_age: Option<Duration>,
}

/// A cluster of the project: recorded, or found by its tags in one scope.
#[derive(Debug, Clone)]
pub struct ListedCluster {
    pub name: String,
    pub record: Option<ClusterRecord>,
    /// The scope its nodes were listed in (index into [`ProjectInventory::scopes`]); None: a
    /// recorded cluster no scope lists (its spec cannot be read).
    pub scope: Option<usize>,
    /// None: its scope could not be listed.
    pub nodes: Option<Vec<NodeInfo>>,
    /// An unrecorded cluster none of whose nodes is this world's: who made it (gantry never
    /// touches it).
    pub foreign: Option<String>,
}

/// Everything the project has.
pub struct ProjectInventory {
    pub project: String,
    pub world: World,
    pub records: Vec<ClusterRecord>,
    /// One per scope handed in, in that order.
    pub scopes: Vec<ScopeListing>,
    /// The recorded clusters in record order, then the unrecorded ones by name and scope.
    pub clusters: Vec<ListedCluster>,
    pub warnings: Vec<Warning>,
}

impl ProjectInventory {
    /// Every node listed, this world's and others', once each.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.scopes
            .iter()
            .filter_map(|l| l.nodes.as_ref().ok())
            .flatten()
            .cloned()
            .collect()
    }

    /// The scope whose listing found `node`.
    pub fn scope_of(&self, node: &NodeInfo) -> Option<&Scope> {
        self.scopes
            .iter()
            .find(|l| {
                l.nodes.as_ref().is_ok_and(|ns| {
                    ns.iter()
                        .any(|n| n.name == node.name && n.provider_id == node.provider_id)
                })
            })
            .map(|l| &l.scope)
    }

    /// The scope that lists `cluster`: its record's, else the first one that found its nodes.
    pub fn scope_of_cluster(&self, cluster: &str) -> Option<&Scope> {
        self.clusters
            .iter()
            .find(|c| c.name == cluster && c.scope.is_some())
            .and_then(|c| c.scope)
            .map(|i| &self.scopes[i].scope)
    }
}

/// Lists every scope at once and merges the listings with the records.
pub async fn list_project(
    store: &Arc<dyn StateStore>,
    records: ProjectRecords,
    scopes: Vec<Scope>,
    cache: CacheUse,
) -> Result<ProjectInventory, EngineError> {
    let mut warnings: Vec<Warning> = Vec::new();
    let home: BTreeMap<String, usize> = scopes
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.clusters.iter().map(move |c| (c.clone(), i)))
        .collect();
    for t in &records.clusters {
        if let Err(e) = &t.spec {
            let counted = if home.contains_key(&t.record.name) {
                ""
            } else {
                "; its nodes are not counted"
            };
            warnings.push(Warning {
                region: None,
                message: format!("{}{counted}", chain(e)),
            });
        }
    }

    let mut tasks = tokio::task::JoinSet::new();
    for (i, s) in scopes.iter().enumerate() {
        let job = ScopeJob {
            store: store.clone(),
            project: records.project.clone(),
            provider: s.provider.clone(),
            key: s.key.clone(),
            cacheable: s.cacheable,
            timeout: s.timeout,
        };
        tasks.spawn(async move { (i, job.run(cache).await) });
    }
    let mut results: Vec<Option<Listed>> = scopes.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, l)) => results[i] = Some(l),
            Err(e) => warnings.push(Warning {
                region: None,
                message: format!("a listing failed: {e}"),
            }),
        }
    }

    let mut listings: Vec<ScopeListing> = Vec::new();
    for (scope, result) in scopes.into_iter().zip(results) {
        let Listed {
            nodes,
            cached_age,
            warnings: w,
        } = result.unwrap_or_else(|| Listed {
            nodes: Err(ListError::Message("the listing did not finish".into())),
            cached_age: None,
            warnings: vec![],
        });
        warnings.extend(w.into_iter().map(|message| Warning {
            region: scope.region.clone(),
            message,
        }));
        let nodes = match nodes {
            Ok(n) => Ok(n),
            Err(ListError::Provider(e)) if scope.on_error == OnError::Fail => {
                return Err(e.into());
            }
            Err(e) => {
                let message = e.to_string();
                if scope.on_error == OnError::Quiet && scope.clusters.is_empty() {
                    tracing::debug!("not listing {}: {message}", scope.what);
                } else {
                    warnings.push(Warning {
                        region: scope.region.clone(),
                        message: format!("cannot list {}: {message}", scope.what),
                    });
                }
                Err(message)
            }
        };
        listings.push(ScopeListing {
            scope,
            nodes,
            cached_age,
        });
    }

    // Nodes by (cluster, scope).
    let mut groups: BTreeMap<(String, usize), Vec<NodeInfo>> = BTreeMap::new();
    for (i, l) in listings.iter().enumerate() {
        for n in l.nodes.iter().flatten() {
            if let Some(c) = n.tags.get(tags::CLUSTER) {
                groups.entry((c.clone(), i)).or_default().push(n.clone());
            }
        }
    }
    let mut clusters: Vec<ListedCluster> = Vec::new();
    for t in &records.clusters {
        let name = t.record.name.clone();
        let scope = home.get(&name).copied();
        let nodes = scope
            .filter(|&i| listings[i].nodes.is_ok())
            .map(|i| groups.remove(&(name.clone(), i)).unwrap_or_default());
        clusters.push(ListedCluster {
            name,
            record: Some(t.record.clone()),
            scope,
            nodes,
            foreign: None,
        });
    }
    // What is left carries the project's tags but has no record there: untracked.
    for ((name, i), nodes) in groups {
        clusters.push(ListedCluster {
            name,
            record: None,
            scope: Some(i),
            foreign: foreign_owner(&records.world, &nodes),
            nodes: Some(nodes),
        });
    }
    Ok(ProjectInventory {
        project: records.project,
        world: records.world,
        records: records.clusters.into_iter().map(|t| t.record).collect(),
        scopes: listings,
        clusters,
        warnings,
    })
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

/// Why a scope could not be listed.
enum ListError {
    Provider(ProviderError),
    Message(String),
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListError::Provider(e) => match &e.hint {
                Some(h) => write!(f, "{e}; hint: {h}"),
                None => write!(f, "{e}"),
            },
            ListError::Message(m) => f.write_str(m),
        }
    }
}

struct Listed {
    nodes: Result<Vec<NodeInfo>, ListError>,
    cached_age: Option<Duration>,
    warnings: Vec<String>,
}

/// One scope's listing, owned, so it runs as its own task.
struct ScopeJob {
    store: Arc<dyn StateStore>,
    project: String,
    provider: Arc<dyn Provider>,
    key: String,
    cacheable: bool,
    timeout: Option<Duration>,
}

impl ScopeJob {
    /// Lists by the project's tags: from the cache when allowed and young enough, else from the
    /// provider (and then caches it).
    async fn run(self, cache: CacheUse) -> Listed {
        let mut warnings = Vec::new();
        if self.cacheable && !cache.max_age.is_zero() {
            match self.store.get_inventory(&self.project, &self.key).await {
                Ok(Some(r)) => {
                    let age = servable_age(r.fetched_at, OffsetDateTime::now_utc(), cache.max_age);
                    if let (Some(age), Some(nodes)) = (age, decode(&r.payload)) {
                        return Listed {
                            nodes: Ok(nodes),
                            cached_age: Some(age),
                            warnings,
                        };
                    }
                }
                Ok(None) => {}
                Err(e) => warnings.push(format!(
                    "cannot read the cached listing of {}: {}; listing it now",
                    self.key,
                    chain(&e)
                )),
            }
        }
        // The start of the listing: whatever changes after it may be missing from it.
        let fetched_at = OffsetDateTime::now_utc();
        let filter = TagFilter::project(&self.project);
        let listed = match self.timeout {
            Some(t) => tokio::time::timeout(t, self.provider.list(&filter))
                .await
                .map_err(|_| ListError::Message(format!("no answer within {} s", t.as_secs()))),
            None => Ok(self.provider.list(&filter).await),
        };
        let nodes = match listed {
            Err(e) => Err(e),
            Ok(Err(e)) => Err(ListError::Provider(e)),
            Ok(Ok(nodes)) => Ok(nodes),
        };
        if let (true, Ok(nodes)) = (self.cacheable, &nodes) {
            let stored = match encode(nodes.clone()) {
                Ok(payload) => self
                    .store
                    .put_inventory(&InventoryRecord {
                        project: self.project.clone(),
                        scope: self.key.clone(),
                        fetched_at,
                        payload,
                    })
                    .await
                    .map(|_| ())
                    .map_err(|e| chain(&e)),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = stored {
                warnings.push(format!("cannot cache the listing of {}: {e}", self.key));
            }
        }
        Listed {
            nodes,
            cached_age: None,
            warnings,
        }
    }
}

/// How old a cached listing is, if it may be served: fetched at or before `now` and less than
/// `max_age` ago (`max_age` zero: never). A listing from the future (a clock set back since) is
/// not served.
pub fn servable_age(
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

#[cfg(test)]
mod tests {
    use gantry_provider::testkit::MemoryProvider;
    use gantry_provider::{NodeState, Provider as _};

    use super::*;

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

    fn scope(
        key: &str,
        provider: Arc<dyn Provider>,
        on_error: OnError,
        clusters: &[&str],
    ) -> Scope {
        Scope {
            key: key.into(),
            kind: key.into(),
            region: None,
            what: format!("scope {key}"),
            provider,
            cacheable: false,
            timeout: None,
            on_error,
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn every_scope_is_merged_and_a_failed_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> =
            Arc::new(gantry_state::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let seeded = async |cluster: &str| {
            let p = MemoryProvider::new();
            let mut t = gantry_core::Tags::new();
            t.insert(tags::PROJECT.into(), "p".into());
            t.insert(tags::CLUSTER.into(), cluster.into());
            p.create_node(&gantry_provider::NodeRequest {
                name: format!("{cluster}-db-1"),
                project: "p".into(),
                cluster: cluster.into(),
                pool: "db".into(),
                index: 1,
                size: "small".into(),
                image: "default".into(),
                labels: Default::default(),
                tags: t,
            })
            .await
            .unwrap();
            Arc::new(p)
        };
        let a = seeded("x").await;
        let b = seeded("y").await;
        let down = Arc::new(MemoryProvider::new());
        down.fail_lists
            .store(1, std::sync::atomic::Ordering::SeqCst);
        let records = ProjectRecords::load(store.as_ref(), "p").await.unwrap();
        let inv = list_project(
            &store,
            records,
            vec![
                scope("a", a, OnError::Fail, &[]),
                scope("down", down, OnError::Warn, &[]),
                scope("b", b, OnError::Quiet, &[]),
            ],
            CacheUse::LIVE,
        )
        .await
        .unwrap();
        let names: Vec<(&str, Option<usize>)> = inv
            .clusters
            .iter()
            .map(|c| (c.name.as_str(), c.scope))
            .collect();
        assert_eq!(names, [("x", Some(0)), ("y", Some(2))]);
        assert_eq!(inv.nodes().len(), 2);
        assert_eq!(inv.warnings.len(), 1, "{:?}", inv.warnings);
        assert!(
            inv.warnings[0]
                .message
                .starts_with("cannot list scope down: ")
        );
        assert_eq!(inv.scope_of_cluster("y").map(|s| s.key.as_str()), Some("b"));
    }
}
