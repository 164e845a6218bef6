//! [`Context`]: the handle on etcd every entity keeps, with the key layout (§2.1) and the
//! few storage primitives the entities are built on.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KeyValue, KvClient, Txn,
    TxnOp, TxnOpResponse, TxnResponse,
};

use crate::error::{Error, Result};
use crate::flavor::Resources;
use crate::subnet::AllocState;

/// Root of every key the library writes (relative to the context's prefix).
pub const ROOT: &str = "lochness/";
/// Prefix of global configuration keys.
pub const CONFIG: &str = "lochness/config/";
/// Prefix of hypervisors.
pub const HYPERVISORS: &str = "lochness/hypervisors/";
/// Prefix of subnets.
pub const SUBNETS: &str = "lochness/subnets/";
/// Prefix of networks.
pub const NETWORKS: &str = "lochness/networks/";
/// Prefix of flavors.
pub const FLAVORS: &str = "lochness/flavors/";
/// Prefix of firewall groups.
pub const FWGROUPS: &str = "lochness/fwgroups/";
/// Prefix of guests.
pub const GUESTS: &str = "lochness/guests/";
/// Prefix of VLANs.
pub const VLANS: &str = "lochness/vlans/";
/// Prefix of VLAN groups.
pub const VLANGROUPS: &str = "lochness/vlangroups/";

/// The largest gRPC response we accept (one ranged read over every guest of a large
/// cluster must fit).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// A connection to etcd plus an optional key prefix under which the whole `lochness/`
/// tree lives (tests use one prefix each; production uses none).
///
/// Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    kv: KvClient,
    prefix: String,
    hook: Option<CommitHook>,
    commits: AtomicU64,
    /// Last known allocation state per subnet (see [`Context::cached_alloc`]).
    alloc_cache: Mutex<HashMap<String, AllocState>>,
    /// One lock per subnet, so that this process's placers take turns on a subnet's
    /// index instead of racing each other.
    subnet_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Resources of flavors this context has read.
    flavor_cache: Mutex<HashMap<String, Resources>>,
}

/// A function awaited before every write transaction of a multi-key operation, with the
/// number of commits this context made so far (0 for the first). Tests use it to inject
/// a conflicting write between an operation's read and its commit.
pub type CommitHook = Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

/// One key read from etcd, relative to the context prefix.
#[derive(Debug, Clone)]
pub struct Kv {
    /// The key without the context prefix (`lochness/…`).
    pub key: String,
    /// The raw value.
    pub value: Vec<u8>,
    /// etcd's `mod_revision` of the key.
    pub mod_revision: i64,
    /// etcd's `create_revision` of the key.
    pub create_revision: i64,
}

impl Kv {
    /// The value as text (lossy for invalid UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

impl Context {
    /// Connects to the etcd cluster at `endpoints` (`http://host:port`, or `host:port`).
    /// `prefix` is prepended to every key (a trailing `/` is added when missing; a leading
    /// `/` is dropped); `None` or `""` means the plain `lochness/…` layout.
    pub async fn new<S: AsRef<str>>(endpoints: &[S], prefix: Option<&str>) -> Result<Context> {
        let eps: Vec<String> = endpoints
            .iter()
            .flat_map(|e| e.as_ref().split(','))
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if eps.is_empty() {
            return Err(Error::Invalid("no etcd endpoint given".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(30))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10));
        let client = Client::connect(&eps, Some(options)).await?;
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut prefix = prefix.unwrap_or("").trim_start_matches('/').to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Context {
            inner: Arc::new(Inner {
                client,
                kv,
                prefix,
                hook: None,
                commits: AtomicU64::new(0),
                alloc_cache: Mutex::default(),
                subnet_locks: Mutex::default(),
                flavor_cache: Mutex::default(),
            }),
        })
    }

    /// A context on the same connection and prefix that awaits `hook` before each write
    /// transaction of a multi-key operation (fault injection for tests).
    pub fn with_commit_hook(&self, hook: CommitHook) -> Context {
        Context {
            inner: Arc::new(Inner {
                client: self.inner.client.clone(),
                kv: self.inner.kv.clone(),
                prefix: self.inner.prefix.clone(),
                hook: Some(hook),
                commits: AtomicU64::new(0),
                alloc_cache: Mutex::default(),
                subnet_locks: Mutex::default(),
                flavor_cache: Mutex::default(),
            }),
        }
    }

    /// The key prefix ("" or ending in `/`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The underlying etcd client, for what the library does not wrap.
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// The absolute etcd key of a relative `lochness/…` key.
    pub fn abs(&self, rel: &str) -> String {
        format!("{}{}", self.inner.prefix, rel)
    }

    /// The relative key of an absolute etcd key (`None` when it is outside the prefix).
    pub fn rel<'a>(&self, abs: &'a str) -> Option<&'a str> {
        abs.strip_prefix(self.inner.prefix.as_str())
    }

    pub(crate) fn kv(&self) -> KvClient {
        self.inner.kv.clone()
    }

    pub(crate) fn to_kv(&self, kv: &KeyValue) -> Option<Kv> {
        let key = std::str::from_utf8(kv.key()).ok()?;
        Some(Kv {
            key: self.rel(key)?.to_string(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            create_revision: kv.create_revision(),
        })
    }

    /// Reads one key.
    pub async fn get(&self, rel: &str) -> Result<Option<Kv>> {
        let resp = self.kv().get(self.abs(rel), None).await?;
        Ok(resp.kvs().first().and_then(|kv| self.to_kv(kv)))
    }

    /// Reads every key under `rel_prefix` (which should end in `/`) in one ranged read,
    /// sorted by key.
    pub async fn get_prefix(&self, rel_prefix: &str) -> Result<Vec<Kv>> {
        let resp = self
            .kv()
            .get(self.abs(rel_prefix), Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(resp.kvs().iter().filter_map(|kv| self.to_kv(kv)).collect())
    }

    /// Reads the subtree under `prefix` (ending in `/`) in one ranged read: each key's
    /// remainder after the prefix, with the key.
    pub(crate) async fn get_tree(&self, prefix: &str) -> Result<Vec<(String, Kv)>> {
        Ok(self
            .get_prefix(prefix)
            .await?
            .into_iter()
            .map(|kv| (kv.key[prefix.len()..].to_string(), kv))
            .collect())
    }

    /// Every entity under `family` (e.g. `lochness/vlans/`) from one ranged read, built by
    /// `build(id, subtree)`; entries that fail to build are skipped with a warning.
    pub(crate) async fn list_trees<T>(
        &self,
        family: &str,
        build: impl Fn(&str, &[(String, Kv)]) -> Result<T>,
    ) -> Result<Vec<T>> {
        Ok(build_trees(family, self.get_prefix(family).await?, build))
    }

    /// Deletes the subtree `prefix` and, for each of its keys, the key `extra(tail)`
    /// names (the other side of a link), in one transaction that requires nothing under
    /// the prefix to have changed since it was read; retried with a fresh read otherwise.
    pub(crate) async fn destroy_tree(
        &self,
        prefix: &str,
        extra: impl Fn(&str) -> Option<String>,
    ) -> Result<()> {
        for attempt in 0..MAX_ATTEMPTS {
            let resp = self
                .kv()
                .get(self.abs(prefix), Some(GetOptions::new().with_prefix()))
                .await?;
            let read_rev = resp.header().map(|h| h.revision()).unwrap_or_default();
            let mut ops = vec![self.op_delete_prefix(prefix)];
            for kv in resp.kvs().iter().filter_map(|kv| self.to_kv(kv)) {
                if let Some(other) = extra(&kv.key[prefix.len()..]) {
                    ops.push(self.op_delete(&other));
                }
            }
            let unchanged = Compare::mod_revision(self.abs(prefix), CompareOp::Less, read_rev + 1)
                .with_prefix();
            if self
                .commit(Txn::new().when(vec![unchanged]).and_then(ops))
                .await?
                .succeeded()
            {
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(Error::TooManyConflicts {
            what: format!("destroy {prefix}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        Ok(self.kv().txn(txn).await?)
    }

    /// Runs the write transaction of a multi-key operation (after the commit hook, if
    /// any).
    pub(crate) async fn commit(&self, txn: Txn) -> Result<TxnResponse> {
        if let Some(hook) = &self.inner.hook {
            let n = self.inner.commits.fetch_add(1, Ordering::SeqCst);
            hook(n).await;
        }
        self.txn(txn).await
    }

    /// The allocation state of subnet `id` as this context last read or wrote it. It may
    /// be stale: writes built from it compare revisions, and a lost compare brings fresh
    /// state back.
    pub(crate) fn cached_alloc(&self, id: &str) -> Option<AllocState> {
        self.inner
            .alloc_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Remembers `state` unless a newer one is known.
    pub(crate) fn cache_alloc(&self, state: AllocState) {
        let mut cache = self
            .inner
            .alloc_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let newer = |s: &AllocState| (s.index_rev.max(s.subnet.revision()), s.subnet.revision());
        match cache.get(&state.subnet.id) {
            Some(old) if newer(old) > newer(&state) => {}
            _ => {
                cache.insert(state.subnet.id.clone(), state);
            }
        }
    }

    /// The resources of flavor `id` as this context last read them.
    pub(crate) fn cached_flavor(&self, id: &str) -> Option<Resources> {
        self.inner
            .flavor_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }

    pub(crate) fn cache_flavor(&self, id: &str, resources: Resources) {
        self.inner
            .flavor_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), resources);
    }

    /// The in-process lock of subnet `id`'s index.
    pub(crate) fn subnet_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .subnet_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// A get operation for a transaction.
    pub(crate) fn op_get(&self, rel: &str) -> TxnOp {
        TxnOp::get(self.abs(rel), None)
    }

    /// A prefix get operation for a transaction.
    pub(crate) fn op_get_prefix(&self, rel_prefix: &str) -> TxnOp {
        TxnOp::get(self.abs(rel_prefix), Some(GetOptions::new().with_prefix()))
    }

    pub(crate) fn op_put(&self, rel: &str, value: impl Into<Vec<u8>>) -> TxnOp {
        TxnOp::put(self.abs(rel), value, None)
    }

    pub(crate) fn op_delete(&self, rel: &str) -> TxnOp {
        TxnOp::delete(self.abs(rel), None)
    }

    pub(crate) fn op_delete_prefix(&self, rel_prefix: &str) -> TxnOp {
        TxnOp::delete(
            self.abs(rel_prefix),
            Some(DeleteOptions::new().with_prefix()),
        )
    }

    /// Compare: the key does not exist.
    pub(crate) fn cmp_absent(&self, rel: &str) -> Compare {
        Compare::create_revision(self.abs(rel), CompareOp::Equal, 0)
    }

    /// Compare: the key exists.
    pub(crate) fn cmp_present(&self, rel: &str) -> Compare {
        Compare::create_revision(self.abs(rel), CompareOp::Greater, 0)
    }

    /// Compare: the key is at `rev` (`0` = does not exist).
    pub(crate) fn cmp_rev(&self, rel: &str, rev: i64) -> Compare {
        if rev == 0 {
            self.cmp_absent(rel)
        } else {
            Compare::mod_revision(self.abs(rel), CompareOp::Equal, rev)
        }
    }

    /// Compare: no key under the prefix exists.
    pub(crate) fn cmp_prefix_empty(&self, rel_prefix: &str) -> Compare {
        Compare::create_revision(self.abs(rel_prefix), CompareOp::Equal, 0).with_prefix()
    }

    /// Compare: the key holds `value`.
    pub(crate) fn cmp_value(&self, rel: &str, value: &str) -> Compare {
        Compare::value(self.abs(rel), CompareOp::Equal, value)
    }

    /// Writes `value` at `rel` if the key is still at `rev` (`0`: only if it does not
    /// exist); returns the new `mod_revision`. A lost compare is [`Error::Conflict`].
    pub(crate) async fn cas_put(&self, rel: &str, value: String, rev: i64) -> Result<i64> {
        let txn = Txn::new()
            .when(vec![self.cmp_rev(rel, rev)])
            .and_then(vec![self.op_put(rel, value)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(Error::Conflict(if rev == 0 {
                format!("{rel} already exists")
            } else {
                format!("{rel} was changed since revision {rev}")
            }));
        }
        Ok(revision(&resp))
    }

    /// Global configuration value of `key` (§3.4).
    pub async fn get_config(&self, key: &str) -> Result<String> {
        if key.is_empty() {
            return Err(Error::Invalid("empty config key".into()));
        }
        let rel = format!("{CONFIG}{key}");
        match self.get(&rel).await? {
            Some(kv) => Ok(kv.text()),
            None => Err(Error::NotFound(rel)),
        }
    }

    /// Sets global configuration `key` to `value` (an empty value is stored, not deleted).
    pub async fn set_config(&self, key: &str, value: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::Invalid("empty config key".into()));
        }
        self.kv()
            .put(self.abs(&format!("{CONFIG}{key}")), value, None)
            .await?;
        Ok(())
    }

    /// Calls `f(key, value)` for every global configuration key (nested keys keep their
    /// inner `/`), in key order, after one ranged read; stops at the first error.
    pub async fn for_each_config<F>(&self, mut f: F) -> Result<()>
    where
        F: FnMut(&str, &str) -> Result<()>,
    {
        for kv in self.get_prefix(CONFIG).await? {
            if let Some(key) = kv.key.strip_prefix(CONFIG) {
                f(key, &kv.text())?;
            }
        }
        Ok(())
    }
}

/// The revision in a transaction's header (the store revision after it).
pub(crate) fn revision(resp: &TxnResponse) -> i64 {
    resp.header().map(|h| h.revision()).unwrap_or_default()
}

/// The key/values of the `i`-th get in a transaction response.
pub(crate) fn txn_get(ctx: &Context, resp: &[TxnOpResponse], i: usize) -> Vec<Kv> {
    match resp.get(i) {
        Some(TxnOpResponse::Get(g)) => g.kvs().iter().filter_map(|kv| ctx.to_kv(kv)).collect(),
        _ => Vec::new(),
    }
}

/// Splits `rest` (the part of a key after an entity prefix) into its id and the remainder
/// after the id's `/`.
pub(crate) fn split_id(rest: &str) -> (&str, &str) {
    match rest.split_once('/') {
        Some((id, tail)) => (id, tail),
        None => (rest, ""),
    }
}

/// Builds every entity of a listing under `family` with `build(id, subtree)`, skipping
/// (with a warning) the ones that fail.
pub(crate) fn build_trees<T>(
    family: &str,
    kvs: Vec<Kv>,
    build: impl Fn(&str, &[(String, Kv)]) -> Result<T>,
) -> Vec<T> {
    let mut out = Vec::new();
    for (id, items) in group_by_id(family, kvs) {
        match build(&id, &items) {
            Ok(t) => out.push(t),
            Err(e) => {
                tracing::warn!(entry = %format!("{family}{id}"), error = %e, "skipping broken entry")
            }
        }
    }
    out
}

/// The `metadata` entry of a subtree, or `NotFound` naming `key`.
pub(crate) fn metadata_of(items: &[(String, Kv)], key: impl FnOnce() -> String) -> Result<&Kv> {
    items
        .iter()
        .find(|(tail, _)| tail == "metadata")
        .map(|(_, kv)| kv)
        .ok_or_else(|| Error::NotFound(key()))
}

/// Groups a sorted listing under `prefix` by entity id: `(id, [(tail, kv)])`.
pub(crate) fn group_by_id(prefix: &str, kvs: Vec<Kv>) -> Vec<(String, Vec<(String, Kv)>)> {
    let mut out: Vec<(String, Vec<(String, Kv)>)> = Vec::new();
    for kv in kvs {
        let Some(rest) = kv.key.strip_prefix(prefix) else {
            continue;
        };
        let (id, tail) = split_id(rest);
        let (id, tail) = (id.to_string(), tail.to_string());
        match out.last_mut() {
            Some((last, items)) if *last == id => items.push((tail, kv)),
            _ => out.push((id, vec![(tail, kv)])),
        }
    }
    out
}

/// Small random pause before retrying a lost transaction, growing with the attempt.
pub(crate) async fn backoff(attempt: u32) {
    use rand::Rng;
    let cap = 200u64.saturating_mul(u64::from(attempt.min(20)) + 1);
    let micros = rand::rng().random_range(0..=cap);
    tokio::time::sleep(Duration::from_micros(micros)).await;
}

/// How many transactions an atomic multi-key operation tries before giving up.
pub const MAX_ATTEMPTS: u32 = 200;
