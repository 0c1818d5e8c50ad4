//! A cluster's stored record with the spec it was last brought up with, decoded in one place so
//! that a record whose spec cannot be decoded (written by a newer gantry, or damaged) is an
//! error naming it, never silently a local cluster with default readiness. Below both the
//! operations (`ops`, which read a record's readiness and pools) and the application layer
//! (`app`, which loads a cluster by name).

use gantry_core::ClusterSpec;
use gantry_state::{ClusterRecord, StateStore};

use crate::EngineError;

/// A recorded cluster and the spec it was last brought up with.
#[derive(Debug, Clone)]
pub struct LoadedCluster {
    pub record: ClusterRecord,
    pub spec: ClusterSpec,
}

/// The spec a record was last brought up with; an error naming the record when it does not
/// decode, or names another provider than the record does (its options are the provider
/// kind's to decode, when the provider is built).
pub fn decode_spec(record: &ClusterRecord) -> Result<ClusterSpec, EngineError> {
    let unreadable = |source| EngineError::RecordUnreadable {
        project: record.project.clone(),
        cluster: record.name.clone(),
        provider: record.provider.clone(),
        source,
    };
    let spec = serde_json::from_str::<ClusterSpec>(&record.spec_json).map_err(unreadable)?;
    if spec.provider_name() != record.provider {
        return Err(unreadable(<serde_json::Error as serde::de::Error>::custom(
            format!(
                "its spec names the provider {}, its record {}",
                spec.provider_name(),
                record.provider
            ),
        )));
    }
    Ok(spec)
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
