//! Gantry's tags: the truth about what exists.
//!
//! Every provider resource carries these keys. Destroy and GC find resources by them, never
//! only from gantry's own records, so a crash between "provider created it" and "state recorded
//! it" leaks nothing.
//!
//! Tags also say *whose* a resource is. On a shared Docker engine or AWS account several gantry
//! homes (or teams) use the same project and cluster names; `gantry-world` names the gantry
//! world (one state store) that made a resource, and [`World::owns`] is the one rule for what
//! gc, bulk destroy and adoption may touch.

use std::collections::{BTreeMap, BTreeSet};

pub const PROJECT: &str = "gantry-project";
pub const CLUSTER: &str = "gantry-cluster";
pub const CLUSTER_UID: &str = "gantry-cluster-uid";
pub const POOL: &str = "gantry-pool";
pub const INDEX: &str = "gantry-index";
pub const OWNER: &str = "gantry-owner";
pub const EXPIRES: &str = "gantry-expires";
/// The id of the gantry world (state store) that made the resource; `gantry-owner` is only the
/// user's name, which two people (or a person and CI) may share.
pub const WORLD: &str = "gantry-world";

/// Which resources belong to one gantry world.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct World {
    /// The world's id (its store's `world_id`).
    pub id: String,
    /// Cluster uids the world's store records. A resource without a `gantry-world` tag was made
    /// by a gantry from before worlds existed: it belongs to this world only if it carries one
    /// of these uids (a cluster uid is a random id, so nobody else's resource has it).
    pub legacy_uids: BTreeSet<String>,
}

impl World {
    pub fn new(id: impl Into<String>) -> World {
        World {
            id: id.into(),
            legacy_uids: BTreeSet::new(),
        }
    }

    /// Adds a recorded cluster uid (see [`World::legacy_uids`]).
    pub fn with_uid(mut self, uid: impl Into<String>) -> World {
        self.legacy_uids.insert(uid.into());
        self
    }

    /// Whether a resource with these tags is this world's.
    pub fn owns(&self, tags: &Tags) -> bool {
        match tags.get(WORLD) {
            Some(w) => !w.is_empty() && *w == self.id,
            None => tags
                .get(CLUSTER_UID)
                .is_some_and(|u| self.legacy_uids.contains(u)),
        }
    }
}

/// Who made a resource, for messages about another world's resources: its `gantry-owner` (the
/// user's name) and its world, e.g. `alice (gantry world 6f1c…)`.
pub fn owner_of(tags: &Tags) -> String {
    let user = tags
        .get(OWNER)
        .filter(|o| !o.is_empty())
        .map(String::as_str)
        .unwrap_or("an unknown user");
    match tags.get(WORLD) {
        Some(w) => format!("{user} (gantry world {w})"),
        None => format!("{user} (an older gantry, world unknown)"),
    }
}

/// Key/value tags, ordered so serialisation is stable.
pub type Tags = BTreeMap<String, String>;

/// A conjunction of `key = value` conditions, used to list resources by tags, and optionally of
/// belonging to one world (see [`World::owns`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagFilter {
    pub equals: Tags,
    /// Only resources of this world. Providers match it on the tags they read back (it cannot
    /// be a server-side `key = value` filter: legacy resources have no world tag).
    pub world: Option<World>,
}

impl TagFilter {
    /// Everything of one project.
    pub fn project(project: &str) -> Self {
        let mut equals = Tags::new();
        equals.insert(PROJECT.into(), project.into());
        Self {
            equals,
            world: None,
        }
    }

    /// Everything of one cluster of one project.
    pub fn cluster(project: &str, cluster: &str) -> Self {
        let mut f = Self::project(project);
        f.equals.insert(CLUSTER.into(), cluster.into());
        f
    }

    /// This filter, restricted to `world`'s resources.
    pub fn in_world(mut self, world: World) -> Self {
        self.world = Some(world);
        self
    }

    pub fn matches(&self, tags: &Tags) -> bool {
        self.equals.iter().all(|(k, v)| tags.get(k) == Some(v))
            && self.world.as_ref().is_none_or(|w| w.owns(tags))
    }
}

/// Tags for one node.
#[derive(Debug, Clone)]
pub struct NodeTagInput<'a> {
    pub project: &'a str,
    pub cluster: &'a str,
    pub cluster_uid: &'a str,
    pub pool: &'a str,
    pub index: u32,
    pub owner: &'a str,
    /// The id of the gantry world that makes the node.
    pub world: &'a str,
    /// RFC 3339 expiry.
    pub expires: &'a str,
    /// User tags from the spec; gantry's own keys win on conflict.
    pub extra: &'a Tags,
}

pub fn node_tags(input: &NodeTagInput<'_>) -> Tags {
    let mut t = input.extra.clone();
    t.insert(PROJECT.into(), input.project.into());
    t.insert(CLUSTER.into(), input.cluster.into());
    t.insert(CLUSTER_UID.into(), input.cluster_uid.into());
    t.insert(POOL.into(), input.pool.into());
    t.insert(INDEX.into(), input.index.to_string());
    t.insert(OWNER.into(), input.owner.into());
    t.insert(WORLD.into(), input.world.into());
    t.insert(EXPIRES.into(), input.expires.into());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gantry_tags_override_user_tags_and_filters_match() {
        let mut extra = Tags::new();
        extra.insert(PROJECT.into(), "evil".into());
        extra.insert("team".into(), "db".into());
        let t = node_tags(&NodeTagInput {
            project: "p",
            cluster: "c",
            cluster_uid: "u",
            pool: "db",
            index: 2,
            owner: "me",
            world: "w1",
            expires: "2026-01-01T00:00:00Z",
            extra: &extra,
        });
        assert_eq!(t[PROJECT], "p");
        assert_eq!(t[WORLD], "w1");
        assert_eq!(t["team"], "db");
        assert!(TagFilter::cluster("p", "c").matches(&t));
        assert!(!TagFilter::cluster("p", "d").matches(&t));
        assert!(!TagFilter::project("q").matches(&t));
    }

    #[test]
    fn a_world_owns_its_tagged_resources_and_legacy_ones_with_a_recorded_uid() {
        let tagged = |world: Option<&str>, uid: &str| {
            let mut t = Tags::new();
            t.insert(PROJECT.into(), "p".into());
            t.insert(CLUSTER_UID.into(), uid.into());
            t.insert(OWNER.into(), "alice".into());
            if let Some(w) = world {
                t.insert(WORLD.into(), w.into());
            }
            t
        };
        let mine = World::new("w1").with_uid("u1");
        assert!(mine.owns(&tagged(Some("w1"), "u9")), "tagged with my world");
        assert!(
            !mine.owns(&tagged(Some("w2"), "u1")),
            "another world, whatever its uid"
        );
        assert!(
            !mine.owns(&tagged(Some(""), "u1")),
            "an empty world is nobody's"
        );
        assert!(mine.owns(&tagged(None, "u1")), "legacy with a recorded uid");
        assert!(
            !mine.owns(&tagged(None, "u2")),
            "legacy with an unknown uid"
        );
        let f = TagFilter::project("p").in_world(mine);
        assert!(f.matches(&tagged(Some("w1"), "u1")));
        assert!(!f.matches(&tagged(Some("w2"), "u1")));
        assert!(TagFilter::project("p").matches(&tagged(Some("w2"), "u1")));
        assert_eq!(
            owner_of(&tagged(Some("w2"), "u1")),
            "alice (gantry world w2)"
        );
        assert!(owner_of(&tagged(None, "u1")).contains("world unknown"));
    }
}
