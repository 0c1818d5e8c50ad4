//! The AWS provider's part of a spec: its options ([`AwsOptions`], read from
//! `provider: {aws: {...}}` with core's position-keeping reader, so problems name
//! `file:line:column`) and the instance types its size aliases stand for. Kept with the provider
//! so that gantry-core knows nothing about AWS.

use std::collections::BTreeMap;

use gantry_core::reader::{Kind, Node, Pos, Reader, Scalar};
use gantry_core::spec::{ProviderOptions, check_from};
use serde::{Deserialize, Serialize};

/// Options of the AWS provider (`provider: {aws: {...}}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsOptions {
    /// e.g. `us-east-1` (required).
    pub region: String,
    /// Availability zones the nodes of each pool are spread over, round-robin by index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// `default` (the region's default VPC), `create` (a tagged VPC per cluster) or a `vpc-…` id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<String>,
    /// A `subnet-…` id to launch into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Pool size alias → instance type; merged over the defaults (see [`AwsOptions::instance_type`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instance_types: BTreeMap<String, String>,
    /// An `ami-…` id for pools whose image is `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami: Option<String>,
    /// An image alias (`al2023`, `ubuntu-22.04`, …) resolved through SSM public parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spot: bool,
    /// API endpoint override (an emulator); `AWS_ENDPOINT_URL` works too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The CIDR `from: caller` stands for; `GANTRY_CALLER_CIDR` works too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_cidr: Option<String>,
}

/// Instance types of the size aliases when the spec maps none.
pub const AWS_DEFAULT_INSTANCE_TYPES: &[(&str, &str)] = &[
    ("small", "t3.micro"),
    ("medium", "t3.large"),
    ("large", "m5.xlarge"),
];

impl AwsOptions {
    /// The instance type of a pool size: the spec's map, then the defaults, else the size itself.
    pub fn instance_type(&self, size: &str) -> String {
        if let Some(t) = self.instance_types.get(size) {
            return t.clone();
        }
        AWS_DEFAULT_INSTANCE_TYPES
            .iter()
            .find(|(k, _)| *k == size)
            .map(|(_, v)| (*v).to_string())
            .unwrap_or_else(|| size.to_string())
    }
}

const AWS_FIELDS: &[&str] = &[
    "region",
    "zones",
    "vpc",
    "subnet",
    "instance_types",
    "ami",
    "image",
    "spot",
    "endpoint",
    "caller_cidr",
];

/// Reads `provider: {aws: ...}` (see [`gantry_core::ProviderSection::read_options`]).
pub(crate) fn read(r: &mut Reader, at: Pos, o: Option<&Node>) -> Option<ProviderOptions> {
    let Some(o) = o else {
        r.err(
            at,
            "the aws provider needs options: at least `region`",
            "write e.g. `provider: {aws: {region: us-east-1}}`",
        );
        return None;
    };
    let opts = read_fields(r, o)?;
    ProviderOptions::from_typed(&opts).ok()
}

fn read_fields(r: &mut Reader, o: &Node) -> Option<AwsOptions> {
    let fields = r.fields(o, "aws", "the aws provider options", AWS_FIELDS)?;
    let mut opts = AwsOptions::default();
    let mut ok = true;
    match fields.req(r, "region") {
        Some(f) => match r.string(f) {
            Some(region) if is_region(region) => opts.region = region.to_string(),
            Some(region) => {
                r.err(
                    f.pos(),
                    format!("invalid aws region {region:?}"),
                    "write a region name such as `us-east-1` or `eu-west-2`",
                );
                ok = false;
            }
            None => ok = false,
        },
        None => ok = false,
    }
    if let Some(f) = fields.opt("zones") {
        match &f.value.kind {
            Kind::Seq(items) => {
                for item in items {
                    match item.text() {
                        Some(z) if is_region(z.trim_end_matches(char::is_alphabetic)) => {
                            opts.zones.push(z.to_string())
                        }
                        _ => {
                            r.err(
                                item.pos,
                                format!("invalid availability zone {}", item.describe()),
                                "write zones of the region, e.g. `[us-east-1a, us-east-1b]`",
                            );
                            ok = false;
                        }
                    }
                }
            }
            _ => {
                r.type_err(
                    f.pos(),
                    "zones",
                    "a list",
                    f.value,
                    "write e.g. `zones: [us-east-1a, us-east-1b]`",
                );
                ok = false;
            }
        }
    }
    let mut id = |cx: &mut Reader, key: &str, prefix: &str, words: &[&str], hint: &str| {
        let f = fields.opt(key)?;
        let v = cx.string(f)?;
        let good = words.contains(&v)
            || v.strip_prefix(prefix).is_some_and(|rest| {
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_hexdigit())
            });
        if !good {
            cx.err(f.pos(), format!("invalid `{key}` {v:?}"), hint);
            ok = false;
            return None;
        }
        Some(v.to_string())
    };
    opts.vpc = id(
        r,
        "vpc",
        "vpc-",
        &["default", "create"],
        "use `default` (the region's default vpc), `create` (one per cluster) or a `vpc-…` id",
    );
    opts.subnet = id(r, "subnet", "subnet-", &[], "give a `subnet-…` id");
    opts.ami = id(
        r,
        "ami",
        "ami-",
        &[],
        "give an `ami-…` id, or use `image: al2023`",
    );
    if let Some(f) = fields.opt("instance_types") {
        match r.string_map(f) {
            Some(m) => opts.instance_types = m,
            None => ok = false,
        }
    }
    for (key, slot) in [("image", &mut opts.image), ("endpoint", &mut opts.endpoint)] {
        if let Some(f) = fields.opt(key) {
            match r.non_empty(f) {
                Some(v) => *slot = Some(v),
                None => ok = false,
            }
        }
    }
    if let Some(f) = &opts.endpoint
        && !(f.starts_with("http://") || f.starts_with("https://"))
        && let Some(field) = fields.opt("endpoint")
    {
        r.err(
            field.pos(),
            format!("invalid endpoint {f:?}"),
            "give a url such as `http://127.0.0.1:5000`, or leave it out and set \
             AWS_ENDPOINT_URL",
        );
        ok = false;
    }
    if let Some(f) = fields.opt("spot") {
        match f.value.scalar() {
            Some(Scalar::Bool(b)) => opts.spot = b,
            _ => {
                r.type_err(f.pos(), "spot", "a boolean", f.value, "write `spot: true`");
                ok = false;
            }
        }
    }
    if let Some(f) = fields.opt("caller_cidr") {
        match r.string(f) {
            Some(c) if c != "caller" && c != "cluster" && check_from(c).is_ok() => {
                opts.caller_cidr = Some(c.to_string())
            }
            Some(c) => {
                let (message, hint) = check_from(c).err().unwrap_or_else(|| {
                    (
                        format!("invalid caller_cidr {c:?}"),
                        "give a cidr such as `203.0.113.7/32`".into(),
                    )
                });
                r.err(f.pos(), message, hint);
                ok = false;
            }
            None => ok = false,
        }
    }
    ok.then_some(opts)
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`: lowercase words and a number, `-`-separated.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}
