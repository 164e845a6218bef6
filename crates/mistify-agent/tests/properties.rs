//! Property tests of the agent's config loader, fed arbitrary JSON and mutated versions
//! of the shipped configuration (the id rule's are in `mistify-types`).

use mistify_agent::config::Config;
use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON documents, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("actions".to_string()),
                    Just("services".to_string()),
                    Just("stages".to_string()),
                    Just("type".to_string()),
                    Just("port".to_string()),
                    Just("timeout".to_string()),
                    Just("max_pending".to_string()),
                    Just("joblog_max".to_string()),
                    ".{0,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The shipped test configuration with the value at one path replaced by `with`.
fn mutated(pick: usize, with: Value) -> Value {
    let text = include_str!("../../../tests/fixtures/wire/agent-test-rpc.json");
    let mut config: Value = serde_json::from_str(text).expect("fixture");
    let mut paths = Vec::new();
    fn walk(v: &Value, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(path.clone());
        if let Value::Object(m) = v {
            for (k, child) in m {
                let mut p = path.clone();
                p.push(k.clone());
                walk(child, p, out);
            }
        }
    }
    walk(&config, Vec::new(), &mut paths);
    let path = &paths[pick % paths.len()];
    let mut target = &mut config;
    for key in path {
        target = &mut target[key.as_str()];
    }
    *target = with;
    config
}

fn check_load(doc: &Value) -> Result<(), TestCaseError> {
    let dir = mistify_e2e::TempDir::new("config-prop");
    let file = dir.path().join("agent.json");
    std::fs::write(&file, doc.to_string()).expect("write");
    if let Err(e) = Config::load(std::slice::from_ref(&file)) {
        prop_assert!(!e.problems.is_empty());
        let text = e.to_string();
        prop_assert!(
            text.contains("agent.json"),
            "problem without the file: {text}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_json_never_panics_the_loader_and_errors_name_the_file(doc in json()) {
        check_load(&doc)?;
    }

    #[test]
    fn a_mutated_shipped_config_never_panics_the_loader(pick in any::<usize>(), with in json()) {
        check_load(&mutated(pick, with))?;
    }
}
