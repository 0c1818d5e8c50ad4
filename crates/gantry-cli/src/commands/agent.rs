//! `gantry agent`: the local provider's node agent (hidden; started detached by the provider).

use std::path::Path;

use crate::exit::{self, CliResult, Failure};

pub async fn run(node_dir: &Path) -> CliResult {
    match gantry_local::run_agent(node_dir).await {
        Ok(true) => Ok(exit::OK),
        Ok(false) => {
            eprintln!("another agent already serves {}", node_dir.display());
            Ok(exit::OK)
        }
        // The provider that started the agent tells this apart from other failures: a new node
        // then moves to another address.
        Err(e @ gantry_local::LocalError::AddressInUse { .. }) => {
            Err(Failure::new(gantry_local::AGENT_EXIT_ADDRESS_IN_USE, e))
        }
        Err(e) => Err(Failure::new(exit::FAILURE, e)),
    }
}
