//! Typed watches over etcd v3 revision-based watches: changes under a prefix arrive as
//! [`WatchEvent`]s naming the entity they touch. The watcher remembers the last revision
//! it delivered and, when the connection breaks, resumes from the next one, so nothing is
//! missed or repeated; unlike the original's watcher, it does not replay every existing
//! key at start-up (see docs/compat.md, section "lochness").

use std::collections::VecDeque;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::keys;

/// What kind of change a key saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The key did not exist before.
    Create,
    /// The key existed and got a new value.
    Update,
    /// The key was deleted (or its lease expired).
    Delete,
}

/// The entity family a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    /// `lochness/hypervisors/…`
    Hypervisor,
    /// `lochness/subnets/…`
    Subnet,
    /// `lochness/networks/…`
    Network,
    /// `lochness/flavors/…`
    Flavor,
    /// `lochness/fwgroups/…`
    FwGroup,
    /// `lochness/guests/…`
    Guest,
    /// `lochness/vlans/…`
    Vlan,
    /// `lochness/vlangroups/…`
    VlanGroup,
    /// `lochness/config/…`
    Config,
    /// `lochness/jobs/…`
    Job,
    /// Anything else.
    Other,
}

/// One change.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// The key, relative to the context prefix.
    pub key: String,
    /// Create, update or delete.
    pub kind: ChangeKind,
    /// The entity family.
    pub entity: EntityKind,
    /// The entity id (for VLANs the tag, for config the key), or `""`.
    pub id: String,
    /// The rest of the key after the id (`metadata`, `guests/<gid>`, `heartbeat`, …).
    pub sub: String,
    /// The new value (empty on delete).
    pub value: Vec<u8>,
    /// The previous value when etcd still had it.
    pub prev_value: Option<Vec<u8>>,
    /// The revision of the change.
    pub revision: i64,
}

/// The entity family of each prefix of [`keys`].
const FAMILIES: [(&str, EntityKind); 10] = [
    (keys::HYPERVISORS, EntityKind::Hypervisor),
    (keys::SUBNETS, EntityKind::Subnet),
    (keys::NETWORKS, EntityKind::Network),
    (keys::FLAVORS, EntityKind::Flavor),
    (keys::FWGROUPS, EntityKind::FwGroup),
    (keys::GUESTS, EntityKind::Guest),
    (keys::VLANS, EntityKind::Vlan),
    (keys::VLANGROUPS, EntityKind::VlanGroup),
    (keys::JOBS, EntityKind::Job),
    (keys::CONFIG, EntityKind::Config),
];

/// Splits a relative key into (entity, id, rest).
pub fn classify(key: &str) -> (EntityKind, String, String) {
    let Some(rest) = key.strip_prefix(keys::ROOT) else {
        return (EntityKind::Other, String::new(), String::new());
    };
    let (family, rest) = rest.split_once('/').unwrap_or((rest, ""));
    // The family's prefix is `lochness/<family>/`.
    let entity = FAMILIES
        .iter()
        .find(|(prefix, _)| prefix[keys::ROOT.len()..].strip_suffix('/') == Some(family))
        .map_or(EntityKind::Other, |(_, entity)| *entity);
    if entity == EntityKind::Config {
        return (EntityKind::Config, rest.to_string(), String::new());
    }
    let (id, sub) = keys::split_id(rest);
    (entity, id.to_string(), sub.to_string())
}

/// A running watch; dropping it stops the watch.
///
/// Changes arrive as etcd sends them: in batches of whole revisions (every change one
/// transaction made comes in the same batch). [`Watcher::next_batch`] hands out a batch
/// at a time, so a reader never sees half of a transaction (say a queue entry deleted
/// but not yet put elsewhere); [`Watcher::next`] hands out one change at a time.
#[derive(Debug)]
pub struct Watcher {
    rx: mpsc::Receiver<Result<Vec<WatchEvent>>>,
    /// What is left of the batch being handed out one change at a time.
    buf: VecDeque<WatchEvent>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// The next change, in revision order; `None` once the watch stopped. An error is
    /// final (e.g. the start revision was compacted away).
    pub async fn next(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if let Some(event) = self.buf.pop_front() {
                return Some(Ok(event));
            }
            match self.rx.recv().await? {
                Ok(batch) => self.buf.extend(batch),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The next change if one has already arrived (for applying a burst in one go).
    pub fn try_next(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if let Some(event) = self.buf.pop_front() {
                return Some(Ok(event));
            }
            match self.rx.try_recv().ok()? {
                Ok(batch) => self.buf.extend(batch),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The next batch of changes: whole revisions, in order (what is left of a batch
    /// partly handed out by [`Watcher::next`] first); `None` once the watch stopped.
    pub async fn next_batch(&mut self) -> Option<Result<Vec<WatchEvent>>> {
        if !self.buf.is_empty() {
            return Some(Ok(self.buf.drain(..).collect()));
        }
        self.rx.recv().await
    }

    /// The next batch if one has already arrived.
    pub fn try_next_batch(&mut self) -> Option<Result<Vec<WatchEvent>>> {
        if !self.buf.is_empty() {
            return Some(Ok(self.buf.drain(..).collect()));
        }
        self.rx.try_recv().ok()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Context {
    /// Watches every key under the relative `prefix` (e.g. `lochness/guests/`), starting
    /// after revision `after` (0: from now). Events come in revision order; a broken
    /// connection is re-established and the watch resumes after the last delivered
    /// revision. Events carry no `prev_value` (see [`Context::watch_with_prev`]).
    pub async fn watch(&self, prefix: &str, after: i64) -> Result<Watcher> {
        self.watch_opts(prefix, after, false).await
    }

    /// [`Context::watch`] with each event's previous value (`prev_value`). It costs etcd
    /// a read of the key's previous revision for every event and every such watcher, so
    /// it is asked for only by who needs it.
    pub async fn watch_with_prev(&self, prefix: &str, after: i64) -> Result<Watcher> {
        self.watch_opts(prefix, after, true).await
    }

    async fn watch_opts(&self, prefix: &str, after: i64, prev: bool) -> Result<Watcher> {
        let ctx = self.clone();
        let abs = self.abs(prefix);
        let mut next = if after > 0 {
            after + 1
        } else {
            let resp = self
                .kv()
                .get(
                    abs.clone(),
                    Some(etcd_client::GetOptions::new().with_count_only()),
                )
                .await?;
            resp.header().map(|h| h.revision()).unwrap_or(0) + 1
        };
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(async move {
            loop {
                let mut options = WatchOptions::new().with_prefix().with_start_revision(next);
                if prev {
                    options = options.with_prev_key();
                }
                let mut client = ctx.client();
                let mut stream = match client.watch(abs.clone(), Some(options)).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(prefix = %abs, error = %e, "watch failed to start, retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                loop {
                    match stream.message().await {
                        Ok(Some(resp)) => {
                            if resp.compact_revision() > 0 {
                                let _ = tx
                                    .send(Err(Error::Refused(format!(
                                        "watch from revision {next} was compacted (now {})",
                                        resp.compact_revision()
                                    ))))
                                    .await;
                                return;
                            }
                            if resp.canceled() {
                                tracing::warn!(prefix = %abs, reason = resp.cancel_reason(), "watch canceled, restarting");
                                break;
                            }
                            let mut batch = Vec::with_capacity(resp.events().len());
                            for ev in resp.events() {
                                let Some(kv) = ev.kv() else { continue };
                                let Some(key) = std::str::from_utf8(kv.key())
                                    .ok()
                                    .and_then(|k| ctx.rel(k))
                                    .map(str::to_string)
                                else {
                                    continue;
                                };
                                let kind = match ev.event_type() {
                                    EventType::Delete => ChangeKind::Delete,
                                    EventType::Put if kv.create_revision() == kv.mod_revision() => {
                                        ChangeKind::Create
                                    }
                                    EventType::Put => ChangeKind::Update,
                                };
                                let (entity, id, sub) = classify(&key);
                                let event = WatchEvent {
                                    key,
                                    kind,
                                    entity,
                                    id,
                                    sub,
                                    value: kv.value().to_vec(),
                                    prev_value: ev.prev_kv().map(|p| p.value().to_vec()),
                                    revision: kv.mod_revision(),
                                };
                                next = next.max(kv.mod_revision() + 1);
                                batch.push(event);
                            }
                            if !batch.is_empty() && tx.send(Ok(batch)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            tracing::info!(prefix = %abs, next, "watch stream ended, resuming");
                            break;
                        }
                        Err(e) => {
                            tracing::info!(prefix = %abs, next, error = %e, "watch broken, resuming");
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(Watcher {
            rx,
            buf: VecDeque::new(),
            task,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_classified() {
        assert_eq!(
            classify("lochness/hypervisors/abc/guests/g"),
            (EntityKind::Hypervisor, "abc".into(), "guests/g".into())
        );
        assert_eq!(
            classify("lochness/vlans/10/metadata"),
            (EntityKind::Vlan, "10".into(), "metadata".into())
        );
        assert_eq!(
            classify("lochness/config/a/b"),
            (EntityKind::Config, "a/b".into(), String::new())
        );
        assert_eq!(classify("other/x").0, EntityKind::Other);
    }
}
