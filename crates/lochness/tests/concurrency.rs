//! 16 placers, 2,000 guests, 50 hypervisors sharing 2 subnets: every key read back.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use lochness::{ClusterView, Resources, DEFAULT_CANDIDATE_FUNCTIONS};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_placers_two_thousand_guests() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    const TASKS: usize = 16;
    const GUESTS: usize = 2000;
    const HYPERVISORS: usize = 50;
    let flavor = common::flavor(&ctx, 512, 4096, 1).await;
    let mut net = common::network(&ctx).await;
    let s1 = common::subnet(
        &ctx,
        &mut net,
        "10.10.0.0/21",
        "10.10.0.10",
        "10.10.7.250",
        "10.10.0.1",
    )
    .await;
    let s2 = common::subnet(
        &ctx,
        &mut net,
        "10.20.0.0/21",
        "10.20.0.10",
        "10.20.7.250",
        "10.20.0.1",
    )
    .await;
    for _ in 0..HYPERVISORS {
        let mut h = common::hypervisor(
            &ctx,
            Resources {
                memory: 1 << 20,
                disk: 1 << 30,
                cpu: 1024,
            },
        )
        .await;
        h.add_subnet(&s1, "br0").await.unwrap();
        h.add_subnet(&s2, "br1").await.unwrap();
        common::mark_alive(&ctx, &h.id).await;
    }
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let ctx = ctx.clone();
        let (flavor, network) = (flavor.id.clone(), net.id.clone());
        tasks.push(tokio::spawn(async move {
            let view = ClusterView::load(&ctx).await.unwrap();
            let mut placed = Vec::new();
            for _ in 0..GUESTS / TASKS {
                let mut g = ctx.new_guest();
                g.flavor = flavor.clone();
                g.network = network.clone();
                let candidates = g
                    .candidates_in(&view, &DEFAULT_CANDIDATE_FUNCTIONS)
                    .unwrap();
                let mut h = candidates[0].clone();
                h.add_guest(&mut g).await.unwrap();
                placed.push((g.id.clone(), h.id.clone()));
            }
            (t, placed)
        }));
    }
    let mut placed = BTreeMap::new();
    for task in tasks {
        let (_, list) = task.await.unwrap();
        placed.extend(list);
    }
    eprintln!("placed {} guests in {:?}", placed.len(), start.elapsed());
    assert_eq!(placed.len(), GUESTS);

    // Read everything back.
    let guests: BTreeMap<String, lochness::Guest> = ctx
        .guests()
        .await
        .unwrap()
        .into_iter()
        .map(|g| (g.id.clone(), g))
        .collect();
    assert_eq!(guests.len(), GUESTS);
    let mut all_ips = BTreeSet::new();
    for (sub, cidr) in [(&s1, "10.10.0.0/21"), (&s2, "10.20.0.0/21")] {
        let prefix = format!("lochness/subnets/{}/addresses/", sub.id);
        let mut reserved = BTreeSet::new();
        for kv in ctx.get_prefix(&prefix).await.unwrap() {
            let ip: Ipv4Addr = kv.key[prefix.len()..].parse().unwrap();
            let owner = kv.text();
            // No reservation without its guest, and the guest agrees.
            let g = guests
                .get(&owner)
                .unwrap_or_else(|| panic!("{ip} reserved by unknown {owner}"));
            assert_eq!(g.ip, Some(ip.into()), "{owner}");
            assert_eq!(g.subnet, sub.id);
            let net = lochness::codec::parse_cidr(cidr).unwrap();
            assert!(net.contains(ip.into()), "{ip} outside {cidr}");
            assert!(
                sub.start_range.unwrap() <= std::net::IpAddr::from(ip)
                    && std::net::IpAddr::from(ip) <= sub.end_range.unwrap()
            );
            assert!(!sub.is_excluded(ip));
            assert!(all_ips.insert(ip), "{ip} handed out twice");
            reserved.insert(u32::from(ip));
        }
        // The index agrees with the keys exactly.
        let idx = ctx.subnet_index(&sub.id).await.unwrap().expect("built");
        assert_eq!(idx.len(), reserved.len());
        for ip in &reserved {
            assert!(idx.contains(Ipv4Addr::from(*ip)));
        }
    }
    assert_eq!(all_ips.len(), GUESTS, "every guest has exactly one address");
    // Hypervisor links match the guests' hypervisor fields exactly.
    let mut links = BTreeMap::new();
    for h in ctx.hypervisors().await.unwrap() {
        // Placement added each guest's flavor to its hypervisor's `allocated`, exactly
        // once, and left the reported figures alone.
        let n = h.guests().len() as u64;
        let want = Resources {
            memory: 512 * n,
            disk: 4096 * n,
            cpu: n as u32,
        };
        assert_eq!(h.allocated(), want, "{}", h.id);
        assert_eq!(h.available_resources, h.total_resources, "{}", h.id);
        for g in h.guests() {
            assert!(
                links.insert(g.clone(), h.id.clone()).is_none(),
                "{g} linked twice"
            );
        }
    }
    let fields: BTreeMap<String, String> = guests
        .values()
        .map(|g| (g.id.clone(), g.hypervisor.clone()))
        .collect();
    assert_eq!(links, fields);
    assert_eq!(links, placed);
}
