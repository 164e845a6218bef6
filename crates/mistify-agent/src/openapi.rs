//! The OpenAPI 3.0 document of the agent's REST API (`GET /openapi.json`): every route
//! with its request and response schemas.

use serde_json::{json, Value};

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn nullable(schema: Value) -> Value {
    json!({"nullable": true, "allOf": [schema]})
}

fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": json_content(schema)})
}

fn error(description: &str) -> Value {
    ok(description, r("Error"))
}

fn param(name: &str, place: &str, description: &str) -> Value {
    json!({"name": name, "in": place, "required": place == "path", "description": description,
           "schema": {"type": "string"}})
}

fn job_header() -> Value {
    json!({"X-Guest-Job-ID": {"description": "the pipeline (job) id", "schema": {"type": "string", "format": "uuid"}}})
}

/// An async route: 202 with `X-Guest-Job-ID` and `Location`.
fn accepted(schema: Value) -> Value {
    json!({"description": "queued; follow the job at Location", "headers": {
        "X-Guest-Job-ID": {"schema": {"type": "string", "format": "uuid"}},
        "Location": {"schema": {"type": "string"}}},
        "content": json_content(schema)})
}

/// An operation; every one also documents the error body as its `default` answer (400,
/// 404, 413, 500, 502, 503, 504).
fn op(summary: &str, params: Vec<Value>, body: Option<Value>, mut responses: Value) -> Value {
    responses["default"] =
        error("an error: bad input, not found, a failed or unreachable sub-agent, a full queue");
    let mut o = json!({"summary": summary, "parameters": params, "responses": responses});
    if let Some(schema) = body {
        o["requestBody"] = json!({"required": false, "content": json_content(schema)});
    }
    o
}

fn schemas() -> Value {
    let string = json!({"type": "string"});
    let int = json!({"type": "integer"});
    let number = json!({"type": "number"});
    let metadata = json!({"type": "object", "additionalProperties": {"type": "string"}});
    json!({
        "Error": {"type": "object", "required": ["message", "code", "stack"], "properties": {
            "message": string, "code": int, "stack": array(string.clone())}},
        "Metadata": metadata,
        "MetadataPatch": {"type": "object", "additionalProperties": {"type": "string", "nullable": true}},
        "Nic": {"type": "object", "required": ["network", "model", "address", "netmask", "gateway", "vlans"], "properties": {
            "name": string, "network": string, "model": string, "mac": string, "address": string,
            "netmask": string, "gateway": string, "device": string,
            "vlans": {"type": "array", "nullable": true, "items": int}}},
        "Disk": {"type": "object", "required": ["bus", "device", "size", "volume", "image", "source"], "properties": {
            "bus": string, "device": string, "size": int, "volume": string, "image": string, "source": string}},
        "Guest": {"type": "object", "required": ["id"], "properties": {
            "id": string, "type": string, "image": string, "nics": array(r("Nic")), "disks": array(r("Disk")),
            "state": string, "memory": int, "cpu": int, "vnc": int, "metadata": metadata}},
        "Job": {"type": "object",
            "required": ["ID", "GuestID", "Action", "QueuedAt", "StartedAt", "UpdatedAt", "Status", "Message"],
            "properties": {
                "ID": string, "GuestID": string, "Action": string,
                "QueuedAt": {"type": "string", "format": "date-time"},
                "StartedAt": {"type": "string", "format": "date-time"},
                "UpdatedAt": {"type": "string", "format": "date-time"},
                "Status": {"type": "string", "enum": ["Queued", "Running", "Complete", "Error"]},
                "Message": string}},
        "Image": {"type": "object", "required": ["id", "type", "size"], "properties": {
            "id": string, "type": string, "volume": string, "snapshot": string, "size": int, "status": string}},
        "ImageRequest": {"type": "object", "properties": {
            "id": string, "type": string, "dest": string, "source": string}},
        "ImageResponse": {"type": "object", "required": ["images"], "properties": {
            "images": {"type": "array", "nullable": true, "items": r("Image")}}},
        "Snapshot": {"type": "object", "required": ["id", "size"], "properties": {"id": string, "size": int}},
        "SnapshotRequest": {"type": "object", "properties": {
            "id": string, "dest": string, "recursive": {"type": "boolean"}, "destroyMoreRecent": {"type": "boolean"}}},
        "CpuMetrics": {"type": "object", "required": ["cpu_time", "vcpu_time"], "properties": {
            "cpu_time": number, "vcpu_time": number}},
        "DiskMetrics": {"type": "object", "required": ["disk", "read_ops", "read_bytes", "read_time", "write_ops",
            "write_bytes", "write_time", "flush_ops", "flush_time"], "properties": {
            "disk": string, "read_ops": int, "read_bytes": int, "read_time": number, "write_ops": int,
            "write_bytes": int, "write_time": number, "flush_ops": int, "flush_time": number}},
        "NicMetrics": {"type": "object", "required": ["name", "rx_bytes", "rx_packets", "rx_errors", "rx_drops",
            "tx_bytes", "tx_packets", "tx_errors", "tx_drops"], "properties": {
            "name": string, "rx_bytes": int, "rx_packets": int, "rx_errors": int, "rx_drops": int,
            "tx_bytes": int, "tx_packets": int, "tx_errors": int, "tx_drops": int}},
        "Health": {"type": "object", "required": ["status", "version", "services"], "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"]}, "version": string,
            "draining": {"type": "boolean"}, "guests": int,
            "services": {"type": "object", "additionalProperties": {"type": "object"}}}}
    })
}

/// Adds `GuestInput`, `NicInput`, `DiskInput`: what request bodies may be.
fn with_inputs(mut schemas: Value) -> Value {
    for name in ["Guest", "Nic", "Disk"] {
        let lenient = input(&schemas[name]);
        schemas[format!("{name}Input")] = lenient;
    }
    schemas
}

fn snapshot_paths(paths: &mut serde_json::Map<String, Value>, prefix: &str, extra: Vec<Value>) {
    let id = param("id", "path", "guest id");
    let name = param("name", "path", "snapshot name");
    let mut p = vec![id];
    p.extend(extra);
    let mut pn = p.clone();
    pn.push(name);
    let list = nullable(array(r("Snapshot")));
    paths.insert(format!("{prefix}/snapshots"), json!({
        "get": op("List snapshots (Info listSnapshots)", p.clone(), None, json!({
            "200": {"description": "snapshots", "headers": job_header(), "content": json_content(list.clone())},
            "404": error("unknown guest or not configured")})),
        "post": op("Create a snapshot (Async createSnapshot)", p.clone(), Some(r("SnapshotRequest")), json!({
            "202": accepted(json!({"nullable": true})), "400": error("bad body or name"),
            "404": error("unknown guest or not configured")}))
    }));
    paths.insert(format!("{prefix}/snapshots/{{name}}"), json!({
        "get": op("Get a snapshot (Info getSnapshot)", pn.clone(), None, json!({
            "200": {"description": "the snapshot", "headers": job_header(), "content": json_content(list)},
            "404": error("not found")})),
        "delete": op("Delete a snapshot (Async deleteSnapshot)", pn.clone(), None, json!({
            "202": accepted(json!({"nullable": true})), "404": error("not found")}))
    }));
    paths.insert(format!("{prefix}/snapshots/{{name}}/rollback"), json!({
        "post": op("Roll back to a snapshot (Async rollbackSnapshot)", pn.clone(), Some(r("SnapshotRequest")), json!({
            "202": accepted(json!({"nullable": true})), "400": error("bad body"), "404": error("not found")}))
    }));
    paths.insert(format!("{prefix}/snapshots/{{name}}/download"), json!({
        "get": op("Download a snapshot stream (Stream downloadSnapshot)", pn, None, json!({
            "200": {"description": "the bytes", "headers": job_header(),
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "404": error("not found")}))
    }));
}

/// The lenient input form of `schema`: nothing required (every field defaults to its
/// zero value), references to the input forms of the nested types.
fn input(schema: &Value) -> Value {
    match schema {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| *k != "required")
                .map(|(k, v)| match (k.as_str(), v.as_str()) {
                    ("$ref", Some(r)) => (k.clone(), Value::String(format!("{r}Input"))),
                    _ => (k.clone(), input(v)),
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(input).collect()),
        other => other.clone(),
    }
}

/// The document.
pub fn document() -> Value {
    let id = || param("id", "path", "guest id");
    let job = || param("job", "path", "job id");
    let limit = || param("limit", "query", "how many jobs (digits; default 1000)");
    let mut paths = serde_json::Map::new();
    paths.insert("/metadata".into(), json!({
        "get": op("Hypervisor metadata", vec![], None, json!({"200": ok("the map", r("Metadata"))})),
        "patch": op("Set (or with null/\"\" delete) metadata keys", vec![], Some(r("MetadataPatch")),
            json!({"200": ok("the whole map after", r("Metadata")), "400": error("bad body")}))
    }));
    paths.insert("/images".into(), json!({
        "get": op("List images of every back-end (or of ?type=)", vec![param("type", "query", "letters; container")], None,
            json!({"200": ok("images", nullable(array(r("Image")))), "500": error("a back-end failed")})),
        "post": op("Fetch an image (Async fetchImage)", vec![], Some(r("ImageRequest")), json!({
            "202": accepted(r("ImageResponse")), "400": error("bad body or missing id"), "404": error("not configured")}))
    }));
    paths.insert("/images/{id}".into(), json!({
        "get": op("Get an image", vec![param("id", "path", "image id")], None,
            json!({"200": ok("the image", r("Image")), "404": error("not found")})),
        "delete": op("Delete an image (Async deleteImage)", vec![param("id", "path", "image id")], None,
            json!({"202": accepted(json!({"type": "object"})), "404": error("not found")}))
    }));
    paths.insert("/jobs".into(), json!({
        "get": op("Newest jobs first", vec![limit()], None, json!({"200": ok("jobs", array(r("Job")))}))
    }));
    paths.insert("/jobs/{job}".into(), json!({
        "get": op("One job; ?wait=SECONDS waits until it is done", vec![job(), param("wait", "query", "seconds, at most 300")], None,
            json!({"200": ok("the job", r("Job")), "404": error("not found")})),
        "delete": op("Cancel a queued job", vec![job()], None,
            json!({"200": ok("the cancelled job", r("Job")), "404": error("not found"), "409": error("already running or done")}))
    }));
    paths.insert("/guests".into(), json!({
        "get": op("Every guest", vec![], None, json!({"200": ok("guests", nullable(array(r("Guest"))))})),
        "post": op("Create a guest (Async create)", vec![], Some(r("GuestInput")), json!({
            "202": accepted(r("Guest")), "400": error("bad body or id"), "404": error("not configured"),
            "409": error("the id exists")}))
    }));
    paths.insert(
        "/guests/{id}".into(),
        json!({
            "get": op("One guest; ?refresh=true asks the hypervisor (Info status)",
                vec![id(), param("refresh", "query", "true")], None,
                json!({"200": ok("the guest", r("Guest")), "404": error("not found")}))
        }),
    );
    paths.insert("/guests/{id}/{action}".into(), json!({
        "post": op("A guest action (Async): shutdown, reboot, restart, poweroff, start, suspend, resume, delete",
            vec![id(), param("action", "path", "the action")], None,
            json!({"202": accepted(r("Guest")), "404": error("unknown guest or action, or not configured"),
                   "503": error("queue full")}))
    }));
    paths.insert("/guests/{id}/jobs".into(), json!({
        "get": op("The guest's newest jobs", vec![id(), limit()], None, json!({"200": ok("jobs", array(r("Job")))}))
    }));
    paths.insert(
        "/guests/{id}/jobs/{job}".into(),
        json!({
            "get": op("One job of the guest", vec![id(), job()], None,
                json!({"200": ok("the job", r("Job")), "404": error("not found")}))
        }),
    );
    paths.insert("/guests/{id}/metadata".into(), json!({
        "get": op("Guest metadata", vec![id()], None, json!({"200": ok("the map", nullable(r("Metadata")))})),
        "patch": op("Set or delete guest metadata keys", vec![id()], Some(r("MetadataPatch")),
            json!({"200": ok("the map after", nullable(r("Metadata"))), "400": error("bad body")}))
    }));
    for (kind, schema) in [
        ("cpu", array(r("CpuMetrics"))),
        (
            "disk",
            json!({"type": "object", "additionalProperties": r("DiskMetrics")}),
        ),
        (
            "nic",
            json!({"type": "object", "additionalProperties": r("NicMetrics")}),
        ),
    ] {
        paths.insert(format!("/guests/{{id}}/metrics/{kind}"), json!({
            "get": op(&format!("{kind} metrics (Info {kind}Metrics)"), vec![id()], None, json!({
                "200": {"description": "metrics", "headers": job_header(), "content": json_content(nullable(schema))},
                "404": error("unknown guest or not configured"), "500": error("the sub-agent failed")}))
        }));
    }
    snapshot_paths(&mut paths, "/guests/{id}", vec![]);
    snapshot_paths(
        &mut paths,
        "/guests/{id}/disks/{disk}",
        vec![param("disk", "path", "disk")],
    );
    paths.insert("/healthz".into(), json!({
        "get": op("Health and sub-agent reachability", vec![], None, json!({"200": ok("health", r("Health"))}))
    }));
    paths.insert("/metrics".into(), json!({
        "get": op("Prometheus metrics", vec![], None, json!({"200": {"description": "text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}}}}))
    }));
    json!({
        "openapi": "3.0.3",
        "info": {"title": "mistify-agent", "version": env!("CARGO_PKG_VERSION"),
                 "description": "REST API of the mistify hypervisor agent (wire-compatible with the Go agent)."},
        "paths": paths,
        "components": {"schemas": with_inputs(schemas())}
    })
}
