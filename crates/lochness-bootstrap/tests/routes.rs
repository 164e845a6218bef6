//! cbootstrapd beyond the recording: bad input, the images directory (files, missing
//! files, paths that climb out of it), the address index following etcd, the version
//! order with a cluster `defaultVersion`, `-o`, `/metrics` and `/healthz`.

mod common;

use std::time::{Duration, Instant};

use common::{get, raw_get, Boot, BASE};

const HV1: &str = "aaaa0041-1111-4111-8111-000000000041";

#[tokio::test]
async fn bad_input_is_refused() {
    let Some(boot) = Boot::start(&[]) else { return };
    for route in ["ipxe", "config"] {
        for bad in [
            "bogus",
            "1.2.3",
            "192.168.40.256",
            "010.1.1.1",
            "fe80::1%25eth0",
        ] {
            let (status, ct, body) = get(&boot.url(&format!("/{route}/{bad}"))).await;
            assert_eq!(
                (status, body.as_str()),
                (400, "invalid address\n"),
                "{route} {bad}"
            );
            assert_eq!(ct, "text/plain; charset=utf-8");
        }
        // A valid address no hypervisor has.
        let (status, _, body) = get(&boot.url(&format!("/{route}/10.9.9.9"))).await;
        assert_eq!((status, body.as_str()), (404, "hypervisor not found\n"));
        let (status, _, body) = get(&boot.url(&format!("/{route}/fd00::1"))).await;
        assert_eq!((status, body.as_str()), (404, "hypervisor not found\n"));
    }
}

#[tokio::test]
async fn images_are_served_and_cannot_climb_out() {
    let Some(boot) = Boot::start(&[]) else { return };
    let dir = boot.images.path().join("1.2.3");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vmlinuz"), b"kernel bytes").unwrap();
    // A file beside the images directory that a climbing path would reach.
    let secret = boot.images.path().parent().unwrap().join(format!(
        "{}-secret",
        boot.images.path().file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&secret, b"secret").unwrap();
    let secret_name = secret.file_name().unwrap().to_string_lossy().to_string();

    let (status, _, body) = get(&boot.url("/images/1.2.3/vmlinuz")).await;
    assert_eq!((status, body.as_str()), (200, "kernel bytes"));
    let (status, ct, body) = get(&boot.url("/images/1.2.3/initrd")).await;
    assert_eq!(status, 404);
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert!(body.contains("not found"), "{body}");

    let port = boot.daemon.port;
    for path in [
        format!("/images/../{secret_name}"),
        format!("/images/1.2.3/../../{secret_name}"),
        format!("/images/%2e%2e/{secret_name}"),
        format!("/images/%2E%2E%2F{secret_name}"),
        format!("/images/..%5C{secret_name}"),
    ] {
        let (code, body) = raw_get(port, &path);
        assert_eq!(code, 400, "{path}: {body}");
        assert_eq!(body, "invalid URL path\n", "{path}");
        assert!(!body.contains("secret"));
    }
    std::fs::remove_file(&secret).unwrap();
}

#[tokio::test]
async fn the_index_follows_etcd() {
    let Some(boot) = Boot::start(&[]) else { return };
    let ctx = lochness::Context::new(&[boot.etcd.url.as_str()], None)
        .await
        .unwrap();
    // A hypervisor created after the start is found once its watch event arrived.
    let mut hv = ctx.new_hypervisor();
    hv.ip = lochness::codec::parse_ip("192.168.40.77").unwrap();
    hv.save().await.unwrap();
    let want = format!(
        "#!ipxe\nkernel {BASE}/images/0.1.0/vmlinuz uuid={} \ninitrd {BASE}/images/0.1.0/initrd\nboot\n",
        hv.id
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = get(&boot.url("/ipxe/192.168.40.77")).await;
        if status == 200 {
            assert_eq!(body, want);
            break;
        }
        assert_eq!(status, 404, "{body}");
        assert!(
            Instant::now() < deadline,
            "the new hypervisor was never found"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A changed address: the old one is gone, the new one answers.
    hv.ip = lochness::codec::parse_ip("192.168.40.78").unwrap();
    hv.save().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (old, _, _) = get(&boot.url("/ipxe/192.168.40.77")).await;
        let (new, _, _) = get(&boot.url("/config/192.168.40.78")).await;
        if (old, new) == (404, 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the move was never seen: {old} {new}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Configuration is read per request: a new key shows at once.
    ctx.set_config("NEW_KEY", "v").await.unwrap();
    let (_, _, body) = get(&boot.url("/config/192.168.40.78")).await;
    assert!(body.contains("NEW_KEY=v\n"), "{body}");
    // The metrics count the requests and the index.
    let (status, ct, text) = get(&boot.url("/metrics")).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert!(text.contains("cbootstrapd_indexed_hypervisors 4"), "{text}");
    assert!(
        text.contains(r#"cbootstrapd_http_requests_total{route="/ipxe/{ip}",status="200"}"#),
        "{text}"
    );
    let (status, _, health) = get(&boot.url("/healthz")).await;
    assert_eq!(status, 200);
    assert!(health.contains("\"cbootstrapd\""), "{health}");
}

#[tokio::test]
async fn cluster_default_version_and_options() {
    let Some(boot) = Boot::start(&["-o", "console=ttyS0 quiet", "-v", "9.9"]) else {
        return;
    };
    let ctx = lochness::Context::new(&[boot.etcd.url.as_str()], None)
        .await
        .unwrap();
    // hv2 has no version: the -v flag.
    let (_, _, body) = get(&boot.url("/ipxe/192.168.40.12")).await;
    assert!(
        body.contains(
            "/images/9.9/vmlinuz uuid=aaaa0042-1111-4111-8111-000000000042 console=ttyS0 quiet\n"
        ),
        "{body}"
    );
    // A cluster defaultVersion comes before the flag, the hypervisor's own after it.
    ctx.set_config("defaultVersion", "5.0").await.unwrap();
    let (_, _, body) = get(&boot.url("/ipxe/192.168.40.12")).await;
    assert!(body.contains("/images/5.0/initrd\n"), "{body}");
    let (_, _, body) = get(&boot.url("/ipxe/192.168.40.11")).await;
    assert!(
        body.contains(&format!(
            "/images/1.2.3/vmlinuz uuid={HV1} console=ttyS0 quiet\n"
        )),
        "{body}"
    );
}
