//! The OpenAPI document describes what the Go agent really answered: every JSON request
//! and response body recorded in the wire fixtures validates against the schema of its
//! route, method and status.

use serde_json::{json, Map, Value};

/// Stands for a value the fixture does not compare (`$ignore`): any schema accepts it.
const IGNORED: &str = "\u{0}ignored";

/// A concrete value for a fixture matcher (`{"$format": "uuid"}` → a UUID, …); `None`
/// for a key that may be absent.
fn materialize(v: &Value) -> Option<Value> {
    match v {
        Value::Object(o)
            if o.keys().any(|k| k.starts_with('$'))
                && !o.keys().all(|k| k == "$note" || k == "$original") =>
        {
            if o.contains_key("$absent") {
                return None;
            }
            if o.contains_key("$ignore") {
                return Some(json!(IGNORED));
            }
            if let Some(f) = o.get("$format").and_then(Value::as_str) {
                return Some(json!(match f {
                    "uuid" => "0f9c8a52-6a1e-4d3c-9d7f-4e1f2b3c4d5e",
                    "rfc3339" => "2015-06-01T12:00:00.123456789Z",
                    _ => "text",
                }));
            }
            if let Some(alts) = o.get("$one_of").and_then(Value::as_array) {
                return alts.first().and_then(materialize);
            }
            if let Some(items) = o.get("$unordered").and_then(Value::as_array) {
                return Some(Value::Array(items.iter().filter_map(materialize).collect()));
            }
            if let Some(inner) = o.get("$optional") {
                return materialize(inner);
            }
            if let Some(t) = o.get("$type").and_then(Value::as_str) {
                return Some(match t {
                    "string" => json!("text"),
                    "integer" | "number" => json!(1),
                    "bool" => json!(true),
                    "array" => json!([]),
                    "object" => json!({}),
                    _ => Value::Null,
                });
            }
            if let Some(text) = o.get("$contains").and_then(Value::as_str) {
                return Some(json!(text));
            }
            None
        }
        Value::Object(o) => Some(Value::Object(
            o.iter()
                .filter_map(|(k, v)| materialize(v).map(|v| (k.clone(), v)))
                .collect::<Map<_, _>>(),
        )),
        Value::Array(a) => Some(Value::Array(a.iter().filter_map(materialize).collect())),
        other => Some(other.clone()),
    }
}

/// A small validator for the JSON-schema subset the document uses.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        match doc["components"]["schemas"].get(name) {
            Some(s) => validate(doc, s, v, at, errors),
            None => errors.push(format!("{at}: dangling $ref {r}")),
        }
        return;
    }
    if v.as_str() == Some(IGNORED) || (v.is_null() && schema.get("nullable") == Some(&json!(true)))
    {
        return;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            validate(doc, s, v, at, errors);
        }
        return;
    }
    let ok = match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some(other) => {
            errors.push(format!("{at}: unknown type {other}"));
            true
        }
    };
    if !ok {
        errors.push(format!("{at}: {v} is not of type {}", schema["type"]));
        return;
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        if !values.contains(v) {
            errors.push(format!("{at}: {v} not in {values:?}"));
        }
    }
    if let Some(o) = v.as_object() {
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = req.as_str().unwrap_or_default();
            if !o.contains_key(key) {
                errors.push(format!("{at}: missing required {key}"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, item) in o {
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => validate(doc, s, item, &format!("{at}.{k}"), errors),
                (None, Some(s)) if s.is_object() => {
                    validate(doc, s, item, &format!("{at}.{k}"), errors)
                }
                (None, _) if props.is_some() => errors.push(format!("{at}: undocumented key {k}")),
                _ => {}
            }
        }
    }
    if let (Some(a), Some(items)) = (v.as_array(), schema.get("items")) {
        for (i, item) in a.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"), errors);
        }
    }
}

/// The document's path template for a concrete path: the one matching with the most
/// literal segments.
fn template<'a>(doc: &'a Value, path: &str) -> Option<&'a str> {
    let path = path.split('?').next().unwrap_or(path);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    doc["paths"]
        .as_object()?
        .keys()
        .filter_map(|t| {
            let tsegs: Vec<&str> = t.trim_matches('/').split('/').collect();
            if tsegs.len() != segs.len() {
                return None;
            }
            let mut literal = 0;
            for (a, b) in tsegs.iter().zip(&segs) {
                if a.starts_with('{') {
                    continue;
                }
                if a != b {
                    return None;
                }
                literal += 1;
            }
            Some((literal, t.as_str()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, t)| t)
}

fn fixture(name: &str) -> Value {
    let path = mistify_e2e::fixtures_dir().join("wire").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_recorded_json_body_matches_the_document() {
    let doc = mistify_agent::openapi::document();
    let mut checked = 0;
    let mut errors = Vec::new();
    for file in ["agent-rest.json", "rpc-envelope.json"] {
        for case in fixture(file)["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let method = case["request"]["method"]
                .as_str()
                .unwrap()
                .to_ascii_lowercase();
            let path = case["request"]["path"].as_str().unwrap();
            let Some(t) = template(&doc, path) else {
                errors.push(format!("{name}: no documented path for {path}"));
                continue;
            };
            let Some(op) = doc["paths"][t].get(&method) else {
                errors.push(format!("{name}: {method} {t} is not documented"));
                continue;
            };
            if let Some(body) = case["request"].get("body").and_then(materialize) {
                let schema = &op["requestBody"]["content"]["application/json"]["schema"];
                if schema.is_null() {
                    errors.push(format!("{name}: {method} {t} documents no request body"));
                } else {
                    validate(&doc, schema, &body, &format!("{name} request"), &mut errors);
                    checked += 1;
                }
            }
            let Some(json_body) = case["expect"]["body"].get("json").and_then(materialize) else {
                continue;
            };
            let mut status = case["expect"]["status"].to_string();
            if op["responses"].get(&status).is_none() {
                // A documented fix may change the status (e.g. 200 → 202 for async snapshots);
                // errors are the `default` answer.
                status = match case["quirk"]["fixed"]["status"].as_u64() {
                    Some(fixed) => fixed.to_string(),
                    None => "default".to_string(),
                };
            }
            let schema = &op["responses"][&status]["content"]["application/json"]["schema"];
            if schema.is_null() {
                errors.push(format!(
                    "{name}: {method} {t} documents no JSON answer with status {status}"
                ));
                continue;
            }
            validate(
                &doc,
                schema,
                &json_body,
                &format!("{name} response"),
                &mut errors,
            );
            checked += 1;
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(checked >= 45, "only {checked} bodies checked");
}

#[test]
fn the_validator_rejects_what_it_should() {
    let doc = mistify_agent::openapi::document();
    let job = json!({"$ref": "#/components/schemas/Job"});
    let mut errors = Vec::new();
    validate(
        &doc,
        &job,
        &json!({"ID": "x", "Status": "Bogus"}),
        "job",
        &mut errors,
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("missing required GuestID")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("Bogus")), "{errors:?}");
    let mut errors = Vec::new();
    validate(
        &doc,
        &json!({"$ref": "#/components/schemas/Guest"}),
        &json!({"id": "g", "memroy": 1}),
        "g",
        &mut errors,
    );
    assert!(
        errors.iter().any(|e| e.contains("undocumented key memroy")),
        "{errors:?}"
    );
}

/// Every operation, as (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            all.push((path.clone(), method.clone(), operation.clone()));
        }
    }
    all
}

#[test]
fn every_operation_documents_the_answers_of_the_shared_layers() {
    let doc = mistify_agent::openapi::document();
    let all = operations(&doc);
    assert_eq!(
        all.len(),
        36,
        "every route of the router, /openapi.json too"
    );
    for (path, method, operation) in &all {
        let at = format!("{method} {path}");
        let responses = operation["responses"].as_object().unwrap();
        let has = |status: &str| responses.contains_key(status);
        assert!(has("431") && has("503"), "{at}: 431/503");
        assert!(
            operation["responses"]["503"]["headers"]
                .get("Retry-After")
                .is_some(),
            "{at}: 503 without Retry-After"
        );
        // /healthz is open; every other route answers 401 without a known token and 403
        // to a read-only token that changes something.
        assert_eq!(has("401"), path != "/healthz", "{at}: 401");
        assert_eq!(
            has("403"),
            path != "/healthz" && method != "get",
            "{at}: 403"
        );
        if method == "post" || method == "patch" {
            for status in ["400", "408", "413"] {
                assert!(has(status), "{at}: {status}");
            }
        }
        if path.contains('{') {
            assert!(has("400"), "{at}: 400 for an unsafe id");
        }
        // Only the download passes other statuses on (the sub-agent's, as text).
        assert_eq!(
            has("default"),
            path.ends_with("/download"),
            "{at}: default answer"
        );
        for (status, answer) in responses {
            assert!(
                answer["description"].is_string(),
                "{at} {status}: no description"
            );
            if let Some(schema) = answer["content"]["application/json"].get("schema") {
                let mut errors = Vec::new();
                // Resolves every $ref of the schema (an empty object fits no required key
                // of a ref'd schema, so only dangling refs are looked for).
                validate(&doc, schema, &json!(null), &at, &mut errors);
                assert!(
                    !errors.iter().any(|e| e.contains("dangling")),
                    "{at} {status}: {errors:?}"
                );
            }
        }
    }
}

#[test]
fn operation_ids_are_unique_and_links_point_at_real_parameters() {
    let doc = mistify_agent::openapi::document();
    let all = operations(&doc);
    let mut ids = std::collections::BTreeMap::new();
    for (path, method, operation) in &all {
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no operationId"));
        assert!(
            ids.insert(id.to_string(), operation.clone()).is_none(),
            "operationId {id} twice"
        );
    }
    let mut links = 0;
    for (path, method, operation) in &all {
        for (status, answer) in operation["responses"].as_object().unwrap() {
            let Some(found) = answer.get("links").and_then(Value::as_object) else {
                continue;
            };
            for (name, link) in found {
                let at = format!("{method} {path} {status} link {name}");
                let target = link["operationId"].as_str().unwrap();
                let target = ids
                    .get(target)
                    .unwrap_or_else(|| panic!("{at}: unknown operation"));
                let names: Vec<&str> = target["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                for (param, expression) in link["parameters"].as_object().unwrap() {
                    assert!(
                        names.contains(&param.as_str()),
                        "{at}: no parameter {param}"
                    );
                    let expression = expression.as_str().unwrap();
                    assert!(
                        expression.starts_with("$response.") || expression.starts_with("$request."),
                        "{at}: {expression}"
                    );
                }
                links += 1;
            }
        }
    }
    assert!(links >= 20, "only {links} links");
}

proptest::proptest! {
    /// What the document says an id may be, the agent accepts (`api::check_id`).
    #[test]
    fn every_id_the_document_allows_is_accepted(
        id in proptest::string::string_regex(
            mistify_agent::openapi::id_pattern().trim_start_matches('^').trim_end_matches('$'),
        )
        .unwrap()
    ) {
        proptest::prop_assume!(id.chars().count() as u64 <= mistify_agent::openapi::ID_MAX_CHARS);
        proptest::prop_assert!(mistify_types::id::check("id", &id).is_ok(), "{id:?}");
    }
}

#[test]
fn path_ids_carry_the_pattern_which_names_every_refused_character() {
    let doc = mistify_agent::openapi::document();
    let param = &doc["paths"]["/guests/{id}"]["get"]["parameters"][0];
    assert_eq!(param["name"], "id");
    assert_eq!(
        param["schema"]["pattern"],
        json!(mistify_agent::openapi::id_pattern())
    );
    assert_eq!(param["schema"]["minLength"], 1);
    let pattern = mistify_agent::openapi::id_pattern();
    // The pattern names every class of character check_id refuses.
    for needle in [r"/", "@", ";", r"\\", r"\x00-\x20", r"\x7f-\xa0", r"\u3000"] {
        assert!(pattern.contains(needle), "{pattern} lacks {needle}");
    }
    for refused in [
        ".",
        "..",
        "a..b",
        "a/b",
        "a b",
        "x@y",
        "a;b",
        "\\x",
        "a\u{3000}b",
    ] {
        assert!(
            mistify_types::id::check("id", refused).is_err(),
            "{refused:?}"
        );
    }
}
