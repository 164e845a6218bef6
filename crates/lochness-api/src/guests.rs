//! cguestd: guests, their jobs, and flavors.
//!
//! `POST /guests` writes the guest, its `select-hypervisor` job and the job's queue entry
//! in one transaction; `DELETE /guests/{id}` and the six actions write a job and its
//! queue entry. Reading a job takes no lock. The routes of the original answer its
//! statuses and body shapes; the flavor routes are ours (docs/cluster.md).

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, patch, post};
use lochness::{GuestFilter, JobAction};

use crate::common::{
    accepted, json_text, list_response, path_uuid, read_body, Api, IdKind, ListQuery, Route,
};
use crate::error::{describe_key, ApiError};
use crate::openapi::{Doc, Schema};

/// The routes of cguestd.
pub fn routes() -> Vec<Route> {
    let mut routes = vec![
        Route::new(
            Method::GET,
            "/guests",
            get(list),
            Doc::new("list guests", 200, Schema::ArrayOf("Guest"))
                .paged(&[
                    ("hypervisor", "only guests placed on this hypervisor"),
                    ("network", "only guests on this network"),
                    ("subnet", "only guests with an address in this subnet"),
                    ("flavor", "only guests of this flavor"),
                    ("fwgroup", "only guests in this firewall group"),
                ])
                .errors(&[500]),
        ),
        Route::new(
            Method::POST,
            "/guests",
            post(create),
            Doc::new(
                "create a guest and queue its select-hypervisor job",
                202,
                Schema::Ref("Guest"),
            )
            .body(Schema::Ref("Guest"))
            .job()
            .errors(&[400, 409, 413]),
        ),
        Route::new(
            Method::GET,
            "/guests/{id}",
            get(get_one),
            Doc::new("a guest", 200, Schema::Ref("Guest")).errors(&[400, 404]),
        ),
        Route::new(
            Method::PATCH,
            "/guests/{id}",
            patch(update),
            Doc::new(
                "change a guest (not its id nor what placement set)",
                200,
                Schema::Ref("Guest"),
            )
            .body(Schema::Ref("Guest"))
            .errors(&[400, 404, 409, 413]),
        ),
        Route::new(
            Method::DELETE,
            "/guests/{id}",
            delete(remove),
            Doc::new("queue the guest's delete job", 202, Schema::Ref("Guest"))
                .job()
                .errors(&[400, 404]),
        ),
        Route::new(
            Method::GET,
            "/jobs/{id}",
            get(job),
            Doc::new("a job record", 200, Schema::Ref("Job")).errors(&[400, 404, 500]),
        ),
        Route::new(
            Method::GET,
            "/flavors",
            get(flavors),
            Doc::new("list flavors", 200, Schema::ArrayOf("Flavor")).paged(&[]),
        ),
        Route::new(
            Method::POST,
            "/flavors",
            post(create_flavor),
            Doc::new("create a flavor", 201, Schema::Ref("Flavor"))
                .body(Schema::Ref("Flavor"))
                .errors(&[400, 409, 413]),
        ),
        Route::new(
            Method::GET,
            "/flavors/{id}",
            get(flavor),
            Doc::new("a flavor", 200, Schema::Ref("Flavor")).errors(&[400, 404]),
        ),
        Route::new(
            Method::PATCH,
            "/flavors/{id}",
            patch(update_flavor),
            Doc::new(
                "change a flavor (its resources only while no guest uses it)",
                200,
                Schema::Ref("Flavor"),
            )
            .body(Schema::Ref("Flavor"))
            .errors(&[400, 404, 409, 413]),
        ),
        Route::new(
            Method::DELETE,
            "/flavors/{id}",
            delete(delete_flavor),
            Doc::new("delete a flavor no guest uses", 200, Schema::Ref("Flavor"))
                .errors(&[400, 404, 409]),
        ),
    ];
    for action in JobAction::GUEST_ACTIONS {
        routes.push(Route::new(
            Method::POST,
            action_path(action),
            post(move |api: State<Api>, id: Path<String>| guest_action(api, id, action)),
            Doc::new(action_summary(action), 202, Schema::Ref("Guest"))
                .job()
                .errors(&[400, 404]),
        ));
    }
    routes
}

fn action_path(action: JobAction) -> &'static str {
    match action {
        JobAction::Shutdown => "/guests/{id}/shutdown",
        JobAction::Reboot => "/guests/{id}/reboot",
        JobAction::Restart => "/guests/{id}/restart",
        JobAction::Poweroff => "/guests/{id}/poweroff",
        JobAction::Start => "/guests/{id}/start",
        _ => "/guests/{id}/suspend",
    }
}

fn action_summary(action: JobAction) -> &'static str {
    match action {
        JobAction::Shutdown => "queue a shutdown job",
        JobAction::Reboot => "queue a reboot job",
        JobAction::Restart => "queue a restart job",
        JobAction::Poweroff => "queue a poweroff job",
        JobAction::Start => "queue a start job",
        _ => "queue a suspend job",
    }
}

/// The answer to a failed write of guest `id`: a reference that does not exist is 400
/// naming it, invalid input 400, both in the *msg* shape of the original's client errors;
/// the guest gone 404, a conflict 409 (error shape).
fn guest_write_error(e: lochness::Error, id: &str) -> ApiError {
    match e {
        lochness::Error::NotFound(key) if key != lochness::keys::guest_metadata(id) => {
            let what = describe_key(&key).unwrap_or(key);
            ApiError::bad_request(format!("{what} does not exist")).msg()
        }
        e => {
            let api = ApiError::from(e);
            if api.status == StatusCode::BAD_REQUEST {
                api.msg()
            } else {
                api
            }
        }
    }
}

/// Input errors of the original routes are in the *msg* shape.
fn input(e: lochness::Error) -> ApiError {
    ApiError::from(e).msg()
}

async fn list(State(api): State<Api>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let q = ListQuery::parse(query.as_deref(), IdKind::Uuid)?;
    let filter = GuestFilter {
        hypervisor: q.uuid_filter("hypervisor")?,
        network: q.uuid_filter("network")?,
        subnet: q.uuid_filter("subnet")?,
        flavor: q.uuid_filter("flavor")?,
        fwgroup: q.uuid_filter("fwgroup")?,
    };
    let page = api.ctx.guests_page(&q.page, &filter).await?;
    Ok(list_response(
        page.items.iter().map(|g| g.to_json()),
        page.next.as_deref(),
    ))
}

async fn create(State(api): State<Api>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    let mut guest = api.ctx.new_guest();
    // The MAC comes from the final id (the original derived it from an id it then
    // discarded when the body had its own).
    guest.mac = None;
    guest.decode_json(&bytes).map_err(input)?;
    if guest.mac.is_none() {
        if let Ok(id) = lochness::canonicalize(&guest.id) {
            guest.mac = Some(lochness::guest::mac_for_id(&id));
        }
    }
    guest.validate().map_err(input)?;
    let job = api
        .ctx
        .create_guest_with_job(&mut guest)
        .await
        .map_err(|e| guest_write_error(e, ""))?;
    api.metrics.job_queued(JobAction::SelectHypervisor);
    Ok(accepted(&job.id, guest.to_json()))
}

async fn get_one(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = path_uuid(&id, "invalid guest id")?;
    let guest = api.ctx.guest(&id).await?;
    Ok(json_text(StatusCode::OK, guest.to_json()))
}

async fn update(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path_uuid(&id, "invalid guest id")?;
    let bytes = read_body(body).await?;
    let mut guest = api.ctx.guest(&id).await?;
    let placed_flavor = (!guest.hypervisor.is_empty()).then(|| guest.flavor.clone());
    guest.apply_patch(&bytes).map_err(input)?;
    guest.validate().map_err(input)?;
    // A placed guest's flavor is what its hypervisor's allocation was counted from; the
    // save below also requires that placement did not change the guest meanwhile.
    if let Some(flavor) = placed_flavor {
        if !guest.flavor.eq_ignore_ascii_case(&flavor) {
            return Err(ApiError::conflict(format!(
                "guest {id} is placed on hypervisor {}: its flavor cannot change",
                guest.hypervisor
            ))
            .msg());
        }
    }
    guest.save().await.map_err(|e| guest_write_error(e, &id))?;
    Ok(json_text(StatusCode::OK, guest.to_json()))
}

/// Queues `action` on guest `id`: 202 with the guest as it is and the job's id.
async fn queue(api: &Api, id: &str, action: JobAction) -> Result<Response, ApiError> {
    let id = path_uuid(id, "invalid guest id")?;
    let guest = api.ctx.guest(&id).await?;
    let job = api.ctx.queue_job(&id, action).await?;
    api.metrics.job_queued(action);
    Ok(accepted(&job.id, guest.to_json()))
}

async fn remove(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    queue(&api, &id, JobAction::Delete).await
}

async fn guest_action(
    State(api): State<Api>,
    Path(id): Path<String>,
    action: JobAction,
) -> Result<Response, ApiError> {
    queue(&api, &id, action).await
}

async fn job(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = path_uuid(&id, "invalid job id")?;
    let job = api.ctx.job(&id).await.map_err(|e| match e {
        // A record that does not decode is the store's fault, not the request's.
        lochness::Error::InvalidJson(why) => ApiError::internal(format!("job {id}: {why}")),
        e => ApiError::from(e),
    })?;
    Ok(json_text(StatusCode::OK, job.to_json()))
}

async fn flavors(State(api): State<Api>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let q = ListQuery::parse(query.as_deref(), IdKind::Uuid)?;
    let page = api.ctx.flavors_page(&q.page).await?;
    Ok(list_response(
        page.items.iter().map(|f| f.to_json()),
        page.next.as_deref(),
    ))
}

async fn create_flavor(State(api): State<Api>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body).await?;
    let mut flavor = api.ctx.new_flavor();
    let fresh = flavor.id.clone();
    flavor.decode_json(&bytes)?;
    if flavor.id.is_empty() {
        flavor.id = fresh;
    }
    positive_resources(&flavor.resources)?;
    flavor.save().await.map_err(|e| match e {
        lochness::Error::Conflict(_) => ApiError::conflict(format!(
            "flavor {} already exists",
            flavor.id.to_lowercase()
        )),
        e => ApiError::from(e),
    })?;
    Ok(json_text(StatusCode::CREATED, flavor.to_json()))
}

async fn flavor(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = flavor_id(&id)?;
    Ok(json_text(
        StatusCode::OK,
        api.ctx.flavor(&id).await?.to_json(),
    ))
}

/// A flavor's figures are what placement reserves on a hypervisor: each must be at
/// least 1 (a negative one does not decode).
fn positive_resources(r: &lochness::Resources) -> Result<(), ApiError> {
    for (name, value) in [
        ("memory", r.memory),
        ("disk", r.disk),
        ("cpu", u64::from(r.cpu)),
    ] {
        if value == 0 {
            return Err(ApiError::bad_request(format!(
                "flavor {name} must be at least 1"
            )));
        }
    }
    Ok(())
}

fn flavor_id(id: &str) -> Result<String, ApiError> {
    lochness::canonicalize(id)
        .map_err(|_| ApiError::bad_request(format!("invalid flavor id {id:?}")))
}

async fn update_flavor(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = flavor_id(&id)?;
    let bytes = read_body(body).await?;
    let mut flavor = api.ctx.flavor(&id).await?;
    let before = flavor.resources;
    flavor.apply_patch(&bytes)?;
    positive_resources(&flavor.resources)?;
    flavor.save_unless_used(before).await?;
    Ok(json_text(StatusCode::OK, flavor.to_json()))
}

async fn delete_flavor(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = flavor_id(&id)?;
    let mut flavor = api.ctx.flavor(&id).await?;
    flavor.destroy().await?;
    Ok(json_text(StatusCode::OK, flavor.to_json()))
}
