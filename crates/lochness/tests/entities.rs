//! Entities against a real etcd: exact JSON, CAS, refresh, validation, destroy rules,
//! listing and configuration.

mod common;

use lochness::{Error, Resources};
use serde_json::{json, Value};

fn parse(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[tokio::test]
async fn hypervisor_json_and_cas() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let res = Resources {
        memory: 16384,
        disk: 1048576,
        cpu: 32,
    };
    let mut h = common::hypervisor(&ctx, res).await;
    let stored = common::raw(&ctx, &format!("lochness/hypervisors/{}/metadata", h.id))
        .await
        .unwrap();
    // Exact bytes, field order included.
    let expected = format!(
        "{{\"id\":\"{}\",\"metadata\":{{}},\"ip\":\"192.168.100.11\",\"netmask\":\"255.255.255.0\",\"gateway\":\"192.168.100.1\",\"mac\":\"96:e0:51:f9:31:c1\",\"total_resources\":{{\"memory\":16384,\"disk\":1048576,\"cpu\":32}},\"available_resources\":{{\"memory\":16384,\"disk\":1048576,\"cpu\":32}}}}",
        h.id
    );
    assert_eq!(stored, expected);

    // A stale copy cannot clobber.
    let mut stale = ctx.hypervisor(&h.id).await.unwrap();
    h.metadata.insert("k".into(), "v".into());
    h.save().await.unwrap();
    stale.metadata.insert("k".into(), "other".into());
    assert!(matches!(stale.save().await, Err(Error::Conflict(_))));
    stale.refresh().await.unwrap();
    assert_eq!(stale.metadata.get("k").map(String::as_str), Some("v"));

    // Creating an id that exists is a conflict too.
    let mut dup = ctx.new_hypervisor();
    dup.id = h.id.to_uppercase();
    assert!(matches!(dup.save().await, Err(Error::Conflict(_))));
    // Upper-case ids are canonicalised on the way in and out.
    assert_eq!(ctx.hypervisor(&h.id.to_uppercase()).await.unwrap().id, h.id);
}

#[tokio::test]
async fn hypervisor_merge_decode() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut h = ctx.new_hypervisor();
    h.decode_json(br#"{"ip":"10.0.0.5","mac":"3E-15-C2-ED-31-00","total_resources":{"memory":5}}"#)
        .unwrap();
    h.decode_json(br#"{"ip":"","mac":"","metadata":null,"available_resources":{"cpu":2}}"#)
        .unwrap();
    assert_eq!(h.ip.unwrap().to_string(), "10.0.0.5");
    assert_eq!(h.mac.as_ref().unwrap().to_string(), "3e:15:c2:ed:31:00");
    assert_eq!(
        h.total_resources,
        Resources::default(),
        "resources are always replaced"
    );
    assert_eq!(h.available_resources.cpu, 2);
    assert!(matches!(
        h.decode_json(br#"{"ip":"nope"}"#),
        Err(Error::InvalidIp(_))
    ));
    assert!(matches!(
        h.decode_json(br#"{"mac":"zz"}"#),
        Err(Error::InvalidMac(_))
    ));
    assert_eq!(
        h.ip.unwrap().to_string(),
        "10.0.0.5",
        "failed decode changes nothing"
    );
}

#[tokio::test]
async fn subnet_json_validation_and_bad_input() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut s = ctx.new_subnet();
    s.decode_json(br#"{"cidr":"192.168.100.1/24","start":"192.168.100.10","end":"192.168.100.200","gateway":"192.168.100.1","metadata":{"a":"b"}}"#).unwrap();
    s.id = ctx.new_subnet().id;
    s.save().await.unwrap();
    let stored = parse(
        &common::raw(&ctx, &format!("lochness/subnets/{}/metadata", s.id))
            .await
            .unwrap(),
    );
    assert_eq!(
        stored,
        json!({"id": s.id, "metadata": {"a": "b"}, "network": "", "gateway": "192.168.100.1",
               "cidr": "192.168.100.0/24", "start": "192.168.100.10", "end": "192.168.100.200"})
    );
    let text = common::raw(&ctx, &format!("lochness/subnets/{}/metadata", s.id))
        .await
        .unwrap();
    assert!(text.starts_with(&format!("{{\"id\":\"{}\",\"metadata\":", s.id)));

    // Validation table: each fails with a typed error and writes nothing.
    type Mutation = Box<dyn Fn(&mut lochness::Subnet)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("bad id", Box::new(|s| s.id = "nope".into())),
        ("no cidr", Box::new(|s| s.cidr = None)),
        (
            "ipv6",
            Box::new(|s| s.cidr = Some(lochness::codec::parse_cidr("fd00::/64").unwrap())),
        ),
        ("no start", Box::new(|s| s.start_range = None)),
        (
            "start outside",
            Box::new(|s| s.start_range = Some("10.0.0.1".parse().unwrap())),
        ),
        ("no end", Box::new(|s| s.end_range = None)),
        (
            "end outside",
            Box::new(|s| s.end_range = Some("192.168.101.1".parse().unwrap())),
        ),
        (
            "end < start",
            Box::new(|s| s.end_range = Some("192.168.100.5".parse().unwrap())),
        ),
        (
            "gateway outside",
            Box::new(|s| s.gateway = Some("10.9.9.9".parse().unwrap())),
        ),
    ];
    for (name, mutate) in cases {
        let mut bad = ctx.new_subnet();
        bad.cidr = s.cidr;
        bad.start_range = s.start_range;
        bad.end_range = s.end_range;
        mutate(&mut bad);
        let err = bad.save().await.unwrap_err();
        assert!(
            matches!(err, Error::Invalid(_) | Error::InvalidCidr(_)),
            "{name}: {err}"
        );
        assert!(
            common::keys(&ctx, &format!("lochness/subnets/{}/", bad.id))
                .await
                .is_empty(),
            "{name}"
        );
    }
    assert!(matches!(
        s.decode_json(br#"{"cidr":"nope"}"#),
        Err(Error::InvalidCidr(_))
    ));
    assert!(matches!(
        ctx.subnet("not-a-uuid").await,
        Err(Error::InvalidUuid(_))
    ));
    assert!(matches!(
        ctx.subnet(&lochness::codec::new_id()).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn guest_json_mac_and_references() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let f = common::flavor(&ctx, 128, 1024, 1).await;
    let n = common::network(&ctx).await;
    let mut g = common::guest(&ctx, &f, &n);
    // MAC derived from the id: 02 + first five bytes of md5(id).
    let digest = md5::compute(g.id.as_bytes());
    let want = format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        digest[0], digest[1], digest[2], digest[3], digest[4]
    );
    assert_eq!(g.mac.as_ref().unwrap().to_string(), want);
    g.save().await.unwrap();
    let stored = common::raw(&ctx, &format!("lochness/guests/{}/metadata", g.id))
        .await
        .unwrap();
    assert_eq!(
        stored,
        format!(
            "{{\"id\":\"{}\",\"metadata\":{{}},\"type\":\"kvm\",\"flavor\":\"{}\",\"hypervisor\":\"\",\"network\":\"{}\",\"subnet\":\"\",\"fwgroup\":\"\",\"vlangroup\":\"\",\"mac\":\"{want}\",\"ip\":\"\",\"bridge\":\"\"}}",
            g.id, f.id, n.id
        )
    );

    // Unknown flavor / network: typed NotFound, nothing written.
    for which in ["flavor", "network", "fwgroup"] {
        let mut bad = common::guest(&ctx, &f, &n);
        match which {
            "flavor" => bad.flavor = lochness::codec::new_id(),
            "network" => bad.network = lochness::codec::new_id(),
            _ => bad.fwgroup = lochness::codec::new_id(),
        }
        let err = bad.save().await.unwrap_err();
        assert!(
            matches!(&err, Error::NotFound(k) if k.contains(which)),
            "{which}: {err}"
        );
        assert!(
            common::raw(&ctx, &format!("lochness/guests/{}/metadata", bad.id))
                .await
                .is_none()
        );
    }
    // Invalid ids and MACs.
    let mut bad = common::guest(&ctx, &f, &n);
    bad.flavor = "nope".into();
    assert!(matches!(bad.save().await, Err(Error::Invalid(m)) if m == "missing or invalid flavor"));
    let mut bad = common::guest(&ctx, &f, &n);
    bad.mac = None;
    assert!(matches!(bad.save().await, Err(Error::Invalid(m)) if m == "missing MAC"));
    assert!(matches!(
        bad.decode_json(br#"{"mac":"01:02"}"#),
        Err(Error::InvalidMac(_))
    ));
    assert!(
        common::raw(&ctx, &format!("lochness/guests/{}/metadata", bad.id))
            .await
            .is_none()
    );

    // Stale save conflicts.
    let mut stale = ctx.guest(&g.id).await.unwrap();
    g.kind = "container".into();
    g.save().await.unwrap();
    stale.kind = "other".into();
    assert!(matches!(stale.save().await, Err(Error::Conflict(_))));
}

#[tokio::test]
async fn flavor_fwgroup_vlan_json() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut f = ctx.new_flavor();
    f.image = "debian-12.img".into();
    f.resources = Resources {
        memory: 512,
        disk: 4096,
        cpu: 2,
    };
    f.save().await.unwrap();
    assert_eq!(
        common::raw(&ctx, &format!("lochness/flavors/{}/metadata", f.id)).await.unwrap(),
        format!("{{\"id\":\"{}\",\"image\":\"debian-12.img\",\"metadata\":{{}},\"memory\":512,\"disk\":4096,\"cpu\":2}}", f.id)
    );
    let mut bad = ctx.new_flavor();
    bad.image = "no spaces allowed".into();
    assert!(matches!(bad.save().await, Err(Error::Invalid(_))));
    bad.image = String::new();
    assert!(matches!(bad.save().await, Err(Error::Invalid(m)) if m == "flavor image required"));

    let mut fw = ctx.new_fwgroup();
    fw.decode_json(br#"{"rules":[{"source":"192.168.100.1/16","portStart":22,"portEnd":22,"protocol":"tcp","action":"accept"}]}"#).unwrap();
    fw.id = ctx.new_fwgroup().id;
    fw.save().await.unwrap();
    assert_eq!(
        common::raw(&ctx, &format!("lochness/fwgroups/{}/metadata", fw.id)).await.unwrap(),
        format!("{{\"id\":\"{}\",\"metadata\":{{}},\"rules\":[{{\"source\":\"192.168.0.0/16\",\"portStart\":22,\"portEnd\":22,\"protocol\":\"tcp\",\"action\":\"accept\"}}]}}", fw.id)
    );
    let empty = ctx.new_fwgroup();
    assert!(empty.to_json().ends_with("\"rules\":[]}"));

    let mut v = ctx.new_vlan();
    assert_eq!(v.tag, 1);
    v.tag = 100;
    v.description = "office".into();
    v.save().await.unwrap();
    assert_eq!(
        common::raw(&ctx, "lochness/vlans/100/metadata")
            .await
            .unwrap(),
        r#"{"tag":100,"description":"office"}"#
    );
    for (tag, ok) in [
        (-1, false),
        (0, false),
        (1, true),
        (4095, true),
        (4096, false),
    ] {
        let mut v = ctx.new_vlan();
        v.tag = tag;
        assert_eq!(v.validate().is_ok(), ok, "{tag}");
    }
    let mut g = ctx.new_vlangroup();
    g.description = "grp".into();
    g.save().await.unwrap();
    assert_eq!(
        common::raw(&ctx, &format!("lochness/vlangroups/{}/metadata", g.id))
            .await
            .unwrap(),
        format!(
            "{{\"id\":\"{}\",\"description\":\"grp\",\"metadata\":{{}}}}",
            g.id
        )
    );
}

#[tokio::test]
async fn vlan_links_and_destroy() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut v1 = ctx.new_vlan();
    v1.save().await.unwrap();
    let mut v10 = ctx.new_vlan();
    v10.tag = 10;
    v10.save().await.unwrap();
    let mut g = ctx.new_vlangroup();
    g.save().await.unwrap();
    g.add_vlan(&mut v1).await.unwrap();
    g.add_vlan(&mut v10).await.unwrap();
    assert_eq!(
        common::raw(&ctx, &format!("lochness/vlangroups/{}/vlans/1", g.id))
            .await
            .as_deref(),
        Some("")
    );
    assert_eq!(
        common::raw(&ctx, &format!("lochness/vlans/1/vlangroups/{}", g.id))
            .await
            .as_deref(),
        Some("")
    );
    // VLAN 1 does not pick up VLAN 10's links.
    let loaded = ctx.vlan(1).await.unwrap();
    assert_eq!(loaded.vlan_groups(), [g.id.clone()]);
    let mut loaded_g = ctx.vlangroup(&g.id).await.unwrap();
    let mut tags = loaded_g.vlans().to_vec();
    tags.sort();
    assert_eq!(tags, [1, 10]);
    // A missing VLAN cannot be linked.
    let mut ghost = ctx.new_vlan();
    ghost.tag = 77;
    assert!(loaded_g.add_vlan(&mut ghost).await.is_err());
    assert!(
        common::raw(&ctx, &format!("lochness/vlangroups/{}/vlans/77", g.id))
            .await
            .is_none()
    );

    g.remove_vlan(&mut v10).await.unwrap();
    assert!(common::keys(&ctx, "lochness/vlans/10/vlangroups/")
        .await
        .is_empty());
    assert!(
        common::raw(&ctx, &format!("lochness/vlangroups/{}/vlans/10", g.id))
            .await
            .is_none()
    );

    v1.destroy().await.unwrap();
    assert!(common::keys(&ctx, "lochness/vlans/1/").await.is_empty());
    assert!(
        common::raw(&ctx, &format!("lochness/vlangroups/{}/vlans/1", g.id))
            .await
            .is_none()
    );
    g.add_vlan(&mut v10).await.unwrap();
    g.destroy().await.unwrap();
    assert!(
        common::keys(&ctx, &format!("lochness/vlangroups/{}/", g.id))
            .await
            .is_empty()
    );
    assert!(common::keys(&ctx, "lochness/vlans/10/vlangroups/")
        .await
        .is_empty());
    assert!(common::raw(&ctx, "lochness/vlans/10/metadata")
        .await
        .is_some());
}

#[tokio::test]
async fn config_global_and_per_hypervisor() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    assert!(matches!(ctx.get_config("").await, Err(Error::Invalid(_))));
    assert!(matches!(
        ctx.get_config("missing").await,
        Err(Error::NotFound(_))
    ));
    ctx.set_config("defaultVersion", "1.2").await.unwrap();
    ctx.set_config("a/b", "nested").await.unwrap();
    ctx.set_config("empty", "").await.unwrap();
    assert_eq!(ctx.get_config("a/b").await.unwrap(), "nested");
    assert_eq!(ctx.get_config("empty").await.unwrap(), "");
    let mut all = Vec::new();
    ctx.for_each_config(|k, v| {
        all.push((k.to_string(), v.to_string()));
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(
        all,
        [
            ("a/b".into(), "nested".into()),
            ("defaultVersion".into(), "1.2".into()),
            ("empty".into(), "".into())
        ]
    );
    let err = ctx
        .for_each_config(|_, _| Err(Error::Invalid("stop".into())))
        .await;
    assert!(matches!(err, Err(Error::Invalid(m)) if m == "stop"));

    let mut h = common::hypervisor(&ctx, Resources::default()).await;
    h.set_config("guestDiskDir", "/tmp").await.unwrap();
    h.set_config("agentPort", "9000").await.unwrap();
    h.set_config("agentPort", "").await.unwrap();
    let loaded = ctx.hypervisor(&h.id).await.unwrap();
    assert_eq!(
        loaded.config().get("guestDiskDir").map(String::as_str),
        Some("/tmp")
    );
    assert!(!loaded.config().contains_key("agentPort"));
    assert!(common::raw(
        &ctx,
        &format!("lochness/hypervisors/{}/config/agentPort", h.id)
    )
    .await
    .is_none());
    // The config is not part of the JSON.
    assert!(!loaded.to_json().contains("guestDiskDir"));
}

#[tokio::test]
async fn listing_skips_broken_entries_and_first_hypervisor() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut h = ctx.new_hypervisor();
        h.ip = Some(format!("10.0.0.{i}").parse().unwrap());
        h.save().await.unwrap();
        ids.push(h.id.clone());
    }
    // A link without metadata (half-deleted entity) must not break the listing.
    ctx.client()
        .put(
            ctx.abs(&format!(
                "lochness/hypervisors/{}/guests/x",
                lochness::codec::new_id()
            )),
            "x",
            None,
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    ctx.for_each_hypervisor(|h| {
        seen.push(h.id);
        Ok(())
    })
    .await
    .unwrap();
    ids.sort();
    assert_eq!(seen, ids);
    let found = ctx
        .first_hypervisor(|h| h.ip == Some("10.0.0.3".parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.ip.unwrap().to_string(), "10.0.0.3");
    assert!(ctx.first_hypervisor(|_| false).await.unwrap().is_none());
    let err = ctx
        .for_each_hypervisor(|_| Err(Error::Invalid("stop".into())))
        .await;
    assert!(err.is_err());
}

#[tokio::test]
async fn decode_rules_per_entity() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let Some(ctx) = common::ctx().await else {
        return;
    };
    // Default (Flavor): present fields overwrite, even with "" or 0; absent ones stay;
    // metadata keys are added to the existing map.
    let mut f = ctx.new_flavor();
    f.decode_json(br#"{"image":"img","memory":5,"disk":6,"metadata":{"a":"1"}}"#)
        .unwrap();
    f.decode_json(br#"{"image":"","disk":0,"metadata":{"b":"2"}}"#)
        .unwrap();
    assert_eq!(
        (f.image.as_str(), f.resources.memory, f.resources.disk),
        ("", 5, 0)
    );
    assert_eq!(f.metadata.len(), 2);
    assert!(matches!(
        f.decode_json(br#"{"memory":"lots"}"#),
        Err(Error::InvalidJson(_))
    ));
    // Replace (Subnet): absent fields become empty.
    let mut s = ctx.new_subnet();
    s.decode_json(
        br#"{"cidr":"10.0.0.0/8","gateway":"10.0.0.1","network":"n","metadata":{"a":"1"}}"#,
    )
    .unwrap();
    s.decode_json(br#"{"cidr":"10.0.0.0/8"}"#).unwrap();
    assert!(s.gateway.is_none() && s.network.is_empty() && s.metadata.is_empty());
    // Merge (Guest): empty values do not clear; keys match case-insensitively; unknown
    // keys are ignored.
    let mut g = ctx.new_guest();
    g.decode_json(br#"{"Type":"kvm","bridge":"br0","ip":"10.0.0.9","whatever":1}"#)
        .unwrap();
    g.decode_json(br#"{"type":"","bridge":"","ip":null}"#)
        .unwrap();
    assert_eq!((g.kind.as_str(), g.bridge.as_str()), ("kvm", "br0"));
    assert_eq!(g.ip.unwrap().to_string(), "10.0.0.9");
    // A PATCH cannot touch the placement fields.
    let before = g.clone();
    g.decode_patch(br#"{"id":"x","hypervisor":"h","subnet":"s","ip":"1.2.3.4","bridge":"b","type":"container"}"#)
        .unwrap();
    assert_eq!(
        (g.id.as_str(), g.bridge.as_str(), g.ip),
        (before.id.as_str(), "br0", before.ip)
    );
    assert!(g.hypervisor.is_empty() && g.subnet.is_empty());
    assert_eq!(g.kind, "container");
    // A refresh reads what is stored, even where the stored value is empty.
    let flavor = common::flavor(&ctx, 1, 1, 1).await;
    let net = common::network(&ctx).await;
    let mut g = common::guest(&ctx, &flavor, &net);
    g.bridge = "br9".into();
    g.save().await.unwrap();
    let mut copy = ctx.guest(&g.id).await.unwrap();
    g.bridge.clear();
    g.save().await.unwrap();
    copy.refresh().await.unwrap();
    assert_eq!(copy.bridge, "");
}
