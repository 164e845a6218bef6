//! Go's decode-into-existing-value semantics, for pipelines whose stages share one
//! response object: keys present in a stage's result overwrite, absent keys keep the
//! previous stage's value, objects merge key by key, arrays are replaced, and an
//! explicit `null` resets the field.

use serde_json::{Map, Value};

/// Merges `patch` into `target` as Go's `json.Unmarshal` into a filled struct did.
pub fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(existing), Value::Object(update)) => merge_objects(existing, update),
        (target, patch) => *target = patch,
    }
}

fn merge_objects(existing: &mut Map<String, Value>, update: Map<String, Value>) {
    for (key, value) in update {
        match existing.get_mut(&key) {
            Some(slot) if slot.is_object() && value.is_object() => merge(slot, value),
            _ => {
                existing.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::merge;
    use serde_json::json;

    #[test]
    fn go_merge_semantics() {
        let mut v =
            json!({"guest": {"id": "g", "state": "create", "nics": [1, 2]}, "message": "m"});
        merge(
            &mut v,
            json!({"guest": {"state": "running", "nics": [3]}, "retry": 1}),
        );
        assert_eq!(
            v,
            json!({"guest": {"id": "g", "state": "running", "nics": [3]}, "message": "m", "retry": 1})
        );
        merge(&mut v, json!({"guest": null}));
        assert_eq!(v["guest"], json!(null));
        let mut v = json!(null);
        merge(&mut v, json!({"a": 1}));
        assert_eq!(v, json!({"a": 1}));
    }
}
