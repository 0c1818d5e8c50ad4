//! Names of clusters, pools and nodes.
//!
//! Node names are `<cluster>-<pool>-<n>`, numbered from 1. Names must be usable as DNS labels,
//! cloud resource names and directory names alike, so they are restricted to `[a-z0-9-]`.

use crate::CoreError;

/// Longest cluster or pool name accepted (keeps node names within DNS label limits).
pub const MAX_NAME_LEN: usize = 30;

/// Checks a cluster or pool name: 1..=30 chars of `[a-z0-9-]`, starting with a letter, not
/// ending with `-`.
pub fn validate_name(name: &str) -> Result<(), CoreError> {
    let bad = |reason: &str| {
        Err(CoreError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad(&format!("must be at most {MAX_NAME_LEN} characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("must start with a lowercase letter");
    }
    if name.ends_with('-') {
        return bad("must not end with '-'");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return bad(&format!(
            "contains {c:?}; use lowercase letters, digits and '-'"
        ));
    }
    Ok(())
}

/// The parts of a node name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName {
    pub cluster: String,
    pub pool: String,
    pub index: u32,
}

impl NodeName {
    pub fn to_name(&self) -> String {
        node_name(&self.cluster, &self.pool, self.index)
    }
}

/// `<cluster>-<pool>-<index>`.
pub fn node_name(cluster: &str, pool: &str, index: u32) -> String {
    format!("{cluster}-{pool}-{index}")
}

/// Splits a node name given the cluster name (pool names may contain '-').
pub fn parse_node_name(cluster: &str, name: &str) -> Option<NodeName> {
    let rest = name.strip_prefix(cluster)?.strip_prefix('-')?;
    let (pool, index) = rest.rsplit_once('-')?;
    let index: u32 = index.parse().ok()?;
    if pool.is_empty() || index == 0 {
        return None;
    }
    Some(NodeName {
        cluster: cluster.to_string(),
        pool: pool.to_string(),
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = node_name("demo", "db-main", 12);
        assert_eq!(n, "demo-db-main-12");
        let p = parse_node_name("demo", &n).unwrap();
        assert_eq!((p.pool.as_str(), p.index), ("db-main", 12));
        assert!(parse_node_name("demo", "demo-db-0").is_none());
        assert!(parse_node_name("demo", "other-db-1").is_none());
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in ["", "Demo", "1abc", "a_b", "abc-", &"a".repeat(31)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["demo", "a", "db-2", "x9"] {
            validate_name(good).unwrap();
        }
    }
}
