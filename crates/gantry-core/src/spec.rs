//! The cluster spec (`apiVersion: gantry/v1`).
//!
//! Types live here; `spec::parse` turns YAML text into a validated [`ClusterSpec`] or a
//! [`SpecError`](crate::SpecError) listing every problem at `file:line:column` with a hint (read
//! with [`crate::reader`]); [`network`] holds the `allow` rules and their warnings; [`provider`]
//! the provider-neutral `provider:` section, which each provider crate reads and decodes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Tags;

pub mod network;
pub(crate) mod parse;
pub mod provider;
pub use crate::reader::{render_error, render_warnings};
pub use network::{OPEN_PORTS_WITHOUT_WARNING, check_from, warnings};
pub use parse::{MAX_POOL_COUNT, parse, parse_duration};
pub use provider::{ProviderOptions, ProviderSection, ProviderSpec, ReadinessRule};

/// Default cluster lifetime when the spec gives none.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The longest lifetime a spec, `up --lifetime` or `extend` may give a cluster, and the furthest
/// an expiry may lie from now: 10 years as humantime counts them (`10y`, 365.25 days each).
///
/// Lifetimes exist so that nothing is left behind; a decade is far beyond any cluster gantry is
/// for, yet never in the way of a long-lived one (`extend` moves it again). The bound also keeps
/// every expiry an RFC 3339 time with a four-digit year (the `gantry-expires` tag) for the next
/// seven millennia, where `9000y` overflowed the date type and panicked.
pub const MAX_LIFETIME: Duration = Duration::from_secs(315_576_000);

/// `MAX_LIFETIME` as people write it, for messages.
pub const MAX_LIFETIME_TEXT: &str = "10y";

/// Checks a lifetime given anywhere (spec, flag): greater than zero and at most
/// [`MAX_LIFETIME`]; `Err` says what is wrong in a fragment that reads after "lifetime".
pub fn check_lifetime(d: Duration) -> Result<(), String> {
    if d.is_zero() {
        Err("must be greater than zero".into())
    } else if d > MAX_LIFETIME {
        Err(format!(
            "{} is longer than the maximum of {MAX_LIFETIME_TEXT}",
            humantime::format_duration(d)
        ))
    } else {
        Ok(())
    }
}

/// `base + by`, or `None` when the result is not a representable time (checked arithmetic:
/// every expiry gantry computes goes through here or [`expiry_within_bound`]).
pub fn checked_expiry(base: time::OffsetDateTime, by: Duration) -> Option<time::OffsetDateTime> {
    base.checked_add(time::Duration::try_from(by).ok()?)
}

/// `base + by` if it is at most [`MAX_LIFETIME`] after `now`; `None` otherwise (including when
/// it overflows).
pub fn expiry_within_bound(
    now: time::OffsetDateTime,
    base: time::OffsetDateTime,
    by: Duration,
) -> Option<time::OffsetDateTime> {
    let at = checked_expiry(base, by)?;
    (at <= checked_expiry(now, MAX_LIFETIME)?).then_some(at)
}

/// A validated cluster spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub name: String,
    pub provider: ProviderSpec,
    pub pools: Vec<PoolSpec>,
    pub network: NetworkSpec,
    /// How long the cluster lives before `gc` may destroy it.
    #[serde(with = "humantime_serde_compat")]
    pub lifetime: Duration,
    /// Login user on nodes; `None` lets the provider choose (local: the current user).
    pub ssh_user: Option<String>,
    /// When `up` considers a node ready.
    pub readiness: Readiness,
    /// User tags, added to gantry's own on every resource.
    pub tags: Tags,
    /// Software to apply once the nodes are ready, in order (see `docs/blueprints.md`).
    /// Left out of the serialised form when empty, so specs without blueprints keep their hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blueprints: Vec<crate::blueprint::BlueprintRef>,
}

impl ClusterSpec {
    /// Total desired node count.
    pub fn node_count(&self) -> u32 {
        self.pools.iter().map(|p| p.count).sum()
    }

    /// Stable content hash of the spec (hex sha256 of its canonical JSON).
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(self).expect("spec serialises");
        hex::encode(sha2::Sha256::digest(&json))
    }

    pub fn provider_name(&self) -> &str {
        self.provider.name()
    }
}

/// One node pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub name: String,
    pub count: u32,
    /// Provider-specific size alias (`small`, `medium`, `large`, or a native type).
    pub size: String,
    /// Provider-specific image alias.
    pub image: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Inbound rules; empty means the default: SSH from the caller only.
    pub allow: Vec<AllowRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllowRule {
    pub port: u16,
    /// CIDR, or the word `caller` (the address gantry runs from), or `cluster` (other nodes).
    pub from: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readiness {
    /// Wait until every node answers SSH (default).
    #[default]
    Ssh,
    /// Stop at the provider API's `running` state; never connect to nodes. The Docker provider
    /// always uses this: its API *is* the transport, and its create and start return only once
    /// the container answers an exec of `true`.
    Api,
}

mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_bounded_and_expiries_never_overflow() {
        assert!(check_lifetime(Duration::from_secs(3600)).is_ok());
        assert!(check_lifetime(MAX_LIFETIME).is_ok());
        assert!(check_lifetime(Duration::ZERO).is_err());
        let e = check_lifetime(humantime::parse_duration("9000y").unwrap()).unwrap_err();
        assert!(e.contains("maximum of 10y"), "{e}");
        assert_eq!(
            humantime::parse_duration(MAX_LIFETIME_TEXT).unwrap(),
            MAX_LIFETIME
        );

        let now = time::OffsetDateTime::now_utc();
        // 9000 years from now is past what a date holds: None, not a panic.
        assert_eq!(
            checked_expiry(now, humantime::parse_duration("9000y").unwrap()),
            None
        );
        assert_eq!(checked_expiry(now, Duration::MAX), None);
        let hour = Duration::from_secs(3600);
        assert_eq!(
            expiry_within_bound(now, now, hour),
            Some(now + time::Duration::HOUR)
        );
        assert!(expiry_within_bound(now, now, MAX_LIFETIME).is_some());
        // From a later base (extend: max(now, expiry) + by), the bound still counts from now.
        let later = now + time::Duration::days(30);
        assert_eq!(expiry_within_bound(now, later, MAX_LIFETIME), None);
        assert!(expiry_within_bound(now, later, hour).is_some());
    }
}
