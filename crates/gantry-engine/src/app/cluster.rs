//! A cluster as every command sees it: its record and its decoded spec (loaded in one place,
//! [`crate::record`], re-exported here) and the nodes a target names among the ones a provider
//! lists.

use std::sync::Arc;

use gantry_core::Target;
use gantry_core::tags::TagFilter;
use gantry_core::target::Selector;
use gantry_provider::{NodeInfo, Provider};

use crate::EngineError;
pub use crate::record::{LoadedCluster, decode_spec, load_cluster};

/// The nodes `target` names among those `provider` lists for its cluster (whoever made them),
/// in the provider's order. An error when the cluster has no nodes, when nothing matches, and
/// when a bare index matches nodes of several pools.
pub async fn select_nodes(
    provider: &Arc<dyn Provider>,
    project: &str,
    target: &Target,
) -> Result<Vec<NodeInfo>, EngineError> {
    let all = provider
        .list(&TagFilter::cluster(project, &target.cluster))
        .await?;
    select(all, project, target)
}

pub(crate) fn select(
    all: Vec<NodeInfo>,
    project: &str,
    target: &Target,
) -> Result<Vec<NodeInfo>, EngineError> {
    if all.is_empty() {
        return Err(EngineError::EmptyCluster {
            project: project.into(),
            cluster: target.cluster.clone(),
        });
    }
    let names = |nodes: &[NodeInfo]| {
        nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen: Vec<NodeInfo> = all
        .iter()
        .filter(|n| target.selects(&n.name, &n.pool, n.index))
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err(EngineError::NoNodes {
            cluster: target.cluster.clone(),
            target: "this target".into(),
            nodes: names(&all),
        });
    }
    if let Selector::Index(index) = target.selector
        && chosen.len() > 1
    {
        return Err(EngineError::AmbiguousIndex {
            cluster: target.cluster.clone(),
            index,
            nodes: names(&chosen),
        });
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use gantry_provider::NodeState;

    use super::*;

    fn node(pool: &str, index: u32) -> NodeInfo {
        NodeInfo {
            name: format!("c-{pool}-{index}"),
            provider_id: format!("{pool}{index}"),
            pool: pool.into(),
            index,
            address: None,
            ssh: None,
            state: NodeState::Running,
            tags: Default::default(),
            created_at: String::new(),
            host_key: None,
        }
    }

    #[test]
    fn targets_select_nodes_or_say_why_not() {
        let all = vec![node("db", 1), node("db", 2), node("web", 1)];
        let t = |s: &str| Target::parse(s).unwrap();
        assert_eq!(select(all.clone(), "p", &t("c")).unwrap().len(), 3);
        assert_eq!(
            select(all.clone(), "p", &t("c:web")).unwrap()[0].name,
            "c-web-1"
        );
        assert_eq!(
            select(all.clone(), "p", &t("c/2")).unwrap()[0].name,
            "c-db-2"
        );
        assert!(matches!(
            select(all.clone(), "p", &t("c/1")),
            Err(EngineError::AmbiguousIndex { index: 1, .. })
        ));
        assert!(matches!(
            select(all, "p", &t("c/9")),
            Err(EngineError::NoNodes { .. })
        ));
        assert!(matches!(
            select(vec![], "p", &t("c")),
            Err(EngineError::EmptyCluster { .. })
        ));
    }
}
