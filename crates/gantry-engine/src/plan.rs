//! Desired (spec) vs observed (provider listing by tags) → what `up` must do.
//!
//! Pure arithmetic: no IO, so every case is a unit test. The desired set of a pool of `count`
//! nodes is indices `1..=count`; nodes beyond it (or of pools no longer in the spec) are
//! removed, missing ones created, stopped ones started. Numbering therefore continues on grow
//! and shrinking removes the highest indices.

use std::collections::BTreeMap;

use gantry_core::ClusterSpec;
use gantry_core::tags::{self, NodeTagInput, Tags};
use gantry_provider::{NodeInfo, NodeRequest, NodeState};
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub create: Vec<NodeRequest>,
    pub start: Vec<NodeInfo>,
    pub delete: Vec<NodeInfo>,
    /// Running nodes that stay as they are.
    pub keep: Vec<NodeInfo>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.start.is_empty() && self.delete.is_empty()
    }

    /// Replaces the planned nodes with `nodes` of the same names (the same nodes as they are
    /// now, e.g. after `up` moved their tags): what the plan does to each node depends only on
    /// its name and state, so it stays the same plan.
    pub fn refresh(&mut self, nodes: &[NodeInfo]) {
        let by_name: BTreeMap<&str, &NodeInfo> =
            nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        for n in self
            .start
            .iter_mut()
            .chain(self.delete.iter_mut())
            .chain(self.keep.iter_mut())
        {
            if let Some(now) = by_name.get(n.name.as_str()) {
                *n = (*now).clone();
            }
        }
    }
}

/// Identity of the cluster whose nodes are planned.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub project: &'a str,
    pub cluster_uid: &'a str,
    pub owner: &'a str,
    /// The id of this gantry world (the `gantry-world` tag).
    pub world: &'a str,
    /// RFC 3339.
    pub expires: &'a str,
}

/// Tags of the cluster's supporting resources (network, firewall, key): the nodes' tags
/// without the per-node keys, so they carry the cluster, its uid, owner and world even when no
/// node is created.
pub fn cluster_tags(spec: &ClusterSpec, input: &PlanInput<'_>) -> Tags {
    let mut t = tags::node_tags(&NodeTagInput {
        project: input.project,
        cluster: &spec.name,
        cluster_uid: input.cluster_uid,
        pool: "",
        index: 0,
        owner: input.owner,
        world: input.world,
        expires: input.expires,
        extra: &spec.tags,
    });
    t.remove(tags::POOL);
    t.remove(tags::INDEX);
    t
}

pub fn plan(spec: &ClusterSpec, observed: &[NodeInfo], input: &PlanInput<'_>) -> Plan {
    let mut by_name: BTreeMap<&str, &NodeInfo> =
        observed.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut out = Plan::default();
    for pool in &spec.pools {
        for index in 1..=pool.count {
            let name = gantry_core::node_name(&spec.name, &pool.name, index);
            match by_name.remove(name.as_str()) {
                Some(n) if matches!(n.state, NodeState::Running | NodeState::Pending) => {
                    out.keep.push(n.clone())
                }
                Some(n) if n.state == NodeState::Terminated => {
                    out.create.push(request(spec, pool, index, input))
                }
                Some(n) => out.start.push(n.clone()),
                None => out.create.push(request(spec, pool, index, input)),
            }
        }
    }
    out.delete = by_name.into_values().cloned().collect();
    out.delete
        .sort_by(|a, b| (&a.pool, b.index).cmp(&(&b.pool, a.index)));
    out
}

fn request(
    spec: &ClusterSpec,
    pool: &gantry_core::PoolSpec,
    index: u32,
    input: &PlanInput<'_>,
) -> NodeRequest {
    let t: Tags = tags::node_tags(&NodeTagInput {
        project: input.project,
        cluster: &spec.name,
        cluster_uid: input.cluster_uid,
        pool: &pool.name,
        index,
        owner: input.owner,
        world: input.world,
        expires: input.expires,
        extra: &spec.tags,
    });
    NodeRequest {
        name: gantry_core::node_name(&spec.name, &pool.name, index),
        project: input.project.into(),
        cluster: spec.name.clone(),
        pool: pool.name.clone(),
        index,
        size: pool.size.clone(),
        image: pool.image.clone(),
        labels: pool.labels.clone(),
        tags: t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_core::{NetworkSpec, PoolSpec, ProviderOptions, ProviderSpec, Readiness};

    fn spec(counts: &[(&str, u32)]) -> ClusterSpec {
        ClusterSpec {
            name: "demo".into(),
            provider: ProviderSpec::new("local", ProviderOptions::default()),
            pools: counts
                .iter()
                .map(|(n, c)| PoolSpec {
                    name: (*n).into(),
                    count: *c,
                    size: "small".into(),
                    image: "default".into(),
                    labels: Default::default(),
                })
                .collect(),
            network: NetworkSpec::default(),
            lifetime: std::time::Duration::from_secs(3600),
            ssh_user: None,
            readiness: Readiness::Ssh,
            tags: Default::default(),
            blueprints: vec![],
        }
    }

    fn node(pool: &str, index: u32, state: NodeState) -> NodeInfo {
        NodeInfo {
            name: gantry_core::node_name("demo", pool, index),
            provider_id: format!("id-{pool}-{index}"),
            pool: pool.into(),
            index,
            address: None,
            ssh: None,
            state,
            tags: Default::default(),
            created_at: String::new(),
            host_key: None,
        }
    }

    const INPUT: PlanInput<'static> = PlanInput {
        project: "p",
        cluster_uid: "u",
        owner: "o",
        world: "w",
        expires: "2099-01-01T00:00:00Z",
    };

    fn names<T>(v: &[T], f: impl Fn(&T) -> &str) -> Vec<String> {
        v.iter().map(|x| f(x).to_string()).collect()
    }

    #[test]
    fn fresh_cluster_creates_everything_tagged() {
        let p = plan(&spec(&[("db", 3)]), &[], &INPUT);
        assert_eq!(
            names(&p.create, |r| &r.name),
            ["demo-db-1", "demo-db-2", "demo-db-3"]
        );
        assert_eq!(p.create[1].tags[tags::INDEX], "2");
        assert_eq!(p.create[0].tags[tags::CLUSTER_UID], "u");
        assert_eq!(p.create[0].tags[tags::WORLD], "w");
        let ct = cluster_tags(&spec(&[("db", 1)]), &INPUT);
        assert_eq!(ct[tags::WORLD], "w");
        assert!(!ct.contains_key(tags::POOL) && !ct.contains_key(tags::INDEX));
        assert!(p.delete.is_empty() && p.start.is_empty());
    }

    #[test]
    fn grow_continues_numbering_and_fills_gaps() {
        let observed = [
            node("db", 1, NodeState::Running),
            node("db", 3, NodeState::Running),
        ];
        let p = plan(&spec(&[("db", 5)]), &observed, &INPUT);
        assert_eq!(
            names(&p.create, |r| &r.name),
            ["demo-db-2", "demo-db-4", "demo-db-5"]
        );
        assert_eq!(p.keep.len(), 2);
    }

    #[test]
    fn shrink_removes_highest_indices_and_dropped_pools() {
        let observed: Vec<_> = (1..=4)
            .map(|i| node("db", i, NodeState::Running))
            .chain([node("old", 1, NodeState::Stopped)])
            .collect();
        let p = plan(&spec(&[("db", 2)]), &observed, &INPUT);
        assert_eq!(
            names(&p.delete, |n| &n.name),
            ["demo-db-4", "demo-db-3", "demo-old-1"]
        );
        assert!(p.create.is_empty());
    }

    #[test]
    fn stopped_nodes_are_started_and_converged_plan_is_empty() {
        let observed = [
            node("db", 1, NodeState::Stopped),
            node("db", 2, NodeState::Running),
        ];
        let p = plan(&spec(&[("db", 2)]), &observed, &INPUT);
        assert_eq!(names(&p.start, |n| &n.name), ["demo-db-1"]);
        let converged = [
            node("db", 1, NodeState::Running),
            node("db", 2, NodeState::Running),
        ];
        assert!(plan(&spec(&[("db", 2)]), &converged, &INPUT).is_empty());
    }
}
