//! A cloud firewall's inbound rules: what the spec's `network.allow` wants, against what gantry
//! added earlier. Shared by every provider with a firewall (AWS security groups today, GCP
//! firewall rules next); the provider converts [`Rule`]s to and from its API's own form.
//!
//! Rules were once only ever authorized, so a rule removed from the spec, or the rule of a
//! caller whose address changed, stayed open. Every rule gantry adds carries a mark (AWS: the
//! description `gantry-managed`); `up` adds what is wanted and missing, then removes the marked
//! rules the spec no longer holds. A rule without the mark (added by hand, or by a gantry from
//! before the mark) is never removed. [`diff`] is that rule.

use std::collections::BTreeSet;

use gantry_core::AllowRule;

/// Where a rule lets traffic in from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    V4(String),
    V6(String),
    /// The cluster's own group of nodes (`from: cluster`): a security group id, a network tag.
    Group(String),
}

/// One single-port TCP inbound rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub port: u16,
    pub source: Source,
}

impl Rule {
    pub fn new(port: u16, source: Source) -> Rule {
        Rule { port, source }
    }

    /// `tcp 8080 from 0.0.0.0/0`, for plans and logs.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::V4(c) | Source::V6(c) => format!("tcp {} from {c}", self.port),
            Source::Group(g) => format!("tcp {} from the cluster ({g})", self.port),
        }
    }
}

/// The rules `allow` asks for (default: SSH from the caller), `caller` being the caller's CIDR
/// (a rule from the caller is left out while it is unknown) and `cluster` the group `group`.
pub fn wanted(allow: &[AllowRule], caller: Option<&str>, group: &str) -> BTreeSet<Rule> {
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
                "caller" => {
                    let c = caller?;
                    if c.contains(':') {
                        Source::V6(c.to_string())
                    } else {
                        Source::V4(c.to_string())
                    }
                }
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

/// What to add (wanted and not there, marked or not) and what to remove (marked by gantry and
/// no longer wanted), from the existing rules and whether each carries gantry's mark. Unmarked
/// rules are never removed.
pub fn diff(wanted: &BTreeSet<Rule>, existing: &[(Rule, bool)]) -> (Vec<Rule>, Vec<Rule>) {
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
                (Rule::new(5432, Source::V4("192.0.2.0/24".into())), false),
                // An older gantry's rule, unmarked, still wanted: kept, not re-added.
                (Rule::new(443, Source::V4("10.0.0.0/8".into())), false),
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
