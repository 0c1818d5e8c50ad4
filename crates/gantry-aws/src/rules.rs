//! The cluster security group's inbound rules: what the spec's `network.allow` wants against
//! what gantry added earlier.
//!
//! Rules were only ever authorized, so a rule removed from the spec, or the rule of a caller
//! whose address changed, stayed open. Every rule gantry authorizes now carries the description
//! [`MARK`]; `up` authorizes what is wanted and missing, then revokes the marked rules the spec no
//! longer holds. A rule without the mark (added by hand to gantry's group, or authorized by a
//! gantry from before the mark) is never revoked. [`diff`] is the pure rule; `plan` shows its
//! outcome through `Provider::plan_cluster_resources`.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, SecurityGroup, UserIdGroupPair};
use gantry_core::AllowRule;
use gantry_provider::ClusterRequest;

use crate::{AwsProvider, error, sdk};

/// The description of every rule gantry authorizes (EC2 allows `a-zA-Z0-9. _-:/()#,@[]+=&;{}!$*`).
pub const MARK: &str = "gantry-managed";

/// Where a rule lets traffic in from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Source {
    V4(String),
    V6(String),
    /// A security group (gantry's own: `from: cluster`).
    Group(String),
}

/// One single-port TCP inbound rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rule {
    pub(crate) port: u16,
    pub(crate) source: Source,
}

impl Rule {
    /// `tcp 8080 from 0.0.0.0/0`, for plans and logs.
    pub(crate) fn describe(&self) -> String {
        match &self.source {
            Source::V4(c) | Source::V6(c) => format!("tcp {} from {c}", self.port),
            Source::Group(g) => format!("tcp {} from the cluster ({g})", self.port),
        }
    }

    /// The permission that authorizes (or, with the same description, revokes) it.
    fn permission(&self) -> IpPermission {
        let b = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(i32::from(self.port))
            .to_port(i32::from(self.port));
        match &self.source {
            Source::V4(c) => b.ip_ranges(IpRange::builder().cidr_ip(c).description(MARK).build()),
            Source::V6(c) => {
                b.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(c).description(MARK).build())
            }
            Source::Group(g) => b.user_id_group_pairs(
                UserIdGroupPair::builder()
                    .group_id(g)
                    .description(MARK)
                    .build(),
            ),
        }
        .build()
    }
}

/// The rules `allow` asks for (default: SSH from the caller), `caller` being `caller` and
/// `cluster` the group `group`.
pub(crate) fn wanted(allow: &[AllowRule], caller: Option<&str>, group: &str) -> BTreeSet<Rule> {
    let default = [AllowRule {
        port: 22,
        from: "caller".into(),
    }];
    let rules = if allow.is_empty() {
        &default[..]
    } else {
        allow
    };
    rules
        .iter()
        .filter_map(|r| {
            let source = match r.from.as_str() {
                "cluster" => Source::Group(group.to_string()),
                "caller" => Source::V4(caller?.to_string()),
                c if c.contains(':') => Source::V6(c.to_string()),
                c => Source::V4(c.to_string()),
            };
            Some(Rule {
                port: r.port,
                source,
            })
        })
        .collect()
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
                out.push((rule(port, Source::V4(c.into())), marked(r.description())));
            }
        }
        for r in p.ipv6_ranges() {
            if let Some(c) = r.cidr_ipv6() {
                out.push((rule(port, Source::V6(c.into())), marked(r.description())));
            }
        }
        for g in p.user_id_group_pairs() {
            if let Some(id) = g.group_id() {
                out.push((
                    rule(port, Source::Group(id.into())),
                    marked(g.description()),
                ));
            }
        }
    }
    out
}

fn rule(port: u16, source: Source) -> Rule {
    Rule { port, source }
}

/// What to authorize (wanted and not there, marked or not) and what to revoke (marked by gantry
/// and no longer wanted). Unmarked rules are never revoked.
pub(crate) fn diff(wanted: &BTreeSet<Rule>, existing: &[(Rule, bool)]) -> (Vec<Rule>, Vec<Rule>) {
    let add = wanted
        .iter()
        .filter(|w| !existing.iter().any(|(r, _)| r == *w))
        .cloned()
        .collect();
    let mut remove: Vec<Rule> = existing
        .iter()
        .filter(|(r, marked)| *marked && !wanted.contains(r))
        .map(|(r, _)| r.clone())
        .collect();
    remove.sort();
    remove.dedup();
    (add, remove)
}

impl AwsProvider {
    /// The rules the request wants in group `group`, resolving `caller` (detecting it if
    /// needed, only when a rule uses it).
    pub(crate) async fn wanted_rules(
        &self,
        req: &ClusterRequest,
        group: &str,
    ) -> gantry_provider::Result<BTreeSet<Rule>> {
        let caller = if req.allow.is_empty() || req.allow.iter().any(|r| r.from == "caller") {
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
                .ip_permissions(r.permission())
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
                .ip_permissions(r.permission())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(port: u16, from: &str) -> AllowRule {
        AllowRule {
            port,
            from: from.into(),
        }
    }

    #[test]
    fn removed_rules_and_a_moved_caller_are_revoked_hand_made_rules_are_not() {
        let before = wanted(
            &[
                allow(22, "caller"),
                allow(8080, "0.0.0.0/0"),
                allow(2379, "cluster"),
                allow(9000, "::/0"),
            ],
            Some("198.51.100.7/32"),
            "sg-1",
        );
        let existing: Vec<(Rule, bool)> = before
            .iter()
            .map(|r| (r.clone(), true))
            .chain([
                // By hand, in gantry's group: never revoked.
                (rule(5432, Source::V4("192.0.2.0/24".into())), false),
                // An older gantry's rule, unmarked, still wanted: kept, not re-added.
                (rule(443, Source::V4("10.0.0.0/8".into())), false),
            ])
            .collect();
        let after = wanted(
            &[allow(22, "caller"), allow(443, "10.0.0.0/8")],
            Some("203.0.113.9/32"),
            "sg-1",
        );
        let (add, remove) = diff(&after, &existing);
        let text = |v: &[Rule]| v.iter().map(Rule::describe).collect::<Vec<_>>();
        assert_eq!(text(&add), ["tcp 22 from 203.0.113.9/32"]);
        assert_eq!(
            text(&remove),
            [
                "tcp 22 from 198.51.100.7/32",
                "tcp 2379 from the cluster (sg-1)",
                "tcp 8080 from 0.0.0.0/0",
                "tcp 9000 from ::/0",
            ]
        );
        // Converged: nothing to do.
        let now: Vec<(Rule, bool)> = after.iter().map(|r| (r.clone(), true)).collect();
        assert_eq!(diff(&after, &now), (vec![], vec![]));
    }

    #[test]
    fn the_default_is_ssh_from_the_caller() {
        let w = wanted(&[], Some("198.51.100.7/32"), "sg-1");
        let text: Vec<String> = w.iter().map(Rule::describe).collect();
        assert_eq!(text, ["tcp 22 from 198.51.100.7/32"]);
    }
}
