//! The cluster security group's inbound rules: what the spec's `network.allow` wants against
//! what gantry added earlier.
//!
//! Rules were only ever authorized, so a rule removed from the spec, or the rule of a caller
//! whose address changed, stayed open. Every rule gantry authorizes now carries the description
//! [`MARK`]; `up` authorizes what is wanted and missing, then revokes the marked rules the spec no
//! longer holds. A rule without the mark (added by hand to gantry's group, or authorized by a
//! gantry from before the mark) is never revoked. The rules and their diff are shared by every
//! cloud ([`gantry_provider::cloud::rules`]); this module converts them to and from EC2's
//! permissions. `plan` shows the outcome through `Provider::plan_cluster_resources`.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, SecurityGroup, UserIdGroupPair};
use gantry_provider::ClusterRequest;
pub(crate) use gantry_provider::cloud::rules::{Rule, Source, diff, wanted};

use crate::{AwsProvider, error, sdk};

/// The description of every rule gantry authorizes (EC2 allows `a-zA-Z0-9. _-:/()#,@[]+=&;{}!$*`).
pub const MARK: &str = "gantry-managed";

/// The permission that authorizes (or, with the same description, revokes) `rule`.
fn permission(rule: &Rule) -> IpPermission {
    let b = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(i32::from(rule.port))
        .to_port(i32::from(rule.port));
    match &rule.source {
        Source::V4(c) => b.ip_ranges(IpRange::builder().cidr_ip(c).description(MARK).build()),
        Source::V6(c) => b.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(c).description(MARK).build()),
        Source::Group(g) => b.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(g)
                .description(MARK)
                .build(),
        ),
    }
    .build()
}

/// The group's single-port TCP inbound rules, each with whether gantry marked it. Anything else
/// (port ranges, other protocols, prefix lists) is not gantry's and is left out.
pub(crate) fn existing(sg: &SecurityGroup) -> Vec<(Rule, bool)> {
    let mut out = Vec::new();
    for p in sg.ip_permissions() {
        let (Some(from), Some(to)) = (p.from_port(), p.to_port()) else {
            continue;
        };
        let Ok(port) = u16::try_from(from) else {
            continue;
        };
        if from != to || p.ip_protocol() != Some("tcp") {
            continue;
        }
        let marked = |d: Option<&str>| d == Some(MARK);
        for r in p.ip_ranges() {
            if let Some(c) = r.cidr_ip() {
                out.push((
                    Rule::new(port, Source::V4(c.into())),
                    marked(r.description()),
                ));
            }
        }
        for r in p.ipv6_ranges() {
            if let Some(c) = r.cidr_ipv6() {
                out.push((
                    Rule::new(port, Source::V6(c.into())),
                    marked(r.description()),
                ));
            }
        }
        for g in p.user_id_group_pairs() {
            if let Some(id) = g.group_id() {
                out.push((
                    Rule::new(port, Source::Group(id.into())),
                    marked(g.description()),
                ));
            }
        }
    }
    out
}

impl AwsProvider {
    /// The rules the request wants in group `group`, resolving `caller` (detecting it if
    /// needed, only when a rule uses it).
    pub(crate) async fn wanted_rules(
        &self,
        req: &ClusterRequest,
        group: &str,
    ) -> gantry_provider::Result<BTreeSet<Rule>> {
        let caller = if gantry_provider::cloud::caller::needs_caller(&req.allow) {
            Some(self.caller_cidr().await?)
        } else {
            None
        };
        Ok(wanted(&req.allow, caller.as_deref(), group))
    }

    /// Makes group `sg`'s rules the request's: authorizes what is missing first (so a moved
    /// caller is never locked out in between), then revokes what gantry added and the spec no
    /// longer holds.
    pub(crate) async fn converge_rules(
        &self,
        req: &ClusterRequest,
        sg: &SecurityGroup,
    ) -> gantry_provider::Result<()> {
        let c = self.clients().await?;
        let id = sg.group_id().unwrap_or_default();
        let want = self.wanted_rules(req, id).await?;
        let (add, remove) = diff(&want, &existing(sg));
        for r in add {
            match c
                .ec2
                .authorize_security_group_ingress()
                .group_id(id)
                .ip_permissions(permission(&r))
                .send()
                .await
            {
                Ok(_) => tracing::info!(group = %id, "authorized {}", r.describe()),
                Err(e) if error::code(&e) == Some("InvalidPermission.Duplicate") => {}
                Err(e) => return Err(sdk(self.region(), "AuthorizeSecurityGroupIngress", id, e)),
            }
        }
        for r in remove {
            match c
                .ec2
                .revoke_security_group_ingress()
                .group_id(id)
                .ip_permissions(permission(&r))
                .send()
                .await
            {
                Ok(_) => tracing::info!(group = %id, "revoked {}", r.describe()),
                // Gone already (a resent call, or revoked by hand).
                Err(e) if error::code(&e) == Some("InvalidPermission.NotFound") => {}
                Err(e) => return Err(sdk(self.region(), "RevokeSecurityGroupIngress", id, e)),
            }
        }
        Ok(())
    }
}
