//! Claims and the queue view against a real etcd: a job is claimed by one claimer only,
//! every write of a claim checks it still holds, a lost lease gives the claim up, and
//! the watched view follows the queues (placement's hand-over keeps a job's place in
//! line ahead of later jobs of its guest).

mod common;

use std::time::Duration;

use lochness::{Claimer, Error, JobAction, JobStatus, Queue, QueueView, Resources, Transition};

const TTL: Duration = Duration::from_secs(2);

/// Waits (bounded) until the view satisfies `cond`.
async fn until(view: &mut QueueView, cond: impl Fn(&lochness::QueueState) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if cond(&view.state()) {
            return true;
        }
        if tokio::time::timeout_at(deadline, view.changed())
            .await
            .is_err()
        {
            return false;
        }
    }
}

#[tokio::test]
async fn one_claimer_per_job_and_writes_check_the_claim() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let guest = common::created_guest(&ctx).await;
    let reboot = ctx.queue_job(&guest.id, JobAction::Reboot).await.unwrap();
    // The guest is not placed, but the queue does not care: claim the reboot directly.
    let a = Claimer::start(&ctx, "test-a", TTL).await.unwrap();
    let b = Claimer::start(&ctx, "test-b", TTL).await.unwrap();
    assert!(a.name().starts_with("test-a@"));
    let mut claim = a
        .claim(&reboot.id, Queue::Work)
        .await
        .unwrap()
        .expect("claimed");
    assert!(
        b.claim(&reboot.id, Queue::Work).await.unwrap().is_none(),
        "claimed twice"
    );
    assert!(
        a.claim(&reboot.id, Queue::Create).await.unwrap().is_none(),
        "not in that queue"
    );
    assert_eq!(
        common::raw(&ctx, &format!("lochness/claims/{}", reboot.id)).await,
        Some(a.name().to_string())
    );
    // A claim writes nothing to the record, and holds the record as stored.
    let stored = ctx.job(&reboot.id).await.unwrap();
    assert_eq!(stored, *claim.job());
    assert!(stored.started_at.is_none());
    // Claimed stores started_at (a worker does, before it asks an agent for an action).
    claim.save(Transition::Claimed).await.unwrap();
    let stored = ctx.job(&reboot.id).await.unwrap();
    assert!(stored.started_at.is_some());
    assert_eq!(stored, *claim.job());
    claim
        .save(Transition::Started {
            remote: "agent-job".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        ctx.job(&reboot.id).await.unwrap().status,
        JobStatus::Working
    );

    // The claim key is deleted behind our back (a lease that expired, say): the next
    // write fails and writes nothing.
    ctx.client()
        .delete(ctx.abs(&format!("lochness/claims/{}", reboot.id)), None)
        .await
        .unwrap();
    let err = claim.save(Transition::Finished).await.unwrap_err();
    assert!(matches!(err, Error::ClaimLost(_)), "{err}");
    assert_eq!(
        ctx.job(&reboot.id).await.unwrap().status,
        JobStatus::Working
    );

    // b takes it over and finishes: record, queue entry and claim in one go.
    let claim = b
        .claim(&reboot.id, Queue::Work)
        .await
        .unwrap()
        .expect("b claims");
    assert_eq!(claim.job().remote, "agent-job", "resumed from the record");
    let done = claim.finish(Transition::Finished).await.unwrap();
    assert_eq!(done.status, JobStatus::Done);
    assert_eq!(ctx.job(&reboot.id).await.unwrap(), done);
    assert!(common::keys(&ctx, "lochness/queue/work/").await.is_empty());
    assert!(common::keys(&ctx, "lochness/claims/").await.is_empty());
    // A finished job cannot be claimed again.
    assert!(b.claim(&reboot.id, Queue::Work).await.unwrap().is_none());
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn an_advanced_step_is_stored_with_the_next_write_or_redone_after_a_lost_claim() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let guest = common::created_guest(&ctx).await;
    let fetch = ctx.queue_job(&guest.id, JobAction::Fetch).await.unwrap();
    let a = Claimer::start(&ctx, "test-a", TTL).await.unwrap();
    let b = Claimer::start(&ctx, "test-b", TTL).await.unwrap();
    let started = |remote: &str| Transition::Started {
        remote: remote.into(),
    };
    let mut claim = a.claim(&fetch.id, Queue::Work).await.unwrap().expect("a");
    assert!(!claim.unsaved());
    claim.save(started("agent-fetch")).await.unwrap();
    // The fetch ended: applied in memory only, the record still says fetch.
    claim.advance(Transition::Fetched).unwrap();
    assert!(claim.unsaved());
    assert_eq!(claim.job().action, JobAction::Create);
    let stored = ctx.job(&fetch.id).await.unwrap();
    assert_eq!(
        (stored.action, stored.status, stored.remote.as_str()),
        (JobAction::Fetch, JobStatus::Working, "agent-fetch")
    );
    // The claim is lost before the next write: nothing of the step is stored, and the
    // process that takes the job over redoes the fetch.
    ctx.client()
        .delete(ctx.abs(&format!("lochness/claims/{}", fetch.id)), None)
        .await
        .unwrap();
    let err = claim.save(started("agent-create")).await.unwrap_err();
    assert!(matches!(err, Error::ClaimLost(_)), "{err}");
    assert!(claim.unsaved(), "a failed write stores nothing");
    let mut claim = b.claim(&fetch.id, Queue::Work).await.unwrap().expect("b");
    assert_eq!(
        (claim.job().action, claim.job().remote.as_str()),
        (JobAction::Fetch, "agent-fetch")
    );
    // This time the next write goes through: the fetch is stored with the create's start.
    claim.advance(Transition::Fetched).unwrap();
    claim.save(started("agent-create")).await.unwrap();
    assert!(!claim.unsaved());
    let stored = ctx.job(&fetch.id).await.unwrap();
    assert_eq!(
        (stored.action, stored.status, stored.remote.as_str()),
        (JobAction::Create, JobStatus::Working, "agent-create")
    );
    assert_eq!(stored, *claim.job());
    claim.finish(Transition::Finished).await.unwrap();
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_stopped_claimer_gives_its_claims_back_and_cannot_write() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let guest = common::created_guest(&ctx).await;
    let job = ctx.queue_job(&guest.id, JobAction::Start).await.unwrap();
    let a = Claimer::start(&ctx, "test-a", TTL).await.unwrap();
    let a2 = a.clone();
    let mut claim = a.claim(&job.id, Queue::Work).await.unwrap().unwrap();
    assert!(!claim.is_lost());
    a.stop().await.unwrap();
    // The lease is revoked: the claim key is gone at once, and the old claim writes
    // nothing.
    assert!(common::keys(&ctx, "lochness/claims/").await.is_empty());
    let err = claim.save(Transition::Finished).await.unwrap_err();
    assert!(matches!(err, Error::ClaimLost(_)), "{err}");
    drop(a2);
    let b = Claimer::start(&ctx, "test-b", TTL).await.unwrap();
    assert!(b.claim(&job.id, Queue::Work).await.unwrap().is_some());
    b.stop().await.unwrap();
}

#[tokio::test]
async fn many_jobs_are_claimed_in_one_transaction_each_on_its_own() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let flavor = common::flavor(&ctx, 512, 1024, 1).await;
    let network = common::network(&ctx).await;
    let mut jobs = Vec::new();
    for _ in 0..4 {
        let mut guest = common::guest(&ctx, &flavor, &network);
        ctx.create_guest_with_job(&mut guest).await.unwrap();
        jobs.push(ctx.queue_job(&guest.id, JobAction::Start).await.unwrap().id);
    }
    let a = Claimer::start(&ctx, "test-a", TTL).await.unwrap();
    let b = Claimer::start(&ctx, "test-b", TTL).await.unwrap();
    // jobs[1] is b's already; jobs[2] is not in the workers' queue any more.
    let held = b
        .claim(&jobs[1], Queue::Work)
        .await
        .unwrap()
        .expect("b claims");
    ctx.client()
        .delete(ctx.abs(&format!("lochness/queue/work/{}", jobs[2])), None)
        .await
        .unwrap();
    let mut asked = jobs.clone();
    asked.push("no-such-job".into());
    let claims = a.claim_many(&asked, Queue::Work).await.unwrap();
    let taken: Vec<bool> = claims.iter().map(Option::is_some).collect();
    assert_eq!(
        taken,
        [true, false, false, true, false],
        "answers in the order asked"
    );
    for (claim, id) in claims.iter().zip(&asked) {
        if let Some(claim) = claim {
            assert_eq!(claim.job().id, *id);
            assert_eq!(
                *claim.job(),
                ctx.job(id).await.unwrap(),
                "the record as stored"
            );
        }
    }
    // Both claims were written by one transaction: one revision.
    let mut revisions = Vec::new();
    for id in [&jobs[0], &jobs[3]] {
        let kv = ctx
            .get(&format!("lochness/claims/{id}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kv.text(), a.name());
        revisions.push(kv.create_revision);
    }
    assert_eq!(revisions[0], revisions[1]);
    // b's claim is untouched, and nothing was claimed for the missing entry.
    assert_eq!(
        common::raw(&ctx, &format!("lochness/claims/{}", jobs[1])).await,
        Some(b.name().to_string())
    );
    assert_eq!(
        common::raw(&ctx, &format!("lochness/claims/{}", jobs[2])).await,
        None
    );
    assert!(a.claim_many(&[], Queue::Work).await.unwrap().is_empty());
    drop(held);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn the_view_follows_the_queues_and_the_hand_over_keeps_the_place_in_line() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let res = Resources {
        memory: 4096,
        disk: 100_000,
        cpu: 8,
    };
    let flavor = common::flavor(&ctx, 512, 1024, 1).await;
    let mut network = common::network(&ctx).await;
    let subnet = common::subnet(
        &ctx,
        &mut network,
        "10.9.0.0/24",
        "10.9.0.10",
        "10.9.0.20",
        "10.9.0.1",
    )
    .await;
    let mut hv = common::hypervisor(&ctx, res).await;
    hv.add_subnet(&subnet, "br0").await.unwrap();
    common::mark_alive(&ctx, &hv.id).await;

    let mut view = QueueView::start(&ctx).await.unwrap();
    let mut guest = common::guest(&ctx, &flavor, &network);
    let select = ctx.create_guest_with_job(&mut guest).await.unwrap();
    // A start queued right after the create waits for it.
    let start = ctx.queue_job(&guest.id, JobAction::Start).await.unwrap();
    assert!(
        until(&mut view, |s| s.depth(Queue::Work) == 1
            && s.depth(Queue::Create) == 1)
        .await
    );
    let ids = |list: Vec<lochness::QueueEntry>| -> Vec<String> {
        list.into_iter().map(|e| e.job).collect()
    };
    assert_eq!(
        ids(view.eligible(Queue::Create)),
        std::slice::from_ref(&select.id)
    );
    assert!(view.eligible(Queue::Work).is_empty(), "the start waits");

    let placer = Claimer::start(&ctx, "cplacerd", TTL).await.unwrap();
    let claim = placer
        .claim(&select.id, Queue::Create)
        .await
        .unwrap()
        .unwrap();
    assert!(until(&mut view, |s| s.holder(&select.id).is_some()).await);
    assert!(view.eligible(Queue::Create).is_empty());
    // The placer's claim leaves the record as it is (the original's times stay zero).
    assert_eq!(ctx.job(&select.id).await.unwrap().started_at, None);

    // The placement and the hand-over in one transaction.
    let (guard, next) = claim.hand_over().unwrap();
    assert_eq!(
        (next.action, next.status),
        (JobAction::Fetch, JobStatus::New)
    );
    let mut g = ctx.guest(&guest.id).await.unwrap();
    hv.add_guest_with(&mut g, &guard).await.unwrap();
    assert_eq!(g.hypervisor, hv.id);
    let stored = ctx.job(&select.id).await.unwrap();
    assert_eq!(
        (stored.action, stored.status, stored.started_at),
        (JobAction::Fetch, JobStatus::New, None)
    );
    assert!(common::keys(&ctx, "lochness/queue/create/")
        .await
        .is_empty());
    assert!(common::keys(&ctx, "lochness/claims/").await.is_empty());
    // The fetch is next for the guest, ahead of the start queued before the move.
    assert!(
        until(&mut view, |s| s.depth(Queue::Work) == 2
            && s.holder(&select.id).is_none())
        .await
    );
    assert_eq!(
        ids(view.eligible(Queue::Work)),
        std::slice::from_ref(&select.id)
    );
    // A fresh view reads the same order from the job's creation.
    let fresh = QueueView::start(&ctx).await.unwrap();
    assert_eq!(
        ids(fresh.eligible(Queue::Work)),
        std::slice::from_ref(&select.id)
    );
    assert_eq!(
        fresh.state().entry(&select.id).map(|e| e.order),
        view.state().entry(&select.id).map(|e| e.order)
    );
    assert!(
        fresh.state().entry(&select.id).map(|e| e.order)
            < fresh.state().entry(&start.id).map(|e| e.order)
    );

    // A guard that no longer holds places nothing.
    let mut other = common::guest(&ctx, &flavor, &network);
    let select2 = ctx.create_guest_with_job(&mut other).await.unwrap();
    let claim2 = placer
        .claim(&select2.id, Queue::Create)
        .await
        .unwrap()
        .unwrap();
    let (guard, _) = claim2.hand_over().unwrap();
    claim2.release().await.unwrap();
    let mut g2 = ctx.guest(&other.id).await.unwrap();
    let err = hv.add_guest_with(&mut g2, &guard).await.unwrap_err();
    assert!(matches!(err, Error::ClaimLost(_)), "{err}");
    let stored = ctx.guest(&other.id).await.unwrap();
    assert!(stored.hypervisor.is_empty() && stored.ip.is_none());
    assert_eq!(
        common::keys(&ctx, &format!("lochness/subnets/{}/addresses/", subnet.id))
            .await
            .len(),
        1,
        "only the first guest holds an address"
    );
    placer.stop().await.unwrap();
}
