//! `RunInstances` batching.
//!
//! The engine calls `create_node` for many nodes at once. Calls that arrive within [`WINDOW`] of
//! each other (a batch waits for more until none came for [`WINDOW`], at most [`MAX_WAIT`]) and
//! share their launch parameters ([`Launch`]: cluster, pool, instance type, AMI,
//! subnet or zone, market, key, security group, tags) are coalesced into one `RunInstances` with
//! `MinCount = MaxCount = n` (at most [`MAX_BATCH`]); each caller gets the instance whose
//! `AmiLaunchIndex` is its position in the batch (nodes sorted by index).
//!
//! Crash safety. Instances of a batch are launched with every tag they share (the cluster's tags
//! and the pool) plus [`BATCH_TAG`] (the batch's `ClientToken`), [`BATCH_INDICES_TAG`] (the
//! nodes' indices in launch order) and the placeholder `Name` [`PENDING_NAME`]; `Name` and
//! `gantry-index` follow in one `CreateTags` per instance. If gantry dies in between, the instance is still found by the cluster's tags and
//! its node is known from the batch tags and its launch index ([`effective_tags`]): `list` shows
//! it under its node's name and writes the missing tags (adoption), and so does `create_node`,
//! whose look-up runs once per batch before anything is launched. The `ClientToken` is
//! deterministic per batch (cluster uid, the sorted node names, a variant): a retried or
//! re-run launch of the same nodes returns the first launch's instances.
//!
//! Capacity. A batch asks for all its instances at once. On a capacity error a spot batch falls
//! back to on-demand; an on-demand batch (or one over a quota) is tried once more with
//! `MinCount = 1`, and the callers left without an instance get a retryable error (the engine
//! retries them, in a new batch).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::types::{
    Instance, InstanceMarketOptionsRequest, MarketType, Placement, ResourceType, SpotMarketOptions,
    Tag,
};
use futures::StreamExt;
use gantry_core::Tags;
use gantry_core::tags;
use gantry_provider::{ErrorKind, NodeInfo, NodeRequest, ProviderError};
use tokio::sync::{Notify, oneshot};

use super::{client_token, gone};
use crate::{AwsProvider, Clients, backoff, error, filter, sdk, tag_spec};

/// The batch an instance was launched in: the `ClientToken` of its `RunInstances`.
pub const BATCH_TAG: &str = "gantry-batch";
/// The `gantry-index` of each instance of a batch, comma-separated, in launch-index order.
pub const BATCH_INDICES_TAG: &str = "gantry-batch-indices";
/// The `Name` an instance of a batch is launched with, until its own is written (never a node's
/// name: those end with a number). The batch's look-up asks for it, so it finds instances a
/// crash left unnamed without listing every instance of the pool.
pub const PENDING_NAME: &str = "gantry-launching";
/// A batch is launched once no node joined it for this long (or it is full, or [`MAX_WAIT`]
/// passed since it was opened).
pub const WINDOW: Duration = Duration::from_millis(40);
/// The longest a batch waits for more nodes.
pub const MAX_WAIT: Duration = Duration::from_millis(400);
/// At most this many instances per `RunInstances`.
pub const MAX_BATCH: usize = 50;
/// EC2's limit on a tag value.
const MAX_TAG_VALUE: usize = 256;
/// Per-instance `CreateTags` calls in flight at once.
const TAG_PARALLELISM: usize = 16;
/// Attempts of a per-instance `CreateTags` (a new instance may not be visible at once).
const TAG_ATTEMPTS: u32 = 5;

type Reply = gantry_provider::Result<NodeInfo>;

/// What nodes must share to be launched by one `RunInstances`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Launch {
    pub(crate) uid: String,
    pub(crate) project: String,
    pub(crate) cluster: String,
    pub(crate) pool: String,
    pub(crate) instance_type: String,
    pub(crate) ami: String,
    pub(crate) subnet: Option<String>,
    pub(crate) zone: Option<String>,
    pub(crate) spot: bool,
    pub(crate) key: String,
    pub(crate) sg: String,
    /// The nodes' tags but `gantry-index`.
    pub(crate) tags: Tags,
}

impl Launch {
    /// Whether `req` can be part of a batch: its name and tags let an instance's node be known
    /// from the batch tags alone.
    pub(crate) fn batchable(req: &NodeRequest) -> bool {
        req.name == gantry_core::node_name(&req.cluster, &req.pool, req.index)
            && req.tags.get(tags::CLUSTER) == Some(&req.cluster)
            && req.tags.get(tags::POOL) == Some(&req.pool)
            && req.tags.get(tags::INDEX) == Some(&req.index.to_string())
    }
}

/// The node an instance of a batch stands for when it has no `Name` yet (gantry stopped between
/// `RunInstances` and tagging): from [`BATCH_INDICES_TAG`], its launch index, its cluster and
/// pool tags. `(name, index)`.
fn derived(i: &Instance, t: &Tags) -> Option<(String, u32)> {
    if t.get("Name").is_some_and(|n| n != PENDING_NAME) {
        return None;
    }
    let list = t.get(BATCH_INDICES_TAG)?;
    let k = usize::try_from(i.ami_launch_index()?).ok()?;
    let index: u32 = list.split(',').nth(k)?.trim().parse().ok()?;
    let name = gantry_core::node_name(t.get(tags::CLUSTER)?, t.get(tags::POOL)?, index);
    Some((name, index))
}

/// An instance's tags, with `Name` and `gantry-index` filled in from its batch when they are
/// not written yet; and whether they were (the instance is then to be adopted).
pub(crate) fn effective_tags(i: &Instance) -> (Tags, bool) {
    let mut t = crate::tags_of(i.tags());
    match derived(i, &t) {
        Some((name, index)) => {
            t.insert("Name".into(), name);
            t.insert(tags::INDEX.into(), index.to_string());
            (t, true)
        }
        None => (t, false),
    }
}

/// Whether a list of indices fits in one tag value.
fn fits(indices: impl Iterator<Item = u32>) -> bool {
    let mut len = 0usize;
    for (k, i) in indices.enumerate() {
        len += i.to_string().len() + usize::from(k > 0);
    }
    len <= MAX_TAG_VALUE
}

/// `a, b, c` (at most 8 names, then how many more).
fn names_text(names: &[&str]) -> String {
    if names.len() <= 8 {
        return names.join(", ");
    }
    format!("{}, … ({} more)", names[..8].join(", "), names.len() - 8)
}

/// A copy of `e` about one node of a batch (the source is not copied).
fn for_member(e: &ProviderError, name: &str, batch: &str) -> ProviderError {
    let mut m = ProviderError::new(
        &e.provider,
        &e.op,
        name,
        e.kind,
        if batch.is_empty() {
            e.message.clone()
        } else {
            format!("{} ({batch})", e.message)
        },
    );
    m.hint = e.hint.clone();
    m
}

fn copy_reply(r: &Reply) -> Reply {
    match r {
        Ok(i) => Ok(i.clone()),
        Err(e) => Err(for_member(e, &e.resource, "")),
    }
}

struct Member {
    req: NodeRequest,
    waiters: Vec<oneshot::Sender<Reply>>,
}

/// A batch being gathered: its members by index; `sealed` wakes its leader early when full.
struct Cell {
    members: Mutex<BTreeMap<u32, Member>>,
    sealed: Notify,
}

/// The batches being gathered, by launch parameters.
#[derive(Default)]
pub(crate) struct Coalescer {
    open: Mutex<HashMap<Launch, Arc<Cell>>>,
}

impl Coalescer {
    /// Adds `req` to the open batch of `launch`, or opens one (when there is none, or it is
    /// full); returns the cell if this caller opened it and so leads it.
    fn join(
        &self,
        launch: &Launch,
        req: &NodeRequest,
        tx: oneshot::Sender<Reply>,
    ) -> Option<Arc<Cell>> {
        let mut open = self.open.lock().expect("batch lock");
        if let Some(cell) = open.get(launch).cloned() {
            let mut m = cell.members.lock().expect("batch lock");
            if let Some(member) = m.get_mut(&req.index) {
                member.waiters.push(tx);
                return None;
            }
            if m.len() < MAX_BATCH && fits(m.keys().copied().chain([req.index])) {
                m.insert(
                    req.index,
                    Member {
                        req: req.clone(),
                        waiters: vec![tx],
                    },
                );
                if m.len() >= MAX_BATCH {
                    open.remove(launch);
                    cell.sealed.notify_one();
                }
                return None;
            }
            drop(m);
            open.remove(launch);
            cell.sealed.notify_one();
        }
        let cell = Arc::new(Cell {
            members: Mutex::new(BTreeMap::from([(
                req.index,
                Member {
                    req: req.clone(),
                    waiters: vec![tx],
                },
            )])),
            sealed: Notify::new(),
        });
        open.insert(launch.clone(), cell.clone());
        Some(cell)
    }

    /// Closes the batch (no one joins it any more) and takes its members.
    fn take(&self, launch: &Launch, cell: &Arc<Cell>) -> Vec<Member> {
        let mut open = self.open.lock().expect("batch lock");
        if open.get(launch).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            open.remove(launch);
        }
        drop(open);
        std::mem::take(&mut *cell.members.lock().expect("batch lock"))
            .into_values()
            .collect()
    }
}

/// Closes the batch if its leader goes away before launching it: the members' channels are
/// dropped, so they answer a retryable error instead of waiting for ever.
struct Lead<'a> {
    co: &'a Coalescer,
    launch: &'a Launch,
    cell: Arc<Cell>,
    taken: bool,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if !self.taken {
            drop(self.co.take(self.launch, &self.cell));
        }
    }
}

/// Test hooks (not part of the API).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TestHooks {
    /// Stop right after `RunInstances`, before the per-instance tags, answering an error: what a
    /// crash at that point leaves behind.
    pub stop_after_launch: bool,
    /// Launch batches with `MinCount = 1` from the start (moto then launches one instance: a
    /// partial batch).
    pub partial_first: bool,
}

impl AwsProvider {
    /// `create_node` through the coalescer: joins (or opens and leads) the batch of `launch`.
    pub(crate) async fn create_batched(&self, launch: Launch, req: &NodeRequest) -> Reply {
        let (tx, rx) = oneshot::channel();
        if let Some(cell) = self.batches.join(&launch, req, tx) {
            let mut lead = Lead {
                co: &self.batches,
                launch: &launch,
                cell: cell.clone(),
                taken: false,
            };
            let opened = std::time::Instant::now();
            let mut seen = 1;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(WINDOW) => {}
                    _ = cell.sealed.notified() => break,
                }
                let now = cell.members.lock().expect("batch lock").len();
                if now == seen || opened.elapsed() >= MAX_WAIT {
                    break;
                }
                seen = now;
            }
            let members = self.batches.take(&launch, &cell);
            lead.taken = true;
            let reqs: Vec<NodeRequest> = members.iter().map(|m| m.req.clone()).collect();
            let replies = self.launch_nodes(&launch, &reqs).await;
            for (m, r) in members.into_iter().zip(replies) {
                let mut waiters = m.waiters.into_iter();
                let last = waiters.next_back();
                for w in waiters {
                    let _ = w.send(copy_reply(&r));
                }
                if let Some(w) = last {
                    let _ = w.send(r);
                }
            }
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(self.e(
                "RunInstances",
                &req.name,
                ErrorKind::Retryable,
                "the batch this node was in was cancelled before it answered",
            )),
        }
    }

    /// The batch's nodes, found or launched: one answer per request, in order. `reqs` share
    /// `launch` and are sorted by index (or are one request).
    pub(crate) async fn launch_nodes(&self, launch: &Launch, reqs: &[NodeRequest]) -> Vec<Reply> {
        let names: Vec<&str> = reqs.iter().map(|r| r.name.as_str()).collect();
        let about = if reqs.len() > 1 {
            format!("batch of {}: {}", reqs.len(), names_text(&names))
        } else {
            String::new()
        };
        let fail_all = |e: &ProviderError| -> Vec<Reply> {
            names
                .iter()
                .map(|n| Err(for_member(e, n, &about)))
                .collect()
        };
        let c = match self.clients().await {
            Ok(c) => c,
            Err(e) => return fail_all(&e),
        };
        let mut out: Vec<Option<Reply>> = (0..reqs.len()).map(|_| None).collect();

        // Already there (a re-run after a crash, a retry)? One look-up for the whole batch, by
        // the nodes' names and the placeholder name: instances whose Name is not written yet are
        // known from their batch tags.
        let mut by_name = aws_sdk_ec2::types::Filter::builder()
            .name("tag:Name")
            .values(PENDING_NAME);
        for n in &names {
            by_name = by_name.values(*n);
        }
        let fs = vec![
            filter(&format!("tag:{}", tags::CLUSTER_UID), launch.uid.clone()),
            filter(&format!("tag:{}", tags::PROJECT), launch.project.clone()),
            filter(&format!("tag:{}", tags::POOL), launch.pool.clone()),
            by_name.build(),
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .build(),
        ];
        let found = match self.describe(fs).await {
            Ok(f) => f,
            Err(e) => return fail_all(&e),
        };
        let mut adopt = Vec::new();
        for i in found.iter().filter(|i| !gone(i)) {
            let (t, derived) = effective_tags(i);
            let Some(k) = t
                .get("Name")
                .and_then(|n| reqs.iter().position(|r| &r.name == n))
            else {
                continue;
            };
            if out[k].is_some() {
                continue;
            }
            if derived {
                tracing::info!(node = %reqs[k].name, instance = ?i.instance_id(), "adopting an instance launched before a crash");
                adopt.push((k, i.clone()));
                out[k] = Some(Ok(self.info(i)));
            } else {
                out[k] = Some(Ok(self.node_info(i, &reqs[k])));
            }
        }
        for (k, r) in self.tag_all(c, reqs, adopt).await {
            out[k] = Some(r);
        }

        // Launch the rest.
        let mut todo: Vec<usize> = (0..reqs.len()).filter(|&k| out[k].is_none()).collect();
        let mut variant = String::new();
        let mut spot = launch.spot;
        let mut partial = self.hooks.partial_first;
        for _ in 0..6 {
            if todo.is_empty() {
                break;
            }
            let batch: Vec<&NodeRequest> = todo.iter().map(|&k| &reqs[k]).collect();
            let partial_now = partial && batch.len() > 1;
            let v = format!(
                "{variant}{}{}",
                if spot { "" } else { "on-demand" },
                if partial_now { "/min1" } else { "" }
            );
            let joined: Vec<&str> = batch.iter().map(|r| r.name.as_str()).collect();
            let token = client_token(&launch.uid, &joined.join(","), &v);
            let about_now = if batch.len() > 1 {
                format!("batch {token} of {}: {}", batch.len(), names_text(&joined))
            } else {
                String::new()
            };
            match self
                .run_instances(c, launch, &batch, &token, spot, partial_now)
                .await
            {
                Ok(insts) => {
                    if self.hooks.stop_after_launch {
                        for &k in &todo {
                            out[k] = Some(Err(self.e(
                                "RunInstances",
                                &reqs[k].name,
                                ErrorKind::Other,
                                "test hook: stopped after RunInstances, before tagging",
                            )));
                        }
                        todo.clear();
                        break;
                    }
                    let by_index = |pos: usize| {
                        insts
                            .iter()
                            .find(|i| i.ami_launch_index() == i32::try_from(pos).ok())
                            .or_else(|| {
                                insts
                                    .iter()
                                    .all(|i| i.ami_launch_index().is_none())
                                    .then(|| insts.get(pos))
                                    .flatten()
                            })
                    };
                    let mut again = Vec::new();
                    let mut gone_id = None;
                    let mut to_tag = Vec::new();
                    for (pos, &k) in todo.iter().enumerate() {
                        match by_index(pos) {
                            None => {
                                out[k] = Some(Err(self.e(
                                    "RunInstances",
                                    &reqs[k].name,
                                    ErrorKind::Retryable,
                                    format!(
                                        "RunInstances launched {} of {} instances (not enough \
                                         capacity); this node is retried ({about_now})",
                                        insts.len(),
                                        batch.len()
                                    ),
                                )));
                            }
                            Some(i) if gone(i) => {
                                // The token was used by an instance that is gone now: launch
                                // again under a token derived from it (still deterministic).
                                gone_id.get_or_insert_with(|| {
                                    i.instance_id().unwrap_or_default().to_string()
                                });
                                again.push(k);
                            }
                            Some(i) if batch.len() == 1 => {
                                // Alone: launched with its Name and index already.
                                out[k] = Some(Ok(self.node_info(i, &reqs[k])));
                            }
                            Some(i) => to_tag.push((k, i.clone())),
                        }
                    }
                    for (k, r) in self.tag_all(c, reqs, to_tag).await {
                        out[k] = Some(r);
                    }
                    if let Some(id) = gone_id {
                        variant = format!("{id}/");
                    }
                    todo = again;
                }
                Err(e) if spot && capacity(&e) => {
                    tracing::warn!(nodes = %names_text(&joined), "no spot capacity, falling back to on-demand");
                    spot = false;
                }
                Err(e) if !partial_now && batch.len() > 1 && (capacity(&e) || quota(&e)) => {
                    tracing::warn!(nodes = %names_text(&joined), code = ?error::code(&e), "not all at once: launching as many as possible");
                    partial = true;
                }
                Err(e) => {
                    let resource = if batch.len() == 1 {
                        batch[0].name.clone()
                    } else {
                        format!("{}..{}", joined[0], joined[joined.len() - 1])
                    };
                    let pe = sdk(self.region(), "RunInstances", &resource, e);
                    for &k in &todo {
                        out[k] = Some(Err(for_member(&pe, &reqs[k].name, &about_now)));
                    }
                    todo.clear();
                }
            }
        }
        out.into_iter()
            .zip(&names)
            .map(|(r, n)| {
                r.unwrap_or_else(|| {
                    Err(self.e(
                        "RunInstances",
                        n,
                        ErrorKind::Retryable,
                        "could not get a live instance",
                    ))
                })
            })
            .collect()
    }

    /// The node an instance is, as created for `req`.
    fn node_info(&self, i: &Instance, req: &NodeRequest) -> NodeInfo {
        let mut n = self.info(i);
        n.name = req.name.clone();
        n.pool = req.pool.clone();
        n.index = req.index;
        n.tags.insert(tags::INDEX.into(), req.index.to_string());
        n
    }

    /// Writes `Name` and `gantry-index` on each `(request position, instance)` (and the
    /// instance's volumes, when known), a few at a time.
    async fn tag_all(
        &self,
        c: &Clients,
        reqs: &[NodeRequest],
        items: Vec<(usize, Instance)>,
    ) -> Vec<(usize, Reply)> {
        if items.is_empty() {
            return Vec::new();
        }
        let ids: Vec<String> = items
            .iter()
            .filter_map(|(_, i)| i.instance_id().map(str::to_string))
            .collect();
        self.tagging
            .lock()
            .expect("tagging lock")
            .extend(ids.iter().cloned());
        let out = futures::stream::iter(items)
            .map(|(k, i)| async move {
                let r = self
                    .tag_instance(c, &i, &reqs[k].name, reqs[k].index)
                    .await
                    .map(|()| self.node_info(&i, &reqs[k]));
                (k, r)
            })
            .buffer_unordered(TAG_PARALLELISM)
            .collect()
            .await;
        let mut t = self.tagging.lock().expect("tagging lock");
        for id in &ids {
            t.remove(id);
        }
        out
    }

    /// One `CreateTags` for an instance of a batch (and its volumes, when the answer named
    /// them): its `Name` and `gantry-index`. Retried while the new instance is not visible yet.
    pub(crate) async fn tag_instance(
        &self,
        c: &Clients,
        i: &Instance,
        name: &str,
        index: u32,
    ) -> gantry_provider::Result<()> {
        let id = i.instance_id().unwrap_or_default();
        let vols: Vec<&str> = i
            .block_device_mappings()
            .iter()
            .filter_map(|b| b.ebs().and_then(|e| e.volume_id()))
            .collect();
        let mut attempt = 0;
        loop {
            let mut b = c.ec2.create_tags().resources(id);
            for v in &vols {
                b = b.resources(*v);
            }
            let r = b
                .tags(Tag::builder().key("Name").value(name).build())
                .tags(
                    Tag::builder()
                        .key(tags::INDEX)
                        .value(index.to_string())
                        .build(),
                )
                .send()
                .await;
            match r {
                Ok(_) => return Ok(()),
                Err(e) if attempt + 1 < TAG_ATTEMPTS => {
                    let pe = sdk(self.region(), "CreateTags", name, e);
                    if pe.kind != ErrorKind::Retryable && pe.kind != ErrorKind::NotFound {
                        return Err(pe);
                    }
                    backoff(attempt).await;
                    attempt += 1;
                }
                Err(e) => {
                    // The instance exists: a retry of create_node finds and adopts it.
                    let mut pe = sdk(self.region(), "CreateTags", name, e);
                    pe.kind = ErrorKind::Retryable;
                    return Err(pe);
                }
            }
        }
    }

    async fn run_instances(
        &self,
        c: &Clients,
        launch: &Launch,
        batch: &[&NodeRequest],
        token: &str,
        spot: bool,
        partial: bool,
    ) -> Result<
        Vec<Instance>,
        aws_sdk_ec2::error::SdkError<aws_sdk_ec2::operation::run_instances::RunInstancesError>,
    > {
        let n = i32::try_from(batch.len()).unwrap_or(i32::MAX);
        let t = if let [one] = batch {
            let mut t = one.tags.clone();
            t.insert("Name".into(), one.name.clone());
            t
        } else {
            let mut t = launch.tags.clone();
            t.insert("Name".into(), PENDING_NAME.into());
            t.insert(BATCH_TAG.into(), token.to_string());
            let indices: Vec<String> = batch.iter().map(|r| r.index.to_string()).collect();
            t.insert(BATCH_INDICES_TAG.into(), indices.join(","));
            t
        };
        let mut b = c
            .ec2
            .run_instances()
            .client_token(token)
            .image_id(&launch.ami)
            .instance_type(launch.instance_type.as_str().into())
            .min_count(if partial { 1 } else { n })
            .max_count(n)
            .key_name(&launch.key)
            .security_group_ids(&launch.sg)
            .tag_specifications(tag_spec(ResourceType::Instance, &t))
            .tag_specifications(tag_spec(ResourceType::Volume, &t));
        if let Some(s) = &launch.subnet {
            b = b.subnet_id(s);
        } else if let Some(z) = &launch.zone {
            b = b.placement(Placement::builder().availability_zone(z).build());
        }
        if spot {
            b = b.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(SpotMarketOptions::builder().build())
                    .build(),
            );
        }
        let out = b.send().await?;
        Ok(out.instances().to_vec())
    }
}

fn capacity<E: aws_sdk_ec2::error::ProvideErrorMetadata, R>(
    e: &aws_sdk_ec2::error::SdkError<E, R>,
) -> bool {
    error::code(e).is_some_and(|c| error::CAPACITY_CODES.contains(&c))
}

fn quota<E: aws_sdk_ec2::error::ProvideErrorMetadata, R>(
    e: &aws_sdk_ec2::error::SdkError<E, R>,
) -> bool {
    matches!(
        error::code(e),
        Some("InstanceLimitExceeded" | "VcpuLimitExceeded")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lists_fit_in_a_tag_value() {
        assert!(fits(1..=50));
        assert!(fits((1000..1050).step_by(1)));
        assert!(!fits(100_000..100_050));
    }

    #[test]
    fn instances_of_a_batch_without_a_name_are_known_by_launch_index() {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let i = Instance::builder()
            .instance_id("i-1")
            .ami_launch_index(2)
            .tags(tag(tags::CLUSTER, "demo"))
            .tags(tag(tags::POOL, "db"))
            .tags(tag(BATCH_INDICES_TAG, "1,3,5,7"))
            .build();
        let (t, derived) = effective_tags(&i);
        assert!(derived);
        assert_eq!(t["Name"], "demo-db-5");
        assert_eq!(t[tags::INDEX], "5");
        // The placeholder Name of a batch is no name.
        let pending = Instance::builder()
            .ami_launch_index(0)
            .tags(tag("Name", PENDING_NAME))
            .tags(tag(tags::CLUSTER, "demo"))
            .tags(tag(tags::POOL, "db"))
            .tags(tag(BATCH_INDICES_TAG, "1,3,5,7"))
            .build();
        assert_eq!(effective_tags(&pending).0["Name"], "demo-db-1");
        // Once named, the Name is the truth.
        let named = Instance::builder()
            .ami_launch_index(2)
            .tags(tag("Name", "demo-db-5"))
            .tags(tag(BATCH_INDICES_TAG, "1,3,5,7"))
            .build();
        assert!(!effective_tags(&named).1);
        // Out of range: nothing derived.
        let odd = Instance::builder()
            .ami_launch_index(9)
            .tags(tag(tags::CLUSTER, "demo"))
            .tags(tag(tags::POOL, "db"))
            .tags(tag(BATCH_INDICES_TAG, "1,3"))
            .build();
        assert!(!effective_tags(&odd).1);
    }
}
