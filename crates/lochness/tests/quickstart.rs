//! Runs the crate-level example (examples/quickstart.rs) against a real etcd.

mod common;

#[path = "../examples/quickstart.rs"]
mod quickstart;

#[tokio::test]
async fn crate_example_places_a_guest() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let url = common::etcd_url();
    let ip = quickstart::run(url, "quickstart-test/").await.unwrap();
    // Network .0 and gateway .1 are outside the range; the range starts at .10.
    assert_eq!(ip, "192.168.100.10");
    let ctx = lochness::Context::new(&[url], Some("quickstart-test/"))
        .await
        .unwrap();
    let guests = ctx.guests().await.unwrap();
    assert_eq!(guests.len(), 1);
    assert_eq!(guests[0].ip.unwrap().to_string(), ip);
}
