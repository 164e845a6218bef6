//! Liveness: a hypervisor is alive while its heartbeat key exists. The key is written
//! under an etcd lease that a background task keeps alive, so it disappears by itself
//! when the beating process dies (the original held it with a Consul session; see
//! docs/compat.md, section "lochness"). Also the loop of the `lochness-heartbeat` daemon,
//! which beats and updates the hypervisor's resources.

use std::time::Duration;

use etcd_client::PutOptions;
use tokio::task::JoinHandle;

use crate::codec::{canonicalize, go_time_now};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::host::{set_hypervisor_id, DEFAULT_GUEST_DISK_DIR};
use crate::keys;

/// A running heartbeat: the hypervisor's heartbeat key, attached to a lease that a
/// background task keeps alive. Dropping it stops the keep-alive, so the key disappears
/// once the TTL runs out; [`Heartbeat::stop`] removes it at once.
#[derive(Debug)]
pub struct Heartbeat {
    ctx: Context,
    key: String,
    ttl: i64,
    lease: i64,
    keeper: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// The lease id currently holding the key.
    pub fn lease_id(&self) -> i64 {
        self.lease
    }

    /// The relative key being kept alive.
    pub fn key(&self) -> &str {
        &self.key
    }

    async fn grant(&mut self) -> Result<()> {
        let mut client = self.ctx.client();
        let lease = client.lease_grant(self.ttl, None).await?;
        self.lease = lease.id();
        if let Some(task) = self.keeper.take() {
            task.abort();
        }
        let (mut keeper, mut stream) = client.lease_keep_alive(self.lease).await?;
        let every = Duration::from_millis((self.ttl as u64 * 1000 / 3).max(300));
        let key = self.key.clone();
        self.keeper = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = keeper.keep_alive().await {
                    tracing::warn!(%key, error = %e, "heartbeat keep-alive failed");
                    return;
                }
                match stream.message().await {
                    Ok(Some(r)) if r.ttl() > 0 => {}
                    other => {
                        tracing::warn!(%key, ?other, "heartbeat lease lost");
                        return;
                    }
                }
            }
        }));
        Ok(())
    }

    /// Writes the current time (Go `Time.String()` form) to the key under the lease,
    /// taking a new lease when the old one expired.
    pub async fn beat(&mut self) -> Result<()> {
        let value = go_time_now();
        let abs = self.ctx.abs(&self.key);
        let mut client = self.ctx.client();
        let put = client
            .put(
                abs.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(self.lease)),
            )
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::info!(key = %self.key, error = %e, "heartbeat lease gone, taking a new one");
                self.grant().await?;
                client
                    .put(abs, value, Some(PutOptions::new().with_lease(self.lease)))
                    .await?;
                Ok(())
            }
        }
    }

    /// Stops the keep-alive and revokes the lease: the key is deleted now.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(task) = self.keeper.take() {
            task.abort();
        }
        self.ctx.client().lease_revoke(self.lease).await?;
        Ok(())
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(task) = self.keeper.take() {
            task.abort();
        }
    }
}

impl Context {
    /// Starts beating for hypervisor `id` (which must exist): takes a lease of `ttl`
    /// (whole seconds, at least 1), writes the heartbeat key under it and keeps the lease
    /// alive in the background. One process may beat for several hypervisors.
    pub async fn heartbeat(&self, id: &str, ttl: Duration) -> Result<Heartbeat> {
        let id = canonicalize(id)?;
        if self.get(&keys::hypervisor_metadata(&id)).await?.is_none() {
            return Err(Error::NotFound(keys::hypervisor_metadata(&id)));
        }
        let mut hb = Heartbeat {
            ctx: self.clone(),
            key: keys::hypervisor_heartbeat(&id),
            ttl: ttl.as_secs().max(1) as i64,
            lease: 0,
            keeper: None,
        };
        hb.grant().await?;
        hb.beat().await?;
        Ok(hb)
    }

    /// Whether hypervisor `id`'s heartbeat key exists now.
    pub async fn is_alive(&self, id: &str) -> Result<bool> {
        let id = canonicalize(id)?;
        Ok(self.get(&keys::hypervisor_heartbeat(&id)).await?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("120").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("120s").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-5s").is_err());
    }
}

/// Parses a duration given as whole seconds (`120`) or with a unit: `ms`, `s`, `m`, `h`
/// (`120s`, `2m`, `1h`, `500ms`).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?}"))?;
    let per = match unit {
        "" | "s" => 1000,
        "ms" => 1,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("invalid duration {text:?} (use ms, s, m or h)")),
    };
    n.checked_mul(per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

/// Settings of the heartbeat loop run by `lochness-heartbeat`.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// etcd endpoints.
    pub etcd: Vec<String>,
    /// Key prefix (normally empty).
    pub prefix: Option<String>,
    /// The hypervisor to beat for; empty → `$HYPERVISOR_ID`, then the hostname.
    pub hypervisor_id: String,
    /// Lease TTL.
    pub ttl: Duration,
    /// Time between beats (and resource updates).
    pub interval: Duration,
    /// Guest-disk directory for the disk figure; `None` → the hypervisor's
    /// `guestDiskDir` config, else [`DEFAULT_GUEST_DISK_DIR`].
    pub guest_disk_dir: Option<String>,
}

/// Runs the heartbeat loop until `shutdown` resolves: checks the settings, loads the
/// hypervisor once (it must exist), then every `interval` updates its resources and
/// beats. On shutdown the lease is revoked, so the heartbeat key disappears at once.
pub async fn run_daemon<F>(config: DaemonConfig, shutdown: F) -> Result<()>
where
    F: std::future::Future<Output = ()>,
{
    if config.interval.is_zero() {
        return Err(Error::Invalid("interval must be positive".into()));
    }
    if config.ttl < config.interval {
        return Err(Error::Invalid("ttl must be greater than interval".into()));
    }
    if config.ttl < Duration::from_secs(2) {
        return Err(Error::Invalid("ttl must be at least 2s".into()));
    }
    let id = set_hypervisor_id(&config.hypervisor_id)?;
    let ctx = Context::new(&config.etcd, config.prefix.as_deref()).await?;
    let mut hv = ctx.hypervisor(&id).await?;
    hv.verify_on_hv()?;
    let mut hb = ctx.heartbeat(&id, config.ttl).await?;
    tracing::info!(hypervisor = %id, ttl = ?config.ttl, interval = ?config.interval, "heartbeat started");
    tokio::pin!(shutdown);
    loop {
        let dir = config
            .guest_disk_dir
            .clone()
            .or_else(|| hv.config().get("guestDiskDir").cloned())
            .unwrap_or_else(|| DEFAULT_GUEST_DISK_DIR.to_string());
        if let Err(e) = hv.update_resources_with(&dir).await {
            tracing::warn!(hypervisor = %id, error = %e, "cannot update resources");
        }
        hb.beat().await?;
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
    tracing::info!(hypervisor = %id, "heartbeat stopping");
    hb.stop().await
}
