//! Multi-key operations are single transactions: every key changes or none does, also
//! when a conflicting write lands between an operation's read and its commit.

mod common;

use std::collections::BTreeMap;

use etcd_client::DeleteOptions;
use lochness::{AllocIndex, Context, Error, Guest, Hypervisor, Network, Resources, Subnet};

struct World {
    net: Network,
    subnet: Subnet,
    hv: Hypervisor,
    flavor: lochness::Flavor,
}

async fn world(ctx: Context) -> World {
    let flavor = common::flavor(&ctx, 128, 1024, 1).await;
    let mut net = common::network(&ctx).await;
    let subnet = common::subnet(
        &ctx,
        &mut net,
        "192.168.100.0/24",
        "192.168.100.1",
        "192.168.100.10",
        "192.168.100.1",
    )
    .await;
    let mut hv = common::hypervisor(
        &ctx,
        Resources {
            memory: 16384,
            disk: 1048576,
            cpu: 32,
        },
    )
    .await;
    hv.add_subnet(&subnet, "mistify0").await.unwrap();
    World {
        net,
        subnet,
        hv,
        flavor,
    }
}

/// Every address key of the subnet: ip → owner.
async fn addresses(ctx: &Context, sid: &str) -> BTreeMap<String, String> {
    let prefix = format!("lochness/subnets/{sid}/addresses/");
    ctx.get_prefix(&prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|kv| (kv.key[prefix.len()..].to_string(), kv.text()))
        .collect()
}

/// The subnet's allocation index as stored (the union of its blocks), once built.
async fn index(ctx: &Context, sid: &str) -> Option<String> {
    ctx.subnet_index(sid).await.unwrap().map(|i| i.text())
}

#[tokio::test]
async fn add_and_remove_guest_write_every_key() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut w = world(ctx.clone()).await;
    let mut g = common::guest(&ctx, &w.flavor, &w.net);
    let metadata_rev = w.hv.revision();
    w.hv.add_guest(&mut g).await.unwrap();
    // Network (.0) and gateway (.1) are never handed out: the range starts at .1.
    assert_eq!(g.ip.unwrap().to_string(), "192.168.100.2");
    assert_eq!(g.bridge, "mistify0");
    let stored = ctx.guest(&g.id).await.unwrap();
    assert_eq!(
        (stored.hypervisor.as_str(), stored.subnet.as_str()),
        (w.hv.id.as_str(), w.subnet.id.as_str())
    );
    assert_eq!(stored.ip, g.ip);
    // The flavor's resources are added to the hypervisor's `allocated` key in the same
    // transaction; its metadata (the reported figures) is not written.
    let flavor_res = Resources {
        memory: 128,
        disk: 1024,
        cpu: 1,
    };
    assert_eq!(
        common::raw(&ctx, &format!("lochness/hypervisors/{}/allocated", w.hv.id))
            .await
            .as_deref(),
        Some(r#"{"memory":128,"disk":1024,"cpu":1}"#)
    );
    let stored_hv = ctx.hypervisor(&w.hv.id).await.unwrap();
    assert_eq!(stored_hv.allocated(), flavor_res);
    assert_eq!(w.hv.allocated(), flavor_res);
    assert_eq!(
        stored_hv.free(),
        Resources {
            memory: 16384 - 128,
            disk: 1048576 - 1024,
            cpu: 31
        }
    );
    assert_eq!(stored_hv.available_resources, stored_hv.total_resources);
    assert_eq!(stored_hv.revision(), metadata_rev, "metadata not written");
    assert_eq!(w.hv.revision(), metadata_rev);
    assert_eq!(
        common::raw(
            &ctx,
            &format!("lochness/hypervisors/{}/guests/{}", w.hv.id, g.id)
        )
        .await,
        Some(g.id.clone())
    );
    assert_eq!(
        addresses(&ctx, &w.subnet.id).await,
        BTreeMap::from([("192.168.100.2".to_string(), g.id.clone())])
    );
    assert_eq!(
        index(&ctx, &w.subnet.id).await.as_deref(),
        Some("192.168.100.2")
    );
    assert_eq!(
        ctx.hypervisor(&w.hv.id).await.unwrap().guests(),
        [g.id.clone()]
    );
    // Placing again is refused.
    assert!(matches!(
        w.hv.add_guest(&mut g).await,
        Err(Error::Refused(_))
    ));

    // A hypervisor with a guest cannot be destroyed.
    let mut loaded = ctx.hypervisor(&w.hv.id).await.unwrap();
    assert!(matches!(loaded.destroy().await, Err(Error::Refused(_))));
    // A subnet with a reservation cannot be destroyed.
    assert!(matches!(w.subnet.destroy().await, Err(Error::Refused(_))));
    assert!(
        common::raw(&ctx, &format!("lochness/subnets/{}/metadata", w.subnet.id))
            .await
            .is_some()
    );

    // Someone else's hypervisor cannot remove it.
    let mut other = common::hypervisor(&ctx, Resources::default()).await;
    assert!(matches!(
        other.remove_guest(&mut g).await,
        Err(Error::Refused(_))
    ));

    w.hv.remove_guest(&mut g).await.unwrap();
    let stored_hv = ctx.hypervisor(&w.hv.id).await.unwrap();
    assert_eq!(stored_hv.allocated(), Resources::default());
    assert_eq!(w.hv.allocated(), Resources::default());
    assert_eq!(stored_hv.free(), stored_hv.total_resources);
    assert_eq!(stored_hv.available_resources, stored_hv.total_resources);
    assert_eq!(stored_hv.revision(), metadata_rev, "metadata not written");
    let stored = ctx.guest(&g.id).await.unwrap();
    assert!(
        stored.hypervisor.is_empty()
            && stored.subnet.is_empty()
            && stored.ip.is_none()
            && stored.bridge.is_empty()
    );
    assert!(addresses(&ctx, &w.subnet.id).await.is_empty());
    assert_eq!(index(&ctx, &w.subnet.id).await.as_deref(), Some(""));
    assert!(
        common::keys(&ctx, &format!("lochness/hypervisors/{}/guests/", w.hv.id))
            .await
            .is_empty()
    );

    // Now both can go; the subnet takes its links with it. A stale copy that still
    // lists no guest is checked against etcd too.
    let mut again = common::guest(&ctx, &w.flavor, &w.net);
    let mut stale = ctx.hypervisor(&w.hv.id).await.unwrap();
    w.hv.add_guest(&mut again).await.unwrap();
    assert!(matches!(stale.destroy().await, Err(Error::Refused(_))));
    let mut seen = Vec::new();
    w.hv.for_each_guest(|g| {
        seen.push(g.id);
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(seen, [again.id.clone()]);
    w.hv.remove_guest(&mut again).await.unwrap();
    let mut loaded = ctx.hypervisor(&w.hv.id).await.unwrap();
    w.subnet.destroy().await.unwrap();
    assert!(
        common::keys(&ctx, &format!("lochness/subnets/{}/", w.subnet.id))
            .await
            .is_empty()
    );
    assert!(common::raw(
        &ctx,
        &format!("lochness/networks/{}/subnets/{}", w.net.id, w.subnet.id)
    )
    .await
    .is_none());
    assert!(common::raw(
        &ctx,
        &format!("lochness/hypervisors/{}/subnets/{}", w.hv.id, w.subnet.id)
    )
    .await
    .is_none());
    loaded.destroy().await.unwrap();
    assert!(
        common::keys(&ctx, &format!("lochness/hypervisors/{}/", w.hv.id))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn destroying_a_placed_guest_releases_everything() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut w = world(ctx.clone()).await;
    let mut g = common::guest(&ctx, &w.flavor, &w.net);
    w.hv.add_guest(&mut g).await.unwrap();
    g.destroy().await.unwrap();
    assert!(common::keys(&ctx, &format!("lochness/guests/{}/", g.id))
        .await
        .is_empty());
    assert!(addresses(&ctx, &w.subnet.id).await.is_empty());
    assert!(
        common::keys(&ctx, &format!("lochness/hypervisors/{}/guests/", w.hv.id))
            .await
            .is_empty()
    );
    let mut unsaved = common::guest(&ctx, &w.flavor, &w.net);
    assert!(matches!(unsaved.destroy().await, Err(Error::Invalid(_))));
}

#[tokio::test]
async fn injected_reservation_between_read_and_commit_is_retried() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let w = world(ctx.clone()).await;
    let (intruder, sid) = (ctx.clone(), w.subnet.id.clone());
    let hooked = ctx.with_commit_hook(async move {
        let mut s = intruder.subnet(&sid).await.unwrap();
        assert_eq!(
            s.reserve_address("intruder").await.unwrap().to_string(),
            "192.168.100.2"
        );
    });
    let mut hv = Hypervisor::clone(&w.hv);
    let mut hv_hooked = hooked.hypervisor(&hv.id).await.unwrap();
    let mut g = hooked.new_guest();
    g.flavor = w.flavor.id.clone();
    g.network = w.net.id.clone();
    hv_hooked.add_guest(&mut g).await.unwrap();
    assert_eq!(g.ip.unwrap().to_string(), "192.168.100.3");
    assert_eq!(
        addresses(&ctx, &w.subnet.id).await,
        BTreeMap::from([
            ("192.168.100.2".to_string(), "intruder".to_string()),
            ("192.168.100.3".to_string(), g.id.clone())
        ])
    );
    assert_eq!(
        index(&ctx, &w.subnet.id).await.as_deref(),
        Some("192.168.100.2-192.168.100.3")
    );
    hv.refresh().await.unwrap();
    assert_eq!(hv.guests(), [g.id.clone()]);
}

#[tokio::test]
async fn injected_guest_change_aborts_with_nothing_written() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let w = world(ctx.clone()).await;
    let mut g = common::guest(&ctx, &w.flavor, &w.net);
    g.save().await.unwrap();
    let (other, gid) = (ctx.clone(), g.id.clone());
    let hooked = ctx.with_commit_hook(async move {
        let mut copy = other.guest(&gid).await.unwrap();
        copy.metadata.insert("edited".into(), "yes".into());
        copy.save().await.unwrap();
    });
    let mut hv = hooked.hypervisor(&w.hv.id).await.unwrap();
    let mut hooked_guest: Guest = hooked.guest(&g.id).await.unwrap();
    let err = hv.add_guest(&mut hooked_guest).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    // None of the operation's keys changed.
    assert!(addresses(&ctx, &w.subnet.id).await.is_empty());
    assert_eq!(index(&ctx, &w.subnet.id).await.unwrap_or_default(), "");
    assert!(
        common::keys(&ctx, &format!("lochness/hypervisors/{}/guests/", w.hv.id))
            .await
            .is_empty()
    );
    let stored = ctx.guest(&g.id).await.unwrap();
    assert!(stored.hypervisor.is_empty() && stored.ip.is_none());
    assert_eq!(
        stored.metadata.get("edited").map(String::as_str),
        Some("yes")
    );
}

#[tokio::test]
async fn injected_unlink_of_the_subnet_leaves_nothing() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let w = world(ctx.clone()).await;
    let (other, hid, sid) = (ctx.clone(), w.hv.id.clone(), w.subnet.id.clone());
    let hooked = ctx.with_commit_hook(async move {
        let mut h = other.hypervisor(&hid).await.unwrap();
        let s = other.subnet(&sid).await.unwrap();
        h.remove_subnet(&s).await.unwrap();
    });
    let mut hv = hooked.hypervisor(&w.hv.id).await.unwrap();
    let mut g = common::guest(&hooked, &w.flavor, &w.net);
    let err = hv.add_guest(&mut g).await.unwrap_err();
    assert!(matches!(err, Error::NoSuitableSubnet), "{err}");
    assert!(
        common::raw(&ctx, &format!("lochness/guests/{}/metadata", g.id))
            .await
            .is_none()
    );
    assert!(addresses(&ctx, &w.subnet.id).await.is_empty());
    assert!(
        common::keys(&ctx, &format!("lochness/hypervisors/{}/guests/", w.hv.id))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn foreign_address_keys_are_respected_and_indexed() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut w = world(ctx.clone()).await;
    // Another tool (that does not know the index) took .2 and .3 after the index existed.
    let mut first = common::guest(&ctx, &w.flavor, &w.net);
    w.hv.add_guest(&mut first).await.unwrap();
    for ip in ["192.168.100.3", "192.168.100.4"] {
        ctx.client()
            .put(
                ctx.abs(&format!("lochness/subnets/{}/addresses/{ip}", w.subnet.id)),
                "legacy",
                None,
            )
            .await
            .unwrap();
    }
    let mut g = common::guest(&ctx, &w.flavor, &w.net);
    w.hv.add_guest(&mut g).await.unwrap();
    assert_eq!(g.ip.unwrap().to_string(), "192.168.100.5");
    let idx = AllocIndex::parse(&index(&ctx, &w.subnet.id).await.unwrap()).unwrap();
    for ip in [
        "192.168.100.2",
        "192.168.100.3",
        "192.168.100.4",
        "192.168.100.5",
    ] {
        assert!(idx.contains(ip.parse().unwrap()), "{ip}");
    }
    assert_eq!(
        addresses(&ctx, &w.subnet.id)
            .await
            .get("192.168.100.3")
            .map(String::as_str),
        Some("legacy")
    );
}

#[tokio::test]
async fn reserve_until_exhausted_and_release() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let w = world(ctx.clone()).await;
    let mut s = ctx.subnet(&w.subnet.id).await.unwrap();
    // Range .1–.10 minus the gateway .1: nine addresses.
    assert_eq!(s.available_addresses().len(), 9);
    let mut got = Vec::new();
    for i in 0..9 {
        got.push(s.reserve_address(&format!("owner{i}")).await.unwrap());
    }
    assert!(matches!(
        s.reserve_address("late").await,
        Err(Error::NoAvailableAddresses)
    ));
    assert_eq!(addresses(&ctx, &s.id).await.len(), 9);
    s.release_address(got[4]).await.unwrap();
    s.release_address("192.168.100.200".parse().unwrap())
        .await
        .unwrap();
    s.refresh().await.unwrap();
    assert_eq!(s.addresses().len(), 8);
    assert_eq!(s.available_addresses(), [got[4]]);
    assert_eq!(s.reserve_address("again").await.unwrap(), got[4]);
    // A range ending at 255.255.255.255 ends (the broadcast address is not handed out).
    let mut net = common::network(&ctx).await;
    let mut top = common::subnet(
        &ctx,
        &mut net,
        "255.255.255.0/24",
        "255.255.255.250",
        "255.255.255.255",
        "255.255.255.1",
    )
    .await;
    assert_eq!(top.available_addresses().len(), 5);
    for _ in 0..5 {
        top.reserve_address("x").await.unwrap();
    }
    assert!(matches!(
        top.reserve_address("x").await,
        Err(Error::NoAvailableAddresses)
    ));
    assert!(common::raw(
        &ctx,
        &format!("lochness/subnets/{}/addresses/255.255.255.255", top.id)
    )
    .await
    .is_none());
    // IPv6 subnets are refused.
    let mut v6 = ctx.new_subnet();
    v6.cidr = Some(lochness::codec::parse_cidr("fd00::/120").unwrap());
    v6.start_range = Some("fd00::10".parse().unwrap());
    v6.end_range = Some("fd00::20".parse().unwrap());
    assert!(matches!(v6.save().await, Err(Error::InvalidCidr(m)) if m.contains("IPv6")));
}

#[tokio::test]
async fn network_links_are_atomic() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut a = common::network(&ctx).await;
    let mut b = common::network(&ctx).await;
    let mut s = common::subnet(
        &ctx,
        &mut a,
        "10.1.0.0/24",
        "10.1.0.10",
        "10.1.0.20",
        "10.1.0.1",
    )
    .await;
    assert_eq!(ctx.subnet(&s.id).await.unwrap().network, a.id);
    assert_eq!(ctx.network(&a.id).await.unwrap().subnets(), [s.id.clone()]);
    // Moving it to b removes a's link in the same transaction.
    b.add_subnet(&mut s).await.unwrap();
    assert!(ctx.network(&a.id).await.unwrap().subnets().is_empty());
    assert_eq!(ctx.subnet(&s.id).await.unwrap().network, b.id);

    // A stale subnet copy: conflict, and no link is written.
    let mut stale = ctx.subnet(&s.id).await.unwrap();
    s.metadata.insert("x".into(), "y".into());
    s.save().await.unwrap();
    assert!(matches!(
        a.add_subnet(&mut stale).await,
        Err(Error::Conflict(_))
    ));
    assert!(ctx.network(&a.id).await.unwrap().subnets().is_empty());
    assert_eq!(ctx.subnet(&s.id).await.unwrap().network, b.id);

    // Missing network: not found, nothing written.
    let mut ghost = ctx.new_network();
    assert!(ghost.add_subnet(&mut s).await.is_err());
    assert!(common::raw(
        &ctx,
        &format!("lochness/networks/{}/subnets/{}", ghost.id, s.id)
    )
    .await
    .is_none());

    b.remove_subnet(&mut s).await.unwrap();
    assert!(ctx.subnet(&s.id).await.unwrap().network.is_empty());
    assert!(ctx.network(&b.id).await.unwrap().subnets().is_empty());

    // Hypervisor links need both ends.
    let mut h = common::hypervisor(&ctx, Resources::default()).await;
    let ghost_subnet = ctx.new_subnet();
    assert!(matches!(
        h.add_subnet(&ghost_subnet, "br0").await,
        Err(Error::NotFound(_))
    ));
    h.add_subnet(&s, "br0").await.unwrap();
    assert_eq!(
        ctx.hypervisor(&h.id)
            .await
            .unwrap()
            .subnets()
            .get(&s.id)
            .map(String::as_str),
        Some("br0")
    );
    h.remove_subnet(&s).await.unwrap();
    h.remove_subnet(&s).await.unwrap();
    assert!(ctx.hypervisor(&h.id).await.unwrap().subnets().is_empty());
}

#[tokio::test]
async fn a_full_hypervisor_is_refused() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let flavor = common::flavor(&ctx, 4096, 1024, 1).await;
    let mut net = common::network(&ctx).await;
    let s = common::subnet(
        &ctx,
        &mut net,
        "10.7.0.0/24",
        "10.7.0.10",
        "10.7.0.20",
        "10.7.0.1",
    )
    .await;
    let mut h = common::hypervisor(
        &ctx,
        Resources {
            memory: 6000,
            disk: 1 << 20,
            cpu: 8,
        },
    )
    .await;
    h.add_subnet(&s, "br0").await.unwrap();
    // A copy loaded before the first placement still thinks there is room.
    let mut stale = ctx.hypervisor(&h.id).await.unwrap();
    let mut first = common::guest(&ctx, &flavor, &net);
    h.add_guest(&mut first).await.unwrap();
    let mut second = common::guest(&ctx, &flavor, &net);
    assert!(matches!(
        h.add_guest(&mut second).await,
        Err(Error::InsufficientResources(_))
    ));
    assert!(stale.fits(&flavor.resources), "the stale copy sees room");
    assert!(matches!(
        stale.add_guest(&mut second).await,
        Err(Error::InsufficientResources(_))
    ));
    // The reported figure still says there is room (placement never decrements it; an
    // operator's edit of the metadata changes nothing): total − allocated refuses.
    let mut edited = ctx.hypervisor(&h.id).await.unwrap();
    assert_eq!(edited.available_resources.memory, 6000, "never decremented");
    edited.metadata.insert("edited".into(), "yes".into());
    edited.save().await.unwrap();
    assert!(matches!(
        edited.add_guest(&mut second).await,
        Err(Error::InsufficientResources(_))
    ));
    assert!(
        common::raw(&ctx, &format!("lochness/guests/{}/metadata", second.id))
            .await
            .is_none()
    );
    assert_eq!(addresses(&ctx, &s.id).await.len(), 1);
    let stored = ctx.hypervisor(&h.id).await.unwrap();
    assert_eq!(stored.allocated().memory, 4096);
    assert_eq!(stored.free().memory, 6000 - 4096);
    assert_eq!(stored.available_resources.memory, 6000);
}

#[tokio::test]
async fn add_guest_bad_input_writes_nothing() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut w = world(ctx.clone()).await;
    let other_net = common::network(&ctx).await;
    let cases: Vec<(&str, Guest)> = vec![
        ("unknown flavor", {
            let mut g = common::guest(&ctx, &w.flavor, &w.net);
            g.flavor = lochness::codec::new_id();
            g
        }),
        ("unknown network", {
            let mut g = common::guest(&ctx, &w.flavor, &w.net);
            g.network = lochness::codec::new_id();
            g
        }),
        (
            "network without a subnet here",
            common::guest(&ctx, &w.flavor, &other_net),
        ),
        ("invalid network id", {
            let mut g = common::guest(&ctx, &w.flavor, &w.net);
            g.network = "nope".into();
            g
        }),
    ];
    for (name, mut g) in cases {
        let err = w.hv.add_guest(&mut g).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotFound(_) | Error::NoSuitableSubnet | Error::Invalid(_)
            ),
            "{name}: {err}"
        );
        assert!(
            common::raw(&ctx, &format!("lochness/guests/{}/metadata", g.id))
                .await
                .is_none(),
            "{name}"
        );
    }
    assert!(addresses(&ctx, &w.subnet.id).await.is_empty());
    assert!(
        common::keys(&ctx, &format!("lochness/hypervisors/{}/guests/", w.hv.id))
            .await
            .is_empty()
    );
}

/// A store whose index was never kept in blocks (the Go library's: reservations only;
/// or our earlier single `alloc` key, here stale): the first placement builds the
/// blocks from the reservations, marks them complete, and hands out the lowest free
/// address; the single key's stale text is not trusted.
#[tokio::test]
async fn an_index_not_kept_in_blocks_is_built_from_the_reservations() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut w = world(ctx.clone()).await;
    let put = |key: String, value: &'static str| {
        let ctx = ctx.clone();
        async move { ctx.client().put(ctx.abs(&key), value, None).await.unwrap() }
    };
    for ip in ["192.168.100.2", "192.168.100.3"] {
        put(
            format!("lochness/subnets/{}/addresses/{ip}", w.subnet.id),
            "from-go",
        )
        .await;
    }
    put(
        format!("lochness/subnets/{}/alloc", w.subnet.id),
        "192.168.100.2",
    )
    .await;
    assert_eq!(index(&ctx, &w.subnet.id).await, None, "not built yet");
    let mut g = common::guest(&ctx, &w.flavor, &w.net);
    w.hv.add_guest(&mut g).await.unwrap();
    assert_eq!(g.ip.unwrap().to_string(), "192.168.100.4");
    assert_eq!(
        common::raw(&ctx, &format!("lochness/subnets/{}/alloc", w.subnet.id)).await,
        Some(lochness::keys::ALLOC_BUILT.to_string())
    );
    assert_eq!(
        common::raw(
            &ctx,
            &format!("lochness/subnets/{}/alloc/192.168.100.0", w.subnet.id)
        )
        .await
        .as_deref(),
        Some("192.168.100.2-192.168.100.4")
    );
    // Releasing the last address of a block deletes the block's key.
    let mut hv = ctx.hypervisor(&w.hv.id).await.unwrap();
    hv.remove_guest(&mut g).await.unwrap();
    for ip in ["192.168.100.2", "192.168.100.3"] {
        w.subnet.release_address(ip.parse().unwrap()).await.unwrap();
    }
    assert_eq!(index(&ctx, &w.subnet.id).await.as_deref(), Some(""));
    assert!(
        common::keys(&ctx, &format!("lochness/subnets/{}/alloc/", w.subnet.id))
            .await
            .is_empty()
    );
}

/// A release in a store whose index is not built (Go's) builds the index first and then
/// takes the address out of it: were the address key deleted alone, a process building
/// the index from reservations it read just before would write the freed address back
/// into its block, reserved for nobody.
#[tokio::test]
async fn a_release_before_the_index_is_built_builds_it_first() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut w = world(ctx.clone()).await;
    let sid = w.subnet.id.clone();
    let marker = format!("lochness/subnets/{sid}/alloc");
    for ip in ["192.168.100.2", "192.168.100.3"] {
        let key = ctx.abs(&format!("lochness/subnets/{sid}/addresses/{ip}"));
        ctx.client().put(key, "from-go", None).await.unwrap();
    }
    let mut g = common::guest(&ctx, &w.flavor, &w.net);
    w.hv.add_guest(&mut g).await.unwrap();
    assert_eq!(g.ip.unwrap().to_string(), "192.168.100.4");
    // The store as Go left it: reservations, no index.
    ctx.client()
        .delete(ctx.abs(&marker), Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(index(&ctx, &sid).await, None, "not built");
    // The guest's removal releases its address: the index is built, without it.
    let mut hv = ctx.hypervisor(&w.hv.id).await.unwrap();
    hv.remove_guest(&mut g).await.unwrap();
    assert_eq!(
        common::raw(&ctx, &marker).await.as_deref(),
        Some(lochness::keys::ALLOC_BUILT)
    );
    assert_eq!(
        index(&ctx, &sid).await.as_deref(),
        Some("192.168.100.2-192.168.100.3")
    );
    // The same through a plain release.
    ctx.client()
        .delete(ctx.abs(&marker), Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    w.subnet
        .release_address("192.168.100.3".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        common::raw(&ctx, &marker).await.as_deref(),
        Some(lochness::keys::ALLOC_BUILT)
    );
    assert_eq!(index(&ctx, &sid).await.as_deref(), Some("192.168.100.2"));
    assert_eq!(
        common::keys(&ctx, &format!("lochness/subnets/{sid}/addresses/")).await,
        vec![format!("lochness/subnets/{sid}/addresses/192.168.100.2")]
    );
}

/// A release that finds its block unreadable has the index built again before it goes
/// through: the block's other reservations stay in the index.
#[tokio::test]
async fn a_release_in_an_unreadable_block_rebuilds_it_first() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut w = world(ctx.clone()).await;
    let sid = w.subnet.id.clone();
    let first = w.subnet.reserve_address("one").await.unwrap();
    let second = w.subnet.reserve_address("two").await.unwrap();
    let block = format!("lochness/subnets/{sid}/alloc/192.168.100.0");
    ctx.client()
        .put(ctx.abs(&block), "not an index", None)
        .await
        .unwrap();
    w.subnet.release_address(first).await.unwrap();
    assert_eq!(
        common::raw(&ctx, &block).await,
        Some(second.to_string()),
        "the block holds the reservation left"
    );
    assert_eq!(index(&ctx, &sid).await, Some(second.to_string()));
}

/// Placers in four processes (four contexts) on one subnet: every placement succeeds,
/// no address is handed out twice, and the blocks of the index equal the reservations.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placers_of_several_processes_share_a_subnet_exactly() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let flavor = common::flavor(&ctx, 1, 1, 1).await;
    let mut net = common::network(&ctx).await;
    let subnet = common::subnet(
        &ctx,
        &mut net,
        "10.60.0.0/22",
        "10.60.0.10",
        "10.60.3.250",
        "10.60.0.1",
    )
    .await;
    let res = Resources {
        memory: 1 << 20,
        disk: 1 << 30,
        cpu: 1 << 10,
    };
    let mut hvs = Vec::new();
    for _ in 0..16 {
        let mut h = common::hypervisor(&ctx, res).await;
        h.add_subnet(&subnet, "br0").await.unwrap();
        hvs.push(h.id.clone());
    }
    let mut tasks = Vec::new();
    for p in 0..4 {
        // A process of its own: a context of its own on the same prefix.
        let own = Context::new(&[common::etcd_url()], Some(ctx.prefix()))
            .await
            .unwrap();
        for t in 0..8 {
            let (own, hvs) = (own.clone(), hvs.clone());
            let (flavor, net) = (flavor.clone(), net.clone());
            tasks.push(tokio::spawn(async move {
                let mut placed = Vec::new();
                for i in 0..12 {
                    let mut g = common::guest(&own, &flavor, &net);
                    let mut h = own
                        .hypervisor(&hvs[(p * 8 + t + i) % hvs.len()])
                        .await
                        .unwrap();
                    h.add_guest(&mut g).await.unwrap();
                    placed.push(g.ip.unwrap().to_string());
                }
                placed
            }));
        }
    }
    let mut ips = std::collections::BTreeSet::new();
    for t in tasks {
        for ip in t.await.unwrap() {
            assert!(ips.insert(ip.clone()), "{ip} handed out twice");
        }
    }
    assert_eq!(ips.len(), 4 * 8 * 12);
    let reserved: std::collections::BTreeSet<String> =
        addresses(&ctx, &subnet.id).await.into_keys().collect();
    assert_eq!(reserved, ips, "the reservations are the guests' addresses");
    let idx = ctx.subnet_index(&subnet.id).await.unwrap().expect("built");
    assert_eq!(
        idx.len(),
        ips.len(),
        "the index holds exactly the reservations"
    );
    for ip in &ips {
        assert!(
            idx.contains(ip.parse().unwrap()),
            "{ip} missing from the index"
        );
    }
}
