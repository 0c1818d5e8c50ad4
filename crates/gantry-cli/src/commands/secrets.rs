//! `gantry secrets rotate`: moving every secret of the state store to the current key provider,
//! for the day a key file leaves with someone, a passphrase changes or a team adopts OpenBao;
//! `gantry secrets rotate-ssh-key`: replacing the project's SSH key on every node and in the
//! store, for the day someone who had it leaves the team.

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
        SecretsCommand::RotateSshKey { concurrency } => rotate_ssh_key(g, concurrency).await,
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

/// The new key is made once and kept in the store as the *next* key until every node has it,
/// so an interrupted rotation (a stopped node, Ctrl-C, a crash) resumes with the same key: the
/// engine's per-node steps can be repeated. Only when no node still needs the old key does the
/// store's key change, the old key's fingerprint join the retired ones (another home's cache of
/// it is then replaced, not refused) and the next key go away. Each cluster gets a run record
/// of kind `rotate-ssh-key`.
async fn rotate_ssh_key(g: &Global, concurrency: usize) -> CliResult {
    use gantry_engine::app::keys::KeyOutcome;
    use gantry_engine::vault::names;
    use gantry_ssh::KeyPair;

    let home = Home::from_global(g)?;
    let app = crate::app::app(g, &home).await?;
    let vault = context::vault(&home, &app.store).await?;
    let project = &g.project;
    let next_name = names::ssh_next_private_key(project);
    let ssh_failure = |e: gantry_ssh::SshError| Failure::new(exit::FAILURE, anyhow::Error::new(e));
    let fresh = KeyPair::generate().to_openssh().map_err(ssh_failure)?;
    let pem = vault
        .get_or_create(&next_name, || fresh.as_bytes().to_vec())
        .await?;
    let next = KeyPair::from_openssh(&format!("secret `{next_name}`"), pem.expose())
        .map_err(ssh_failure)?;
    let old_fp = app.ssh.key.fingerprint();
    let new_fp = next.fingerprint();
    let new_cfg = gantry_ssh::ClientConfig {
        key: Arc::new(next.clone()),
        ..app.ssh.clone()
    };
    let report = app.rotate_node_keys(&new_cfg, concurrency).await?;
    app.record_key_rotation(&report, &old_fp, &new_fp).await?;
    let failed: Vec<_> = report
        .iter()
        .filter_map(|n| match &n.outcome {
            KeyOutcome::Failed(why) => Some(format!("{}: {why}", n.node)),
            _ => None,
        })
        .collect();
    let rotated = report
        .iter()
        .filter(|n| n.outcome == KeyOutcome::Rotated)
        .count();
    if failed.is_empty() {
        let retired_name = names::ssh_retired_keys(project);
        let mut retired = vault
            .get(&retired_name)
            .await?
            .map(|b| String::from_utf8_lossy(b.expose()).into_owned())
            .unwrap_or_default();
        if !retired.lines().any(|l| l.trim() == old_fp) {
            retired.push_str(&old_fp);
            retired.push('\n');
        }
        vault.put(&retired_name, retired.as_bytes()).await?;
        vault
            .put(&names::ssh_private_key(project), pem.expose())
            .await?;
        vault.delete(&next_name).await?;
        next.save(&home.key_path(project)).map_err(ssh_failure)?;
    }
    match g.output {
        OutputFormat::Json => output::print_json(&json!({
            "old_key": old_fp,
            "new_key": new_fp,
            "complete": failed.is_empty(),
            "nodes": report.iter().map(|n| json!({
                "cluster": n.cluster,
                "node": n.node,
                "outcome": match &n.outcome {
                    KeyOutcome::Rotated => "rotated".to_string(),
                    KeyOutcome::Added => "added (old key kept)".to_string(),
                    KeyOutcome::NoKey(why) => format!("no key: {why}"),
                    KeyOutcome::Failed(why) => format!("failed: {why}"),
                },
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            for n in &report {
                match &n.outcome {
                    KeyOutcome::Rotated => println!("{}  rotated", n.node),
                    KeyOutcome::Added => println!("{}  new key added (old key kept)", n.node),
                    KeyOutcome::NoKey(why) => println!("{}  no key to rotate ({why})", n.node),
                    KeyOutcome::Failed(why) => println!("{}  FAILED: {why}", n.node),
                }
            }
            if failed.is_empty() {
                println!(
                    "project key {old_fp} replaced by {new_fp} on {rotated} node(s) and in the state store"
                );
            }
        }
    }
    if failed.is_empty() {
        Ok(exit::OK)
    } else {
        Err(Failure::new(
            exit::FAILURE,
            anyhow::anyhow!(
                "the project key is not rotated yet: {} node(s) still take only the old key ({})",
                failed.len(),
                failed.join("; ")
            ),
        )
        .hint(
            "start the nodes that are stopped (or destroy what is gone), then run              `gantry secrets rotate-ssh-key` again: it continues with the same new key",
        ))
    }
}
