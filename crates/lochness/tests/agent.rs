//! MistifyAgent against a fake agent speaking the real REST API over real HTTP.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use lochness::{Agent, Error, MistifyAgent, Resources};
use serde_json::{json, Value};

#[derive(Default)]
struct Fake {
    created: Mutex<Vec<Value>>,
    actions: Mutex<Vec<String>>,
    busy_left: AtomicU32,
}

fn accepted(job: &str, body: Value) -> impl IntoResponse {
    let mut h = HeaderMap::new();
    h.insert("X-Guest-Job-ID", job.parse().unwrap());
    (StatusCode::ACCEPTED, h, Json(body))
}

async fn fake_agent(fake: Arc<Fake>) -> u16 {
    let app = Router::new()
        .route(
            "/guests",
            post(|State(f): State<Arc<Fake>>, Json(body): Json<Value>| async move {
                f.created.lock().unwrap().push(body.clone());
                accepted("job-create", body)
            }),
        )
        .route("/guests/{id}", get(|Path(id): Path<String>| async move { Json(json!({"id": id, "state": "running"})) }))
        .route(
            "/guests/{id}/{action}",
            post(|State(f): State<Arc<Fake>>, Path((id, action)): Path<(String, String)>| async move {
                if f.busy_left.load(Ordering::SeqCst) > 0 {
                    f.busy_left.fetch_sub(1, Ordering::SeqCst);
                    let mut h = HeaderMap::new();
                    h.insert("Retry-After", "0".parse().unwrap());
                    return (StatusCode::SERVICE_UNAVAILABLE, h, Json(json!({"message": "busy", "code": 503, "stack": []}))).into_response();
                }
                f.actions.lock().unwrap().push(action.clone());
                accepted(&format!("job-{action}"), json!({"id": id})).into_response()
            }),
        )
        .route("/images", post(|Json(body): Json<Value>| async move { accepted(&format!("job-image-{}", body["id"].as_str().unwrap_or("")), json!({"images": null})) }))
        .route(
            "/jobs/{id}",
            get(|Path(id): Path<String>| async move {
                let (status, message) = match id.as_str() {
                    "job-fail" => ("Error", "disk full"),
                    "job-running" => ("Running", ""),
                    _ => ("Complete", ""),
                };
                Json(json!({"ID": id, "GuestID": "g", "Action": "create", "QueuedAt": "0001-01-01T00:00:00Z",
                    "StartedAt": "0001-01-01T00:00:00Z", "UpdatedAt": "0001-01-01T00:00:00Z", "Status": status, "Message": message}))
            }),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test]
async fn mistify_agent_calls_the_guests_hypervisor() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let fake = Arc::new(Fake::default());
    let port = fake_agent(fake.clone()).await;

    let flavor = common::flavor(&ctx, 512, 4096, 2).await;
    let mut net = common::network(&ctx).await;
    let s = common::subnet(
        &ctx,
        &mut net,
        "10.9.0.0/24",
        "10.9.0.10",
        "10.9.0.20",
        "10.9.0.1",
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
    h.ip = Some("127.0.0.1".parse().unwrap());
    h.save().await.unwrap();
    h.set_config("agentPort", &port.to_string()).await.unwrap();
    h.add_subnet(&s, "br0").await.unwrap();
    let mut vg = ctx.new_vlangroup();
    vg.save().await.unwrap();
    let mut v = ctx.new_vlan();
    v.tag = 42;
    v.save().await.unwrap();
    vg.add_vlan(&mut v).await.unwrap();
    let mut g = common::guest(&ctx, &flavor, &net);
    g.vlangroup = vg.id.clone();
    g.metadata.insert("owner".into(), "me".into());
    h.add_guest(&mut g).await.unwrap();

    let agent = MistifyAgent::new(&ctx);
    assert_eq!(agent.create_guest(&g.id).await.unwrap(), "job-create");
    let body = fake.created.lock().unwrap()[0].clone();
    assert_eq!(
        body,
        json!({"id": g.id, "type": "kvm", "image": flavor.image,
            "nics": [{"name": "eth0", "network": "br0", "model": "virtio", "mac": g.mac.as_ref().unwrap().to_string(),
                      "address": "10.9.0.10", "netmask": "ffffff00", "gateway": "10.9.0.1", "vlans": [42]}],
            "disks": [{"bus": "", "device": "", "size": 4096, "volume": "", "image": flavor.image, "source": flavor.image}],
            "memory": 512, "cpu": 2, "metadata": {"owner": "me"}})
    );
    assert_eq!(agent.get_guest(&g.id).await.unwrap().state, "running");
    // A busy agent (503) is retried.
    fake.busy_left.store(1, Ordering::SeqCst);
    assert_eq!(
        agent.guest_action(&g.id, "restart").await.unwrap(),
        "job-restart"
    );
    assert_eq!(agent.delete_guest(&g.id).await.unwrap(), "job-delete");
    assert_eq!(*fake.actions.lock().unwrap(), ["restart", "delete"]);
    assert_eq!(
        agent.fetch_image(&g.id).await.unwrap(),
        format!("job-image-{}", flavor.image)
    );
    assert!(agent.check_job_status(&g.id, "job-create").await.unwrap());
    assert!(!agent.check_job_status(&g.id, "job-running").await.unwrap());
    assert!(
        matches!(agent.check_job_status(&g.id, "job-fail").await, Err(Error::JobFailed(m)) if m == "disk full")
    );
    assert!(
        matches!(agent.check_job_status(&g.id, "").await, Err(Error::Invalid(m)) if m == "missing job id")
    );
    assert!(matches!(
        agent.guest_action(&g.id, "dance").await,
        Err(Error::Invalid(_))
    ));
    // Missing, invalid and unknown guests.
    assert!(matches!(
        agent.create_guest("nope").await,
        Err(Error::InvalidUuid(_))
    ));
    assert!(matches!(
        agent.create_guest(&lochness::codec::new_id()).await,
        Err(Error::NotFound(_))
    ));
    let unplaced = {
        let mut u = common::guest(&ctx, &flavor, &net);
        u.save().await.unwrap();
        u
    };
    assert!(matches!(
        agent.create_guest(&unplaced.id).await,
        Err(Error::Invalid(_))
    ));
    assert_eq!(fake.created.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn agent_port_defaults_to_8080() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut h = common::hypervisor(&ctx, Resources::default()).await;
    let agent = MistifyAgent::new(&ctx);
    assert_eq!(
        agent
            .client_for(&h)
            .unwrap()
            .base_url()
            .port_or_known_default(),
        Some(8080)
    );
    h.set_config("agentPort", "9123").await.unwrap();
    let h = ctx.hypervisor(&h.id).await.unwrap();
    assert_eq!(agent.client_for(&h).unwrap().base_url().port(), Some(9123));
}

/// Against the real agent started with `--token-file`: the client of a `MistifyAgent`
/// without a token gets 401, with `with_token` it reads.
/// A hypervisor registered at 127.0.0.1 whose agent listens on `port`.
async fn local_hypervisor(ctx: &lochness::Context, port: u16) -> lochness::Hypervisor {
    let mut h = common::hypervisor(ctx, Resources::default()).await;
    h.ip = Some("127.0.0.1".parse().unwrap());
    h.save().await.unwrap();
    h.set_config("agentPort", &port.to_string()).await.unwrap();
    ctx.hypervisor(&h.id).await.unwrap()
}

#[tokio::test]
async fn mistify_agent_sends_its_token_to_an_agent_that_requires_one() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    const TOKEN: &str = "lochness-token-0123456789";
    let dir = mistify_e2e::TempDir::new("lochness-token");
    let config = dir.path().join("agent.json");
    std::fs::write(&config, r#"{"services": {}, "actions": {}}"#).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let port = mistify_e2e::free_port();
    let _agent = mistify_e2e::Daemon::start(
        &mistify_e2e::binary("mistify-agent"),
        &[
            "-a".into(),
            format!("127.0.0.1:{port}"),
            "-c".into(),
            config.display().to_string(),
            "--db-path".into(),
            dir.path().join("agent.redb").display().to_string(),
            "--token-file".into(),
            tokens.display().to_string(),
        ],
        port,
    );
    let h = local_hypervisor(&ctx, port).await;

    let plain = MistifyAgent::new(&ctx).client_for(&h).unwrap();
    let err = plain.list_guests().await.expect_err("no token");
    assert_eq!(err.status(), Some(401), "{err}");
    let with = MistifyAgent::new(&ctx)
        .with_token(TOKEN)
        .client_for(&h)
        .unwrap();
    assert!(with.list_guests().await.unwrap().is_empty());
    assert!(matches!(
        MistifyAgent::new(&ctx)
            .with_token("two words")
            .client_for(&h),
        Err(Error::Invalid(_))
    ));
}

#[tokio::test]
async fn mistify_agent_speaks_https_with_a_client_certificate() {
    if mistify_e2e::skipped("etcd") || mistify_e2e::skipped("supervisor-tls") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let dir = mistify_e2e::TempDir::new("lochness-tls");
    let pki = mistify_e2e::pki::make(dir.path());
    let config = dir.path().join("agent.json");
    std::fs::write(&config, r#"{"services": {}, "actions": {}}"#).unwrap();
    let port = mistify_e2e::free_port();
    let p = |f: &std::path::Path| f.display().to_string();
    let _agent = mistify_e2e::Daemon::start(
        &mistify_e2e::binary("mistify-agent"),
        &[
            "-a".into(),
            format!("127.0.0.1:{port}"),
            "-c".into(),
            p(&config),
            "--db-path".into(),
            p(&dir.path().join("agent.redb")),
            "--tls-cert".into(),
            p(&pki.server_cert),
            "--tls-key".into(),
            p(&pki.server_key),
            "--client-ca".into(),
            p(&pki.ca),
        ],
        port,
    );
    let h = local_hypervisor(&ctx, port).await;

    let files = |cert: bool| mistify_client::TlsFiles {
        ca: Some(pki.ca.clone()),
        cert: cert.then(|| pki.client_cert.clone()),
        key: cert.then(|| pki.client_key.clone()),
    };
    let with = MistifyAgent::new(&ctx)
        .with_tls(files(true))
        .client_for(&h)
        .unwrap();
    assert!(with.list_guests().await.unwrap().is_empty());
    let without = MistifyAgent::new(&ctx)
        .with_tls(files(false))
        .client_for(&h)
        .unwrap();
    assert!(
        without.list_guests().await.is_err(),
        "no client certificate"
    );
    let plain = MistifyAgent::new(&ctx).client_for(&h).unwrap();
    assert!(plain.list_guests().await.is_err(), "plain HTTP");
    let missing = mistify_client::TlsFiles {
        ca: Some(dir.path().join("missing.pem")),
        ..Default::default()
    };
    assert!(matches!(
        MistifyAgent::new(&ctx).with_tls(missing).client_for(&h),
        Err(Error::Invalid(_))
    ));
}
