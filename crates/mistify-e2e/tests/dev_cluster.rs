//! The dev cluster of `make run` (config/services/dev + config/services/cluster under
//! `mistify-supervisord`) on free ports: a guest's life through the `lochness` CLI,
//! checked on the hypervisor it was placed on (its agent and libvirt) and in the
//! controllers (address, resources), the README's cluster walk-through as written, and a
//! stop that leaves no process, pool or mount behind.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use mistify_e2e::stack::{http_get, still_running, DevCluster, DevStack};
use mistify_e2e::{binary, readme_blocks, skipped, tail};

/// The `sh` block of the README between the cluster walk-through markers.
fn cluster_walkthrough() -> String {
    let body = readme_blocks("cluster-walkthrough")
        .into_iter()
        .next()
        .expect("the cluster walk-through has no sh block");
    assert!(
        body.contains("lochness guest create"),
        "the cluster walk-through creates no guest:\n{body}"
    );
    body
}

fn bin_dir() -> PathBuf {
    binary("mistify-supervisord")
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

/// Runs `script` under bash with the binaries first on PATH and the CLI pointed at the
/// cluster; its stdout (the test fails with both outputs and the supervisor's log when
/// the script fails).
fn run(stack: &DevStack, script: &str, what: &str) -> String {
    let cluster = stack.cluster.as_ref().expect("a cluster");
    let work = stack.data().join("walk");
    std::fs::create_dir_all(&work).expect("work dir");
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Bounded: `--wait` waits as long as a job takes.
    let out = Command::new("timeout")
        .args(["300", "bash", "-c"])
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(&work)
        .envs(cluster.cli_env())
        .env("PATH", path)
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}\n--- supervisor\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        tail(&stack.log(), 120)
    );
    stdout
}

/// GET `url` → parsed JSON (the test fails on anything but 200).
fn get_json(url: &str) -> serde_json::Value {
    match http_get(url) {
        Some((200, body)) => serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}")),
        other => panic!("GET {url}: {other:?}"),
    }
}

/// The status of GET `url`.
fn status(url: &str) -> u16 {
    http_get(url).map(|(s, _)| s).unwrap_or(0)
}

/// What placement has allocated on each hypervisor (chypervisord's resources route;
/// `total` and `available` follow the heartbeat's readings of the host).
fn resources(cluster: &DevCluster) -> Vec<serde_json::Value> {
    [DevCluster::HV1, DevCluster::HV2]
        .iter()
        .map(|hv| {
            get_json(&format!(
                "{}/hypervisors/{hv}/resources",
                cluster.hypervisors
            ))["allocated"]
                .clone()
        })
        .collect()
}

/// The addresses reserved in the registered subnet (cnetworkd).
fn reserved(cluster: &DevCluster) -> serde_json::Value {
    get_json(&format!(
        "{}/subnets/{}/addresses",
        cluster.networks,
        DevCluster::SUBNET
    ))
}

#[test]
fn a_guest_lives_on_the_dev_cluster_and_the_readme_walkthrough_runs() {
    if skipped("stack") || skipped("zfs") || skipped("libvirt") || skipped("etcd") {
        return;
    }
    let walkthrough = cluster_walkthrough();
    let bin = bin_dir();
    let mut stack = DevStack::start_cluster(&bin, "cluster").unwrap_or_else(|e| panic!("{e}"));
    let cluster = stack.cluster.clone().expect("a cluster");
    let agents = [
        (DevCluster::HV1, stack.agent.clone()),
        (DevCluster::HV2, cluster.hv2_agent.clone()),
    ];
    let before = resources(&cluster);
    let reserved_before = reserved(&cluster);

    // Create through the CLI and wait for the job.
    let guest = "6c6f6368-6e65-4573-8000-6775657374aa";
    let out = run(
        &stack,
        &format!(
            "lochness --wait-timeout 120 guest create --id {guest} --flavor {} --network {} --fwgroup {} --wait",
            DevCluster::FLAVOR,
            DevCluster::NETWORK,
            DevCluster::FWGROUP
        ),
        "guest create --wait",
    );
    let job = out.lines().last().unwrap_or_default().trim().to_string();
    let job_body = get_json(&format!("{}/jobs/{job}", cluster.guests));
    assert_eq!(job_body["status"], "done", "the create job: {job_body}");

    // Placed on one of the two, with an address in the subnet; on that agent, with a
    // domain libvirt knows.
    let g = get_json(&format!("{}/guests/{guest}", cluster.guests));
    let hv = g["hypervisor"].as_str().unwrap_or_default().to_string();
    let agent = agents
        .iter()
        .find(|(id, _)| *id == hv)
        .map(|(_, url)| url.clone())
        .unwrap_or_else(|| panic!("placed on an unknown hypervisor: {g}"));
    let ip = g["ip"].as_str().unwrap_or_default().to_string();
    assert!(ip.starts_with("10.99.0."), "the guest's address: {g}");
    assert_eq!(g["subnet"], DevCluster::SUBNET, "the guest's subnet: {g}");
    let on_agent = get_json(&format!("{agent}/guests/{guest}?refresh=true"));
    assert_eq!(on_agent["id"], guest, "the agent's guest: {on_agent}");
    for (other_id, other_url) in &agents {
        if *other_id != hv {
            assert_eq!(
                status(&format!("{other_url}/guests/{guest}")),
                404,
                "the guest is also on the other hypervisor"
            );
        }
    }
    let placed = resources(&cluster);
    assert_ne!(placed, before, "placing the guest allocated nothing");

    // Actions, each a job run on the agent; the agent's state follows.
    for (action, state) in [
        ("start", "running"),
        ("reboot", "running"),
        ("poweroff", "shutoff"),
        ("start", "running"),
    ] {
        run(
            &stack,
            &format!("lochness --wait-timeout 120 guest {action} {guest} --wait"),
            action,
        );
        let on_agent = get_json(&format!("{agent}/guests/{guest}?refresh=true"));
        assert_eq!(on_agent["state"], state, "after {action}: {on_agent}");
    }

    // Delete: gone from the agent (domain and disks), the address and the resources
    // released.
    run(
        &stack,
        &format!("lochness guest delete {guest} --wait"),
        "delete",
    );
    assert_eq!(status(&format!("{agent}/guests/{guest}")), 404);
    assert_eq!(status(&format!("{}/guests/{guest}", cluster.guests)), 404);
    assert_eq!(
        reserved(&cluster),
        reserved_before,
        "addresses after the delete"
    );
    assert_eq!(resources(&cluster), before, "allocations after the delete");

    // The README block, as written.
    let out = run(&stack, &walkthrough, "the cluster walk-through");
    eprintln!("--- cluster walk-through output\n{out}");
    // It showed where the guest went and its address.
    assert!(
        out.lines().any(|l| l.contains("10.99.0.")
            && (l.contains(DevCluster::HV1) || l.contains(DevCluster::HV2))),
        "the walk-through shows no placement with an address:\n{out}"
    );
    assert_eq!(
        reserved(&cluster),
        reserved_before,
        "addresses after the walk-through"
    );

    // Stop: nothing left.
    let procs = stack.processes();
    let status = stack.stop(Duration::from_secs(120));
    assert!(
        status.is_some_and(|s| s.success()),
        "the supervisor did not stop cleanly: {status:?}\n{}",
        tail(&stack.log(), 120)
    );
    assert!(!stack.pool_imported(), "a pool is still imported");
    let left = still_running(&procs);
    assert!(left.is_empty(), "processes of the cluster left: {left:?}");
}
