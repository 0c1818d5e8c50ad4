//! Where the project's nodes are listed: the listing scopes handed to
//! [`gantry_engine::app::list_project`] by `ls`, `gc`, `destroy --all/--expired` and
//! `inventory`. Which scopes exist is provider knowledge: each provider kind of the registry
//! ([`crate::providers`]) names its own (local nodes; every Docker engine a record names plus
//! the default one; every AWS region a record names plus `GANTRY_AWS_REGIONS` and `ls
//! --region`). This module only hands them the project's records.

use gantry_engine::app::{CacheUse, ProjectInventory, ProjectRecords, Scope, Warning};
use gantry_provider::registry::RecordedCluster;
use gantry_ssh::ClientConfig;

use crate::cli::Global;
use crate::context::{self, Home};
use crate::exit::CliResult;

/// The listing scopes of the project (see the module's doc), and warnings about places that
/// cannot be listed. `regions`: what the caller adds to the tracked regions and
/// `GANTRY_AWS_REGIONS` (`ls --region`).
pub(crate) fn listing_scopes(
    home: &Home,
    ssh: &ClientConfig,
    project: &str,
    records: &ProjectRecords,
    regions: &[String],
) -> (Vec<Scope>, Vec<Warning>) {
    let clusters: Vec<RecordedCluster<'_>> = records
        .clusters
        .iter()
        .map(|t| RecordedCluster {
            name: &t.record.name,
            kind: &t.record.provider,
            spec: t.spec.as_ref().ok(),
        })
        .collect();
    crate::providers::registry().listing_scopes(
        &clusters,
        &context::build_env(home, ssh, project),
        regions,
    )
}

/// The whole project ([`gantry_engine::app::list_project`]) over [`listing_scopes`]; the
/// warnings about region names come first.
pub(crate) async fn list_project(
    g: &Global,
    home: &Home,
    regions: &[String],
    cache: CacheUse,
) -> CliResult<ProjectInventory> {
    let store = context::open_store(home).await?;
    let ssh = context::listing_ssh_config(home, &g.project)?;
    let records = ProjectRecords::load(store.as_ref(), &g.project).await?;
    let (scopes, warnings) = listing_scopes(home, &ssh, &g.project, &records, regions);
    let mut inventory = gantry_engine::app::list_project(&store, records, scopes, cache).await?;
    inventory.warnings.splice(0..0, warnings);
    Ok(inventory)
}
