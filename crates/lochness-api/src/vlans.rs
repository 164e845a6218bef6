//! cnetworkd, the original routes: VLANs (`/vlans/tags`) and VLAN groups
//! (`/vlans/groups`) and the memberships between them, set as a whole with a `POST` of
//! the desired list (a set: duplicates count once) in one transaction.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};

use crate::common::{
    decode, json_text, list_response, path_uuid, read_body, Api, IdKind, ListQuery, Route,
};
use crate::error::ApiError;
use crate::openapi::{Doc, Schema};

/// The VLAN routes of cnetworkd.
pub fn routes() -> Vec<Route> {
    vec![
        Route::new(
            Method::GET,
            "/vlans/tags",
            get(list),
            Doc::new("list VLANs", 200, Schema::ArrayOf("Vlan"))
                .paged(&[])
                .errors(&[500]),
        ),
        Route::new(
            Method::POST,
            "/vlans/tags",
            post(create),
            Doc::new(
                "create a VLAN (tag 1 without one)",
                201,
                Schema::Ref("Vlan"),
            )
            .body(Schema::Ref("Vlan"))
            .errors(&[400, 409, 413]),
        ),
        Route::new(
            Method::GET,
            "/vlans/tags/{tag}",
            get(get_one),
            Doc::new("a VLAN", 200, Schema::Ref("Vlan")).errors(&[400, 404]),
        ),
        Route::new(
            Method::PATCH,
            "/vlans/tags/{tag}",
            axum::routing::patch(update),
            Doc::new(
                "change a VLAN's description (the tag stays)",
                200,
                Schema::Ref("Vlan"),
            )
            .body(Schema::Ref("Vlan"))
            .errors(&[400, 404, 409, 413]),
        ),
        Route::new(
            Method::DELETE,
            "/vlans/tags/{tag}",
            axum::routing::delete(remove),
            Doc::new(
                "delete a VLAN and its memberships",
                200,
                Schema::Ref("Vlan"),
            )
            .errors(&[400, 404, 500]),
        ),
        Route::new(
            Method::GET,
            "/vlans/tags/{tag}/groups",
            get(groups_of),
            Doc::new("ids of the VLAN's groups", 200, Schema::Strings).errors(&[400, 404]),
        ),
        Route::new(
            Method::POST,
            "/vlans/tags/{tag}/groups",
            post(set_groups),
            Doc::new(
                "make these the VLAN's groups; the groups afterwards",
                200,
                Schema::Strings,
            )
            .body(Schema::Strings)
            .errors(&[400, 404, 413]),
        ),
        Route::new(
            Method::GET,
            "/vlans/groups",
            get(list_groups),
            Doc::new("list VLAN groups", 200, Schema::ArrayOf("VlanGroup"))
                .paged(&[])
                .errors(&[500]),
        ),
        Route::new(
            Method::POST,
            "/vlans/groups",
            post(create_group),
            Doc::new("create a VLAN group", 201, Schema::Ref("VlanGroup"))
                .body(Schema::Ref("VlanGroup"))
                .errors(&[400, 409, 413]),
        ),
        Route::new(
            Method::GET,
            "/vlans/groups/{id}",
            get(group),
            Doc::new("a VLAN group", 200, Schema::Ref("VlanGroup")).errors(&[400, 404]),
        ),
        Route::new(
            Method::PATCH,
            "/vlans/groups/{id}",
            axum::routing::patch(update_group),
            Doc::new(
                "change a VLAN group (the id stays; metadata keys are added)",
                200,
                Schema::Ref("VlanGroup"),
            )
            .body(Schema::Ref("VlanGroup"))
            .errors(&[400, 404, 409, 413]),
        ),
        Route::new(
            Method::DELETE,
            "/vlans/groups/{id}",
            axum::routing::delete(remove_group),
            Doc::new(
                "delete a VLAN group and its memberships",
                200,
                Schema::Ref("VlanGroup"),
            )
            .errors(&[400, 404, 500]),
        ),
        Route::new(
            Method::GET,
            "/vlans/groups/{id}/tags",
            get(tags_of),
            Doc::new("tags of the group's VLANs", 200, Schema::Ints).errors(&[400, 404]),
        ),
        Route::new(
            Method::POST,
            "/vlans/groups/{id}/tags",
            post(set_tags),
            Doc::new(
                "make these the group's VLANs; the tags afterwards",
                200,
                Schema::Ints,
            )
            .body(Schema::Ints)
            .errors(&[400, 404, 413]),
        ),
    ]
}

fn tag_not_found() -> ApiError {
    ApiError::not_found("tag not found").msg()
}

fn group_not_found() -> ApiError {
    ApiError::not_found("group not found").msg()
}

/// Input errors of the original routes are in the *msg* shape.
fn input(e: lochness::Error) -> ApiError {
    ApiError::from(e).msg()
}

/// The tag of the path (a decimal integer, as Go's `Atoi` reads it: `010` is 10).
fn path_tag(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .map_err(|_| ApiError::bad_request("invalid vlan tag").msg())
}

/// Loads VLAN `tag`; 404 `tag not found` when there is none.
async fn load_vlan(api: &Api, tag: i64) -> Result<lochness::Vlan, ApiError> {
    if !(1..=4095).contains(&tag) {
        return Err(tag_not_found());
    }
    match api.ctx.vlan(tag).await {
        Err(lochness::Error::NotFound(_)) => Err(tag_not_found()),
        other => Ok(other?),
    }
}

/// Loads VLAN group `id`; 404 `group not found` when there is none.
async fn load_group(api: &Api, id: &str) -> Result<lochness::VlanGroup, ApiError> {
    match api.ctx.vlangroup(id).await {
        Err(lochness::Error::NotFound(_)) => Err(group_not_found()),
        other => Ok(other?),
    }
}

/// Fails with 500 (the store's words) when one of `keys` does not exist: a membership
/// link that names a VLAN or group that is gone, which a delete will not follow.
async fn links_resolve(api: &Api, keys: Vec<String>) -> Result<(), ApiError> {
    for key in keys {
        if api.ctx.get(&key).await?.is_none() {
            return Err(ApiError::internal("metadata key is missing"));
        }
    }
    Ok(())
}

async fn list(State(api): State<Api>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let q = ListQuery::parse(query.as_deref(), IdKind::Tag)?;
    let page = api.ctx.vlans_page(&q.page).await?;
    Ok(list_response(
        page.items.iter().map(|v| v.to_json()),
        page.next.as_deref(),
    ))
}

async fn create(State(api): State<Api>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    let mut vlan = api.ctx.new_vlan();
    vlan.decode_json(&bytes).map_err(input)?;
    vlan.validate().map_err(input)?;
    vlan.save().await.map_err(|e| match e {
        lochness::Error::Conflict(_) => {
            ApiError::conflict(format!("VLAN {} already exists", vlan.tag))
        }
        e => ApiError::from(e),
    })?;
    Ok(json_text(StatusCode::CREATED, vlan.to_json()))
}

async fn get_one(State(api): State<Api>, Path(tag): Path<String>) -> Result<Response, ApiError> {
    let vlan = load_vlan(&api, path_tag(&tag)?).await?;
    Ok(json_text(StatusCode::OK, vlan.to_json()))
}

async fn update(
    State(api): State<Api>,
    Path(tag): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let tag = path_tag(&tag)?;
    let bytes = read_body(body).await?;
    let mut vlan = load_vlan(&api, tag).await?;
    vlan.decode_json(&bytes).map_err(input)?;
    // The tag is the VLAN's identity: a tag in the body is ignored, as it was.
    vlan.tag = tag;
    vlan.validate().map_err(input)?;
    vlan.save().await?;
    Ok(json_text(StatusCode::OK, vlan.to_json()))
}

async fn remove(State(api): State<Api>, Path(tag): Path<String>) -> Result<Response, ApiError> {
    let mut vlan = load_vlan(&api, path_tag(&tag)?).await?;
    let groups = vlan
        .vlan_groups()
        .iter()
        .map(|g| lochness::keys::vlangroup_metadata(g))
        .collect();
    links_resolve(&api, groups).await?;
    let json = vlan.to_json();
    vlan.destroy().await?;
    Ok(json_text(StatusCode::OK, json))
}

async fn groups_of(State(api): State<Api>, Path(tag): Path<String>) -> Result<Response, ApiError> {
    let vlan = load_vlan(&api, path_tag(&tag)?).await?;
    let mut groups = vlan.vlan_groups().to_vec();
    groups.sort();
    Ok(mistify_http::json_response(StatusCode::OK, &groups))
}

async fn set_groups(
    State(api): State<Api>,
    Path(tag): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let tag = path_tag(&tag)?;
    let bytes = read_body(body).await?;
    let mut vlan = load_vlan(&api, tag).await?;
    let wanted: Vec<String> = decode(&bytes).map_err(ApiError::msg)?;
    let groups = vlan.set_groups(&wanted).await.map_err(|e| match e {
        lochness::Error::NotFound(key) if key.starts_with(lochness::keys::VLANGROUPS) => {
            ApiError::bad_request("group not found").msg()
        }
        lochness::Error::NotFound(_) => tag_not_found(),
        e => input(e),
    })?;
    Ok(mistify_http::json_response(StatusCode::OK, &groups))
}

async fn list_groups(
    State(api): State<Api>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q = ListQuery::parse(query.as_deref(), IdKind::Uuid)?;
    let page = api.ctx.vlangroups_page(&q.page).await?;
    Ok(list_response(
        page.items.iter().map(|g| g.to_json()),
        page.next.as_deref(),
    ))
}

async fn create_group(State(api): State<Api>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    let mut group = api.ctx.new_vlangroup();
    let fresh = group.id.clone();
    group.decode_json(&bytes).map_err(input)?;
    if group.id.is_empty() {
        group.id = fresh;
    }
    group.validate().map_err(input)?;
    group.save().await.map_err(|e| match e {
        lochness::Error::Conflict(_) => ApiError::conflict(format!(
            "VLAN group {} already exists",
            group.id.to_lowercase()
        )),
        e => ApiError::from(e),
    })?;
    Ok(json_text(StatusCode::CREATED, group.to_json()))
}

async fn group(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = path_uuid(&id, "invalid group id")?;
    Ok(json_text(
        StatusCode::OK,
        load_group(&api, &id).await?.to_json(),
    ))
}

async fn update_group(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path_uuid(&id, "invalid group id")?;
    let bytes = read_body(body).await?;
    let mut group = load_group(&api, &id).await?;
    group.decode_json(&bytes).map_err(input)?;
    // As the original: an id in the body is ignored.
    group.id = id;
    group.validate().map_err(input)?;
    group.save().await?;
    Ok(json_text(StatusCode::OK, group.to_json()))
}

async fn remove_group(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_uuid(&id, "invalid group id")?;
    let mut group = load_group(&api, &id).await?;
    let vlans = group
        .vlans()
        .iter()
        .map(|t| lochness::keys::vlan_metadata(*t))
        .collect();
    links_resolve(&api, vlans).await?;
    let json = group.to_json();
    group.destroy().await?;
    Ok(json_text(StatusCode::OK, json))
}

async fn tags_of(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = path_uuid(&id, "invalid group id")?;
    let group = load_group(&api, &id).await?;
    let mut tags = group.vlans().to_vec();
    tags.sort_unstable();
    Ok(mistify_http::json_response(StatusCode::OK, &tags))
}

async fn set_tags(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path_uuid(&id, "invalid group id")?;
    let bytes = read_body(body).await?;
    let mut group = load_group(&api, &id).await?;
    let wanted: Vec<i64> = decode(&bytes).map_err(ApiError::msg)?;
    let tags = group.set_vlans(&wanted).await.map_err(|e| match e {
        lochness::Error::NotFound(key) if key.starts_with(lochness::keys::VLANS) => {
            ApiError::bad_request("vlan not found").msg()
        }
        lochness::Error::NotFound(_) => group_not_found(),
        e => input(e),
    })?;
    Ok(mistify_http::json_response(StatusCode::OK, &tags))
}
