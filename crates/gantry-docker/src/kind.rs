//! The Docker provider as a plug-in ([`DockerKind`]): its spec section (see [`crate::options`]),
//! the provider and Docker exec transport of a spec, and its listing scopes: every engine a
//! recorded cluster names, plus the default one (`DOCKER_HOST`, else the local socket), where
//! no engine running is the usual case and says nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gantry_core::ClusterSpec;
use gantry_core::reader::{Node, Pos, Reader};
use gantry_provider::registry::{
    self, BuildEnv, OnError, ProviderKind, ProviderOptions, ProviderSection, ReadinessRule,
    RecordedCluster, Scope, Warning,
};
use gantry_provider::transport::Transport;
use gantry_provider::{Provider, ProviderError};

use crate::options::{self, DockerOptions};
use crate::{DockerConfig, DockerProvider, DockerTransport};

/// How long a Docker engine may take to list the project's containers.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(10);

/// The Docker provider's kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct DockerKind;

/// The options of a docker spec, in Docker's own type.
pub fn docker_options(spec: &ClusterSpec) -> Result<DockerOptions, ProviderError> {
    spec.provider
        .options
        .to_typed()
        .map_err(|e| registry::options_error("docker", spec, e))
}

/// A provider that lists and deletes the containers of the engine `host` names (None: the
/// default one) by label, for the listing of the whole project.
pub fn engine(host: Option<&str>) -> DockerProvider {
    DockerProvider::new(DockerConfig::new(host.map(str::to_owned), "none"))
}

impl ProviderSection for DockerKind {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn read_options(&self, r: &mut Reader, at: Pos, o: Option<&Node>) -> Option<ProviderOptions> {
        options::read(r, at, o)
    }

    fn check_size(&self, size: &str) -> Option<(String, String)> {
        options::check_size(size)
    }

    fn readiness(&self) -> ReadinessRule {
        options::READINESS
    }
}

impl ProviderKind for DockerKind {
    fn check_options(&self, spec: &ClusterSpec) -> Result<(), ProviderError> {
        docker_options(spec).map(|_| ())
    }

    fn build(
        &self,
        spec: &ClusterSpec,
        _env: &BuildEnv,
    ) -> Result<Arc<dyn Provider>, ProviderError> {
        let opts = docker_options(spec)?;
        Ok(Arc::new(DockerProvider::new(DockerConfig::from_spec(
            spec, &opts,
        ))))
    }

    fn transport(
        &self,
        spec: &ClusterSpec,
        env: &BuildEnv,
    ) -> Result<Option<Arc<dyn Transport>>, ProviderError> {
        let opts = docker_options(spec)?;
        let provider = Arc::new(DockerProvider::new(DockerConfig::from_spec(spec, &opts)));
        Ok(Some(Arc::new(DockerTransport::new(provider, &env.project))))
    }

    fn listing_scopes(
        &self,
        clusters: &[RecordedCluster<'_>],
        _env: &BuildEnv,
        _named: &[String],
    ) -> (Vec<Scope>, Vec<Warning>) {
        // Engine address → (provider, its recorded clusters); the default engine first.
        let mut engines: BTreeMap<String, (DockerProvider, Vec<String>)> = BTreeMap::new();
        let default = engine(None);
        let default_host = default.host().to_string();
        engines.insert(default_host.clone(), (default, vec![]));
        for c in clusters {
            let Some(opts) = c.spec.and_then(|s| docker_options(s).ok()) else {
                continue;
            };
            let p = engine(opts.host.as_deref());
            engines
                .entry(p.host().to_string())
                .or_insert((p, vec![]))
                .1
                .push(c.name.to_string());
        }
        let scopes = engines
            .into_iter()
            .map(|(host, (provider, clusters))| Scope {
                key: format!("docker:{host}"),
                kind: "docker".into(),
                region: None,
                what: format!("docker engine {host}"),
                provider: Arc::new(provider),
                cacheable: false,
                timeout: Some(DOCKER_TIMEOUT),
                on_error: if host == default_host {
                    OnError::Quiet
                } else {
                    OnError::Warn
                },
                clusters,
            })
            .collect();
        (scopes, vec![])
    }

    fn default_place(&self, _env: &BuildEnv) -> Option<Arc<dyn Provider>> {
        Some(Arc::new(engine(None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::docker_size;

    fn parse(text: &str) -> Result<ClusterSpec, gantry_core::SpecError> {
        gantry_core::spec::parse("spec.yaml", text, &[&DockerKind])
    }

    fn check(text: &str, want: &[(usize, usize, &str, &str)]) {
        let e = match parse(text) {
            Ok(s) => panic!("expected errors for\n{text}\ngot {s:?}"),
            Err(e) => e,
        };
        assert_eq!(e.items.len(), want.len(), "{e:?}");
        for (item, (line, col, msg, hint)) in e.items.iter().zip(want) {
            assert_eq!((item.line, item.column), (*line, *col), "{item:?}");
            assert!(item.message.contains(msg), "{item:?}");
            assert!(
                item.hint.as_deref().unwrap_or("").contains(hint),
                "{item:?}"
            );
        }
    }

    #[test]
    fn docker_provider_options() {
        let ok = "apiVersion: gantry/v1\nname: demo\nprovider:\n  docker:\n    host: unix:///tmp/d/docker.sock\n    image: gantry/node:test\n    network: lab\n    privileged: true\npools: [{name: a, count: 2, size: medium}]\nblueprints:\n  - name: hello\n";
        let spec = parse(ok).unwrap();
        let o = docker_options(&spec).unwrap();
        assert_eq!(o.host.as_deref(), Some("unix:///tmp/d/docker.sock"));
        assert_eq!(o.image, "gantry/node:test");
        assert_eq!(o.network.as_deref(), Some("lab"));
        assert!(o.privileged);
        assert_eq!(spec.provider_name(), "docker");
        // Docker nodes are ready when they answer exec: the provider's API, so blueprints are fine.
        assert_eq!(spec.readiness, gantry_core::Readiness::Api);
        assert_eq!(docker_size("medium"), Some((2000, 4096)));

        let head = "apiVersion: gantry/v1\nname: demo\nprovider:\n  docker:\n";
        check(
            &format!("{head}    image: x\n    host: ftp://h\npools: [{{name: a, count: 1}}]\n"),
            &[(6, 11, "invalid docker host \"ftp://h\"", "DOCKER_HOST")],
        );
        check(
            &format!("{head}    image: x\nreadiness: ssh\npools: [{{name: a, count: 1}}]\n"),
            &[(
                6,
                12,
                "`readiness: ssh` does not apply to the docker provider",
                "exec",
            )],
        );
        check(
            &format!("{head}    image: x\npools: [{{name: a, count: 1, size: huge}}]\n"),
            &[(
                6,
                35,
                "unknown docker size `huge`",
                "`small`, `medium`, `large`",
            )],
        );
        check(
            "apiVersion: gantry/v1\nname: demo\nprovider: docker\npools: [{name: a, count: 1}]\n",
            &[(3, 11, "the docker provider needs options", "image")],
        );
    }
}
