//! The spec's `provider:` section, provider-neutral: a kind's name and its options as the kind
//! read them ([`ProviderSpec`]), and the hook through which the spec parser hands the section to
//! the kind that owns it ([`ProviderSection`]).
//!
//! gantry-core knows no provider: each provider crate reads its own section with
//! [`crate::reader`] (so its errors still name `file:line:column`), checks what it says about the
//! rest of the spec (pool sizes, readiness), and decodes its options into its own types. The
//! options travel as an ordered JSON object, in the order the kind's type serialises its
//! fields, so a spec serialises, and hashes, exactly as it did when the options were core types:
//! records written before keep their hash.

use std::fmt;

use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::reader::{Node, Pos, Reader};

/// A provider's options: a JSON object whose keys keep their order (see the module's doc).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderOptions(Vec<(String, serde_json::Value)>);

impl ProviderOptions {
    /// The options of a kind's own type.
    pub fn from_typed<T: Serialize>(options: &T) -> Result<ProviderOptions, serde_json::Error> {
        serde_json::from_str(&serde_json::to_string(options)?)
    }

    /// The options as the kind's own type (its serde rules decide what is accepted).
    pub fn to_typed<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&serde_json::to_string(self)?)
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl Serialize for ProviderOptions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ProviderOptions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ProviderOptions;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of provider options")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<ProviderOptions, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, serde_json::Value>()? {
                    out.push((k, v));
                }
                Ok(ProviderOptions(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The provider of a spec: its kind's name and options. Serialised as a map with one key, the
/// kind (`{"aws": {"region": "us-east-1", ...}}`), as every earlier version wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSpec {
    pub kind: String,
    pub options: ProviderOptions,
}

impl ProviderSpec {
    pub fn new(kind: impl Into<String>, options: ProviderOptions) -> ProviderSpec {
        ProviderSpec {
            kind: kind.into(),
            options,
        }
    }

    /// The kind's name (`local`, `docker`, `aws`).
    pub fn name(&self) -> &str {
        &self.kind
    }
}

impl Serialize for ProviderSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(&self.kind, &self.options)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for ProviderSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ProviderSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map with one key, the provider's kind")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<ProviderSpec, A::Error> {
                let Some((kind, options)) = m.next_entry::<String, ProviderOptions>()? else {
                    return Err(de::Error::custom("the provider names no kind"));
                };
                if let Some(extra) = m.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "the provider names a second kind `{extra}`"
                    )));
                }
                Ok(ProviderSpec { kind, options })
            }
        }
        d.deserialize_map(V)
    }
}

/// What a kind requires of `readiness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadinessRule {
    /// Whatever the spec says (default `ssh`).
    Any,
    /// Always `api` (the provider's API is how its nodes are reached); an explicit
    /// `readiness: ssh` is refused with (message, hint).
    ApiOnly {
        message: &'static str,
        hint: &'static str,
    },
}

/// A provider kind's part of the spec parser: its own `provider:` section, and what it says
/// about the rest of the spec. Implemented by each provider crate (see
/// `gantry_provider::registry`); the parser is handed the kinds the binary was built with.
pub trait ProviderSection: Send + Sync {
    /// The kind's name, the key under `provider:`.
    fn name(&self) -> &'static str;

    /// Reads the options under `provider: {NAME: OPTIONS}` (`options`: None for the short form
    /// `provider: NAME` or an empty value; `at`: where the name is), reporting every problem on
    /// `r`. None when the options are invalid (the problems are on `r`).
    fn read_options(
        &self,
        r: &mut Reader,
        at: Pos,
        options: Option<&Node>,
    ) -> Option<ProviderOptions>;

    /// Whether a pool size means something on this provider: None if so, else (message, hint).
    fn check_size(&self, size: &str) -> Option<(String, String)> {
        let _ = size;
        None
    }

    /// What the kind requires of `readiness`.
    fn readiness(&self) -> ReadinessRule {
        ReadinessRule::Any
    }

    /// Whether the spec's `allow` rules open a firewall to the addresses they name (a cloud's
    /// security group) rather than only reaching this machine: rules open to the whole
    /// internet are then warned about.
    fn opens_firewall(&self) -> bool {
        false
    }
}

/// A kind `local` without options, for this crate's tests (gantry-core knows no provider).
#[cfg(test)]
pub(crate) struct StubKind;

#[cfg(test)]
impl ProviderSection for StubKind {
    fn name(&self) -> &'static str {
        "local"
    }

    fn read_options(&self, _: &mut Reader, _: Pos, _: Option<&Node>) -> Option<ProviderOptions> {
        Some(ProviderOptions::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_keep_their_order_through_json() {
        let json =
            r#"{"aws":{"region":"us-east-1","zones":[],"spot":false,"endpoint":"http://x"}}"#;
        let p: ProviderSpec = serde_json::from_str(json).unwrap();
        assert_eq!(p.kind, "aws");
        assert_eq!(p.options.get("region").unwrap(), "us-east-1");
        assert_eq!(serde_json::to_string(&p).unwrap(), json);
        assert!(serde_json::from_str::<ProviderSpec>(r#"{"a":{},"b":{}}"#).is_err());
        assert!(serde_json::from_str::<ProviderSpec>(r#"{}"#).is_err());
        assert!(serde_json::from_str::<ProviderSpec>(r#"{"a":3}"#).is_err());
    }
}
