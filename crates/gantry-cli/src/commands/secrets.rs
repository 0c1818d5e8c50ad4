//! `gantry secrets rotate`: moving every secret of the state store to the current key provider,
//! for the day a key file leaves with someone, a passphrase changes or a team adopts OpenBao.

use std::sync::Arc;

use serde_json::json;

use crate::cli::{Global, OutputFormat, SecretsCommand};
use crate::context::{self, Home};
use crate::exit::{self, CliResult, Failure};
use crate::keys;
use crate::output;

pub async fn run(g: &Global, c: SecretsCommand) -> CliResult {
    match c {
        SecretsCommand::Rotate { from } => rotate(g, &from).await,
    }
}

async fn rotate(g: &Global, from: &[String]) -> CliResult {
    let home = Home::from_global(g)?;
    let store = context::open_store(&home).await?;
    let spec = keys::provider_spec(&home.root, &home.state)?;
    let olds = from
        .iter()
        .map(|s| keys::parse_spec(s.trim()))
        .collect::<Result<Vec<_>, Failure>>()?;
    // Rotating from one passphrase to another: the new one seals under a salt of its own, or
    // every envelope would already look "under the current key".
    let fresh_salt = matches!(spec, gantry_secrets::KeyProviderSpec::Passphrase)
        && olds
            .iter()
            .any(|o| matches!(o, gantry_secrets::KeyProviderSpec::Passphrase));
    let current =
        keys::build_provider(&spec, store.as_ref(), &keys::CURRENT_PASSPHRASE, fresh_salt).await?;
    let mut vault = gantry_engine::vault::Vault::new(store.clone(), current.clone()).await?;
    for old in &olds {
        let p = keys::build_provider(old, store.as_ref(), &keys::OLD_PASSPHRASE, false).await?;
        vault = vault.with_older(p);
    }
    let r = vault.rotate().await?;
    let _: &Arc<dyn gantry_secrets::KeyProvider> = &current;
    match g.output {
        OutputFormat::Json => output::print_json(&json!({
            "provider": current.describe(),
            "key_id": current.key_id(),
            "total": r.total,
            "rotated": r.rewrapped,
            "already": r.already,
        })),
        OutputFormat::Text => println!(
            "rotated {} of {} secrets to {} (key {}); {} already under it",
            r.rewrapped,
            r.total,
            current.describe(),
            current.key_id(),
            r.already
        ),
    }
    Ok(exit::OK)
}
