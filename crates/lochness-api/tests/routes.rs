//! The routes beyond the originals (flavors, networks, subnets, firewall groups) and
//! their in-use rules; jobs and their queue entries as cguestd writes them; `/healthz`,
//! `/metrics`, `/openapi.json`; the router's answers; the flags.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{delete, dump, get, patch, post, seed, send, Cluster, Which};
use serde_json::Value;

#[tokio::test]
async fn guests_jobs_and_queue_entries() {
    let Some(mut cluster) = Cluster::new() else {
        return;
    };
    let guests = cluster.start(Which::Guests, &[]);
    let ctx = cluster.ctx().await;
    let s = seed(&ctx).await;
    let id = "ABCD0001-0000-4000-8000-000000000001";
    let r = post(
        &format!("{guests}/guests"),
        &format!(
            r#"{{"id":"{id}","flavor":"{}","network":"{}","ip":"10.1.0.50","metadata":{{"a":"b"}}}}"#,
            s.flavor, s.network
        ),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert!(r.text.ends_with("}\n"), "Go's trailing newline");
    let g = r.json();
    let id = id.to_lowercase();
    assert_eq!(g["id"], id);
    assert_eq!(g["ip"], "", "placement fields are cleared");
    let mac = lochness::guest::mac_for_id(&id).to_string();
    assert_eq!(g["mac"], mac, "the MAC of the final id");
    let job = r.header("X-Guest-Job-ID").expect("the job header");
    let store = dump(&ctx).await;
    assert_eq!(
        store.get(&format!("lochness/queue/create/{job}")),
        Some(&id)
    );
    let record: Value = serde_json::from_str(&store[&format!("lochness/jobs/{job}")]).unwrap();
    assert_eq!(record["action"], "select-hypervisor");
    // Reading a job twice: both answered, nothing written.
    for _ in 0..2 {
        let r = get(&format!("{guests}/jobs/{job}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["status"], "new");
        assert_eq!(r.header("X-Guest-Job-ID"), None);
    }
    assert_eq!(
        dump(&ctx).await,
        store,
        "reading a job writes nothing (no lock)"
    );

    let r = post(&format!("{guests}/guests/{id}/reboot"), "").await;
    assert_eq!(r.status, 202);
    let reboot = r.header("X-Guest-Job-ID").unwrap();
    let r = delete(&format!("{guests}/guests/{id}")).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["id"], id, "the guest as it is");
    let del = r.header("X-Guest-Job-ID").unwrap();
    let store = dump(&ctx).await;
    for (job, action) in [(&reboot, "reboot"), (&del, "delete")] {
        assert_eq!(store.get(&format!("lochness/queue/work/{job}")), Some(&id));
        let record: Value = serde_json::from_str(&store[&format!("lochness/jobs/{job}")]).unwrap();
        assert_eq!(record["action"], action);
    }
    // The guest stays until a worker deletes it.
    assert_eq!(get(&format!("{guests}/guests/{id}")).await.status, 200);
    // Only the six actions are routed.
    let r = post(&format!("{guests}/guests/{id}/resume"), "").await;
    assert_eq!((r.status, r.text.as_str()), (404, "404 page not found\n"));
    let r = get(&format!("{guests}/guests/{id}/start")).await;
    assert_eq!(r.status, 405);
    let r = send("HEAD", &format!("{guests}/guests/{id}"), None).await;
    assert_eq!((r.status, r.text.as_str()), (200, ""));
    let r = get(&format!("{guests}/flavors/")).await;
    assert_eq!(r.status, 200, "the redirect is followed: {}", r.text);
    let r = get(&format!("{guests}/jobs/")).await;
    assert_eq!(r.status, 404, "no /jobs route, no redirect");
    // Metrics: the JSON object by default, Prometheus text when asked.
    let m = get(&format!("{guests}/metrics")).await.json();
    assert_eq!(m["jobs_queued"]["reboot"], 1);
    assert_eq!(m["jobs_queued"]["select-hypervisor"], 1);
    assert_eq!(m["queue_depth"]["create"], 1);
    assert_eq!(m["queue_depth"]["work"], 2);
    assert_eq!(m["requests"]["POST /guests"]["202"], 1);
    let client = reqwest::Client::new();
    let text = client
        .get(format!("{guests}/metrics"))
        .header("Accept", "text/plain;version=0.0.4")
        .send()
        .await
        .unwrap();
    assert!(text.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = text.text().await.unwrap();
    assert!(
        text.contains("lochness_queue_depth{queue=\"work\"} 2"),
        "{text}"
    );
    assert!(text.contains("lochness_api_jobs_queued_total{action=\"delete\"} 1"));
    assert!(text.contains(
        "lochness_api_http_requests_total{method=\"POST\",route=\"/guests/{id}/reboot\",status=\"202\"} 1"
    ));
}

#[tokio::test]
async fn flavors_crud_and_in_use() {
    let Some(mut cluster) = Cluster::new() else {
        return;
    };
    let guests = cluster.start(Which::Guests, &[]);
    let ctx = cluster.ctx().await;
    let s = seed(&ctx).await;
    let url = format!("{guests}/flavors");
    let r = post(
        &url,
        r#"{"image":"debian","memory":1024,"disk":2048,"cpu":2,"metadata":{"k":"v"}}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let f = r.json();
    let id = f["id"].as_str().unwrap().to_string();
    assert_eq!(
        r.text,
        format!(
            "{{\"id\":\"{id}\",\"image\":\"debian\",\"metadata\":{{\"k\":\"v\"}},\"memory\":1024,\"disk\":2048,\"cpu\":2}}\n"
        ),
        "the original's flat JSON"
    );
    assert_eq!(
        post(
            &url,
            &format!(r#"{{"id":"{id}","image":"x","memory":1,"disk":1,"cpu":1}}"#)
        )
        .await
        .status,
        409
    );
    assert_eq!(post(&url, r#"{"memory":1}"#).await.status, 400, "no image");
    let one = format!("{url}/{id}");
    assert_eq!(get(&one).await.json(), f);
    let r = patch(&one, r#"{"cpu":4}"#).await;
    assert_eq!((r.status, r.json()["cpu"].as_u64()), (200, Some(4)));
    // Used by a guest: resources and deletion refused, the image may change.
    let gr = post(
        &format!("{guests}/guests"),
        &format!(r#"{{"flavor":"{id}","network":"{}"}}"#, s.network),
    )
    .await;
    assert_eq!(gr.status, 202);
    let guest = gr.json()["id"].as_str().unwrap().to_string();
    let r = patch(&one, r#"{"memory":4096}"#).await;
    assert_eq!(r.status, 409);
    assert!(
        r.json()["message"].as_str().unwrap().contains(&guest),
        "{}",
        r.text
    );
    assert_eq!(patch(&one, r#"{"image":"debian-13"}"#).await.status, 200);
    let r = delete(&one).await;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json()["message"],
        format!("flavor {id} is used by guest {guest}")
    );
    ctx.guest(&guest).await.unwrap().destroy().await.unwrap();
    let r = delete(&one).await;
    assert_eq!(
        (r.status, r.json()["image"].as_str()),
        (200, Some("debian-13"))
    );
    assert_eq!(get(&one).await.status, 404);
    assert_eq!(delete(&one).await.status, 404);
}

#[tokio::test]
async fn networks_subnets_and_memberships() {
    let Some(mut cluster) = Cluster::new() else {
        return;
    };
    let networks = cluster.start(Which::Networks, &[]);
    let ctx = cluster.ctx().await;
    let r = post(
        &format!("{networks}/networks"),
        r#"{"metadata":{"name":"n1"}}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    let n = r.json()["id"].as_str().unwrap().to_string();
    let subnet = |cidr: &str, network: &str| {
        format!(
            r#"{{"network":"{network}","cidr":"{cidr}","start":"{}","end":"{}","gateway":"{}"}}"#,
            cidr.replace(".0/24", ".10"),
            cidr.replace(".0/24", ".20"),
            cidr.replace(".0/24", ".1")
        )
    };
    let r = post(&format!("{networks}/subnets"), &subnet("10.4.0.0/24", &n)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let s1 = r.json()["id"].as_str().unwrap().to_string();
    let r = post(&format!("{networks}/subnets"), &subnet("10.4.1.0/24", "")).await;
    let s2 = r.json()["id"].as_str().unwrap().to_string();
    let members = format!("{networks}/networks/{n}/subnets");
    assert_eq!(get(&members).await.json(), serde_json::json!([s1]));
    let r = post(&members, &format!(r#""{s2}""#)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut want = vec![s1.clone(), s2.clone()];
    want.sort();
    assert_eq!(r.json(), serde_json::json!(want));
    assert_eq!(
        get(&format!("{networks}/subnets/{s2}")).await.json()["network"],
        n
    );
    // A subnet of another network is not taken over.
    let other = post(&format!("{networks}/networks"), "{}").await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post(
        &format!("{networks}/networks/{other}/subnets"),
        &format!(r#""{s2}""#),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    // A network with subnets cannot go.
    let r = delete(&format!("{networks}/networks/{n}")).await;
    assert_eq!(r.status, 409);
    // Reservations and addresses; a subnet with one cannot leave or go.
    let mut sub = ctx.subnet(&s1).await.unwrap();
    sub.reserve_address("g-1").await.unwrap();
    let r = get(&format!("{networks}/subnets/{s1}/addresses")).await;
    assert_eq!(r.json(), serde_json::json!({"10.4.0.10": "g-1"}));
    assert_eq!(delete(&format!("{members}/{s1}")).await.status, 409);
    assert_eq!(
        delete(&format!("{networks}/subnets/{s1}")).await.status,
        409
    );
    sub.release_address("10.4.0.10".parse().unwrap())
        .await
        .unwrap();
    // A hypervisor link keeps it too.
    let mut h = ctx.new_hypervisor();
    h.save().await.unwrap();
    h.add_subnet(&sub, "br0").await.unwrap();
    let r = delete(&format!("{networks}/subnets/{s1}")).await;
    assert_eq!(r.status, 409);
    assert!(r.text.contains(&h.id), "{}", r.text);
    h.remove_subnet(&sub).await.unwrap();
    // A PATCH keeps what it does not name.
    let r = patch(
        &format!("{networks}/subnets/{s1}"),
        r#"{"end":"10.4.0.30"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.json()["end"].as_str(), r.json()["cidr"].as_str()),
        (Some("10.4.0.30"), Some("10.4.0.0/24"))
    );
    // Detached and deleted, then the network goes.
    for s in [&s1, &s2] {
        let r = delete(&format!("{members}/{s}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(get(&members).await.text, "[]\n");
    assert_eq!(delete(&format!("{members}/{s1}")).await.status, 404);
    assert_eq!(
        delete(&format!("{networks}/subnets/{s1}")).await.status,
        200
    );
    assert_eq!(get(&format!("{networks}/subnets/{s1}")).await.status, 404);
    let r = patch(
        &format!("{networks}/networks/{n}"),
        r#"{"metadata":{"x":"y"}}"#,
    )
    .await;
    assert_eq!(
        r.json()["metadata"],
        serde_json::json!({"name": "n1", "x": "y"})
    );
    assert_eq!(
        delete(&format!("{networks}/networks/{n}")).await.status,
        200
    );
    assert_eq!(get(&format!("{networks}/networks/{n}")).await.status, 404);
    // A network a guest names cannot go.
    let mut flavor = ctx.new_flavor();
    flavor.image = "i".into();
    flavor.save().await.unwrap();
    let mut g = ctx.new_guest();
    g.flavor = flavor.id.clone();
    g.network = other.clone();
    g.save().await.unwrap();
    let r = delete(&format!("{networks}/networks/{other}")).await;
    assert_eq!(
        r.json()["message"],
        format!("network {other} is used by guest {}", g.id)
    );
}

#[tokio::test]
async fn firewall_groups_crud_and_in_use() {
    let Some(mut cluster) = Cluster::new() else {
        return;
    };
    let networks = cluster.start(Which::Networks, &[]);
    let ctx = cluster.ctx().await;
    let s = seed(&ctx).await;
    let url = format!("{networks}/fwgroups");
    let rule =
        r#"{"source":"10.0.0.1/8","portStart":22,"portEnd":22,"protocol":"tcp","action":"accept"}"#;
    let r = post(&url, &format!(r#"{{"rules":[{rule}]}}"#)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let a = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["rules"][0]["source"], "10.0.0.0/8", "masked");
    // Another group whose rule lets a's members in.
    let b_rule = format!(
        r#"{{"group":"{}","portStart":80,"portEnd":443,"protocol":"tcp","action":"allow"}}"#,
        a.to_uppercase()
    );
    let r = post(&url, &format!(r#"{{"rules":[{b_rule}]}}"#)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let b = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["rules"][0]["group"], a, "lower-cased");
    let r = delete(&format!("{url}/{a}")).await;
    assert_eq!(r.status, 409);
    assert!(r.text.contains(&b));
    // PATCH replaces the rules as a whole, keeps the metadata.
    let r = patch(&format!("{url}/{b}"), r#"{"metadata":{"k":"v"}}"#).await;
    assert_eq!(r.json()["rules"].as_array().unwrap().len(), 1);
    let r = patch(&format!("{url}/{b}"), r#"{"rules":[]}"#).await;
    assert_eq!(
        (r.json()["rules"].clone(), r.json()["metadata"].clone()),
        (serde_json::json!([]), serde_json::json!({"k": "v"}))
    );
    assert_eq!(delete(&format!("{url}/{a}")).await.status, 200);
    // A group a guest is in cannot go.
    let mut g = ctx.new_guest();
    g.flavor = s.flavor.clone();
    g.network = s.network.clone();
    g.fwgroup = b.clone();
    g.save().await.unwrap();
    assert_eq!(delete(&format!("{url}/{b}")).await.status, 409);
    let listed: BTreeSet<String> = get(&url)
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, BTreeSet::from([b, s.fwgroup]));
}

#[tokio::test]
async fn health_follows_etcd() {
    let Some(mut cluster) = Cluster::new() else {
        return;
    };
    let guests = cluster.start(Which::Guests, &[]);
    let r = get(&format!("{guests}/healthz")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    assert_eq!(r.json()["service"], "cguestd");
    cluster.etcd.kill();
    let r = get(&format!("{guests}/healthz")).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json()["status"], "unavailable");
    let r = get(&format!("{guests}/guests")).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.header("Retry-After").is_some());
}

/// The routes docs/cluster.md gives each daemon (method, path), written out here.
fn documented(which: Which) -> BTreeSet<(String, String)> {
    let g = |m: &str, p: &str| (m.to_string(), p.to_string());
    let mut set: BTreeSet<(String, String)> = [
        g("GET", "/healthz"),
        g("GET", "/metrics"),
        g("GET", "/openapi.json"),
    ]
    .into();
    let crud = |set: &mut BTreeSet<(String, String)>, plural: &str, one: &str| {
        for m in ["GET", "POST"] {
            set.insert(g(m, plural));
        }
        for m in ["GET", "PATCH", "DELETE"] {
            set.insert(g(m, one));
        }
    };
    match which {
        Which::Guests => {
            crud(&mut set, "/guests", "/guests/{id}");
            for a in [
                "shutdown", "reboot", "restart", "poweroff", "start", "suspend",
            ] {
                set.insert(g("POST", &format!("/guests/{{id}}/{a}")));
            }
            set.insert(g("GET", "/jobs/{id}"));
            crud(&mut set, "/flavors", "/flavors/{id}");
        }
        Which::Hypervisors => {
            crud(&mut set, "/hypervisors", "/hypervisors/{id}");
            for r in ["config", "subnets"] {
                set.insert(g("GET", &format!("/hypervisors/{{id}}/{r}")));
                set.insert(g("PATCH", &format!("/hypervisors/{{id}}/{r}")));
            }
            set.insert(g("DELETE", "/hypervisors/{id}/subnets/{subnet}"));
            set.insert(g("GET", "/hypervisors/{id}/guests"));
            set.insert(g("GET", "/hypervisors/{id}/resources"));
        }
        Which::Networks => {
            crud(&mut set, "/vlans/tags", "/vlans/tags/{tag}");
            crud(&mut set, "/vlans/groups", "/vlans/groups/{id}");
            set.insert(g("GET", "/vlans/tags/{tag}/groups"));
            set.insert(g("POST", "/vlans/tags/{tag}/groups"));
            set.insert(g("GET", "/vlans/groups/{id}/tags"));
            set.insert(g("POST", "/vlans/groups/{id}/tags"));
            crud(&mut set, "/networks", "/networks/{id}");
            set.insert(g("GET", "/networks/{id}/subnets"));
            set.insert(g("POST", "/networks/{id}/subnets"));
            set.insert(g("DELETE", "/networks/{id}/subnets/{subnet}"));
            crud(&mut set, "/subnets", "/subnets/{id}");
            set.insert(g("GET", "/subnets/{id}/addresses"));
            crud(&mut set, "/fwgroups", "/fwgroups/{id}");
        }
    }
    set
}

#[tokio::test]
async fn openapi_lists_every_route_and_the_router_has_them() {
    let Some(mut cluster) = Cluster::new() else {
        return;
    };
    for which in [Which::Guests, Which::Hypervisors, Which::Networks] {
        let base = cluster.start(which, &[]);
        let r = get(&format!("{base}/openapi.json")).await;
        assert_eq!(r.status, 200);
        let doc = r.json();
        assert_eq!(doc["openapi"], "3.0.3");
        let mut listed = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
                listed.insert((method.to_uppercase(), path.clone()));
            }
        }
        assert_eq!(listed, documented(which), "{which:?}");
        // Every listed route is routed: never the router's 404 or a 405.
        for (method, path) in &listed {
            let concrete = path
                .replace("{tag}", "4000")
                .replace("{id}", "0000dddd-0000-4000-8000-00000000abcd")
                .replace("{subnet}", "0000eeee-0000-4000-8000-00000000abcd");
            let body = (method != "GET" && method != "DELETE").then_some("{}");
            let r = send(method, &format!("{base}{concrete}"), body).await;
            assert_ne!(r.text, "404 page not found\n", "{method} {path}");
            assert_ne!(r.status, 405, "{method} {path}");
        }
    }
}

#[test]
fn flags() {
    // Consul is refused, with a message.
    let out = Command::new(Which::Guests.binary())
        .args(["--kv", "consul://127.0.0.1:8500"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Consul is not supported"), "{err}");
    // The ports of the originals are the defaults.
    for (which, port) in [
        (Which::Guests, "18000"),
        (Which::Hypervisors, "17000"),
        (Which::Networks, "19000"),
    ] {
        let out = Command::new(which.binary()).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains(&format!("[default: {port}]"))
                && ["--beanstalk", "--etcd", "--log-level", "--bind", "--prefix"]
                    .iter()
                    .all(|f| help.contains(f))
                && help.starts_with("The cluster's"),
            "{help}"
        );
    }
}

#[tokio::test]
async fn beanstalk_is_accepted_and_ignored() {
    let Some(mut cluster) = Cluster::new() else {
        return;
    };
    let guests = cluster.start(Which::Guests, &["-b", "127.0.0.1:11300", "--prefix", "p1"]);
    let ctx = cluster.ctx().await;
    let r = post(
        &format!("{guests}/flavors"),
        r#"{"image":"x","memory":1,"disk":1,"cpu":1}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    // Under the prefix, not at the root.
    assert!(ctx
        .get(&format!("p1/lochness/flavors/{id}/metadata"))
        .await
        .unwrap()
        .is_some());
    assert!(dump(&ctx).await.is_empty());
}

/// Each daemon with the long flags (`--etcd`, `--port`, `--bind`, `--log-level`): it
/// answers, logs at the level asked (a Go level name included), and a SIGTERM ends it
/// with status 0.
#[test]
fn each_daemon_runs_and_stops_on_sigterm() {
    use std::io::Read;
    use std::process::Stdio;
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let etcd = mistify_e2e::etcd::Etcd::start("lochness-api-etcd");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (which, path, level, logs_startup) in [
        (Which::Guests, "/guests", "debug", true),
        (Which::Hypervisors, "/hypervisors", "warning", false),
        (Which::Networks, "/vlans/tags", "info", true),
    ] {
        let port = mistify_e2e::free_port();
        let mut child = Command::new(which.binary())
            .args(["--etcd", etcd.url.as_str(), "--bind", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--log-level", level])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        if let Err(e) = mistify_e2e::wait_for_port(addr, std::time::Duration::from_secs(30)) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} did not listen: {e}", which.name());
        }
        let r = rt.block_on(get(&format!("http://127.0.0.1:{port}{path}")));
        assert_eq!(r.status, 200, "{}: {}", which.name(), r.text);
        assert_eq!(r.text, "[]\n");
        let kill = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        // The daemon ends by itself; the suite's own timeout catches a hang.
        let status = child.wait().unwrap();
        let mut log = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        assert_eq!(status.code(), Some(0), "{}: {log}", which.name());
        assert_eq!(
            log.contains(&format!("{} listening", which.name())),
            logs_startup,
            "--log-level {level}: {log}"
        );
    }
    // A level that is none fails at the start, with a message.
    let out = Command::new(Which::Guests.binary())
        .args(["--etcd", etcd.url.as_str(), "--log-level", "loud=="])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cguestd"));
}

/// `GET /metrics` of cnetworkd: the JSON object unless Accept asks for Prometheus text
/// (`text/plain`, or OpenMetrics as Prometheus' scraper sends it); request counters by
/// route pattern and status, unrouted paths under one label.
#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let Some(mut cluster) = Cluster::new() else {
        return;
    };
    let networks = cluster.start(Which::Networks, &[]);
    let unknown = "0000cccc-0000-4000-8000-00000000abcd";
    for _ in 0..3 {
        assert_eq!(get(&format!("{networks}/networks")).await.status, 200);
    }
    for _ in 0..2 {
        let r = get(&format!("{networks}/networks/{unknown}")).await;
        assert_eq!(r.status, 404, "{}", r.text);
    }
    assert_eq!(post(&format!("{networks}/networks"), "{").await.status, 400);
    assert_eq!(get(&format!("{networks}/nothing/here")).await.status, 404);

    let client = reqwest::Client::new();
    let fetch = |accept: Option<&'static str>| {
        let mut req = client.get(format!("{networks}/metrics"));
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            (ct, r.text().await.unwrap())
        }
    };
    for accept in [None, Some("application/json"), Some("*/*")] {
        let (ct, body) = fetch(accept).await;
        assert!(ct.starts_with("application/json"), "{accept:?}: {ct}");
        let m: Value = serde_json::from_str(&body).unwrap();
        let req = &m["requests"];
        assert_eq!(req["GET /networks"]["200"], 3, "{body}");
        assert_eq!(req["GET /networks/{id}"]["404"], 2, "{body}");
        assert_eq!(req["POST /networks"]["400"], 1, "{body}");
        assert!(req.get("GET /nothing/here").is_none(), "{body}");
    }
    for accept in [
        "text/plain",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "application/openmetrics-text",
    ] {
        let (ct, text) = fetch(Some(accept)).await;
        assert!(ct.starts_with("text/plain"), "{accept}: {ct}");
        for line in [
            "lochness_api_http_requests_total{method=\"GET\",route=\"/networks\",status=\"200\"} 3",
            "lochness_api_http_requests_total{method=\"GET\",route=\"/networks/{id}\",status=\"404\"} 2",
            "lochness_api_http_requests_total{method=\"POST\",route=\"/networks\",status=\"400\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{accept}: no {line}\n{text}");
        }
        assert!(
            text.contains("# TYPE lochness_api_http_requests_total counter"),
            "{text}"
        );
        assert!(!text.contains("/nothing/here"), "{text}");
    }
}
