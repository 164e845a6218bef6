//! Property tests of the JSON-RPC endpoint (the real `Server` router, in process): no
//! body, however malformed, gets a 5xx or a panic; every well-formed call is answered
//! with its id echoed byte for byte, in the dialect it was asked in (a v1 call with a null
//! id is a notification, as in gorilla: an empty reply body).

use mistify_rpc::{GuestRequest, GuestResponse, Server};
use proptest::prelude::*;
use tower::ServiceExt;

fn router() -> axum::Router {
    Server::new("prop")
        .method("Prop.Echo", |req: GuestRequest| async move {
            Ok::<_, String>(GuestResponse {
                guest: req.guest,
                ..Default::default()
            })
        })
        .into_router()
}

/// Status and body of POSTing `body` to the RPC path.
fn post(runtime: &tokio::runtime::Runtime, body: Vec<u8>) -> (u16, String) {
    runtime.block_on(async {
        let request = axum::http::Request::post("/_mistify_RPC_")
            .header("Content-Type", "application/json")
            .body(axum::body::Body::from(body))
            .expect("request");
        let response = router().oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).to_string())
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// JSON ids as a client may write them: integers of any size, floats, strings, null.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[1-9][0-9]{18,24}",
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| { serde_json::to_string(&f).expect("float") }),
        any::<String>().prop_map(|s| serde_json::to_string(&s).expect("string")),
        Just("null".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_body_gets_a_server_error(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (status, text) = post(&runtime(), body);
        prop_assert!(status < 500, "{status}: {text}");
    }

    #[test]
    fn json_shaped_garbage_gets_no_server_error(
        method in prop_oneof![Just("Prop.Echo".to_string()), "[A-Za-z.]{0,12}"],
        params in prop_oneof![Just("[{}]".to_string()), Just("[]".to_string()), Just("{}".to_string()), Just("null".to_string()), Just("[1,2]".to_string())],
        id in id(),
        v2 in any::<bool>(),
    ) {
        let version = if v2 { r#""jsonrpc":"2.0","# } else { "" };
        let body = format!(r#"{{{version}"method":{},"params":{params},"id":{id}}}"#,
            serde_json::to_string(&method).expect("method"));
        let (status, text) = post(&runtime(), body.into_bytes());
        prop_assert!(status < 500, "{status}: {text}");
    }

    #[test]
    fn a_well_formed_call_echoes_its_id_exactly(id in id(), v2 in any::<bool>()) {
        let version = if v2 { r#""jsonrpc":"2.0","# } else { "" };
        let body = format!(r#"{{{version}"method":"Prop.Echo","params":[{{"guest":{{"id":"g1"}}}}],"id":{id}}}"#);
        let (status, text) = post(&runtime(), body.into_bytes());
        prop_assert_eq!(status, 200, "{}", text);
        if id == "null" && !v2 {
            // gorilla v1: a null id is a notification, answered with an empty body.
            prop_assert_eq!(text, "");
            return Ok(());
        }
        let needle = format!(r#""id":{id}"#);
        prop_assert!(text.contains(&needle), "{} not in {}", needle, text);
        prop_assert!(text.contains(r#""g1""#), "{}", text);
        prop_assert_eq!(text.contains(r#""jsonrpc":"2.0""#), v2, "{}", text);
    }
}
