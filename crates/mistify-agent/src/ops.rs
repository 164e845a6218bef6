//! The operations the REST layer calls, one per request, on typed input: the handler
//! parses HTTP into these types, calls the operation and writes its answer.
//!
//! An operation owns what the request needs beyond parsing: the guest's runner and its
//! Info/Stream slots, the pipeline id of a synchronous pipeline, the action chosen for
//! the guest's or image's type, the rules of a create (fresh id, derived MACs, when a
//! failed create may be repeated), and the job of an async one.

use std::sync::Arc;

use mistify_rpc::{RawStream, RpcError};
use mistify_types::{
    derived_mac, Action, Guest, GuestAction, Id, Image, ImageRequest, ImageResponse, JobStatus,
    MetricsKind, SnapshotRequest, Verb,
};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::agent::Agent;
use crate::error::AgentError;
use crate::jobs::Work;
use crate::runner::AGENT_RUNNER;

/// An async request accepted: the job that carries it out, and the body to answer.
#[derive(Debug)]
pub struct Accepted<T> {
    pub job: String,
    pub body: T,
}

/// A synchronous pipeline's outcome and the id it ran under (sent as
/// `X-Guest-Job-ID`, never logged as a job). What fails before the pipeline starts (an
/// unknown guest, an unconfigured action) is the operation's own error instead.
#[derive(Debug)]
pub struct Pipeline<T> {
    pub id: String,
    pub outcome: Result<T, AgentError>,
}

/// A fresh pipeline id: a version 4 UUID from the thread's generator, written by the
/// encoder (no system call or `Display` per request).
pub fn pipeline_id() -> String {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut text)
        .to_owned()
}

/// Where a snapshot request points: a guest (recursively, every disk) or one of its
/// disks (by its place in the guest's `disks`), and optionally one snapshot by name.
#[derive(Debug, Clone)]
pub struct SnapshotTarget {
    pub guest: Id,
    pub disk: Option<usize>,
    pub name: Option<Id>,
}

/// The place in `guest`'s disks that `selector` names: its index (`0`), its dataset
/// name (`disk-0`) or its device as `guests get` shows it (`vda`); 404 naming the
/// guest's disks otherwise.
pub fn disk_index(guest: &Guest, selector: &str) -> Result<usize, AgentError> {
    let number = selector.strip_prefix("disk-").unwrap_or(selector);
    let by_number = number
        .parse::<usize>()
        .ok()
        .filter(|_| number.bytes().all(|b| b.is_ascii_digit()));
    let found = match by_number {
        Some(i) => (i < guest.disks.len()).then_some(i),
        None => guest.disks.iter().position(|d| d.device == selector),
    };
    found.ok_or_else(|| {
        let disks: Vec<String> = guest
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| match d.device.as_str() {
                "" => i.to_string(),
                device => format!("{i} ({device})"),
            })
            .collect();
        AgentError::NotFoundWhy(if disks.is_empty() {
            format!("guest {} has no disk", guest.id)
        } else {
            format!(
                "guest {} has no disk {selector:?}; its disks: {}",
                guest.id,
                disks.join(", ")
            )
        })
    })
}

impl SnapshotTarget {
    /// `guests/<id>[/disk-<disk>]`: the storage sub-agent's entity.
    fn entity(&self) -> String {
        match &self.disk {
            Some(disk) => format!("guests/{}/disk-{disk}", self.guest),
            None => format!("guests/{}", self.guest),
        }
    }

    /// The entity with `@<name>` when a snapshot is named.
    fn full(&self) -> String {
        match &self.name {
            Some(name) => format!("{}@{name}", self.entity()),
            None => self.entity(),
        }
    }

    /// No disk named: the whole guest, recursively.
    fn recursive(&self) -> bool {
        self.disk.is_none()
    }
}

/// A back-end's way of saying "no such image": an empty result, not a failure.
fn image_not_found(e: &AgentError) -> bool {
    let text = match e.cause() {
        AgentError::Rpc(RpcError::Remote { message, .. }) => message,
        AgentError::Rpc(RpcError::Status { body, .. }) => body,
        _ => return false,
    };
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "not found" | "no such image"
    )
}

/// The storage sub-agent's `not found` on a snapshot query is a 404.
fn snapshot_not_found(e: AgentError) -> AgentError {
    match e.cause() {
        AgentError::Rpc(RpcError::Remote { message, .. }) if message.trim() == "not found" => {
            AgentError::NotFound
        }
        _ => e,
    }
}

impl Agent {
    // ------------------------------------------------------------------- guests

    /// Guest `id`, or 404.
    pub fn guest(&self, id: &Id) -> Result<Arc<Guest>, AgentError> {
        self.store.guest(id).ok_or(AgentError::NotFound)
    }

    /// Asks the hypervisor for the guest's current state (its type's `status` Info
    /// action, under its Info limit) and keeps it.
    pub async fn refresh_guest(&self, id: &Id) -> Result<Guest, AgentError> {
        let guest = self.guest(id)?;
        let action = Action::for_kind(&guest.kind, Verb::Status);
        self.action(action)?;
        let runner = self.runner_of(id)?;
        let _slot = runner.info_slot().await?;
        self.run_guest(action, id).await
    }

    /// Creates a guest: a fresh id unless one is given (a UUID), `create` state, the
    /// derived MAC of every NIC without one, then its type's `create` job. A guest whose
    /// own latest job is a failed create (e.g. cut short by a crash) and that was never
    /// changed since may be created again; any other existing id is 409.
    pub async fn create_guest(
        self: &Arc<Self>,
        mut guest: Guest,
    ) -> Result<Accepted<Guest>, AgentError> {
        if guest.id.is_empty() {
            guest.id = mistify_types::id::new_uuid();
        } else if !mistify_types::id::is_uuid(&guest.id) {
            return Err(AgentError::BadRequest("id must be uuid".into()));
        }
        guest.state = "create".into();
        for (i, nic) in guest.nics.iter_mut().enumerate() {
            if nic.mac.is_empty() {
                nic.mac = derived_mac(&guest.id, i);
            }
        }
        let action = Action::for_kind(&guest.kind, Verb::Create);
        self.action(action)?;

        let conflict = || AgentError::Conflict(format!("guest {} already exists", guest.id));
        let retry = match self.store.guest(&guest.id) {
            Some(existing) if self.create_may_repeat(&existing)? => true,
            Some(_) => return Err(conflict()),
            None => false,
        };
        self.check_create(&guest).await?;
        // The runner exists before the guest is visible.
        self.ensure_runner(&guest.id);
        // A new id is inserted only if still free: two creates racing for it get one 202
        // and one 409, never two create jobs.
        let written = if retry {
            self.store.put_guest(&guest).await.map(|()| true)?
        } else {
            self.store.insert_new_guest(&guest).await?
        };
        if !written {
            return Err(conflict());
        }
        let work = Work::Guest {
            action,
            guest_id: guest.id.clone(),
            force: false,
        };
        let job = self.submit(&guest.id, work).await?;
        Ok(Accepted { job, body: guest })
    }

    /// What makes a create fail for sure, refused before a job exists: a virtual machine
    /// without memory or CPU, a disk image the storage sub-agent does not have (or has
    /// not finished fetching), a storage sub-agent that does not answer.
    async fn check_create(&self, guest: &Guest) -> Result<(), AgentError> {
        let container = guest.kind == "container";
        if !container && guest.memory == 0 {
            return Err(AgentError::BadRequest(
                "memory: a guest needs memory (MB, more than 0)".into(),
            ));
        }
        if !container && guest.cpu == 0 {
            return Err(AgentError::BadRequest(
                "cpu: a guest needs at least one CPU".into(),
            ));
        }
        // Disk images are fetched before use (`POST /images`); a container sub-agent pulls
        // its images itself, as the Go one did: only disk images are checked.
        if container || self.config.action(Action::plain(Verb::GetImage)).is_none() {
            return Ok(());
        }
        let images = guest
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("disks[{i}].image"), d.image.as_str()));
        for (field, image) in images.filter(|(_, i)| !i.is_empty()) {
            let id = Id::parse("image id", image)
                .map_err(|e| AgentError::BadRequest(format!("{field}: {e}")))?;
            match self.image(&id, Some("")).await {
                Ok(found) if found.status.is_empty() || found.status == "complete" => {}
                Ok(found) => {
                    return Err(AgentError::Conflict(format!(
                        "{field}: image {image} is not ready ({})",
                        found.status
                    )))
                }
                Err(AgentError::NotFound) => {
                    return Err(AgentError::BadRequest(format!(
                        "{field}: no image {image} on this hypervisor (fetch it with POST /images)"
                    )))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The create-retry rule: the guest is still in `create` and its own latest job is a
    /// create that failed.
    fn create_may_repeat(&self, existing: &Guest) -> Result<bool, AgentError> {
        if existing.state != "create" {
            return Ok(false);
        }
        let latest = self.store.guest_jobs(&existing.id, 1)?;
        Ok(matches!(latest.first(), Some(j)
            if j.status == JobStatus::Error
                && Action::parse(&j.action).is_ok_and(|a| a.verb() == Verb::Create)))
    }

    /// Sets every pair of `patch` in the guest's metadata, deleting keys whose value is
    /// empty or `null`; the guest after.
    pub async fn patch_guest_metadata(
        &self,
        id: &Id,
        patch: std::collections::BTreeMap<String, Option<String>>,
    ) -> Result<Guest, AgentError> {
        let mut guest = (*self.guest(id)?).clone();
        for (k, v) in patch {
            match v {
                Some(v) if !v.is_empty() => {
                    guest.metadata.insert(k, v);
                }
                _ => {
                    guest.metadata.remove(&k);
                }
            }
        }
        self.store.put_guest(&guest).await?;
        Ok(guest)
    }

    /// Queues `action` (its variant for the guest's type) on the guest; the job and the
    /// guest as it is now. `force` (a delete's only) removes the guest whatever its
    /// stages answer.
    pub async fn guest_action(
        self: &Arc<Self>,
        id: &Id,
        action: GuestAction,
        force: bool,
    ) -> Result<Accepted<Arc<Guest>>, AgentError> {
        let guest = self.guest(id)?;
        let force = force && action == GuestAction::Delete;
        let action = Action::for_kind(&guest.kind, action.verb());
        self.action(action)?;
        let work = Work::Guest {
            action,
            guest_id: id.to_string(),
            force,
        };
        let job = self.submit(id, work).await?;
        Ok(Accepted { job, body: guest })
    }

    /// The guest's metrics of `kind` as the sub-agent wrote them, under its Info limit.
    pub async fn guest_metrics(
        &self,
        id: &Id,
        kind: MetricsKind,
    ) -> Result<Pipeline<Box<RawValue>>, AgentError> {
        // The stored JSON goes into the request as it is: no parse into a `Guest` and back.
        let guest = self.store.guest_json(id).ok_or(AgentError::NotFound)?;
        let runner = self.runner_of(id)?;
        self.action(kind.action())?;
        let outcome = async {
            let _slot = runner.info_slot().await?;
            self.run_metrics(&guest, kind).await
        }
        .await;
        Ok(Pipeline {
            id: pipeline_id(),
            outcome,
        })
    }

    // ------------------------------------------------------------------- images

    /// Runs `verb` (or its container variant) on each image back-end, in parallel, and
    /// joins the images. `kind` names one back-end. An unconfigured back-end contributes
    /// nothing; any real error fails the call.
    async fn query_images(
        &self,
        verb: Verb,
        kind: Option<&str>,
        request: &ImageRequest,
    ) -> Result<Vec<Image>, AgentError> {
        let kinds: Vec<&str> = match kind {
            Some(k) => vec![k],
            None => vec!["", "container"],
        };
        let runner = self.runner_of(AGENT_RUNNER)?;
        let calls = kinds.into_iter().map(|k| {
            let action = Action::for_kind(k, verb);
            let runner = runner.clone();
            async move {
                if self.config.action(action).is_none() {
                    return Ok(Vec::new());
                }
                let _slot = runner.info_slot().await?;
                match self
                    .run_plain(action, request, json!({"images": null}))
                    .await
                {
                    Ok(v) => serde_json::from_value::<ImageResponse>(v)
                        .map(|r| r.images.unwrap_or_default())
                        .map_err(|source| {
                            crate::pipeline::StageError::Unreadable {
                                method: action.name(),
                                what: "images",
                                source,
                            }
                            .into()
                        }),
                    Err(e) if image_not_found(&e) => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            }
        });
        let mut images = Vec::new();
        for result in futures::future::join_all(calls).await {
            images.extend(result?);
        }
        Ok(images)
    }

    /// Every image of every back-end (or of the back-end `kind`).
    pub async fn list_images(&self, kind: Option<&str>) -> Result<Vec<Image>, AgentError> {
        self.query_images(Verb::ListImages, kind, &ImageRequest::default())
            .await
    }

    /// Image `id`, or 404.
    pub async fn image(&self, id: &Id, kind: Option<&str>) -> Result<Image, AgentError> {
        let request = ImageRequest {
            id: id.to_string(),
            ..ImageRequest::default()
        };
        let mut images = self.query_images(Verb::GetImage, kind, &request).await?;
        if images.len() > 1 {
            tracing::error!(
                image = %id,
                found = images.len(),
                "more than one back-end has this image; using the first"
            );
        }
        if images.is_empty() {
            return Err(AgentError::NotFound);
        }
        Ok(images.swap_remove(0))
    }

    /// Queues the fetch of an image (its type's `fetchImage`) on the `agent` runner.
    pub async fn fetch_image(
        self: &Arc<Self>,
        id: Id,
        mut request: ImageRequest,
    ) -> Result<Accepted<ImageResponse>, AgentError> {
        request.id = id.into_string();
        let action = Action::for_kind(&request.kind, Verb::FetchImage);
        self.action(action)?;
        let job = self
            .submit(AGENT_RUNNER, Work::Image { action, request })
            .await?;
        Ok(Accepted {
            job,
            body: ImageResponse::default(),
        })
    }

    /// Queues the deletion of image `id` (found on its back-end first) on the `agent`
    /// runner.
    pub async fn delete_image(
        self: &Arc<Self>,
        id: &Id,
        kind: Option<&str>,
    ) -> Result<Accepted<Value>, AgentError> {
        let image = self.image(id, kind).await?;
        let users: Vec<String> = self
            .store
            .guest_ids()
            .into_iter()
            .filter(|g| {
                self.store
                    .guest(g)
                    .is_some_and(|guest| guest.disks.iter().any(|d| d.image == image.id))
            })
            .collect();
        if !users.is_empty() {
            return Err(AgentError::Conflict(format!(
                "image {} is in use by guest{} {}: delete {} first",
                image.id,
                if users.len() == 1 { "" } else { "s" },
                users.join(", "),
                if users.len() == 1 { "it" } else { "them" }
            )));
        }
        let action = Action::for_kind(&image.kind, Verb::DeleteImage);
        self.action(action)?;
        let request = ImageRequest {
            id: id.to_string(),
            ..ImageRequest::default()
        };
        let job = self
            .submit(AGENT_RUNNER, Work::Image { action, request })
            .await?;
        Ok(Accepted {
            job,
            body: json!({}),
        })
    }

    // ---------------------------------------------------------------- snapshots

    /// A snapshot query (`listSnapshots`, `getSnapshot`) under the guest's Info limit:
    /// the `snapshots` member of the result.
    async fn snapshot_query(
        &self,
        target: &SnapshotTarget,
        verb: Verb,
    ) -> Result<Pipeline<Value>, AgentError> {
        self.guest(&target.guest)?;
        let action = Action::plain(verb);
        self.action(action)?;
        let runner = self.runner_of(&target.guest)?;
        let request = SnapshotRequest {
            id: target.full(),
            ..SnapshotRequest::default()
        };
        let outcome = async {
            let _slot = runner.info_slot().await?;
            let mut v = self
                .run_plain(action, &request, json!({"snapshots": null}))
                .await?;
            Ok(v.get_mut("snapshots")
                .map(Value::take)
                .unwrap_or(Value::Null))
        }
        .await
        .map_err(snapshot_not_found);
        Ok(Pipeline {
            id: pipeline_id(),
            outcome,
        })
    }

    /// The snapshots of the guest or disk.
    pub async fn list_snapshots(
        &self,
        target: &SnapshotTarget,
    ) -> Result<Pipeline<Value>, AgentError> {
        self.snapshot_query(target, Verb::ListSnapshots).await
    }

    /// One snapshot.
    pub async fn snapshot(&self, target: &SnapshotTarget) -> Result<Pipeline<Value>, AgentError> {
        self.snapshot_query(target, Verb::GetSnapshot).await
    }

    async fn snapshot_job(
        self: &Arc<Self>,
        target: &SnapshotTarget,
        verb: Verb,
        request: SnapshotRequest,
    ) -> Result<Accepted<Value>, AgentError> {
        self.guest(&target.guest)?;
        let action = Action::plain(verb);
        self.action(action)?;
        let work = Work::Snapshot { action, request };
        let job = self.submit(&target.guest, work).await?;
        Ok(Accepted {
            job,
            body: Value::Null,
        })
    }

    /// Queues a snapshot of the guest (recursively) or disk, named `name` (default
    /// `snap-<unix time>`).
    pub async fn create_snapshot(
        self: &Arc<Self>,
        target: &SnapshotTarget,
        name: Option<Id>,
    ) -> Result<Accepted<Value>, AgentError> {
        let dest = match name {
            Some(name) => name.into_string(),
            None => format!("snap-{}", chrono::Utc::now().timestamp()),
        };
        let request = SnapshotRequest {
            id: target.entity(),
            dest,
            recursive: target.recursive(),
            destroy_more_recent: false,
        };
        self.snapshot_job(target, Verb::CreateSnapshot, request)
            .await
    }

    /// Queues the deletion of the named snapshot.
    pub async fn delete_snapshot(
        self: &Arc<Self>,
        target: &SnapshotTarget,
    ) -> Result<Accepted<Value>, AgentError> {
        let request = SnapshotRequest {
            id: target.full(),
            recursive: target.recursive(),
            ..SnapshotRequest::default()
        };
        self.snapshot_job(target, Verb::DeleteSnapshot, request)
            .await
    }

    /// Queues a rollback to the named snapshot.
    pub async fn rollback_snapshot(
        self: &Arc<Self>,
        target: &SnapshotTarget,
        recursive: bool,
        destroy_more_recent: bool,
    ) -> Result<Accepted<Value>, AgentError> {
        let request = SnapshotRequest {
            id: target.full(),
            dest: String::new(),
            recursive,
            destroy_more_recent,
        };
        self.snapshot_job(target, Verb::RollbackSnapshot, request)
            .await
    }

    /// Opens the download of the named snapshot under the guest's Stream limit; the
    /// slot is held by the returned stream's owner until the last byte is sent.
    pub async fn download_snapshot(
        &self,
        target: &SnapshotTarget,
    ) -> Result<Pipeline<(RawStream, tokio::sync::OwnedSemaphorePermit)>, AgentError> {
        self.guest(&target.guest)?;
        let action = Action::plain(Verb::DownloadSnapshot);
        self.action(action)?;
        let runner = self.runner_of(&target.guest)?;
        let slot = runner.stream_slot().await?;
        let request = SnapshotRequest {
            id: target.full(),
            recursive: target.recursive(),
            ..SnapshotRequest::default()
        };
        let outcome = self
            .open_stream(action, &request)
            .await
            .map(|stream| (stream, slot));
        Ok(Pipeline {
            id: pipeline_id(),
            outcome,
        })
    }
}
