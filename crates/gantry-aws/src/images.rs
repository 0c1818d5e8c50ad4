//! Image aliases → AMI ids through the SSM public parameters AWS publishes per region.

use gantry_provider::ErrorKind;

use crate::{AwsProvider, sdk};

/// Alias → SSM public parameter holding the region's current AMI id.
pub const ALIASES: &[(&str, &str)] = &[
    (
        "al2023",
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
    ),
    (
        "al2023-arm64",
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
    ),
    (
        "al2",
        "/aws/service/ami-amazon-linux-latest/amzn2-ami-hvm-x86_64-gp2",
    ),
    (
        "ubuntu-22.04",
        "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id",
    ),
    (
        "ubuntu-24.04",
        "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
    ),
    ("debian-12", "/aws/service/debian/release/12/latest/amd64"),
];

/// `alias` (one of [`ALIASES`], or an SSM parameter path starting with `/`) → AMI id.
pub(crate) async fn resolve(p: &AwsProvider, alias: &str) -> gantry_provider::Result<String> {
    let param = match ALIASES.iter().find(|(a, _)| *a == alias) {
        Some((_, param)) => (*param).to_string(),
        None if alias.starts_with('/') => alias.to_string(),
        None => {
            let known: Vec<&str> = ALIASES.iter().map(|(a, _)| *a).collect();
            return Err(p
                .e(
                    "GetParameter",
                    alias,
                    ErrorKind::InvalidInput,
                    format!("unknown image alias `{alias}`"),
                )
                .with_hint(format!(
                    "use an `ami-…` id, an SSM parameter path, or one of: {}",
                    known.join(", ")
                )));
        }
    };
    let c = p.clients().await?;
    let out = c
        .ssm
        .get_parameter()
        .name(&param)
        .send()
        .await
        .map_err(|e| {
            let mut pe = sdk(p.region(), "GetParameter", &param, e);
            if pe.hint.is_none() {
                pe.hint = Some(format!(
                    "the image alias `{alias}` has no public parameter in {}: give `ami: ami-…`",
                    p.region()
                ));
            }
            pe
        })?;
    out.parameter()
        .and_then(|x| x.value())
        .map(str::to_string)
        .ok_or_else(|| {
            p.e(
                "GetParameter",
                &param,
                ErrorKind::NotFound,
                "the parameter has no value",
            )
        })
}
