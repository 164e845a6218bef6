//! The REST client against a real HTTP server (axum on 127.0.0.1) that records what it
//! receives and answers with canned replies.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use mistify_client::Accepted;
use mistify_client::{
    Client, ClientError, Guest, GuestAction, ImageRequest, JobStatus, MetadataPatch,
    SnapshotRequest,
};
use serde_json::{json, Value};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query exactly as sent (still percent-encoded).
    uri: String,
    headers: HeaderMap,
    body: Vec<u8>,
    peer: SocketAddr,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type BoxResponse = Pin<Box<dyn Future<Output = Response> + Send>>;
type Handler = Arc<dyn Fn(Seen) -> BoxResponse + Send + Sync>;

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    handler: Handler,
}

struct Server {
    base: String,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn only_request(&self) -> Seen {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected exactly one request, got {all:?}");
        all.into_iter().next().unwrap()
    }
    fn client(&self) -> Client {
        Client::new(&self.base).unwrap()
    }
}

async fn record(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        body,
        peer,
    };
    shared.seen.lock().unwrap().push(seen.clone());
    (shared.handler)(seen).await
}

/// Starts a server on a free port answering every request with `handler`.
async fn serve<F, Fut>(handler: F) -> Server
where
    F: Fn(Seen) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = Shared {
        seen: seen.clone(),
        handler: Arc::new(move |s| Box::pin(handler(s)) as BoxResponse),
    };
    let app = Router::new().fallback(record).with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server {
        base: format!("http://{addr}"),
        addr,
        seen,
    }
}

/// A canned reply.
fn reply(status: u16, body: &str, headers: &[(&str, &str)]) -> Response {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn json_reply(status: u16, body: Value, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    reply(status, &format!("{body}\n"), &all)
}

/// A server that answers every request with the same JSON.
async fn serve_json(
    status: u16,
    body: Value,
    headers: &'static [(&'static str, &'static str)],
) -> Server {
    serve(move |_| {
        let body = body.clone();
        async move { json_reply(status, body, headers) }
    })
    .await
}

fn guest_json(id: &str, state: &str) -> Value {
    json!({"id": id, "type": "kvm", "state": state, "memory": 512, "cpu": 2,
           "nics": [{"network": "br0", "model": "virtio", "address": "", "netmask": "",
                     "gateway": "", "vlans": null}]})
}

fn job_json(id: &str, status: &str) -> Value {
    json!({"ID": id, "GuestID": "g1", "Action": "start",
           "QueuedAt": "2015-06-01T12:00:00Z", "StartedAt": "0001-01-01T00:00:00Z",
           "UpdatedAt": "2015-06-01T12:00:01Z", "Status": status, "Message": ""})
}

const G: &str = "5a0c9e2e-1111-4222-8333-444455556666";

// ----- lists and null bodies ------------------------------------------------------

#[tokio::test]
async fn list_guests_null_body_is_empty() {
    let server = serve_json(200, Value::Null, &[]).await;
    let guests = server.client().list_guests().await.unwrap();
    assert!(guests.is_empty());
    let seen = server.only_request();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/guests");
    assert!(seen.body.is_empty());
}

#[tokio::test]
async fn list_guests_decodes_a_list() {
    let server = serve_json(
        200,
        json!([guest_json("a", "running"), guest_json("b", "shutoff")]),
        &[],
    )
    .await;
    let guests = server.client().list_guests().await.unwrap();
    assert_eq!(guests.len(), 2);
    assert_eq!(guests[0].id, "a");
    assert_eq!(guests[0].state, "running");
    assert_eq!(guests[0].memory, 512);
    assert_eq!(guests[0].nics[0].network, "br0");
    assert_eq!(guests[1].id, "b");
    assert_eq!(guests[1].state, "shutoff");
}

#[tokio::test]
async fn null_bodies_become_empty_collections() {
    let server = serve_json(200, Value::Null, &[]).await;
    let c = server.client();
    assert!(c.list_images(None).await.unwrap().is_empty());
    assert!(c.get_guest_metadata(G).await.unwrap().is_empty());
    assert!(c.cpu_metrics(G).await.unwrap().is_empty());
    assert!(c.disk_metrics(G).await.unwrap().is_empty());
    assert!(c.nic_metrics(G).await.unwrap().is_empty());
    let uris: Vec<String> = server.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        uris,
        [
            "/images".to_string(),
            format!("/guests/{G}/metadata"),
            format!("/guests/{G}/metrics/cpu"),
            format!("/guests/{G}/metrics/disk"),
            format!("/guests/{G}/metrics/nic"),
        ]
    );
}

#[tokio::test]
async fn metrics_decode() {
    let server = serve(|s: Seen| async move {
        let body = if s.uri.ends_with("/cpu") {
            json!([{"cpu_time": 1.5, "vcpu_time": 0}])
        } else if s.uri.ends_with("/disk") {
            json!({"vda": {"disk": "vda", "read_ops": 3, "read_bytes": 4096, "read_time": 0.25}})
        } else {
            json!({"vnet0": {"name": "vnet0", "rx_bytes": 10, "tx_packets": 2}})
        };
        json_reply(200, body, &[("X-Guest-Job-ID", "m1")])
    })
    .await;
    let c = server.client();
    let cpu = c.cpu_metrics(G).await.unwrap();
    assert_eq!(cpu.len(), 1);
    assert_eq!(cpu[0].cpu_time, 1.5);
    let disk = c.disk_metrics(G).await.unwrap();
    assert_eq!(disk["vda"].read_bytes, 4096);
    assert_eq!(disk["vda"].read_time, 0.25);
    let nic = c.nic_metrics(G).await.unwrap();
    assert_eq!(nic["vnet0"].rx_bytes, 10);
    assert_eq!(nic["vnet0"].tx_packets, 2);
}

// ----- guests -------------------------------------------------------------------

#[tokio::test]
async fn create_guest_posts_json_and_captures_job_id() {
    let server = serve(|s: Seen| async move {
        let mut guest = s.json();
        guest["state"] = json!("create");
        // Mixed case on purpose: header names are case-insensitive.
        json_reply(202, guest, &[("x-GUEST-job-id", "job-42")])
    })
    .await;
    let guest = Guest {
        id: G.to_string(),
        memory: 1024,
        cpu: 2,
        metadata: BTreeMap::from([("owner".to_string(), "ops".to_string())]),
        ..Guest::default()
    };
    let Accepted {
        job_id,
        status,
        body,
    } = server.client().create_guest(&guest).await.unwrap();
    assert_eq!(job_id.as_deref(), Some("job-42"));
    assert_eq!(status, 202);
    assert_eq!(body.id, G);
    assert_eq!(body.state, "create");
    assert_eq!(body.memory, 1024);

    let seen = server.only_request();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/guests");
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.json(), serde_json::to_value(&guest).unwrap());
    assert_eq!(
        seen.json(),
        json!({"id": G, "memory": 1024, "cpu": 2, "metadata": {"owner": "ops"}})
    );
}

#[tokio::test]
async fn get_guest_and_its_jobs() {
    let server = serve(|s: Seen| async move {
        if s.uri.contains("/jobs") {
            if s.uri.ends_with("/jobs/j1") {
                json_reply(200, job_json("j1", "Complete"), &[])
            } else {
                json_reply(
                    200,
                    json!([job_json("j2", "Running"), job_json("j1", "Complete")]),
                    &[],
                )
            }
        } else {
            json_reply(200, guest_json(G, "running"), &[])
        }
    })
    .await;
    let c = server.client();
    assert_eq!(c.get_guest(G).await.unwrap().state, "running");
    let jobs = c.list_guest_jobs(G, Some(2)).await.unwrap();
    assert_eq!(
        jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["j2", "j1"]
    );
    assert_eq!(jobs[0].status, JobStatus::Running);
    let job = c.get_guest_job(G, "j1").await.unwrap();
    assert_eq!(job.status, JobStatus::Complete);
    let uris: Vec<String> = server.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        uris,
        [
            format!("/guests/{G}"),
            format!("/guests/{G}/jobs?limit=2"),
            format!("/guests/{G}/jobs/j1"),
        ]
    );
}

#[tokio::test]
async fn guest_action_hits_each_route() {
    let server = serve(|s: Seen| async move {
        let action = s.uri.rsplit('/').next().unwrap_or_default().to_string();
        json_reply(
            202,
            guest_json(G, "running"),
            &[("X-Guest-Job-ID", &format!("job-{action}"))],
        )
    })
    .await;
    let c = server.client();
    for action in GuestAction::ALL {
        let accepted = c.guest_action(G, action).await.unwrap();
        assert_eq!(accepted.job_id, Some(format!("job-{action}")));
        assert_eq!(accepted.body.id, G);
    }
    let seen = server.requests();
    let got: Vec<(String, String)> = seen
        .iter()
        .map(|s| (s.method.clone(), s.uri.clone()))
        .collect();
    let want: Vec<(String, String)> = [
        "shutdown", "reboot", "restart", "poweroff", "start", "suspend", "resume", "delete",
    ]
    .iter()
    .map(|a| ("POST".to_string(), format!("/guests/{G}/{a}")))
    .collect();
    assert_eq!(got, want);
}

// ----- errors -------------------------------------------------------------------

#[tokio::test]
async fn json_404_is_an_api_error() {
    let server = serve_json(
        404,
        json!({"message": "not found", "code": 404, "stack": []}),
        &[],
    )
    .await;
    let err = server.client().get_guest("nope").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.message(), "not found");
    assert!(err.is_not_found());
    assert_eq!(err.to_string(), "agent answered 404: not found");
    match err {
        ClientError::Api { body, text, .. } => {
            assert_eq!(body.code, 404);
            assert!(body.stack.is_empty());
            assert_eq!(
                text.trim(),
                r#"{"code":404,"message":"not found","stack":[]}"#
            );
        }
        other => panic!("expected Api, got {other:?}"),
    }
    assert_eq!(server.only_request().uri, "/guests/nope");
}

#[tokio::test]
async fn text_500_is_an_api_error_with_the_text() {
    let server = serve(|_| async {
        reply(
            500,
            "sub-agent exploded\n",
            &[("content-type", "text/plain; charset=utf-8")],
        )
    })
    .await;
    let err = server.client().list_jobs(None).await.unwrap_err();
    match &err {
        ClientError::Api {
            status, body, text, ..
        } => {
            assert_eq!(*status, 500);
            assert_eq!(body.message, "sub-agent exploded");
            assert_eq!(body.code, 500);
            assert_eq!(text, "sub-agent exploded\n");
        }
        other => panic!("expected Api, got {other:?}"),
    }
    assert_eq!(err.to_string(), "agent answered 500: sub-agent exploded");
}

#[tokio::test]
async fn bad_json_on_success_is_a_decode_error() {
    let server = serve(|_| async { reply(200, "<html>", &[]) }).await;
    let err = server.client().get_guest(G).await.unwrap_err();
    match err {
        ClientError::Decode { what, .. } => assert_eq!(what, format!("GET /guests/{G}")),
        other => panic!("expected Decode, got {other:?}"),
    }
}

#[tokio::test]
async fn unsafe_ids_are_refused_before_sending() {
    let server = serve_json(200, Value::Null, &[]).await;
    let c = server.client();
    let bad = [
        "a/b",
        "..",
        "a b",
        "",
        ".",
        "x?y",
        "x#y",
        "tab\there",
        "nl\n",
        "back\\slash",
    ];
    let req = SnapshotRequest::default();
    for id in bad {
        let results: Vec<Result<(), ClientError>> = vec![
            c.get_guest(id).await.map(drop),
            c.get_job(id).await.map(drop),
            c.get_image(id).await.map(drop),
            c.delete_image(id).await.map(drop),
            c.guest_action(id, GuestAction::Start).await.map(drop),
            c.get_guest_metadata(id).await.map(drop),
            c.cpu_metrics(id).await.map(drop),
            c.get_guest_job(G, id).await.map(drop),
            c.wait_job(id, Duration::from_secs(1)).await.map(drop),
            c.cancel_job(id).await.map(drop),
            c.list_snapshots(G, Some(id)).await.map(drop),
            c.get_snapshot(G, None, id).await.map(drop),
            c.delete_snapshot(G, Some("0"), id).await.map(drop),
            c.rollback_snapshot(id, None, "s", &req).await.map(drop),
            c.create_snapshot(G, Some(id), &req).await.map(drop),
            c.download_snapshot(G, None, id).await.map(drop),
        ];
        for (i, r) in results.into_iter().enumerate() {
            assert!(
                matches!(r, Err(ClientError::InvalidInput(_))),
                "call #{i} with id {id:?} gave {r:?}"
            );
        }
    }
    assert_eq!(
        server.requests().len(),
        0,
        "no request may reach the server"
    );
    // A valid call on the same client does reach it.
    c.get_guest_metadata(G).await.unwrap();
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn odd_but_safe_ids_are_percent_encoded() {
    let server = serve_json(200, json!({"id": "x"}), &[]).await;
    let c = server.client();
    c.get_guest("a%b").await.unwrap();
    c.get_guest("ü").await.unwrap();
    let uris: Vec<String> = server.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/guests/a%25b", "/guests/%C3%BC"]);
}

#[tokio::test]
async fn unanswered_call_times_out_naming_the_route() {
    let server = serve(|_| std::future::pending::<Response>()).await;
    let c = server.client().with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = c.get_guest("abc").await.unwrap_err();
    let took = started.elapsed();
    match &err {
        ClientError::Timeout { what, after } => {
            assert_eq!(what, "GET /guests/abc");
            assert_eq!(*after, Duration::from_millis(300));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(err.is_timeout());
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert_eq!(err.to_string(), "GET /guests/abc timed out after 300ms");
}

#[tokio::test]
async fn refused_connection_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = Client::new(&addr.to_string())
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    match c.list_guests().await.unwrap_err() {
        ClientError::Transport { what, .. } => assert_eq!(what, "GET /guests"),
        other => panic!("expected Transport, got {other:?}"),
    }
}

// ----- client construction and connection reuse ---------------------------------

#[tokio::test]
async fn bare_host_port_and_path_prefix() {
    let server = serve_json(200, json!({"a": "1"}), &[]).await;
    let bare = Client::new(&server.addr.to_string()).unwrap();
    assert_eq!(bare.get_metadata().await.unwrap()["a"], "1");
    let prefixed = Client::new(&format!("{}/agent/", server.base)).unwrap();
    prefixed.get_metadata().await.unwrap();
    let uris: Vec<String> = server.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/metadata", "/agent/metadata"]);
    assert!(Client::new("https://x:1").is_ok(), "https is accepted");
    assert!(matches!(
        Client::new("ftp://x:1"),
        Err(ClientError::InvalidInput(_))
    ));
    assert!(matches!(Client::new(""), Err(ClientError::InvalidInput(_))));
}

#[tokio::test]
async fn clones_share_one_connection() {
    let server = serve_json(200, Value::Null, &[]).await;
    let a = server.client();
    let b = a.clone();
    a.list_guests().await.unwrap();
    b.list_guests().await.unwrap();
    a.list_images(None).await.unwrap();
    let peers: Vec<SocketAddr> = server.requests().into_iter().map(|s| s.peer).collect();
    assert_eq!(peers.len(), 3);
    assert!(
        peers.iter().all(|p| *p == peers[0]),
        "connections: {peers:?}"
    );
    // And the client does not ask for compressed answers.
    assert!(server.requests()[0].header("accept-encoding").is_none());
}

// ----- metadata -----------------------------------------------------------------

#[tokio::test]
async fn patch_metadata_sends_null_for_deletes() {
    let server = serve_json(200, json!({"a": "b"}), &[]).await;
    let c = server.client();
    let patch: MetadataPatch = BTreeMap::from([
        ("k".to_string(), None),
        ("a".to_string(), Some("b".to_string())),
    ]);
    let after = c.patch_metadata(&patch).await.unwrap();
    assert_eq!(after, BTreeMap::from([("a".to_string(), "b".to_string())]));
    let only_delete: MetadataPatch = BTreeMap::from([("k".to_string(), None)]);
    c.patch_guest_metadata(G, &only_delete).await.unwrap();

    let seen = server.requests();
    assert_eq!(seen[0].method, "PATCH");
    assert_eq!(seen[0].uri, "/metadata");
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(
        String::from_utf8_lossy(&seen[0].body),
        r#"{"a":"b","k":null}"#
    );
    assert_eq!(seen[1].method, "PATCH");
    assert_eq!(seen[1].uri, format!("/guests/{G}/metadata"));
    assert_eq!(String::from_utf8_lossy(&seen[1].body), r#"{"k":null}"#);
}

#[tokio::test]
async fn guest_metadata_patched_to_empty_comes_back_empty() {
    let server = serve_json(200, Value::Null, &[]).await;
    let patch: MetadataPatch = BTreeMap::from([("k".to_string(), None)]);
    assert!(server
        .client()
        .patch_guest_metadata(G, &patch)
        .await
        .unwrap()
        .is_empty());
}

// ----- images and jobs ----------------------------------------------------------

#[tokio::test]
async fn image_routes() {
    let server = serve(|s: Seen| async move {
        match (s.method.as_str(), s.uri.as_str()) {
            ("GET", "/images?type=container") => json_reply(
                200,
                json!([{"id": "c1", "type": "container", "size": 5}]),
                &[],
            ),
            ("GET", "/images") => json_reply(200, json!([{"id": "d1", "type": ""}]), &[]),
            ("POST", "/images") => json_reply(
                202,
                json!({"images": null}),
                &[("X-Guest-Job-ID", "fetch-1")],
            ),
            ("GET", "/images/d1") => {
                json_reply(200, json!({"id": "d1", "type": "", "size": 1024}), &[])
            }
            ("DELETE", "/images/d1") => json_reply(202, json!({}), &[("X-Guest-Job-ID", "del-1")]),
            _ => json_reply(
                404,
                json!({"message": "not found", "code": 404, "stack": []}),
                &[],
            ),
        }
    })
    .await;
    let c = server.client();
    let containers = c.list_images(Some("container")).await.unwrap();
    assert_eq!(containers[0].id, "c1");
    assert_eq!(containers[0].kind, "container");
    assert_eq!(c.list_images(None).await.unwrap()[0].id, "d1");

    let req = ImageRequest {
        id: "d1".into(),
        ..ImageRequest::default()
    };
    let fetched = c.fetch_image(&req).await.unwrap();
    assert_eq!(fetched.job_id.as_deref(), Some("fetch-1"));
    assert_eq!(fetched.status, 202);
    assert_eq!(fetched.body.images, None);

    assert_eq!(c.get_image("d1").await.unwrap().size, 1024);
    let deleted = c.delete_image("d1").await.unwrap();
    assert_eq!(deleted.job_id.as_deref(), Some("del-1"));
    assert!(c.get_image("zz").await.unwrap_err().is_not_found());

    let seen = server.requests();
    assert_eq!(
        seen[2].json(),
        json!({"id": "d1", "type": "", "dest": "", "source": ""})
    );
    assert_eq!(seen[2].header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn job_routes_and_long_poll_extends_the_deadline() {
    let server = serve(|s: Seen| async move {
        if s.uri.contains("wait=") {
            // Longer than the client's timeout, shorter than timeout + wait.
            tokio::time::sleep(Duration::from_millis(600)).await;
            json_reply(200, job_json("j1", "Complete"), &[])
        } else if s.method == "DELETE" {
            json_reply(200, job_json("j1", "Error"), &[])
        } else if s.uri.starts_with("/jobs/") {
            json_reply(200, job_json("j1", "Running"), &[])
        } else {
            json_reply(200, json!([job_json("j1", "Running")]), &[])
        }
    })
    .await;
    let c = server.client().with_timeout(Duration::from_millis(400));
    assert_eq!(c.list_jobs(Some(5)).await.unwrap().len(), 1);
    assert_eq!(c.list_jobs(None).await.unwrap()[0].id, "j1");
    assert_eq!(c.get_job("j1").await.unwrap().status, JobStatus::Running);
    let done = c.wait_job("j1", Duration::from_secs(2)).await.unwrap();
    assert_eq!(done.status, JobStatus::Complete);
    assert_eq!(c.cancel_job("j1").await.unwrap().status, JobStatus::Error);
    let got: Vec<(String, String)> = server
        .requests()
        .into_iter()
        .map(|s| (s.method, s.uri))
        .collect();
    let want = [
        ("GET", "/jobs?limit=5"),
        ("GET", "/jobs"),
        ("GET", "/jobs/j1"),
        ("GET", "/jobs/j1?wait=2"),
        ("DELETE", "/jobs/j1"),
    ]
    .map(|(m, u)| (m.to_string(), u.to_string()));
    assert_eq!(got, want);
}

#[tokio::test]
async fn healthz_returns_json() {
    let server = serve_json(200, json!({"status": "ok"}), &[]).await;
    assert_eq!(
        server.client().healthz().await.unwrap(),
        json!({"status": "ok"})
    );
    assert_eq!(server.only_request().uri, "/healthz");
}

// ----- snapshots ----------------------------------------------------------------

#[tokio::test]
async fn snapshot_routes_with_and_without_disk() {
    let server = serve(|s: Seen| async move {
        let job = [("X-Guest-Job-ID", "snap-job")];
        match s.method.as_str() {
            "GET" => json_reply(
                200,
                json!([{"id": format!("guests/{G}/disk-0@n1"), "size": 7}]),
                &job,
            ),
            // The Go agent answers its async snapshot routes with 200 `null`.
            _ if s.uri.ends_with("/rollback") => json_reply(200, Value::Null, &job),
            "DELETE" => json_reply(200, Value::Null, &job),
            _ => json_reply(202, Value::Null, &job),
        }
    })
    .await;
    let c = server.client();
    let req = SnapshotRequest {
        dest: "n1".into(),
        ..SnapshotRequest::default()
    };
    let rb = SnapshotRequest {
        destroy_more_recent: true,
        ..SnapshotRequest::default()
    };

    for disk in [Some("0"), None] {
        let list = c.list_snapshots(G, disk).await.unwrap();
        assert_eq!(list[0].size, 7);
        let created = c.create_snapshot(G, disk, &req).await.unwrap();
        assert_eq!(
            created,
            Accepted {
                job_id: Some("snap-job".into()),
                status: 202,
                body: ()
            }
        );
        assert_eq!(c.get_snapshot(G, disk, "n1").await.unwrap().len(), 1);
        let deleted = c.delete_snapshot(G, disk, "n1").await.unwrap();
        assert_eq!(
            (deleted.job_id.as_deref(), deleted.status),
            (Some("snap-job"), 200)
        );
        let rolled = c.rollback_snapshot(G, disk, "n1", &rb).await.unwrap();
        assert_eq!(rolled.job_id.as_deref(), Some("snap-job"));
    }

    let seen = server.requests();
    let got: Vec<(String, String)> = seen
        .iter()
        .map(|s| (s.method.clone(), s.uri.clone()))
        .collect();
    let mut want = Vec::new();
    for base in [
        format!("/guests/{G}/disks/0/snapshots"),
        format!("/guests/{G}/snapshots"),
    ] {
        want.extend([
            ("GET".to_string(), base.clone()),
            ("POST".to_string(), base.clone()),
            ("GET".to_string(), format!("{base}/n1")),
            ("DELETE".to_string(), format!("{base}/n1")),
            ("POST".to_string(), format!("{base}/n1/rollback")),
        ]);
    }
    assert_eq!(got, want);
    assert_eq!(
        seen[1].json(),
        json!({"id": "", "dest": "n1", "recursive": false, "destroyMoreRecent": false})
    );
    assert_eq!(seen[1].header("content-type"), Some("application/json"));
    assert_eq!(seen[4].json()["destroyMoreRecent"], json!(true));
}

/// A download server: the body is `chunks` sent with `gap` between them; if `stall`,
/// the body then hangs forever instead of ending.
async fn serve_download(chunks: Vec<&'static str>, gap: Duration, stall: bool) -> Server {
    serve(move |_| {
        let chunks = chunks.clone();
        async move {
            let body = futures::stream::iter(chunks)
                .then(move |c| async move {
                    tokio::time::sleep(gap).await;
                    Ok::<_, std::io::Error>(Bytes::from_static(c.as_bytes()))
                })
                .chain(if stall {
                    futures::stream::pending().left_stream()
                } else {
                    futures::stream::empty().right_stream()
                });
            Response::builder()
                .status(200)
                .header("content-type", "application/octet-stream")
                .header("X-Guest-Job-ID", "dl-1")
                .body(Body::from_stream(body))
                .unwrap()
        }
    })
    .await
}

#[tokio::test]
async fn download_streams_chunks() {
    let server = serve_download(
        vec!["first-", "second-", "third"],
        Duration::from_millis(20),
        false,
    )
    .await;
    let dl = server
        .client()
        .download_snapshot(G, Some("0"), "n1")
        .await
        .unwrap();
    assert_eq!(dl.job_id.as_deref(), Some("dl-1"));
    assert_eq!(dl.content_length, None);
    let chunks: Vec<Bytes> = dl.map(|c| c.unwrap()).collect().await;
    let all: Vec<u8> = chunks.concat();
    assert_eq!(all, b"first-second-third");
    assert!(!chunks.is_empty());
    let seen = server.only_request();
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.uri,
        format!("/guests/{G}/disks/0/snapshots/n1/download")
    );
}

#[tokio::test]
async fn slow_but_moving_download_outlives_the_timeout() {
    // 5 chunks 120 ms apart = 600 ms in total, with a 300 ms timeout.
    let server = serve_download(
        vec!["a", "b", "c", "d", "e"],
        Duration::from_millis(120),
        false,
    )
    .await;
    let c = server.client().with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let dl = c.download_snapshot(G, None, "n1").await.unwrap();
    let all = dl.collect_bytes().await.unwrap();
    assert_eq!(all, b"abcde");
    assert!(started.elapsed() > Duration::from_millis(300));
    assert_eq!(
        server.only_request().uri,
        format!("/guests/{G}/snapshots/n1/download")
    );
}

#[tokio::test]
async fn stalled_download_fails_with_idle_timeout() {
    let server = serve_download(vec!["only-chunk"], Duration::from_millis(10), true).await;
    let c = server.client().with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let mut dl = c.download_snapshot(G, None, "n1").await.unwrap();
    let mut got = Vec::new();
    let err = loop {
        match dl.next().await {
            Some(Ok(chunk)) => got.extend_from_slice(&chunk),
            Some(Err(e)) => break e,
            None => panic!("a stalled download must not end cleanly"),
        }
    };
    let took = started.elapsed();
    assert_eq!(got, b"only-chunk");
    match &err {
        ClientError::Timeout { what, after } => {
            assert!(
                what.contains(&format!("GET /guests/{G}/snapshots/n1/download")),
                "{what}"
            );
            assert_eq!(*after, Duration::from_millis(300));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert!(
        dl.next().await.is_none(),
        "the stream ends after the timeout"
    );
}

#[tokio::test]
async fn download_error_is_an_api_error() {
    let server = serve(|_| async {
        reply(
            404,
            "no such snapshot\n",
            &[
                ("content-type", "text/plain; charset=utf-8"),
                ("X-Guest-Job-ID", "x"),
            ],
        )
    })
    .await;
    let err = server
        .client()
        .download_snapshot(G, None, "gone")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.message(), "no such snapshot");
}

#[tokio::test]
async fn download_headers_never_sent_times_out() {
    let server = serve(|_| std::future::pending::<Response>()).await;
    let c = server.client().with_timeout(Duration::from_millis(200));
    match c.download_snapshot(G, Some("1"), "n1").await.unwrap_err() {
        ClientError::Timeout { what, after } => {
            assert_eq!(
                what,
                format!("GET /guests/{G}/disks/1/snapshots/n1/download")
            );
            assert_eq!(after, Duration::from_millis(200));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
}

// ----- field validation and warnings ------------------------------------------------

#[tokio::test]
async fn strict_fields_go_with_bodies_and_warnings_reach_the_hook() {
    let server = serve(|seen: Seen| async move {
        match seen.method.as_str() {
            "POST" => json_reply(
                202,
                guest_json(G, "create"),
                &[
                    ("x-guest-job-id", "j1"),
                    ("warning", r#"299 - "unknown field \"a\"""#),
                    ("warning", r#"299 - "unknown field \"b\"""#),
                ],
            ),
            _ => json_reply(
                404,
                json!({"message": "gone", "code": 404}),
                &[("warning", r#"299 - "going away""#)],
            ),
        }
    })
    .await;
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let sink = warnings.clone();
    let client = server
        .client()
        .with_strict_fields()
        .on_warning(move |w| sink.lock().unwrap().push(mistify_client::warning_text(w)));

    client.create_guest(&Guest::default()).await.unwrap();
    let rollback = SnapshotRequest::default();
    client
        .rollback_snapshot(G, None, "s1", &rollback)
        .await
        .unwrap();
    // A request without a body carries no parameter; its error answer's warning counts.
    client.get_guest(G).await.unwrap_err();
    let uris: Vec<String> = server.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        uris,
        [
            "/guests?fieldValidation=Strict".to_string(),
            format!("/guests/{G}/snapshots/s1/rollback?fieldValidation=Strict"),
            format!("/guests/{G}"),
        ]
    );
    assert_eq!(
        *warnings.lock().unwrap(),
        [
            r#"unknown field "a""#,
            r#"unknown field "b""#,
            r#"unknown field "a""#,
            r#"unknown field "b""#,
            "going away",
        ]
    );

    // Without the option: no parameter, and no hook to call.
    server
        .client()
        .create_guest(&Guest::default())
        .await
        .unwrap();
    assert_eq!(server.requests().last().unwrap().uri, "/guests");
}
