//! The application layer's context for this binary ([`gantry_engine::app::App`]): the state
//! store, the project's SSH identity, Ctrl-C, and how providers are built ([`CliProviders`],
//! over `context` and the registry of [`crate::providers`]).

use std::sync::Arc;

use gantry_core::ClusterSpec;
use gantry_engine::EngineError;
use gantry_engine::app::{App, Providers};
use gantry_engine::transport::Transport;
use gantry_provider::Provider;
use gantry_ssh::ClientConfig;

use crate::cli::Global;
use crate::context::{self, Home};
use crate::exit::{CliResult, Failure};

/// Providers as this binary builds them.
struct CliProviders {
    home: Home,
    ssh: ClientConfig,
    project: String,
}

/// A provider that cannot be built (the binary was built without it, options that do not
/// decode), as an engine error that keeps the message and the hint.
fn unavailable(f: Failure) -> EngineError {
    EngineError::ProviderUnavailable {
        message: format!("{:#}", f.error),
        hint: f.hints.into_iter().next(),
    }
}

impl Providers for CliProviders {
    fn for_spec(&self, spec: &ClusterSpec) -> Result<Arc<dyn Provider>, EngineError> {
        context::provider_for_spec(&self.home, &self.ssh, &self.project, spec).map_err(unavailable)
    }

    fn unrecorded(&self) -> Result<Arc<dyn Provider>, EngineError> {
        context::unrecorded_provider(&self.home, &self.ssh, &self.project).map_err(unavailable)
    }

    fn transport(&self, spec: &ClusterSpec, project: &str) -> Option<Arc<dyn Transport>> {
        // A spec whose provider cannot be built has no transport either; building the provider
        // reports why.
        context::transport_for_spec(&self.home, &self.ssh, project, spec)
            .ok()
            .flatten()
    }

    fn elsewhere(&self) -> Vec<Arc<dyn Provider>> {
        context::default_places(&self.home, &self.ssh, &self.project)
            .into_iter()
            .skip(1)
            .collect()
    }
}

/// The application context of this invocation.
pub async fn app(g: &Global, home: &Home) -> CliResult<App> {
    let store = context::open_store(home).await?;
    let ssh = context::ssh_config(home, &store, &g.project).await?;
    let secrets = context::secret_store(home, &store).await?;
    Ok(App {
        project: g.project.clone(),
        owner: context::current_user(),
        store,
        ssh: ssh.clone(),
        secrets,
        cancel: context::cancel_on_ctrl_c(),
        lock_timeout: g.lock_timeout,
        lock_ttl: g.lock_ttl,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        providers: Arc::new(CliProviders {
            home: home.clone(),
            ssh,
            project: g.project.clone(),
        }),
    })
}
