//! Gantry's tags: the truth about what exists.
//!
//! Every provider resource carries these keys. Destroy and GC find resources by them, never
//! only from gantry's own records, so a crash between "provider created it" and "state recorded
//! it" leaks nothing.

use std::collections::BTreeMap;

pub const PROJECT: &str = "gantry-project";
pub const CLUSTER: &str = "gantry-cluster";
pub const CLUSTER_UID: &str = "gantry-cluster-uid";
pub const POOL: &str = "gantry-pool";
pub const INDEX: &str = "gantry-index";
pub const OWNER: &str = "gantry-owner";
pub const EXPIRES: &str = "gantry-expires";

/// Key/value tags, ordered so serialisation is stable.
pub type Tags = BTreeMap<String, String>;

/// A conjunction of `key = value` conditions, used to list resources by tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagFilter {
    pub equals: Tags,
}

impl TagFilter {
    /// Everything of one project.
    pub fn project(project: &str) -> Self {
        let mut equals = Tags::new();
        equals.insert(PROJECT.into(), project.into());
        Self { equals }
    }

    /// Everything of one cluster of one project.
    pub fn cluster(project: &str, cluster: &str) -> Self {
        let mut f = Self::project(project);
        f.equals.insert(CLUSTER.into(), cluster.into());
        f
    }

    pub fn matches(&self, tags: &Tags) -> bool {
        self.equals.iter().all(|(k, v)| tags.get(k) == Some(v))
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
            expires: "2026-01-01T00:00:00Z",
            extra: &extra,
        });
        assert_eq!(t[PROJECT], "p");
        assert_eq!(t["team"], "db");
        assert!(TagFilter::cluster("p", "c").matches(&t));
        assert!(!TagFilter::cluster("p", "d").matches(&t));
        assert!(!TagFilter::project("q").matches(&t));
    }
}
