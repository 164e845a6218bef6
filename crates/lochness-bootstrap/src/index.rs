//! Which hypervisor has an address: an in-memory index from address text to hypervisor
//! ids, read once from etcd and kept current by a watch on `lochness/hypervisors/`, so
//! a boot request costs one map lookup and one read of the one hypervisor it names
//! instead of a scan of every hypervisor (the original loaded all of them per request).
//!
//! Only the hypervisors' `metadata` keys change the index; their other keys (heartbeats,
//! guest and subnet links, configuration) are skipped as they arrive. The watch starts
//! before the first read, so no change falls between the two; a watch that ends (its
//! revision compacted away) is started again and everything is read again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lochness::{keys, ChangeKind, Context, Watcher};
use tokio::task::JoinHandle;

/// The address text of a hypervisor's metadata JSON (`None` without an address).
fn metadata_ip(value: &[u8]) -> Result<Option<String>, String> {
    let doc: serde_json::Value = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    match doc.get("ip") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => lochness::codec::parse_ip(s)
            .map(|ip| ip.map(|ip| ip.to_string()))
            .map_err(|e| e.to_string()),
        Some(other) => Err(format!("ip is not a string: {other}")),
    }
}

/// The index itself: pure, fed with key changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IpTable {
    /// Hypervisor id → its address text.
    by_id: HashMap<String, String>,
    /// Address text → the ids that have it (ordered: the first is answered first).
    by_ip: BTreeMap<String, BTreeSet<String>>,
}

impl IpTable {
    /// Applies the change of relative key `key` (`value` `None`: deleted). Keys other
    /// than `lochness/hypervisors/<id>/metadata` are ignored; an undecodable metadata
    /// value removes the hypervisor from the index (it cannot be booted either).
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        let Some(id) = keys::metadata_id(keys::HYPERVISORS, key) else {
            return;
        };
        self.remove(id);
        let Some(value) = value else { return };
        match metadata_ip(value) {
            Ok(Some(ip)) => self.insert(id, ip),
            Ok(None) => {}
            Err(why) => {
                tracing::warn!(hypervisor = %id, %why, "unreadable hypervisor metadata: not indexed");
            }
        }
    }

    fn insert(&mut self, id: &str, ip: String) {
        self.by_ip
            .entry(ip.clone())
            .or_default()
            .insert(id.to_string());
        self.by_id.insert(id.to_string(), ip);
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.by_id.remove(id) {
            if let Some(ids) = self.by_ip.get_mut(&old) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_ip.remove(&old);
                }
            }
        }
    }

    /// The ids of the hypervisors whose address renders as `ip`, in id order.
    pub fn lookup(&self, ip: &str) -> Vec<String> {
        self.by_ip
            .get(ip)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many hypervisors have an address.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no hypervisor has an address.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// An [`IpTable`] kept current in the background; dropping it stops the watch.
#[derive(Debug)]
pub struct IpIndex {
    table: Arc<RwLock<IpTable>>,
    loads: Arc<std::sync::atomic::AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for IpIndex {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a watch, then reads every hypervisor's metadata into a fresh table.
async fn load(ctx: &Context) -> lochness::Result<(Watcher, IpTable)> {
    let watcher = ctx.watch(keys::HYPERVISORS, 0).await?;
    let mut table = IpTable::default();
    for kv in ctx.get_prefix(keys::HYPERVISORS).await? {
        table.apply(&kv.key, Some(&kv.value));
    }
    Ok((watcher, table))
}

impl IpIndex {
    /// Reads the index and starts following etcd.
    pub async fn start(ctx: &Context) -> lochness::Result<IpIndex> {
        let (watcher, table) = load(ctx).await?;
        tracing::info!(hypervisors = table.len(), "address index loaded");
        let table = Arc::new(RwLock::new(table));
        let loads = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let task = tokio::spawn(follow(ctx.clone(), table.clone(), loads.clone(), watcher));
        Ok(IpIndex { table, loads, task })
    }

    /// The ids of the hypervisors whose address renders as `ip`, in id order.
    pub fn lookup(&self, ip: &str) -> Vec<String> {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .lookup(ip)
    }

    /// How many hypervisors the index holds.
    pub fn len(&self) -> usize {
        self.table.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the index holds no hypervisor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many times the index was read from etcd as a whole (1 at start, one more
    /// after each watch that had to be started again).
    pub fn loads(&self) -> u64 {
        self.loads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn follow(
    ctx: Context,
    table: Arc<RwLock<IpTable>>,
    loads: Arc<std::sync::atomic::AtomicU64>,
    mut watcher: Watcher,
) {
    loop {
        loop {
            match watcher.next().await {
                Some(Ok(e)) => {
                    let mut t = table.write().unwrap_or_else(|p| p.into_inner());
                    let value = (e.kind != ChangeKind::Delete).then_some(e.value.as_slice());
                    t.apply(&e.key, value);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "hypervisor watch ended: reading the address index again");
                    break;
                }
                None => break,
            }
        }
        loop {
            match load(&ctx).await {
                Ok((w, fresh)) => {
                    watcher = w;
                    *table.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                    loads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the hypervisors, retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HV1: &str = "lochness/hypervisors/h1/metadata";
    const HV2: &str = "lochness/hypervisors/h2/metadata";

    #[test]
    fn metadata_keys_feed_the_table() {
        let mut t = IpTable::default();
        t.apply(HV2, Some(br#"{"id":"h2","ip":"10.0.0.5"}"#));
        t.apply(HV1, Some(br#"{"id":"h1","ip":"10.0.0.5"}"#));
        t.apply("lochness/hypervisors/h1/heartbeat", Some(b"now"));
        t.apply("lochness/hypervisors/h1/config/ip", Some(b"10.9.9.9"));
        assert_eq!(t.lookup("10.0.0.5"), ["h1", "h2"], "id order");
        assert_eq!(t.len(), 2);
        // A moved address leaves its old entry.
        t.apply(HV1, Some(br#"{"id":"h1","ip":"10.0.0.6"}"#));
        assert_eq!(t.lookup("10.0.0.5"), ["h2"]);
        assert_eq!(t.lookup("10.0.0.6"), ["h1"]);
        t.apply(HV2, None);
        assert!(t.lookup("10.0.0.5").is_empty());
        assert_eq!(t.len(), 1);
        // No address, or one that does not parse: not indexed.
        t.apply(HV1, Some(br#"{"id":"h1","ip":""}"#));
        t.apply(HV2, Some(br#"{"id":"h2","ip":"bogus"}"#));
        assert!(t.is_empty());
        t.apply(HV2, Some(b"not json"));
        assert!(t.is_empty());
    }

    #[test]
    fn mapped_addresses_are_indexed_as_ipv4() {
        let mut t = IpTable::default();
        t.apply(HV1, Some(br#"{"ip":"::ffff:10.0.0.7"}"#));
        assert_eq!(t.lookup("10.0.0.7"), ["h1"]);
    }
}
