//! cnetworkd, the routes beyond the original (docs/cluster.md): networks and their subnet
//! memberships, subnets and their reservations, firewall groups. Every error is answered
//! in the *error* shape; invalid input is 400, an unknown id 404, anything in use 409.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, patch, post};

use crate::common::{decode, json_text, list_response, read_body, Api, IdKind, ListQuery, Route};
use crate::error::{describe_key, ApiError};
use crate::openapi::{Doc, Schema};

/// The network, subnet and firewall group routes of cnetworkd.
pub fn routes() -> Vec<Route> {
    let crud = |plural: &'static str,
                one: &'static str,
                schema: &'static str,
                noun: Nouns,
                handlers: Handlers| {
        vec![
            Route::new(
                Method::GET,
                plural,
                handlers.0,
                Doc::new(noun.list, 200, Schema::ArrayOf(schema)).paged(&[]),
            ),
            Route::new(
                Method::POST,
                plural,
                handlers.1,
                Doc::new(noun.create, 201, Schema::Ref(schema))
                    .body(Schema::Ref(schema))
                    .errors(&[400, 409, 413]),
            ),
            Route::new(
                Method::GET,
                one,
                handlers.2,
                Doc::new(noun.get, 200, Schema::Ref(schema)).errors(&[400, 404]),
            ),
            Route::new(
                Method::PATCH,
                one,
                handlers.3,
                Doc::new(noun.patch, 200, Schema::Ref(schema))
                    .body(Schema::Ref(schema))
                    .errors(&[400, 404, 409, 413]),
            ),
            Route::new(
                Method::DELETE,
                one,
                handlers.4,
                Doc::new(noun.delete, 200, Schema::Ref(schema)).errors(&[400, 404, 409]),
            ),
        ]
    };
    let mut routes = crud(
        "/networks",
        "/networks/{id}",
        "Network",
        Nouns {
            list: "list networks",
            create: "create a network",
            get: "a network",
            patch: "change a network's metadata",
            delete: "delete a network without subnets that no guest uses",
        },
        (
            get(list_networks),
            post(create_network),
            get(network),
            patch(update_network),
            delete(delete_network),
        ),
    );
    routes.extend([
        Route::new(
            Method::GET,
            "/networks/{id}/subnets",
            get(network_subnets),
            Doc::new("ids of the network's subnets", 200, Schema::Strings).errors(&[400, 404]),
        ),
        Route::new(
            Method::POST,
            "/networks/{id}/subnets",
            post(attach_subnet),
            Doc::new(
                "attach a subnet (its id, a JSON string); the network's subnets",
                200,
                Schema::Strings,
            )
            .body(Schema::String)
            .errors(&[400, 404, 409, 413]),
        ),
        Route::new(
            Method::DELETE,
            "/networks/{id}/subnets/{subnet}",
            delete(detach_subnet),
            Doc::new(
                "detach a subnet without reservations; the network's subnets",
                200,
                Schema::Strings,
            )
            .errors(&[400, 404, 409]),
        ),
    ]);
    routes.extend(crud(
        "/subnets",
        "/subnets/{id}",
        "Subnet",
        Nouns {
            list: "list subnets",
            create: "create a subnet (attached to its network when it names one)",
            get: "a subnet",
            patch: "change a subnet (its reservations must stay inside)",
            delete: "delete a subnet without reservations, hypervisor links or guests",
        },
        (
            get(list_subnets),
            post(create_subnet),
            get(subnet),
            patch(update_subnet),
            delete(delete_subnet),
        ),
    ));
    routes.push(Route::new(
        Method::GET,
        "/subnets/{id}/addresses",
        get(addresses),
        Doc::new(
            "reserved addresses (address → guest id)",
            200,
            Schema::StringMap,
        )
        .errors(&[400, 404]),
    ));
    routes.extend(crud(
        "/fwgroups",
        "/fwgroups/{id}",
        "FwGroup",
        Nouns {
            list: "list firewall groups",
            create: "create a firewall group",
            get: "a firewall group",
            patch: "change a firewall group (rules as a whole)",
            delete: "delete a firewall group no guest or rule uses",
        },
        (
            get(list_fwgroups),
            post(create_fwgroup),
            get(fwgroup),
            patch(update_fwgroup),
            delete(delete_fwgroup),
        ),
    ));
    routes
}

/// The summaries of a family's five routes.
struct Nouns {
    list: &'static str,
    create: &'static str,
    get: &'static str,
    patch: &'static str,
    delete: &'static str,
}

type Handler = axum::routing::MethodRouter<Api>;
type Handlers = (Handler, Handler, Handler, Handler, Handler);

/// A UUID of the path; 400 naming `noun` otherwise.
fn path_id(text: &str, noun: &str) -> Result<String, ApiError> {
    lochness::canonicalize(text)
        .map_err(|_| ApiError::bad_request(format!("invalid {noun} id {text:?}")))
}

/// A referenced entity that does not exist is the request's fault: 400 naming it.
fn reference(e: lochness::Error) -> ApiError {
    match e {
        lochness::Error::NotFound(key) => {
            let what = describe_key(&key).unwrap_or(key);
            ApiError::bad_request(format!("{what} does not exist"))
        }
        e => ApiError::from(e),
    }
}

/// A create that found the id taken.
fn taken(e: lochness::Error, noun: &str, id: &str) -> ApiError {
    match e {
        lochness::Error::Conflict(_) => {
            ApiError::conflict(format!("{noun} {} already exists", id.to_lowercase()))
        }
        e => reference(e),
    }
}

// ----- networks ---------------------------------------------------------------------

async fn list_networks(
    State(api): State<Api>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q = ListQuery::parse(query.as_deref(), IdKind::Uuid)?;
    let page = api.ctx.networks_page(&q.page).await?;
    Ok(list_response(
        page.items.iter().map(|n| n.to_json()),
        page.next.as_deref(),
    ))
}

async fn create_network(State(api): State<Api>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    let mut n = api.ctx.new_network();
    let fresh = n.id.clone();
    n.decode_json(&bytes)?;
    if n.id.is_empty() {
        n.id = fresh;
    }
    n.save().await.map_err(|e| taken(e, "network", &n.id))?;
    Ok(json_text(StatusCode::CREATED, n.to_json()))
}

async fn network(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = path_id(&id, "network")?;
    Ok(json_text(
        StatusCode::OK,
        api.ctx.network(&id).await?.to_json(),
    ))
}

async fn update_network(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "network")?;
    let bytes = read_body(body).await?;
    let mut n = api.ctx.network(&id).await?;
    n.apply_patch(&bytes)?;
    n.save().await?;
    Ok(json_text(StatusCode::OK, n.to_json()))
}

async fn delete_network(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "network")?;
    let mut n = api.ctx.network(&id).await?;
    let json = n.to_json();
    n.destroy().await?;
    Ok(json_text(StatusCode::OK, json))
}

fn sorted(ids: &[String]) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids
}

async fn network_subnets(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "network")?;
    let n = api.ctx.network(&id).await?;
    Ok(mistify_http::json_response(
        StatusCode::OK,
        &sorted(n.subnets()),
    ))
}

async fn attach_subnet(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "network")?;
    let bytes = read_body(body).await?;
    let mut n = api.ctx.network(&id).await?;
    let subnet: String = decode(&bytes)?;
    let sid = lochness::canonicalize(&subnet).map_err(|_| {
        ApiError::bad_request(format!(
            "invalid subnet id {subnet:?}: the body is the subnet's id, a JSON string"
        ))
    })?;
    let mut s = api.ctx.subnet(&sid).await.map_err(reference)?;
    n.attach(&mut s).await?;
    Ok(mistify_http::json_response(
        StatusCode::OK,
        &sorted(n.subnets()),
    ))
}

async fn detach_subnet(
    State(api): State<Api>,
    Path((id, subnet)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "network")?;
    let sid = path_id(&subnet, "subnet")?;
    let mut n = api.ctx.network(&id).await?;
    let mut s = api.ctx.subnet(&sid).await?;
    n.detach(&mut s).await.map_err(|e| match e {
        lochness::Error::NotFound(_) => {
            ApiError::not_found(format!("subnet {sid} is not in network {id}"))
        }
        e => ApiError::from(e),
    })?;
    Ok(mistify_http::json_response(
        StatusCode::OK,
        &sorted(n.subnets()),
    ))
}

// ----- subnets ----------------------------------------------------------------------

/// A subnet body without a `cidr` fails to decode with an empty CIDR: say what is
/// missing.
fn subnet_input(e: lochness::Error) -> ApiError {
    match e {
        lochness::Error::InvalidCidr(c) if c.is_empty() => {
            ApiError::bad_request("a subnet needs its cidr (a.b.c.d/n)")
        }
        e => ApiError::from(e),
    }
}

async fn list_subnets(
    State(api): State<Api>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q = ListQuery::parse(query.as_deref(), IdKind::Uuid)?;
    let page = api.ctx.subnets_page(&q.page).await?;
    Ok(list_response(
        page.items.iter().map(|s| s.to_json()),
        page.next.as_deref(),
    ))
}

async fn create_subnet(State(api): State<Api>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    let mut s = api.ctx.new_subnet();
    let fresh = s.id.clone();
    s.decode_json(&bytes).map_err(subnet_input)?;
    if s.id.is_empty() {
        s.id = fresh;
    }
    api.ctx
        .create_subnet(&mut s)
        .await
        .map_err(|e| taken(e, "subnet", &s.id))?;
    Ok(json_text(StatusCode::CREATED, s.to_json()))
}

async fn subnet(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = path_id(&id, "subnet")?;
    Ok(json_text(
        StatusCode::OK,
        api.ctx.subnet(&id).await?.to_json(),
    ))
}

async fn update_subnet(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "subnet")?;
    let bytes = read_body(body).await?;
    let mut s = api.ctx.subnet(&id).await?;
    s.apply_patch(&bytes).map_err(subnet_input)?;
    s.save_checked().await?;
    Ok(json_text(StatusCode::OK, s.to_json()))
}

async fn delete_subnet(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "subnet")?;
    let mut s = api.ctx.subnet(&id).await?;
    let json = s.to_json();
    s.destroy_unused().await?;
    Ok(json_text(StatusCode::OK, json))
}

async fn addresses(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = path_id(&id, "subnet")?;
    api.ctx.subnet(&id).await?;
    let reserved: std::collections::BTreeMap<String, String> = api
        .ctx
        .subnet_reservations(&id)
        .await?
        .into_iter()
        .map(|(ip, owner)| (ip.to_string(), owner))
        .collect();
    Ok(mistify_http::json_response(StatusCode::OK, &reserved))
}

// ----- firewall groups --------------------------------------------------------------

async fn list_fwgroups(
    State(api): State<Api>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q = ListQuery::parse(query.as_deref(), IdKind::Uuid)?;
    let page = api.ctx.fwgroups_page(&q.page).await?;
    Ok(list_response(
        page.items.iter().map(|g| g.to_json()),
        page.next.as_deref(),
    ))
}

async fn create_fwgroup(State(api): State<Api>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    let mut g = api.ctx.new_fwgroup();
    let fresh = g.id.clone();
    g.decode_json(&bytes)?;
    if g.id.is_empty() {
        g.id = fresh;
    }
    g.save_checked()
        .await
        .map_err(|e| taken(e, "firewall group", &g.id))?;
    Ok(json_text(StatusCode::CREATED, g.to_json()))
}

async fn fwgroup(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = path_id(&id, "firewall group")?;
    Ok(json_text(
        StatusCode::OK,
        api.ctx.fwgroup(&id).await?.to_json(),
    ))
}

async fn update_fwgroup(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "firewall group")?;
    let bytes = read_body(body).await?;
    // Over the stored JSON: a body replacing `rules` repairs a group whose stored rules
    // cannot be decoded.
    let mut g = api.ctx.patched_fwgroup(&id, &bytes).await?;
    g.save_checked().await.map_err(reference)?;
    Ok(json_text(StatusCode::OK, g.to_json()))
}

async fn delete_fwgroup(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "firewall group")?;
    let mut g = api.ctx.fwgroup(&id).await?;
    let json = g.to_json();
    g.destroy().await?;
    Ok(json_text(StatusCode::OK, json))
}
