//! [`Context`]: the handle on etcd every entity keeps — the connection, the key prefix
//! the `lochness/…` tree lives under, and the few storage primitives the entities are
//! built on (reads, ranged reads, transactions, compare-and-swap, retry bounds). The key
//! layout itself is [`crate::keys`].

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KeyValue, KvClient, Txn,
    TxnOp, TxnOpResponse, TxnResponse,
};

use crate::error::{Error, Result};
use crate::keys;

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
    /// Awaited (once) before the next write transaction of a multi-key operation; see
    /// [`Context::with_commit_hook`].
    hook: Mutex<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>,
    /// State other modules keep per context (their caches), by type; see
    /// [`Context::local`].
    local: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

/// Compares and operations that one module adds to another's transaction: the
/// transaction commits only if the compares hold as well, and then also runs the
/// operations (e.g. a placer's claim on its job, checked and released in the placement
/// itself).
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// What must hold, besides the transaction's own compares.
    pub compares: Vec<Compare>,
    /// What to write, besides the transaction's own operations.
    pub ops: Vec<TxnOp>,
}

impl Guard {
    /// Whether the compares still hold now (one read-only transaction); a guard with no
    /// compares always holds.
    pub async fn holds(&self, ctx: &Context) -> Result<bool> {
        if self.compares.is_empty() {
            return Ok(true);
        }
        Ok(ctx
            .txn(Txn::new().when(self.compares.clone()))
            .await?
            .succeeded())
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
        let ctx = Context::on(client, kv, prefix, None);
        if eps.len() > 1 {
            // As the client names them: a bare `host:port` is `http://host:port`.
            let named = eps
                .iter()
                .map(|e| {
                    if e.contains("://") {
                        e.clone()
                    } else {
                        format!("http://{e}")
                    }
                })
                .collect();
            tokio::spawn(prune_endpoints(Arc::downgrade(&ctx.inner), named));
        }
        Ok(ctx)
    }

    fn on(
        client: Client,
        kv: KvClient,
        prefix: String,
        hook: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    ) -> Context {
        Context {
            inner: Arc::new(Inner {
                client,
                kv,
                prefix,
                hook: Mutex::new(hook),
                local: Mutex::default(),
            }),
        }
    }

    /// A context on the same connection and prefix (with nothing cached) that awaits
    /// `hook` once, before its first write transaction of a multi-key operation: fault
    /// injection for tests, which put a conflicting write between an operation's read and
    /// its commit. Clones of the returned context share the hook.
    pub fn with_commit_hook(&self, hook: impl Future<Output = ()> + Send + 'static) -> Context {
        Context::on(
            self.inner.client.clone(),
            self.inner.kv.clone(),
            self.inner.prefix.clone(),
            Some(Box::pin(hook)),
        )
    }

    /// The `T` this context (and its clones) keeps for another module — a cache, say —
    /// made with `T::default()` on first use. The context stores it without knowing
    /// what it is.
    pub(crate) fn local<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut local = self.inner.local.lock().unwrap_or_else(|p| p.into_inner());
        let entry = local
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()));
        match Arc::clone(entry).downcast::<T>() {
            Ok(t) => t,
            // Unreachable: the entry of `TypeId::of::<T>()` is always a `T`.
            Err(_) => {
                let fresh = Arc::new(T::default());
                *entry = fresh.clone();
                fresh
            }
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
            let unchanged = self.cmp_prefix_unchanged(prefix, read_rev);
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
    /// one is still pending).
    pub(crate) async fn commit(&self, txn: Txn) -> Result<TxnResponse> {
        let hook = self
            .inner
            .hook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(hook) = hook {
            hook.await;
        }
        self.txn(txn).await
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

    /// Compare: no key under the prefix was created or changed after revision `rev` (a
    /// key deleted since is not seen: etcd compares only the keys that exist).
    pub(crate) fn cmp_prefix_unchanged(&self, rel_prefix: &str, rev: i64) -> Compare {
        Compare::mod_revision(self.abs(rel_prefix), CompareOp::Less, rev + 1).with_prefix()
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
        .find(|(tail, _)| tail == keys::METADATA)
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
        let (id, tail) = keys::split_id(rest);
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

/// How often [`prune_endpoints`] probes the endpoints.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Keeps the members that do not accept connections out of the client's balanced channel
/// while another member does, and puts them back when they accept again. The channel
/// itself never drops an endpoint: a request it sends to a dead member fails at once
/// (`Unavailable`, "tcp connect error"), so with one member of three down about every
/// third request of every daemon failed for as long as the member stayed down. Runs
/// until the context's last clone is dropped.
async fn prune_endpoints(inner: std::sync::Weak<Inner>, endpoints: Vec<String>) {
    let mut out = vec![false; endpoints.len()];
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let mut up = Vec::with_capacity(endpoints.len());
        for e in &endpoints {
            up.push(accepts(e).await);
        }
        let Some(inner) = inner.upgrade() else { return };
        let any_up = up.iter().any(|u| *u);
        for (i, e) in endpoints.iter().enumerate() {
            let result = match (out[i], up[i]) {
                (false, false) if any_up => {
                    tracing::warn!(endpoint = %e, "etcd member does not answer: not used until it does");
                    inner.client.remove_endpoint(e).await
                }
                (true, true) => {
                    tracing::info!(endpoint = %e, "etcd member answers again");
                    inner.client.add_endpoint(e).await
                }
                _ => continue,
            };
            match result {
                Ok(()) => out[i] = !out[i],
                Err(err) => {
                    tracing::warn!(endpoint = %e, error = %err, "cannot change the etcd endpoints")
                }
            }
        }
    }
}

/// Whether the host and port of endpoint `url` (`http://host:port`, `host:port`) accept
/// a TCP connection within a second.
async fn accepts(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(authority)
        )
        .await,
        Ok(Ok(_))
    )
}
