//! The client over real HTTP against a tiny axum server on 127.0.0.1 that replays
//! recorded answers of the Go daemons: the error shapes, and the `X-Continue` paging
//! loop over a recorded list. (Everything else is tested against the real daemons.)

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use lochness_client::{Client, Daemon, Endpoints, Error, Guest, ListQuery, Vlan};
use serde_json::Value;

/// One canned answer.
#[derive(Clone)]
struct Canned {
    status: u16,
    content_type: String,
    body: Vec<u8>,
    /// `X-Continue`, if any.
    next: Option<String>,
}

impl Canned {
    fn recorded(case: &Value) -> Canned {
        Canned {
            status: common::status(case),
            content_type: common::content_type(case),
            body: common::body(case),
            next: None,
        }
    }
}

#[derive(Clone, Default)]
struct Replay {
    /// (path and query as sent, answer)
    routes: Arc<Vec<(String, Canned)>>,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn answer(State(replay): State<Replay>, request: Request) -> Response {
    let uri = request.uri().to_string();
    replay
        .seen
        .lock()
        .unwrap()
        .push(format!("{} {uri}", request.method()));
    let Some((_, canned)) = replay.routes.iter().find(|(route, _)| *route == uri) else {
        return (
            StatusCode::IM_A_TEAPOT,
            format!("no canned answer for {uri}"),
        )
            .into_response();
    };
    let mut response = Response::new(axum::body::Body::from(canned.body.clone()));
    *response.status_mut() = StatusCode::from_u16(canned.status).unwrap();
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_str(&canned.content_type).unwrap(),
    );
    if let Some(next) = &canned.next {
        headers.insert("x-continue", HeaderValue::from_str(next).unwrap());
    }
    response
}

struct Server {
    base: String,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(routes: Vec<(String, Canned)>) -> Server {
        let replay = Replay {
            routes: Arc::new(routes),
            seen: Arc::default(),
        };
        let seen = replay.seen.clone();
        let app = Router::new().fallback(answer).with_state(replay);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server { base, seen, task }
    }

    /// A client whose three daemons are all this server.
    fn client(&self) -> Client {
        Client::new(&Endpoints {
            guests: self.base.clone(),
            hypervisors: self.base.clone(),
            networks: self.base.clone(),
        })
        .unwrap()
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn api_parts(e: &Error) -> (Daemon, u16, String, Option<u16>) {
    match e {
        Error::Api {
            daemon,
            status,
            message,
            code,
            ..
        } => (*daemon, *status, message.clone(), *code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn recorded_error_shapes_decode() {
    let guests = common::fixture("lochness-cguestd.json");
    let hypervisors = common::fixture("lochness-chypervisord.json");
    let networks = common::fixture("lochness-cnetworkd.json");
    let vars = &guests["vars"];
    let unknown_guest = vars["gu_unknown"].as_str().unwrap();
    let mut dangling = Canned::recorded(common::case(&networks, "vlan-delete-dangling"));
    // The recording elides Go's stack frames as `[...]`; a real answer has an array.
    dangling.body = String::from_utf8(dangling.body)
        .unwrap()
        .replace("[...]", "[\"vlan.go:1 (0x1)\"]")
        .into_bytes();
    let routes = vec![
        // {"message"}: the "msg" shape.
        (
            "/guests/abc".to_string(),
            Canned::recorded(common::case(&guests, "guest-get-invalid-id")),
        ),
        // {"message","code","stack"}: the "error" shape.
        (
            format!("/guests/{unknown_guest}"),
            Canned::recorded(common::case(&guests, "guest-get-unknown")),
        ),
        // The router's plain-text 404.
        (
            "/hypervisors/aaaa0001-1111-4111-8111-000000000001/resources".to_string(),
            Canned::recorded(common::case(&hypervisors, "unknown-route")),
        ),
        // 500 `not empty` of a hypervisor delete.
        (
            "/hypervisors/aaaa0001-1111-4111-8111-000000000001".to_string(),
            Canned::recorded(common::case(&hypervisors, "hypervisor-delete-with-guests")),
        ),
        // Two JSON bodies in one answer (Go's failed VLAN delete).
        ("/vlans/tags/20".to_string(), dangling),
    ];
    let server = Server::start(routes).await;
    let client = server.client();

    let e = client.get::<Guest>("abc").await.unwrap_err();
    assert_eq!(
        api_parts(&e),
        (Daemon::Guests, 400, "invalid guest id".to_string(), None)
    );
    assert_eq!(e.to_string(), "cguestd answered 400: invalid guest id");

    let e = client.get::<Guest>(unknown_guest).await.unwrap_err();
    assert_eq!(
        api_parts(&e),
        (Daemon::Guests, 500, "key not found".to_string(), Some(500))
    );

    let e = client
        .hypervisor_resources("aaaa0001-1111-4111-8111-000000000001")
        .await
        .unwrap_err();
    assert_eq!(
        api_parts(&e),
        (
            Daemon::Hypervisors,
            404,
            "404 page not found".to_string(),
            None
        )
    );
    assert!(e.is_not_found());

    let e = client
        .delete::<lochness_client::Hypervisor>("aaaa0001-1111-4111-8111-000000000001")
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "chypervisord answered 500: not empty");

    let e = client.delete::<Vlan>("20").await.unwrap_err();
    match &e {
        Error::Api {
            daemon,
            status,
            message,
            stack,
            ..
        } => {
            assert_eq!((*daemon, *status), (Daemon::Networks, 500));
            assert_eq!(message, "metadata key is missing");
            assert_eq!(stack, &["vlan.go:1 (0x1)".to_string()]);
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(
        server.seen(),
        vec![
            "GET /guests/abc".to_string(),
            format!("GET /guests/{unknown_guest}"),
            "GET /hypervisors/aaaa0001-1111-4111-8111-000000000001/resources".to_string(),
            "DELETE /hypervisors/aaaa0001-1111-4111-8111-000000000001".to_string(),
            "DELETE /vlans/tags/20".to_string(),
        ]
    );
}

/// A recorded guest list cut into pages of two linked by `X-Continue`.
fn paged_guests(filter: &str) -> (Vec<Value>, Vec<(String, Canned)>) {
    let fixture = common::fixture("lochness-cguestd.json");
    let list = common::concretize(
        &common::case(&fixture, "guests-list-after-create")["expect"]["body"]["json"],
    )
    .unwrap();
    let guests = list.as_array().unwrap().clone();
    assert!(
        guests.len() >= 4,
        "the recording lists {} guests",
        guests.len()
    );
    let pages: Vec<&[Value]> = guests.chunks(2).collect();
    let mut routes = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        let query = if i == 0 {
            format!("/guests?{filter}limit=2")
        } else {
            format!("/guests?{filter}limit=2&continue=page-{i}")
        };
        let mut body = serde_json::to_vec(page).unwrap();
        body.push(b'\n');
        routes.push((
            query,
            Canned {
                status: 200,
                content_type: "application/json".into(),
                body,
                next: (i + 1 < pages.len()).then(|| format!("page-{}", i + 1)),
            },
        ));
    }
    (guests, routes)
}

#[tokio::test]
async fn list_all_follows_x_continue() {
    let (guests, routes) = paged_guests("network=cccc0001-3333-4333-8333-000000000001&");
    let server = Server::start(routes).await;
    let client = server.client().with_page_size(2);
    let query = ListQuery::new().filter("network", "cccc0001-3333-4333-8333-000000000001");

    let all = client.list_all::<Guest>(&query).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|g| g.id.as_str()).collect();
    let expected: Vec<&str> = guests.iter().map(|g| g["id"].as_str().unwrap()).collect();
    assert_eq!(ids, expected);
    let pages = guests.len().div_ceil(2);
    let seen = server.seen();
    assert_eq!(seen.len(), pages, "{seen:?}");
    assert!(seen[1].ends_with("&limit=2&continue=page-1"), "{seen:?}");

    // One page at a time.
    let first = client.list::<Guest>(&query.clone().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.next.as_deref(), Some("page-1"));
    let last = client
        .list::<Guest>(&query.clone().limit(2).after(format!("page-{}", pages - 1)))
        .await
        .unwrap();
    assert_eq!(last.next, None);
    assert_eq!(last.items.last().unwrap().id, *expected.last().unwrap());
}

#[tokio::test]
async fn a_token_that_repeats_is_an_error() {
    let (_, mut routes) = paged_guests("");
    // The second page names itself as the next.
    routes[1].1.next = Some("page-1".into());
    let server = Server::start(routes).await;
    let e = server
        .client()
        .with_page_size(2)
        .list_all::<Guest>(&ListQuery::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::PagingLoop {
                daemon: Daemon::Guests,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(server.seen().len(), 2);
}
