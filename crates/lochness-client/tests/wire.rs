//! The wire types against the recorded Go JSON: every stored entity of the fixtures'
//! seeds re-encodes byte for byte, and every 2xx body of the recorded exchanges decodes
//! and re-encodes to the same JSON.

mod common;

use std::collections::{BTreeMap, HashMap};

use lochness_client::{
    Flavor, FwGroup, Guest, Hypervisor, Job, JobAction, JobStatus, Network, Subnet, Vlan, VlanGroup,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

const FILES: [&str; 6] = [
    "lochness-cguestd.json",
    "lochness-chypervisord.json",
    "lochness-cnetworkd.json",
    "lochness-cplacerd.json",
    "lochness-cbootstrapd.json",
    "lochness-renderers.json",
];

fn exact<T: Serialize + DeserializeOwned>(text: &str) -> String {
    let value: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    serde_json::to_string(&value).unwrap()
}

/// The stored JSON of every seeded entity (`lochness/<kind>/<id>/metadata`, as the Go
/// library wrote it) comes back byte for byte.
#[test]
fn seeded_entities_round_trip_byte_for_byte() {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for file in FILES {
        let fixture = common::fixture(file);
        let Some(kv) = fixture["seed"]["kv"].as_array() else {
            continue;
        };
        for pair in kv {
            let key = pair[0].as_str().unwrap();
            let text = pair[1].as_str().unwrap();
            let parts: Vec<&str> = key.split('/').collect();
            if parts.len() != 4 || parts[3] != "metadata" {
                continue;
            }
            let again = match parts[1] {
                "guests" => exact::<Guest>(text),
                "hypervisors" => exact::<Hypervisor>(text),
                "flavors" => exact::<Flavor>(text),
                "networks" => exact::<Network>(text),
                "subnets" => exact::<Subnet>(text),
                "fwgroups" => exact::<FwGroup>(text),
                "vlans" => exact::<Vlan>(text),
                "vlangroups" => exact::<VlanGroup>(text),
                other => panic!("{file}: unexpected kind {other} in {key}"),
            };
            assert_eq!(again, text, "{file}: {key}");
            *seen.entry(parts[1].to_string()).or_default() += 1;
        }
    }
    for kind in [
        "guests",
        "hypervisors",
        "flavors",
        "networks",
        "subnets",
        "fwgroups",
        "vlans",
        "vlangroups",
    ] {
        assert!(
            seen.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} in the seeds: {seen:?}"
        );
    }
}

fn same<T: Serialize + DeserializeOwned>(body: &Value) -> Result<(), String> {
    let decoded: T = serde_json::from_value(body.clone()).map_err(|e| format!("decode: {e}"))?;
    let again = serde_json::to_value(&decoded).unwrap();
    if &again == body {
        Ok(())
    } else {
        Err(format!("re-encoded as {again}"))
    }
}

/// Which wire type a route answers with, by method and path (placeholders included).
fn check(method: &str, path: &str, body: &Value) -> Option<(&'static str, Result<(), String>)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Some(match (method, segments.as_slice()) {
        ("GET", ["guests"]) => ("guest list", same::<Vec<Guest>>(body)),
        (_, ["guests", _]) | ("POST", ["guests"]) | ("POST", ["guests", _, _]) => {
            ("guest", same::<Guest>(body))
        }
        ("GET", ["jobs", _]) => ("job", same::<Job>(body)),
        ("GET", ["hypervisors"]) => ("hypervisor list", same::<Vec<Hypervisor>>(body)),
        (_, ["hypervisors"]) | (_, ["hypervisors", _]) => ("hypervisor", same::<Hypervisor>(body)),
        (_, ["hypervisors", _, "config"]) | (_, ["hypervisors", _, "subnets", ..]) => {
            ("map", same::<BTreeMap<String, String>>(body))
        }
        (_, ["hypervisors", _, "guests"]) => ("id list", same::<Vec<String>>(body)),
        ("GET", ["vlans", "tags"]) => ("VLAN list", same::<Vec<Vlan>>(body)),
        (_, ["vlans", "tags"]) | (_, ["vlans", "tags", _]) => ("VLAN", same::<Vlan>(body)),
        (_, ["vlans", "tags", _, "groups"]) => ("id list", same::<Vec<String>>(body)),
        ("GET", ["vlans", "groups"]) => ("VLAN group list", same::<Vec<VlanGroup>>(body)),
        (_, ["vlans", "groups"]) | (_, ["vlans", "groups", _]) => {
            ("VLAN group", same::<VlanGroup>(body))
        }
        (_, ["vlans", "groups", _, "tags"]) => ("tag list", same::<Vec<u16>>(body)),
        _ => return None,
    })
}

/// Every 2xx JSON body of the guest, hypervisor, network and placer recordings decodes
/// into its type and encodes back to the same JSON.
#[test]
fn recorded_answers_round_trip() {
    let mut seen: HashMap<&'static str, usize> = HashMap::new();
    let mut failures = Vec::new();
    for file in &FILES[..4] {
        let fixture = common::fixture(file);
        for case in fixture["cases"].as_array().unwrap() {
            let status = common::status(case);
            let Some(json) = case["expect"]["body"].get("json") else {
                continue;
            };
            if !(200..300).contains(&status) {
                continue;
            }
            let method = case["request"]["method"].as_str().unwrap();
            let path = case["request"]["path"].as_str().unwrap();
            let body = common::concretize(json).unwrap();
            if let Some((kind, result)) = check(method, path, &body) {
                *seen.entry(kind).or_default() += 1;
                if let Err(e) = result {
                    failures.push(format!("{file} {}: {e}\n  recorded {body}", case["name"]));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for kind in [
        "guest list",
        "guest",
        "job",
        "hypervisor list",
        "hypervisor",
        "map",
        "id list",
        "VLAN list",
        "VLAN",
        "VLAN group list",
        "VLAN group",
        "tag list",
    ] {
        assert!(
            seen.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} answer: {seen:?}"
        );
    }
}

/// The placer's failed jobs: typed status and action, and `error` between `guest` and
/// `status` as Go writes it.
#[test]
fn failed_job_of_the_placer() {
    let fixture = common::fixture("lochness-cplacerd.json");
    let recorded =
        common::concretize(&common::case(&fixture, "job-no-subnet")["expect"]["body"]["json"])
            .unwrap();
    let job: Job = serde_json::from_value(recorded.clone()).unwrap();
    assert_eq!(job.status, JobStatus::Error);
    assert_eq!(job.action, JobAction::SelectHypervisor);
    assert!(
        job.error.starts_with("unable to select candidate"),
        "{}",
        job.error
    );
    assert!(job.is_finished());
    assert_eq!(job.finished(), None);
    let text = serde_json::to_string(&job).unwrap();
    let order: Vec<usize> = [
        "\"id\"",
        "\"remote\"",
        "\"action\"",
        "\"guest\"",
        "\"error\"",
        "\"status\"",
        "\"started_at\"",
        "\"finished_at\"",
    ]
    .iter()
    .map(|k| {
        text.find(k)
            .unwrap_or_else(|| panic!("{k} missing in {text}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}
