//! Jobs against a real etcd: a guest is created together with its `select-hypervisor`
//! job and the job's queue entry, or not at all; other jobs are queued only on guests
//! that exist; reading a job takes nothing.

mod common;

use lochness::{Error, JobAction, JobStatus};
use serde_json::Value;

#[tokio::test]
async fn a_guest_comes_with_its_job_and_queue_entry() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let flavor = common::flavor(&ctx, 512, 1024, 1).await;
    let network = common::network(&ctx).await;
    let mut guest = common::guest(&ctx, &flavor, &network);
    // Placement fields sent by a client are not kept: only placement sets them.
    guest.bridge = "br9".into();
    guest.ip = Some("10.0.0.9".parse().unwrap());
    let job = ctx.create_guest_with_job(&mut guest).await.unwrap();
    assert_eq!(job.action, JobAction::SelectHypervisor);
    assert_eq!(job.status, JobStatus::New);
    assert_eq!(job.guest, guest.id);
    assert!(guest.revision() > 0);

    let stored = ctx.guest(&guest.id).await.unwrap();
    assert_eq!((stored.bridge.as_str(), stored.ip), ("", None));
    let record: Value = serde_json::from_str(
        &common::raw(&ctx, &format!("lochness/jobs/{}", job.id))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["action"], "select-hypervisor");
    assert_eq!(record["status"], "new");
    assert_eq!(record["started_at"], "0001-01-01T00:00:00Z");
    assert_eq!(
        common::raw(&ctx, &format!("lochness/queue/create/{}", job.id)).await,
        Some(guest.id.clone())
    );
    assert!(common::keys(&ctx, "lochness/queue/work/").await.is_empty());
    // Reading is free: twice, and the record is unchanged (no lock key either).
    assert_eq!(ctx.job(&job.id).await.unwrap(), job);
    assert_eq!(ctx.job(&job.id.to_uppercase()).await.unwrap(), job);
    assert!(common::keys(&ctx, "lochness/jobs/")
        .await
        .iter()
        .all(|k| !k.ends_with(".lock")));

    // The same id again: refused, and no second job or queue entry appears.
    let mut again = common::guest(&ctx, &flavor, &network);
    again.id.clone_from(&guest.id);
    assert!(matches!(
        ctx.create_guest_with_job(&mut again).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(common::keys(&ctx, "lochness/jobs/").await.len(), 1);
    assert_eq!(common::keys(&ctx, "lochness/queue/create/").await.len(), 1);
}

#[tokio::test]
async fn jobs_are_queued_only_on_existing_guests() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let guest = common::created_guest(&ctx).await;

    let reboot = ctx.queue_job(&guest.id, JobAction::Reboot).await.unwrap();
    assert_eq!(
        common::raw(&ctx, &format!("lochness/queue/work/{}", reboot.id)).await,
        Some(guest.id.clone())
    );
    assert_eq!(ctx.job(&reboot.id).await.unwrap().action, JobAction::Reboot);

    let unknown = lochness::codec::new_id();
    assert!(matches!(
        ctx.queue_job(&unknown, JobAction::Delete).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        ctx.queue_job("junk", JobAction::Delete).await,
        Err(Error::InvalidUuid(_))
    ));
    assert!(matches!(
        ctx.queue_job(&guest.id, JobAction::SelectHypervisor).await,
        Err(Error::Invalid(_))
    ));
    // Only the reboot was queued for workers.
    assert_eq!(common::keys(&ctx, "lochness/queue/work/").await.len(), 1);
    assert!(matches!(
        ctx.job(&lochness::codec::new_id()).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn a_guest_naming_what_does_not_exist_is_not_created() {
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let flavor = common::flavor(&ctx, 512, 1024, 1).await;
    let network = common::network(&ctx).await;
    let mut guest = common::guest(&ctx, &flavor, &network);
    guest.fwgroup = lochness::codec::new_id();
    match ctx.create_guest_with_job(&mut guest).await {
        Err(Error::NotFound(key)) => {
            assert_eq!(key, format!("lochness/fwgroups/{}/metadata", guest.fwgroup))
        }
        other => panic!("{other:?}"),
    }
    let mut unknown_flavor = common::guest(&ctx, &flavor, &network);
    unknown_flavor.flavor = lochness::codec::new_id().to_uppercase();
    assert!(matches!(
        ctx.create_guest_with_job(&mut unknown_flavor).await,
        Err(Error::NotFound(k)) if k.starts_with("lochness/flavors/")
    ));
    assert!(common::keys(&ctx, "lochness/").await.iter().all(|k| {
        !k.starts_with("lochness/guests/")
            && !k.starts_with("lochness/jobs/")
            && !k.starts_with("lochness/queue/")
    }));
}
