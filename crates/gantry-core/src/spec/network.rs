//! The spec's `network` section: `allow` rules (a port and where from: a CIDR, `caller` or
//! `cluster`), how they are read and checked, and the warnings about rules open to the whole
//! internet. Kept apart from the rest of the spec because every provider with a firewall
//! (security groups, firewall rules) builds on the same rules.

use std::net::IpAddr;

use crate::reader::yaml::{self, Kind, Node, Pos};
use crate::reader::{Field, Reader};
use crate::{AllowRule, ClusterSpec, NetworkSpec, SpecErrorItem};

pub(crate) const NETWORK_FIELDS: &[&str] = &["allow"];
pub(crate) const ALLOW_FIELDS: &[&str] = &["port", "from"];

/// Ports an `allow` rule may open to the whole internet without a warning: SSH and the web.
pub const OPEN_PORTS_WITHOUT_WARNING: &[u16] = &[22, 80, 443];

/// What a valid spec asks for that is probably a mistake (nothing is refused): an `allow` rule
/// open to the whole internet (`from: 0.0.0.0/0` or `::/0`) on a port other than 22, 80 and
/// 443, for providers whose rules open a firewall (`opens_firewall`: the spec's kind's
/// [`ProviderSection::opens_firewall`](super::ProviderSection::opens_firewall)). Each item points
/// at the rule's `from` in `text`, the spec's source (0:0 when it cannot be found); render with
/// [`render_warnings`](crate::reader::render_warnings).
pub fn warnings(text: &str, spec: &ClusterSpec, opens_firewall: bool) -> Vec<SpecErrorItem> {
    if !opens_firewall {
        return vec![];
    }
    let root = yaml::load(text).ok().flatten();
    let get = |node: &Node, key: &str| -> Option<Node> {
        let Kind::Map(pairs) = &node.kind else {
            return None;
        };
        pairs
            .iter()
            .find(|(k, _)| k.text() == Some(key))
            .map(|(_, v)| v.clone())
    };
    let rules: Vec<Node> = root
        .as_ref()
        .and_then(|r| get(r, "network"))
        .and_then(|n| get(&n, "allow"))
        .and_then(|a| match a.kind {
            Kind::Seq(items) => Some(items),
            _ => None,
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, rule) in spec.network.allow.iter().enumerate() {
        if !matches!(rule.from.as_str(), "0.0.0.0/0" | "::/0")
            || OPEN_PORTS_WITHOUT_WARNING.contains(&rule.port)
        {
            continue;
        }
        let pos = rules
            .get(i)
            .and_then(|r| get(r, "from"))
            .map(|f| f.pos)
            .unwrap_or(Pos { line: 0, col: 0 });
        out.push(SpecErrorItem {
            line: pos.line,
            column: pos.col,
            message: format!(
                "port {} is open to the whole internet (`from: {}`)",
                rule.port, rule.from
            ),
            hint: Some(
                "give the addresses that need it (a CIDR, `caller` or `cluster`) unless the \
                 service is meant to be public"
                    .into(),
            ),
        });
    }
    out
}

impl Reader {
    pub(crate) fn network(&mut self, f: Field<'_>) -> Option<NetworkSpec> {
        let fields = self.fields(f.value, "network", "`network`", NETWORK_FIELDS)?;
        let Some(allow) = fields.opt("allow") else {
            return Some(NetworkSpec::default());
        };
        let Kind::Seq(items) = &allow.value.kind else {
            self.type_err(
                allow.pos(),
                "allow",
                "a list",
                allow.value,
                "list rules as `- {port: 22, from: caller}` entries",
            );
            return None;
        };
        let mut rules = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            match self.allow_rule(item) {
                Some(r) => rules.push(r),
                None => ok = false,
            }
        }
        ok.then_some(NetworkSpec { allow: rules })
    }

    fn allow_rule(&mut self, node: &Node) -> Option<AllowRule> {
        let fields = self.fields(node, "allow", "allow rule", ALLOW_FIELDS)?;
        let port = fields
            .req(self, "port")
            .and_then(|f| self.int_in(f, 1, 65535, "22"))
            .and_then(|p| u16::try_from(p).ok());
        let from = fields.req(self, "from").and_then(|f| {
            let s = self.string(f)?;
            match check_from(s) {
                Ok(()) => Some(s.to_string()),
                Err((message, hint)) => {
                    self.err(f.pos(), message, hint);
                    None
                }
            }
        });
        Some(AllowRule {
            port: port?,
            from: from?,
        })
    }
}

/// `caller`, `cluster`, or a canonical IPv4/IPv6 CIDR.
pub fn check_from(s: &str) -> Result<(), (String, String)> {
    const HINT: &str = "use a CIDR such as `10.0.0.0/8` or `2001:db8::/32`, `caller` (the \
                        address gantry runs from) or `cluster` (the other nodes)";
    if s == "caller" || s == "cluster" {
        return Ok(());
    }
    let Some((addr, prefix)) = s.split_once('/') else {
        return Err(match s.parse::<IpAddr>() {
            Ok(ip) => (
                format!("`from` {s:?} is an address, not a cidr"),
                format!(
                    "add a prefix length for a single address: `{s}/{}`",
                    max_prefix(ip)
                ),
            ),
            Err(_) => (format!("invalid `from` {s:?}"), HINT.into()),
        });
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return Err((
            format!("invalid address {addr:?} in cidr {s:?}"),
            HINT.into(),
        ));
    };
    let max = max_prefix(ip);
    let prefix = match prefix.parse::<u8>() {
        Ok(p) if p <= max && !prefix.starts_with('+') => p,
        _ => {
            return Err((
                format!("invalid prefix length {prefix:?} in cidr {s:?}"),
                format!("the prefix length must be a number from 0 to {max}"),
            ));
        }
    };
    let network = mask(ip, prefix);
    if network != ip {
        return Err((
            format!("cidr {s:?} has host bits set"),
            format!("did you mean `{network}/{prefix}`?"),
        ));
    }
    Ok(())
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        for ok in [
            "caller",
            "cluster",
            "0.0.0.0/0",
            "10.0.0.0/8",
            "1.2.3.4/32",
            "::/0",
            "2001:db8::/32",
        ] {
            assert!(check_from(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0.1/8",
            "::1/0",
            "x/8",
            "1.2.3.4",
        ] {
            assert!(check_from(bad).is_err(), "{bad}");
        }
    }
}
