//! Test harness: a private etcd per test, the daemons started as processes on free
//! loopback ports against it, a small HTTP client, and a dump of the store to check that
//! a refused request changed nothing.
#![allow(dead_code)]

use std::collections::BTreeMap;

use lochness::Context;
use mistify_e2e::etcd::Etcd;
use mistify_e2e::{free_port, Daemon};

/// Which daemon binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Guests,
    Hypervisors,
    Networks,
}

impl Which {
    /// The program's name.
    pub fn name(self) -> &'static str {
        match self {
            Which::Guests => "cguestd",
            Which::Hypervisors => "chypervisord",
            Which::Networks => "cnetworkd",
        }
    }

    /// The built binary (tests never run cargo: the build phase built it).
    pub fn binary(self) -> std::path::PathBuf {
        mistify_e2e::binary(self.name())
    }
}

/// An etcd and the daemons started on it (all stopped on drop).
pub struct Cluster {
    pub etcd: Etcd,
    daemons: Vec<(Which, Daemon)>,
}

impl Cluster {
    /// A fresh etcd, or `None` when the etcd suite is skipped.
    pub fn new() -> Option<Cluster> {
        if mistify_e2e::skipped("etcd") {
            return None;
        }
        Some(Cluster {
            etcd: Etcd::start("lochness-api-etcd"),
            daemons: Vec::new(),
        })
    }

    /// Starts `which` on a free port with `--kv` this etcd and `extra` flags.
    pub fn start(&mut self, which: Which, extra: &[&str]) -> String {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "--kv".into(),
            self.etcd.url.clone(),
            "--log-level".into(),
            "warn".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let daemon = Daemon::start(&which.binary(), &args, port);
        let url = daemon.url();
        self.daemons.push((which, daemon));
        url
    }

    /// A library context on this etcd.
    pub async fn ctx(&self) -> Context {
        Context::new(&[self.etcd.url.as_str()], None).await.unwrap()
    }
}

/// Every key and value under `lochness/`.
pub async fn dump(ctx: &Context) -> BTreeMap<String, String> {
    ctx.get_prefix(lochness::keys::ROOT)
        .await
        .unwrap()
        .into_iter()
        .map(|kv| (kv.key.clone(), kv.text()))
        .collect()
}

/// One answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    }

    /// The body's `message`.
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// `method url` with `body` (sent as JSON when given).
pub async fn send(method: &str, url: &str, body: Option<&str>) -> Reply {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), url);
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    Reply {
        status,
        headers,
        text,
    }
}

pub async fn get(url: &str) -> Reply {
    send("GET", url, None).await
}

pub async fn post(url: &str, body: &str) -> Reply {
    send("POST", url, Some(body)).await
}

pub async fn patch(url: &str, body: &str) -> Reply {
    send("PATCH", url, Some(body)).await
}

pub async fn delete(url: &str) -> Reply {
    send("DELETE", url, None).await
}

/// Sends the request and asserts it was refused with `status` and a message containing
/// `needle`, and that the store is exactly as before.
pub async fn refused(
    ctx: &Context,
    method: &str,
    url: &str,
    body: Option<&str>,
    status: u16,
    needle: &str,
) -> Reply {
    let before = dump(ctx).await;
    let reply = send(method, url, body).await;
    assert_eq!(
        reply.status, status,
        "{method} {url} {body:?}: {}",
        reply.text
    );
    assert!(
        reply.message().contains(needle),
        "{method} {url}: message {:?} does not contain {needle:?}",
        reply.message()
    );
    let after = dump(ctx).await;
    assert_eq!(before, after, "{method} {url} changed the store");
    reply
}

/// Seeds a small cluster through the library: a flavor, a network with a subnet, a
/// firewall group, a VLAN group, a hypervisor linked to the subnet.
pub struct Seed {
    pub flavor: String,
    pub network: String,
    pub subnet: String,
    pub fwgroup: String,
    pub vlangroup: String,
    pub hypervisor: String,
}

pub async fn seed(ctx: &Context) -> Seed {
    let mut flavor = ctx.new_flavor();
    flavor.image = "debian-12".into();
    flavor.resources = lochness::Resources {
        memory: 512,
        disk: 1024,
        cpu: 1,
    };
    flavor.save().await.unwrap();
    let mut network = ctx.new_network();
    network.save().await.unwrap();
    let mut subnet = ctx.new_subnet();
    subnet.cidr = Some(lochness::codec::parse_cidr("10.1.0.0/24").unwrap());
    subnet.start_range = Some("10.1.0.10".parse().unwrap());
    subnet.end_range = Some("10.1.0.200".parse().unwrap());
    subnet.gateway = Some("10.1.0.1".parse().unwrap());
    subnet.save().await.unwrap();
    network.add_subnet(&mut subnet).await.unwrap();
    let mut fw = ctx.new_fwgroup();
    fw.save().await.unwrap();
    let mut vg = ctx.new_vlangroup();
    vg.save().await.unwrap();
    let mut h = ctx.new_hypervisor();
    h.ip = Some("192.168.1.10".parse().unwrap());
    h.total_resources = lochness::Resources {
        memory: 16384,
        disk: 1 << 20,
        cpu: 16,
    };
    h.available_resources = h.total_resources;
    h.save().await.unwrap();
    h.add_subnet(&subnet, "br0").await.unwrap();
    Seed {
        flavor: flavor.id,
        network: network.id,
        subnet: subnet.id,
        fwgroup: fw.id,
        vlangroup: vg.id,
        hypervisor: h.id,
    }
}
