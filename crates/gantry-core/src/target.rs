//! What a command acts on: `demo` (every node), `demo/2` (node 2, any pool when the index is
//! unique, or the only pool), `demo/db-2` or `demo/demo-db-2` (one node by name), `demo:db`
//! (one pool).

use crate::CoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    All,
    /// `demo/2`: the node with this index (resolved against the cluster's nodes).
    Index(u32),
    /// `demo/demo-db-2` or `demo/db-2`: a node by (possibly shortened) name.
    Name(String),
    /// `demo:db`
    Pool(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub cluster: String,
    pub selector: Selector,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, CoreError> {
        let bad = |reason: &str| {
            Err(CoreError::InvalidTarget {
                target: s.to_string(),
                reason: reason.to_string(),
            })
        };
        if let Some((cluster, pool)) = s.split_once(':') {
            if pool.is_empty() {
                return bad("pool name after ':' is empty (write CLUSTER:POOL)");
            }
            crate::validate_name(cluster)?;
            return Ok(Target {
                cluster: cluster.into(),
                selector: Selector::Pool(pool.into()),
            });
        }
        if let Some((cluster, node)) = s.split_once('/') {
            crate::validate_name(cluster)?;
            if node.is_empty() {
                return bad("node after '/' is empty (write CLUSTER/N or CLUSTER/NODE-NAME)");
            }
            let selector = match node.parse::<u32>() {
                Ok(0) => return bad("nodes are numbered from 1"),
                Ok(i) => Selector::Index(i),
                Err(_) => Selector::Name(node.into()),
            };
            return Ok(Target {
                cluster: cluster.into(),
                selector,
            });
        }
        crate::validate_name(s)?;
        Ok(Target {
            cluster: s.into(),
            selector: Selector::All,
        })
    }

    /// Whether `node` (with its pool and index) is selected.
    pub fn selects(&self, node_name: &str, pool: &str, index: u32) -> bool {
        match &self.selector {
            Selector::All => true,
            Selector::Index(i) => *i == index,
            Selector::Pool(p) => p == pool,
            Selector::Name(n) => n == node_name || format!("{}-{}", self.cluster, n) == node_name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(Target::parse("demo").unwrap().selector, Selector::All);
        assert_eq!(
            Target::parse("demo/2").unwrap().selector,
            Selector::Index(2)
        );
        assert_eq!(
            Target::parse("demo:db").unwrap().selector,
            Selector::Pool("db".into())
        );
        let t = Target::parse("demo/db-3").unwrap();
        assert!(t.selects("demo-db-3", "db", 3));
        assert!(!t.selects("demo-db-2", "db", 2));
        assert!(Target::parse("demo/0").is_err());
        assert!(Target::parse("demo:").is_err());
        assert!(Target::parse("Demo").is_err());
    }
}
