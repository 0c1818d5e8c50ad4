//! Tags volumes: Docker labels are immutable, so `set_tags` writes a node's new tag set to a small
//! labelled volume (`<container>.tags.<seq>`, `gantry.kind=tags`, `gantry.for=<container>`) and
//! `list` lays the newest one over the container's own labels. They go with the node on delete
//! and with the cluster on destroy.

use std::collections::HashMap;

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{ListVolumesOptions, RemoveVolumeOptions};
use gantry_core::tags::{self, TagFilter, Tags};
use gantry_provider::NodeInfo;

use super::{DockerProvider, gantry_labels};
use crate::error::DockerError;
use crate::{LABEL_FOR, LABEL_KIND, LABEL_SEQ, LABEL_TAGS, container_name};

impl DockerProvider {
    /// The tag sets written by `set_tags`, newest per container, of the containers of
    /// `project` (all projects when None).
    pub(super) async fn overrides(
        &self,
        project: Option<&str>,
    ) -> Result<HashMap<String, Tags>, DockerError> {
        let d = self.docker().await?;
        let mut labels = vec![format!("{LABEL_KIND}=tags")];
        if let Some(p) = project {
            labels.push(format!("{}={p}", tags::PROJECT));
        }
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), labels);
        let vols = d
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(DockerError::api("list volumes", "tags"))?;
        let mut best: HashMap<String, (String, Tags)> = HashMap::new();
        for v in vols.volumes.unwrap_or_default() {
            let (Some(for_), Some(seq), Some(json)) = (
                v.labels.get(LABEL_FOR),
                v.labels.get(LABEL_SEQ),
                v.labels.get(LABEL_TAGS),
            ) else {
                continue;
            };
            let Ok(t) = serde_json::from_str::<Tags>(json) else {
                continue;
            };
            if best.get(for_).is_none_or(|(s, _)| s < seq) {
                best.insert(for_.clone(), (seq.clone(), t));
            }
        }
        Ok(best.into_iter().map(|(k, (_, t))| (k, t)).collect())
    }

    /// Volumes of the tag sets of one container.
    pub(super) async fn tag_volumes(
        &self,
        container: &str,
    ) -> Result<Vec<(String, String)>, DockerError> {
        let d = self.docker().await?;
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_string(),
            vec![
                format!("{LABEL_KIND}=tags"),
                format!("{LABEL_FOR}={container}"),
            ],
        );
        let vols = d
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(DockerError::api("list volumes", container))?;
        Ok(vols
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                let seq = v.labels.get(LABEL_SEQ).cloned().unwrap_or_default();
                (v.name, seq)
            })
            .collect())
    }

    pub(super) async fn remove_volume(&self, name: &str) -> Result<(), DockerError> {
        let d = self.docker().await?;
        match d
            .remove_volume(name, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(DockerError::api("remove volume", name)(e)),
        }
    }

    pub(super) async fn set_node_tags(
        &self,
        node: &NodeInfo,
        want: &Tags,
    ) -> Result<NodeInfo, DockerError> {
        for k in [tags::PROJECT, tags::CLUSTER] {
            if let Some(v) = want.get(k)
                && node.tags.get(k) != Some(v)
            {
                return Err(DockerError::Invalid(format!(
                    "the {k} tag of a docker node cannot change"
                )));
            }
        }
        let project = node.tags.get(tags::PROJECT).cloned().unwrap_or_default();
        let cname = container_name(&project, &node.name);
        let mut merged = node.tags.clone();
        merged.extend(want.iter().map(|(k, v)| (k.clone(), v.clone())));
        let seq = format!(
            "{:020}",
            time::OffsetDateTime::now_utc().unix_timestamp_nanos()
        );
        let mut labels: HashMap<String, String> =
            merged.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.insert(LABEL_KIND.into(), "tags".into());
        labels.insert(LABEL_FOR.into(), cname.clone());
        labels.insert(LABEL_SEQ.into(), seq.clone());
        labels.insert(
            LABEL_TAGS.into(),
            serde_json::to_string(&merged).unwrap_or_default(),
        );
        let vname = format!("{cname}.tags.{seq}");
        let d = self.docker().await?;
        d.create_volume(VolumeCreateRequest {
            name: Some(vname.clone()),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .map_err(DockerError::api("create volume", &vname))?;
        // The newest wins in `list`; the older ones are only clutter now.
        for (old, s) in self.tag_volumes(&cname).await? {
            if s < seq {
                self.remove_volume(&old).await?;
            }
        }
        let mut n = node.clone();
        n.tags = merged;
        Ok(n)
    }

    /// Removes the tags volumes the filter matches (a crash may have left some behind once
    /// their container was gone).
    pub(super) async fn delete_tag_volumes(&self, filter: &TagFilter) -> Result<(), DockerError> {
        let d = self.docker().await?;
        let vols = d
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(Self::label_filters(filter, "tags")),
            }))
            .await
            .map_err(DockerError::api("list volumes", "tags"))?;
        // The engine filters by label equality; whose a resource is (`filter.world`) is checked
        // here, on its labels.
        for v in vols.volumes.unwrap_or_default() {
            if !filter.matches(&gantry_labels(&v.labels)) {
                continue;
            }
            self.remove_volume(&v.name).await?;
        }
        Ok(())
    }
}
