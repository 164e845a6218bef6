//! zvol mode on OpenZFS, which this machine cannot run: the store drives a fake `zfs`
//! (`--zfs` is injectable) that answers with captured OpenZFS `-p` output and logs its
//! argv. Golden: the exact command sequence, the parsed numbers, the device paths.

use std::path::Path;
use std::time::Duration;

use mistify_e2e::TempDir;
use mistify_rpc::GuestRequest;
use mistify_zfs::store::{Config, DiskMode, Store};
use mistify_zfs::zfs::{Flavor, Zfs};
use serde_json::json;

/// A stateful fake: datasets are marker files under `$STATE`; `list` prints OpenZFS
/// `-H -p` rows for the ones that exist.
const FAKE: &str = r#"#!/usr/bin/env python3
import os, sys
state = os.environ["FAKE_ZFS_STATE"]
args = sys.argv[1:]
with open(os.path.join(state, "argv.log"), "a") as log:
    log.write(" ".join(args) + "\n")
ROWS = {
  "mistify": "mistify\tfilesystem\t1128267776\t9547235328\t/mistify\t-\t-\t98304\t0",
  "mistify/images": "mistify/images\tfilesystem\t54071296\t9547235328\t%IMAGES%\t-\t-\t110592\t0",
  "mistify/guests": "mistify/guests\tfilesystem\t1074008064\t9547235328\t/mistify/guests\t-\t-\t98304\t0",
  "mistify/images/ubuntu": "mistify/images/ubuntu\tvolume\t53960704\t9547235328\t-\t1073741824\t-\t12288\t-",
  "mistify/images/ubuntu@base": "mistify/images/ubuntu@base\tsnapshot\t0\t-\t-\t1073741824\t-\t53948416\t-",
}
def made(): return [f.replace("%", "/") for f in os.listdir(state) if "%" in f]
def exists(n): return n in ROWS or any(m == n or m.startswith(n + "/") for m in made())
def row(n):
    if n in ROWS: return ROWS[n].replace("%IMAGES%", os.environ["FAKE_ZFS_IMAGES"])
    if n not in made(): return f"{n}\tfilesystem\t0\t8000000000\t/{n}\t-\t-\t0\t0"
    size = open(os.path.join(state, n.replace("/", "%"))).read().strip()
    kind = "snapshot" if "@" in n else "volume"
    return f"{n}\t{kind}\t{size}\t8000000000\t-\t{size}\t-\t0\t-"
cmd = args[0] if args else ""
if cmd == "version":
    print("zfs-2.1.11-1\nzfs-kmod-2.1.11-1"); sys.exit(0)
if cmd == "list":
    name = args[-1]
    if not exists(name):
        sys.stderr.write(f"cannot open '{name}': dataset does not exist\n"); sys.exit(1)
    names = [name]
    if "-r" in args:
        names += sorted(n for n in list(ROWS) + [f.replace("%", "/") for f in os.listdir(state) if "%" in f]
                        if n.startswith(name + "/") or n.startswith(name + "@"))
    for n in names: print(row(n))
    sys.exit(0)
if cmd in ("create", "clone"):
    name = args[-1]
    size = args[args.index("-V") + 1] if "-V" in args else "1073741824"
    open(os.path.join(state, name.replace("/", "%")), "w").write(size)
    sys.exit(0)
if cmd == "destroy":
    name = args[-1]
    for f in os.listdir(state):
        n = f.replace("%", "/")
        if n == name or n.startswith(name + "/") or n.startswith(name + "@"):
            os.remove(os.path.join(state, f))
    sys.exit(0)
sys.stderr.write("fake zfs: unsupported\n"); sys.exit(2)
"#;

fn log(state: &Path) -> Vec<String> {
    std::fs::read_to_string(state.join("argv.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

const L: &str = "list -H -p -o name,type,used,avail,mountpoint,volsize,origin,written,quota -t all";

#[tokio::test]
async fn zvol_mode_on_openzfs_golden() {
    let dir = TempDir::new("zfs-zvol-golden");
    let state = dir.path().join("state");
    let images = dir.path().join("images-mnt");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&images).unwrap();
    let fake = dir.path().join("zfs");
    std::fs::write(&fake, FAKE).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Child processes inherit the environment of the test process.
    std::env::set_var("FAKE_ZFS_STATE", &state);
    std::env::set_var("FAKE_ZFS_IMAGES", &images);

    let zfs = Zfs::detect(&fake, Duration::from_secs(10)).await;
    assert_eq!(zfs.flavor(), Flavor::OpenZfs);
    let mut cfg = Config::new("mistify");
    cfg.disk_mode = DiskMode::Zvol;
    cfg.db_path = Some(dir.path().join("images.redb"));
    // The fake zfs mounts nothing.
    cfg.check_mounts = false;
    let store = Store::open_with(cfg, zfs).await.expect("open");

    // The record was rebuilt from the captured listing.
    let images_reply = store.list_images().await.unwrap();
    assert_eq!(
        serde_json::to_value(&images_reply).unwrap(),
        json!({"images": [{"id": "ubuntu", "type": "", "volume": "mistify/images/ubuntu",
            "snapshot": "mistify/images/ubuntu@base", "size": 1024, "status": "complete"}]})
    );

    let req: GuestRequest = serde_json::from_value(json!({
        "guest": {"id": "g1", "disks": [{"image": "ubuntu"}, {"size": 64}]}
    }))
    .unwrap();
    let reply = store.create_guest_disks(req.clone()).await.expect("create");
    let disks = serde_json::to_value(&reply.guest.unwrap().disks).unwrap();
    assert_eq!(
        disks,
        json!([
            {"bus": "", "device": "", "size": 1024, "volume": "mistify/guests/g1/disk-0", "image": "ubuntu",
             "source": "/dev/zvol/mistify/guests/g1/disk-0"},
            {"bus": "", "device": "", "image": "", "size": 64, "volume": "mistify/guests/g1/disk-1",
             "source": "/dev/zvol/mistify/guests/g1/disk-1"}
        ])
    );
    let volumes = store.list_volumes().await.unwrap();
    let ids: Vec<String> = volumes
        .volumes
        .unwrap()
        .into_iter()
        .map(|v| format!("{} {} {}", v.id, v.size, v.device))
        .collect();
    assert!(
        ids.contains(&"mistify/guests/g1/disk-1 64 /dev/zvol/mistify/guests/g1/disk-1".to_string()),
        "{ids:?}"
    );
    store.delete_guest_disks(req).await.expect("delete");

    let expected: Vec<String> = [
        "version".to_string(),
        format!("{L} mistify"),
        format!("{L} mistify/images"),
        format!("{L} mistify/guests"),
        format!("{L} -r mistify/images"),
        format!("{L} mistify/guests"),
        format!("{L} mistify/guests/g1/disk-0"),
        "clone -p -o compression=lz4 mistify/images/ubuntu@base mistify/guests/g1/disk-0".into(),
        format!("{L} mistify/guests/g1/disk-0"),
        format!("{L} mistify/guests/g1/disk-1"),
        "create -p -V 67108864 -o compression=lz4 mistify/guests/g1/disk-1".into(),
        format!("{L} mistify/guests/g1/disk-1"),
        format!("{L} -r mistify"),
        format!("{L} mistify/guests/g1"),
        "destroy -r mistify/guests/g1".into(),
    ]
    .into();
    assert_eq!(log(&state), expected);
}
