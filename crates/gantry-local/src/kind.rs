//! The local provider as a plug-in ([`LocalKind`]): its spec section (`provider: local` or
//! `provider: {local: {ssh_port: 2222}}`, [`LocalOptions`]), how it is built from a spec, and
//! its one listing scope (every local node of the project, wherever its cluster is recorded).
//! Kept here, with the provider, so that nothing above the provider crates knows local's options.

use std::sync::Arc;

use gantry_core::ClusterSpec;
use gantry_core::reader::{Node, Pos, Reader};
use gantry_provider::registry::{
    self, BuildEnv, OnError, ProviderKind, ProviderOptions, ProviderSection, RecordedCluster,
    Scope, Warning,
};
use gantry_provider::{ErrorKind, Provider, ProviderError};
use serde::{Deserialize, Serialize};

use crate::{DEFAULT_SSH_PORT, LocalConfig, LocalProvider, default_machine_dir};

/// Options of the local provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalOptions {
    /// TCP port the node agents' SSH servers listen on (each on its node's own address).
    /// Default 2222.
    #[serde(default)]
    pub ssh_port: Option<u16>,
}

const LOCAL_FIELDS: &[&str] = &["ssh_port"];

/// The local provider's kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalKind;

impl LocalKind {
    /// The local provider with `ssh_port` (None: the default).
    pub fn provider(env: &BuildEnv, ssh_port: Option<u16>) -> Result<LocalProvider, ProviderError> {
        let exe = env.executable.clone().ok_or_else(|| {
            ProviderError::new(
                "local",
                "build",
                "gantry",
                ErrorKind::Unavailable,
                "cannot find the gantry binary to run node agents",
            )
        })?;
        Ok(LocalProvider::new(LocalConfig {
            root: env.data_dir.join("local"),
            agent_exe: exe,
            ssh_port: ssh_port.unwrap_or(DEFAULT_SSH_PORT),
            user: env.user.clone(),
            authorized_keys: vec![env.ssh_public_key.clone()],
            machine_dir: default_machine_dir(),
        }))
    }
}

fn options(spec: &ClusterSpec) -> Result<LocalOptions, ProviderError> {
    spec.provider
        .options
        .to_typed()
        .map_err(|e| registry::options_error("local", spec, e))
}

impl ProviderSection for LocalKind {
    fn name(&self) -> &'static str {
        "local"
    }

    fn read_options(&self, r: &mut Reader, _at: Pos, o: Option<&Node>) -> Option<ProviderOptions> {
        let mut opts = LocalOptions::default();
        if let Some(o) = o {
            let fields = r.fields(o, "local", "the local provider options", LOCAL_FIELDS)?;
            if let Some(p) = fields.opt("ssh_port") {
                opts.ssh_port = Some(u16::try_from(r.int_in(p, 1, 65535, "2222")?).ok()?);
            }
        }
        ProviderOptions::from_typed(&opts).ok()
    }
}

impl ProviderKind for LocalKind {
    fn check_options(&self, spec: &ClusterSpec) -> Result<(), ProviderError> {
        options(spec).map(|_| ())
    }

    fn build(
        &self,
        spec: &ClusterSpec,
        env: &BuildEnv,
    ) -> Result<Arc<dyn Provider>, ProviderError> {
        Ok(Arc::new(LocalKind::provider(env, options(spec)?.ssh_port)?))
    }

    fn listing_scopes(
        &self,
        clusters: &[RecordedCluster<'_>],
        env: &BuildEnv,
        _named: &[String],
    ) -> (Vec<Scope>, Vec<Warning>) {
        match LocalKind::provider(env, None) {
            Ok(p) => (
                vec![Scope {
                    key: "local".into(),
                    kind: "local".into(),
                    region: None,
                    what: "local nodes".into(),
                    provider: Arc::new(p),
                    cacheable: false,
                    timeout: None,
                    on_error: OnError::Fail,
                    // Every local cluster, even one whose spec does not decode: its nodes are
                    // where every local node is.
                    clusters: clusters.iter().map(|c| c.name.to_string()).collect(),
                }],
                vec![],
            ),
            Err(e) => (
                vec![],
                vec![Warning {
                    region: None,
                    message: format!("cannot list local nodes: {e}"),
                }],
            ),
        }
    }

    fn default_place(&self, env: &BuildEnv) -> Option<Arc<dyn Provider>> {
        LocalKind::provider(env, None)
            .ok()
            .map(|p| Arc::new(p) as Arc<dyn Provider>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterSpec, gantry_core::SpecError> {
        gantry_core::spec::parse("spec.yaml", text, &[&LocalKind])
    }

    #[test]
    fn local_options_are_read_here_at_their_line_and_column() {
        let head = "apiVersion: gantry/v1\nname: demo\n";
        let tail = "pools: [{name: a, count: 1}]\n";
        let s = parse(&format!(
            "{head}provider: {{local: {{ssh_port: 2200}}}}\n{tail}"
        ))
        .unwrap();
        let o: LocalOptions = s.provider.options.to_typed().unwrap();
        assert_eq!(o.ssh_port, Some(2200));
        let s = parse(&format!("{head}provider: local\n{tail}")).unwrap();
        assert_eq!(
            serde_json::to_string(&s.provider).unwrap(),
            r#"{"local":{"ssh_port":null}}"#
        );
        let e = parse(&format!("{head}provider:\n  local:\n    port: 22\n{tail}")).unwrap_err();
        assert_eq!((e.items[0].line, e.items[0].column), (5, 5));
        assert!(
            e.items[0]
                .message
                .contains("unknown field `port` in the local provider options")
        );
        assert!(
            e.items[0]
                .hint
                .as_deref()
                .unwrap_or("")
                .contains("`ssh_port`")
        );
        let e = parse(&format!(
            "{head}provider: {{local: {{ssh_port: 70000}}}}\n{tail}"
        ))
        .unwrap_err();
        assert_eq!(e.items[0].line, 3);
    }
}
