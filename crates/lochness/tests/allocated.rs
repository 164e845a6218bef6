//! Resource accounting: each hypervisor's `allocated` key holds the sum of the flavors of
//! its guests. It is built on first use from a store written by the Go library, kept
//! exact by placement and removal (also with several placers at once), and a guest fits
//! only within both `total − allocated` and the reported `available`. Placement never
//! writes the hypervisor's metadata, so heartbeats do not contend with it.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use etcd_client::{Txn, TxnOp};
use lochness::{
    candidate_has_resources, ClusterView, Context, Error, Flavor, Guest, Hypervisor, Network,
    Resources, DEFAULT_CANDIDATE_FUNCTIONS,
};

fn res(memory: u64, disk: u64, cpu: u32) -> Resources {
    Resources { memory, disk, cpu }
}

fn times(r: Resources, n: u64) -> Resources {
    (0..n).fold(Resources::default(), |a, _| a.saturating_add(&r))
}

/// The stored `allocated` key of hypervisor `h`, parsed.
async fn allocated_key(ctx: &Context, h: &str) -> Option<Resources> {
    common::raw(ctx, &format!("lochness/hypervisors/{h}/allocated"))
        .await
        .map(|t| Resources::from_json(t.as_bytes()).unwrap())
}

/// Writes key/values with plain puts, 100 per transaction, as a tool that does not know
/// the `allocated` key (the Go library) leaves them.
async fn put_raw(ctx: &Context, kvs: Vec<(String, String)>) {
    let mut client = ctx.client();
    for chunk in kvs.chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(k, v)| TxnOp::put(ctx.abs(k), v.clone(), None))
            .collect();
        assert!(client
            .txn(Txn::new().and_then(ops))
            .await
            .unwrap()
            .succeeded());
    }
}

/// `n` guests placed on `h` the Go library's way: the guest's metadata naming the
/// hypervisor and the link under the hypervisor, nothing else (no address, no
/// `allocated`). Flavors are used in turn.
async fn seed_go_guests(
    ctx: &Context,
    h: &Hypervisor,
    flavors: &[&Flavor],
    net: &Network,
    n: usize,
) -> Vec<Guest> {
    let mut kvs = Vec::new();
    let mut out = Vec::new();
    for i in 0..n {
        let mut g = common::guest(ctx, flavors[i % flavors.len()], net);
        g.hypervisor = h.id.clone();
        kvs.push((format!("lochness/guests/{}/metadata", g.id), g.to_json()));
        kvs.push((
            format!("lochness/hypervisors/{}/guests/{}", h.id, g.id),
            g.id.clone(),
        ));
        out.push(g);
    }
    put_raw(ctx, kvs).await;
    out
}

/// For every hypervisor: `allocated` is exactly the sum of the flavors of the guests
/// linked to it, and within its total.
async fn check_accounting(ctx: &Context, flavors: &BTreeMap<String, Resources>) {
    for h in ctx.hypervisors().await.unwrap() {
        let mut want = Resources::default();
        for gid in h.guests() {
            let g = ctx.guest(gid).await.unwrap();
            assert_eq!(g.hypervisor, h.id, "{gid}");
            want = want.saturating_add(&flavors[&g.flavor]);
        }
        assert_eq!(h.allocated(), want, "allocated of {}", h.id);
        assert_eq!(allocated_key(ctx, &h.id).await, Some(want), "{}", h.id);
        assert!(
            h.total_resources.covers(&h.allocated()),
            "{} overcommitted: {:?} of {:?}",
            h.id,
            h.allocated(),
            h.total_resources
        );
    }
}

#[tokio::test]
async fn allocated_is_built_on_first_use_from_go_style_keys() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let a = common::flavor(&ctx, 512, 4096, 1).await;
    let b = common::flavor(&ctx, 1024, 8192, 2).await;
    let mut net = common::network(&ctx).await;
    let s = common::subnet(
        &ctx,
        &mut net,
        "10.40.0.0/24",
        "10.40.0.10",
        "10.40.0.200",
        "10.40.0.1",
    )
    .await;
    let total = res(1 << 20, 1 << 30, 1024);
    let mut h = common::hypervisor(&ctx, total).await;
    h.add_subnet(&s, "br0").await.unwrap();
    // 150 guests (more than one transaction of reads), a link to a guest that does not
    // exist and a guest whose flavor does not exist: those two count as nothing.
    seed_go_guests(&ctx, &h, &[&a, &b], &net, 150).await;
    let mut orphan = common::guest(&ctx, &a, &net);
    orphan.flavor = lochness::codec::new_id();
    orphan.hypervisor = h.id.clone();
    let ghost = lochness::codec::new_id();
    put_raw(
        &ctx,
        vec![
            (
                format!("lochness/guests/{}/metadata", orphan.id),
                orphan.to_json(),
            ),
            (
                format!("lochness/hypervisors/{}/guests/{}", h.id, orphan.id),
                orphan.id.clone(),
            ),
            (
                format!("lochness/hypervisors/{}/guests/{ghost}", h.id),
                ghost.clone(),
            ),
        ],
    )
    .await;
    let existing = times(a.resources, 75).saturating_add(&times(b.resources, 75));

    // Before anything is placed: the key is absent, a loaded copy counts zero, and the
    // operators' read computes the figure without writing it.
    assert_eq!(allocated_key(&ctx, &h.id).await, None);
    let mut loaded = ctx.hypervisor(&h.id).await.unwrap();
    assert_eq!(loaded.guests().len(), 152);
    assert_eq!(loaded.allocated(), Resources::default());
    let figures = ctx.hypervisor_resources(&h.id).await.unwrap();
    assert_eq!(figures.allocated, existing);
    assert_eq!(figures.total, total);
    assert_eq!(figures.available, total);
    assert_eq!(figures.free, total.saturating_sub(&existing));
    assert_eq!(
        allocated_key(&ctx, &h.id).await,
        None,
        "a read writes nothing"
    );

    // Placing one more builds the key from the linked guests, then adds the new one.
    let mut g = common::guest(&ctx, &a, &net);
    loaded.add_guest(&mut g).await.unwrap();
    let want = existing.saturating_add(&a.resources);
    assert_eq!(allocated_key(&ctx, &h.id).await, Some(want));
    assert_eq!(loaded.allocated(), want);
    assert_eq!(ctx.hypervisor(&h.id).await.unwrap().allocated(), want);
    assert_eq!(
        ctx.hypervisor_resources(&h.id).await.unwrap().allocated,
        want
    );
    let view = ClusterView::load(&ctx).await.unwrap();
    assert_eq!(view.hypervisors[&h.id].allocated(), want);
    assert_eq!(view.hypervisors[&h.id].free(), total.saturating_sub(&want));
}

#[tokio::test]
async fn removing_a_go_style_guest_builds_allocated_then_subtracts() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let a = common::flavor(&ctx, 512, 4096, 1).await;
    let b = common::flavor(&ctx, 1024, 8192, 2).await;
    let net = common::network(&ctx).await;
    let h = common::hypervisor(&ctx, res(1 << 20, 1 << 30, 1024)).await;
    let seeded = seed_go_guests(&ctx, &h, &[&a, &b], &net, 3).await;
    assert_eq!(allocated_key(&ctx, &h.id).await, None);

    // Removing guest b: the figure is built (a + b + a), then b is subtracted.
    let mut hv = ctx.hypervisor(&h.id).await.unwrap();
    let mut g = ctx.guest(&seeded[1].id).await.unwrap();
    hv.remove_guest(&mut g).await.unwrap();
    let two_a = times(a.resources, 2);
    assert_eq!(allocated_key(&ctx, &h.id).await, Some(two_a));
    assert_eq!(hv.allocated(), two_a);
    assert!(ctx.guest(&g.id).await.unwrap().hypervisor.is_empty());

    // Destroying another subtracts it too.
    let mut g = ctx.guest(&seeded[0].id).await.unwrap();
    g.destroy().await.unwrap();
    assert_eq!(allocated_key(&ctx, &h.id).await, Some(a.resources));
    let flavors = BTreeMap::from([(a.id.clone(), a.resources), (b.id.clone(), b.resources)]);
    check_accounting(&ctx, &flavors).await;
}

/// The recorded Go placer placed a second 512 MB guest on a hypervisor reporting 600 MB
/// available: `available_resources` is the heartbeat's figure and placement does not
/// decrement it.
#[tokio::test]
async fn two_guests_fit_although_the_reported_figure_holds_one() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let small = common::flavor(&ctx, 512, 10240, 1).await;
    let mut net = common::network(&ctx).await;
    let s = common::subnet(
        &ctx,
        &mut net,
        "10.70.0.0/24",
        "10.70.0.10",
        "10.70.0.12",
        "10.70.0.1",
    )
    .await;
    let mut h = common::hypervisor(&ctx, res(16384, 1048576, 8)).await;
    h.available_resources = res(600, 500000, 8);
    h.save().await.unwrap();
    h.add_subnet(&s, "br0").await.unwrap();
    common::mark_alive(&ctx, &h.id).await;
    // A guest placed by the Go library, with its address.
    let mut existing = common::guest(&ctx, &small, &net);
    existing.hypervisor = h.id.clone();
    existing.subnet = s.id.clone();
    existing.ip = Some("10.70.0.10".parse().unwrap());
    existing.bridge = "br0".into();
    put_raw(
        &ctx,
        vec![
            (
                format!("lochness/guests/{}/metadata", existing.id),
                existing.to_json(),
            ),
            (
                format!("lochness/hypervisors/{}/guests/{}", h.id, existing.id),
                existing.id.clone(),
            ),
            (
                format!("lochness/subnets/{}/addresses/10.70.0.10", s.id),
                existing.id.clone(),
            ),
        ],
    )
    .await;
    let metadata_rev = ctx.hypervisor(&h.id).await.unwrap().revision();

    let mut ips = Vec::new();
    for _ in 0..2 {
        let mut g = common::guest(&ctx, &small, &net);
        let mut host = g
            .candidates(&DEFAULT_CANDIDATE_FUNCTIONS)
            .await
            .unwrap()
            .remove(0);
        host.add_guest(&mut g).await.unwrap();
        ips.push(g.ip.unwrap().to_string());
    }
    assert_eq!(ips, ["10.70.0.11", "10.70.0.12"]);
    let stored = ctx.hypervisor(&h.id).await.unwrap();
    assert_eq!(stored.allocated(), times(small.resources, 3));
    assert_eq!(stored.allocated().memory, 1536);
    assert_eq!(stored.available_resources, res(600, 500000, 8));
    assert_eq!(stored.revision(), metadata_rev, "metadata not written");
}

#[tokio::test]
async fn either_figure_can_refuse_a_guest() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let big = common::flavor(&ctx, 3072, 1024, 1).await;
    let medium = common::flavor(&ctx, 2048, 1024, 1).await;
    let small = common::flavor(&ctx, 512, 1024, 1).await;
    let mut net = common::network(&ctx).await;
    let s = common::subnet(
        &ctx,
        &mut net,
        "10.41.0.0/24",
        "10.41.0.10",
        "10.41.0.200",
        "10.41.0.1",
    )
    .await;
    // Promised out: 4096 total, 3072 allocated, while the reported figure says 4096.
    let mut promised = common::hypervisor(&ctx, res(4096, 1 << 20, 8)).await;
    promised.add_subnet(&s, "br0").await.unwrap();
    let mut first = common::guest(&ctx, &big, &net);
    promised.add_guest(&mut first).await.unwrap();
    let figures = ctx.hypervisor_resources(&promised.id).await.unwrap();
    assert_eq!(figures.available.memory, 4096, "never decremented");
    assert_eq!(figures.free.memory, 1024);
    // Reported short: 600 available, although nothing is promised of 16384.
    let mut reported = common::hypervisor(&ctx, res(16384, 1 << 20, 8)).await;
    reported.available_resources = res(600, 1 << 20, 8);
    reported.save().await.unwrap();
    reported.add_subnet(&s, "br0").await.unwrap();

    for h in [&mut promised, &mut reported] {
        common::mark_alive(&ctx, &h.id).await;
        let before = ctx.hypervisor_resources(&h.id).await.unwrap().allocated;
        let mut g = common::guest(&ctx, &medium, &net);
        assert!(!h.fits(&medium.resources), "{}", h.id);
        let err = h.add_guest(&mut g).await.unwrap_err();
        assert!(matches!(err, Error::InsufficientResources(_)), "{err}");
        assert!(
            common::raw(&ctx, &format!("lochness/guests/{}/metadata", g.id))
                .await
                .is_none()
        );
        assert_eq!(
            ctx.hypervisor_resources(&h.id).await.unwrap().allocated,
            before
        );
    }
    assert_eq!(
        common::keys(&ctx, &format!("lochness/subnets/{}/addresses/", s.id))
            .await
            .len(),
        1
    );
    // The candidate filter applies the same rule.
    let view = ClusterView::load(&ctx).await.unwrap();
    let g = common::guest(&ctx, &medium, &net);
    assert!(matches!(
        g.candidates_in(&view, &[candidate_has_resources]),
        Err(Error::NoSuitableHypervisors)
    ));
    let g = common::guest(&ctx, &small, &net);
    assert_eq!(
        g.candidates_in(&view, &[candidate_has_resources])
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn removal_and_destroy_give_back_exactly() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let a = common::flavor(&ctx, 128, 1024, 1).await;
    let b = common::flavor(&ctx, 300, 2000, 2).await;
    let mut net = common::network(&ctx).await;
    let s = common::subnet(
        &ctx,
        &mut net,
        "10.42.0.0/24",
        "10.42.0.10",
        "10.42.0.200",
        "10.42.0.1",
    )
    .await;
    let mut h = common::hypervisor(&ctx, res(4096, 1 << 20, 8)).await;
    h.add_subnet(&s, "br0").await.unwrap();
    let mut guests = Vec::new();
    for f in [&a, &b, &a] {
        let mut g = common::guest(&ctx, f, &net);
        h.add_guest(&mut g).await.unwrap();
        guests.push(g);
    }
    let all = times(a.resources, 2).saturating_add(&b.resources);
    assert_eq!(allocated_key(&ctx, &h.id).await, Some(all));
    assert_eq!(h.allocated(), all);

    h.remove_guest(&mut guests[1]).await.unwrap();
    assert_eq!(
        allocated_key(&ctx, &h.id).await,
        Some(times(a.resources, 2))
    );
    assert_eq!(h.allocated(), times(a.resources, 2));
    guests[0].destroy().await.unwrap();
    assert_eq!(allocated_key(&ctx, &h.id).await, Some(a.resources));
    // The removed guest placed again, elsewhere in time: added once more.
    h.add_guest(&mut guests[1]).await.unwrap();
    assert_eq!(
        allocated_key(&ctx, &h.id).await,
        Some(a.resources.saturating_add(&b.resources))
    );
    let flavors = BTreeMap::from([(a.id.clone(), a.resources), (b.id.clone(), b.resources)]);
    check_accounting(&ctx, &flavors).await;
    h.remove_guest(&mut guests[1]).await.unwrap();
    guests[2].destroy().await.unwrap();
    assert_eq!(allocated_key(&ctx, &h.id).await, Some(Resources::default()));
    let stored = ctx.hypervisor(&h.id).await.unwrap();
    assert_eq!(stored.free(), stored.total_resources);
    assert_eq!(stored.available_resources, stored.total_resources);
}

/// Four placers on their own connections fill three hypervisors: each ends exactly
/// full, never beyond, with `allocated` equal to its guests' flavors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_placers_fill_hypervisors_exactly() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let small = common::flavor(&ctx, 256, 1024, 1).await;
    let large = common::flavor(&ctx, 512, 1024, 1).await;
    let mut net = common::network(&ctx).await;
    let s = common::subnet(
        &ctx,
        &mut net,
        "10.43.0.0/24",
        "10.43.0.10",
        "10.43.0.250",
        "10.43.0.1",
    )
    .await;
    let total = res(10 * 256, 1 << 20, 1024);
    for _ in 0..3 {
        let mut h = common::hypervisor(&ctx, total).await;
        h.add_subnet(&s, "br0").await.unwrap();
        common::mark_alive(&ctx, &h.id).await;
    }
    let mut tasks = Vec::new();
    for t in 0..4 {
        let mine = Context::new(&[common::etcd_url()], Some(ctx.prefix()))
            .await
            .unwrap();
        let flavor = if t % 2 == 0 { &small } else { &large }.id.clone();
        let network = net.id.clone();
        tasks.push(tokio::spawn(async move {
            let mut placed = 0usize;
            for _ in 0..200 {
                let mut g = mine.new_guest();
                g.flavor = flavor.clone();
                g.network = network.clone();
                let mut h = match g.candidates(&DEFAULT_CANDIDATE_FUNCTIONS).await {
                    Ok(list) => list.into_iter().next().unwrap(),
                    Err(Error::NoSuitableHypervisors) => return placed,
                    Err(e) => panic!("candidates: {e}"),
                };
                match h.add_guest(&mut g).await {
                    Ok(()) => placed += 1,
                    // Taken by another placer since the view was read.
                    Err(Error::InsufficientResources(_)) => {}
                    Err(e) => panic!("add_guest: {e}"),
                }
            }
            panic!("placer {t} never ran out of room");
        }));
    }
    let mut placed = 0;
    for t in tasks {
        placed += t.await.unwrap();
    }
    assert!(placed >= 15, "{placed} guests placed");
    let flavors = BTreeMap::from([
        (small.id.clone(), small.resources),
        (large.id.clone(), large.resources),
    ]);
    check_accounting(&ctx, &flavors).await;
    // The small placers stopped only when no hypervisor had 256 MiB left: all are full.
    for h in ctx.hypervisors().await.unwrap() {
        assert_eq!(h.allocated().memory, total.memory, "{}", h.id);
        assert_eq!(h.available_resources, total, "{}", h.id);
    }
}

/// A heartbeat's resource update between a placement's read and its commit does not
/// make the placement retry or rewrite the metadata; heartbeats looping while four
/// placers work fail no placement, and the reported figures end up agreeing with what
/// was placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_do_not_contend_with_placement() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let tiny = common::flavor(&ctx, 1, 1, 0).await;
    let mut net = common::network(&ctx).await;
    let s = common::subnet(
        &ctx,
        &mut net,
        "10.44.0.0/24",
        "10.44.0.10",
        "10.44.0.250",
        "10.44.0.1",
    )
    .await;
    let mut h = common::hypervisor(&ctx, res(1 << 20, 1 << 30, 64)).await;
    h.add_subnet(&s, "br0").await.unwrap();
    h.set_config("guestDiskDir", "/").await.unwrap();

    // The hook: a heartbeat update lands between the placement's read and its commit.
    let beat_rev = Arc::new(AtomicI64::new(0));
    let (other, hid, seen) = (ctx.clone(), h.id.clone(), beat_rev.clone());
    let hooked = ctx.with_commit_hook(async move {
        let mut hv = other.hypervisor(&hid).await.unwrap();
        hv.update_resources().await.unwrap();
        seen.store(hv.revision(), Ordering::SeqCst);
    });
    let mut hv = hooked.hypervisor(&h.id).await.unwrap();
    let mut g = common::guest(&hooked, &tiny, &net);
    hv.add_guest(&mut g).await.unwrap();
    let stored = ctx.hypervisor(&h.id).await.unwrap();
    let beat = beat_rev.load(Ordering::SeqCst);
    assert!(beat > 0, "the hook ran");
    assert_eq!(
        stored.revision(),
        beat,
        "the metadata is the heartbeat's, not rewritten by placement"
    );
    assert_eq!(stored.allocated(), tiny.resources);

    // Heartbeats in a loop while four placers place ten guests each.
    let stop = Arc::new(AtomicBool::new(false));
    let beats = Arc::new(AtomicUsize::new(0));
    let heartbeat = {
        let (ctx, id, stop, beats) = (ctx.clone(), h.id.clone(), stop.clone(), beats.clone());
        tokio::spawn(async move {
            let mut hv = ctx.hypervisor(&id).await.unwrap();
            while !stop.load(Ordering::SeqCst) || beats.load(Ordering::SeqCst) == 0 {
                hv.update_resources().await.unwrap();
                beats.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let mut placers = Vec::new();
    for _ in 0..4 {
        let mine = Context::new(&[common::etcd_url()], Some(ctx.prefix()))
            .await
            .unwrap();
        let (flavor, network, id) = (tiny.clone(), net.clone(), h.id.clone());
        placers.push(tokio::spawn(async move {
            let mut hv = mine.hypervisor(&id).await.unwrap();
            for _ in 0..10 {
                let mut g = common::guest(&mine, &flavor, &network);
                hv.add_guest(&mut g).await.unwrap();
            }
        }));
    }
    for p in placers {
        p.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    heartbeat.await.unwrap();
    assert!(beats.load(Ordering::SeqCst) > 0);
    let flavors = BTreeMap::from([(tiny.id.clone(), tiny.resources)]);
    check_accounting(&ctx, &flavors).await;
    let mut stored = ctx.hypervisor(&h.id).await.unwrap();
    assert_eq!(stored.allocated(), times(tiny.resources, 41));
    // One more beat: the reported figure is the host's minus the same 41 guests.
    stored.update_resources().await.unwrap();
    let figures = ctx.hypervisor_resources(&h.id).await.unwrap();
    assert_eq!(
        figures.available,
        figures.total.saturating_sub(&figures.allocated)
    );
    assert_eq!(figures.allocated, times(tiny.resources, 41));
}
