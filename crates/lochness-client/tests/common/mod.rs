//! Reading the recorded Go exchanges (`tests/fixtures/wire/lochness-*.json`).

#![allow(dead_code)]

use serde_json::{Map, Value};

/// The fixture file `name` (`lochness-cguestd.json`).
pub fn fixture(name: &str) -> Value {
    let path = mistify_e2e::fixtures_dir().join("wire").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The case `name` of a fixture.
pub fn case<'a>(fixture: &'a Value, name: &str) -> &'a Value {
    fixture["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// A concrete value a matcher of the fixture format accepts (`$format: uuid` → a UUID,
/// `$unordered` → its array in order, `$type: array` → `[]`, …); `None` for a key that
/// may be absent (`$ignore`, `$absent`, `$optional`, `$any`). Placeholders (`{guest_new}`)
/// stay as they are: they are strings either way.
pub fn concretize(value: &Value) -> Option<Value> {
    match value {
        Value::Array(items) => Some(Value::Array(items.iter().filter_map(concretize).collect())),
        Value::Object(map) => {
            if let Some(items) = map.get("$unordered") {
                return concretize(items);
            }
            if let Some(format) = map.get("$format") {
                return Some(Value::String(
                    match format.as_str() {
                        Some("uuid") => "0b0b0b0b-0000-4000-8000-000000000001",
                        Some("rfc3339") => "0001-01-01T00:00:00Z",
                        _ => "text",
                    }
                    .to_string(),
                ));
            }
            if map.contains_key("$regex") || map.contains_key("$contains") {
                return Some(Value::String("text".to_string()));
            }
            if let Some(all) = map.get("$all_of") {
                return all.as_array().and_then(|a| a.first()).and_then(concretize);
            }
            if let Some(options) = map.get("$one_of") {
                return options
                    .as_array()
                    .and_then(|o| o.first())
                    .and_then(concretize);
            }
            if let Some(kind) = map.get("$type") {
                return Some(match kind.as_str() {
                    Some("array") => Value::Array(Vec::new()),
                    Some("object") => Value::Object(Map::new()),
                    Some("string") => Value::String(String::new()),
                    Some("integer") | Some("number") => Value::from(0),
                    Some("bool") => Value::Bool(false),
                    _ => Value::Null,
                });
            }
            if ["$ignore", "$absent", "$optional", "$any"]
                .iter()
                .any(|k| map.contains_key(*k))
            {
                return None;
            }
            let mut out = Map::new();
            for (k, v) in map {
                if k.starts_with('$') {
                    continue;
                }
                if let Some(v) = concretize(v) {
                    out.insert(k.clone(), v);
                }
            }
            Some(Value::Object(out))
        }
        other => Some(other.clone()),
    }
}

/// The status of a case's expectation (the first one when several are allowed).
pub fn status(case: &Value) -> u16 {
    let status = &case["expect"]["status"];
    status
        .as_u64()
        .or_else(|| {
            status
                .as_array()
                .and_then(|s| s.first())
                .and_then(Value::as_u64)
        })
        .and_then(|s| u16::try_from(s).ok())
        .expect("status")
}

/// The recorded body of a case as the bytes a daemon would send: the JSON of a `json`
/// body (concretized), the text of a `text` body.
pub fn body(case: &Value) -> Vec<u8> {
    let body = &case["expect"]["body"];
    if let Some(json) = body.get("json") {
        let mut bytes = serde_json::to_vec(&concretize(json).unwrap_or(Value::Null)).unwrap();
        bytes.push(b'\n');
        bytes
    } else if let Some(text) = body.get("text").and_then(Value::as_str) {
        text.as_bytes().to_vec()
    } else {
        Vec::new()
    }
}

/// The `Content-Type` a case's answer had (`application/json` unless it names a media
/// type).
pub fn content_type(case: &Value) -> String {
    let header = &case["expect"]["headers"]["Content-Type"];
    header
        .as_str()
        .or_else(|| header["$media_type"].as_str())
        .unwrap_or("application/json")
        .to_string()
}
