//! The JSON-RPC endpoint of a sub-agent (`mistify_rpc::Server`) fed any body: it must
//! answer, never panic, and never with a 5xx.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mistify_rpc::{GuestRequest, GuestResponse, Server};
use tower::ServiceExt;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn router() -> axum::Router {
    static ROUTER: OnceLock<axum::Router> = OnceLock::new();
    ROUTER
        .get_or_init(|| {
            Server::new("fuzz")
                .method("Fuzz.Echo", |req: GuestRequest| async move {
                    Ok::<_, String>(GuestResponse {
                        guest: req.guest,
                        ..Default::default()
                    })
                })
                .into_router()
        })
        .clone()
}

fuzz_target!(|body: &[u8]| {
    let request = axum::http::Request::post("/_mistify_RPC_")
        .header("Content-Type", "application/json")
        .body(axum::body::Body::from(body.to_vec()))
        .expect("request");
    let status = runtime().block_on(async {
        let response = router().oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
        status
    });
    assert!(status < 500, "status {status}");
});
