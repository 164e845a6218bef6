//! Heartbeats with leases, resources, the hypervisor id helpers and the
//! `lochness-heartbeat` binary.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lochness::{Error, Resources};

async fn wait_until<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn heartbeat_key_lives_with_keepalive_and_expires_without() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let h = common::hypervisor(&ctx, Resources::default()).await;
    let h2 = common::hypervisor(&ctx, Resources::default()).await;
    assert!(!ctx.is_alive(&h.id).await.unwrap());
    assert!(!ctx.hypervisor(&h.id).await.unwrap().is_alive());
    // One process beats for two hypervisors.
    let mut hb = ctx.heartbeat(&h.id, Duration::from_secs(2)).await.unwrap();
    let hb2 = ctx.heartbeat(&h2.id, Duration::from_secs(2)).await.unwrap();
    let value = common::raw(&ctx, &format!("lochness/hypervisors/{}/heartbeat", h.id))
        .await
        .unwrap();
    assert!(value.ends_with(" +0000 UTC"), "{value}");
    assert!(ctx.hypervisor(&h.id).await.unwrap().is_alive());
    // Well past the TTL the keep-alive holds it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    hb.beat().await.unwrap();
    assert!(ctx.is_alive(&h.id).await.unwrap());
    assert!(ctx.is_alive(&h2.id).await.unwrap());
    // Dropping stops the keep-alive: gone after the TTL.
    drop(hb);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            !ctx.is_alive(&h.id).await.unwrap()
        })
        .await
    );
    assert!(
        ctx.is_alive(&h2.id).await.unwrap(),
        "the other hypervisor's beat is independent"
    );
    // stop() removes the key at once.
    hb2.stop().await.unwrap();
    assert!(!ctx.is_alive(&h2.id).await.unwrap());
    // Unknown hypervisor.
    assert!(matches!(
        ctx.heartbeat(&lochness::codec::new_id(), Duration::from_secs(2))
            .await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn update_resources_subtracts_guest_flavors() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let flavor = common::flavor(&ctx, 512, 4096, 1).await;
    let mut net = common::network(&ctx).await;
    let s = common::subnet(
        &ctx,
        &mut net,
        "10.3.0.0/24",
        "10.3.0.10",
        "10.3.0.20",
        "10.3.0.1",
    )
    .await;
    let mut h = common::hypervisor(
        &ctx,
        Resources {
            memory: 4096,
            disk: 1 << 20,
            cpu: 4,
        },
    )
    .await;
    h.add_subnet(&s, "br0").await.unwrap();
    for _ in 0..2 {
        let mut g = common::guest(&ctx, &flavor, &net);
        h.add_guest(&mut g).await.unwrap();
    }
    h.set_config("guestDiskDir", "/").await.unwrap();
    // A stale copy still updates (re-read and retried).
    let mut stale = ctx.hypervisor(&h.id).await.unwrap();
    h.metadata.insert("edited".into(), "1".into());
    h.save().await.unwrap();
    stale.update_resources().await.unwrap();
    let stored = ctx.hypervisor(&h.id).await.unwrap();
    let t = stored.total_resources;
    assert!(t.memory > 0 && t.disk > 0 && t.cpu > 0, "{t:?}");
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    assert_eq!(t.cpu as usize, cpus);
    assert_eq!(
        stored.available_resources,
        t.saturating_sub(&Resources {
            memory: 1024,
            disk: 8192,
            cpu: 2
        })
    );
    assert_eq!(
        stored.metadata.get("edited").map(String::as_str),
        Some("1"),
        "the concurrent edit survives"
    );
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn heartbeat_cmd(url: &str, prefix: &str, id: &str, ttl: &str, interval: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lochness-heartbeat"));
    cmd.args([
        "--etcd",
        url,
        "--prefix",
        prefix,
        "--hypervisor-id",
        id,
        "--ttl",
        ttl,
        "--interval",
        interval,
        "--guest-disk-dir",
        "/",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

#[tokio::test]
async fn lochness_heartbeat_keeps_a_hypervisor_alive() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let h = common::hypervisor(&ctx, Resources::default()).await;
    let url = common::etcd_url();
    let prefix = ctx.prefix().to_string();
    let mut child = Child(
        heartbeat_cmd(url, &prefix, &h.id, "3s", "1")
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            ctx.is_alive(&h.id).await.unwrap()
        })
        .await
    );
    let first = common::raw(&ctx, &format!("lochness/hypervisors/{}/heartbeat", h.id))
        .await
        .unwrap();
    // Alive well past the TTL, with fresh values and resources reported.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(child.0.try_wait().unwrap().is_none(), "still running");
    let later = common::raw(&ctx, &format!("lochness/hypervisors/{}/heartbeat", h.id))
        .await
        .unwrap();
    assert_ne!(first, later);
    assert!(ctx.hypervisor(&h.id).await.unwrap().total_resources.memory > 0);
    // SIGTERM: the lease is revoked and the key goes at once.
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!ctx.is_alive(&h.id).await.unwrap());
}

#[tokio::test]
async fn lochness_heartbeat_refuses_bad_settings() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let h = common::hypervisor(&ctx, Resources::default()).await;
    let url = common::etcd_url();
    let prefix = ctx.prefix().to_string();
    for (id, ttl, interval, why) in [
        ("not-a-uuid", "10", "5", "invalid"),
        (lochness::codec::new_id().as_str(), "10", "5", "not found"),
        (h.id.as_str(), "5", "10", "ttl must be greater"),
        (h.id.as_str(), "10x", "5", "invalid duration"),
    ] {
        let out = heartbeat_cmd(url, &prefix, id, ttl, interval)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{why}");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(err.contains(why), "{why}: {err}");
    }
    assert!(!ctx.is_alive(&h.id).await.unwrap());
}
