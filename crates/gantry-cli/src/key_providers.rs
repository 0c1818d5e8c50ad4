//! The key providers this binary builds beyond gantry-secrets' own: `awskms://` when the
//! `awskms` cargo feature is on (the AWS SDK's KMS client, in gantry-secrets-awskms). Whatever
//! builds a provider from `GANTRY_KEY_PROVIDER` passes [`external`] in its
//! `ProviderInputs::external`; a binary without the feature says `awskms` is not built in.

use std::sync::Arc;

use gantry_secrets::ExternalKeyProviders;

/// The builders of the key providers that live in crates of their own, as this binary's
/// features enable them. KMS's region, endpoint and credentials come from the standard AWS
/// chain (`AWS_REGION` or the key's ARN, `AWS_ENDPOINT_URL`, `AWS_PROFILE`, …).
pub fn external() -> Option<Arc<dyn ExternalKeyProviders>> {
    #[cfg(feature = "awskms")]
    {
        Some(Arc::new(gantry_secrets_awskms::AwsKmsProviders::default()))
    }
    #[cfg(not(feature = "awskms"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use gantry_secrets::{KeyProviderSpec, ProviderInputs};

    #[test]
    fn awskms_is_built_when_the_feature_is_on() {
        let inputs = ProviderInputs {
            external: super::external(),
            ..ProviderInputs::default()
        };
        let built = KeyProviderSpec::parse("awskms://alias/gantry")
            .unwrap()
            .build(&inputs);
        if cfg!(feature = "awskms") {
            let p = built.unwrap();
            assert_eq!((p.kind(), p.key_id()), ("awskms", "alias/gantry".into()));
        } else {
            let e = built.unwrap_err().to_string();
            assert!(e.contains("awskms is not built into this gantry"), "{e}");
        }
    }
}
