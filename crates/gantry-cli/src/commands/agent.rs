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
        Err(e) => Err(Failure::new(exit::FAILURE, e)),
    }
}
