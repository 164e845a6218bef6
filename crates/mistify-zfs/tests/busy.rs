//! Deleting guest disks and images on zfs-fuse: mounted filesystems are unmounted first
//! (deepest first), zfs's "busy" is retried for a bounded time, and when something
//! still holds the dataset the error names it (the mounted filesystems and the
//! processes using them), instead of zfs's bare "dataset is busy". Never a forced
//! (lazy) unmount: on zfs-fuse that wedges every mount of the machine.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mistify_rpc::{Guest, GuestRequest, SnapshotRequest};
use mistify_types::Disk;
use mistify_zfs::store::{Config, DiskMode, Store};

/// A process with its working directory in `dir`, killed on drop.
struct Holder(Child);

impl Holder {
    fn cwd(dir: &Path, seconds: u32) -> Holder {
        Holder(
            Command::new("sleep")
                .arg(seconds.to_string())
                .current_dir(dir)
                .spawn()
                .expect("sleep"),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn open(pool: &TestPool, images: &Path, busy: Duration) -> Arc<Store> {
    let mut cfg = Config::new(&pool.name);
    cfg.disk_mode = DiskMode::File;
    cfg.allowed_sources = vec![images.display().to_string()];
    cfg.busy_for = busy;
    Store::open(cfg).await.expect("store")
}

fn guest(id: &str) -> GuestRequest {
    GuestRequest {
        guest: Some(Guest {
            id: id.into(),
            disks: vec![
                Disk {
                    image: "base".into(),
                    ..Default::default()
                },
                Disk {
                    size: 16,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn guest_datasets(pool: &TestPool, id: &str) -> Vec<String> {
    pool.list()
        .into_iter()
        .filter(|n| n.contains(&format!("/guests/{id}")))
        .collect()
}

/// The mountpoint of a disk dataset, from the device path the store answered.
fn disk_dir(source: &str) -> PathBuf {
    Path::new(source).parent().expect("disk dir").to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_disks_and_images_are_deleted_or_say_what_holds_them() {
    if mistify_e2e::skipped("zfs") {
        return;
    }
    let pool = TestPool::new();
    let images = pool.dir.path().join("images-src");
    std::fs::create_dir_all(&images).unwrap();
    let image = make_image(&pool.name, "base", 16, &images, false);
    let store = open(&pool, &images, Duration::from_secs(3)).await;
    store
        .request_image("base", &image.display().to_string())
        .await
        .expect("image");

    // The walk-through's life of a guest, ten times: disks from the image and blank,
    // a recursive snapshot, then the delete, which must succeed every time.
    let mut took = Vec::new();
    for round in 0..10 {
        let id = format!("g{round}");
        store.create_guest_disks(guest(&id)).await.expect("create");
        store
            .create_snapshot(SnapshotRequest {
                id: format!("guests/{id}"),
                dest: "first".into(),
                recursive: true,
                ..Default::default()
            })
            .await
            .expect("snapshot");
        let start = Instant::now();
        store
            .delete_guest_disks(guest(&id))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        took.push(start.elapsed());
        assert!(guest_datasets(&pool, &id).is_empty(), "round {round}");
    }
    eprintln!("ten deletes of a guest with two disks and a snapshot: {took:?}");

    // A process working in a disk's directory: the delete gives up after the bounded
    // retries and names the mount and the process.
    let created = store
        .create_guest_disks(guest("held"))
        .await
        .expect("create");
    let disks = created.guest.expect("guest").disks;
    let dir = disk_dir(&disks[1].source);
    let holder = Holder::cwd(&dir, 60);
    let start = Instant::now();
    let err = store
        .delete_guest_disks(guest("held"))
        .await
        .expect_err("deleted although a process works in it")
        .to_string();
    let waited = start.elapsed();
    eprintln!("held guest: {err} ({waited:?})");
    assert!(err.contains("still busy after"), "{err}");
    assert!(
        err.contains(&format!(
            "still mounted: {}/guests/held/disk-1 at {}",
            pool.name,
            dir.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "pid {} (sleep) cwd {}",
            holder.pid(),
            dir.display()
        )),
        "{err}"
    );
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    // zfs-fuse still serves every mount (nothing was unmounted lazily).
    mistify_e2e::stack::check_zfs_fuse_serves().expect("zfs-fuse serves");
    drop(holder);
    store
        .delete_guest_disks(guest("held"))
        .await
        .expect("delete once the process is gone");
    assert!(guest_datasets(&pool, "held").is_empty());

    // A process that leaves while the delete retries: the delete succeeds.
    let created = store
        .create_guest_disks(guest("brief"))
        .await
        .expect("create");
    let dir = disk_dir(&created.guest.expect("guest").disks[0].source);
    let _brief = Holder::cwd(&dir, 1);
    store
        .delete_guest_disks(guest("brief"))
        .await
        .expect("delete after the process left");
    assert!(guest_datasets(&pool, "brief").is_empty());

    // The image: the same, and its record stays while the dataset does.
    let image_dir = pool.mountpoint(&format!("{}/images/base", pool.name));
    let holder = Holder::cwd(&image_dir, 60);
    let err = store
        .delete_image("base")
        .await
        .expect_err("image deleted although a process works in it")
        .to_string();
    assert!(
        err.contains(&format!(
            "still mounted: {}/images/base at {}",
            pool.name,
            image_dir.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("pid {} (sleep)", holder.pid())),
        "{err}"
    );
    store.get_image("base").await.expect("the record is kept");
    drop(holder);
    store.delete_image("base").await.expect("delete the image");
    assert!(!pool.has(&format!("{}/images/base", pool.name)));
    mistify_e2e::stack::check_zfs_fuse_serves().expect("zfs-fuse serves");
}
