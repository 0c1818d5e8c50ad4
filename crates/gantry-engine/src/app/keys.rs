//! Rotating the project's SSH key on the nodes, for the day someone leaves the team
//! (`gantry secrets rotate-ssh-key`).
//!
//! Every node reached over SSH lets the project key in through `~/.ssh/authorized_keys` (sshd
//! on a VM, gantry's agent on a local node), so rotation is the same edit everywhere, in two
//! phases. First, on every node, the new public key is added beside the old one (with the old
//! key; a node an earlier attempt finished takes only the new key, which then proves it is
//! there). Only when every node takes the new key does the second phase remove the old key
//! from each, logged in with the new one. Until then every node still takes the old key, which
//! the store keeps as the project key, so a rotation that cannot finish (a node stopped, Ctrl-C)
//! leaves nothing unreachable; running it again with the same new key (the caller keeps it as
//! the pending key in the state store) finishes it: every step can be repeated.
//!
//! Nodes reached another way (Docker exec) have no key to rotate. Nodes that are this
//! world's but cannot be reached now — stopped, or a local node of another gantry home — are
//! reported as failed: once the old key is gone they could not be reached again, so the caller
//! must not retire it.

use std::sync::Arc;

use gantry_ssh::{ClientConfig, SshError};

use super::ops::App;
use crate::EngineError;
use crate::blueprint::remote::Remote;
use crate::transport::{FanOutOptions, NodeTarget, SshTransport, Transport, fan_out};

/// What became of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    /// The new key is authorized and the old one is not.
    Rotated,
    /// The new key is authorized beside the old one, which stays until every node has the
    /// new key (another node failed).
    Added,
    /// The node is not reached with a key (why).
    NoKey(String),
    /// The node still needs the old key (why); rotation is not finished.
    Failed(String),
}

/// One node's outcome.
#[derive(Debug, Clone)]
pub struct NodeKey {
    pub cluster: String,
    pub node: String,
    pub outcome: KeyOutcome,
}

/// `ALGO BASE64` of an OpenSSH public key line (the comment dropped): what is written to and
/// looked for in `authorized_keys`. Only `[A-Za-z0-9+/=-]` and one space, so it is safe inside
/// single quotes in a shell script.
fn key_line(public_openssh: &str) -> Result<String, EngineError> {
    let mut parts = public_openssh.split_whitespace();
    let bad = |reason: &str| {
        EngineError::Ssh(SshError::InvalidKey {
            what: "project public key".into(),
            reason: reason.into(),
        })
    };
    let (Some(algo), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(bad("not an OpenSSH public key line"));
    };
    let safe = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=-@.".contains(&b))
    };
    if !safe(algo) || !safe(blob) {
        return Err(bad("unexpected characters"));
    }
    Ok(format!("{algo} {blob}"))
}

/// Adds `line` to `~/.ssh/authorized_keys` unless a line already holds its key.
fn add_script(line: &str) -> String {
    let blob = line.split(' ').nth(1).unwrap_or_default();
    format!(
        "set -e; umask 077; mkdir -p \"$HOME/.ssh\"; f=\"$HOME/.ssh/authorized_keys\"; \
         touch \"$f\"; grep -qF ' {blob}' \"$f\" || printf '%s\\n' '{line}' >> \"$f\""
    )
}

/// Removes every line holding the key of `old` from `~/.ssh/authorized_keys` (atomically, by
/// rename), after checking that `new`'s key is still in it.
fn remove_script(old: &str, new: &str) -> String {
    let old_blob = old.split(' ').nth(1).unwrap_or_default();
    let new_blob = new.split(' ').nth(1).unwrap_or_default();
    format!(
        "set -e; f=\"$HOME/.ssh/authorized_keys\"; grep -qF ' {new_blob}' \"$f\"; \
         t=\"$f.gantry-rotate.$$\"; umask 077; grep -vF ' {old_blob}' \"$f\" > \"$t\" || true; \
         mv \"$t\" \"$f\""
    )
}

impl App {
    /// Authorizes `new`'s key and retires the current one (`self.ssh.key`) on every node of
    /// every recorded cluster of the project, at most `concurrency` nodes at once. The result
    /// lists every node; rotation is complete when none [`KeyOutcome::Failed`].
    pub async fn rotate_node_keys(
        &self,
        new: &ClientConfig,
        concurrency: usize,
    ) -> Result<Vec<NodeKey>, EngineError> {
        let old_line = key_line(&self.ssh.key.public_openssh())?;
        let new_line = key_line(&new.key.public_openssh())?;
        let mut report = Vec::new();
        let mut work: Vec<(String, NodeTarget)> = Vec::new();
        for record in self.store.list_clusters(&self.project).await? {
            let cluster = record.name.clone();
            let c = self.cluster(&cluster, None).await?;
            let ours = c.ctx.list_nodes(&cluster).await?;
            if c.ctx.transport.is_some() {
                report.extend(ours.iter().map(|n| NodeKey {
                    cluster: cluster.clone(),
                    node: n.name.clone(),
                    outcome: KeyOutcome::NoKey(
                        "reached through its provider (Docker exec), not with a key".into(),
                    ),
                }));
                continue;
            }
            // Recorded nodes this home cannot list (another home's local nodes) keep the old key.
            let listed: std::collections::BTreeSet<&str> =
                ours.iter().map(|n| n.name.as_str()).collect();
            for n in self.store.list_nodes(&self.project, &cluster).await? {
                if !listed.contains(n.name.as_str()) {
                    report.push(NodeKey {
                        cluster: cluster.clone(),
                        node: n.name.clone(),
                        outcome: KeyOutcome::Failed(format!(
                            "not reachable from this gantry home ({}): rotate from the home \
                             that made it",
                            n.provider_id
                        )),
                    });
                }
            }
            let old_ssh = SshTransport::new(self.ssh.clone());
            let mut targets: Vec<NodeTarget> = Vec::new();
            for n in &ours {
                match old_ssh.target(n) {
                    Some(t) => targets.push(t),
                    None => report.push(NodeKey {
                        cluster: cluster.clone(),
                        node: n.name.clone(),
                        outcome: KeyOutcome::Failed(format!(
                            "{}: start it, then rotate again",
                            n.state.as_str()
                        )),
                    }),
                }
            }
            work.extend(targets.into_iter().map(|t| (cluster.clone(), t)));
        }

        let (add, remove) = (add_script(&new_line), remove_script(&old_line, &new_line));
        let (old_t, new_t): (Arc<dyn Transport>, Arc<dyn Transport>) = (
            Arc::new(SshTransport::new(self.ssh.clone())),
            Arc::new(SshTransport::new(new.clone())),
        );
        let opts = FanOutOptions {
            concurrency,
            ..FanOutOptions::default()
        };
        let targets: Vec<NodeTarget> = work.iter().map(|(_, t)| t.clone()).collect();
        // Phase 1, every node: the new key beside the old one. A node an earlier attempt
        // already rotated takes only the new key: adding with it proves it is there.
        let added = {
            let (old_t, new_t) = (old_t.clone(), new_t.clone());
            fan_out(&targets, &opts, move |node| {
                let (old_t, new_t, add) = (old_t.clone(), new_t.clone(), add.clone());
                Box::pin(async move {
                    let with_old = Remote {
                        transport: old_t,
                        target: node.clone(),
                    };
                    let first = match with_old.sh(&add, None).await {
                        Ok((st, _)) if st.success() => return Ok(None),
                        Ok((_, out)) => format!("adding the new key failed: {}", out.trim()),
                        Err(e) => e.to_string(),
                    };
                    let with_new = Remote {
                        transport: new_t,
                        target: node,
                    };
                    Ok(match with_new.sh(&add, None).await {
                        Ok((st, _)) if st.success() => None,
                        _ => Some(first),
                    })
                })
            })
            .await
        };
        let mut pending = Vec::new();
        for ((cluster, t), r) in work.iter().zip(added) {
            match r {
                Ok(None) => pending.push((cluster.clone(), t.clone())),
                Ok(Some(why)) => report.push(NodeKey {
                    cluster: cluster.clone(),
                    node: t.name.clone(),
                    outcome: KeyOutcome::Failed(why),
                }),
                Err(e) => report.push(NodeKey {
                    cluster: cluster.clone(),
                    node: t.name.clone(),
                    outcome: KeyOutcome::Failed(e.to_string()),
                }),
            }
        }
        // Phase 2, only when every node takes the new key: the old one goes. Until then every
        // node still takes the old key, which the store keeps, so nothing becomes unreachable.
        if report
            .iter()
            .any(|n| matches!(n.outcome, KeyOutcome::Failed(_)))
        {
            report.extend(pending.into_iter().map(|(cluster, t)| NodeKey {
                cluster,
                node: t.name,
                outcome: KeyOutcome::Added,
            }));
            return Ok(report);
        }
        let targets: Vec<NodeTarget> = pending.iter().map(|(_, t)| t.clone()).collect();
        let removed = fan_out(&targets, &opts, move |node| {
            let (new_t, remove) = (new_t.clone(), remove.clone());
            Box::pin(async move {
                let with_new = Remote {
                    transport: new_t,
                    target: node,
                };
                let (st, out) = with_new.sh(&remove, None).await?;
                Ok((!st.success()).then(|| format!("removing the old key failed: {}", out.trim())))
            })
        })
        .await;
        for ((cluster, t), r) in pending.into_iter().zip(removed) {
            report.push(NodeKey {
                cluster,
                node: t.name,
                outcome: match r {
                    Ok(None) => KeyOutcome::Rotated,
                    Ok(Some(why)) => KeyOutcome::Failed(why),
                    Err(e) => KeyOutcome::Failed(e.to_string()),
                },
            });
        }
        Ok(report)
    }
}

impl App {
    /// Records a rotation in the state store: one run of kind `rotate-ssh-key` per cluster
    /// (`gantry runs CLUSTER`, `gantry logs RUN`), its events naming each node's outcome and the
    /// two keys' fingerprints (never a key), succeeded when no node of the cluster failed.
    pub async fn record_key_rotation(
        &self,
        report: &[NodeKey],
        old_fingerprint: &str,
        new_fingerprint: &str,
    ) -> Result<(), EngineError> {
        use gantry_core::event::Event;
        use gantry_core::status::{Level, RunKind, RunStatus};
        let mut by_cluster: std::collections::BTreeMap<&str, Vec<&NodeKey>> = Default::default();
        for n in report {
            by_cluster.entry(n.cluster.as_str()).or_default().push(n);
        }
        for (cluster, nodes) in by_cluster {
            let failed = nodes
                .iter()
                .filter(|n| matches!(n.outcome, KeyOutcome::Failed(_)))
                .count();
            let now = time::OffsetDateTime::now_utc();
            let run = gantry_state::RunRecord {
                id: uuid::Uuid::now_v7().to_string(),
                project: self.project.clone(),
                cluster: cluster.to_string(),
                kind: RunKind::RotateSshKey,
                status: if failed == 0 {
                    RunStatus::Succeeded
                } else {
                    RunStatus::Failed
                },
                spec_hash: None,
                holder: crate::lock::holder_id(&self.command),
                started_at: now,
                finished_at: Some(now),
                error: (failed > 0).then(|| format!("{failed} node(s) still take the old key")),
            };
            self.store.create_run(&run).await?;
            let mut events = vec![Event::Message {
                level: Level::Info,
                text: format!("project key {old_fingerprint} replaced by {new_fingerprint}"),
            }];
            events.extend(nodes.iter().map(|n| match &n.outcome {
                KeyOutcome::Rotated => Event::Message {
                    level: Level::Info,
                    text: format!("{}: rotated", n.node),
                },
                KeyOutcome::Added => Event::Message {
                    level: Level::Info,
                    text: format!(
                        "{}: new key added, old key kept until every node has it",
                        n.node
                    ),
                },
                KeyOutcome::NoKey(why) => Event::Message {
                    level: Level::Info,
                    text: format!("{}: no key to rotate ({why})", n.node),
                },
                KeyOutcome::Failed(why) => Event::Message {
                    level: Level::Warn,
                    text: format!("{}: still takes the old key: {why}", n.node),
                },
            }));
            for e in events {
                let json = serde_json::to_string(&e).map_err(|e| {
                    EngineError::State(gantry_state::StateError::Encode {
                        what: "event",
                        source: Box::new(e),
                    })
                })?;
                self.store.append_event(&run.id, now, &json).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lines_drop_the_comment_and_refuse_shell_characters() {
        assert_eq!(
            key_line("ssh-ed25519 AAAAC3Nza+/= gantry project key").unwrap(),
            "ssh-ed25519 AAAAC3Nza+/="
        );
        assert!(key_line("ssh-ed25519").is_err());
        assert!(key_line("ssh-ed25519 AAAA';rm -rf ~'").is_err());
        assert!(key_line("ssh-ed25519 AAAA$(id)").is_err());
    }

    #[test]
    fn the_scripts_add_once_and_remove_only_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let run = |script: &str| {
            std::process::Command::new("/bin/sh")
                .args(["-c", script])
                .env("HOME", dir.path())
                .status()
                .unwrap()
                .success()
        };
        let (old, new) = ("ssh-ed25519 OLDKEY=", "ssh-ed25519 NEWKEY=");
        std::fs::create_dir(dir.path().join(".ssh")).unwrap();
        let file = dir.path().join(".ssh/authorized_keys");
        std::fs::write(&file, format!("{old} alice\nssh-rsa OTHER bob\n")).unwrap();
        assert!(run(&add_script(new)));
        assert!(run(&add_script(new)), "adding twice is harmless");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("{old} alice\nssh-rsa OTHER bob\n{new}\n")
        );
        assert!(run(&remove_script(old, new)));
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("ssh-rsa OTHER bob\n{new}\n")
        );
        // Never removes the old key when the new one is not in the file.
        std::fs::write(&file, format!("{old}\n")).unwrap();
        assert!(!run(&remove_script(old, new)));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{old}\n"));
    }
}
