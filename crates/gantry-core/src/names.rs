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

/// Longest login user name accepted (Linux's limit).
pub const MAX_USER_LEN: usize = 32;

/// Checks a login user name (the spec's `ssh.user`, or one a provider reports): 1..=32
/// characters of `[A-Za-z0-9._-]`, not starting with `-` or `.`. It ends up in ssh-config and
/// inventories, so nothing that could be read as another option or line gets through.
pub fn validate_user(user: &str) -> Result<(), CoreError> {
    let bad = |reason: &str| {
        Err(CoreError::InvalidName {
            name: user.to_string(),
            reason: reason.to_string(),
        })
    };
    if user.is_empty() {
        return bad("must not be empty");
    }
    if user.len() > MAX_USER_LEN {
        return bad(&format!("must be at most {MAX_USER_LEN} characters"));
    }
    if user.starts_with(['-', '.']) {
        return bad("must not start with '-' or '.'");
    }
    if let Some(c) = user
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!(
            "contains {c:?}; use letters, digits, '.', '_' and '-'"
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

/// A pool of another cluster that makes the same node names as a pool of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameCollision {
    /// This cluster's pool.
    pub pool: String,
    pub other_cluster: String,
    pub other_pool: String,
}

/// The pools of `cluster` whose node names another cluster's pool makes too. A node name is
/// `<cluster>-<pool>-<n>` and `n` has no `-`, so two (cluster, pool) pairs make the same names
/// exactly when `<cluster>-<pool>` is the same string: cluster `a` with pool `b-c` and cluster
/// `a-b` with pool `c` both make `a-b-c-1`, whatever their counts. `others` are (cluster, pool)
/// pairs; those of `cluster` itself are ignored.
pub fn name_collisions<'a>(
    cluster: &str,
    pools: impl IntoIterator<Item = &'a str>,
    others: &[(String, String)],
) -> Vec<NameCollision> {
    let mut out = Vec::new();
    for pool in pools {
        let prefix = format!("{cluster}-{pool}");
        for (oc, op) in others {
            if oc != cluster && format!("{oc}-{op}") == prefix {
                let c = NameCollision {
                    pool: pool.to_string(),
                    other_cluster: oc.clone(),
                    other_pool: op.clone(),
                };
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    out
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
    fn user_names_are_plain_login_names() {
        for good in ["root", "ec2-user", "alice.b", "_svc", "u1"] {
            validate_user(good).unwrap();
        }
        for bad in [
            "",
            "-oProxyCommand=x",
            ".x",
            "a b",
            "a\nb",
            "a;b",
            &"u".repeat(33),
        ] {
            assert!(validate_user(bad).is_err(), "{bad:?} accepted");
        }
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

    #[test]
    fn clusters_whose_names_and_pools_make_the_same_node_names_collide() {
        let others = [
            ("a".to_string(), "b-c".to_string()),
            ("a".to_string(), "db".to_string()),
            ("a-b".to_string(), "x".to_string()),
            ("a-b".to_string(), "c".to_string()),
        ];
        let hit = name_collisions("a-b", ["c", "d"], &others);
        assert_eq!(
            hit,
            [NameCollision {
                pool: "c".into(),
                other_cluster: "a".into(),
                other_pool: "b-c".into(),
            }],
            "a-b/c and a/b-c both make a-b-c-N; the cluster's own pools never collide"
        );
        assert_eq!(node_name("a-b", "c", 1), node_name("a", "b-c", 1));
        assert!(name_collisions("a", ["b"], &others).is_empty());
        assert_eq!(name_collisions("a", ["b-x"], &others).len(), 1);
    }
}
