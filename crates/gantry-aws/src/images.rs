//! The pools' images: `default`, an AMI id, or an alias resolved to the region's AMI id through
//! the SSM public parameters AWS publishes (cached per provider), and the check, before anything
//! is created, that every pool's AMI and instance type exist.

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

impl AwsProvider {
    /// The image of a pool: `ami-…` as is, `default` → the spec's `ami`/`image` (else
    /// `al2023`), any other word an alias resolved through SSM public parameters.
    pub(crate) async fn ami_for(&self, image: &str) -> gantry_provider::Result<String> {
        let o = &self.cfg.options;
        let want = if image == "default" {
            match (&o.ami, &o.image) {
                (Some(a), _) => a.clone(),
                (None, Some(i)) => i.clone(),
                (None, None) => "al2023".into(),
            }
        } else {
            image.to_string()
        };
        if want.starts_with("ami-") {
            return Ok(want);
        }
        if let Some(a) = self.images.lock().expect("images lock").get(&want) {
            return Ok(a.clone());
        }
        let ami = resolve(self, &want).await?;
        self.images
            .lock()
            .expect("images lock")
            .insert(want, ami.clone());
        Ok(ami)
    }

    /// Bad input creates nothing: every pool's AMI and instance type must exist first.
    pub(crate) async fn check_pools(&self) -> gantry_provider::Result<()> {
        let c = self.clients().await?;
        let mut amis = Vec::new();
        let mut types = Vec::new();
        for (size, image) in &self.cfg.pools {
            let a = self.ami_for(image).await?;
            if !amis.contains(&a) {
                amis.push(a);
            }
            let t = self.cfg.options.instance_type(size);
            if !types.contains(&t) {
                types.push(t);
            }
        }
        if !amis.is_empty() {
            c.ec2
                .describe_images()
                .set_image_ids(Some(amis.clone()))
                .send()
                .await
                .map_err(|e| sdk(self.region(), "DescribeImages", &amis.join(","), e))?;
        }
        if !types.is_empty() {
            c.ec2
                .describe_instance_types()
                .set_instance_types(Some(types.iter().map(|t| t.as_str().into()).collect()))
                .send()
                .await
                .map_err(|e| sdk(self.region(), "DescribeInstanceTypes", &types.join(","), e))?;
        }
        Ok(())
    }
}
