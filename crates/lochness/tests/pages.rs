//! Listings a page at a time against a real etcd: following `next` visits every entity
//! exactly once, also while entities are created meanwhile; filters; hypervisor pages
//! with many guest links; the operator edits of `admin` that refuse what is in use.

mod common;

use std::collections::BTreeSet;

use lochness::{Error, GuestFilter, HypervisorFilter, PageRequest, Resources};

fn page(after: Option<String>, limit: usize) -> PageRequest {
    PageRequest {
        after,
        limit: Some(limit),
    }
}

#[tokio::test]
async fn pages_visit_every_guest_once_while_guests_are_added() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let flavor = common::flavor(&ctx, 512, 1024, 1).await;
    let other = common::flavor(&ctx, 256, 512, 1).await;
    let network = common::network(&ctx).await;
    let mut ids = BTreeSet::new();
    for i in 0..25 {
        let mut g = common::guest(&ctx, if i % 5 == 0 { &other } else { &flavor }, &network);
        g.save().await.unwrap();
        ids.insert(g.id.clone());
    }
    let mut seen = Vec::new();
    let mut after = None;
    let mut added = BTreeSet::new();
    loop {
        let p = ctx
            .guests_page(&page(after.clone(), 4), &GuestFilter::default())
            .await
            .unwrap();
        assert!(p.items.len() <= 4);
        seen.extend(p.items.iter().map(|g| g.id.clone()));
        // Meanwhile, another guest appears (anywhere in the key order).
        if added.len() < 5 {
            let mut g = common::guest(&ctx, &flavor, &network);
            g.save().await.unwrap();
            added.insert(g.id.clone());
        }
        match p.next {
            Some(next) => {
                assert_eq!(Some(&next), p.items.last().map(|g| &g.id));
                after = Some(next);
            }
            None => break,
        }
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "an entity came twice: {seen:?}");
    assert!(
        ids.is_subset(&unique),
        "every guest present throughout is listed"
    );
    assert!(unique.is_subset(&ids.union(&added).cloned().collect()));
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "pages come in id order");

    // A filter keeps only the matching guests, pages included.
    let filter = GuestFilter {
        flavor: Some(other.id.clone()),
        ..GuestFilter::default()
    };
    let first = ctx.guests_page(&page(None, 3), &filter).await.unwrap();
    assert_eq!(first.items.len(), 3);
    assert!(first.items.iter().all(|g| g.flavor == other.id));
    let rest = ctx
        .guests_page(&page(first.next.clone(), 3), &filter)
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2);
    assert_eq!(rest.next, None, "no more matches: no next page");
    let all = ctx.guests_page(&PageRequest::all(), &filter).await.unwrap();
    assert_eq!(all.items.len(), 5);
    assert_eq!(
        ctx.first_guest(&filter).await.unwrap().map(|g| g.id),
        first.items.first().map(|g| g.id.clone())
    );
}

/// Every id of a listing, following `next` with pages of `limit` (`None`: one listing).
async fn walk<F, Fut>(limit: Option<usize>, read: F) -> Vec<String>
where
    F: Fn(PageRequest) -> Fut,
    Fut: std::future::Future<Output = lochness::Page<String>>,
{
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let p = read(PageRequest {
            after: after.clone(),
            limit,
        })
        .await;
        if let Some(l) = limit {
            assert!(p.items.len() <= l);
        }
        seen.extend(p.items);
        match p.next {
            Some(next) => after = Some(next),
            None => return seen,
        }
    }
}

/// Reads bounded in the id space (the default) give the same pages as reads to the
/// family's end: ids spread over the id space, ids outside it (upper-case, not hex,
/// short), trees of one key (guests) and of many (hypervisors with guest links).
#[tokio::test]
async fn bounded_reads_list_what_reads_to_the_end_list() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let flavor = common::flavor(&ctx, 1, 1, 0).await;
    let network = common::network(&ctx).await;
    let mut sample = common::guest(&ctx, &flavor, &network);
    sample.save().await.unwrap();
    let json = sample.to_json();
    let mut guests: BTreeSet<String> = BTreeSet::from([sample.id.clone()]);
    guests.extend((0..700).map(|_| lochness::codec::new_id()));
    let odd = [
        "ABCDEF01-1111-4111-8111-000000000001",
        "zz-not-hex",
        "abc",
        "0000000",
        "ffffffff",
    ];
    guests.extend(odd.iter().map(|s| s.to_string()));
    let puts: Vec<etcd_client::TxnOp> = guests
        .iter()
        .filter(|id| **id != sample.id)
        .map(|id| {
            let key = ctx.abs(&format!("lochness/guests/{id}/metadata"));
            etcd_client::TxnOp::put(key, json.as_str(), None)
        })
        .collect();
    for chunk in puts.chunks(100) {
        let txn = etcd_client::Txn::new().and_then(chunk.to_vec());
        ctx.client().txn(txn).await.unwrap();
    }
    let expected: Vec<String> = guests.iter().cloned().collect();
    for limit in [Some(7), Some(250), Some(1000), None] {
        let mut both = Vec::new();
        for bounded in [true, false] {
            ctx.set_bounded_reads(bounded);
            let ctx = &ctx;
            both.push(
                walk(limit, |page| async move {
                    let p = ctx
                        .guests_page(&page, &GuestFilter::default())
                        .await
                        .unwrap();
                    lochness::Page {
                        items: p.items.into_iter().map(|g| g.id).collect(),
                        next: p.next,
                    }
                })
                .await,
            );
        }
        assert_eq!(both[0], expected, "bounded reads, pages of {limit:?}");
        assert_eq!(both[1], expected, "reads to the end, pages of {limit:?}");
    }

    // Hypervisors: trees of many keys, read keys-only.
    let mut hvs = BTreeSet::new();
    for _ in 0..40 {
        let h = common::hypervisor(&ctx, Resources::default()).await;
        let links: Vec<etcd_client::TxnOp> = (0..15)
            .map(|_| {
                let key = ctx.abs(&format!(
                    "lochness/hypervisors/{}/guests/{}",
                    h.id,
                    lochness::codec::new_id()
                ));
                etcd_client::TxnOp::put(key, "", None)
            })
            .collect();
        ctx.client()
            .txn(etcd_client::Txn::new().and_then(links))
            .await
            .unwrap();
        hvs.insert(h.id);
    }
    let hv_json = ctx
        .hypervisor(hvs.first().unwrap())
        .await
        .unwrap()
        .to_json();
    for id in ["ABCDEF01-2222-4222-8222-000000000002", "zz-hv"] {
        let key = ctx.abs(&format!("lochness/hypervisors/{id}/metadata"));
        ctx.client().put(key, hv_json.as_str(), None).await.unwrap();
        hvs.insert(id.to_string());
    }
    let expected: Vec<String> = hvs.iter().cloned().collect();
    for limit in [Some(1), Some(4), None] {
        for bounded in [true, false] {
            ctx.set_bounded_reads(bounded);
            let ctx = &ctx;
            let seen = walk(limit, |page| async move {
                let p = ctx
                    .hypervisors_page(&page, &HypervisorFilter::default())
                    .await
                    .unwrap();
                lochness::Page {
                    items: p.items.into_iter().map(|h| h.id).collect(),
                    next: p.next,
                }
            })
            .await;
            assert_eq!(seen, expected, "bounded {bounded}, pages of {limit:?}");
        }
    }
}

#[tokio::test]
async fn hypervisor_pages_skip_guest_links_and_filter_liveness_and_subnets() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut network = common::network(&ctx).await;
    let subnet = common::subnet(
        &ctx,
        &mut network,
        "10.9.0.0/16",
        "10.9.0.10",
        "10.9.200.200",
        "10.9.0.1",
    )
    .await;
    let flavor = common::flavor(&ctx, 1, 1, 0).await;
    let big = Resources {
        memory: 1 << 20,
        disk: 1 << 30,
        cpu: 1000,
    };
    let mut hvs = Vec::new();
    for i in 0..7 {
        let mut h = common::hypervisor(&ctx, big).await;
        if i % 2 == 0 {
            h.add_subnet(&subnet, "br0").await.unwrap();
            common::mark_alive(&ctx, &h.id).await;
        }
        hvs.push(h);
    }
    // One hypervisor holds more guest links than a keys-only read takes at once.
    for _ in 0..600 {
        let mut g = common::guest(&ctx, &flavor, &network);
        hvs[0].add_guest(&mut g).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let p = ctx
            .hypervisors_page(&page(after, 2), &HypervisorFilter::default())
            .await
            .unwrap();
        seen.extend(p.items.iter().map(|h| h.id.clone()));
        after = p.next;
        if after.is_none() {
            break;
        }
    }
    let mut want: Vec<String> = hvs.iter().map(|h| h.id.clone()).collect();
    want.sort();
    assert_eq!(seen, want);

    let alive = ctx
        .hypervisors_page(
            &PageRequest::all(),
            &HypervisorFilter {
                alive: Some(true),
                ..HypervisorFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(alive.items.len(), 4);
    assert!(alive.items.iter().all(|h| h.is_alive()));
    let dead = ctx
        .hypervisors_page(
            &page(None, 10),
            &HypervisorFilter {
                alive: Some(false),
                subnet: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(dead.items.len(), 3);
    let linked = ctx
        .hypervisors_page(
            &page(None, 3),
            &HypervisorFilter {
                alive: None,
                subnet: Some(subnet.id.clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(linked.items.len(), 3);
    assert!(linked.next.is_some());

    // The guests of one hypervisor, read through its links.
    let on_first = GuestFilter {
        hypervisor: Some(hvs[0].id.clone()),
        ..GuestFilter::default()
    };
    let mut count = 0;
    let mut after = None;
    loop {
        let p = ctx.guests_page(&page(after, 250), &on_first).await.unwrap();
        assert!(p.items.iter().all(|g| g.hypervisor == hvs[0].id));
        count += p.items.len();
        after = p.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(count, 600);
    assert_eq!(ctx.count_keys("lochness/guests/").await.unwrap(), 600);
}

#[tokio::test]
async fn deletes_are_refused_while_in_use() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut flavor = common::flavor(&ctx, 512, 1024, 1).await;
    let mut network = common::network(&ctx).await;
    let mut subnet = common::subnet(
        &ctx,
        &mut network,
        "10.8.0.0/24",
        "10.8.0.10",
        "10.8.0.20",
        "10.8.0.1",
    )
    .await;
    let mut fw = ctx.new_fwgroup();
    fw.save().await.unwrap();
    let mut g = common::guest(&ctx, &flavor, &network);
    g.fwgroup = fw.id.clone();
    g.save().await.unwrap();

    let refused = |r: lochness::Result<()>| matches!(r, Err(Error::Refused(_)));
    assert!(refused(flavor.destroy().await));
    assert!(refused(network.destroy().await), "subnets and guests");
    assert!(refused(fw.destroy().await));
    let mut changed = flavor.clone();
    changed.resources.memory = 1024;
    assert!(refused(changed.save_unless_used(flavor.resources).await));
    let mut image = flavor.clone();
    image.image = "other".into();
    image.save_unless_used(flavor.resources).await.unwrap();
    flavor = image;

    // A subnet with a hypervisor link is refused; detached and unlinked, it goes.
    let mut h = common::hypervisor(&ctx, Resources::default()).await;
    h.add_subnet(&subnet, "br0").await.unwrap();
    assert!(refused(subnet.destroy_unused().await));
    h.remove_subnet(&subnet).await.unwrap();
    network.detach(&mut subnet).await.unwrap();
    assert!(network.subnets().is_empty());
    subnet.destroy_unused().await.unwrap();

    g.destroy().await.unwrap();
    flavor.destroy().await.unwrap();
    network.destroy().await.unwrap();
    fw.destroy().await.unwrap();
    assert!(matches!(
        ctx.flavor(&flavor.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        ctx.network(&network.id).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn subnets_of_a_network_do_not_overlap() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let network = common::network(&ctx).await;
    let mk = |cidr: &str, start: &str, end: &str| {
        let mut s = ctx.new_subnet();
        s.network = network.id.clone();
        s.cidr = Some(lochness::codec::parse_cidr(cidr).unwrap());
        s.start_range = Some(start.parse().unwrap());
        s.end_range = Some(end.parse().unwrap());
        s
    };
    let mut a = mk("10.7.0.0/24", "10.7.0.10", "10.7.0.20");
    ctx.create_subnet(&mut a).await.unwrap();
    let mut b = mk("10.7.0.128/25", "10.7.0.130", "10.7.0.140");
    assert!(matches!(
        ctx.create_subnet(&mut b).await,
        Err(Error::Invalid(_))
    ));
    let mut c = mk("10.7.1.0/24", "10.7.1.10", "10.7.1.20");
    ctx.create_subnet(&mut c).await.unwrap();
    let n = ctx.network(&network.id).await.unwrap();
    assert_eq!(n.subnets().len(), 2);
    // Widening c over a is refused; a reservation outside a new range too.
    let mut wide = ctx.subnet(&c.id).await.unwrap();
    wide.cidr = Some(lochness::codec::parse_cidr("10.7.0.0/16").unwrap());
    assert!(matches!(wide.save_checked().await, Err(Error::Invalid(_))));
    let mut a = ctx.subnet(&a.id).await.unwrap();
    let ip = a.reserve_address("someone").await.unwrap();
    assert_eq!(ip.to_string(), "10.7.0.10");
    let mut narrow = ctx.subnet(&a.id).await.unwrap();
    narrow.start_range = Some("10.7.0.11".parse().unwrap());
    assert!(matches!(
        narrow.save_checked().await,
        Err(Error::Refused(_))
    ));
    let mut fine = ctx.subnet(&a.id).await.unwrap();
    fine.end_range = Some("10.7.0.30".parse().unwrap());
    fine.save_checked().await.unwrap();
    assert_eq!(
        ctx.subnet_reservations(&a.id).await.unwrap().len(),
        1,
        "the reservation stays"
    );
}
