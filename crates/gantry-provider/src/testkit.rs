//! An in-memory provider for engine tests: no IO, deterministic, with fault injection
//! (a number of retryable failures before calls succeed) and a call log.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use gantry_core::tags::{self, TagFilter};

use crate::{ErrorKind, NodeInfo, NodeRequest, NodeState, Provider, ProviderError, Result};

#[derive(Debug, Default)]
pub struct MemoryProvider {
    nodes: Mutex<BTreeMap<String, NodeInfo>>,
    /// Fail this many upcoming mutating calls with a retryable error.
    pub fail_next: AtomicU32,
    /// Fail this many upcoming `list` calls with a retryable error (a throttled Describe).
    pub fail_lists: AtomicU32,
    calls: Mutex<Vec<String>>,
    seq: AtomicU32,
}

impl MemoryProvider {
    pub fn new() -> Self {
        Self::default()
    }

    /// Names of every call made, in order (`list project=p cluster=c`, `create demo-db-1`, …).
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn enter(&self, call: String) -> Result<()> {
        self.calls.lock().unwrap().push(call.clone());
        let left = self.fail_next.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_next.store(left - 1, Ordering::SeqCst);
            return Err(ProviderError::new(
                "memory",
                &call,
                "",
                ErrorKind::Retryable,
                "injected fault",
            ));
        }
        Ok(())
    }

    fn set_state(&self, name: &str, state: NodeState) -> Result<NodeInfo> {
        let mut nodes = self.nodes.lock().unwrap();
        let n = nodes.get_mut(name).ok_or_else(|| {
            ProviderError::new(
                "memory",
                "set_state",
                name,
                ErrorKind::NotFound,
                "no such node",
            )
        })?;
        n.state = state;
        Ok(n.clone())
    }
}

#[async_trait]
impl Provider for MemoryProvider {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn list(&self, filter: &TagFilter) -> Result<Vec<NodeInfo>> {
        let what: Vec<String> = filter
            .equals
            .iter()
            .map(|(k, v)| format!("{}={v}", k.trim_start_matches("gantry-")))
            .collect();
        self.calls
            .lock()
            .unwrap()
            .push(format!("list {}", what.join(" ")).trim_end().to_string());
        let left = self.fail_lists.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_lists.store(left - 1, Ordering::SeqCst);
            return Err(ProviderError::new(
                "memory",
                "list",
                "",
                ErrorKind::Retryable,
                "injected fault",
            ));
        }
        Ok(self
            .nodes
            .lock()
            .unwrap()
            .values()
            .filter(|n| filter.matches(&n.tags))
            .cloned()
            .collect())
    }

    async fn create_node(&self, req: &NodeRequest) -> Result<NodeInfo> {
        self.enter(format!("create {}", req.name))?;
        let mut nodes = self.nodes.lock().unwrap();
        if let Some(n) = nodes.get(&req.name) {
            // Idempotent for this world's node only (see the trait's contract).
            let mut world = gantry_core::tags::World::new(
                req.tags.get(tags::WORLD).cloned().unwrap_or_default(),
            );
            world
                .legacy_uids
                .extend(req.tags.get(tags::CLUSTER_UID).cloned());
            if !world.owns(&n.tags) {
                return Err(ProviderError::new(
                    "memory",
                    "create",
                    &req.name,
                    ErrorKind::Conflict,
                    format!(
                        "node {} belongs to another gantry world: made by {}",
                        req.name,
                        tags::owner_of(&n.tags)
                    ),
                ));
            }
            return Ok(n.clone());
        }
        let i = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let n = NodeInfo {
            name: req.name.clone(),
            provider_id: format!("mem-{i}"),
            pool: req.pool.clone(),
            index: req.index,
            address: Some(std::net::IpAddr::from([127, 99, 0, i as u8])),
            ssh: None,
            state: NodeState::Running,
            tags: req.tags.clone(),
            created_at: "2026-01-01T00:00:00Z".into(),
            host_key: None,
        };
        nodes.insert(req.name.clone(), n.clone());
        Ok(n)
    }

    async fn start_node(&self, node: &NodeInfo) -> Result<NodeInfo> {
        self.enter(format!("start {}", node.name))?;
        self.set_state(&node.name, NodeState::Running)
    }

    async fn stop_node(&self, node: &NodeInfo) -> Result<NodeInfo> {
        self.enter(format!("stop {}", node.name))?;
        self.set_state(&node.name, NodeState::Stopped)
    }

    async fn set_tags(&self, node: &NodeInfo, tags: &gantry_core::Tags) -> Result<NodeInfo> {
        self.enter(format!("set_tags {}", node.name))?;
        let mut nodes = self.nodes.lock().unwrap();
        let n = nodes.get_mut(&node.name).ok_or_else(|| {
            ProviderError::new(
                "memory",
                "set_tags",
                &node.name,
                ErrorKind::NotFound,
                "no such node",
            )
        })?;
        n.tags
            .extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(n.clone())
    }

    async fn delete_node(&self, node: &NodeInfo) -> Result<()> {
        self.enter(format!("delete {}", node.name))?;
        self.nodes.lock().unwrap().remove(&node.name);
        Ok(())
    }
}

/// A spec section for tests of code above the providers (the engine's): the kind `local`, with
/// no options (`provider: local` or `provider: {local: {}}`), as the local provider records it.
#[derive(Debug, Default, Clone, Copy)]
pub struct TestSection;

impl gantry_core::ProviderSection for TestSection {
    fn name(&self) -> &'static str {
        "local"
    }

    fn read_options(
        &self,
        r: &mut gantry_core::reader::Reader,
        _at: gantry_core::reader::Pos,
        options: Option<&gantry_core::reader::Node>,
    ) -> Option<gantry_core::ProviderOptions> {
        if let Some(o) = options {
            r.fields(o, "local", "the local provider options", &[])?;
        }
        gantry_core::ProviderOptions::from_typed(&serde_json::json!({ "ssh_port": null })).ok()
    }
}

/// Parses a spec whose provider is [`TestSection`]'s `local`.
pub fn parse_spec(
    file: &str,
    text: &str,
) -> std::result::Result<gantry_core::ClusterSpec, gantry_core::SpecError> {
    gantry_core::spec::parse(file, text, &[&TestSection])
}
