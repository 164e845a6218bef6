//! Bad input: each request is refused with its status and a JSON message saying what is
//! wrong, and the store is exactly as before (a full dump of `lochness/` compared).

mod common;

use common::{refused, seed, Cluster, Which};

/// A cluster with all three daemons and the seed; their base URLs.
struct Env {
    _cluster: Cluster,
    ctx: lochness::Context,
    guests: String,
    hypervisors: String,
    networks: String,
    seed: common::Seed,
}

async fn env() -> Option<Env> {
    let mut cluster = Cluster::new()?;
    let guests = cluster.start(Which::Guests, &[]);
    let hypervisors = cluster.start(Which::Hypervisors, &[]);
    let networks = cluster.start(Which::Networks, &[]);
    let ctx = cluster.ctx().await;
    let seed = seed(&ctx).await;
    Some(Env {
        _cluster: cluster,
        ctx,
        guests,
        hypervisors,
        networks,
        seed,
    })
}

/// A guest of the seed placed on the seed's hypervisor.
async fn placed_guest(env: &Env) -> lochness::Guest {
    let mut g = env.ctx.new_guest();
    g.flavor.clone_from(&env.seed.flavor);
    g.network.clone_from(&env.seed.network);
    let mut h = env.ctx.hypervisor(&env.seed.hypervisor).await.unwrap();
    h.add_guest(&mut g).await.unwrap();
    g
}

#[tokio::test]
async fn invalid_json_is_refused() {
    let Some(env) = env().await else { return };
    let ctx = &env.ctx;
    let g = format!("{}/guests", env.guests);
    let r = refused(ctx, "POST", &g, Some("{bad"), 400, "invalid JSON").await;
    assert!(r.json().get("code").is_none(), "the original's msg shape");
    let h = format!("{}/hypervisors/{}", env.hypervisors, env.seed.hypervisor);
    refused(ctx, "PATCH", &h, Some("x"), 400, "invalid JSON").await;
    refused(ctx, "PATCH", &h, Some(""), 400, "invalid JSON").await;
    refused(
        ctx,
        "PATCH",
        &h,
        Some(r#"{"ip":"1.2.3"}"#),
        400,
        "invalid IP",
    )
    .await;
    let r = refused(
        ctx,
        "PATCH",
        &format!("{h}/config"),
        Some(r#"{"a":1}"#),
        400,
        "invalid type",
    )
    .await;
    assert_eq!(r.json()["code"], 400, "this route's error shape");
    let s = format!("{}/subnets", env.networks);
    let r = refused(ctx, "POST", &s, Some("["), 400, "").await;
    assert_eq!(r.json()["code"], 400);
    refused(
        ctx,
        "POST",
        &format!("{}/flavors", env.guests),
        Some("{"),
        400,
        "invalid JSON",
    )
    .await;
    refused(
        ctx,
        "POST",
        &format!("{}/vlans/tags", env.networks),
        Some(r#"{"tag":"5"}"#),
        400,
        "tag",
    )
    .await;
    refused(
        ctx,
        "POST",
        &format!("{}/vlans/groups/{}/tags", env.networks, env.seed.vlangroup),
        Some(r#"["x"]"#),
        400,
        "invalid type",
    )
    .await;
}

#[tokio::test]
async fn unknown_references_are_refused() {
    let Some(env) = env().await else { return };
    let ctx = &env.ctx;
    let s = &env.seed;
    let unknown = "0000aaaa-0000-4000-8000-00000000abcd";
    let g = format!("{}/guests", env.guests);
    let body = |flavor: &str, network: &str, extra: &str| {
        format!(r#"{{"flavor":"{flavor}","network":"{network}"{extra}}}"#)
    };
    let r = refused(
        ctx,
        "POST",
        &g,
        Some(&body(unknown, &s.network, "")),
        400,
        "",
    )
    .await;
    assert_eq!(r.message(), format!("flavor {unknown} does not exist"));
    let r = refused(
        ctx,
        "POST",
        &g,
        Some(&body(&s.flavor, unknown, "")),
        400,
        "",
    )
    .await;
    assert_eq!(r.message(), format!("network {unknown} does not exist"));
    let fw = format!(r#","fwgroup":"{unknown}""#);
    let r = refused(
        ctx,
        "POST",
        &g,
        Some(&body(&s.flavor, &s.network, &fw)),
        400,
        "",
    )
    .await;
    assert_eq!(
        r.message(),
        format!("firewall group {unknown} does not exist")
    );
    let vg = format!(r#","vlangroup":"{unknown}""#);
    let r = refused(
        ctx,
        "POST",
        &g,
        Some(&body(&s.flavor, &s.network, &vg)),
        400,
        "",
    )
    .await;
    assert_eq!(r.message(), format!("VLAN group {unknown} does not exist"));

    // The same references on a PATCH.
    let guest = placed_guest(&env).await;
    let one = format!("{g}/{}", guest.id);
    let r = refused(
        ctx,
        "PATCH",
        &one,
        Some(&format!(r#"{{"fwgroup":"{unknown}"}}"#)),
        400,
        "",
    )
    .await;
    assert_eq!(
        r.message(),
        format!("firewall group {unknown} does not exist")
    );
    // This guest is placed: its flavor cannot change at all (an unplaced guest's flavor
    // must exist: placement_fields_and_ids_cannot_be_patched).
    refused(
        ctx,
        "PATCH",
        &one,
        Some(&format!(r#"{{"flavor":"{unknown}"}}"#)),
        409,
        "its flavor cannot change",
    )
    .await;

    // A subnet naming an unknown network; a network attaching an unknown subnet; a
    // hypervisor linking one.
    let subnet = format!(
        r#"{{"network":"{unknown}","cidr":"10.3.0.0/24","start":"10.3.0.10","end":"10.3.0.20"}}"#
    );
    let r = refused(
        ctx,
        "POST",
        &format!("{}/subnets", env.networks),
        Some(&subnet),
        400,
        "",
    )
    .await;
    assert_eq!(r.message(), format!("network {unknown} does not exist"));
    refused(
        ctx,
        "POST",
        &format!("{}/networks/{}/subnets", env.networks, s.network),
        Some(&format!(r#""{unknown}""#)),
        400,
        &format!("subnet {unknown} does not exist"),
    )
    .await;
    let r = refused(
        ctx,
        "PATCH",
        &format!("{}/hypervisors/{}/subnets", env.hypervisors, s.hypervisor),
        Some(&format!(r#"{{"{}":"br1","{unknown}":"br2"}}"#, s.subnet)),
        404,
        "metadata key is missing",
    )
    .await;
    assert_eq!(r.json()["code"], 404);
    // A firewall rule naming an unknown group.
    let fw = format!(
        r#"{{"rules":[{{"group":"{unknown}","portStart":22,"portEnd":22,"protocol":"tcp","action":"accept"}}]}}"#
    );
    refused(
        ctx,
        "POST",
        &format!("{}/fwgroups", env.networks),
        Some(&fw),
        400,
        &format!("firewall group {unknown} does not exist"),
    )
    .await;
    // Membership of an unknown group or VLAN.
    let mut vlan = ctx.new_vlan();
    vlan.tag = 42;
    vlan.save().await.unwrap();
    refused(
        ctx,
        "POST",
        &format!("{}/vlans/tags/42/groups", env.networks),
        Some(&format!(r#"["{}","{unknown}"]"#, s.vlangroup)),
        400,
        "group not found",
    )
    .await;
    refused(
        ctx,
        "POST",
        &format!("{}/vlans/groups/{}/tags", env.networks, s.vlangroup),
        Some("[42, 43]"),
        400,
        "vlan not found",
    )
    .await;
}

#[tokio::test]
async fn ids_that_are_not_uuids_are_refused() {
    let Some(env) = env().await else { return };
    let ctx = &env.ctx;
    let s = &env.seed;
    let g = format!("{}/guests", env.guests);
    refused(
        ctx,
        "GET",
        &format!("{g}/abc"),
        None,
        400,
        "invalid guest id",
    )
    .await;
    refused(
        ctx,
        "DELETE",
        &format!("{g}/abc"),
        None,
        400,
        "invalid guest id",
    )
    .await;
    refused(
        ctx,
        "POST",
        &format!("{g}/abc/reboot"),
        None,
        400,
        "invalid guest id",
    )
    .await;
    refused(
        ctx,
        "GET",
        &format!("{}/jobs/abc", env.guests),
        None,
        400,
        "invalid job id",
    )
    .await;
    let body = format!(
        r#"{{"id":"x","flavor":"{}","network":"{}"}}"#,
        s.flavor, s.network
    );
    refused(ctx, "POST", &g, Some(&body), 400, "missing or invalid id").await;
    let body = format!(r#"{{"flavor":"bad","network":"{}"}}"#, s.network);
    refused(
        ctx,
        "POST",
        &g,
        Some(&body),
        400,
        "missing or invalid flavor",
    )
    .await;
    let body = format!(
        r#"{{"flavor":"{}","network":"{}","fwgroup":"web"}}"#,
        s.flavor, s.network
    );
    refused(ctx, "POST", &g, Some(&body), 400, "invalid fwgroup").await;
    refused(
        ctx,
        "GET",
        &format!("{g}?network=abc"),
        None,
        400,
        "invalid network filter",
    )
    .await;
    refused(
        ctx,
        "PATCH",
        &format!("{}/hypervisors/xyz", env.hypervisors),
        Some("{}"),
        400,
        "invalid hypervisor id",
    )
    .await;
    refused(
        ctx,
        "POST",
        &format!("{}/hypervisors", env.hypervisors),
        Some(r#"{"id":"not-a-uuid"}"#),
        400,
        "invalid id",
    )
    .await;
    refused(
        ctx,
        "GET",
        &format!("{}/hypervisors?subnet=zz", env.hypervisors),
        None,
        400,
        "invalid subnet filter",
    )
    .await;
    for path in ["flavors/xyz", "networks/xyz", "subnets/xyz", "fwgroups/xyz"] {
        let base = if path.starts_with("flavors") {
            &env.guests
        } else {
            &env.networks
        };
        let r = refused(
            ctx,
            "DELETE",
            &format!("{base}/{path}"),
            None,
            400,
            "invalid",
        )
        .await;
        assert_eq!(r.json()["code"], 400);
    }
    refused(
        ctx,
        "GET",
        &format!("{}/vlans/groups/junk", env.networks),
        None,
        400,
        "invalid group id",
    )
    .await;
    refused(
        ctx,
        "GET",
        &format!("{}/vlans/tags/ten", env.networks),
        None,
        400,
        "invalid vlan tag",
    )
    .await;
    refused(
        ctx,
        "POST",
        &format!("{}/vlans/groups", env.networks),
        Some(r#"{"id":"nope"}"#),
        400,
        "invalid ID",
    )
    .await;
    refused(
        ctx,
        "POST",
        &format!("{}/networks/{}/subnets", env.networks, s.network),
        Some(r#""junk""#),
        400,
        "invalid subnet id",
    )
    .await;
}

#[tokio::test]
async fn placement_fields_and_ids_cannot_be_patched() {
    let Some(env) = env().await else { return };
    let ctx = &env.ctx;
    let guest = placed_guest(&env).await;
    let url = format!("{}/guests/{}", env.guests, guest.id);
    let other = "0000bbbb-0000-4000-8000-00000000abcd";
    for (body, field) in [
        (format!(r#"{{"hypervisor":"{other}"}}"#), "hypervisor"),
        (format!(r#"{{"subnet":"{other}"}}"#), "subnet"),
        (r#"{"ip":"10.1.0.99"}"#.to_string(), "ip"),
        (r#"{"bridge":"br7"}"#.to_string(), "bridge"),
    ] {
        let r = refused(ctx, "PATCH", &url, Some(&body), 400, "").await;
        assert_eq!(
            r.message(),
            format!("{field} is set by placement and cannot be changed")
        );
    }
    refused(
        ctx,
        "PATCH",
        &url,
        Some(&format!(r#"{{"id":"{other}"}}"#)),
        400,
        "an id cannot be changed",
    )
    .await;
    // Nor its flavor: the hypervisor's allocation was counted from it.
    let mut bigger = ctx.new_flavor();
    bigger.image = "bigger".into();
    bigger.resources = lochness::Resources {
        memory: 4096,
        disk: 4096,
        cpu: 4,
    };
    bigger.save().await.unwrap();
    refused(
        ctx,
        "PATCH",
        &url,
        Some(&format!(r#"{{"flavor":"{}"}}"#, bigger.id)),
        409,
        "its flavor cannot change",
    )
    .await;
    // An unplaced guest's flavor may change, to a flavor that exists.
    let mut loose = ctx.new_guest();
    loose.flavor.clone_from(&env.seed.flavor);
    loose.network.clone_from(&env.seed.network);
    loose.save().await.unwrap();
    let loose_url = format!("{}/guests/{}", env.guests, loose.id);
    refused(
        ctx,
        "PATCH",
        &loose_url,
        Some(&format!(r#"{{"flavor":"{other}"}}"#)),
        400,
        "does not exist",
    )
    .await;
    let r = common::patch(&loose_url, &format!(r#"{{"flavor":"{}"}}"#, bigger.id)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ctx.guest(&loose.id).await.unwrap().flavor, bigger.id);
    // The same values are fine, and other fields change.
    let same = format!(
        r#"{{"id":"{}","hypervisor":"{}","subnet":"{}","ip":"{}","bridge":"{}","type":"kvm"}}"#,
        guest.id.to_uppercase(),
        guest.hypervisor,
        guest.subnet,
        guest.ip.unwrap(),
        guest.bridge
    );
    let r = common::patch(&url, &same).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["type"], "kvm");
    assert_eq!(r.json()["ip"], guest.ip.unwrap().to_string());
    // A hypervisor's id neither.
    refused(
        ctx,
        "PATCH",
        &format!("{}/hypervisors/{}", env.hypervisors, env.seed.hypervisor),
        Some(&format!(r#"{{"id":"{other}"}}"#)),
        400,
        "an id cannot be changed",
    )
    .await;
}

#[tokio::test]
async fn deleting_a_hypervisor_with_guests_is_refused() {
    let Some(env) = env().await else { return };
    placed_guest(&env).await;
    let r = refused(
        &env.ctx,
        "DELETE",
        &format!("{}/hypervisors/{}", env.hypervisors, env.seed.hypervisor),
        None,
        409,
        "not empty",
    )
    .await;
    assert_eq!(r.json()["code"], 409);
}

#[tokio::test]
async fn bad_pagination_is_refused() {
    let Some(env) = env().await else { return };
    let ctx = &env.ctx;
    let g = format!("{}/guests", env.guests);
    for q in ["limit=0", "limit=10001", "limit=abc", "limit=-1", "limit="] {
        let r = refused(ctx, "GET", &format!("{g}?{q}"), None, 400, "invalid limit").await;
        assert_eq!(r.json()["code"], 400);
    }
    for token in ["%%%", "bm90LWEtdXVpZA", "MTA"] {
        refused(
            ctx,
            "GET",
            &format!("{g}?continue={token}"),
            None,
            400,
            "invalid continue token",
        )
        .await;
    }
    // A VLAN tag is a token of the VLAN list, not of the guests'.
    refused(
        ctx,
        "GET",
        &format!("{}/vlans/tags?continue=NDA5Ng", env.networks),
        None,
        400,
        "invalid continue token",
    )
    .await;
    refused(
        ctx,
        "GET",
        &format!("{}/hypervisors?alive=yes", env.hypervisors),
        None,
        400,
        "invalid alive filter",
    )
    .await;
}

#[tokio::test]
async fn bad_subnets_are_refused() {
    let Some(env) = env().await else { return };
    let ctx = &env.ctx;
    let url = format!("{}/subnets", env.networks);
    let subnet = |cidr: &str, start: &str, end: &str, gw: &str, network: &str| {
        format!(
            r#"{{"cidr":"{cidr}","start":"{start}","end":"{end}","gateway":"{gw}","network":"{network}"}}"#
        )
    };
    let n = env.seed.network.as_str();
    for (body, needle) in [
        (
            subnet("10.5.0.0/24", "10.6.0.1", "10.5.0.20", "", ""),
            "does not contain 10.6.0.1",
        ),
        (
            subnet("10.5.0.0/24", "10.5.0.10", "10.5.1.20", "", ""),
            "does not contain 10.5.1.20",
        ),
        (
            subnet("10.5.0.0/24", "10.5.0.30", "10.5.0.20", "", ""),
            "EndRange cannot be less than StartRange",
        ),
        (
            subnet("10.5.0.0/24", "10.5.0.10", "10.5.0.20", "10.9.0.1", ""),
            "does not contain gateway",
        ),
        (
            subnet("10.1.0.128/25", "10.1.0.130", "10.1.0.140", "", n),
            "overlaps subnet",
        ),
        (subnet("fd00::/64", "fd00::10", "fd00::20", "", ""), "IPv6"),
        (
            r#"{"start":"10.5.0.10","end":"10.5.0.20"}"#.to_string(),
            "needs its cidr",
        ),
        (
            subnet("10.5.0.0/33", "10.5.0.10", "10.5.0.20", "", ""),
            "invalid CIDR",
        ),
    ] {
        let r = refused(ctx, "POST", &url, Some(&body), 400, needle).await;
        assert_eq!(r.json()["code"], 400);
    }
    // A range that would leave a reservation out, and a move to another network.
    let mut s = ctx.subnet(&env.seed.subnet).await.unwrap();
    s.reserve_address("someone").await.unwrap();
    let one = format!("{url}/{}", env.seed.subnet);
    refused(
        ctx,
        "PATCH",
        &one,
        Some(r#"{"start":"10.1.0.11"}"#),
        409,
        "reserved for someone",
    )
    .await;
    let mut other = ctx.new_network();
    other.save().await.unwrap();
    refused(
        ctx,
        "PATCH",
        &one,
        Some(&format!(r#"{{"network":"{}"}}"#, other.id)),
        400,
        "attaching it to a network",
    )
    .await;
    refused(ctx, "DELETE", &one, None, 409, "has reserved addresses").await;
    refused(
        ctx,
        "DELETE",
        &format!(
            "{}/networks/{}/subnets/{}",
            env.networks, n, env.seed.subnet
        ),
        None,
        409,
        "has reserved addresses",
    )
    .await;
}

#[tokio::test]
async fn bad_firewall_rules_are_refused() {
    let Some(env) = env().await else { return };
    let ctx = &env.ctx;
    let url = format!("{}/fwgroups", env.networks);
    let rule = |proto: &str, start: i64, end: i64, action: &str| {
        format!(
            r#"{{"rules":[{{"source":"10.0.0.0/8","portStart":{start},"portEnd":{end},"protocol":"{proto}","action":"{action}"}}]}}"#
        )
    };
    for (body, needle) in [
        (rule("sctp", 22, 22, "accept"), "protocol \"sctp\""),
        (rule("", 22, 22, "accept"), "protocol \"\""),
        (rule("tcp", 22, 70000, "accept"), "0-65535"),
        (
            rule("tcp", 80, 22, "accept"),
            "portStart 80 is greater than portEnd 22",
        ),
        (rule("udp", 53, 53, "permit"), "action \"permit\""),
        (rule("icmp", 1, 1, "accept"), "icmp has no ports"),
        (rule("tcp", -1, 22, "accept"), "portStart"),
        (
            r#"{"rules":[{"source":"10.0.0.0/33","protocol":"tcp","action":"accept"}]}"#
                .to_string(),
            "invalid CIDR",
        ),
    ] {
        let r = refused(ctx, "POST", &url, Some(&body), 400, needle).await;
        assert_eq!(r.json()["code"], 400, "{body}");
    }
    // The same checks on a PATCH.
    let one = format!("{url}/{}", env.seed.fwgroup);
    refused(
        ctx,
        "PATCH",
        &one,
        Some(&rule("tcp", 0, 65536, "drop")),
        400,
        "0-65535",
    )
    .await;
    refused(
        ctx,
        "PATCH",
        &one,
        Some(&rule("tcp", 9, 8, "accept")),
        400,
        "portStart 9 is greater than portEnd 8",
    )
    .await;
    // A rule naming a group that does not exist, on a PATCH.
    let unknown = "0000aaaa-0000-4000-8000-00000000abcd";
    refused(
        ctx,
        "PATCH",
        &one,
        Some(&format!(
            r#"{{"rules":[{{"group":"{unknown}","portStart":22,"portEnd":22,"protocol":"udp","action":"accept"}}]}}"#
        )),
        400,
        &format!("firewall group {unknown} does not exist"),
    )
    .await;
}

/// A group stored by another tool with a rule whose source is not a CIDR cannot be
/// read, but a PATCH replacing its rules repairs it; a PATCH keeping the bad rule is
/// refused and changes nothing.
#[tokio::test]
async fn a_stored_group_with_a_bad_source_is_repaired_by_a_patch() {
    let Some(env) = env().await else { return };
    let ctx = &env.ctx;
    let id = "0000aaaa-0000-4000-8000-0000000000fe";
    let key = lochness::keys::fwgroup_metadata(id);
    ctx.client()
        .put(
            ctx.abs(&key),
            format!(
                r#"{{"id":"{id}","metadata":{{}},"rules":[{{"source":"10.0.0.0/33","portStart":22,"portEnd":22,"protocol":"tcp","action":"accept"}}]}}"#
            ),
            None,
        )
        .await
        .unwrap();
    let url = format!("{}/fwgroups/{id}", env.networks);
    refused(ctx, "GET", &url, None, 400, "invalid CIDR").await;
    refused(
        ctx,
        "PATCH",
        &url,
        Some(r#"{"metadata":{"a":"b"}}"#),
        400,
        "invalid CIDR",
    )
    .await;
    let r = common::send(
        "PATCH",
        &url,
        Some(r#"{"rules":[{"source":"10.0.0.0/8","portStart":22,"portEnd":22,"protocol":"tcp","action":"accept"}]}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["rules"][0]["source"], "10.0.0.0/8");
    assert_eq!(ctx.fwgroup(id).await.unwrap().rules.len(), 1);
}

#[tokio::test]
async fn zero_and_negative_resources_are_refused() {
    let Some(env) = env().await else { return };
    let ctx = &env.ctx;
    let url = format!("{}/flavors", env.guests);
    for (body, needle) in [
        (
            r#"{"image":"x","memory":0,"disk":1,"cpu":1}"#,
            "flavor memory must be at least 1",
        ),
        (
            r#"{"image":"x","memory":1,"disk":0,"cpu":1}"#,
            "flavor disk must be at least 1",
        ),
        (
            r#"{"image":"x","memory":1,"disk":1}"#,
            "flavor cpu must be at least 1",
        ),
        (r#"{"image":"x","memory":-1,"disk":1,"cpu":1}"#, "memory"),
        (r#"{"image":"x","memory":1,"disk":1,"cpu":-2}"#, "cpu"),
        (r#"{"image":"x","memory":1.5,"disk":1,"cpu":1}"#, "memory"),
    ] {
        let r = refused(ctx, "POST", &url, Some(body), 400, needle).await;
        assert_eq!(r.json()["code"], 400, "{}", r.text);
    }
    let one = format!("{url}/{}", env.seed.flavor);
    refused(ctx, "PATCH", &one, Some(r#"{"cpu":-1}"#), 400, "cpu").await;
    refused(
        ctx,
        "PATCH",
        &one,
        Some(r#"{"memory":0}"#),
        400,
        "flavor memory must be at least 1",
    )
    .await;
    // A hypervisor's figures: a negative one does not decode.
    let hv = format!("{}/hypervisors/{}", env.hypervisors, env.seed.hypervisor);
    refused(
        ctx,
        "PATCH",
        &hv,
        Some(r#"{"total_resources":{"memory":-5,"disk":1,"cpu":1}}"#),
        400,
        "memory",
    )
    .await;
    refused(
        ctx,
        "POST",
        &format!("{}/hypervisors", env.hypervisors),
        Some(r#"{"ip":"10.9.9.9","netmask":"255.255.255.0","gateway":"10.9.9.1","mac":"01:23:45:67:89:ab","total_resources":{"memory":1,"disk":1,"cpu":-1}}"#),
        400,
        "cpu",
    )
    .await;
}
