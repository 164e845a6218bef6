//! The `mistify-zfs` binary over real HTTP on a real zfs-fuse pool (file disk mode),
//! fed by `mistify-image-server` serving images built by its `make` command. Every
//! step asserts the RPC reply and what `zfs list` shows.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const IMAGE: &str = "img-plain";
const GZ_IMAGE: &str = "img-gz";

fn images(v: &Value) -> Vec<Value> {
    v["images"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn images_fetch_share_list_delete_and_rebuild() {
    if mistify_e2e::skipped("zfs") {
        return;
    }
    let pool = TestPool::new();
    let out = pool.dir.path().join("images");
    make_image(&pool.name, IMAGE, 16, &out, false);
    make_image(&pool.name, GZ_IMAGE, 16, &out, true);
    assert!(out.join(format!("{GZ_IMAGE}.gz")).is_file());
    // Slow enough (≈ 2 MB/s) that the fetch is visibly pending.
    let server = image_server(&out, 30);
    let host = format!("127.0.0.1:{}", server.port);
    let db = pool.dir.path().join("images.redb");
    let db_arg = db.display().to_string();
    let mut daemon = storage(&pool.name, &host, &["--db-path", &db_arg]);
    let svc = client(daemon.port);

    let empty: Value = call(&svc, "ListImages", &json!({})).await.unwrap();
    assert_eq!(empty, json!({"images": null}));

    // Two concurrent requests → one download; `pending` with progress meanwhile.
    let req = json!({"id": IMAGE});
    let (a, b, seen) = tokio::join!(
        call::<_, Value>(&svc, "RequestImage", &req),
        call::<_, Value>(&svc, "RequestImage", &req),
        async {
            for _ in 0..400 {
                let r: Result<Value, _> = call(&svc, "GetImage", &json!({"id": IMAGE})).await;
                if let Ok(v) = r {
                    let img = &images(&v)[0];
                    if img["status"] == "pending" && img["bytes_done"].as_u64().unwrap_or(0) > 0 {
                        return Some(img.clone());
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            None
        }
    );
    let (a, b) = (a.expect("request a"), b.expect("request b"));
    let pending = seen.expect("pending never visible");
    assert!(
        pending["bytes_total"].as_u64().unwrap_or(0) > 0,
        "{pending}"
    );
    for r in [&a, &b] {
        let img = &images(r)[0];
        assert_eq!(img["id"], IMAGE);
        assert_eq!(img["status"], "complete");
        assert_eq!(img["size"], 16);
        assert_eq!(img["volume"], format!("{}/images/{IMAGE}", pool.name));
        assert_eq!(
            img["snapshot"],
            format!("{}/images/{IMAGE}@image", pool.name)
        );
    }
    assert_eq!(
        served(&server, IMAGE).await,
        1,
        "two requests, one download"
    );
    assert!(pool.has(&format!("{}/images/{IMAGE}@image", pool.name)));

    // Already complete: no new download.
    let again: Value = call(&svc, "RequestImage", &json!({"id": IMAGE}))
        .await
        .unwrap();
    assert_eq!(images(&again)[0]["status"], "complete");
    assert_eq!(served(&server, IMAGE).await, 1);

    // Gzipped stream (no Content-Encoding): sniffed.
    let gz: Value = call(&svc, "RequestImage", &json!({"id": GZ_IMAGE}))
        .await
        .unwrap();
    assert_eq!(images(&gz)[0]["status"], "complete");
    assert!(pool.has(&format!("{}/images/{GZ_IMAGE}@image", pool.name)));
    let same = read(
        &pool
            .mountpoint(&format!("{}/images/{GZ_IMAGE}", pool.name))
            .join("disk.img"),
    );
    assert_eq!(same.len(), 16 << 20);

    let list: Value = call(&svc, "ListImages", &json!({})).await.unwrap();
    assert_eq!(images(&list).len(), 2);

    // Unknown image.
    assert_eq!(
        call_err(&svc, "GetImage", &json!({"id": "nope"})).await,
        "not found"
    );
    assert_eq!(
        call_err(&svc, "DeleteImage", &json!({"id": "nope"})).await,
        "not found"
    );
    assert!(!call_err(&svc, "RequestImage", &json!({"id": "nope"}))
        .await
        .is_empty());
    let failed: Value = call(&svc, "GetImage", &json!({"id": "nope"}))
        .await
        .unwrap();
    assert_eq!(images(&failed)[0]["status"], "error");
    assert!(
        images(&failed)[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("received 404"),
        "{failed}"
    );
    let _: Value = call(&svc, "DeleteImage", &json!({"id": "nope"}))
        .await
        .unwrap();

    // DeleteImage.
    let deleted: Value = call(&svc, "DeleteImage", &json!({"id": IMAGE}))
        .await
        .unwrap();
    assert_eq!(images(&deleted)[0]["id"], IMAGE);
    assert!(!pool.has(&format!("{}/images/{IMAGE}", pool.name)));
    assert_eq!(
        call_err(&svc, "GetImage", &json!({"id": IMAGE})).await,
        "not found"
    );

    // No temp files left behind.
    let temp = pool
        .mountpoint(&format!("{}/images", pool.name))
        .join(".temp");
    assert_eq!(std::fs::read_dir(&temp).map(|d| d.count()).unwrap_or(0), 0);

    // Records rebuilt from the datasets when the store file is gone.
    assert!(daemon.terminate(Duration::from_secs(10)).is_some());
    std::fs::remove_file(&db).expect("remove the store file");
    // A download left by a crash is removed at start.
    let stale = temp.join("img-gz.1234.part");
    std::fs::write(&stale, b"partial").unwrap();
    let daemon = storage(&pool.name, &host, &["--db-path", &db_arg]);
    let svc = client(daemon.port);
    let list: Value = call(&svc, "ListImages", &json!({})).await.unwrap();
    let imgs = images(&list);
    assert_eq!(imgs.len(), 1, "{list}");
    assert_eq!(imgs[0]["id"], GZ_IMAGE);
    assert_eq!(imgs[0]["status"], "complete");
    assert_eq!(imgs[0]["size"], 16);
    assert_eq!(
        imgs[0]["snapshot"],
        format!("{}/images/{GZ_IMAGE}@image", pool.name)
    );
    assert!(!stale.exists(), "stale temp file kept");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_fetches_queues_further_downloads() {
    if mistify_e2e::skipped("zfs") {
        return;
    }
    let pool = TestPool::new();
    let out = pool.dir.path().join("images");
    // ≈ 4 MiB each at 64 KiB per 20 ms: more than a second per download.
    make_image_filled(&pool.name, "first", 8, 4, &out, false);
    make_image_filled(&pool.name, "second", 8, 4, &out, false);
    let server = image_server(&out, 20);
    let daemon = storage(
        &pool.name,
        &format!("127.0.0.1:{}", server.port),
        &["--max-fetches", "1"],
    );
    let svc = client(daemon.port);
    let (r1, r2) = (json!({"id": "first"}), json!({"id": "second"}));
    let (a, b, observed) = tokio::join!(
        call::<_, Value>(&svc, "RequestImage", &r1),
        async {
            // Ask for the second once the first is under way.
            tokio::time::sleep(Duration::from_millis(200)).await;
            call::<_, Value>(&svc, "RequestImage", &r2).await
        },
        async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let list: Value = call(&svc, "ListImages", &json!({})).await.unwrap();
            let not_ready = call_err(
                &svc,
                "CreateGuestDisks",
                &json!({"guest": {"id": "g", "disks": [{"image": "first"}]}}),
            )
            .await;
            assert_eq!(not_ready, "image not ready");
            (list, served(&server, "second").await)
        }
    );
    let (list, second_served) = observed;
    let by_id = |id: &str| {
        images(&list)
            .into_iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {list}"))
    };
    assert_eq!(by_id("first")["status"], "pending", "{list}");
    assert_eq!(by_id("second")["status"], "pending", "{list}");
    assert_eq!(by_id("second")["bytes_done"], 0, "second started: {list}");
    assert_eq!(second_served, 0, "second downloaded while the first ran");
    assert_eq!(images(&a.unwrap())[0]["status"], "complete");
    assert_eq!(images(&b.unwrap())[0]["status"], "complete");
    assert_eq!(served(&server, "second").await, 1);
    assert!(pool.has(&format!("{}/images/second@image", pool.name)));
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guest_disks_snapshots_download_rollback_delete() {
    if mistify_e2e::skipped("zfs") {
        return;
    }
    let pool = TestPool::new();
    let p = pool.name.clone();
    let out = pool.dir.path().join("images");
    make_image(&p, IMAGE, 16, &out, false);
    let server = image_server(&out, 0);
    let daemon = storage(&p, &format!("127.0.0.1:{}", server.port), &[]);
    let svc = client(daemon.port);
    let _: Value = call(&svc, "RequestImage", &json!({"id": IMAGE}))
        .await
        .unwrap();
    let image_file = read(
        &pool
            .mountpoint(&format!("{p}/images/{IMAGE}"))
            .join("disk.img"),
    );

    let g = "5a0c0f3e-guest";
    let guest = |disks: Value| json!({"guest": {"id": g, "disks": disks}});
    let disks = json!([{"image": IMAGE, "bus": "virtio", "device": "vda"}, {"size": 32}]);

    // VerifyDisks: too large fails, small passes.
    assert_eq!(
        call_err(&svc, "VerifyDisks", &guest(json!([{"size": 10_000_000}]))).await,
        "no space left on device"
    );
    let ok: Value = call(&svc, "VerifyDisks", &guest(disks.clone()))
        .await
        .unwrap();
    assert_eq!(ok["guest"]["disks"][0]["size"], 16);
    assert_eq!(ok["guest"]["disks"][1]["size"], 32);
    assert!(
        !pool.has(&format!("{p}/guests/{g}")),
        "verify created datasets"
    );
    assert_eq!(
        call_err(&svc, "VerifyDisks", &guest(json!([]))).await,
        "invalid argument"
    );
    assert_eq!(
        call_err(&svc, "VerifyDisks", &guest(json!([{}]))).await,
        "invalid argument"
    );
    assert_eq!(
        call_err(&svc, "VerifyDisks", &guest(json!([{"image": "nope"}]))).await,
        "not found"
    );

    // CreateGuestDisks twice: idempotent.
    let mut replies = Vec::new();
    for _ in 0..2 {
        let r: Value = call(&svc, "CreateGuestDisks", &guest(disks.clone()))
            .await
            .unwrap();
        replies.push(r);
    }
    assert_eq!(replies[0], replies[1]);
    let d = &replies[0]["guest"]["disks"];
    let disk0 = format!("{p}/guests/{g}/disk-0");
    let disk1 = format!("{p}/guests/{g}/disk-1");
    assert_eq!(d[0]["volume"], disk0);
    assert_eq!(d[1]["volume"], disk1);
    assert_eq!(d[0]["device"], "vda");
    let src0 = std::path::PathBuf::from(d[0]["source"].as_str().unwrap());
    let src1 = std::path::PathBuf::from(d[1]["source"].as_str().unwrap());
    assert_eq!(src0, pool.mountpoint(&disk0).join("disk.img"));
    assert_eq!(read(&src0), image_file, "disk-0 is a clone of the image");
    assert_eq!(std::fs::metadata(&src1).unwrap().len(), 32 << 20);
    assert!(pool.has(&disk0) && pool.has(&disk1));

    // Snapshots: one disk, then the whole guest (recursive).
    let s: Value = call(
        &svc,
        "CreateSnapshot",
        &json!({"id": format!("guests/{g}/disk-0"), "dest": "one"}),
    )
    .await
    .unwrap();
    assert_eq!(s["snapshots"][0]["id"], format!("{disk0}@one"));
    assert!(pool.has(&format!("{disk0}@one")));
    let s: Value = call(
        &svc,
        "CreateSnapshot",
        &json!({"id": format!("guests/{g}"), "dest": "all", "recursive": true}),
    )
    .await
    .unwrap();
    assert_eq!(s["snapshots"].as_array().unwrap().len(), 3, "{s}");
    for name in [
        format!("{p}/guests/{g}@all"),
        format!("{disk0}@all"),
        format!("{disk1}@all"),
    ] {
        assert!(pool.has(&name), "{name}");
    }
    assert_eq!(
        call_err(
            &svc,
            "CreateSnapshot",
            &json!({"id": format!("guests/{g}@all"), "dest": "x"})
        )
        .await,
        "cannot create a snapshot of a snapshot"
    );
    assert_eq!(
        call_err(
            &svc,
            "CreateSnapshot",
            &json!({"id": format!("guests/{g}"), "dest": "-?_&"})
        )
        .await,
        "invalid snapshot dest"
    );

    let l: Value = call(&svc, "ListSnapshots", &json!({"id": format!("guests/{g}")}))
        .await
        .unwrap();
    assert_eq!(l["snapshots"].as_array().unwrap().len(), 4, "{l}");
    let l: Value = call(
        &svc,
        "ListSnapshots",
        &json!({"id": format!("guests/{g}/disk-1")}),
    )
    .await
    .unwrap();
    assert_eq!(l["snapshots"].as_array().unwrap().len(), 1, "{l}");
    let one: Value = call(
        &svc,
        "GetSnapshot",
        &json!({"id": format!("guests/{g}/disk-0@one")}),
    )
    .await
    .unwrap();
    assert_eq!(one["snapshots"][0]["id"], format!("{disk0}@one"));
    assert_eq!(
        call_err(&svc, "GetSnapshot", &json!({"id": format!("guests/{g}")})).await,
        "not a snapshot"
    );
    assert_eq!(
        call_err(
            &svc,
            "GetSnapshot",
            &json!({"id": format!("guests/{g}@nope")})
        )
        .await,
        "not found"
    );

    // Download (recursive: replication stream) → zfs receive → same content.
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/snapshots/download", daemon.url()))
        .json(&json!({"id": format!("guests/{g}@all"), "recursive": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let stream = resp.bytes().await.unwrap();
    let recv = format!("{p}/received");
    receive(&recv, &stream);
    assert!(pool.has(&format!("{recv}/disk-0@all")), "{:?}", pool.list());
    assert!(pool.has(&format!("{recv}/disk-1@all")));
    assert_eq!(
        read(&pool.mountpoint(&format!("{recv}/disk-0")).join("disk.img")),
        image_file
    );
    // A single disk snapshot, not recursive.
    let resp = http
        .post(format!("{}/snapshots/download", daemon.url()))
        .json(&json!({"id": format!("guests/{g}/disk-1@one")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    for (body, code) in [
        ("null", 400),
        ("{}", 400),
        ("", 400),
        (r#"{"id":"+*%$@"}"#, 400),
    ] {
        let resp = http
            .post(format!("{}/snapshots/download", daemon.url()))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), code, "body {body:?}");
    }

    // Rollback: change disk-0, take a newer snapshot, roll back to `all`.
    std::fs::write(&src0, b"changed").unwrap();
    let _: Value = call(
        &svc,
        "CreateSnapshot",
        &json!({"id": format!("guests/{g}"), "dest": "later", "recursive": true}),
    )
    .await
    .unwrap();
    let refused = call_err(
        &svc,
        "RollbackSnapshot",
        &json!({"id": format!("guests/{g}@all"), "recursive": true}),
    )
    .await;
    assert!(refused.contains("more recent snapshots"), "{refused}");
    let r: Value = call(
        &svc,
        "RollbackSnapshot",
        &json!({"id": format!("guests/{g}@all"), "recursive": true, "destroyMoreRecent": true}),
    )
    .await
    .unwrap();
    assert_eq!(r["snapshots"][0]["id"], format!("{p}/guests/{g}@all"));
    assert_eq!(read(&src0), image_file, "content restored");
    assert!(!pool.has(&format!("{disk0}@later")) && !pool.has(&format!("{p}/guests/{g}@later")));

    // DeleteSnapshot (plain, then recursive).
    let d: Value = call(
        &svc,
        "DeleteSnapshot",
        &json!({"id": format!("guests/{g}/disk-0@one")}),
    )
    .await
    .unwrap();
    assert_eq!(d["snapshots"][0]["id"], format!("{disk0}@one"));
    assert!(!pool.has(&format!("{disk0}@one")));
    let d: Value = call(
        &svc,
        "DeleteSnapshot",
        &json!({"id": format!("guests/{g}@all"), "recursive": true}),
    )
    .await
    .unwrap();
    assert_eq!(d["snapshots"].as_array().unwrap().len(), 3);
    assert!(!pool
        .list()
        .iter()
        .any(|n| n.contains(&format!("guests/{g}")) && n.contains('@')));

    // The image cannot go while a disk is its clone.
    assert!(!call_err(&svc, "DeleteImage", &json!({"id": IMAGE}))
        .await
        .is_empty());
    assert!(pool.has(&format!("{p}/images/{IMAGE}")));

    // DeleteGuestsDisks: nothing left; again (and with the other spelling): success.
    let del: Value = call(&svc, "DeleteGuestsDisks", &guest(disks.clone()))
        .await
        .unwrap();
    assert_eq!(del["guest"]["id"], g);
    assert!(del["guest"].get("disks").is_none(), "{del}");
    assert!(
        !pool.list().iter().any(|n| n.contains(g)),
        "{:?}",
        pool.list()
    );
    let _: Value = call(&svc, "DeleteGuestsDisks", &guest(json!([])))
        .await
        .unwrap();
    let _: Value = call(&svc, "DeleteGuestDisks", &guest(json!([])))
        .await
        .unwrap();

    // Now the image can go (the received copy is a clone of it too).
    destroy(&recv);
    let _: Value = call(&svc, "DeleteImage", &json!({"id": IMAGE}))
        .await
        .unwrap();
    assert!(!pool.has(&format!("{p}/images/{IMAGE}")));
    drop(daemon);
}

/// `zfs receive name` of `stream`.
pub fn receive(name: &str, stream: &[u8]) {
    use std::io::Write;
    let mut child = mistify_e2e::stack::zfs_locked()
        .args(["receive", name])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("zfs receive");
    child.stdin.take().unwrap().write_all(stream).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "zfs receive: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_image_server_records_the_error_and_a_retry_works() {
    if mistify_e2e::skipped("zfs") {
        return;
    }
    let pool = TestPool::new();
    let out = pool.dir.path().join("images");
    make_image(&pool.name, IMAGE, 4, &out, false);
    // Nobody listens on this port yet.
    let port = mistify_e2e::free_port();
    let daemon = storage(&pool.name, &format!("127.0.0.1:{port}"), &[]);
    let svc = client(daemon.port);
    let err = call_err(&svc, "RequestImage", &json!({"id": IMAGE})).await;
    assert!(err.contains("cannot download"), "{err}");
    let v: Value = call(&svc, "GetImage", &json!({"id": IMAGE})).await.unwrap();
    assert_eq!(v["images"][0]["status"], "error");
    assert_eq!(v["images"][0]["error"], err.as_str());
    assert!(!pool.has(&format!("{}/images/{IMAGE}", pool.name)));
    // CreateGuestDisks on an image that is not complete.
    assert_eq!(
        call_err(
            &svc,
            "CreateGuestDisks",
            &json!({"guest": {"id": "g1", "disks": [{"image": IMAGE}]}})
        )
        .await,
        "image not ready"
    );
    let server = mistify_e2e::Daemon::start(
        &bin("mistify-image-server"),
        &[
            "--dir".into(),
            out.display().to_string(),
            "--port".into(),
            port.to_string(),
        ],
        port,
    );
    let v: Value = call(&svc, "RequestImage", &json!({"id": IMAGE}))
        .await
        .unwrap();
    assert_eq!(v["images"][0]["status"], "complete");
    assert!(v["images"][0].get("error").is_none());
    assert!(pool.has(&format!("{}/images/{IMAGE}@image", pool.name)));
    drop(server);
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sources_outside_allowed_sources_are_refused() {
    if mistify_e2e::skipped("zfs") {
        return;
    }
    let pool = TestPool::new();
    let out = pool.dir.path().join("images");
    let file = make_image(&pool.name, IMAGE, 4, &out, false);
    let server = image_server(&out, 0);
    let allowed_url = format!("http://127.0.0.1:{}/images/", server.port);
    let allowed = format!("{allowed_url},{}", out.display());
    // Without --allowed-sources every source is refused.
    let daemon = storage(&pool.name, "127.0.0.1:9", &[]);
    let svc = client(daemon.port);
    for source in [
        file.display().to_string(),
        format!("{allowed_url}{IMAGE}/download"),
    ] {
        let e = call_err(
            &svc,
            "RequestImage",
            &json!({"id": IMAGE, "source": source}),
        )
        .await;
        assert!(e.starts_with("source not allowed"), "{e}");
    }
    drop(daemon);
    let daemon = storage(&pool.name, "127.0.0.1:9", &["--allowed-sources", &allowed]);
    let svc = client(daemon.port);
    for source in [
        "/etc/passwd".to_string(),
        format!("{}/../pool.img", out.display()),
        "http://127.0.0.1:9/x".to_string(),
        format!("{allowed_url}../stats"),
        "file:///etc/passwd".to_string(),
    ] {
        let e = call_err(
            &svc,
            "RequestImage",
            &json!({"id": IMAGE, "source": source}),
        )
        .await;
        assert!(e.starts_with("source not allowed"), "{source}: {e}");
    }
    assert_eq!(served(&server, IMAGE).await, 0);
    // Allowed: a URL under the prefix, and a file in the directory.
    let v: Value = call(
        &svc,
        "RequestImage",
        &json!({"id": IMAGE, "source": format!("{allowed_url}{IMAGE}/download")}),
    )
    .await
    .unwrap();
    assert_eq!(v["images"][0]["status"], "complete");
    assert_eq!(served(&server, IMAGE).await, 1);
    let v: Value = call(
        &svc,
        "RequestImage",
        &json!({"id": "fromfile", "source": file.display().to_string()}),
    )
    .await
    .unwrap();
    assert_eq!(v["images"][0]["status"], "complete");
    assert!(pool.has(&format!("{}/images/fromfile@image", pool.name)));
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volumes_and_clone_image() {
    if mistify_e2e::skipped("zfs") {
        return;
    }
    let pool = TestPool::new();
    let p = pool.name.clone();
    let out = pool.dir.path().join("images");
    make_image(&p, IMAGE, 8, &out, false);
    let server = image_server(&out, 0);
    let daemon = storage(&p, &format!("127.0.0.1:{}", server.port), &[]);
    let svc = client(daemon.port);

    let empty: Value = call(&svc, "ListVolumes", &json!({})).await.unwrap();
    assert_eq!(empty, json!({"volumes": []}));
    assert_eq!(
        call_err(&svc, "CreateVolume", &json!({"id": "v1"})).await,
        "need a valid size"
    );
    assert_eq!(
        call_err(&svc, "CreateVolume", &json!({"size": 8})).await,
        "need an id"
    );
    let v: Value = call(&svc, "CreateVolume", &json!({"id": "vols/v1", "size": 24}))
        .await
        .unwrap();
    let vol = &v["volumes"][0];
    assert_eq!(vol["id"], format!("{p}/vols/v1"));
    assert_eq!(vol["size"], 24);
    let device = std::path::PathBuf::from(vol["device"].as_str().unwrap());
    assert_eq!(
        device,
        pool.mountpoint(&format!("{p}/vols/v1")).join("disk.img")
    );
    assert_eq!(std::fs::metadata(&device).unwrap().len(), 24 << 20);
    assert!(pool.has(&format!("{p}/vols/v1")));

    let g: Value = call(&svc, "GetVolume", &json!({"id": "vols/v1"}))
        .await
        .unwrap();
    assert_eq!(g["volumes"][0], *vol);
    assert_eq!(
        call_err(&svc, "GetVolume", &json!({"id": "vols"})).await,
        "not a volume"
    );
    assert_eq!(
        call_err(&svc, "GetVolume", &json!({"id": "vols/nope"})).await,
        "not found"
    );
    let l: Value = call(&svc, "ListVolumes", &json!({})).await.unwrap();
    assert_eq!(l["volumes"].as_array().unwrap().len(), 1, "{l}");

    // CloneImage: dest is a full name inside the pool.
    let _: Value = call(&svc, "RequestImage", &json!({"id": IMAGE}))
        .await
        .unwrap();
    assert_eq!(
        call_err(&svc, "CloneImage", &json!({"id": IMAGE})).await,
        "need dest"
    );
    assert_eq!(
        call_err(
            &svc,
            "CloneImage",
            &json!({"id": "nope", "dest": format!("{p}/vols/c")})
        )
        .await,
        "not found"
    );
    assert_eq!(
        call_err(
            &svc,
            "CloneImage",
            &json!({"id": IMAGE, "dest": "otherpool/c"})
        )
        .await,
        "not a valid dataset"
    );
    let c: Value = call(
        &svc,
        "CloneImage",
        &json!({"id": IMAGE, "dest": format!("{p}/vols/c")}),
    )
    .await
    .unwrap();
    assert_eq!(c["volumes"][0]["id"], format!("{p}/vols/c"));
    assert_eq!(c["volumes"][0]["size"], 8);
    assert!(pool.has(&format!("{p}/vols/c")));

    // DeleteDataset: recursive, any dataset.
    let d: Value = call(&svc, "DeleteDataset", &json!({"id": "vols"}))
        .await
        .unwrap();
    assert_eq!(d["volumes"][0]["id"], format!("{p}/vols"));
    assert!(
        !pool.list().iter().any(|n| n.contains("/vols")),
        "{:?}",
        pool.list()
    );
    assert_eq!(
        call_err(&svc, "DeleteDataset", &json!({"id": "vols"})).await,
        "not found"
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_of_the_wrong_kind_or_garbage_are_refused() {
    if mistify_e2e::skipped("zfs") {
        return;
    }
    let pool = TestPool::new();
    let p = pool.name.clone();
    let out = pool.dir.path().join("images");
    std::fs::create_dir_all(&out).unwrap();
    // A filesystem stream without disk.img, and bytes that are no stream at all.
    zfs(&["create", &format!("{p}/plain")]);
    zfs(&["snapshot", &format!("{p}/plain@s")]);
    let o = Command::new("zfs")
        .args(["send", &format!("{p}/plain@s")])
        .output()
        .unwrap();
    assert!(o.status.success());
    std::fs::write(out.join("nodisk"), &o.stdout).unwrap();
    std::fs::write(out.join("garbage"), vec![7u8; 100_000]).unwrap();
    let server = image_server(&out, 0);
    let daemon = storage(&p, &format!("127.0.0.1:{}", server.port), &[]);
    let svc = client(daemon.port);
    let e = call_err(&svc, "RequestImage", &json!({"id": "nodisk"})).await;
    assert!(e.contains("not an image of disk mode"), "{e}");
    let e = call_err(&svc, "RequestImage", &json!({"id": "garbage"})).await;
    assert!(e.contains("zfs receive"), "{e}");
    for id in ["nodisk", "garbage"] {
        let v: Value = call(&svc, "GetImage", &json!({"id": id})).await.unwrap();
        assert_eq!(v["images"][0]["status"], "error");
        assert!(!pool.has(&format!("{p}/images/{id}")), "{:?}", pool.list());
    }
    let temp = pool.mountpoint(&format!("{p}/images")).join(".temp");
    assert_eq!(std::fs::read_dir(&temp).map(|d| d.count()).unwrap_or(0), 0);
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fetch_cut_by_a_crash_is_an_error_after_restart_and_retries() {
    if mistify_e2e::skipped("zfs") {
        return;
    }
    let pool = TestPool::new();
    let out = pool.dir.path().join("images");
    make_image_filled(&pool.name, IMAGE, 8, 4, &out, false);
    let server = image_server(&out, 50);
    let host = format!("127.0.0.1:{}", server.port);
    let mut daemon = storage(&pool.name, &host, &[]);
    let svc = client(daemon.port);
    let background = {
        let svc = svc.clone();
        tokio::spawn(
            async move { call::<_, Value>(&svc, "RequestImage", &json!({"id": IMAGE})).await },
        )
    };
    let mut pending = false;
    for _ in 0..200 {
        if let Ok(v) = call::<_, Value>(&svc, "GetImage", &json!({"id": IMAGE})).await {
            if v["images"][0]["bytes_done"].as_u64().unwrap_or(0) > 0 {
                pending = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pending, "the fetch never showed progress");
    daemon.kill_hard();
    assert!(
        background.await.unwrap().is_err(),
        "the cut request cannot succeed"
    );
    let temp = pool
        .mountpoint(&format!("{}/images", pool.name))
        .join(".temp");
    assert_eq!(
        std::fs::read_dir(&temp).unwrap().count(),
        1,
        "partial download on disk"
    );

    let daemon = storage(&pool.name, &host, &[]);
    let svc = client(daemon.port);
    let v: Value = call(&svc, "GetImage", &json!({"id": IMAGE})).await.unwrap();
    assert_eq!(v["images"][0]["status"], "error", "{v}");
    assert_eq!(v["images"][0]["error"], "interrupted by a restart");
    assert_eq!(
        std::fs::read_dir(&temp).unwrap().count(),
        0,
        "temp not cleaned"
    );
    let v: Value = call(&svc, "RequestImage", &json!({"id": IMAGE}))
        .await
        .unwrap();
    assert_eq!(v["images"][0]["status"], "complete");
    assert!(pool.has(&format!("{}/images/{IMAGE}@image", pool.name)));
    drop(daemon);
}
