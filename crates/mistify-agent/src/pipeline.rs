//! Pipelines: a configured action's stages, each a JSON-RPC call to a sub-agent, run in
//! order. A guest action hands every stage the guest the previous one returned (and
//! stores it); an image or snapshot action sends every stage the same request and merges
//! the results (Go's decode-into-the-same-value); a metrics action takes one member of
//! the merged result; a Stream action proxies its one stage's bytes.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::http::StatusCode;
use mistify_rpc::merge::merge;
use mistify_rpc::{RawStream, RpcError};
use mistify_types::{
    Action, Guest, GuestCpuMetrics, GuestDiskMetrics, GuestNicMetrics, MetricsKind,
};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::agent::Agent;
use crate::config::StageDef;
use crate::error::AgentError;

/// The message of a job whose guest was deleted before it ran.
pub const GUEST_DELETED: &str = "guest deleted";

/// What a stage returned that the agent cannot use.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The guest of the pipeline is gone (deleted while the job waited).
    #[error("guest deleted")]
    GuestDeleted,
    /// A guest action's stage answered without a guest.
    #[error("{method}: sub-agent returned no guest")]
    NoGuest { method: String },
    /// A stage's result did not decode as what the action expects.
    #[error("{method}: unreadable {what}: {source}")]
    Unreadable {
        method: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// `GuestMetricsRequest` by reference (the same JSON): the guest as stored, unparsed.
#[derive(Serialize)]
struct MetricsRequest<'a> {
    guest: &'a RawValue,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    args: &'a BTreeMap<String, String>,
}

impl Agent {
    /// One stage's call, its result as JSON, its latency recorded by service and method.
    async fn call_stage(
        &self,
        stage: &StageDef,
        request: &impl Serialize,
    ) -> Result<Value, AgentError> {
        let raw = self.call_stage_raw(stage, request).await?;
        serde_json::from_str(raw.get()).map_err(|source| {
            StageError::Unreadable {
                method: stage.method.clone(),
                what: "result",
                source,
            }
            .into()
        })
    }

    /// One stage's call, its result as raw JSON.
    async fn call_stage_raw(
        &self,
        stage: &StageDef,
        request: &impl Serialize,
    ) -> Result<Box<RawValue>, AgentError> {
        let service = self.service(&stage.service)?;
        self.timed(stage, service.call_raw(&stage.method, request))
            .await
    }

    /// A stage's call, its latency recorded by service and method.
    async fn timed<R>(
        &self,
        stage: &StageDef,
        call: impl std::future::Future<Output = Result<R, RpcError>>,
    ) -> Result<R, AgentError> {
        let start = Instant::now();
        let result = call.await;
        self.metrics.rpc_latency(
            &stage.service,
            &stage.method,
            start.elapsed(),
            result.is_ok(),
        );
        Ok(result?)
    }

    /// Runs a guest action's stages: each stage gets the guest the previous one
    /// returned, with its own args; every returned guest is stored under the guest's id.
    pub(crate) async fn run_guest(
        &self,
        action: Action,
        guest_id: &str,
    ) -> Result<Guest, AgentError> {
        let def = self.action(action)?;
        let mut guest = self
            .store
            .guest(guest_id)
            .map(|g| (*g).clone())
            .ok_or(StageError::GuestDeleted)?;
        let name = action.name();
        let mut response = json!({"guest": null});
        for (i, stage) in def.stages.iter().enumerate() {
            guest = self
                .guest_stage(stage, &name, guest, guest_id, &mut response)
                .await
                .map_err(in_stage(stage, i, def.stages.len()))?;
        }
        Ok(guest)
    }

    /// A forced guest action (a delete): every stage runs, one that fails is noted and
    /// the next one gets the guest as it was; what failed, `; `-separated, prefixed
    /// `forced:` (empty when nothing did).
    pub(crate) async fn run_guest_forced(
        &self,
        action: Action,
        guest_id: &str,
    ) -> Result<String, AgentError> {
        let def = self.action(action)?;
        let mut guest = self
            .store
            .guest(guest_id)
            .map(|g| (*g).clone())
            .ok_or(StageError::GuestDeleted)?;
        let name = action.name();
        let mut response = json!({"guest": null});
        let mut failed = Vec::new();
        for (i, stage) in def.stages.iter().enumerate() {
            match self
                .guest_stage(stage, &name, guest.clone(), guest_id, &mut response)
                .await
            {
                Ok(next) => guest = next,
                Err(e) => failed.push(in_stage(stage, i, def.stages.len())(e).to_string()),
            }
        }
        Ok(match failed.is_empty() {
            true => String::new(),
            false => format!("forced: {}", failed.join("; ")),
        })
    }

    /// One stage of a guest action: the call, and the guest it returned, stored.
    async fn guest_stage(
        &self,
        stage: &StageDef,
        action: &str,
        guest: Guest,
        guest_id: &str,
        response: &mut Value,
    ) -> Result<Guest, AgentError> {
        let request = mistify_rpc::GuestRequest {
            guest: Some(guest),
            action: action.to_string(),
            args: stage.args.clone(),
        };
        merge(response, self.call_stage(stage, &request).await?);
        let returned = response
            .get("guest")
            .filter(|g| g.is_object())
            .ok_or_else(|| StageError::NoGuest {
                method: stage.method.clone(),
            })?;
        let mut next: Guest =
            serde_json::from_value(returned.clone()).map_err(|source| StageError::Unreadable {
                method: stage.method.clone(),
                what: "guest",
                source,
            })?;
        if next.id != guest_id {
            tracing::warn!(guest = guest_id, returned = %next.id, stage = %stage.method,
                "sub-agent returned another guest id; stored under the pipeline's id");
            next.id = guest_id.to_string();
        }
        // Unchanged (e.g. a status read that finds what is stored): no write.
        if self.store.guest(guest_id).as_deref() != Some(&next) {
            self.store.put_guest(&next).await?;
        }
        Ok(next)
    }

    /// Runs the stages of an image or snapshot action: the same request for each, the
    /// results merged into `empty`.
    pub(crate) async fn run_plain(
        &self,
        action: Action,
        request: &impl Serialize,
        empty: Value,
    ) -> Result<Value, AgentError> {
        let def = self.action(action)?;
        let mut response = empty;
        for (i, stage) in def.stages.iter().enumerate() {
            let result = self.call_stage(stage, request).await.map_err(in_stage(
                stage,
                i,
                def.stages.len(),
            ))?;
            merge(&mut response, result);
        }
        Ok(response)
    }

    /// Runs a metrics action: each stage gets its own request with its args; the
    /// `kind` member (`cpu`, `disk`, `nic`) of the merged results, written as the Go
    /// agent wrote it (its typed form; `null` when absent).
    pub(crate) async fn run_metrics(
        &self,
        guest: &RawValue,
        kind: MetricsKind,
    ) -> Result<Box<RawValue>, AgentError> {
        let def = self.action(kind.action())?;
        let mut response = json!({"guest": null, "type": ""});
        let mut method = String::new();
        for (i, stage) in def.stages.iter().enumerate() {
            let request = MetricsRequest {
                guest,
                kind: kind.as_str(),
                args: &stage.args,
            };
            let result = self.call_stage(stage, &request).await.map_err(in_stage(
                stage,
                i,
                def.stages.len(),
            ))?;
            merge(&mut response, result);
            method.clone_from(&stage.method);
        }
        let figures: Figures =
            serde_json::from_value(response).map_err(|source| StageError::Unreadable {
                method,
                what: "metrics",
                source,
            })?;
        let part = match kind {
            MetricsKind::Cpu => serde_json::value::to_raw_value(&figures.cpu),
            MetricsKind::Disk => serde_json::value::to_raw_value(&figures.disk),
            MetricsKind::Nic => serde_json::value::to_raw_value(&figures.nic),
        };
        part.map_err(AgentError::Encode)
    }

    /// Opens the byte stream of a Stream action's one stage.
    pub(crate) async fn open_stream(
        &self,
        action: Action,
        request: &impl Serialize,
    ) -> Result<RawStream, AgentError> {
        let def = self.action(action)?;
        let stage = def
            .stages
            .first()
            .ok_or_else(|| AgentError::Internal(format!("{action} has no stage")))?;
        let service = self.service(&stage.service)?;
        let stream = service.stream(request).await?;
        if matches!(
            stream.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            // The sub-agent refused the agent itself (the service's `token`): a fault
            // between the agent and its sub-agent (502), not the caller's credentials.
            let status = stream.status;
            let text = stream
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(512)]).into_owned())
                .unwrap_or_default();
            return Err(AgentError::Rpc(RpcError::Transport {
                service: service.name().to_string(),
                method: service.config().path.clone(),
                message: format!(
                    "the sub-agent refused the agent ({status}; check the service's token): {}",
                    text.trim_end()
                ),
            }));
        }
        Ok(stream)
    }
}

/// Puts a stage's failure in its place (`stage 2 of 2 (service method): …`).
fn in_stage(
    stage: &StageDef,
    index: usize,
    stages: usize,
) -> impl FnOnce(AgentError) -> AgentError + '_ {
    move |source| AgentError::InStage {
        index: index + 1,
        stages,
        service: stage.service.clone(),
        method: stage.method.clone(),
        source: Box::new(source),
    }
}

/// The figures of a metrics reply (`GuestMetricsResponse`), each `None` when the
/// sub-agents left it out (answered as `null`, as Go's nil slice or map).
#[derive(serde::Deserialize)]
struct Figures {
    #[serde(default)]
    cpu: Option<Vec<GuestCpuMetrics>>,
    #[serde(default)]
    disk: Option<BTreeMap<String, GuestDiskMetrics>>,
    #[serde(default)]
    nic: Option<BTreeMap<String, GuestNicMetrics>>,
}
