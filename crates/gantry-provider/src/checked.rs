//! Nothing a provider returns is trusted as a name, an address or a user.
//!
//! A node's name comes back from the provider (the EC2 `Name` tag, a Docker label, a local
//! `node.json`), and anyone who can tag an instance in the account can write it. gantry then
//! writes it into `known_hosts` (a newline would pin a key for another alias), `ssh-config` and
//! the Ansible inventory (a newline would add a `ProxyCommand`, run on the user's machine) and
//! `get`'s output paths (`../x` or `/abs` would escape the directory). [`check_node`] is the one
//! rule for what is accepted, and [`Checked`] applies it to everything a provider returns: nodes
//! that fail it are dropped from listings and reported with `tracing::warn!` (the CLI prints
//! warnings on stderr), never passed on.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gantry_core::Tags;
use gantry_core::tags::{self, TagFilter};

use crate::{
    ClusterRequest, ErrorKind, NodeInfo, NodeRequest, Provider, ProviderError, ResourceChange,
    Result,
};

/// Why a node a provider returned is not accepted; `Ok` when it is: its name is exactly
/// `<cluster>-<pool>-<index>` of valid `gantry-cluster`, `gantry-pool` and `gantry-index` tags
/// (and agrees with its `pool`/`index` fields), its SSH host is an IP address and its SSH user a
/// plain login name.
pub fn check_node(n: &NodeInfo) -> std::result::Result<(), String> {
    let tag = |k: &str| n.tags.get(k).ok_or_else(|| format!("it has no {k} tag"));
    let cluster = tag(tags::CLUSTER)?;
    gantry_core::validate_name(cluster).map_err(|e| format!("its {} tag: {e}", tags::CLUSTER))?;
    let pool = tag(tags::POOL)?;
    gantry_core::validate_name(pool).map_err(|e| format!("its {} tag: {e}", tags::POOL))?;
    let index_tag = tag(tags::INDEX)?;
    let index: u32 = index_tag
        .parse()
        .ok()
        .filter(|i: &u32| *i >= 1 && i.to_string() == *index_tag)
        .ok_or_else(|| format!("its {} tag {index_tag:?} is not a node number", tags::INDEX))?;
    let want = gantry_core::node_name(cluster, pool, index);
    if n.name != want {
        return Err(format!("its name is not {want}, the name its tags give"));
    }
    if n.pool != *pool || n.index != index {
        return Err(format!(
            "its pool/index ({}/{}) are not its tags' ({pool}/{index})",
            n.pool, n.index
        ));
    }
    if let Some(s) = &n.ssh {
        s.host
            .parse::<IpAddr>()
            .map_err(|_| format!("its ssh host {:?} is not an IP address", s.host))?;
        gantry_core::validate_user(&s.user).map_err(|e| format!("its ssh user: {e}"))?;
        if s.port == 0 {
            return Err("its ssh port is 0".into());
        }
    }
    Ok(())
}

/// A provider whose every returned node passed [`check_node`]. Wrap each provider once where it
/// is built; the binary does so for all of them.
pub struct Checked {
    inner: Arc<dyn Provider>,
}

impl Checked {
    pub fn wrap(inner: Arc<dyn Provider>) -> Arc<dyn Provider> {
        Arc::new(Checked { inner })
    }

    /// `nodes` without the ones that fail the check, each reported.
    fn keep(&self, nodes: Vec<NodeInfo>) -> Vec<NodeInfo> {
        nodes
            .into_iter()
            .filter(|n| match check_node(n) {
                Ok(()) => true,
                Err(why) => {
                    // `?` quotes the name: a newline in it is shown as `\n`, never printed.
                    tracing::warn!(
                        "ignoring a node the {} provider listed as {:?} ({}): {why}",
                        self.inner.name(),
                        n.name,
                        n.provider_id.escape_debug()
                    );
                    false
                }
            })
            .collect()
    }

    /// A node a call returned, or an error when it fails the check.
    fn one(&self, op: &str, n: NodeInfo) -> Result<NodeInfo> {
        match check_node(&n) {
            Ok(()) => Ok(n),
            Err(why) => Err(ProviderError::new(
                self.inner.name(),
                op,
                format!("{:?}", n.name),
                ErrorKind::InvalidInput,
                format!("the provider returned a node gantry does not accept: {why}"),
            )),
        }
    }
}

#[async_trait]
impl Provider for Checked {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn list(&self, filter: &TagFilter) -> Result<Vec<NodeInfo>> {
        Ok(self.keep(self.inner.list(filter).await?))
    }

    async fn create_node(&self, req: &NodeRequest) -> Result<NodeInfo> {
        let n = self.inner.create_node(req).await?;
        self.one("create_node", n)
    }

    async fn start_node(&self, node: &NodeInfo) -> Result<NodeInfo> {
        let n = self.inner.start_node(node).await?;
        self.one("start_node", n)
    }

    async fn stop_node(&self, node: &NodeInfo) -> Result<NodeInfo> {
        let n = self.inner.stop_node(node).await?;
        self.one("stop_node", n)
    }

    async fn delete_node(&self, node: &NodeInfo) -> Result<()> {
        self.inner.delete_node(node).await
    }

    async fn ensure_cluster_resources(&self, req: &ClusterRequest) -> Result<()> {
        self.inner.ensure_cluster_resources(req).await
    }

    async fn preflight(&self, req: &ClusterRequest) -> Result<()> {
        self.inner.preflight(req).await
    }

    async fn plan_cluster_resources(&self, req: &ClusterRequest) -> Result<Vec<ResourceChange>> {
        self.inner.plan_cluster_resources(req).await
    }

    async fn delete_cluster_resources(&self, filter: &TagFilter) -> Result<()> {
        self.inner.delete_cluster_resources(filter).await
    }

    async fn set_tags(&self, node: &NodeInfo, tags: &Tags) -> Result<NodeInfo> {
        let n = self.inner.set_tags(node, tags).await?;
        self.one("set_tags", n)
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    fn shares_host_filesystem(&self) -> bool {
        self.inner.shares_host_filesystem()
    }

    fn reaches(&self, provider_id: &str) -> bool {
        self.inner.reaches(provider_id)
    }

    fn boot_timeout(&self) -> Duration {
        self.inner.boot_timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeState, SshEndpoint};

    fn node(name: &str, cluster: &str, pool: &str, index: &str) -> NodeInfo {
        let mut t = Tags::new();
        t.insert(tags::CLUSTER.into(), cluster.into());
        t.insert(tags::POOL.into(), pool.into());
        t.insert(tags::INDEX.into(), index.into());
        NodeInfo {
            name: name.into(),
            provider_id: "i-1".into(),
            pool: pool.into(),
            index: index.parse().unwrap_or(0),
            address: None,
            ssh: Some(SshEndpoint {
                host: "10.0.0.1".into(),
                port: 22,
                user: "ec2-user".into(),
            }),
            state: NodeState::Running,
            tags: t,
            created_at: String::new(),
            host_key: None,
        }
    }

    #[test]
    fn hostile_names_addresses_and_users_are_refused() {
        check_node(&node("demo-db-1", "demo", "db", "1")).unwrap();
        check_node(&node("demo-db-main-12", "demo", "db-main", "12")).unwrap();
        let bad = [
            node("x\n  ProxyCommand touch /tmp/p", "demo", "db", "1"),
            node("../x", "demo", "db", "1"),
            node("/abs", "demo", "db", "1"),
            node("demo-db-1\n* ssh-ed25519 AAAA", "demo", "db", "1"),
            // Valid-looking name from invalid tags.
            node("demo-d b-1", "demo", "d b", "1"),
            node("../a-db-1", "../a", "db", "1"),
            node("demo-db-01", "demo", "db", "01"),
            node("demo-db-0", "demo", "db", "0"),
        ];
        for n in &bad {
            assert!(check_node(n).is_err(), "{:?} accepted", n.name);
        }
        let mut n = node("demo-db-1", "demo", "db", "1");
        n.ssh.as_mut().unwrap().host = "h\n  ProxyCommand x".into();
        assert!(check_node(&n).unwrap_err().contains("not an IP address"));
        let mut n = node("demo-db-1", "demo", "db", "1");
        n.ssh.as_mut().unwrap().user = "-oProxyCommand=x".into();
        assert!(check_node(&n).unwrap_err().contains("ssh user"));
        let mut n = node("demo-db-1", "demo", "db", "1");
        n.pool = "other".into();
        assert!(check_node(&n).is_err());
    }

    #[tokio::test]
    async fn listings_drop_what_fails_the_check() {
        use crate::testkit::MemoryProvider;
        let mem = Arc::new(MemoryProvider::new());
        let req = |name: &str| {
            let t = tags::node_tags(&tags::NodeTagInput {
                project: "p",
                cluster: "demo",
                cluster_uid: "u",
                pool: "db",
                index: 1,
                owner: "o",
                world: "w",
                expires: "2099-01-01T00:00:00Z",
                extra: &Tags::new(),
            });
            NodeRequest {
                name: name.into(),
                project: "p".into(),
                cluster: "demo".into(),
                pool: "db".into(),
                index: 1,
                size: "small".into(),
                image: "default".into(),
                labels: Default::default(),
                tags: t,
            }
        };
        mem.create_node(&req("demo-db-1")).await.unwrap();
        mem.create_node(&req("../x")).await.unwrap();
        let checked = Checked::wrap(mem.clone());
        let names: Vec<String> = checked
            .list(&TagFilter::project("p"))
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["demo-db-1"]);
        let err = checked.create_node(&req("../x")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidInput, "{err}");
    }
}
