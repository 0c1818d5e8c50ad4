//! A cluster as every command sees it: its record and its decoded spec, loaded in one place so
//! that a record whose spec cannot be decoded (written by a newer gantry, or damaged) is an
//! error naming it, never silently a local cluster with default readiness; and the nodes a
//! target names among the ones a provider lists.

use std::sync::Arc;

use gantry_core::tags::TagFilter;
use gantry_core::target::Selector;
use gantry_core::{ClusterSpec, Target};
use gantry_provider::{NodeInfo, Provider};
use gantry_state::{ClusterRecord, StateStore};

use crate::EngineError;

/// A recorded cluster and the spec it was last brought up with.
#[derive(Debug, Clone)]
pub struct LoadedCluster {
    pub record: ClusterRecord,
    pub spec: ClusterSpec,
}

pub use crate::ops::decode_spec;

/// The record of `cluster` with its spec; `None` when the store has no record of it (it may
/// still have nodes: a run that crashed before recording it, or a lost state file).
pub async fn load_cluster(
    store: &dyn StateStore,
    project: &str,
    cluster: &str,
) -> Result<Option<LoadedCluster>, EngineError> {
    let Some(record) = store.get_cluster(project, cluster).await? else {
        return Ok(None);
    };
    let spec = decode_spec(&record)?;
    Ok(Some(LoadedCluster { record, spec }))
}

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

fn select(
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

    fn record(spec_json: &str) -> ClusterRecord {
        let now = time::OffsetDateTime::now_utc();
        ClusterRecord {
            project: "p".into(),
            name: "c".into(),
            uid: "u".into(),
            provider: "aws".into(),
            spec_yaml: String::new(),
            spec_json: spec_json.into(),
            spec_hash: String::new(),
            generation: 1,
            status: gantry_core::status::ClusterStatus::Ready,
            created_at: now,
            updated_at: now,
            expires_at: now,
        }
    }

    #[test]
    fn an_undecodable_spec_is_an_error_naming_the_record() {
        let e = decode_spec(&record("{\"name\": \"c\", \"provider\": {\"gcp\": {}}}")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("cluster c") && text.contains("project p") && text.contains("aws"),
            "{text}"
        );
        assert!(
            std::error::Error::source(&e).is_some(),
            "keeps the decoder's error"
        );
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
