//! Typed watches, replay from a revision, and resumption after etcd restarts.

mod common;

use std::time::Duration;

use lochness::{ChangeKind, Context, EntityKind, WatchEvent, Watcher};

async fn next(w: &mut Watcher) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("no event within 20 s")
        .expect("watch ended")
        .unwrap()
}

#[tokio::test]
async fn typed_events_in_order_and_replay() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut w = ctx.watch("lochness/guests/", 0).await.unwrap();
    let flavor = common::flavor(&ctx, 1, 1, 1).await;
    let net = common::network(&ctx).await;
    let mut g = common::guest(&ctx, &flavor, &net);
    g.save().await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(
        (e.kind, e.entity, e.id.as_str(), e.sub.as_str()),
        (
            ChangeKind::Create,
            EntityKind::Guest,
            g.id.as_str(),
            "metadata"
        )
    );
    let first_rev = e.revision;
    g.kind = "container".into();
    g.save().await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(e.kind, ChangeKind::Update);
    assert!(String::from_utf8_lossy(&e.value).contains("container"));
    assert!(
        e.prev_value.is_none(),
        "a plain watch carries no previous values"
    );
    g.destroy().await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(e.kind, ChangeKind::Delete);
    assert!(e.value.is_empty());
    // Replay: everything after the first event's revision, again; asked for, with the
    // previous values.
    let mut replay = ctx
        .watch_with_prev("lochness/guests/", first_rev)
        .await
        .unwrap();
    let e = next(&mut replay).await;
    assert_eq!(e.kind, ChangeKind::Update);
    assert!(
        String::from_utf8_lossy(e.prev_value.as_deref().unwrap_or_default()).contains("\"kvm\""),
        "the value before the update"
    );
    assert_eq!(next(&mut replay).await.kind, ChangeKind::Delete);
    // Changes elsewhere are not delivered.
    drop(w);
    let mut w = ctx.watch("lochness/guests/", 0).await.unwrap();
    ctx.set_config("x", "y").await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(500), w.next())
        .await
        .is_err());
}

#[tokio::test]
async fn watch_resumes_after_etcd_restart() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let etcd = common::PrivateEtcd::start();
    let url = etcd.url();
    let ctx = Context::new(&[url.as_str()], Some("resume/"))
        .await
        .unwrap();
    let mut w = ctx.watch("lochness/config/", 0).await.unwrap();
    ctx.set_config("a", "1").await.unwrap();
    let e = next(&mut w).await;
    assert_eq!((e.entity, e.id.as_str()), (EntityKind::Config, "a"));
    let (dir, client, peer) = etcd.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let etcd = common::PrivateEtcd::start_at(dir, client, peer);
    // Written through a fresh connection while the watcher reconnects on its own.
    let writer = Context::new(&[etcd.url().as_str()], Some("resume/"))
        .await
        .unwrap();
    writer.set_config("b", "2").await.unwrap();
    writer.set_config("c", "3").await.unwrap();
    let e = next(&mut w).await;
    assert_eq!((e.id.as_str(), e.value.as_slice()), ("b", b"2".as_slice()));
    let e = next(&mut w).await;
    assert_eq!((e.id.as_str(), e.value.as_slice()), ("c", b"3".as_slice()));
    drop(etcd);
}

/// Every change of one transaction comes in one batch, never split: a reader applying
/// batches never sees half of a transaction (a queue entry deleted from one queue but not
/// yet put in the other).
#[tokio::test]
async fn a_transaction_comes_in_one_batch() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut w = ctx.watch("lochness/queue/", 0).await.unwrap();
    let put = |k: &str| etcd_client::TxnOp::put(ctx.abs(k), "g", None);
    let delete = |k: &str| etcd_client::TxnOp::delete(ctx.abs(k), None);
    ctx.txn(etcd_client::Txn::new().and_then(vec![put("lochness/queue/create/j1")]))
        .await
        .unwrap();
    // The move: delete and put in one transaction, many times over.
    for i in 0..50 {
        let (from, to) = if i % 2 == 0 {
            ("lochness/queue/create/j1", "lochness/queue/work/j1")
        } else {
            ("lochness/queue/work/j1", "lochness/queue/create/j1")
        };
        ctx.txn(etcd_client::Txn::new().and_then(vec![delete(from), put(to)]))
            .await
            .unwrap();
    }
    let mut seen = 0;
    while seen < 101 {
        let batch = tokio::time::timeout(Duration::from_secs(20), w.next_batch())
            .await
            .expect("no batch within 20 s")
            .expect("watch ended")
            .unwrap();
        assert!(!batch.is_empty());
        // A batch holds whole revisions: each move's delete with its put.
        let mut revisions: Vec<i64> = batch.iter().map(|e| e.revision).collect();
        revisions.dedup();
        for rev in revisions {
            let kinds: Vec<ChangeKind> = batch
                .iter()
                .filter(|e| e.revision == rev)
                .map(|e| e.kind)
                .collect();
            assert!(
                kinds.len() == 2 || (seen == 0 && kinds == [ChangeKind::Create]),
                "revision {rev} split: {kinds:?}"
            );
        }
        seen += batch.len();
    }
    assert_eq!(seen, 101);
}
