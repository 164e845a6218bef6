//! `Server::require_token` against `ServiceConfig::token` over real HTTP, and the refusal
//! to listen beyond loopback without `Server::allow_remote`.

use axum::routing::get;
use mistify_rpc::{Client, GuestRequest, GuestResponse, RunningServer, Server, ServiceConfig};

const TOKEN: &str = "shared-sub-agent-token-42";

async fn start() -> RunningServer {
    Server::new("guarded")
        .method("Test.Echo", |req: GuestRequest| async move {
            Ok::<_, String>(GuestResponse {
                guest: req.guest,
                ..Default::default()
            })
        })
        .route("/extra", get(|| async { "extra route" }))
        .require_token(TOKEN)
        .bind(([127, 0, 0, 1], 0).into())
        .await
        .expect("bind")
        .spawn()
        .expect("spawn")
}

#[tokio::test]
async fn a_guarded_sub_agent_answers_only_the_token() {
    let server = start().await;
    let port = server.addr().port();
    let client = Client::new();
    let call = |token: Option<&str>| {
        let svc = client.service(
            "guarded",
            ServiceConfig::local(port).token(token.map(str::to_string)),
        );
        async move {
            svc.call::<_, GuestResponse>("Test.Echo", &GuestRequest::default())
                .await
        }
    };
    call(Some(TOKEN)).await.expect("with the token");
    for token in [None, Some("shared-sub-agent-token-43"), Some("short")] {
        let err = call(token).await.expect_err("refused").to_string();
        assert!(err.contains("401"), "{token:?}: {err}");
    }
    // Plain routes are guarded too; /healthz is not.
    let http = reqwest::Client::new();
    let extra = http
        .get(format!("{}/extra", server.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(extra.status().as_u16(), 401);
    assert!(extra.headers().contains_key("www-authenticate"));
    let extra = http
        .get(format!("{}/extra", server.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(extra.text().await.expect("body"), "extra route");
    let health = http
        .get(format!("{}/healthz", server.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test]
async fn binding_beyond_loopback_needs_allow_remote() {
    let refused = Server::new("shy").bind(([0, 0, 0, 0], 0).into()).await;
    let err = refused.err().expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("beyond loopback"), "{err}");
    let allowed = Server::new("bold")
        .allow_remote()
        .bind(([0, 0, 0, 0], 0).into())
        .await
        .expect("allowed");
    assert!(allowed.local_addr().expect("addr").ip().is_unspecified());
}

#[test]
fn token_files_give_their_first_token() {
    let dir = std::env::temp_dir().join(format!("mistify-rpc-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("token");
    std::fs::write(
        &file,
        "# comment\n\n  abc-def-0123456789  \nsecond-token-0123456789\n",
    )
    .expect("write");
    assert_eq!(
        mistify_rpc::read_token_file(&file).expect("token"),
        "abc-def-0123456789"
    );
    // The rules of every token file: too short is refused, naming the line.
    std::fs::write(&file, "abc-def\n").expect("write");
    let e = mistify_rpc::read_token_file(&file).expect_err("short");
    assert!(e.contains(":1:") && e.contains("too short"), "{e}");
    std::fs::write(&file, "# only\n").expect("write");
    assert!(mistify_rpc::read_token_file(&file).is_err());
    std::fs::write(&file, "two words\n").expect("write");
    assert!(mistify_rpc::read_token_file(&file).is_err());
    assert!(mistify_rpc::read_token_file(&dir.join("missing")).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
