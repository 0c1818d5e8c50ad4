//! Garbage collection, decided purely: records + what the provider lists + now + grace → a
//! [`GcPlan`]. No IO, so every rule is a unit test; `ops::gc_destroy` and `ops::gc_orphans`
//! carry the plan out, re-checking each decision under the cluster lock.
//!
//! Rules:
//! - Only nodes tagged `gantry-project = <project>` and with a `gantry-cluster` tag are ever
//!   considered; anything else is invisible to gc.
//! - Only this world's nodes are ever destroyed or deleted ([`World::owns`]: tagged with this
//!   world's id, or, made by a gantry from before worlds, carrying the uid of a cluster this
//!   store records). Another world's nodes (another gantry home on the same Docker engine or
//!   AWS account), expired or not, are reported in [`GcPlan::foreign`] with their owner and
//!   never touched; they play no part in deciding whether a cluster of this world expired.
//! - A cluster is **expired** when its record's `expires_at` is before `now`, or, for a cluster
//!   found only by tags (no record), when every node's `gantry-expires` tag is before `now`.
//!   Expired clusters are destroyed whole (every node carrying the cluster's tags), with no
//!   grace period: the lifetime was the grace.
//! - A node is an **orphan** when it belongs to no known cluster: no record of its cluster (and
//!   the cluster is not expired), or a record whose uid differs from the node's
//!   `gantry-cluster-uid` (a leftover of an earlier cluster of the same name). Orphans are
//!   deleted once older than the grace period (from `created_at`); younger ones, and ones whose
//!   age cannot be told, wait.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_core::tags::{self, World};
use gantry_provider::NodeInfo;
use gantry_state::ClusterRecord;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Everything gc decides from.
#[derive(Debug, Clone)]
pub struct GcInput<'a> {
    pub project: &'a str,
    /// This world's id (the store's `world_id`).
    pub world: &'a str,
    pub records: &'a [ClusterRecord],
    /// What the provider lists for the project (by tags).
    pub nodes: &'a [NodeInfo],
    pub now: OffsetDateTime,
    pub grace: Duration,
}

/// A cluster whose lifetime is over.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiredCluster {
    pub cluster: String,
    /// false: found only by tags (no record).
    pub tracked: bool,
    pub expires_at: OffsetDateTime,
    /// Every node carrying the cluster's tags, by name.
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanReason {
    /// No record of the node's cluster.
    NoRecord,
    /// The cluster's record has another uid than the node's `gantry-cluster-uid`.
    UidMismatch,
}

impl OrphanReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            OrphanReason::NoRecord => "no_record",
            OrphanReason::UidMismatch => "uid_mismatch",
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            OrphanReason::NoRecord => "no record of its cluster",
            OrphanReason::UidMismatch => "its cluster-uid is not the recorded cluster's",
        }
    }
}

/// A node that belongs to no known cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Orphan {
    pub cluster: String,
    pub node: NodeInfo,
    pub reason: OrphanReason,
    /// Time since `created_at`; None when it cannot be parsed (such a node is never deleted).
    pub age: Option<Duration>,
    /// For a waiting orphan: how long until it may be deleted (None: never, age unknown).
    pub eligible_in: Option<Duration>,
}

/// Nodes of a cluster name that another world made: shown, never touched.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignCluster {
    pub cluster: String,
    /// Who made them ([`tags::owner_of`]), each maker once.
    pub owners: Vec<String>,
    /// Their names, sorted.
    pub nodes: Vec<String>,
    /// Whether every one of them is past its `gantry-expires` (gc still leaves them alone).
    pub expired: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcPlan {
    /// Destroy these clusters, in name order.
    pub expired: Vec<ExpiredCluster>,
    /// Delete these nodes, in (cluster, node) order.
    pub orphans: Vec<Orphan>,
    /// Orphans left alone this time (within the grace period, or of unknown age).
    pub waiting: Vec<Orphan>,
    /// Other worlds' nodes, by cluster name: never destroyed or deleted.
    pub foreign: Vec<ForeignCluster>,
}

impl GcPlan {
    /// Nothing to destroy or delete (waiting orphans do not count).
    pub fn is_empty(&self) -> bool {
        self.expired.is_empty() && self.orphans.is_empty()
    }
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// The expiry a cluster found only by tags has: the latest `gantry-expires` of its nodes, or
/// None when there are no nodes or one of them has no parseable expiry tag.
pub fn tag_expiry<'a>(nodes: impl IntoIterator<Item = &'a NodeInfo>) -> Option<OffsetDateTime> {
    let mut latest: Option<OffsetDateTime> = None;
    for n in nodes {
        let t = parse_time(n.tags.get(tags::EXPIRES)?)?;
        latest = Some(latest.map_or(t, |l| l.max(t)));
    }
    latest
}

/// Whether a cluster is expired at `now`: by its record when it has one, else by its nodes'
/// tags. Used by the planner and again under the lock before destroying.
pub fn is_expired(record: Option<&ClusterRecord>, nodes: &[NodeInfo], now: OffsetDateTime) -> bool {
    match record {
        Some(r) => r.expires_at < now,
        None => tag_expiry(nodes).is_some_and(|t| t < now),
    }
}

/// Whether `node` belongs to no known cluster, given its cluster's record (if any).
pub fn orphan_reason(record: Option<&ClusterRecord>, node: &NodeInfo) -> Option<OrphanReason> {
    match record {
        None => Some(OrphanReason::NoRecord),
        Some(r) if node.tags.get(tags::CLUSTER_UID) != Some(&r.uid) => {
            Some(OrphanReason::UidMismatch)
        }
        Some(_) => None,
    }
}

/// The age of a node at `now`, from its `created_at`.
pub fn node_age(node: &NodeInfo, now: OffsetDateTime) -> Option<Duration> {
    let created = parse_time(&node.created_at)?;
    Some(Duration::try_from(now - created).unwrap_or(Duration::ZERO))
}

/// Decides what gc does. Pure.
pub fn plan_gc(input: &GcInput<'_>) -> GcPlan {
    let records: BTreeMap<&str, &ClusterRecord> = input
        .records
        .iter()
        .filter(|r| r.project == input.project)
        .map(|r| (r.name.as_str(), r))
        .collect();
    let mut world = World::new(input.world);
    world
        .legacy_uids
        .extend(records.values().map(|r| r.uid.clone()));
    let mut by_cluster: BTreeMap<&str, Vec<&NodeInfo>> = BTreeMap::new();
    let mut foreign: BTreeMap<&str, Vec<&NodeInfo>> = BTreeMap::new();
    for n in input.nodes {
        if n.tags.get(tags::PROJECT).map(String::as_str) != Some(input.project) {
            continue;
        }
        let Some(c) = n.tags.get(tags::CLUSTER).filter(|c| !c.is_empty()) else {
            continue;
        };
        if world.owns(&n.tags) {
            by_cluster.entry(c.as_str()).or_default().push(n);
        } else {
            foreign.entry(c.as_str()).or_default().push(n);
        }
    }
    let mut out = GcPlan::default();
    for (cluster, nodes) in foreign {
        let mut owners: Vec<String> = nodes.iter().map(|n| tags::owner_of(&n.tags)).collect();
        owners.sort();
        owners.dedup();
        let mut names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        names.sort();
        out.foreign.push(ForeignCluster {
            cluster: cluster.into(),
            owners,
            nodes: names,
            expired: tag_expiry(nodes.iter().copied()).is_some_and(|t| t < input.now),
        });
    }
    let mut names: Vec<&str> = records.keys().chain(by_cluster.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let record = records.get(name).copied();
        let mut nodes: Vec<NodeInfo> = by_cluster
            .get(name)
            .map(|v| v.iter().map(|n| (*n).clone()).collect())
            .unwrap_or_default();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        if is_expired(record, &nodes, input.now) {
            let expires_at = match record {
                Some(r) => r.expires_at,
                None => tag_expiry(&nodes).unwrap_or(input.now),
            };
            out.expired.push(ExpiredCluster {
                cluster: name.into(),
                tracked: record.is_some(),
                expires_at,
                nodes: nodes.iter().map(|n| n.name.clone()).collect(),
            });
            continue;
        }
        for n in nodes {
            let Some(reason) = orphan_reason(record, &n) else {
                continue;
            };
            let age = node_age(&n, input.now);
            let eligible_in = age.map(|a| input.grace.saturating_sub(a));
            let orphan = Orphan {
                cluster: name.into(),
                node: n,
                reason,
                age,
                eligible_in,
            };
            match age {
                Some(a) if a >= input.grace => out.orphans.push(Orphan {
                    eligible_in: None,
                    ..orphan
                }),
                _ => out.waiting.push(orphan),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_provider::NodeState;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);
    const WORLD: &str = "w-mine";
    const HOUR: Duration = Duration::from_secs(3600);
    const MIN: Duration = Duration::from_secs(60);

    fn rfc(t: OffsetDateTime) -> String {
        t.format(&Rfc3339).unwrap()
    }

    fn record(name: &str, uid: &str, expires_at: OffsetDateTime) -> ClusterRecord {
        ClusterRecord {
            project: "p".into(),
            name: name.into(),
            uid: uid.into(),
            provider: "local".into(),
            spec_yaml: String::new(),
            spec_json: String::new(),
            spec_hash: String::new(),
            generation: 1,
            status: gantry_state::ClusterStatus::Ready,
            created_at: NOW - 10 * HOUR,
            updated_at: NOW - 10 * HOUR,
            expires_at,
        }
    }

    fn node(
        project: &str,
        cluster: &str,
        uid: &str,
        i: u32,
        expires: OffsetDateTime,
        created: OffsetDateTime,
    ) -> NodeInfo {
        let extra = gantry_core::Tags::new();
        let t = tags::node_tags(&tags::NodeTagInput {
            project,
            cluster,
            cluster_uid: uid,
            pool: "db",
            index: i,
            owner: "me",
            world: WORLD,
            expires: &rfc(expires),
            extra: &extra,
        });
        NodeInfo {
            name: format!("{cluster}-db-{i}"),
            provider_id: format!("/x/{cluster}-db-{i}"),
            pool: "db".into(),
            index: i,
            address: None,
            ssh: None,
            state: NodeState::Running,
            tags: t,
            created_at: rfc(created),
            host_key: None,
        }
    }

    fn gc(records: &[ClusterRecord], nodes: &[NodeInfo], grace: Duration) -> GcPlan {
        plan_gc(&GcInput {
            project: "p",
            world: WORLD,
            records,
            nodes,
            now: NOW,
            grace,
        })
    }

    fn orphan_names(v: &[Orphan]) -> Vec<&str> {
        v.iter().map(|o| o.node.name.as_str()).collect()
    }

    #[test]
    fn healthy_clusters_are_left_alone() {
        let later = NOW + HOUR;
        let records = [record("a", "ua", later)];
        let nodes = [
            node("p", "a", "ua", 1, later, NOW - 5 * HOUR),
            node("p", "a", "ua", 2, later, NOW - 5 * HOUR),
        ];
        let p = gc(&records, &nodes, HOUR);
        assert!(p.is_empty(), "{p:?}");
        assert!(p.waiting.is_empty());
    }

    #[test]
    fn expired_record_destroys_the_whole_cluster_including_foreign_uids() {
        let records = [record("old", "u1", NOW - HOUR)];
        let nodes = [
            node("p", "old", "u1", 1, NOW + HOUR, NOW - 2 * HOUR),
            node("p", "old", "u0", 2, NOW + HOUR, NOW),
        ];
        let p = gc(&records, &nodes, HOUR);
        assert_eq!(p.expired.len(), 1);
        let e = &p.expired[0];
        assert_eq!(e.cluster, "old");
        assert!(e.tracked);
        assert_eq!(e.expires_at, NOW - HOUR);
        assert_eq!(e.nodes, vec!["old-db-1", "old-db-2"]);
        assert!(p.orphans.is_empty() && p.waiting.is_empty(), "{p:?}");
    }

    #[test]
    fn expired_record_without_nodes_is_still_destroyed() {
        let records = [record("gone", "u", NOW - HOUR)];
        let p = gc(&records, &[], HOUR);
        assert_eq!(p.expired.len(), 1);
        assert!(p.expired[0].nodes.is_empty());
    }

    #[test]
    fn the_record_not_the_tags_decides_for_tracked_clusters() {
        // Tags say expired, the record was extended: keep.
        let records = [record("a", "ua", NOW + HOUR)];
        let nodes = [node("p", "a", "ua", 1, NOW - HOUR, NOW - 5 * HOUR)];
        assert!(gc(&records, &nodes, HOUR).is_empty());
    }

    #[test]
    fn untracked_cluster_with_every_tag_expired_is_expired_without_grace() {
        let nodes = [
            node("p", "lost", "u", 1, NOW - HOUR, NOW - 2 * HOUR),
            node("p", "lost", "u", 2, NOW - 30 * MIN, NOW),
        ];
        let p = gc(&[], &nodes, 10 * HOUR);
        assert_eq!(p.expired.len(), 1, "{p:?}");
        assert!(!p.expired[0].tracked);
        assert_eq!(p.expired[0].expires_at, NOW - 30 * MIN);
        assert!(p.orphans.is_empty() && p.waiting.is_empty());
    }

    #[test]
    fn untracked_unexpired_nodes_are_orphans_after_the_grace_period() {
        let nodes = [
            node("p", "lost", "u", 1, NOW + HOUR, NOW - 2 * HOUR),
            node("p", "lost", "u", 2, NOW - HOUR, NOW - 10 * MIN),
        ];
        let p = gc(&[], &nodes, HOUR);
        assert!(p.expired.is_empty(), "one node is not expired: {p:?}");
        assert_eq!(orphan_names(&p.orphans), vec!["lost-db-1"]);
        assert_eq!(p.orphans[0].reason, OrphanReason::NoRecord);
        assert_eq!(p.orphans[0].age, Some(2 * HOUR));
        assert_eq!(orphan_names(&p.waiting), vec!["lost-db-2"]);
        assert_eq!(p.waiting[0].eligible_in, Some(50 * MIN));
        // grace 0: both go
        let p = gc(&[], &nodes, Duration::ZERO);
        assert_eq!(orphan_names(&p.orphans), vec!["lost-db-1", "lost-db-2"]);
        assert!(p.waiting.is_empty());
    }

    #[test]
    fn uid_mismatch_is_an_orphan_of_a_live_cluster() {
        let records = [record("a", "new", NOW + HOUR)];
        let nodes = [
            node("p", "a", "new", 1, NOW + HOUR, NOW - 5 * HOUR),
            node("p", "a", "old", 2, NOW + HOUR, NOW - 5 * HOUR),
        ];
        let p = gc(&records, &nodes, HOUR);
        assert!(p.expired.is_empty());
        assert_eq!(orphan_names(&p.orphans), vec!["a-db-2"]);
        assert_eq!(p.orphans[0].reason, OrphanReason::UidMismatch);
    }

    #[test]
    fn other_projects_and_untagged_nodes_are_never_touched() {
        let mut no_cluster = node("p", "x", "u", 1, NOW - HOUR, NOW - 5 * HOUR);
        no_cluster.tags.remove(tags::CLUSTER);
        let mut no_project = node("p", "y", "u", 1, NOW - HOUR, NOW - 5 * HOUR);
        no_project.tags.remove(tags::PROJECT);
        let nodes = [
            node("q", "other", "u", 1, NOW - HOUR, NOW - 5 * HOUR),
            no_cluster,
            no_project,
        ];
        // A record of another project is ignored too.
        let mut foreign = record("z", "u", NOW - HOUR);
        foreign.project = "q".into();
        let p = gc(&[foreign], &nodes, Duration::ZERO);
        assert_eq!(p, GcPlan::default());
    }

    #[test]
    fn unknown_age_waits_forever_and_bad_expiry_tags_are_not_expired() {
        let mut n = node("p", "lost", "u", 1, NOW - HOUR, NOW - 5 * HOUR);
        n.created_at = "yesterday".into();
        n.tags.insert(tags::EXPIRES.into(), "soon".into());
        let p = gc(&[], &[n], Duration::ZERO);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(p.waiting.len(), 1);
        assert_eq!(p.waiting[0].age, None);
        assert_eq!(p.waiting[0].eligible_in, None);
    }

    #[test]
    fn planning_is_idempotent_once_carried_out() {
        let records = [
            record("old", "u1", NOW - HOUR),
            record("ok", "u2", NOW + HOUR),
        ];
        let nodes = [
            node("p", "old", "u1", 1, NOW - HOUR, NOW - 2 * HOUR),
            node("p", "ok", "u2", 1, NOW + HOUR, NOW - 2 * HOUR),
            node("p", "lost", "u3", 1, NOW + HOUR, NOW - 2 * HOUR),
        ];
        let p = gc(&records, &nodes, HOUR);
        assert_eq!(p.expired.len(), 1);
        assert_eq!(orphan_names(&p.orphans), vec!["lost-db-1"]);
        // What is left after carrying it out plans to nothing.
        let p2 = gc(&records[1..], &nodes[1..2], HOUR);
        assert!(p2.is_empty() && p2.waiting.is_empty(), "{p2:?}");
    }

    /// Another world's nodes (a colleague's home on the same engine) are never gc's to take,
    /// expired or not, however old; they are reported with their owner. Nodes without a world
    /// tag (an older gantry's) are ours only when a record here carries their uid.
    #[test]
    fn other_worlds_nodes_are_shown_never_touched() {
        let theirs = |cluster: &str, i: u32, expires: OffsetDateTime| {
            let mut n = node("p", cluster, "their-uid", i, expires, NOW - 10 * HOUR);
            n.tags.insert(tags::WORLD.into(), "w-theirs".into());
            n.tags.insert(tags::OWNER.into(), "alice".into());
            n
        };
        let legacy = |cluster: &str, uid: &str| {
            let mut n = node("p", cluster, uid, 1, NOW + HOUR, NOW - 10 * HOUR);
            n.tags.remove(tags::WORLD);
            n
        };
        let records = [record("kept", "kept-uid", NOW + HOUR)];
        let nodes = [
            theirs("live", 1, NOW + HOUR),
            theirs("live", 2, NOW + HOUR),
            theirs("dead", 1, NOW - HOUR),
            // An older gantry's node of a cluster this store records: ours, not an orphan.
            legacy("kept", "kept-uid"),
            // An older gantry's node nobody here records: not ours.
            legacy("old", "unknown-uid"),
        ];
        let p = gc(&records, &nodes, Duration::ZERO);
        assert!(p.is_empty(), "nothing of another world is destroyed: {p:?}");
        assert!(p.waiting.is_empty(), "{p:?}");
        let shown: Vec<(&str, bool, usize)> = p
            .foreign
            .iter()
            .map(|f| (f.cluster.as_str(), f.expired, f.nodes.len()))
            .collect();
        assert_eq!(
            shown,
            [("dead", true, 1), ("live", false, 2), ("old", false, 1)]
        );
        assert_eq!(p.foreign[1].owners, ["alice (gantry world w-theirs)"]);
        assert!(p.foreign[2].owners[0].contains("world unknown"), "{p:?}");
    }
}
