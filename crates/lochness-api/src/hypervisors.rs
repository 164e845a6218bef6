//! chypervisord: hypervisors, their configuration, subnet links, guests and resources.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, patch, post};
use lochness::HypervisorFilter;

use crate::common::{
    decode, json_text, list_response, path_uuid, read_body, Api, IdKind, ListQuery, Route,
};
use crate::error::ApiError;
use crate::openapi::{Doc, Schema};

/// The routes of chypervisord.
pub fn routes() -> Vec<Route> {
    vec![
        Route::new(
            Method::GET,
            "/hypervisors",
            get(list),
            Doc::new("list hypervisors", 200, Schema::ArrayOf("Hypervisor"))
                .paged(&[
                    (
                        "alive",
                        "true: only those with a heartbeat; false: only those without",
                    ),
                    ("subnet", "only those linked to this subnet"),
                ])
                .errors(&[500]),
        ),
        Route::new(
            Method::POST,
            "/hypervisors",
            post(create),
            Doc::new("create a hypervisor", 201, Schema::Ref("Hypervisor"))
                .body(Schema::Ref("Hypervisor"))
                .errors(&[400, 409, 413]),
        ),
        Route::new(
            Method::GET,
            "/hypervisors/{id}",
            get(get_one),
            Doc::new("a hypervisor", 200, Schema::Ref("Hypervisor")).errors(&[400, 404]),
        ),
        Route::new(
            Method::PATCH,
            "/hypervisors/{id}",
            patch(update),
            Doc::new(
                "change a hypervisor (resources only when sent)",
                200,
                Schema::Ref("Hypervisor"),
            )
            .body(Schema::Ref("Hypervisor"))
            .errors(&[400, 404, 409, 413]),
        ),
        Route::new(
            Method::DELETE,
            "/hypervisors/{id}",
            delete(remove),
            Doc::new(
                "delete a hypervisor without guests",
                200,
                Schema::Ref("Hypervisor"),
            )
            .errors(&[400, 404, 409]),
        ),
        Route::new(
            Method::GET,
            "/hypervisors/{id}/config",
            get(config),
            Doc::new("its configuration", 200, Schema::StringMap).errors(&[400, 404]),
        ),
        Route::new(
            Method::PATCH,
            "/hypervisors/{id}/config",
            patch(set_config),
            Doc::new(
                "set configuration keys (an empty value deletes); the whole configuration",
                200,
                Schema::StringMap,
            )
            .body(Schema::StringMap)
            .errors(&[400, 404, 413]),
        ),
        Route::new(
            Method::GET,
            "/hypervisors/{id}/subnets",
            get(subnets),
            Doc::new(
                "its subnet links (subnet id → bridge)",
                200,
                Schema::StringMap,
            )
            .errors(&[400, 404]),
        ),
        Route::new(
            Method::PATCH,
            "/hypervisors/{id}/subnets",
            patch(link_subnets),
            Doc::new(
                "link subnets (subnet id → bridge); all links",
                200,
                Schema::StringMap,
            )
            .body(Schema::StringMap)
            .errors(&[400, 404, 413]),
        ),
        Route::new(
            Method::DELETE,
            "/hypervisors/{id}/subnets/{subnet}",
            delete(unlink_subnet),
            Doc::new("unlink a subnet; the links left", 200, Schema::StringMap).errors(&[400, 404]),
        ),
        Route::new(
            Method::GET,
            "/hypervisors/{id}/guests",
            get(guests),
            Doc::new("ids of the guests placed on it", 200, Schema::Strings).errors(&[400, 404]),
        ),
        Route::new(
            Method::GET,
            "/hypervisors/{id}/resources",
            get(resources),
            Doc::new(
                "total, reported available, allocated by placement, and free resources",
                200,
                Schema::Ref("HypervisorResources"),
            )
            .errors(&[400, 404]),
        ),
    ]
}

const INVALID_ID: &str = "invalid hypervisor id";

async fn list(State(api): State<Api>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let q = ListQuery::parse(query.as_deref(), IdKind::Uuid)?;
    let filter = HypervisorFilter {
        alive: q.bool_filter("alive")?,
        subnet: q.uuid_filter("subnet")?,
    };
    let page = api.ctx.hypervisors_page(&q.page, &filter).await?;
    Ok(list_response(
        page.items.iter().map(|h| h.to_json()),
        page.next.as_deref(),
    ))
}

/// Input errors of the original routes are in the *msg* shape.
fn input(e: lochness::Error) -> ApiError {
    ApiError::from(e).msg()
}

async fn create(State(api): State<Api>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    let mut h = api.ctx.new_hypervisor();
    h.decode_json(&bytes).map_err(input)?;
    h.validate().map_err(input)?;
    h.save().await.map_err(|e| match e {
        lochness::Error::Conflict(_) => {
            ApiError::conflict(format!("hypervisor {} already exists", h.id.to_lowercase()))
        }
        e => ApiError::from(e),
    })?;
    Ok(json_text(StatusCode::CREATED, h.to_json()))
}

async fn get_one(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = path_uuid(&id, INVALID_ID)?;
    Ok(json_text(
        StatusCode::OK,
        api.ctx.hypervisor(&id).await?.to_json(),
    ))
}

async fn update(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path_uuid(&id, INVALID_ID)?;
    let bytes = read_body(body).await?;
    let mut h = api.ctx.hypervisor(&id).await?;
    h.apply_patch(&bytes).map_err(input)?;
    h.validate().map_err(input)?;
    h.save().await?;
    Ok(json_text(StatusCode::OK, h.to_json()))
}

async fn remove(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = path_uuid(&id, INVALID_ID)?;
    let mut h = api.ctx.hypervisor(&id).await?;
    let json = h.to_json();
    h.destroy().await?;
    Ok(json_text(StatusCode::OK, json))
}

async fn config(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = path_uuid(&id, INVALID_ID)?;
    let h = api.ctx.hypervisor(&id).await?;
    Ok(mistify_http::json_response(StatusCode::OK, h.config()))
}

async fn set_config(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path_uuid(&id, INVALID_ID)?;
    let bytes = read_body(body).await?;
    api.ctx.hypervisor(&id).await?;
    let changes: BTreeMap<String, Option<String>> = decode(&bytes)?;
    let changes = changes
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    let config = api.ctx.set_hypervisor_config(&id, &changes).await?;
    Ok(mistify_http::json_response(StatusCode::OK, &config))
}

async fn subnets(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = path_uuid(&id, INVALID_ID)?;
    let h = api.ctx.hypervisor(&id).await?;
    Ok(mistify_http::json_response(StatusCode::OK, h.subnets()))
}

async fn link_subnets(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path_uuid(&id, INVALID_ID)?;
    let bytes = read_body(body).await?;
    api.ctx.hypervisor(&id).await?;
    let links: BTreeMap<String, String> = decode(&bytes)?;
    let all = api
        .ctx
        .link_hypervisor_subnets(&id, &links)
        .await
        .map_err(|e| match e {
            // The original's answers: 404 with the id's or the store's words.
            lochness::Error::InvalidUuid(s) => ApiError::not_found(format!("invalid UUID: {s}")),
            lochness::Error::NotFound(key) if key != lochness::keys::hypervisor_metadata(&id) => {
                ApiError::not_found("metadata key is missing")
            }
            e => ApiError::from(e),
        })?;
    Ok(mistify_http::json_response(StatusCode::OK, &all))
}

async fn unlink_subnet(
    State(api): State<Api>,
    Path((id, subnet)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = path_uuid(&id, INVALID_ID)?;
    let subnet = lochness::canonicalize(&subnet)
        .map_err(|_| ApiError::bad_request(format!("invalid subnet id {subnet:?}")))?;
    let mut h = api.ctx.hypervisor(&id).await?;
    let subnet = api.ctx.subnet(&subnet).await?;
    h.remove_subnet(&subnet).await?;
    Ok(mistify_http::json_response(StatusCode::OK, h.subnets()))
}

async fn guests(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = path_uuid(&id, INVALID_ID)?;
    let h = api.ctx.hypervisor(&id).await?;
    Ok(mistify_http::json_response(StatusCode::OK, &h.guests()))
}

async fn resources(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = path_uuid(&id, INVALID_ID)?;
    let figures = api.ctx.hypervisor_resources(&id).await?;
    Ok(mistify_http::json_response(StatusCode::OK, &figures))
}
