//! The cluster's security group: found by the cluster's tags (this world's only) or created,
//! its rules converged to the spec's (see `rules`), planned, and deleted with the cluster.

use aws_sdk_ec2::types::ResourceType;
use gantry_core::Tags;
use gantry_core::tags::TagFilter;
use gantry_provider::{ChangeAction, ClusterRequest, ResourceChange};

use crate::{
    AwsProvider, cluster_tags, foreign, network, rules, sdk, tag_filters, tag_spec, tags_of,
    world_of,
};

impl AwsProvider {
    pub(crate) async fn ensure_sg(
        &self,
        req: &ClusterRequest,
        t: &Tags,
        vpc: Option<&str>,
    ) -> gantry_provider::Result<String> {
        let c = self.clients().await?;
        let f = TagFilter::cluster(&req.project, &req.cluster).in_world(world_of(t));
        let name = format!("gantry-{}-{}", req.project, req.cluster);
        let r = self.region();
        let id = network::find_or_create(
            || async {
                let found = c
                    .ec2
                    .describe_security_groups()
                    .set_filters(Some(tag_filters(&f)))
                    .send()
                    .await
                    .map_err(|e| sdk(r, "DescribeSecurityGroups", &name, e))?;
                let groups = found.security_groups();
                let own = groups
                    .iter()
                    .filter(|g| f.matches(&tags_of(g.tags())))
                    .filter_map(|g| g.group_id())
                    .min()
                    .map(str::to_string);
                // Only another world's group of this cluster: never authorized into or used
                // (and creating ours would clash with its name).
                if own.is_none()
                    && let Some(g) = groups.first()
                {
                    let what = format!("security group {}", g.group_id().unwrap_or_default());
                    return Err(foreign(
                        r,
                        "DescribeSecurityGroups",
                        &what,
                        &tags_of(g.tags()),
                    ));
                }
                Ok(own)
            },
            || async {
                let out = c
                    .ec2
                    .create_security_group()
                    .group_name(&name)
                    .description(format!("gantry cluster {}/{}", req.project, req.cluster))
                    .set_vpc_id(vpc.map(str::to_string))
                    .tag_specifications(tag_spec(ResourceType::SecurityGroup, t))
                    .customize()
                    .config_override(network::once())
                    .send()
                    .await
                    .map_err(|e| sdk(r, "CreateSecurityGroup", &name, e))?;
                network::id_of(r, "CreateSecurityGroup", &name, out.group_id())
            },
        )
        .await?;
        let sg = c
            .ec2
            .describe_security_groups()
            .group_ids(&id)
            .send()
            .await
            .map_err(|e| sdk(r, "DescribeSecurityGroups", &id, e))?
            .security_groups()
            .first()
            .cloned()
            .unwrap_or_else(|| {
                aws_sdk_ec2::types::SecurityGroup::builder()
                    .group_id(&id)
                    .build()
            });
        self.converge_rules(req, &sg).await?;
        Ok(sg.group_id().unwrap_or_default().to_string())
    }

    /// What `ensure_cluster_resources` would change of the security group: created, or its
    /// rules authorized and revoked.
    pub(crate) async fn plan_security_group(
        &self,
        req: &ClusterRequest,
    ) -> gantry_provider::Result<Vec<ResourceChange>> {
        let c = self.clients().await?;
        let t = cluster_tags(req);
        let f = TagFilter::cluster(&req.project, &req.cluster).in_world(world_of(&t));
        let name = format!("gantry-{}-{}", req.project, req.cluster);
        let r = self.region();
        let found = c
            .ec2
            .describe_security_groups()
            .set_filters(Some(tag_filters(&f)))
            .send()
            .await
            .map_err(|e| sdk(r, "DescribeSecurityGroups", &name, e))?;
        let groups = found.security_groups();
        let own = groups
            .iter()
            .filter(|g| f.matches(&tags_of(g.tags())))
            .min_by_key(|g| g.group_id().unwrap_or_default());
        let change = |action, resource: &str, detail: String| ResourceChange {
            action,
            resource: resource.to_string(),
            detail,
        };
        let mut out = Vec::new();
        match own {
            Some(sg) => {
                let id = sg.group_id().unwrap_or_default();
                let resource = format!("security group {name} ({id})");
                let (add, remove) =
                    rules::diff(&self.wanted_rules(req, id).await?, &rules::existing(sg));
                out.extend(
                    add.iter()
                        .map(|x| change(ChangeAction::Add, &resource, x.describe())),
                );
                out.extend(
                    remove
                        .iter()
                        .map(|x| change(ChangeAction::Remove, &resource, x.describe())),
                );
            }
            None => {
                if let Some(g) = groups.first() {
                    let what = format!("security group {}", g.group_id().unwrap_or_default());
                    return Err(foreign(
                        r,
                        "DescribeSecurityGroups",
                        &what,
                        &tags_of(g.tags()),
                    ));
                }
                let resource = format!("security group {name}");
                out.push(change(
                    ChangeAction::Create,
                    &resource,
                    "the cluster's firewall".into(),
                ));
                for x in self.wanted_rules(req, "this group").await? {
                    out.push(change(ChangeAction::Add, &resource, x.describe()));
                }
            }
        }
        Ok(out)
    }

    /// Deletes the security groups the filter matches, retrying while something still depends
    /// on them.
    pub(crate) async fn delete_security_groups(
        &self,
        f: &TagFilter,
    ) -> gantry_provider::Result<()> {
        let c = self.clients().await?;
        let sgs = c
            .ec2
            .describe_security_groups()
            .set_filters(Some(tag_filters(f)))
            .send()
            .await
            .map_err(|e| {
                sdk(
                    self.region(),
                    "DescribeSecurityGroups",
                    "security groups",
                    e,
                )
            })?;
        for g in sgs.security_groups() {
            if !f.matches(&tags_of(g.tags())) {
                continue;
            }
            let id = g.group_id().unwrap_or_default();
            self.retry_dependency("DeleteSecurityGroup", id, move || async move {
                c.ec2.delete_security_group().group_id(id).send().await
            })
            .await?;
        }
        Ok(())
    }
}
