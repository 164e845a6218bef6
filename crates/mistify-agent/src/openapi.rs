//! The OpenAPI 3.0 document of the agent's REST API (`GET /openapi.json`): every route
//! with its request and response schemas, and every status it can answer, including
//! those of the shared layers (tokens, limits, load shedding, draining).

use serde_json::{json, Value};

/// A character of a path id other than `.`: not `/`, `\`, `@`, `;`, `?`, `#`, whitespace
/// or a control character (`mistify_types::id::check`; Rust's `char::is_whitespace` and
/// `is_control`).
const ID_CHAR: &str =
    r"[^./@;?#\\\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// The pattern of an id `mistify_types::id::check` accepts: at least one character that is not a
/// dot, never two dots in a row. Linear to match (each repetition takes one character).
pub fn id_pattern() -> String {
    format!(r"^\.?{ID_CHAR}(\.?{ID_CHAR})*\.?$")
}

/// The longest id in characters that is always within the server's 256 bytes (4 bytes
/// per character at most).
pub const ID_MAX_CHARS: u64 = 64;

/// The schema of an id (guest, job, image, disk, snapshot name).
fn id_schema() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": ID_MAX_CHARS, "pattern": id_pattern()})
}

/// A guest id on create: empty (the agent picks one) or a UUID, optionally `urn:uuid:`.
const GUEST_ID_PATTERN: &str =
    "^$|^(urn:uuid:)?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

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

/// Plain text (the snapshot download passes a sub-agent's failures on as text).
fn text(description: &str) -> Value {
    json!({"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}})
}

/// A parameter: path parameters are required ids unless `schema` says otherwise.
fn param_with(name: &str, place: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": place, "required": place == "path", "description": description,
           "schema": schema})
}

/// A path id or a free-form query string.
fn param(name: &str, place: &str, description: &str) -> Value {
    let schema = if place == "path" {
        id_schema()
    } else {
        json!({"type": "string"})
    };
    param_with(name, place, description, schema)
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

/// The answers of a route that calls a sub-agent while the client waits.
fn calls_subagent(mut responses: Value) -> Value {
    responses["500"] =
        error("the sub-agent answered with an error (its message), or the agent failed");
    responses["502"] = error("the sub-agent cannot be reached (names the service)");
    responses["504"] = error("the sub-agent did not answer in time (names the service)");
    responses
}

/// An operation. Its answers are completed by [`shared_answers`].
fn op(summary: &str, params: Vec<Value>, body: Option<Value>, responses: Value) -> Value {
    let mut o = json!({"summary": summary, "parameters": params, "responses": responses});
    if let Some(schema) = body {
        o["requestBody"] = json!({"required": false, "content": json_content(schema)});
    }
    o
}

/// As [`op`], for a body that must be there (an empty body is 400 `EOF`).
fn op_body_required(summary: &str, params: Vec<Value>, body: Value, responses: Value) -> Value {
    let mut o = op(summary, params, Some(body), responses);
    o["requestBody"]["required"] = json!(true);
    o
}

/// Adds to `operation` (`method` on `path`) the answers every route of its kind can
/// give besides its own, unless it documents them itself:
/// - 400 for an unsafe id in the path, or a bad body;
/// - 401 without a known bearer token and 403 for a read-only token that does more than
///   read, when the agent runs with `--token-file` (`/healthz` is open);
/// - 408 for a body that stops arriving, 413 for one over 1 MiB;
/// - 431 for a request head over `--max-header-bytes` (no body, the connection closes);
/// - 500 when the agent's store fails;
/// - 503 with `Retry-After` beyond `--max-in-flight` requests, and for changes while the
///   agent drains or when the guest's job queue is full.
fn shared_answers(path: &str, method: &str, operation: &mut Value) {
    let read = method == "get";
    let reads_body = method == "post" || method == "patch";
    let open = path == "/healthz";
    let local = matches!(path, "/healthz" | "/metrics" | "/openapi.json");
    let queues = operation["responses"].get("202").is_some();
    let mut add = |status: &str, answer: Value| {
        if operation["responses"].get(status).is_none() {
            operation["responses"][status] = answer;
        }
    };
    match (path.contains('{'), reads_body) {
        (true, true) => add(
            "400",
            error("an unsafe id in the path, or a body that is not the JSON expected"),
        ),
        (true, false) => add("400", error("an unsafe id in the path")),
        (false, true) => add("400", error("a body that is not the JSON expected")),
        (false, false) => {}
    }
    if reads_body {
        add(
            "408",
            error("the request body stopped arriving (--body-timeout)"),
        );
        add("413", error("a request body over 1 MiB"));
    }
    if !open {
        let mut unauthorized = error("no known bearer token (only with --token-file)");
        unauthorized["headers"] = json!({"WWW-Authenticate": {"schema": {"type": "string"}}});
        add("401", unauthorized);
        if !read {
            add(
                "403",
                error("a read-only token on a change (only with --token-file)"),
            );
        }
    }
    add(
        "431",
        json!({"description": "a request head over --max-header-bytes: no body, the connection is closed"}),
    );
    if !local {
        add("500", error("the agent failed (its store)"));
    }
    let busy = match (read, queues) {
        (true, _) => "more than --max-in-flight requests at once",
        (false, false) => "more than --max-in-flight requests at once, or the agent is shutting down",
        (false, true) => "more than --max-in-flight requests at once, the agent is shutting down, or the job queue is full (100 waiting)",
    };
    let mut unavailable = error(busy);
    unavailable["headers"] =
        json!({"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}});
    operation["responses"]["503"] = unavailable;
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
        "ImageFetch": {"type": "object", "additionalProperties": false, "required": ["id"], "properties": {
            "id": id_schema(), "type": string, "dest": string, "source": string}},
        "ImageResponse": {"type": "object", "required": ["images"], "properties": {
            "images": {"type": "array", "nullable": true, "items": r("Image")}}},
        "Snapshot": {"type": "object", "required": ["id", "size"], "properties": {"id": string, "size": int}},
        "SnapshotRequest": {"type": "object", "additionalProperties": false, "properties": {
            "id": {"type": "string", "description": "ignored: the path names the entity"},
            "dest": {"type": "string", "maxLength": ID_MAX_CHARS, "pattern": format!("^$|{}", id_pattern()),
                     "description": "the new snapshot's name on create (empty: snap-<unix time>); ignored on rollback"},
            "recursive": {"type": "boolean"}, "destroyMoreRecent": {"type": "boolean"}}},
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
        "Health": {"type": "object", "required": ["status", "version", "serves_guests", "unreachable", "services"], "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"]}, "version": string,
            "draining": {"type": "boolean"}, "guests": int,
            "serves_guests": {"type": "boolean"},
            "unreachable": {"type": "array", "items": string},
            "services": {"type": "object", "additionalProperties": {"type": "object"}}}}
    })
}

/// Adds `GuestInput`, `NicInput`, `DiskInput`: what request bodies may be, with the
/// ranges of the agent's integer types (a number outside is 400) and the guest id rule.
fn with_inputs(mut schemas: Value) -> Value {
    for name in ["Guest", "Nic", "Disk"] {
        let lenient = input(&schemas[name]);
        schemas[format!("{name}Input")] = lenient;
    }
    let u64_range = json!({"type": "integer", "minimum": 0, "maximum": u64::MAX});
    let guest = &mut schemas["GuestInput"]["properties"];
    guest["id"] = json!({"type": "string", "pattern": GUEST_ID_PATTERN,
        "description": "empty (the agent picks a UUID) or a UUID"});
    guest["memory"] = u64_range.clone();
    guest["cpu"] = json!({"type": "integer", "minimum": 0, "maximum": u32::MAX});
    guest["vnc"] = json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX});
    schemas["NicInput"]["properties"]["vlans"]["items"] =
        json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX});
    schemas["DiskInput"]["properties"]["size"] = u64_range;
    // A disk's image is checked as an id before the create is accepted (empty: none).
    schemas["DiskInput"]["properties"]["image"] = json!({"type": "string",
        "maxLength": ID_MAX_CHARS, "pattern": format!("^$|{}", id_pattern())});
    // A key the API does not know is no part of it: by default accepted with a Warning,
    // refused with fieldValidation=Strict.
    for name in ["GuestInput", "NicInput", "DiskInput"] {
        schemas[name]["additionalProperties"] = json!(false);
    }
    // What a create needs: a virtual machine memory and CPUs; a container its type.
    schemas["GuestCreate"] = json!({"anyOf": [
        {"allOf": [r("GuestInput"), {"type": "object", "required": ["memory", "cpu"], "properties": {
            "memory": {"type": "integer", "minimum": 1, "maximum": u64::MAX},
            "cpu": {"type": "integer", "minimum": 1, "maximum": u32::MAX}}}]},
        {"allOf": [r("GuestInput"), {"type": "object", "required": ["type"], "properties": {
            "type": {"type": "string", "enum": ["container"]}}}]},
    ]});
    schemas
}

/// `?fieldValidation=`: what unknown keys of the body do.
fn field_validation() -> Value {
    param_with(
        "fieldValidation",
        "query",
        "unknown body keys: Warn (default: accepted, a Warning header each), Strict (400), Ignore",
        json!({"type": "string", "enum": ["Warn", "Strict", "Ignore", "warn", "strict", "ignore"]}),
    )
}

/// `params` and one more.
fn with(mut params: Vec<Value>, one: Value) -> Vec<Value> {
    params.push(one);
    params
}

/// A snapshot route: the guest, the disk (if `disk`), the name (if `named`).
fn snapshot_params(disk: bool, named: bool) -> Vec<Value> {
    let mut p = vec![param("id", "path", "guest id")];
    if disk {
        p.push(param("disk", "path", "disk"));
    }
    if named {
        p.push(param("name", "path", "snapshot name"));
    }
    p
}

fn snapshot_paths(paths: &mut serde_json::Map<String, Value>, prefix: &str, disk: bool) {
    let p = snapshot_params(disk, false);
    let pn = snapshot_params(disk, true);
    let list = nullable(array(r("Snapshot")));
    paths.insert(format!("{prefix}/snapshots"), json!({
        "get": op("List snapshots (Info listSnapshots)", p.clone(), None, calls_subagent(json!({
            "200": {"description": "snapshots", "headers": job_header(), "content": json_content(list.clone())},
            "404": error("unknown guest or not configured")}))),
        "post": op("Create a snapshot (Async createSnapshot)", with(p, field_validation()), Some(r("SnapshotRequest")), json!({
            "202": accepted(json!({"nullable": true})), "400": error("an unsafe id, a bad body or name"),
            "404": error("unknown guest or not configured")}))
    }));
    paths.insert(format!("{prefix}/snapshots/{{name}}"), json!({
        "get": op("Get a snapshot (Info getSnapshot)", pn.clone(), None, calls_subagent(json!({
            "200": {"description": "the snapshot", "headers": job_header(), "content": json_content(list)},
            "404": error("unknown guest or snapshot, or not configured")}))),
        "delete": op("Delete a snapshot (Async deleteSnapshot)", pn.clone(), None, json!({
            "202": accepted(json!({"nullable": true})), "404": error("unknown guest or not configured")}))
    }));
    paths.insert(format!("{prefix}/snapshots/{{name}}/rollback"), json!({
        "post": op("Roll back to a snapshot (Async rollbackSnapshot)", with(pn.clone(), field_validation()), Some(r("SnapshotRequest")), json!({
            "202": accepted(json!({"nullable": true})), "404": error("unknown guest or not configured")}))
    }));
    // The storage sub-agent's failures are passed on as text with its status (see
    // `text_too`); the agent's own are JSON.
    paths.insert(format!("{prefix}/snapshots/{{name}}/download"), json!({
        "get": op("Download a snapshot stream (Stream downloadSnapshot)", pn, None, json!({
            "200": {"description": "the bytes", "headers": job_header(),
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "404": error("unknown guest or not configured, or the sub-agent's 404"),
            "500": error("the agent failed, or the sub-agent's 500"),
            "502": text("the sub-agent cannot be reached, or refused the agent's service token (names the service)"),
            "504": text("the sub-agent did not answer in time (names the service)"),
            "default": text("any other failure status of the sub-agent, with its text")}))
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

/// Lets every JSON error answer of `operation` be plain text too: a stream route passes
/// the sub-agent's failure on with its status and text, whatever the status.
fn text_too(operation: &mut Value) {
    if let Some(responses) = operation["responses"].as_object_mut() {
        for (status, answer) in responses.iter_mut() {
            let failure = status.starts_with('4') || status.starts_with('5');
            if failure && answer["content"].get("application/json").is_some() {
                answer["content"]["text/plain"] = json!({"schema": {"type": "string"}});
            }
        }
    }
}

/// The `operationId` of every operation (stable names for generated clients and links).
#[rustfmt::skip]
const OPERATION_IDS: &[(&str, &str, &str)] = &[
    ("/metadata", "get", "getMetadata"),
    ("/metadata", "patch", "patchMetadata"),
    ("/images", "get", "listImages"),
    ("/images", "post", "fetchImage"),
    ("/images/{id}", "get", "getImage"),
    ("/images/{id}", "delete", "deleteImage"),
    ("/jobs", "get", "listJobs"),
    ("/jobs/{job}", "get", "getJob"),
    ("/jobs/{job}", "delete", "cancelJob"),
    ("/guests", "get", "listGuests"),
    ("/guests", "post", "createGuest"),
    ("/guests/{id}", "get", "getGuest"),
    ("/guests/{id}", "delete", "deleteGuest"),
    ("/guests/{id}/{action}", "post", "guestAction"),
    ("/guests/{id}/jobs", "get", "listGuestJobs"),
    ("/guests/{id}/jobs/{job}", "get", "getGuestJob"),
    ("/guests/{id}/metadata", "get", "getGuestMetadata"),
    ("/guests/{id}/metadata", "patch", "patchGuestMetadata"),
    ("/guests/{id}/metrics/cpu", "get", "cpuMetrics"),
    ("/guests/{id}/metrics/disk", "get", "diskMetrics"),
    ("/guests/{id}/metrics/nic", "get", "nicMetrics"),
    ("/guests/{id}/snapshots", "get", "listSnapshots"),
    ("/guests/{id}/snapshots", "post", "createSnapshot"),
    ("/guests/{id}/snapshots/{name}", "get", "getSnapshot"),
    ("/guests/{id}/snapshots/{name}", "delete", "deleteSnapshot"),
    ("/guests/{id}/snapshots/{name}/rollback", "post", "rollbackSnapshot"),
    ("/guests/{id}/snapshots/{name}/download", "get", "downloadSnapshot"),
    ("/guests/{id}/disks/{disk}/snapshots", "get", "listDiskSnapshots"),
    ("/guests/{id}/disks/{disk}/snapshots", "post", "createDiskSnapshot"),
    ("/guests/{id}/disks/{disk}/snapshots/{name}", "get", "getDiskSnapshot"),
    ("/guests/{id}/disks/{disk}/snapshots/{name}", "delete", "deleteDiskSnapshot"),
    ("/guests/{id}/disks/{disk}/snapshots/{name}/rollback", "post", "rollbackDiskSnapshot"),
    ("/guests/{id}/disks/{disk}/snapshots/{name}/download", "get", "downloadDiskSnapshot"),
    ("/healthz", "get", "healthz"),
    ("/metrics", "get", "metrics"),
    ("/openapi.json", "get", "openapi"),
];

/// Adds to the `status` answer of `method` on `path` links to `targets`, each
/// `(operationId, parameters)` with runtime expressions for the parameters.
fn links(
    paths: &mut serde_json::Map<String, Value>,
    (path, method, status): (&str, &str, &str),
    targets: &[(&str, Value)],
) {
    if let Some(answer) = paths
        .get_mut(path)
        .and_then(|item| item.get_mut(method))
        .and_then(|operation| operation["responses"].get_mut(status))
    {
        for (target, parameters) in targets {
            answer["links"][*target] = json!({"operationId": target, "parameters": parameters});
        }
    }
}

/// The links between operations: what a created guest, image, snapshot or job lets a
/// client ask next.
fn add_links(paths: &mut serde_json::Map<String, Value>) {
    let guest = json!({"id": "$response.body#/id"});
    let job = json!({"job": "$response.header.X-Guest-Job-ID"});
    let mut from_guest: Vec<(&str, Value)> = [
        "getGuest",
        "guestAction",
        "listGuestJobs",
        "getGuestMetadata",
        "patchGuestMetadata",
        "cpuMetrics",
        "diskMetrics",
        "nicMetrics",
        "listSnapshots",
        "createSnapshot",
    ]
    .iter()
    .map(|target| (*target, guest.clone()))
    .collect();
    from_guest.push(("getJob", job.clone()));
    from_guest.push((
        "getGuestJob",
        json!({"id": "$response.body#/id", "job": "$response.header.X-Guest-Job-ID"}),
    ));
    links(paths, ("/guests", "post", "202"), &from_guest);
    links(
        paths,
        ("/guests/{id}/{action}", "post", "202"),
        &[("getJob", job.clone()), ("cancelJob", job.clone())],
    );
    let image = json!({"id": "$request.body#/id"});
    links(
        paths,
        ("/images", "post", "202"),
        &[
            ("getJob", job.clone()),
            ("getImage", image.clone()),
            ("deleteImage", image),
        ],
    );
    links(
        paths,
        ("/images", "get", "200"),
        &[("getImage", json!({"id": "$response.body#/0/id"}))],
    );
    // No link by the request's `dest`: it may be empty, and then the agent names the
    // snapshot itself (snap-<unix time>), which no part of the answer carries.
    links(
        paths,
        ("/guests/{id}/snapshots", "post", "202"),
        &[("getJob", job.clone())],
    );
    links(
        paths,
        ("/guests/{id}/snapshots/{name}", "delete", "202"),
        &[("getJob", job.clone())],
    );
    links(paths, ("/images/{id}", "delete", "202"), &[("getJob", job)]);
}

/// The document.
pub fn document() -> Value {
    let id = || param("id", "path", "guest id");
    let job = || param("job", "path", "job id");
    let image = || param("id", "path", "image id");
    let limit = || {
        param_with(
            "limit",
            "query",
            "how many jobs, newest first (default 1000; anything but a whole number is 400)",
            json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
        )
    };
    let mut paths = serde_json::Map::new();
    paths.insert("/metadata".into(), json!({
        "get": op("Hypervisor metadata", vec![], None, json!({"200": ok("the map", r("Metadata"))})),
        "patch": op_body_required("Set (or with null/\"\" delete) metadata keys", vec![], r("MetadataPatch"),
            json!({"200": ok("the whole map after", r("Metadata"))}))
    }));
    paths.insert("/images".into(), json!({
        "get": op("List images of every back-end (or of ?type=)", vec![param("type", "query", "letters, e.g. container; anything else is ignored")], None,
            calls_subagent(json!({"200": ok("images", nullable(array(r("Image"))))}))),
        "post": op_body_required("Fetch an image (Async fetchImage)", vec![field_validation()], r("ImageFetch"), json!({
            "202": accepted(r("ImageResponse")), "400": error("a bad body, a missing or unsafe id"),
            "404": error("not configured (an unknown type)")}))
    }));
    paths.insert("/images/{id}".into(), json!({
        "get": op("Get an image", vec![image(), param("type", "query", "letters, e.g. container")], None,
            calls_subagent(json!({"200": ok("the image", r("Image")), "404": error("not found")}))),
        "delete": op("Delete an image (Async deleteImage)", vec![image(), param("type", "query", "letters, e.g. container")], None,
            calls_subagent(json!({"202": accepted(json!({"type": "object"})), "404": error("not found, or not configured"),
                "409": error("guests use the image (named)")})))
    }));
    paths.insert("/jobs".into(), json!({
        "get": op("Newest jobs first", vec![limit()], None, json!({"200": ok("jobs", array(r("Job"))),
            "400": error("a limit that is not a whole number")}))
    }));
    paths.insert("/jobs/{job}".into(), json!({
        "get": op("One job; ?wait=SECONDS waits until it is done",
            vec![job(), param_with("wait", "query", "seconds to wait for the job to finish (more than 300 waits 300)",
                json!({"type": "number", "minimum": 0, "maximum": 300}))], None,
            json!({"200": ok("the job", r("Job")), "400": error("an unsafe id, or wait is not a number of seconds"),
                   "404": error("not found")})),
        "delete": op("Cancel a queued job", vec![job()], None,
            json!({"200": ok("the cancelled job", r("Job")), "404": error("not found"), "409": error("already running or done")}))
    }));
    paths.insert("/guests".into(), json!({
        "get": op("Every guest", vec![], None, json!({"200": ok("guests", nullable(array(r("Guest"))))})),
        "post": op_body_required("Create a guest (Async create)", vec![field_validation()], r("GuestCreate"), calls_subagent(json!({
            "202": accepted(r("Guest")),
            "400": error("a bad body (no memory or CPU for a virtual machine, an unknown key with fieldValidation=Strict), an id that is not a UUID, or a disk image the hypervisor does not have"),
            "404": error("not configured (an unknown type)"),
            "409": error("the id exists, or a disk image is not ready")})))
    }));
    paths.insert(
        "/guests/{id}".into(),
        json!({
            "get": op("One guest; ?refresh=true asks the hypervisor (Info status)",
                vec![id(), param_with("refresh", "query", "true asks the hypervisor", json!({"type": "boolean"}))], None,
                calls_subagent(json!({"200": ok("the guest", r("Guest")), "404": error("not found, or status not configured")}))),
            "delete": op("Delete a guest (Async delete, as POST /guests/{id}/delete); ?force=true removes it whatever its stages answer",
                vec![id(), param_with("force", "query", "true: a stage that fails is named in the job's message and the guest goes anyway", json!({"type": "boolean"}))], None,
                json!({"202": accepted(r("Guest")), "404": error("unknown guest, or delete not configured")}))
        }),
    );
    paths.insert("/guests/{id}/{action}".into(), json!({
        "post": op("A guest action (Async): shutdown, reboot, restart, poweroff, start, suspend, resume, delete",
            vec![id(), param_with("action", "path", "the action",
                json!({"type": "string", "enum": mistify_types::GuestAction::ALL.map(|a| a.as_str())}))], None,
            json!({"202": accepted(r("Guest")), "400": error("an unsafe id, or a body that cannot be read (it is ignored)"),
                   "404": error("unknown guest or action, or not configured")}))
    }));
    paths.insert("/guests/{id}/jobs".into(), json!({
        "get": op("The guest's newest jobs (none for an unknown guest)", vec![id(), limit()], None,
            json!({"200": ok("jobs", array(r("Job"))), "400": error("an unsafe id, or a limit that is not a whole number")}))
    }));
    paths.insert(
        "/guests/{id}/jobs/{job}".into(),
        json!({
            "get": op("One job of the guest", vec![id(), job()], None,
                json!({"200": ok("the job", r("Job")), "404": error("not found")}))
        }),
    );
    paths.insert("/guests/{id}/metadata".into(), json!({
        "get": op("Guest metadata", vec![id()], None, json!({"200": ok("the map", nullable(r("Metadata"))),
            "404": error("unknown guest")})),
        "patch": op_body_required("Set or delete guest metadata keys", vec![id()], r("MetadataPatch"),
            json!({"200": ok("the map after", nullable(r("Metadata"))), "404": error("unknown guest")}))
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
            "get": op(&format!("{kind} metrics (Info {kind}Metrics)"), vec![id()], None, calls_subagent(json!({
                "200": {"description": "metrics", "headers": job_header(), "content": json_content(nullable(schema))},
                "404": error("unknown guest or not configured"),
                "409": error("the domain is not in a state to answer (libvirt: not running)")})))
        }));
    }
    snapshot_paths(&mut paths, "/guests/{id}", false);
    snapshot_paths(&mut paths, "/guests/{id}/disks/{disk}", true);
    paths.insert(
        "/healthz".into(),
        json!({
            "get": op("Health and sub-agent reachability (open without a token)", vec![], None,
                json!({
                    "200": ok("health: every sub-agent that serves guests answers", r("Health")),
                    "503": ok("health: a sub-agent that serves guests does not answer", r("Health")),
                }))
        }),
    );
    paths.insert("/metrics".into(), json!({
        "get": op("Prometheus metrics", vec![], None, json!({"200": {"description": "text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}}}}))
    }));
    paths.insert("/openapi.json".into(), json!({
        "get": op("This document", vec![], None, json!({"200": ok("OpenAPI 3.0", json!({"type": "object"}))}))
    }));
    for (path, item) in paths.iter_mut() {
        if let Some(methods) = item.as_object_mut() {
            for (method, operation) in methods.iter_mut() {
                shared_answers(path, method, operation);
                if path.ends_with("/download") {
                    text_too(operation);
                }
                if let Some((_, _, name)) = OPERATION_IDS
                    .iter()
                    .find(|(p, m, _)| p == path && m == method)
                {
                    operation["operationId"] = json!(name);
                }
            }
        }
    }
    add_links(&mut paths);
    // `/healthz` is open even with --token-file.
    if let Some(healthz) = paths
        .get_mut("/healthz")
        .and_then(|item| item.get_mut("get"))
    {
        healthz["security"] = json!([]);
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "mistify-agent", "version": env!("CARGO_PKG_VERSION"),
                 "description": "REST API of the mistify hypervisor agent (wire-compatible with the Go agent). \
                    Bearer tokens are required only when the agent runs with --token-file."},
        "paths": paths,
        "security": [{}, {"bearerAuth": []}],
        "components": {
            "schemas": with_inputs(schemas()),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}
        }
    })
}
