//! The example sub-agents as processes: they answer over real HTTP and stop cleanly on
//! SIGTERM.

use std::time::Duration;

use mistify_e2e::{example, free_port, Daemon};
use mistify_rpc::{Client, Guest, GuestRequest, GuestResponse, RpcError, ServiceConfig};

fn request() -> GuestRequest {
    GuestRequest {
        guest: Some(Guest {
            id: "g-example".into(),
            ..Guest::default()
        }),
        action: "create".into(),
        ..GuestRequest::default()
    }
}

fn start(name: &str, extra: &[&str]) -> Daemon {
    let port = free_port();
    let mut args = vec!["--port".to_string(), port.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Daemon::start(&example(name), &args, port)
}

#[tokio::test]
async fn simple_subagent_succeeds_or_fails_as_told_and_stops_on_sigterm() {
    let mut never = start("simple-subagent", &["--percent", "0"]);
    let mut always = start("simple-subagent", &["--percent", "150"]);
    let client = Client::new();
    let ok = client.service("simple", ServiceConfig::url(never.url()));
    for _ in 0..20 {
        let reply: GuestResponse = ok.call("Simple.DoStuff", &request()).await.unwrap();
        assert_eq!(reply.guest.map(|g| g.id).as_deref(), Some("g-example"));
    }
    let failing = client.service("simple", ServiceConfig::url(always.url()));
    let err = failing
        .call::<_, GuestResponse>("Simple.DoStuff", &request())
        .await
        .unwrap_err();
    match err {
        RpcError::Remote { message, .. } => {
            assert_eq!(message, "returning an error as I do 100% of the time")
        }
        other => panic!("expected the sub-agent's error, got {other:?}"),
    }
    for daemon in [&mut never, &mut always] {
        let status = daemon
            .terminate(Duration::from_secs(10))
            .expect("still running after SIGTERM");
        assert!(status.success(), "exit status {status:?}");
    }
}

#[tokio::test]
async fn test_rpc_service_download_route_and_sigterm() {
    let mut daemon = start("test-rpc-service", &[]);
    let service = Client::new().service(
        "testDownload",
        ServiceConfig::url(daemon.url()).path("/snapshots/download"),
    );
    let stream = service
        .stream(&serde_json::json!({"id": "guests/x@s", "dest": "", "recursive": true, "destroyMoreRecent": false}))
        .await
        .unwrap();
    assert_eq!(stream.status.as_u16(), 200);
    assert_eq!(stream.headers["content-type"], "application/octet-stream");
    assert_eq!(stream.collect().await.unwrap().as_ref(), b"foobar");
    let status = daemon
        .terminate(Duration::from_secs(10))
        .expect("still running after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}
