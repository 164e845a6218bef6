//! The client side of the mistify agent: the [`Agent`] trait controllers program
//! against, and [`MistifyAgent`], which finds a guest's hypervisor in etcd and calls its
//! agent over the `mistify-client` REST client, at the hypervisor's address and its
//! `agentPort` configuration (8080 when unset), retrying while the agent answers 503 (see
//! docs/compat.md, section "lochness").

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mistify_client::{Accepted, Client, ClientError, GuestAction, ImageRequest, JobStatus};

use crate::codec::{canonicalize, ip_text};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::guest::Guest;
use crate::hypervisor::Hypervisor;

/// The agent port used when the hypervisor has no `agentPort` configuration.
pub const DEFAULT_AGENT_PORT: u16 = 8080;

/// How long one agent call may take.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(15);

/// How often a `503 Service Unavailable` answer is retried.
pub const BUSY_RETRIES: u32 = 5;

/// The longest `Retry-After` honoured before retrying a `503`.
const MAX_BUSY_PAUSE: Duration = Duration::from_secs(30);

/// Pause before retrying a `503` that carries no `Retry-After`.
pub const BUSY_PAUSE: Duration = Duration::from_secs(1);

/// What controllers ask of the agent of a guest's hypervisor. Every call takes guest ids
/// and returns the agent's job id where the agent queues work.
pub trait Agent: Send + Sync {
    /// The agent's view of the guest.
    fn get_guest(
        &self,
        guest_id: &str,
    ) -> impl Future<Output = Result<mistify_client::Guest>> + Send;
    /// Asks the agent to create the guest; returns the job id.
    fn create_guest(&self, guest_id: &str) -> impl Future<Output = Result<String>> + Send;
    /// Asks the agent to delete the guest; returns the job id.
    fn delete_guest(&self, guest_id: &str) -> impl Future<Output = Result<String>> + Send;
    /// Runs a guest action (`shutdown`, `reboot`, `restart`, `poweroff`, `start`,
    /// `suspend`, `delete`); returns the job id.
    fn guest_action(
        &self,
        guest_id: &str,
        action: &str,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Whether the job is finished: `Ok(true)` when complete, `Ok(false)` while queued or
    /// running, [`Error::JobFailed`] with the agent's message when it failed.
    fn check_job_status(
        &self,
        guest_id: &str,
        job_id: &str,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// [`Agent`] over HTTP: reaches `http://<hypervisor ip>:<agentPort or 8080>`.
#[derive(Debug, Clone)]
pub struct MistifyAgent {
    ctx: Context,
    timeout: Duration,
    /// The port of agents whose hypervisor has no `agentPort` configuration.
    default_port: u16,
    token: Option<String>,
    /// `https://` with this configuration, loaded once by [`MistifyAgent::with_tls`]
    /// (agents started with `--tls-cert`); unusable files are reported by `client_for`.
    tls: Option<std::result::Result<std::sync::Arc<mistify_client::TlsClientConfig>, String>>,
    /// The REST clients made so far, by agent URL: one HTTP client (its connections and
    /// the system's CA list, which takes milliseconds to load) per agent for the life of
    /// this value, as reqwest means clients to be used. Cleared by every `with_*`.
    clients: Arc<Mutex<HashMap<String, Client>>>,
}

/// Agents whose clients are kept at most; beyond, the cache starts over (a cluster's
/// hypervisors are far fewer: this only bounds agents that moved address).
const MAX_CLIENTS: usize = 4096;

fn agent_err(e: ClientError) -> Error {
    match e {
        ClientError::InvalidInput(m) => Error::Invalid(m),
        ClientError::Api { status: 404, .. } => Error::NotFound(e.message().into_owned()),
        other => Error::Agent(other.to_string()),
    }
}

fn job_id<T>(accepted: Accepted<T>) -> Result<String> {
    if accepted.status != 202 {
        return Err(Error::HttpCode {
            expected: 202,
            code: accepted.status,
        });
    }
    accepted
        .job_id
        .filter(|j| !j.is_empty())
        .ok_or_else(|| Error::Agent("the agent sent no X-Guest-Job-ID".into()))
}

/// Runs `call`, retrying while the agent answers 503.
async fn busy_retry<T, F, Fut>(mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, ClientError>>,
{
    let mut tries = 0;
    loop {
        match call().await {
            Err(e) if e.status() == Some(503) && tries < BUSY_RETRIES => {
                tries += 1;
                tracing::debug!(tries, "agent busy, retrying");
                // The agent's Retry-After, within reason.
                let pause = e
                    .retry_after()
                    .map_or(BUSY_PAUSE, |d| d.min(MAX_BUSY_PAUSE));
                tokio::time::sleep(pause).await;
            }
            other => return other.map_err(agent_err),
        }
    }
}

/// The netmask of an IPv4 prefix as Go's `IPMask.String()` prints it (`ffffff00`).
pub fn hex_netmask(prefix: u8) -> String {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    format!("{mask:08x}")
}

impl MistifyAgent {
    /// An agent client resolving guests through `ctx`.
    pub fn new(ctx: &Context) -> MistifyAgent {
        MistifyAgent {
            ctx: ctx.clone(),
            timeout: AGENT_TIMEOUT,
            default_port: DEFAULT_AGENT_PORT,
            token: None,
            tls: None,
            clients: Arc::default(),
        }
    }

    /// The same client sending `token` as a bearer token to every agent (agents started
    /// with `--token-file`).
    pub fn with_token(mut self, token: &str) -> MistifyAgent {
        self.token = Some(token.to_string());
        self.clients = Arc::default();
        self
    }

    /// The same client speaking HTTPS to every agent: `files.ca` verifies the agents'
    /// certificates (the system's CAs when unset), `files.cert`/`files.key` is the client
    /// certificate for agents started with `--client-ca`.
    pub fn with_tls(mut self, files: mistify_client::TlsFiles) -> MistifyAgent {
        self.tls = Some(files.client_config().map_err(|e| match e {
            ClientError::InvalidInput(m) => m,
            other => other.to_string(),
        }));
        self.clients = Arc::default();
        self
    }

    /// The same client reaching agents on `port` when their hypervisor has no
    /// `agentPort` configuration (8080 otherwise; a configured port always wins).
    pub fn with_default_port(mut self, port: u16) -> MistifyAgent {
        if port > 0 {
            self.default_port = port;
        }
        self.clients = Arc::default();
        self
    }

    /// The same client with another per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> MistifyAgent {
        self.timeout = timeout;
        self.clients = Arc::default();
        self
    }

    /// The guest and a REST client on the agent of its hypervisor.
    async fn resolve(&self, guest_id: &str) -> Result<(Guest, Client)> {
        let guest = self.ctx.guest(&canonicalize(guest_id)?).await?;
        if guest.hypervisor.is_empty() {
            return Err(Error::Invalid(format!(
                "guest {} is not placed on a hypervisor",
                guest.id
            )));
        }
        let hv = self.ctx.hypervisor_settings(&guest.hypervisor).await?;
        let client = self.client_for(&hv)?;
        Ok((guest, client))
    }

    /// A REST client on `hv`'s agent: its IP and `agentPort` configuration (the default
    /// port, 8080 unless [`MistifyAgent::with_default_port`] says otherwise, when unset or
    /// not a port number).
    pub fn client_for(&self, hv: &Hypervisor) -> Result<Client> {
        let ip = match hv.ip {
            Some(IpAddr::V4(ip)) => ip,
            _ => {
                return Err(Error::Invalid(format!(
                    "hypervisor {} has no IPv4 address",
                    hv.id
                )))
            }
        };
        let port = hv
            .config()
            .get("agentPort")
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0)
            .unwrap_or(self.default_port);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{ip}:{port}");
        let cached = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&url)
            .cloned();
        if let Some(client) = cached {
            return Ok(client);
        }
        let client = self.new_client(&url)?;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(url, client.clone());
        Ok(client)
    }

    /// A new REST client on the agent at `url`, with this value's timeout, TLS and token.
    fn new_client(&self, url: &str) -> Result<Client> {
        let mut client = Client::new(url)
            .map(|c| c.with_timeout(self.timeout))
            .map_err(agent_err)?;
        match &self.tls {
            None => {}
            Some(Ok(config)) => {
                client = client.with_tls_config(config.clone()).map_err(agent_err)?
            }
            Some(Err(e)) => return Err(Error::Invalid(e.clone())),
        }
        match &self.token {
            Some(token) => client.with_token(token).map_err(agent_err),
            None => Ok(client),
        }
    }

    /// The agent's guest body for `guest`, as the original built it: one NIC on the
    /// guest's bridge (netmask in Go's hex form, VLANs of the guest's VLAN group or `[1]`),
    /// one disk from the flavor's image, the flavor's memory and CPUs.
    pub async fn agent_guest(&self, guest: &Guest) -> Result<mistify_client::Guest> {
        guest.validate()?;
        let flavor = self.ctx.flavor(&guest.flavor).await?;
        let subnet = self.ctx.subnet_settings(&guest.subnet).await?;
        let mut vlans: Vec<i64> = Vec::new();
        if !guest.vlangroup.is_empty() {
            vlans = self.ctx.vlangroup(&guest.vlangroup).await?.vlans().to_vec();
        }
        if vlans.is_empty() {
            vlans.push(1);
        }
        let netmask = subnet
            .cidr
            .map(|c| hex_netmask(c.prefix()))
            .unwrap_or_default();
        Ok(mistify_client::Guest {
            id: guest.id.clone(),
            kind: guest.kind.clone(),
            image: flavor.image.clone(),
            nics: vec![mistify_client::Nic {
                name: "eth0".into(),
                network: guest.bridge.clone(),
                model: "virtio".into(),
                mac: guest
                    .mac
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
                address: ip_text(&guest.ip),
                netmask,
                gateway: ip_text(&subnet.gateway),
                device: String::new(),
                vlans: Some(vlans),
            }],
            disks: vec![mistify_client::Disk {
                bus: String::new(),
                device: String::new(),
                size: flavor.resources.disk,
                volume: String::new(),
                image: flavor.image.clone(),
                source: flavor.image.clone(),
            }],
            memory: flavor.resources.memory,
            cpu: flavor.resources.cpu,
            metadata: guest.metadata.clone(),
            ..Default::default()
        })
    }

    /// The agent's request fetching the image of `guest`'s flavor, as the original sent
    /// it: the flavor's image, the guest's type, no destination or source.
    pub async fn image_request(&self, guest: &Guest) -> Result<ImageRequest> {
        let flavor = self.ctx.flavor(&guest.flavor).await?;
        Ok(ImageRequest {
            id: flavor.image.clone(),
            kind: guest.kind.clone(),
            dest: String::new(),
            source: String::new(),
        })
    }

    /// Asks the agent to fetch the image of the guest's flavor; returns the job id.
    pub async fn fetch_image(&self, guest_id: &str) -> Result<String> {
        let (guest, client) = self.resolve(guest_id).await?;
        let request = self.image_request(&guest).await?;
        job_id(busy_retry(|| client.fetch_image(&request)).await?)
    }
}

impl Agent for MistifyAgent {
    async fn get_guest(&self, guest_id: &str) -> Result<mistify_client::Guest> {
        let (guest, client) = self.resolve(guest_id).await?;
        busy_retry(|| client.get_guest(&guest.id)).await
    }

    async fn create_guest(&self, guest_id: &str) -> Result<String> {
        let (guest, client) = self.resolve(guest_id).await?;
        let body = self.agent_guest(&guest).await?;
        job_id(busy_retry(|| client.create_guest(&body)).await?)
    }

    async fn delete_guest(&self, guest_id: &str) -> Result<String> {
        let (guest, client) = self.resolve(guest_id).await?;
        job_id(busy_retry(|| client.guest_action(&guest.id, GuestAction::Delete)).await?)
    }

    async fn guest_action(&self, guest_id: &str, action: &str) -> Result<String> {
        let action = GuestAction::from_str(action)
            .map_err(|_| Error::Invalid(format!("invalid action: {action}")))?;
        let (guest, client) = self.resolve(guest_id).await?;
        job_id(busy_retry(|| client.guest_action(&guest.id, action)).await?)
    }

    async fn check_job_status(&self, guest_id: &str, job_id: &str) -> Result<bool> {
        if job_id.is_empty() {
            return Err(Error::Invalid("missing job id".into()));
        }
        let (_, client) = self.resolve(guest_id).await?;
        let job = busy_retry(|| client.get_job(job_id)).await?;
        match job.status {
            JobStatus::Complete => Ok(true),
            JobStatus::Error => Err(Error::JobFailed(job.message)),
            JobStatus::Queued | JobStatus::Running => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn netmasks() {
        assert_eq!(super::hex_netmask(24), "ffffff00");
        assert_eq!(super::hex_netmask(20), "fffff000");
        assert_eq!(super::hex_netmask(0), "00000000");
        assert_eq!(super::hex_netmask(32), "ffffffff");
    }
}
