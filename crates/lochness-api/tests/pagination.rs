//! Paged lists over HTTP: `?limit=` pages followed by their `X-Continue` tokens cover
//! every entity exactly once, also while others are created meanwhile; the filters of
//! `/guests` and `/hypervisors`; without `limit`, the whole list and no token.

mod common;

use std::collections::BTreeSet;

use common::{get, post, seed, Cluster, Which};

/// Every item of `url`'s list, page by page (`limit`): the ids in the order they came
/// and the number of pages.
async fn pages(url: &str, limit: usize) -> (Vec<String>, usize) {
    let (ids, count, _) = pages_creating(url, limit, None).await;
    (ids, count)
}

/// As [`pages`]; after each page, while fewer than `n` were created, `POST`s `body` to
/// `create` (another entity appears meanwhile); also the ids created.
async fn pages_creating(
    url: &str,
    limit: usize,
    creating: Option<(&str, &str, usize)>,
) -> (Vec<String>, usize, BTreeSet<String>) {
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut ids = Vec::new();
    let mut created = BTreeSet::new();
    let mut token: Option<String> = None;
    let mut count = 0;
    loop {
        let mut u = format!("{url}{sep}limit={limit}");
        if let Some(t) = &token {
            u.push_str(&format!("&continue={t}"));
        }
        let r = get(&u).await;
        assert_eq!(r.status, 200, "{u}: {}", r.text);
        let items = r.json();
        let items = items.as_array().expect("a JSON array");
        assert!(items.len() <= limit);
        for item in items {
            let id = item.get("id").or_else(|| item.get("tag")).expect("an id");
            ids.push(id.to_string().trim_matches('"').to_string());
        }
        count += 1;
        if let Some((create, body, n)) = creating {
            if created.len() < n {
                let c = post(create, body).await;
                assert!(c.status == 201 || c.status == 202, "{}", c.text);
                created.insert(c.json()["id"].as_str().unwrap().to_string());
            }
        }
        token = r.header("X-Continue");
        if token.is_none() {
            return (ids, count, created);
        }
        assert!(!items.is_empty(), "a page with a token has items");
    }
}

#[tokio::test]
async fn guest_pages_cover_every_guest_once_while_guests_are_created() {
    let Some(mut cluster) = Cluster::new() else {
        return;
    };
    let guests = cluster.start(Which::Guests, &[]);
    let ctx = cluster.ctx().await;
    let s = seed(&ctx).await;
    let url = format!("{guests}/guests");
    let body = format!(r#"{{"flavor":"{}","network":"{}"}}"#, s.flavor, s.network);
    let mut before = BTreeSet::new();
    for _ in 0..23 {
        let r = post(&url, &body).await;
        assert_eq!(r.status, 202, "{}", r.text);
        before.insert(r.json()["id"].as_str().unwrap().to_string());
    }
    let (ids, count, added) = pages_creating(&url, 5, Some((&url, &body, 6))).await;
    // One created after each page while fewer than 6 were (how many pages there are
    // depends on where the new random ids fall).
    assert_eq!(added.len(), count.min(6), "{count} pages");
    let total = before.len() + added.len();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "no guest twice: {ids:?}");
    assert!(
        before.is_subset(&unique),
        "every guest present throughout is listed"
    );
    assert!(unique.is_subset(&before.union(&added).cloned().collect()));
    assert!(count >= 5);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);

    // Without a limit: everything, no token.
    let r = get(&format!("{guests}/guests")).await;
    assert_eq!(r.json().as_array().unwrap().len(), total);
    assert_eq!(r.header("X-Continue"), None);
    // A limit larger than the list: everything, no token.
    let r = get(&format!("{guests}/guests?limit=100")).await;
    assert_eq!(r.json().as_array().unwrap().len(), total);
    assert_eq!(r.header("X-Continue"), None);
    // Exactly the list's size: no token either.
    let r = get(&format!("{guests}/guests?limit={total}")).await;
    assert_eq!(r.header("X-Continue"), None);
    let r = get(&format!("{guests}/guests?limit={}", total - 1)).await;
    assert!(r.header("X-Continue").is_some());
}

#[tokio::test]
async fn guest_filters() {
    let Some(mut cluster) = Cluster::new() else {
        return;
    };
    let guests = cluster.start(Which::Guests, &[]);
    let ctx = cluster.ctx().await;
    let s = seed(&ctx).await;
    let mut other = ctx.new_flavor();
    other.image = "other".into();
    other.save().await.unwrap();
    let mut h = ctx.hypervisor(&s.hypervisor).await.unwrap();
    let mut placed = BTreeSet::new();
    let mut of_other = BTreeSet::new();
    for i in 0..12 {
        let mut g = ctx.new_guest();
        g.flavor = if i % 3 == 0 {
            other.id.clone()
        } else {
            s.flavor.clone()
        };
        g.network.clone_from(&s.network);
        if i % 4 == 0 {
            g.fwgroup.clone_from(&s.fwgroup);
        }
        if i % 2 == 0 {
            h.add_guest(&mut g).await.unwrap();
            placed.insert(g.id.clone());
        } else {
            g.save().await.unwrap();
        }
        if i % 3 == 0 {
            of_other.insert(g.id.clone());
        }
    }
    let set = |ids: Vec<String>| ids.into_iter().collect::<BTreeSet<String>>();
    let (on_h, _) = pages(&format!("{guests}/guests?hypervisor={}", s.hypervisor), 2).await;
    assert_eq!(set(on_h), placed);
    let (in_subnet, _) = pages(
        &format!("{guests}/guests?subnet={}", s.subnet.to_uppercase()),
        4,
    )
    .await;
    assert_eq!(set(in_subnet), placed);
    let (flavored, n) = pages(&format!("{guests}/guests?flavor={}", other.id), 2).await;
    assert_eq!(set(flavored), of_other);
    assert_eq!(n, 2);
    let r = get(&format!("{guests}/guests?fwgroup={}", s.fwgroup)).await;
    assert_eq!(r.json().as_array().unwrap().len(), 3);
    let both = get(&format!(
        "{guests}/guests?hypervisor={}&flavor={}",
        s.hypervisor, other.id
    ))
    .await;
    let both = set(both
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect());
    assert_eq!(both, placed.intersection(&of_other).cloned().collect());
    let r = get(&format!("{guests}/guests?network={}", s.network)).await;
    assert_eq!(r.json().as_array().unwrap().len(), 12);
    let unknown = "0000cccc-0000-4000-8000-00000000abcd";
    let r = get(&format!("{guests}/guests?network={unknown}")).await;
    assert_eq!((r.status, r.text.as_str()), (200, "[]\n"));
}

#[tokio::test]
async fn hypervisor_pages_and_filters() {
    let Some(mut cluster) = Cluster::new() else {
        return;
    };
    let hypervisors = cluster.start(Which::Hypervisors, &[]);
    let ctx = cluster.ctx().await;
    let s = seed(&ctx).await;
    let subnet = ctx.subnet(&s.subnet).await.unwrap();
    let mut all = BTreeSet::from([s.hypervisor.clone()]);
    let mut alive = BTreeSet::new();
    let mut linked = BTreeSet::from([s.hypervisor.clone()]);
    for i in 0..9 {
        let r = post(
            &format!("{hypervisors}/hypervisors"),
            &format!(r#"{{"ip":"192.168.2.{i}"}}"#),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let id = r.json()["id"].as_str().unwrap().to_string();
        if i % 3 == 0 {
            ctx.client()
                .put(format!("lochness/hypervisors/{id}/heartbeat"), "x", None)
                .await
                .unwrap();
            alive.insert(id.clone());
        }
        if i % 2 == 0 {
            let mut h = ctx.hypervisor(&id).await.unwrap();
            h.add_subnet(&subnet, "br1").await.unwrap();
            linked.insert(id.clone());
        }
        all.insert(id);
    }
    let set = |ids: Vec<String>| ids.into_iter().collect::<BTreeSet<String>>();
    let (listed, n) = pages(&format!("{hypervisors}/hypervisors"), 3).await;
    assert_eq!(listed.len(), all.len());
    assert_eq!(set(listed), all);
    assert_eq!(n, 4);
    let (live, _) = pages(&format!("{hypervisors}/hypervisors?alive=true"), 2).await;
    assert_eq!(set(live), alive);
    let (dead, _) = pages(&format!("{hypervisors}/hypervisors?alive=false"), 4).await;
    assert_eq!(set(dead), all.difference(&alive).cloned().collect());
    let (on_subnet, _) = pages(&format!("{hypervisors}/hypervisors?subnet={}", s.subnet), 2).await;
    assert_eq!(set(on_subnet), linked);
    let r = get(&format!(
        "{hypervisors}/hypervisors?subnet={}&alive=true",
        s.subnet
    ))
    .await;
    let both: BTreeSet<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(both, linked.intersection(&alive).cloned().collect());
}

#[tokio::test]
async fn every_list_pages() {
    let Some(mut cluster) = Cluster::new() else {
        return;
    };
    let networks = cluster.start(Which::Networks, &[]);
    let guests = cluster.start(Which::Guests, &[]);
    for i in 1..=12 {
        let r = post(
            &format!("{networks}/vlans/tags"),
            &format!(r#"{{"tag":{}}}"#, i * 7),
        )
        .await;
        assert_eq!(r.status, 201);
        assert_eq!(
            post(&format!("{networks}/vlans/groups"), "{}").await.status,
            201
        );
        assert_eq!(
            post(&format!("{networks}/networks"), "{}").await.status,
            201
        );
        let subnet =
            format!(r#"{{"cidr":"10.{i}.0.0/24","start":"10.{i}.0.10","end":"10.{i}.0.20"}}"#);
        assert_eq!(
            post(&format!("{networks}/subnets"), &subnet).await.status,
            201
        );
        assert_eq!(
            post(&format!("{networks}/fwgroups"), "{}").await.status,
            201
        );
        let flavor = format!(r#"{{"image":"img-{i}","memory":512,"disk":1024,"cpu":1}}"#);
        assert_eq!(
            post(&format!("{guests}/flavors"), &flavor).await.status,
            201
        );
    }
    for (base, path) in [
        (&networks, "vlans/tags"),
        (&networks, "vlans/groups"),
        (&networks, "networks"),
        (&networks, "subnets"),
        (&networks, "fwgroups"),
        (&guests, "flavors"),
    ] {
        let (ids, n) = pages(&format!("{base}/{path}"), 5).await;
        assert_eq!(ids.len(), 12, "{path}");
        assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 12, "{path}");
        assert_eq!(n, 3, "{path}");
        let whole = get(&format!("{base}/{path}")).await;
        assert_eq!(whole.json().as_array().unwrap().len(), 12);
    }
}
