//! gantry's state in etcd: [`EtcdStore`], a [`StateStore`] for a team that already runs etcd
//! and wants its clusters, runs and locks shared between machines.
//!
//! It lives in its own crate so that gantry-state (and everything that only needs SQLite)
//! never builds etcd's gRPC stack (etcd-client, tonic, prost; protoc at build time).
//!
//! # Key layout
//! Every key starts with the store's prefix (default `/gantry/`; `P/` below). Names inside keys
//! are escaped into single segments (`keys::seg`: `/` and `%` and anything outside
//! `A-Za-z0-9._-@:+` become `%XX`), so a prefix scan never reaches into a neighbour's keys.
//! Values are the records of gantry-state as JSON unless said otherwise.
//!
//! | key | value |
//! |---|---|
//! | `P/schema` | schema version, decimal (created at connect) |
//! | `P/world` | the world id (created once, in one transaction) |
//! | `P/clusters/<project>/<name>` | `ClusterRecord` |
//! | `P/nodes/<project>/<cluster>/<name>` | `NodeRecord` (deleted with its cluster) |
//! | `P/runs/<id>` | `RunRecord`; a prefix scan of it resolves run id prefixes |
//! | `P/runs-by-project/<project>/<started>/<id>` | copy of the run, for newest-first scans |
//! | `P/runs-by-cluster/<project>/<cluster>/<started>/<id>` | the same per cluster |
//! | `P/steps/<run>/<step>` | `StepRecord` |
//! | `P/event-seq/<run>` | the run's last event number, decimal |
//! | `P/events/<run>/<seq, 20 digits>` | `EventRecord` |
//! | `P/locks/<key>` | holder, token, `expires_at` and etcd lease id; attached to that lease |
//! | `P/lock-tokens/<key>` | the last fencing token issued for the key, decimal; never deleted |
//! | `P/inventory/<project>/<scope>` | `InventoryRecord` |
//! | `P/inventory-invalidated/<project>` | the project's last invalidation time, RFC 3339 |
//! | `P/secrets/<name>` | a secret's envelope (sealed by `gantry-secrets`; opaque text, never plaintext) |
//!
//! `<started>` is the run's start time as a fixed-width sortable number (`keys::sortable_time`).
//! The index copies are written in the same transaction as the run and moved by `update_run`.
//! `done_steps` reads the cluster's runs from `runs-by-cluster`, then their steps, 64 runs per
//! read transaction. Listings are read in pages of 500 keys at one revision.
//!
//! # Atomicity
//! Every read-modify-write is one etcd transaction that compares the `mod_revision` of what it
//! read (0 for a key that must not exist) and is retried on conflict, with a short random
//! backoff; the transaction's `else` branch reads the keys again, so a retry costs no extra
//! round trip. Event numbers come from `P/event-seq/<run>` bumped this way: two writers can
//! never both get the same number, and a number is only taken together with its event, so
//! there are no gaps.
//!
//! # Locks
//! A lock is the key `P/locks/<key>` put with a fresh etcd lease of the TTL rounded up to whole
//! seconds plus one, so a holder that dies leaves nothing behind. Whether a lease is live is
//! decided, as in every store, by the `expires_at` written in the record (the holder's clock):
//! etcd rounds small TTLs up to its own minimum, and the record is what `Held` and `get_lock`
//! must answer exactly. A takeover compares the lock key's and the token key's revisions, so of
//! two racing `acquire_lock`s exactly one wins, and its token (from `P/lock-tokens/<key>`) is
//! greater than every token issued before, even after the lock key vanished with its lease.
//! Renewing puts the record again with a new lease of the new TTL and revokes the old one.
//! Because `expires_at` is the writer's clock, machines sharing a store need their clocks in step
//! (NTP), as with any store; the etcd lease, timed by etcd itself, is the backstop that removes
//! the lock of a holder that is gone whatever its clock said.
//!
//! # Fencing
//! A fenced handle ([`StateStore::fenced`]) adds one compare to every write transaction:
//! `P/lock-tokens/<key>` still holds the fence's token (a value compare, equal: tokens only grow,
//! so "equal" is "not older"; a missing token key fails the compare). The transaction's `else`
//! branch reads the token key too, so a refusal ([`StateError::Fenced`]) is told apart from the
//! write's own compares failing without another round trip. Plain puts and deletes become
//! transactions for this, on fenced and unfenced handles alike (one code path; etcd applies a
//! one-operation transaction as it applies the operation).
//!
//! # Size
//! etcd refuses requests over `--max-request-bytes` (1.5 MiB by default). No record gantry writes
//! comes near it (a cluster spec is kilobytes; a run and its two index copies go in one
//! transaction), but a value over [`MAX_VALUE_BYTES`] (the inventory of a very large project
//! could grow) is refused up front with [`StateError::InvalidArgument`] instead of failing deep
//! in gRPC.

mod config;
mod keys;

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, GetResponse, KeyValue, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use gantry_state::{
    Acquire, ClusterRecord, EventRecord, Fence, InventoryRecord, Lease, NodeRecord, RunRecord,
    StateError, StateStore, StepRecord, StepStatus,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use time::OffsetDateTime;

pub use config::{DEFAULT_PREFIX, EtcdConfig};
use keys::{Keys, range_end, unseg};

/// The largest value one put may carry: well under etcd's default 1.5 MiB request limit, so a
/// transaction with a few small keys beside it still fits.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// The schema version this binary writes and the newest it understands.
pub const SCHEMA_VERSION: u32 = 1;

/// How many keys one read of a scan asks for.
const SCAN_PAGE: i64 = 500;

/// How many times a conflicting transaction is retried before giving up (each retry waits a
/// random time up to 2 ms, doubling to at most 32 ms).
const MAX_ATTEMPTS: u32 = 2000;

/// [`StateStore`] on an etcd v3 cluster. Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    keys: Keys,
    endpoints: String,
    /// Set on a fenced handle ([`StateStore::fenced`]): every write transaction compares it.
    fence: Option<Fence>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.keys.prefix())
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

/// A lock as stored under `P/locks/<key>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockValue {
    holder: String,
    token: u64,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    /// The etcd lease the key is attached to, revoked on release.
    lease_id: i64,
}

/// One key as read: its value (None when absent) and the `mod_revision` to compare against
/// (0 when absent, which is what etcd compares a missing key as).
struct Seen {
    value: Option<Vec<u8>>,
    rev: i64,
}

impl Seen {
    fn from_get(resp: &GetResponse) -> Seen {
        match resp.kvs().first() {
            Some(kv) => Seen {
                value: Some(kv.value().to_vec()),
                rev: kv.mod_revision(),
            },
            None => Seen {
                value: None,
                rev: 0,
            },
        }
    }
}

impl EtcdStore {
    /// Connects to `endpoints` (`host:port` or `http://host:port`) with keys under `prefix`, and
    /// makes sure the schema version key exists (refusing a store written by a newer gantry).
    pub async fn connect(
        endpoints: &[impl AsRef<str>],
        prefix: &str,
    ) -> Result<EtcdStore, StateError> {
        EtcdStore::open(EtcdConfig::new(endpoints, prefix)?).await
    }

    /// Connects as an `etcd://h1:2379,h2:2379/prefix` URL says.
    pub async fn connect_url(url: &str) -> Result<EtcdStore, StateError> {
        EtcdStore::open(EtcdConfig::from_url(url)?).await
    }

    /// Connects to the store a parsed `--state` / `GANTRY_STATE` URL names (it must be
    /// `etcd://`; see [`EtcdConfig::from_state_url`]).
    pub async fn connect_state_url(url: &gantry_state::StateUrl) -> Result<EtcdStore, StateError> {
        EtcdStore::open(EtcdConfig::from_state_url(url)?).await
    }

    /// Connects as `config` says. Bounded in time: an unreachable cluster fails after about
    /// `connect_timeout + request_timeout` with [`StateError::Etcd`] naming the endpoints.
    pub async fn open(config: EtcdConfig) -> Result<EtcdStore, StateError> {
        let endpoints = config.endpoints_display();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some((user, password)) = &config.credentials {
            // etcd's auth tokens expire (5 minutes idle by default): get a new one when needed.
            options = options
                .with_user(user.as_str(), password.as_str())
                .with_auto_token_refresh(true);
        }
        let bound = config.connect_timeout + config.request_timeout;
        let client = bounded(
            "connect",
            &endpoints,
            bound,
            Client::connect(&config.endpoints, Some(options)),
        )
        .await?;
        let store = EtcdStore {
            client,
            keys: Keys::new(config.prefix),
            endpoints,
            fence: None,
        };
        let version = bounded(
            "read schema version",
            &store.endpoints,
            bound,
            store.ensure_schema(),
        )
        .await?;
        if version > SCHEMA_VERSION {
            return Err(StateError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(store)
    }

    /// The key prefix this store writes under (ends with `/`).
    pub fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// The endpoints, comma-separated.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    fn err(&self, op: &'static str, e: etcd_client::Error) -> StateError {
        StateError::Etcd {
            op,
            endpoints: self.endpoints.clone(),
            source: Box::new(e),
        }
    }

    async fn txn(&self, op: &'static str, txn: Txn) -> Result<TxnResponse, StateError> {
        self.client
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| self.err(op, e))
    }

    /// A writing transaction, fenced on a fenced handle: the fence's compare (the lock's token
    /// key holds our token) joins `when`, and a read of the token key ends `or_else`, so a
    /// refusal is told apart from the caller's own compares failing: [`StateError::Fenced`]
    /// when the token moved on, else the answer for the caller to read (its own reads come
    /// first in `or_else`, at the indexes it put them).
    async fn write_txn(
        &self,
        op: &'static str,
        mut when: Vec<Compare>,
        then: Vec<TxnOp>,
        mut or_else: Vec<TxnOp>,
    ) -> Result<TxnResponse, StateError> {
        let token_key = self.fence.as_ref().map(|f| self.keys.lock_token(&f.key));
        if let (Some(fence), Some(token_key)) = (&self.fence, &token_key) {
            when.push(Compare::value(
                token_key.as_str(),
                CompareOp::Equal,
                fence.token.to_string(),
            ));
            or_else.push(TxnOp::get(token_key.as_str(), None));
        }
        let resp = self
            .txn(op, Txn::new().when(when).and_then(then).or_else(or_else))
            .await?;
        if let Some(fence) = &self.fence
            && !resp.succeeded()
        {
            let newest = gets(&resp)
                .last()
                .map(Seen::from_get)
                .map(|seen| parse_number("lock token", seen.value.as_deref()))
                .transpose()?
                .unwrap_or(0);
            if newest != fence.token {
                return Err(fence.refused(newest));
            }
        }
        Ok(resp)
    }

    async fn get(
        &self,
        op: &'static str,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Result<GetResponse, StateError> {
        self.client
            .kv_client()
            .get(key, options)
            .await
            .map_err(|e| self.err(op, e))
    }

    /// Every key under `prefix` (which ends with `/`).
    async fn scan(&self, op: &'static str, prefix: &str) -> Result<Vec<KeyValue>, StateError> {
        self.scan_range(op, prefix.as_bytes().to_vec(), range_end(prefix))
            .await
    }

    /// Every key in `[from, end)`, in key order, read in pages of [`SCAN_PAGE`] keys at the
    /// revision of the first page: one consistent snapshot that never runs into gRPC's message
    /// size limit, however many records a project has.
    async fn scan_range(
        &self,
        op: &'static str,
        mut from: Vec<u8>,
        end: Vec<u8>,
    ) -> Result<Vec<KeyValue>, StateError> {
        let mut out = Vec::new();
        let mut revision = 0;
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(SCAN_PAGE);
            if revision != 0 {
                options = options.with_revision(revision);
            }
            let mut resp = self.get(op, from.clone(), Some(options)).await?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else { break };
            // The smallest key after the last one read.
            from = last.key().to_vec();
            from.push(0);
            out.extend(kvs);
            if !more {
                break;
            }
        }
        Ok(out)
    }

    /// Several keys read at one revision (a transaction without compares is a consistent read).
    async fn read(&self, op: &'static str, keys: &[&str]) -> Result<Vec<Seen>, StateError> {
        let resp = self
            .txn(
                op,
                Txn::new().and_then(
                    keys.iter()
                        .map(|k| TxnOp::get(*k, None))
                        .collect::<Vec<_>>(),
                ),
            )
            .await?;
        Ok(gets(&resp).iter().map(Seen::from_get).collect())
    }

    /// Stores `id` as the world id if the store has none (one transaction) and answers the
    /// store's world id: `id`, or the one it already had. `world_id` and `adopt_world_id`.
    async fn world_if_absent(&self, op: &'static str, id: &str) -> Result<String, StateError> {
        let key = self.keys.world();
        let resp = self
            .txn(
                op,
                Txn::new()
                    .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.as_str(), id, None)])
                    .or_else([TxnOp::get(key.as_str(), None)]),
            )
            .await?;
        if resp.succeeded() {
            return Ok(id.to_owned());
        }
        let value = gets(&resp)
            .first()
            .and_then(|g| g.kvs().first().map(|kv| kv.value().to_vec()))
            .ok_or_else(|| corrupt("world id", "the key vanished"))?;
        let stored = String::from_utf8(value).map_err(|e| corrupt("world id", e))?;
        if stored.trim().is_empty() {
            return Err(corrupt("world id", "it is empty"));
        }
        Ok(stored)
    }

    async fn ensure_schema(&self) -> Result<u32, StateError> {
        let key = self.keys.schema();
        let resp = self
            .txn(
                "connect and read schema version",
                Txn::new()
                    .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.as_str(), SCHEMA_VERSION.to_string(), None)])
                    .or_else([TxnOp::get(key.as_str(), None)]),
            )
            .await?;
        if resp.succeeded() {
            return Ok(SCHEMA_VERSION);
        }
        let seen = gets(&resp).first().map(Seen::from_get);
        parse_number("schema version", seen.and_then(|s| s.value).as_deref())
            .and_then(|v| u32::try_from(v).map_err(|_| out_of_range("schema version", v)))
    }

    /// Waits before retry `attempt` of a conflicting transaction, or gives up.
    async fn backoff(&self, op: &'static str, attempt: u32) -> Result<(), StateError> {
        if attempt >= MAX_ATTEMPTS {
            return Err(StateError::Backend {
                backend: "etcd",
                op,
                source: format!(
                    "gave up after {MAX_ATTEMPTS} conflicting transactions (too many writers on \
                     one key)"
                )
                .into(),
            });
        }
        let cap_ms = 1u64 << attempt.min(5);
        let jitter = u64::from(uuid::Uuid::new_v4().as_fields().0) % (cap_ms * 1000 + 1);
        tokio::time::sleep(Duration::from_micros(jitter)).await;
        Ok(())
    }

    async fn grant(&self, ttl: Duration) -> Result<i64, StateError> {
        // Whole seconds, rounded up, plus one: the key must outlive the record's expires_at.
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0) + 1;
        let secs = i64::try_from(secs).map_err(|_| out_of_range("lock ttl", secs))?;
        let resp = self
            .client
            .lease_client()
            .grant(secs, None)
            .await
            .map_err(|e| self.err("grant lock lease", e))?;
        Ok(resp.id())
    }

    /// Revokes a lease we no longer need. Best effort: an unrevoked lease only lives out its
    /// TTL, and the key it guarded has already been moved or deleted.
    async fn revoke(&self, lease_id: i64) {
        let _ = self.client.lease_client().revoke(lease_id).await;
    }

    fn run_puts(&self, r: &RunRecord, json: &str) -> Vec<TxnOp> {
        vec![
            TxnOp::put(self.keys.run(&r.id), json, None),
            TxnOp::put(
                self.keys.run_by_project(&r.project, r.started_at, &r.id),
                json,
                None,
            ),
            TxnOp::put(
                self.keys
                    .run_by_cluster(&r.project, &r.cluster, r.started_at, &r.id),
                json,
                None,
            ),
        ]
    }
}

/// Runs `fut` for at most `bound`, as the given operation.
async fn bounded<T, E>(
    op: &'static str,
    endpoints: &str,
    bound: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, StateError>
where
    E: Into<StateErrorOrEtcd>,
{
    match tokio::time::timeout(bound, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(match e.into() {
            StateErrorOrEtcd::State(s) => s,
            StateErrorOrEtcd::Etcd(e) => StateError::Etcd {
                op,
                endpoints: endpoints.to_owned(),
                source: Box::new(e),
            },
        }),
        Err(_) => Err(StateError::Etcd {
            op,
            endpoints: endpoints.to_owned(),
            source: format!("no answer within {bound:?}: is etcd running there?").into(),
        }),
    }
}

/// The two error kinds [`bounded`] wraps.
enum StateErrorOrEtcd {
    State(StateError),
    Etcd(etcd_client::Error),
}

impl From<StateError> for StateErrorOrEtcd {
    fn from(e: StateError) -> Self {
        StateErrorOrEtcd::State(e)
    }
}

impl From<etcd_client::Error> for StateErrorOrEtcd {
    fn from(e: etcd_client::Error) -> Self {
        StateErrorOrEtcd::Etcd(e)
    }
}

/// The get responses of a transaction's branch, in order.
fn gets(resp: &TxnResponse) -> Vec<GetResponse> {
    resp.op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        })
        .collect()
}

fn out_of_range(what: &'static str, value: impl fmt::Display) -> StateError {
    StateError::OutOfRange {
        what,
        value: value.to_string(),
    }
}

fn corrupt(what: &'static str, e: impl Into<gantry_state::BoxError>) -> StateError {
    StateError::Corrupt {
        what,
        source: e.into(),
    }
}

fn encode<T: Serialize>(what: &'static str, value: &T, limit: usize) -> Result<String, StateError> {
    let json = serde_json::to_string(value).map_err(|e| StateError::Encode {
        what,
        source: Box::new(e),
    })?;
    if json.len() > limit {
        return Err(StateError::InvalidArgument {
            what,
            reason: format!(
                "it is {} bytes, more than the {limit} an etcd state store accepts in one value \
                 (etcd's request limit is 1.5 MiB by default)",
                json.len()
            ),
        });
    }
    Ok(json)
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(what, e))
}

fn decode_all<T: DeserializeOwned>(
    what: &'static str,
    kvs: &[KeyValue],
) -> Result<Vec<T>, StateError> {
    kvs.iter().map(|kv| decode(what, kv.value())).collect()
}

/// A decimal counter; a missing key counts as 0.
fn parse_number(what: &'static str, bytes: Option<&[u8]>) -> Result<u64, StateError> {
    match bytes {
        None => Ok(0),
        Some(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                corrupt(
                    what,
                    format!("not a decimal number: {:?}", String::from_utf8_lossy(b)),
                )
            }),
    }
}

fn parse_time(
    what: &'static str,
    bytes: Option<&[u8]>,
) -> Result<Option<OffsetDateTime>, StateError> {
    let Some(b) = bytes else { return Ok(None) };
    let s = std::str::from_utf8(b).map_err(|e| corrupt(what, e))?;
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(Some)
        .map_err(|e| corrupt(what, e))
}

fn format_time(what: &'static str, at: OffsetDateTime) -> Result<String, StateError> {
    at.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| StateError::Encode {
            what,
            source: Box::new(e),
        })
}

/// `now + ttl`, refusing a zero or absurd ttl (as the SQLite store does).
fn lease_expiry(now: OffsetDateTime, ttl: Duration) -> Result<OffsetDateTime, StateError> {
    if ttl.is_zero() {
        return Err(StateError::InvalidArgument {
            what: "lock ttl",
            reason: "it must be longer than zero".into(),
        });
    }
    let t =
        time::Duration::try_from(ttl).map_err(|_| out_of_range("lock ttl", format!("{ttl:?}")))?;
    now.checked_add(t)
        .ok_or_else(|| out_of_range("lock ttl", format!("{ttl:?}")))
}

#[async_trait]
impl StateStore for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn schema_version(&self) -> Result<u32, StateError> {
        let resp = self
            .get("read schema version", self.keys.schema(), None)
            .await?;
        let v = parse_number("schema version", resp.kvs().first().map(KeyValue::value))?;
        u32::try_from(v).map_err(|_| out_of_range("schema version", v))
    }

    async fn world_id(&self) -> Result<String, StateError> {
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        self.world_if_absent("get or create world id", &fresh).await
    }

    async fn put_cluster(&self, c: &ClusterRecord) -> Result<(), StateError> {
        let json = encode("cluster record", c, MAX_VALUE_BYTES)?;
        self.write_txn(
            "write cluster",
            vec![],
            vec![TxnOp::put(
                self.keys.cluster(&c.project, &c.name),
                json,
                None,
            )],
            vec![],
        )
        .await?;
        Ok(())
    }

    async fn get_cluster(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<ClusterRecord>, StateError> {
        let resp = self
            .get("read cluster", self.keys.cluster(project, name), None)
            .await?;
        resp.kvs()
            .first()
            .map(|kv| decode("cluster record", kv.value()))
            .transpose()
    }

    async fn list_clusters(&self, project: &str) -> Result<Vec<ClusterRecord>, StateError> {
        let kvs = self
            .scan("list clusters", &self.keys.clusters(project))
            .await?;
        let mut out: Vec<ClusterRecord> = decode_all("cluster record", &kvs)?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn delete_cluster(&self, project: &str, name: &str) -> Result<(), StateError> {
        let nodes = self.keys.nodes(project, name);
        self.write_txn(
            "delete cluster",
            vec![],
            vec![
                TxnOp::delete(self.keys.cluster(project, name), None),
                TxnOp::delete(
                    nodes.as_str(),
                    Some(etcd_client::DeleteOptions::new().with_range(range_end(&nodes))),
                ),
            ],
            vec![],
        )
        .await?;
        Ok(())
    }

    async fn put_node(&self, n: &NodeRecord) -> Result<(), StateError> {
        let json = encode("node record", n, MAX_VALUE_BYTES)?;
        let cluster = self.keys.cluster(&n.project, &n.cluster);
        let resp = self
            .write_txn(
                "write node",
                vec![Compare::version(cluster.as_str(), CompareOp::Greater, 0)],
                vec![TxnOp::put(
                    self.keys.node(&n.project, &n.cluster, &n.name),
                    json,
                    None,
                )],
                vec![],
            )
            .await?;
        if !resp.succeeded() {
            return Err(StateError::NotFound {
                what: "cluster",
                key: format!("{}/{}", n.project, n.cluster),
            });
        }
        Ok(())
    }

    async fn list_nodes(
        &self,
        project: &str,
        cluster: &str,
    ) -> Result<Vec<NodeRecord>, StateError> {
        let kvs = self
            .scan("list nodes", &self.keys.nodes(project, cluster))
            .await?;
        let mut out: Vec<NodeRecord> = decode_all("node record", &kvs)?;
        out.sort_by(|a, b| (&a.pool, a.index, &a.name).cmp(&(&b.pool, b.index, &b.name)));
        Ok(out)
    }

    async fn delete_node(
        &self,
        project: &str,
        cluster: &str,
        name: &str,
    ) -> Result<(), StateError> {
        self.write_txn(
            "delete node",
            vec![],
            vec![TxnOp::delete(self.keys.node(project, cluster, name), None)],
            vec![],
        )
        .await?;
        Ok(())
    }

    async fn create_run(&self, r: &RunRecord) -> Result<(), StateError> {
        // The run goes in three copies in one request.
        let json = encode("run record", r, MAX_VALUE_BYTES / 3)?;
        let key = self.keys.run(&r.id);
        let resp = self
            .write_txn(
                "create run",
                vec![Compare::version(key.as_str(), CompareOp::Equal, 0)],
                self.run_puts(r, &json),
                vec![],
            )
            .await?;
        if !resp.succeeded() {
            return Err(StateError::AlreadyExists {
                what: "run",
                key: r.id.clone(),
            });
        }
        Ok(())
    }

    async fn update_run(&self, r: &RunRecord) -> Result<(), StateError> {
        let json = encode("run record", r, MAX_VALUE_BYTES / 3)?;
        let key = self.keys.run(&r.id);
        let mut attempt = 0;
        loop {
            let seen = Seen::from_get(&self.get("update run", key.as_str(), None).await?);
            let Some(old) = seen.value else {
                return Err(StateError::NotFound {
                    what: "run",
                    key: r.id.clone(),
                });
            };
            let old: RunRecord = decode("run record", &old)?;
            let mut ops = Vec::new();
            // etcd refuses a transaction naming one key twice: delete only moved index keys.
            let old_by_project = self
                .keys
                .run_by_project(&old.project, old.started_at, &old.id);
            if old_by_project != self.keys.run_by_project(&r.project, r.started_at, &r.id) {
                ops.push(TxnOp::delete(old_by_project, None));
            }
            let old_by_cluster =
                self.keys
                    .run_by_cluster(&old.project, &old.cluster, old.started_at, &old.id);
            if old_by_cluster
                != self
                    .keys
                    .run_by_cluster(&r.project, &r.cluster, r.started_at, &r.id)
            {
                ops.push(TxnOp::delete(old_by_cluster, None));
            }
            ops.extend(self.run_puts(r, &json));
            let resp = self
                .write_txn(
                    "update run",
                    vec![Compare::mod_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        seen.rev,
                    )],
                    ops,
                    vec![],
                )
                .await?;
            if resp.succeeded() {
                return Ok(());
            }
            attempt += 1;
            self.backoff("update run", attempt).await?;
        }
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StateError> {
        let resp = self.get("read run", self.keys.run(id), None).await?;
        resp.kvs()
            .first()
            .map(|kv| decode("run record", kv.value()))
            .transpose()
    }

    async fn find_run(&self, id_prefix: &str) -> Result<Option<RunRecord>, StateError> {
        if id_prefix.is_empty() {
            return Err(StateError::InvalidArgument {
                what: "run id prefix",
                reason: "it is empty".into(),
            });
        }
        // One read transaction, so the exact lookup and the prefix scan see the same revision.
        let prefix = self.keys.runs_with_prefix(id_prefix);
        let resp = self
            .txn(
                "find run",
                Txn::new().and_then([
                    TxnOp::get(self.keys.run(id_prefix), None),
                    TxnOp::get(
                        prefix.as_str(),
                        Some(GetOptions::new().with_prefix().with_limit(1)),
                    ),
                ]),
            )
            .await?;
        let g = gets(&resp);
        let (Some(exact), Some(scan)) = (g.first(), g.get(1)) else {
            return Err(corrupt(
                "find run answer",
                "etcd answered fewer reads than asked",
            ));
        };
        if let Some(kv) = exact.kvs().first() {
            return decode("run record", kv.value()).map(Some);
        }
        match scan.count() {
            0 => Ok(None),
            1 => scan
                .kvs()
                .first()
                .map(|kv| decode("run record", kv.value()))
                .transpose(),
            n => Err(StateError::AmbiguousRunId {
                prefix: id_prefix.to_owned(),
                count: u64::try_from(n).unwrap_or(u64::MAX),
            }),
        }
    }

    async fn list_runs(
        &self,
        project: &str,
        cluster: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        if limit == 0 {
            // etcd reads a limit of 0 as "no limit".
            return Ok(Vec::new());
        }
        let prefix = match cluster {
            Some(c) => self.keys.runs_by_cluster(project, c),
            None => self.keys.runs_by_project(project),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut resp = self
            .get(
                "list runs",
                prefix.as_str(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Key, SortOrder::Descend)
                        .with_limit(limit),
                ),
            )
            .await?;
        decode_all("run record", &resp.take_kvs())
    }

    async fn put_step(&self, s: &StepRecord) -> Result<(), StateError> {
        let json = encode("step record", s, MAX_VALUE_BYTES)?;
        let run = self.keys.run(&s.run_id);
        let resp = self
            .write_txn(
                "write step",
                vec![Compare::version(run.as_str(), CompareOp::Greater, 0)],
                vec![TxnOp::put(
                    self.keys.step(&s.run_id, &s.step_id),
                    json,
                    None,
                )],
                vec![],
            )
            .await?;
        if !resp.succeeded() {
            return Err(StateError::NotFound {
                what: "run",
                key: s.run_id.clone(),
            });
        }
        Ok(())
    }

    async fn list_steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StateError> {
        let kvs = self.scan("list steps", &self.keys.steps(run_id)).await?;
        let mut out: Vec<StepRecord> = decode_all("step record", &kvs)?;
        out.sort_by(|a, b| (a.started_at, &a.step_id).cmp(&(b.started_at, &b.step_id)));
        Ok(out)
    }

    async fn done_steps(
        &self,
        project: &str,
        cluster: &str,
        spec_hash: &str,
    ) -> Result<BTreeSet<String>, StateError> {
        let runs: Vec<RunRecord> = decode_all(
            "run record",
            &self
                .scan("list runs", &self.keys.runs_by_cluster(project, cluster))
                .await?,
        )?;
        let mut out = BTreeSet::new();
        // One read transaction per 64 runs (etcd allows 128 operations in one by default).
        for chunk in runs.chunks(64) {
            let prefixes: Vec<String> = chunk.iter().map(|r| self.keys.steps(&r.id)).collect();
            let resp = self
                .txn(
                    "list done steps",
                    Txn::new().and_then(
                        prefixes
                            .iter()
                            .map(|p| TxnOp::get(p.as_str(), Some(GetOptions::new().with_prefix())))
                            .collect::<Vec<_>>(),
                    ),
                )
                .await?;
            for g in gets(&resp) {
                for step in decode_all::<StepRecord>("step record", g.kvs())? {
                    if step.status == StepStatus::Done
                        && step.spec_hash.as_deref() == Some(spec_hash)
                    {
                        out.insert(step.step_id);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn append_event(
        &self,
        run_id: &str,
        at: OffsetDateTime,
        json: &str,
    ) -> Result<u64, StateError> {
        let run = self.keys.run(run_id);
        let counter = self.keys.event_seq(run_id);
        // Optimistic first try: a new run's counter does not exist (revision 0).
        let (mut last, mut rev) = (0u64, 0i64);
        let mut attempt = 0;
        loop {
            let seq = last
                .checked_add(1)
                .ok_or_else(|| out_of_range("event sequence", last))?;
            let record = EventRecord {
                run_id: run_id.to_owned(),
                seq,
                at,
                json: json.to_owned(),
            };
            let value = encode("event record", &record, MAX_VALUE_BYTES)?;
            let resp = self
                .write_txn(
                    "append event",
                    vec![
                        Compare::version(run.as_str(), CompareOp::Greater, 0),
                        Compare::mod_revision(counter.as_str(), CompareOp::Equal, rev),
                    ],
                    vec![
                        TxnOp::put(counter.as_str(), seq.to_string(), None),
                        TxnOp::put(self.keys.event(run_id, seq), value, None),
                    ],
                    vec![
                        TxnOp::get(run.as_str(), Some(GetOptions::new().with_count_only())),
                        TxnOp::get(counter.as_str(), None),
                    ],
                )
                .await?;
            if resp.succeeded() {
                return Ok(seq);
            }
            let g = gets(&resp);
            let (Some(run_seen), Some(counter_seen)) = (g.first(), g.get(1)) else {
                return Err(corrupt(
                    "append event answer",
                    "etcd answered fewer reads than asked",
                ));
            };
            if run_seen.count() == 0 {
                return Err(StateError::NotFound {
                    what: "run",
                    key: run_id.to_owned(),
                });
            }
            let seen = Seen::from_get(counter_seen);
            let fresh = (
                parse_number("event sequence", seen.value.as_deref())?,
                seen.rev,
            );
            // A first miss on a busy counter only means our guess was stale: retry at once.
            if attempt > 0 {
                self.backoff("append event", attempt).await?;
            }
            (last, rev) = fresh;
            attempt += 1;
        }
    }

    async fn list_events(
        &self,
        run_id: &str,
        after_seq: u64,
    ) -> Result<Vec<EventRecord>, StateError> {
        let Some(from) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        let kvs = self
            .scan_range(
                "list events",
                self.keys.event(run_id, from).into_bytes(),
                range_end(&self.keys.events(run_id)),
            )
            .await?;
        decode_all("event record", &kvs)
    }

    async fn acquire_lock(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Acquire, StateError> {
        lease_expiry(OffsetDateTime::now_utc(), ttl)?;
        let lock_key = self.keys.lock(key);
        let token_key = self.keys.lock_token(key);
        let mut seen = self
            .read("read lock", &[lock_key.as_str(), token_key.as_str()])
            .await?;
        let mut granted: Option<i64> = None;
        let mut attempt = 0;
        loop {
            let [lock, token] = <[Seen; 2]>::try_from(seen)
                .map_err(|_| corrupt("lock answer", "etcd answered fewer reads than asked"))?;
            let now = OffsetDateTime::now_utc();
            let previous = lock
                .value
                .as_deref()
                .map(|v| decode::<LockValue>("lock record", v))
                .transpose()?;
            if let Some(live) = previous.as_ref().filter(|l| l.expires_at > now) {
                if let Some(id) = granted {
                    self.revoke(id).await;
                }
                return Ok(Acquire::Held {
                    holder: live.holder.clone(),
                    expires_at: live.expires_at,
                });
            }
            let last = parse_number("lock token", token.value.as_deref())?;
            let next = last
                .checked_add(1)
                .ok_or_else(|| out_of_range("lock token", last))?;
            let lease_id = match granted {
                Some(id) => id,
                None => {
                    let id = self.grant(ttl).await?;
                    granted = Some(id);
                    id
                }
            };
            // The expiry counts from now, after the lease grant's round trip.
            let expires_at = lease_expiry(OffsetDateTime::now_utc(), ttl)?;
            let value = LockValue {
                holder: holder.to_owned(),
                token: next,
                expires_at,
                lease_id,
            };
            let resp = self
                .txn(
                    "acquire lock",
                    Txn::new()
                        .when([
                            Compare::mod_revision(lock_key.as_str(), CompareOp::Equal, lock.rev),
                            Compare::mod_revision(token_key.as_str(), CompareOp::Equal, token.rev),
                        ])
                        .and_then([
                            TxnOp::put(token_key.as_str(), next.to_string(), None),
                            TxnOp::put(
                                lock_key.as_str(),
                                encode("lock record", &value, MAX_VALUE_BYTES)?,
                                Some(PutOptions::new().with_lease(lease_id)),
                            ),
                        ])
                        .or_else([
                            TxnOp::get(lock_key.as_str(), None),
                            TxnOp::get(token_key.as_str(), None),
                        ]),
                )
                .await?;
            if resp.succeeded() {
                if let Some(old) = previous {
                    // The expired holder's lease guards nothing any more.
                    self.revoke(old.lease_id).await;
                }
                return Ok(Acquire::Acquired(Lease {
                    key: key.to_owned(),
                    holder: holder.to_owned(),
                    token: next,
                    expires_at,
                }));
            }
            seen = gets(&resp).iter().map(Seen::from_get).collect();
            attempt += 1;
            self.backoff("acquire lock", attempt).await?;
        }
    }

    async fn renew_lock(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StateError> {
        lease_expiry(OffsetDateTime::now_utc(), ttl)?;
        let lock_key = self.keys.lock(&lease.key);
        let lost = || StateError::LockLost {
            key: lease.key.clone(),
            token: lease.token,
        };
        let mut attempt = 0;
        loop {
            let seen = Seen::from_get(&self.get("renew lock", lock_key.as_str(), None).await?);
            let current = seen
                .value
                .as_deref()
                .map(|v| decode::<LockValue>("lock record", v))
                .transpose()?;
            let now = OffsetDateTime::now_utc();
            let Some(current) = current.filter(|l| {
                l.token == lease.token && l.holder == lease.holder && l.expires_at > now
            }) else {
                return Err(lost());
            };
            let lease_id = self.grant(ttl).await?;
            let expires_at = lease_expiry(OffsetDateTime::now_utc(), ttl)?;
            let value = LockValue {
                expires_at,
                lease_id,
                ..current.clone()
            };
            let resp = self
                .txn(
                    "renew lock",
                    Txn::new()
                        .when([Compare::mod_revision(
                            lock_key.as_str(),
                            CompareOp::Equal,
                            seen.rev,
                        )])
                        .and_then([TxnOp::put(
                            lock_key.as_str(),
                            encode("lock record", &value, MAX_VALUE_BYTES)?,
                            Some(PutOptions::new().with_lease(lease_id)),
                        )]),
                )
                .await?;
            if resp.succeeded() {
                self.revoke(current.lease_id).await;
                return Ok(Lease {
                    expires_at,
                    ..lease.clone()
                });
            }
            self.revoke(lease_id).await;
            attempt += 1;
            self.backoff("renew lock", attempt).await?;
        }
    }

    async fn release_lock(&self, lease: &Lease) -> Result<(), StateError> {
        let lock_key = self.keys.lock(&lease.key);
        let mut attempt = 0;
        loop {
            let seen = Seen::from_get(&self.get("release lock", lock_key.as_str(), None).await?);
            let current = seen
                .value
                .as_deref()
                .map(|v| decode::<LockValue>("lock record", v))
                .transpose()?;
            // Keyed by token: a lease that was lost cannot release its successor.
            let Some(current) = current.filter(|l| l.token == lease.token) else {
                return Ok(());
            };
            let resp = self
                .txn(
                    "release lock",
                    Txn::new()
                        .when([Compare::mod_revision(
                            lock_key.as_str(),
                            CompareOp::Equal,
                            seen.rev,
                        )])
                        .and_then([TxnOp::delete(lock_key.as_str(), None)]),
                )
                .await?;
            if resp.succeeded() {
                self.revoke(current.lease_id).await;
                return Ok(());
            }
            attempt += 1;
            self.backoff("release lock", attempt).await?;
        }
    }

    async fn get_lock(&self, key: &str) -> Result<Option<Lease>, StateError> {
        let resp = self.get("read lock", self.keys.lock(key), None).await?;
        let now = OffsetDateTime::now_utc();
        Ok(resp
            .kvs()
            .first()
            .map(|kv| decode::<LockValue>("lock record", kv.value()))
            .transpose()?
            .filter(|l| l.expires_at > now)
            .map(|l| Lease {
                key: key.to_owned(),
                holder: l.holder,
                token: l.token,
                expires_at: l.expires_at,
            }))
    }

    async fn get_inventory(
        &self,
        project: &str,
        scope: &str,
    ) -> Result<Option<InventoryRecord>, StateError> {
        let inv = self.keys.inventory(project, scope);
        let mark = self.keys.inventory_invalidated(project);
        let seen = self
            .read("read inventory", &[inv.as_str(), mark.as_str()])
            .await?;
        let [stored, mark] = <[Seen; 2]>::try_from(seen)
            .map_err(|_| corrupt("inventory answer", "etcd answered fewer reads than asked"))?;
        let Some(stored) = stored.value else {
            return Ok(None);
        };
        let stored: InventoryRecord = decode("inventory record", &stored)?;
        let mark = parse_time("inventory invalidation time", mark.value.as_deref())?;
        Ok(match mark {
            Some(m) if stored.fetched_at <= m => None,
            _ => Some(stored),
        })
    }

    async fn put_inventory(&self, r: &InventoryRecord) -> Result<bool, StateError> {
        let json = encode("inventory record", r, MAX_VALUE_BYTES)?;
        let inv = self.keys.inventory(&r.project, &r.scope);
        let mark = self.keys.inventory_invalidated(&r.project);
        let mut attempt = 0;
        loop {
            let seen = self
                .read("write inventory", &[inv.as_str(), mark.as_str()])
                .await?;
            let [stored, marked] = <[Seen; 2]>::try_from(seen)
                .map_err(|_| corrupt("inventory answer", "etcd answered fewer reads than asked"))?;
            if let Some(m) = parse_time("inventory invalidation time", marked.value.as_deref())?
                && r.fetched_at <= m
            {
                return Ok(false);
            }
            if let Some(old) = stored.value.as_deref() {
                let old: InventoryRecord = decode("inventory record", old)?;
                if r.fetched_at <= old.fetched_at {
                    return Ok(false);
                }
            }
            let resp = self
                .write_txn(
                    "write inventory",
                    vec![
                        Compare::mod_revision(inv.as_str(), CompareOp::Equal, stored.rev),
                        Compare::mod_revision(mark.as_str(), CompareOp::Equal, marked.rev),
                    ],
                    vec![TxnOp::put(inv.as_str(), json.as_str(), None)],
                    vec![],
                )
                .await?;
            if resp.succeeded() {
                return Ok(true);
            }
            attempt += 1;
            self.backoff("write inventory", attempt).await?;
        }
    }

    async fn invalidate_inventory(
        &self,
        project: &str,
        at: OffsetDateTime,
    ) -> Result<(), StateError> {
        let mark = self.keys.inventory_invalidated(project);
        let entries = self.keys.inventories(project);
        let mut attempt = 0;
        loop {
            let seen = Seen::from_get(
                &self
                    .get("invalidate inventory", mark.as_str(), None)
                    .await?,
            );
            let old = parse_time("inventory invalidation time", seen.value.as_deref())?;
            let new = old.map_or(at, |o| o.max(at));
            let resp = self
                .write_txn(
                    "invalidate inventory",
                    vec![Compare::mod_revision(
                        mark.as_str(),
                        CompareOp::Equal,
                        seen.rev,
                    )],
                    vec![
                        TxnOp::put(
                            mark.as_str(),
                            format_time("inventory invalidation time", new)?,
                            None,
                        ),
                        TxnOp::delete(
                            entries.as_str(),
                            Some(etcd_client::DeleteOptions::new().with_range(range_end(&entries))),
                        ),
                    ],
                    vec![],
                )
                .await?;
            if resp.succeeded() {
                return Ok(());
            }
            attempt += 1;
            self.backoff("invalidate inventory", attempt).await?;
        }
    }

    // --- Fencing (issue 12, part 4) ---

    fn fenced(&self, fence: Fence) -> std::sync::Arc<dyn StateStore> {
        std::sync::Arc::new(EtcdStore {
            fence: Some(fence),
            ..self.clone()
        })
    }

    fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    // --- Enumeration and identity for `gantry state migrate` (issue 12, part 6) ---------------

    async fn list_projects(&self) -> Result<Vec<String>, StateError> {
        let mut projects = BTreeSet::new();
        for area in ["clusters", "runs-by-project", "inventory"] {
            for name in self.first_segments("list projects", area).await? {
                projects.insert(name);
            }
        }
        // A BTreeSet of Strings iterates in byte order.
        Ok(projects.into_iter().collect())
    }

    async fn list_all_runs(&self, project: &str) -> Result<Vec<RunRecord>, StateError> {
        let kvs = self
            .scan("list runs", &self.keys.runs_by_project(project))
            .await?;
        let mut out: Vec<RunRecord> = decode_all("run record", &kvs)?;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn list_inventory(&self, project: &str) -> Result<Vec<InventoryRecord>, StateError> {
        // The invalidation mark is read after the entries: an entry older than it would have
        // been deleted with it, so a later mark only ever hides more, never too little.
        let kvs = self
            .scan("list inventory", &self.keys.inventories(project))
            .await?;
        let mark = self
            .get(
                "list inventory",
                self.keys.inventory_invalidated(project),
                None,
            )
            .await?;
        let mark = parse_time(
            "inventory invalidation time",
            mark.kvs().first().map(KeyValue::value),
        )?;
        let mut out: Vec<InventoryRecord> = decode_all("inventory record", &kvs)?;
        out.retain(|r| mark.is_none_or(|m| r.fetched_at > m));
        out.sort_by(|a, b| a.scope.cmp(&b.scope));
        Ok(out)
    }

    async fn list_locks(&self) -> Result<Vec<Lease>, StateError> {
        let area = self.keys.area("locks");
        let kvs = self.scan("list locks", &area).await?;
        let now = OffsetDateTime::now_utc();
        let mut out = Vec::new();
        for kv in kvs {
            let l: LockValue = decode("lock record", kv.value())?;
            if l.expires_at <= now {
                continue;
            }
            let key =
                key_name(kv.key(), &area).ok_or_else(|| corrupt("lock key", "not escaped"))?;
            out.push(Lease {
                key,
                holder: l.holder,
                token: l.token,
                expires_at: l.expires_at,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn put_event(&self, e: &EventRecord) -> Result<(), StateError> {
        if e.seq == 0 {
            return Err(StateError::InvalidArgument {
                what: "event seq",
                reason: "event numbers start at 1".into(),
            });
        }
        let value = encode("event record", e, MAX_VALUE_BYTES)?;
        let run = self.keys.run(&e.run_id);
        let counter = self.keys.event_seq(&e.run_id);
        let mut attempt = 0;
        loop {
            let seen = self
                .read("write event", &[run.as_str(), counter.as_str()])
                .await?;
            let [run_seen, counter_seen] = <[Seen; 2]>::try_from(seen)
                .map_err(|_| corrupt("event answer", "etcd answered fewer reads than asked"))?;
            if run_seen.value.is_none() {
                return Err(StateError::NotFound {
                    what: "run",
                    key: e.run_id.clone(),
                });
            }
            let last = parse_number("event sequence", counter_seen.value.as_deref())?;
            // The counter only moves up, so append_event numbers after this event.
            let resp = self
                .txn(
                    "write event",
                    Txn::new()
                        .when([
                            Compare::version(run.as_str(), CompareOp::Greater, 0),
                            Compare::mod_revision(
                                counter.as_str(),
                                CompareOp::Equal,
                                counter_seen.rev,
                            ),
                        ])
                        .and_then([
                            TxnOp::put(counter.as_str(), last.max(e.seq).to_string(), None),
                            TxnOp::put(self.keys.event(&e.run_id, e.seq), value.as_str(), None),
                        ]),
                )
                .await?;
            if resp.succeeded() {
                return Ok(());
            }
            attempt += 1;
            self.backoff("write event", attempt).await?;
        }
    }

    async fn adopt_world_id(&self, id: &str) -> Result<String, StateError> {
        if id.trim().is_empty() {
            return Err(StateError::InvalidArgument {
                what: "world id",
                reason: "it is empty".into(),
            });
        }
        self.world_if_absent("adopt world id", id).await
    }

    // ---- Secrets (issue 12, part 5) ----

    async fn put_secret(&self, name: &str, envelope: &str) -> Result<(), StateError> {
        self.client
            .kv_client()
            .put(self.keys.secret(name), envelope, None)
            .await
            .map_err(|e| self.err("write secret", e))?;
        Ok(())
    }

    async fn create_secret(&self, name: &str, envelope: &str) -> Result<bool, StateError> {
        let key = self.keys.secret(name);
        let resp = self
            .txn(
                "create secret",
                Txn::new()
                    .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.as_str(), envelope, None)]),
            )
            .await?;
        Ok(resp.succeeded())
    }

    async fn get_secret(&self, name: &str) -> Result<Option<String>, StateError> {
        let resp = self
            .get("read secret", self.keys.secret(name), None)
            .await?;
        resp.kvs()
            .first()
            .map(|kv| {
                String::from_utf8(kv.value().to_vec()).map_err(|e| corrupt("secret envelope", e))
            })
            .transpose()
    }

    async fn list_secrets(&self, prefix: &str) -> Result<Vec<(String, String)>, StateError> {
        let kvs = self
            .scan("list secrets", &self.keys.secrets_with_prefix(prefix))
            .await?;
        let mut out =
            kvs.iter()
                .map(|kv| {
                    let name = self.keys.secret_name(kv.key()).ok_or_else(|| {
                        corrupt("secret name", "a key gantry cannot have written")
                    })?;
                    let envelope = String::from_utf8(kv.value().to_vec())
                        .map_err(|e| corrupt("secret envelope", e))?;
                    Ok((name, envelope))
                })
                .collect::<Result<Vec<_>, StateError>>()?;
        // Keys sort by the escaped name; the contract is the name's own byte order.
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn delete_secret(&self, name: &str) -> Result<(), StateError> {
        self.client
            .kv_client()
            .delete(self.keys.secret(name), None)
            .await
            .map_err(|e| self.err("delete secret", e))?;
        Ok(())
    }
}

/// The name escaped in the segment of `key` right after `area` (which ends with `/`).
fn key_name(key: &[u8], area: &str) -> Option<String> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(area)?;
    unseg(rest.split('/').next()?)
}

impl EtcdStore {
    /// The distinct names in the first segment below `area` (`clusters/<project>/…`), read
    /// keys-only in pages at one revision.
    async fn first_segments(
        &self,
        op: &'static str,
        area: &str,
    ) -> Result<BTreeSet<String>, StateError> {
        let area = self.keys.area(area);
        let end = range_end(&area);
        let mut from = area.as_bytes().to_vec();
        let mut out = BTreeSet::new();
        let mut revision = 0;
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(SCAN_PAGE)
                .with_keys_only();
            if revision != 0 {
                options = options.with_revision(revision);
            }
            let mut resp = self.get(op, from.clone(), Some(options)).await?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else { break };
            for kv in &kvs {
                let name =
                    key_name(kv.key(), &area).ok_or_else(|| corrupt(op, "a key is not escaped"))?;
                out.insert(name);
            }
            // Every key of this first segment sorts before `<area><segment>0`: skip them all.
            let seg_end = {
                let key = std::str::from_utf8(last.key()).unwrap_or_default();
                let rest = key.strip_prefix(area.as_str()).unwrap_or_default();
                let seg = rest.split('/').next().unwrap_or_default();
                range_end(&format!("{area}{seg}/"))
            };
            from = seg_end;
            if !more {
                break;
            }
        }
        Ok(out)
    }
}
