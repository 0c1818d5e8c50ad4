//! The providers this binary is built with: the one place that names provider crates. Each
//! registers its kind ([`gantry_provider::registry::ProviderKind`]); everything else (spec
//! parsing, building providers and transports, the project's listing scopes) asks the
//! [`registry`]. Adding a provider is its crate, a cargo feature and one line here.

use std::sync::{Arc, OnceLock};

use gantry_provider::registry::Registry;

/// The registry of this binary's providers, built once.
pub fn registry() -> Arc<Registry> {
    static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            let mut r = Registry::new();
            r.register(gantry_local::LocalKind);
            #[cfg(feature = "docker")]
            r.register(gantry_docker::DockerKind);
            #[cfg(feature = "aws")]
            r.register(gantry_aws::AwsKind);
            Arc::new(r)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    //! Records written by the release before providers became plug-ins (`dd77e1e`, see
    //! `tests/fixtures/state-dd77e1e/README.md`) still decode: every spec, its recorded hash,
    //! and its provider's options.

    use std::path::PathBuf;

    use gantry_state::{SqliteStore, StateStore};

    use super::*;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-dd77e1e")
    }

    #[tokio::test]
    async fn records_written_by_dd77e1e_still_decode_with_their_hash_and_provider() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        std::fs::copy(fixture().join("state.db"), &db).unwrap();
        let store = SqliteStore::open(&db).unwrap();
        let records = store.list_clusters("default").await.unwrap();
        let mut names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["fx-aws", "fx-docker", "fx-local"]);
        let registry = registry();
        for r in &records {
            let spec =
                gantry_engine::app::decode_spec(r).unwrap_or_else(|e| panic!("{}: {e}", r.name));
            assert_eq!(spec.hash(), r.spec_hash, "{}: hash changed", r.name);
            assert_eq!(spec.provider_name(), r.provider, "{}", r.name);
            let kind = registry.kind(&r.provider).expect("kind registered");
            kind.check_options(&spec)
                .unwrap_or_else(|e| panic!("{}: {e}", r.name));
            // The spec file it was made from parses to the same spec today.
            let file = fixture().join(format!("{}.yaml", r.provider));
            let text = std::fs::read_to_string(&file).unwrap();
            let parsed = registry.parse_spec("spec.yaml", &text).unwrap();
            assert_eq!(parsed.hash(), r.spec_hash, "{}: parsed hash", r.name);
        }
        let aws = records.iter().find(|r| r.name == "fx-aws").unwrap();
        let spec = gantry_engine::app::decode_spec(aws).unwrap();
        let o = gantry_aws::aws_options(&spec).unwrap();
        assert_eq!(o.region, "us-east-1");
        let docker = records.iter().find(|r| r.name == "fx-docker").unwrap();
        let spec = gantry_engine::app::decode_spec(docker).unwrap();
        assert_eq!(
            gantry_docker::docker_options(&spec).unwrap().image,
            "gantry/node:test"
        );
    }
}
