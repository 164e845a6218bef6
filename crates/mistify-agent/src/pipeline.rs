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
use mistify_types::{Action, Guest, MetricsKind};
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

    /// One stage's call, its result read by `seed` while the reply is decoded.
    async fn call_stage_seed<S, R>(
        &self,
        stage: &StageDef,
        request: &impl Serialize,
        seed: S,
    ) -> Result<R, AgentError>
    where
        S: for<'de> serde::de::DeserializeSeed<'de, Value = R>,
    {
        let service = self.service(&stage.service)?;
        self.timed(stage, service.call_seed(&stage.method, request, seed))
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
        for stage in &def.stages {
            let request = mistify_rpc::GuestRequest {
                guest: Some(guest.clone()),
                action: name.clone(),
                args: stage.args.clone(),
            };
            merge(&mut response, self.call_stage(stage, &request).await?);
            let returned = response
                .get("guest")
                .filter(|g| g.is_object())
                .ok_or_else(|| StageError::NoGuest {
                    method: stage.method.clone(),
                })?;
            let mut next: Guest = serde_json::from_value(returned.clone()).map_err(|source| {
                StageError::Unreadable {
                    method: stage.method.clone(),
                    what: "guest",
                    source,
                }
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
            guest = next;
        }
        Ok(guest)
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
        for stage in &def.stages {
            merge(&mut response, self.call_stage(stage, request).await?);
        }
        Ok(response)
    }

    /// Runs a metrics action: each stage gets its own request with its args; the
    /// `kind` member (`cpu`, `disk`, `nic`) of the merged results, `null` when absent.
    pub(crate) async fn run_metrics(
        &self,
        guest: &RawValue,
        kind: MetricsKind,
    ) -> Result<Box<RawValue>, AgentError> {
        let def = self.action(kind.action())?;
        let member = kind.as_str();
        if let [stage] = def.stages.as_slice() {
            // One stage (every shipped config): the `kind` member of its result is
            // taken while the reply is decoded, as the sub-agent wrote it; the guest
            // it echoes is skipped, and nothing is built.
            let request = MetricsRequest {
                guest,
                kind: member,
                args: &stage.args,
            };
            return self.call_stage_seed(stage, &request, Member(member)).await;
        }
        let mut response = json!({"guest": null, "type": ""});
        for stage in &def.stages {
            let request = MetricsRequest {
                guest,
                kind: member,
                args: &stage.args,
            };
            merge(&mut response, self.call_stage(stage, &request).await?);
        }
        raw_member(response, member)
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

/// The member `key` of a merged multi-stage result, as JSON text (`null` when absent).
fn raw_member(mut response: Value, key: &str) -> Result<Box<RawValue>, AgentError> {
    match response.get_mut(key).map(Value::take) {
        Some(part) => serde_json::value::to_raw_value(&part).map_err(AgentError::Encode),
        None => Ok(RawValue::NULL.to_owned()),
    }
}

/// Reads the member `.0` of a JSON object (the last one if repeated, as a map would
/// keep it) as its JSON text, checked but not parsed into values; the other members
/// are skipped without being built or copied. Anything but an object, and an object
/// without the member, read as `null`, as the multi-stage path reads them.
struct Member<'k>(&'k str);

impl<'de> serde::de::DeserializeSeed<'de> for Member<'_> {
    type Value = Box<RawValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Member<'_> {
    type Value = Box<RawValue>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(hit) = map.next_key_seed(KeyIs(self.0))? {
            if hit {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found.unwrap_or(RawValue::NULL).to_owned())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(RawValue::NULL.to_owned())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(RawValue::NULL.to_owned())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(RawValue::NULL.to_owned())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(RawValue::NULL.to_owned())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(RawValue::NULL.to_owned())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(RawValue::NULL.to_owned())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(RawValue::NULL.to_owned())
    }
}

/// Whether a map key equals `.0`, compared where it lies (no `String` per key).
struct KeyIs<'k>(&'k str);

impl<'de> serde::de::DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Member;

    #[test]
    fn a_member_is_found_where_it_lies() {
        use serde::de::DeserializeSeed;
        fn member(text: &str, key: &str) -> Result<String, serde_json::Error> {
            let mut de = serde_json::Deserializer::from_str(text);
            let raw = Member(key).deserialize(&mut de)?;
            de.end()?;
            Ok(raw.get().to_owned())
        }
        let reply = r#"{"guest":{"id":"g","nics":[{"mac":"02:00"}],"x":[[1],{"y":"\"z"}]},"type":"cpu","cpu":[{"cpu_time":1.5}]}"#;
        assert_eq!(
            member(reply, "cpu").expect("object"),
            r#"[{"cpu_time":1.5}]"#
        );
        assert_eq!(member(reply, "disk").expect("object"), "null");
        // An escaped name is compared unescaped; a repeated one keeps the last.
        assert_eq!(
            member(r#"{"c\u0070u":1,"cpu":2,"cpu":3}"#, "cpu").expect("object"),
            "3"
        );
        // The member's text is kept as the sub-agent wrote it, surrounding blanks aside.
        assert_eq!(
            member("{ \"cpu\" : [ 1 ,2 ] }", "cpu").expect("object"),
            "[ 1 ,2 ]"
        );
        // Anything but an object has no member.
        for other in [
            "[1,{\"cpu\":1}]",
            "\"cpu\"",
            "1",
            "-1",
            "1.5",
            "true",
            "null",
        ] {
            assert_eq!(member(other, "cpu").expect(other), "null", "{other}");
        }
        // Bad JSON anywhere is refused, in the member or in what is skipped.
        for bad in [
            r#"{"cpu":[1,}"#,
            r#"{"cpu":1"#,
            r#"{"cpu":1} x"#,
            r#"{"guest":{"id":},"cpu":1}"#,
            "[1,]",
        ] {
            assert!(member(bad, "cpu").is_err(), "{bad}");
        }
    }
}
