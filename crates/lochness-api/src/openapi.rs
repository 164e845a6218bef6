//! The OpenAPI 3.0 document of a daemon (`GET /openapi.json`), built from the same route
//! table as its router, so that every route is in it.

use serde_json::{json, Map, Value};

use crate::common::{Route, CONTINUE_HEADER, JOB_ID_HEADER};
use crate::config::Daemon;

/// A body's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// A component schema.
    Ref(&'static str),
    /// An array of a component schema.
    ArrayOf(&'static str),
    /// An object of strings (configuration, subnet links, reservations).
    StringMap,
    /// An array of strings (ids).
    Strings,
    /// An array of integers (VLAN tags).
    Ints,
    /// A JSON string.
    String,
    /// Any JSON object.
    Object,
    /// Plain text.
    Text,
}

/// What the document says of one route.
#[derive(Debug, Clone)]
pub struct Doc {
    summary: &'static str,
    ok: u16,
    reply: Schema,
    body: Option<Schema>,
    errors: Vec<u16>,
    query: Vec<(&'static str, &'static str)>,
    job_header: bool,
    paged: bool,
}

impl Doc {
    /// A route answering `ok` with `reply`.
    pub fn new(summary: &'static str, ok: u16, reply: Schema) -> Doc {
        Doc {
            summary,
            ok,
            reply,
            body: None,
            errors: Vec::new(),
            query: Vec::new(),
            job_header: false,
            paged: false,
        }
    }

    /// Its request body.
    pub fn body(mut self, schema: Schema) -> Doc {
        self.body = Some(schema);
        self
    }

    /// The error statuses it answers (besides 503 for an unreachable etcd).
    pub fn errors(mut self, statuses: &[u16]) -> Doc {
        self.errors.extend_from_slice(statuses);
        self
    }

    /// A list with `?limit=`/`?continue=` and these filters.
    pub fn paged(mut self, filters: &[(&'static str, &'static str)]) -> Doc {
        self.paged = true;
        self.query.extend_from_slice(filters);
        if !self.errors.contains(&400) {
            self.errors.push(400);
        }
        self
    }

    /// Its answer carries `X-Guest-Job-ID`.
    pub fn job(mut self) -> Doc {
        self.job_header = true;
        self
    }
}

fn schema(s: Schema) -> Value {
    let r = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    match s {
        Schema::Ref(name) => r(name),
        Schema::ArrayOf(name) => json!({"type": "array", "items": r(name)}),
        Schema::StringMap => json!({"type": "object", "additionalProperties": {"type": "string"}}),
        Schema::Strings => json!({"type": "array", "items": {"type": "string"}}),
        Schema::Ints => json!({"type": "array", "items": {"type": "integer"}}),
        Schema::String => json!({"type": "string"}),
        Schema::Object => json!({"type": "object"}),
        Schema::Text => json!({"type": "string"}),
    }
}

fn content(s: Schema) -> Value {
    let media = if s == Schema::Text {
        "text/plain"
    } else {
        "application/json"
    };
    json!({ media: {"schema": schema(s)} })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "created",
        202 => "accepted: a job was queued",
        301 => "the path without its trailing slash",
        400 => "invalid request (nothing changed)",
        404 => "unknown id",
        405 => "method not allowed",
        409 => "in use, not empty, already exists, or changed meanwhile (nothing changed)",
        413 => "request body too large",
        500 => "internal error",
        503 => "etcd cannot be reached, or the change kept losing races; try again",
        _ => "",
    }
}

fn operation(route: &Route) -> Value {
    let doc = &route.doc;
    let mut params: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
        })
        .collect();
    if doc.paged {
        params.push(json!({"name": "limit", "in": "query", "required": false,
            "description": "at most this many items (1 to 10000); without it, every item",
            "schema": {"type": "integer", "minimum": 1, "maximum": lochness::MAX_PAGE}}));
        params.push(json!({"name": "continue", "in": "query", "required": false,
            "description": format!("the {CONTINUE_HEADER} header of the previous page"),
            "schema": {"type": "string"}}));
    }
    for (name, description) in &doc.query {
        params.push(json!({"name": name, "in": "query", "required": false,
            "description": description, "schema": {"type": "string"}}));
    }
    let mut ok = json!({"description": reason(doc.ok), "content": content(doc.reply)});
    let mut headers = Map::new();
    if doc.job_header {
        headers.insert(
            JOB_ID_HEADER.into(),
            json!({"description": "the id of the queued job (GET /jobs/{id})",
                   "schema": {"type": "string", "format": "uuid"}}),
        );
    }
    if doc.paged {
        headers.insert(
            CONTINUE_HEADER.into(),
            json!({"description": "present when more items follow: the continue token of the next page",
                   "schema": {"type": "string"}}),
        );
    }
    if !headers.is_empty() {
        ok["headers"] = Value::Object(headers);
    }
    let mut responses = Map::new();
    responses.insert(doc.ok.to_string(), ok);
    for status in doc.errors.iter().copied().chain([503]) {
        responses.insert(
            status.to_string(),
            json!({"description": reason(status), "content": content(Schema::Ref("Error"))}),
        );
    }
    let mut op = json!({"summary": doc.summary, "responses": responses});
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(body) = doc.body {
        op["requestBody"] = json!({"required": true, "content": content(body)});
    }
    op
}

fn components() -> Value {
    let s = |t: &str| json!({"type": t});
    let res = json!({"type": "object", "properties": {"memory": s("integer"), "disk": s("integer"), "cpu": s("integer")}});
    let map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let r = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    json!({
        "Error": {"type": "object", "required": ["message"], "description":
            "{\"message\"} on the original routes' client errors; {\"message\",\"code\",\"stack\"} elsewhere",
            "properties": {"message": s("string"), "code": s("integer"),
                           "stack": {"type": "array", "items": s("string")}}},
        "Resources": res,
        "Guest": {"type": "object", "properties": {
            "id": s("string"), "metadata": map, "type": s("string"), "flavor": s("string"),
            "hypervisor": s("string"), "network": s("string"), "subnet": s("string"),
            "fwgroup": s("string"), "vlangroup": s("string"), "mac": s("string"),
            "ip": s("string"), "bridge": s("string")}},
        "Job": {"type": "object", "properties": {
            "id": s("string"), "remote": s("string"), "action": s("string"), "guest": s("string"),
            "error": s("string"), "status": {"type": "string", "enum": ["new", "working", "done", "error"]},
            "started_at": s("string"), "finished_at": s("string")}},
        "Flavor": {"type": "object", "properties": {
            "id": s("string"), "image": s("string"), "metadata": map,
            "memory": {"type": "integer", "minimum": 1}, "disk": {"type": "integer", "minimum": 1},
            "cpu": {"type": "integer", "minimum": 1}}},
        "Hypervisor": {"type": "object", "properties": {
            "id": s("string"), "metadata": map, "ip": s("string"), "netmask": s("string"),
            "gateway": s("string"), "mac": s("string"), "total_resources": r("Resources"),
            "available_resources": r("Resources")}},
        "HypervisorResources": {"type": "object", "properties": {
            "total": r("Resources"), "available": r("Resources"), "allocated": r("Resources"),
            "free": r("Resources")}},
        "Network": {"type": "object", "properties": {"id": s("string"), "metadata": map}},
        "Subnet": {"type": "object", "properties": {
            "id": s("string"), "metadata": map, "network": s("string"), "gateway": s("string"),
            "cidr": s("string"), "start": s("string"), "end": s("string")}},
        "FwRule": {"type": "object", "properties": {
            "source": s("string"), "group": s("string"), "portStart": s("integer"),
            "portEnd": s("integer"),
            "protocol": {"type": "string", "enum": ["tcp", "udp", "icmp"]},
            "action": {"type": "string", "enum": ["accept", "allow", "drop", "deny", "reject"]}}},
        "FwGroup": {"type": "object", "properties": {
            "id": s("string"), "metadata": map,
            "rules": {"type": "array", "items": r("FwRule")}}},
        "Vlan": {"type": "object", "properties": {"tag": s("integer"), "description": s("string")}},
        "VlanGroup": {"type": "object", "properties": {
            "id": s("string"), "description": s("string"), "metadata": map}},
        "Health": {"type": "object", "properties": {
            "status": s("string"), "service": s("string"), "version": s("string"),
            "message": s("string")}},
    })
}

/// The document of `daemon` with `routes`.
pub fn document(daemon: Daemon, routes: &[Route]) -> Value {
    let mut paths = Map::new();
    for route in routes {
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[route.method.as_str().to_ascii_lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": daemon.name(), "description": daemon.about(),
                 "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": components()},
    })
}
