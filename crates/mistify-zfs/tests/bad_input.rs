//! Bad names over real HTTP against the store (in process, on a real pool, so that its
//! command counter can prove that no zfs command ran for any of them).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use mistify_zfs::store::{Config, DiskMode, Store};
use mistify_zfs::zfs::{Flavor, Zfs};
use serde_json::{json, Value};

const BAD: &[&str] = &[
    "guests/../x",
    "..",
    "guests/a;reboot",
    "guests/a b",
    "guests/$(reboot)",
    "/guests/a",
    "guests/a@b@c",
    "guests/-rf",
    "guests/a`id`",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_refused_before_any_zfs_command() {
    if mistify_e2e::skipped("zfs") {
        return;
    }
    let pool = TestPool::new();
    let mut cfg = Config::new(&pool.name);
    cfg.disk_mode = DiskMode::File;
    let zfs = Zfs::with_flavor("zfs", Flavor::Fuse, Duration::from_secs(60));
    let store = Store::open_with(cfg, zfs).await.expect("store");
    let counter = store.zfs().clone();
    let server = mistify_zfs::api::server(store)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind")
        .spawn()
        .expect("serve");
    let svc = client(server.addr().port());
    let before = counter.commands_run();
    assert!(before > 0, "opening the store ran zfs");
    let http = reqwest::Client::new();
    let mut checked = 0;
    for bad in BAD {
        let snap = if bad.contains('@') {
            bad.to_string()
        } else {
            format!("{bad}@s")
        };
        let cases: Vec<(&str, Value)> = vec![
            ("CreateSnapshot", json!({"id": bad, "dest": "s"})),
            ("ListSnapshots", json!({"id": bad})),
            ("GetSnapshot", json!({"id": snap})),
            ("DeleteSnapshot", json!({"id": snap, "recursive": true})),
            (
                "RollbackSnapshot",
                json!({"id": snap, "destroyMoreRecent": true}),
            ),
            ("GetVolume", json!({"id": bad})),
            ("CreateVolume", json!({"id": bad, "size": 8})),
            ("DeleteDataset", json!({"id": bad})),
            ("RequestImage", json!({"id": bad})),
            ("GetImage", json!({"id": bad})),
            ("DeleteImage", json!({"id": bad})),
            (
                "CloneImage",
                json!({"id": "x", "dest": format!("{}/{bad}", pool.name)}),
            ),
            (
                "CreateGuestDisks",
                json!({"guest": {"id": bad, "disks": [{"size": 8}]}}),
            ),
            (
                "VerifyDisks",
                json!({"guest": {"id": bad, "disks": [{"size": 8}]}}),
            ),
            ("DeleteGuestsDisks", json!({"guest": {"id": bad}})),
        ];
        for (method, req) in cases {
            let e = call_err(&svc, method, &req).await;
            assert!(
                ["not a valid dataset", "not found", "invalid snapshot name"].contains(&e.as_str()),
                "{method} {req}: {e}"
            );
            checked += 1;
        }
        let resp = http
            .post(format!("{}/snapshots/download", server.url()))
            .json(&json!({"id": snap, "recursive": true}))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_client_error(),
            "download {snap}: {}",
            resp.status()
        );
        assert_eq!(
            counter.commands_run(),
            before,
            "a zfs command ran for {bad:?}"
        );
    }
    // Snapshot names, too.
    let e = call_err(
        &svc,
        "CreateSnapshot",
        &json!({"id": "guests", "dest": "a;b"}),
    )
    .await;
    assert_eq!(e, "invalid snapshot dest");
    assert!(checked > 100);
    // Nothing was created.
    assert!(!pool
        .list()
        .iter()
        .any(|n| n.contains("reboot") || n.contains("rf")));
    server.stop().await.expect("stop");
}
