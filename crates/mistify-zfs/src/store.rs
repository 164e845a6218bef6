//! The ImageStore: images, guest disks, volumes and snapshots on one pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use mistify_rpc::{
    Guest, GuestRequest, GuestResponse, Snapshot, SnapshotRequest, SnapshotResponse, Volume,
    VolumeRequest, VolumeResponse,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Semaphore;

use crate::error::{Error, RecordsError, Result};
use crate::fetch::{self, Progress, Source};
use crate::names;
use crate::records::{
    ImageInfo, ImagesReply, Records, STATUS_COMPLETE, STATUS_ERROR, STATUS_PENDING,
};
use crate::zfs::{Dataset, Flavor, Kind, Zfs};

/// MB on the wire.
pub const MB: u64 = 1 << 20;
/// The file holding a disk in `file` mode.
pub const DISK_FILE: &str = "disk.img";
/// The directory under the images mountpoint holding downloads in progress.
pub const TEMP_DIR: &str = ".temp";
/// The image store file under the images mountpoint (default).
pub const DB_FILE: &str = ".images.redb";

/// How guest disks are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiskMode {
    /// A zvol per disk, device `/dev/zvol/<name>` (the original).
    Zvol,
    /// A filesystem per disk holding one sparse raw file `disk.img` (the device).
    File,
}

/// Everything the store needs; see `cli::Flags` for the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    pub pool: String,
    /// `host[:port]` of the image server.
    pub image_service: String,
    pub disk_mode: DiskMode,
    pub allowed_sources: Vec<String>,
    /// Default: `<mountpoint of <pool>/images>/.images.redb`.
    pub db_path: Option<PathBuf>,
    pub max_fetches: usize,
    pub zfs_program: PathBuf,
    /// Per command, except send/receive.
    pub zfs_timeout: Duration,
    /// Of one `zfs receive`.
    pub receive_timeout: Duration,
    /// Of the image server's answer and of each gap between two chunks.
    pub download_idle: Duration,
    /// The file whose `flock` the commands that mount or unmount hold. None: the
    /// default, [`crate::zfs::FUSE_MOUNT_LOCK`] on zfs-fuse and no lock on OpenZFS.
    pub mount_lock: Option<PathBuf>,
    /// How long a destroy or rollback keeps retrying "busy" before it answers what
    /// holds the dataset.
    pub busy_for: Duration,
    /// Whether the filesystems the store uses must be mounted (`/proc/self/mountinfo`)
    /// to open and to be ready; off only for a fake `zfs` that mounts nothing.
    pub check_mounts: bool,
}

impl Config {
    pub fn new(pool: &str) -> Config {
        Config {
            pool: pool.into(),
            image_service: "image.services.lochness.local".into(),
            disk_mode: DiskMode::Zvol,
            allowed_sources: Vec::new(),
            db_path: None,
            max_fetches: 2,
            zfs_program: "zfs".into(),
            zfs_timeout: Duration::from_secs(60),
            receive_timeout: Duration::from_secs(3600),
            download_idle: Duration::from_secs(60),
            mount_lock: None,
            busy_for: crate::zfs::DEFAULT_BUSY_FOR,
            check_mounts: true,
        }
    }
}

type FetchResult = Shared<BoxFuture<'static, std::result::Result<(), String>>>;

struct Inflight {
    progress: Arc<Progress>,
    done: FetchResult,
}

/// The storage sub-agent's state. Share it as `Arc<Store>`.
pub struct Store {
    cfg: Config,
    zfs: Zfs,
    records: Records,
    temp_dir: PathBuf,
    inflight: Mutex<HashMap<String, Inflight>>,
    slots: Arc<Semaphore>,
    http: reqwest::Client,
    downloads: AtomicU64,
    /// The last readiness answer and when it was found.
    readiness: tokio::sync::Mutex<Option<(std::time::Instant, std::result::Result<(), String>)>>,
}

/// The pool is imported and zfs answers about it; else [`Error::NotReady`].
async fn pool_answers(zfs: &Zfs, pool: &str) -> Result<()> {
    match zfs.get(pool).await {
        Ok(_) => Ok(()),
        Err(e) if e.not_found() => Err(Error::NotReady(format!("pool {pool} is not imported"))),
        Err(e) => Err(Error::NotReady(format!("pool {pool}: {e}"))),
    }
}

fn invalid(e: names::NameError) -> Error {
    tracing::debug!(reason = %e, "refused name");
    Error::InvalidDataset
}

impl Store {
    /// Opens the store on `cfg.pool`: creates `<pool>/images` and `<pool>/guests` if
    /// missing, cleans the temp dir, opens the image records (rebuilding them from the
    /// image datasets when the file is missing).
    pub async fn open(cfg: Config) -> Result<Arc<Store>> {
        let mut zfs = Zfs::detect(cfg.zfs_program.clone(), cfg.zfs_timeout).await;
        if let Some(path) = &cfg.mount_lock {
            zfs = zfs.with_mount_lock(Some(crate::zfs::MountLock::new(path)));
        }
        Self::open_with(cfg, zfs).await
    }

    /// As [`Store::open`] with a given command layer. [`Error::NotReady`] when the pool
    /// is not imported or `<pool>/images` / `<pool>/guests` are not mounted: nothing is
    /// written then (a file made in an empty mountpoint would hide under the mount).
    pub async fn open_with(cfg: Config, zfs: Zfs) -> Result<Arc<Store>> {
        names::check_dataset(&cfg.pool).map_err(invalid)?;
        if cfg.pool.contains('/') || cfg.pool.contains('@') {
            return Err(Error::InvalidDataset);
        }
        if zfs.flavor() == Flavor::Fuse && cfg.disk_mode == DiskMode::Zvol {
            return Err(Error::Setup(
                "zfs-fuse has no zvols: use --disk-mode file".into(),
            ));
        }
        let zfs = zfs.with_busy_for(cfg.busy_for);
        pool_answers(&zfs, &cfg.pool).await?;
        let mut images = None;
        for child in ["images", "guests"] {
            let name = format!("{}/{child}", cfg.pool);
            let ds = match zfs.get(&name).await {
                Ok(ds) => ds,
                Err(e) if e.not_found() => {
                    zfs.create_filesystem(&name, false).await?;
                    zfs.get(&name).await?
                }
                Err(e) => return Err(e.into()),
            };
            if cfg.check_mounts && crate::holders::mounts_of(&name, false).is_empty() {
                return Err(Error::NotReady(format!(
                    "{name} is not mounted (at {}): mount the pool's filesystems \
                     (zfs mount {name})",
                    ds.mountpoint.as_deref().unwrap_or("no mountpoint")
                )));
            }
            if child == "images" {
                images = Some(ds);
            }
        }
        let mountpoint = images
            .and_then(|d| d.mountpoint)
            .ok_or_else(|| Error::NotReady(format!("{}/images is not mounted", cfg.pool)))?;
        let temp_dir = Path::new(&mountpoint).join(TEMP_DIR);
        tokio::fs::create_dir_all(&temp_dir).await?;
        let mut entries = tokio::fs::read_dir(&temp_dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            tracing::info!(file = %entry.path().display(), "removing a stale download");
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
        let db_path = cfg
            .db_path
            .clone()
            .unwrap_or_else(|| Path::new(&mountpoint).join(DB_FILE));
        let existed = db_path.exists();
        let path = db_path.clone();
        let records = tokio::task::spawn_blocking(move || Records::open(&path))
            .await
            .map_err(|e| Error::Store(RecordsError::Task(e)))??;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Fetch(e.to_string()))?;
        let store = Arc::new(Store {
            slots: Arc::new(Semaphore::new(cfg.max_fetches.max(1))),
            cfg,
            zfs,
            records,
            temp_dir,
            inflight: Mutex::new(HashMap::new()),
            http,
            downloads: AtomicU64::new(0),
            readiness: tokio::sync::Mutex::new(None),
        });
        if existed {
            store.fail_interrupted().await?;
        } else {
            store.rebuild().await?;
        }
        Ok(store)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether the store can serve: the pool is imported and every filesystem it uses
    /// (`<pool>/images`, `<pool>/guests` and everything under them) is mounted; else
    /// the reason. What `/healthz` asks (an answer is kept for one second).
    pub async fn readiness(&self) -> std::result::Result<(), String> {
        let mut last = self.readiness.lock().await;
        if let Some((at, answer)) = &*last {
            if at.elapsed() < Duration::from_secs(1) {
                return answer.clone();
            }
        }
        let answer = match tokio::time::timeout(Duration::from_secs(5), self.check_ready()).await {
            Ok(answer) => answer,
            Err(_) => Err(format!(
                "zfs does not answer about pool {} within 5 s",
                self.cfg.pool
            )),
        };
        if let Err(reason) = &answer {
            tracing::warn!(%reason, "not ready");
        }
        *last = Some((std::time::Instant::now(), answer.clone()));
        answer
    }

    async fn check_ready(&self) -> std::result::Result<(), String> {
        pool_answers(&self.zfs, &self.cfg.pool)
            .await
            .map_err(|e| e.to_string())?;
        if !self.cfg.check_mounts {
            return Ok(());
        }
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mounted: std::collections::HashSet<String> = crate::holders::parse_mountinfo(&text)
            .into_iter()
            .map(|m| m.dataset)
            .collect();
        let mut missing = Vec::new();
        for top in [self.images_dataset(), self.guests_dataset()] {
            let all = self.zfs.list(&top).await.map_err(|e| e.to_string())?;
            missing.extend(
                all.into_iter()
                    .filter(|d| d.kind == Kind::Filesystem && d.mountpoint.is_some())
                    .filter(|d| !mounted.contains(&d.name))
                    .map(|d| d.name),
            );
        }
        if missing.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
        let more = match missing.len() {
            n if n > 5 => format!(" and {} more", n - 5),
            _ => String::new(),
        };
        Err(format!(
            "pool {} is imported but {} of its filesystems are not mounted: {}{more}",
            self.cfg.pool,
            missing.len(),
            shown.join(", ")
        ))
    }

    /// The command layer (tests read its counter).
    pub fn zfs(&self) -> &Zfs {
        &self.zfs
    }

    /// Downloads started since start-up.
    pub fn downloads(&self) -> u64 {
        self.downloads.load(Ordering::SeqCst)
    }

    fn images_dataset(&self) -> String {
        format!("{}/images", self.cfg.pool)
    }

    fn guests_dataset(&self) -> String {
        format!("{}/guests", self.cfg.pool)
    }

    /// Records left `pending` by a crash become `error`.
    async fn fail_interrupted(&self) -> Result<()> {
        for mut info in self.records.list().await? {
            if info.status == STATUS_PENDING {
                info.status = STATUS_ERROR.into();
                info.error = "interrupted by a restart".into();
                self.records.put(info).await?;
            }
        }
        Ok(())
    }

    /// Re-creates the records of every image dataset (direct child of `<pool>/images`
    /// with a snapshot).
    async fn rebuild(&self) -> Result<()> {
        let parent = self.images_dataset();
        let all = self.zfs.list(&parent).await?;
        for ds in all.iter().filter(|d| {
            d.kind != Kind::Snapshot
                && d.name
                    .strip_prefix(&parent)
                    .and_then(|r| r.strip_prefix('/'))
                    .is_some_and(|r| !r.contains('/'))
        }) {
            let Some(snap) = all
                .iter()
                .find(|s| s.kind == Kind::Snapshot && s.name.starts_with(&format!("{}@", ds.name)))
            else {
                continue;
            };
            let id = ds.name[parent.len() + 1..].to_string();
            let size = match self.disk_bytes(ds).await {
                Ok(b) => b / MB,
                Err(e) => {
                    tracing::warn!(image = %id, error = %e, "not an image of this disk mode");
                    continue;
                }
            };
            tracing::info!(image = %id, "image record rebuilt");
            self.records
                .put(ImageInfo {
                    id,
                    volume: ds.name.clone(),
                    snapshot: snap.name.clone(),
                    size,
                    status: STATUS_COMPLETE.into(),
                    ..Default::default()
                })
                .await?;
        }
        Ok(())
    }

    // ----- disks -------------------------------------------------------------------

    /// The disk file of a file-mode dataset.
    fn disk_file(&self, ds: &Dataset) -> Result<PathBuf> {
        let mp = ds
            .mountpoint
            .as_ref()
            .ok_or_else(|| Error::Setup(format!("{} is not mounted", ds.name)))?;
        Ok(Path::new(mp).join(DISK_FILE))
    }

    /// The device a guest uses for `ds`.
    fn device(&self, ds: &Dataset) -> Result<String> {
        match self.cfg.disk_mode {
            DiskMode::Zvol => Ok(format!("/dev/zvol/{}", ds.name)),
            DiskMode::File => Ok(self.disk_file(ds)?.to_string_lossy().into_owned()),
        }
    }

    /// The disk size in bytes of a volume of the current mode (else `not a volume`).
    async fn disk_bytes(&self, ds: &Dataset) -> Result<u64> {
        match self.cfg.disk_mode {
            DiskMode::Zvol if ds.kind == Kind::Volume => Ok(ds.volsize),
            DiskMode::File if ds.kind == Kind::Filesystem => {
                let file = self.disk_file(ds)?;
                match tokio::fs::metadata(&file).await {
                    Ok(m) if m.is_file() => Ok(m.len()),
                    _ => Err(Error::NotAVolume),
                }
            }
            _ => Err(Error::NotAVolume),
        }
    }

    async fn volume_of(&self, ds: &Dataset) -> Result<Volume> {
        Ok(Volume {
            id: ds.name.clone(),
            size: self.disk_bytes(ds).await? / MB,
            device: self.device(ds)?,
        })
    }

    /// Creates a blank disk `name` of `bytes`.
    async fn create_disk(&self, name: &str, bytes: u64) -> Result<Dataset> {
        match self.cfg.disk_mode {
            DiskMode::Zvol => self.zfs.create_volume(name, bytes).await?,
            DiskMode::File => {
                self.zfs.create_filesystem(name, true).await?;
            }
        }
        let ds = self.zfs.get(name).await?;
        if self.cfg.disk_mode == DiskMode::File {
            self.ensure_disk_file(&ds, bytes).await?;
        }
        Ok(ds)
    }

    async fn ensure_disk_file(&self, ds: &Dataset, bytes: u64) -> Result<()> {
        let file = self.disk_file(ds)?;
        if tokio::fs::metadata(&file).await.is_err() {
            let f = tokio::fs::File::create(&file).await?;
            f.set_len(bytes).await?;
            f.sync_all().await?;
        }
        Ok(())
    }

    // ----- images ------------------------------------------------------------------

    /// A record with the live progress of a pending fetch.
    fn with_progress(&self, mut info: ImageInfo) -> ImageInfo {
        if info.status == STATUS_PENDING {
            if let Ok(map) = self.inflight.lock() {
                if let Some(f) = map.get(&info.id) {
                    let (done, total) = f.progress.snapshot();
                    info.bytes_done = Some(done);
                    info.bytes_total = total;
                }
            }
        }
        info
    }

    async fn lookup(&self, id: &str) -> Result<ImageInfo> {
        if names::check_id(id).is_err() {
            return Err(Error::NotFound);
        }
        match self.records.get(id).await? {
            Some(info) => Ok(self.with_progress(info)),
            None => Err(Error::NotFound),
        }
    }

    async fn complete_image(&self, id: &str) -> Result<ImageInfo> {
        let info = self.lookup(id).await?;
        if info.status != STATUS_COMPLETE {
            return Err(Error::ImageNotReady);
        }
        Ok(info)
    }

    /// `ImageStore.ListImages`.
    pub async fn list_images(&self) -> Result<ImagesReply> {
        let all: Vec<ImageInfo> = self
            .records
            .list()
            .await?
            .into_iter()
            .map(|i| self.with_progress(i))
            .collect();
        Ok(ImagesReply {
            images: (!all.is_empty()).then_some(all),
        })
    }

    /// `ImageStore.GetImage`.
    pub async fn get_image(&self, id: &str) -> Result<ImagesReply> {
        Ok(ImagesReply {
            images: Some(vec![self.lookup(id).await?]),
        })
    }

    /// `ImageStore.RequestImage`: returns once the image is imported (or the fetch
    /// failed); concurrent requests for one id share one download.
    pub async fn request_image(self: &Arc<Self>, id: &str, source: &str) -> Result<ImagesReply> {
        if id.is_empty() {
            return Err(Error::Message("need id"));
        }
        names::check_id(id).map_err(invalid)?;
        let source = fetch::resolve(
            &self.cfg.image_service,
            &self.cfg.allowed_sources,
            id,
            source,
        )?;
        if let Some(info) = self.records.get(id).await? {
            if info.status == STATUS_COMPLETE {
                return Ok(ImagesReply {
                    images: Some(vec![info]),
                });
            }
        }
        let done = self.start_fetch(id, source).await?;
        done.await.map_err(Error::Fetch)?;
        self.get_image(id).await
    }

    async fn start_fetch(self: &Arc<Self>, id: &str, source: Source) -> Result<FetchResult> {
        // Record `pending` first, then publish the fetch (both under one decision).
        let existing = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map(|f| f.done.clone());
        if let Some(done) = existing {
            return Ok(done);
        }
        let progress = Arc::new(Progress::default());
        let me = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task_id = id.to_string();
        let task_progress = progress.clone();
        let handle = tokio::spawn(async move {
            // Wait until the entry is published (so the task cannot finish before it);
            // a dropped sender means the image was found imported meanwhile.
            if rx.await.is_err() {
                return Ok(());
            }
            me.fetch_task(&task_id, source, &task_progress).await
        });
        let done: FetchResult = async move {
            match handle.await {
                Ok(r) => r,
                Err(e) => Err(format!("fetch task failed: {e}")),
            }
        }
        .boxed()
        .shared();
        {
            // A map of plain data: a panic elsewhere cannot leave it inconsistent.
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(other) = map.get(id) {
                // Lost a race with another request: use its fetch (ours never starts).
                return Ok(other.done.clone());
            }
            map.insert(
                id.to_string(),
                Inflight {
                    progress,
                    done: done.clone(),
                },
            );
        }
        // A fetch that ended between the caller's look at the record and our entry has
        // stored `complete` before leaving the map: importing again would collide with
        // its dataset.
        let imported = self
            .records
            .get(id)
            .await
            .map(|r| r.is_some_and(|info| info.status == STATUS_COMPLETE));
        if !matches!(imported, Ok(false)) {
            if let Ok(mut map) = self.inflight.lock() {
                map.remove(id);
            }
            drop(tx);
            imported?;
            return Ok(done);
        }
        self.records
            .put(ImageInfo {
                id: id.to_string(),
                status: STATUS_PENDING.into(),
                ..Default::default()
            })
            .await?;
        let _ = tx.send(());
        Ok(done)
    }

    async fn fetch_task(
        self: &Arc<Self>,
        id: &str,
        source: Source,
        progress: &Progress,
    ) -> std::result::Result<(), String> {
        let result = self.fetch_and_import(id, source, progress).await;
        let record = match &result {
            Ok(info) => info.clone(),
            Err(e) => {
                tracing::warn!(image = %id, error = %e, "fetch failed");
                ImageInfo {
                    id: id.to_string(),
                    status: STATUS_ERROR.into(),
                    error: e.to_string(),
                    ..Default::default()
                }
            }
        };
        let saved = self.records.put(record).await;
        if let Ok(mut map) = self.inflight.lock() {
            map.remove(id);
        }
        saved.map_err(|e| e.to_string())?;
        result.map(drop).map_err(|e| e.to_string())
    }

    async fn fetch_and_import(
        &self,
        id: &str,
        source: Source,
        progress: &Progress,
    ) -> Result<ImageInfo> {
        let _slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Fetch("fetcher quit".into()))?;
        let (path, temporary) = match source {
            Source::Http(url) => {
                self.downloads.fetch_add(1, Ordering::SeqCst);
                tracing::info!(image = %id, %url, "downloading");
                let path = fetch::download(
                    &self.http,
                    &url,
                    &self.temp_dir,
                    id,
                    progress,
                    self.cfg.download_idle,
                )
                .await?;
                (path, true)
            }
            Source::File(path) => {
                let len = tokio::fs::metadata(&path).await?.len();
                progress.total.store(len, Ordering::Relaxed);
                progress.done.store(len, Ordering::Relaxed);
                (path, false)
            }
        };
        let result = self.import(id, &path).await;
        if temporary {
            if let Err(e) = tokio::fs::remove_file(&path).await {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove the download");
            }
        }
        result
    }

    async fn import(&self, id: &str, path: &Path) -> Result<ImageInfo> {
        let dest = format!("{}/{id}", self.images_dataset());
        let mut file = tokio::fs::File::open(path).await?;
        let mut head = [0u8; 3];
        let n = file.read(&mut head).await?;
        file.seek(std::io::SeekFrom::Start(0)).await?;
        let reader = tokio::io::BufReader::new(file);
        if fetch::is_gzip(&head[..n]) {
            let gz = async_compression::tokio::bufread::GzipDecoder::new(reader);
            self.zfs
                .receive(&dest, gz, self.cfg.receive_timeout)
                .await?;
        } else {
            self.zfs
                .receive(&dest, reader, self.cfg.receive_timeout)
                .await?;
        }
        let ds = self.zfs.get(&dest).await?;
        let snapshot = self
            .zfs
            .snapshots(&dest)
            .await?
            .into_iter()
            .find(|s| s.name.starts_with(&format!("{dest}@")));
        let checked = match (&snapshot, self.disk_bytes(&ds).await) {
            (Some(snap), Ok(bytes)) => Ok((snap.name.clone(), bytes)),
            (None, _) => Err(Error::Fetch(format!(
                "image {id}: the stream has no snapshot"
            ))),
            (_, Err(_)) => Err(Error::Fetch(format!(
                "image {id}: a {:?} stream is not an image of disk mode {:?}",
                ds.kind, self.cfg.disk_mode
            ))),
        };
        match checked {
            Ok((snapshot, bytes)) => Ok(ImageInfo {
                id: id.to_string(),
                volume: dest,
                snapshot,
                size: bytes / MB,
                status: STATUS_COMPLETE.into(),
                ..Default::default()
            }),
            Err(e) => {
                let _ = self.zfs.destroy(&dest, true).await;
                Err(e)
            }
        }
    }

    /// `ImageStore.DeleteImage`: destroys the image dataset and its snapshots (refused
    /// by zfs while guest disks are clones of it), then the record.
    pub async fn delete_image(&self, id: &str) -> Result<ImagesReply> {
        let info = self.lookup(id).await?;
        if info.status == STATUS_PENDING {
            return Err(Error::ImageNotReady);
        }
        if !info.volume.is_empty() {
            match self.zfs.get(&info.volume).await {
                Ok(_) => self.zfs.destroy(&info.volume, true).await?,
                Err(e) if e.not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.records.remove(id).await?;
        Ok(ImagesReply {
            images: Some(vec![info]),
        })
    }

    /// `ImageStore.CloneImage`: `dest` is a full dataset name inside the pool.
    pub async fn clone_image(&self, id: &str, dest: &str) -> Result<VolumeResponse> {
        if dest.is_empty() {
            return Err(Error::Message("need dest"));
        }
        names::check_dataset(dest).map_err(invalid)?;
        if !dest.starts_with(&format!("{}/", self.cfg.pool)) || dest.contains('@') {
            return Err(Error::InvalidDataset);
        }
        let info = self.complete_image(id).await?;
        self.zfs.clone_snapshot(&info.snapshot, dest).await?;
        let ds = self.zfs.get(dest).await?;
        Ok(VolumeResponse {
            volumes: Some(vec![self.volume_of(&ds).await?]),
        })
    }

    // ----- guests ------------------------------------------------------------------

    fn guest_of(req: GuestRequest, need_disks: bool) -> Result<Guest> {
        let guest = req.guest.ok_or(Error::InvalidArgument)?;
        if guest.id.is_empty() || (need_disks && guest.disks.is_empty()) {
            return Err(Error::InvalidArgument);
        }
        names::check_id(&guest.id).map_err(invalid)?;
        Ok(guest)
    }

    /// Bytes available to guest disks (the `available` of `<pool>/guests`, which
    /// already accounts for quotas and reservations).
    pub async fn space_available(&self) -> Result<u64> {
        Ok(self.zfs.get(&self.guests_dataset()).await?.avail)
    }

    async fn verify(&self, mut guest: Guest) -> Result<Guest> {
        let available = self.space_available().await?;
        let mut total: u64 = 0;
        for disk in &mut guest.disks {
            if disk.image.is_empty() && disk.size == 0 {
                return Err(Error::InvalidArgument);
            }
            if !disk.image.is_empty() {
                disk.size = self.complete_image(&disk.image).await?.size;
            }
            total = total.saturating_add(disk.size.saturating_mul(MB));
        }
        if total > available {
            return Err(Error::NoSpace);
        }
        Ok(guest)
    }

    /// `ImageStore.VerifyDisks`.
    pub async fn verify_disks(&self, req: GuestRequest) -> Result<GuestResponse> {
        let guest = Self::guest_of(req, true)?;
        Ok(GuestResponse {
            guest: Some(self.verify(guest).await?),
            ..Default::default()
        })
    }

    /// `ImageStore.CreateGuestDisks`: idempotent (an existing `disk-N` is reused).
    pub async fn create_guest_disks(&self, req: GuestRequest) -> Result<GuestResponse> {
        let guest = Self::guest_of(req, true)?;
        let mut guest = self.verify(guest).await?;
        let base = format!("{}/{}", self.guests_dataset(), guest.id);
        for (i, disk) in guest.disks.iter_mut().enumerate() {
            let name = format!("{base}/disk-{i}");
            let ds = match self.zfs.get(&name).await {
                Ok(ds) => {
                    if self.cfg.disk_mode == DiskMode::File && disk.image.is_empty() {
                        self.ensure_disk_file(&ds, disk.size.saturating_mul(MB))
                            .await?;
                    }
                    ds
                }
                Err(e) if e.not_found() => {
                    if disk.image.is_empty() {
                        self.create_disk(&name, disk.size.saturating_mul(MB))
                            .await?
                    } else {
                        let image = self.complete_image(&disk.image).await?;
                        self.zfs.clone_snapshot(&image.snapshot, &name).await?;
                        self.zfs.get(&name).await?
                    }
                }
                Err(e) => return Err(e.into()),
            };
            disk.volume = name;
            disk.source = self.device(&ds)?;
        }
        Ok(GuestResponse {
            guest: Some(guest),
            ..Default::default()
        })
    }

    /// `ImageStore.DeleteGuestsDisks`: a guest without datasets is already deleted.
    pub async fn delete_guest_disks(&self, req: GuestRequest) -> Result<GuestResponse> {
        let mut guest = Self::guest_of(req, false)?;
        let name = format!("{}/{}", self.guests_dataset(), guest.id);
        match self.zfs.get(&name).await {
            Ok(_) => self.zfs.destroy(&name, true).await?,
            Err(e) if e.not_found() => {}
            Err(e) => return Err(e.into()),
        }
        guest.disks = Vec::new();
        Ok(GuestResponse {
            guest: Some(guest),
            ..Default::default()
        })
    }

    // ----- volumes -----------------------------------------------------------------

    fn full(&self, id: &str) -> Result<String> {
        names::join(&self.cfg.pool, id).map_err(invalid)
    }

    async fn dataset(&self, id: &str) -> Result<Dataset> {
        let name = self.full(id)?;
        self.zfs.get(&name).await.map_err(Error::from_lookup)
    }

    /// `ImageStore.ListVolumes`: every disk of the current mode in the pool.
    pub async fn list_volumes(&self) -> Result<VolumeResponse> {
        let mut out = Vec::new();
        for ds in self.zfs.list(&self.cfg.pool).await? {
            if ds.kind == Kind::Snapshot {
                continue;
            }
            if let Ok(v) = self.volume_of(&ds).await {
                out.push(v);
            }
        }
        Ok(VolumeResponse { volumes: Some(out) })
    }

    /// `ImageStore.CreateVolume`.
    pub async fn create_volume(&self, req: VolumeRequest) -> Result<VolumeResponse> {
        if req.size == 0 {
            return Err(Error::Message("need a valid size"));
        }
        if req.id.is_empty() {
            return Err(Error::Message("need an id"));
        }
        let name = self.full(&req.id)?;
        if name.contains('@') {
            return Err(Error::InvalidDataset);
        }
        let ds = self.create_disk(&name, req.size.saturating_mul(MB)).await?;
        Ok(VolumeResponse {
            volumes: Some(vec![self.volume_of(&ds).await?]),
        })
    }

    /// `ImageStore.GetVolume`.
    pub async fn get_volume(&self, req: VolumeRequest) -> Result<VolumeResponse> {
        if req.id.is_empty() {
            return Err(Error::Message("need an id"));
        }
        let ds = self.dataset(&req.id).await?;
        Ok(VolumeResponse {
            volumes: Some(vec![self.volume_of(&ds).await?]),
        })
    }

    /// `ImageStore.DeleteDataset`: any dataset, recursively.
    pub async fn delete_dataset(&self, req: VolumeRequest) -> Result<VolumeResponse> {
        if req.id.is_empty() {
            return Err(Error::Message("need an id"));
        }
        let ds = self.dataset(&req.id).await?;
        if ds.name == self.cfg.pool {
            return Err(Error::InvalidArgument);
        }
        let entry = self.volume_of(&ds).await.unwrap_or(Volume {
            id: ds.name.clone(),
            size: ds.volsize / MB,
            device: String::new(),
        });
        self.zfs.destroy(&ds.name, true).await?;
        Ok(VolumeResponse {
            volumes: Some(vec![entry]),
        })
    }

    // ----- snapshots ---------------------------------------------------------------

    fn snapshot_json(ds: &Dataset) -> Snapshot {
        Snapshot {
            id: ds.name.clone(),
            size: ds.written / MB,
        }
    }

    /// Resolves `id` as an existing snapshot.
    pub async fn resolve_snapshot(&self, id: &str) -> Result<Dataset> {
        if id.is_empty() {
            return Err(Error::Message("need an id"));
        }
        let ds = self.dataset(id).await?;
        if ds.kind != Kind::Snapshot {
            return Err(Error::NotASnapshot);
        }
        Ok(ds)
    }

    /// The snapshots named `snap` of `parent` and of its descendants.
    async fn family(&self, parent: &str, snap: &str) -> Result<Vec<Dataset>> {
        Ok(self
            .zfs
            .snapshots(parent)
            .await
            .map_err(Error::from_lookup)?
            .into_iter()
            .filter(|s| s.snap_name() == Some(snap))
            .collect())
    }

    /// `ImageStore.CreateSnapshot`.
    pub async fn create_snapshot(&self, req: SnapshotRequest) -> Result<SnapshotResponse> {
        if req.id.is_empty() {
            return Err(Error::Message("need an id"));
        }
        let ds = self.dataset(&req.id).await?;
        if ds.kind == Kind::Snapshot {
            return Err(Error::Message("cannot create a snapshot of a snapshot"));
        }
        if req.dest.is_empty() {
            return Err(Error::Message("need a dest"));
        }
        if !names::check_snapshot_dest(&req.dest) {
            return Err(Error::Message("invalid snapshot dest"));
        }
        let name = format!("{}@{}", ds.name, req.dest);
        self.zfs.snapshot(&name, req.recursive).await?;
        let snapshots = if req.recursive {
            self.family(&ds.name, &req.dest).await?
        } else {
            vec![self.zfs.get(&name).await?]
        };
        Ok(SnapshotResponse {
            snapshots: Some(snapshots.iter().map(Self::snapshot_json).collect()),
        })
    }

    /// `ImageStore.DeleteSnapshot`.
    pub async fn delete_snapshot(&self, req: SnapshotRequest) -> Result<SnapshotResponse> {
        let snap = self.resolve_snapshot(&req.id).await?;
        let list = match (req.recursive, snap.name.split_once('@')) {
            (true, Some((parent, name))) => self.family(parent, name).await?,
            _ => vec![snap.clone()],
        };
        self.zfs.destroy(&snap.name, req.recursive).await?;
        Ok(SnapshotResponse {
            snapshots: Some(list.iter().map(Self::snapshot_json).collect()),
        })
    }

    /// `ImageStore.GetSnapshot`.
    pub async fn get_snapshot(&self, req: SnapshotRequest) -> Result<SnapshotResponse> {
        let snap = self.resolve_snapshot(&req.id).await?;
        Ok(SnapshotResponse {
            snapshots: Some(vec![Self::snapshot_json(&snap)]),
        })
    }

    /// `ImageStore.ListSnapshots`: the snapshots of the dataset and its descendants.
    pub async fn list_snapshots(&self, req: SnapshotRequest) -> Result<SnapshotResponse> {
        let name = self.full(&req.id)?;
        if name.contains('@') {
            return Err(Error::Message("invalid snapshot name"));
        }
        let list = self
            .zfs
            .snapshots(&name)
            .await
            .map_err(Error::from_lookup)?;
        Ok(SnapshotResponse {
            snapshots: Some(list.iter().map(Self::snapshot_json).collect()),
        })
    }

    /// `ImageStore.RollbackSnapshot`: with `recursive`, every descendant's snapshot of
    /// the same name is rolled back too (a guest-level snapshot restores its disks).
    pub async fn rollback_snapshot(&self, req: SnapshotRequest) -> Result<SnapshotResponse> {
        let snap = self.resolve_snapshot(&req.id).await?;
        let targets = match (req.recursive, snap.name.split_once('@')) {
            (true, Some((parent, name))) => self.family(parent, name).await?,
            _ => vec![snap.clone()],
        };
        // zfs-fuse's CLI drops the kernel page cache after a rollback; where it cannot
        // (a read-only /proc/sys, as in containers) the rollback is done but the mounts
        // may serve stale pages: remount those filesystems instead.
        let mut stale: Vec<String> = Vec::new();
        for target in &targets {
            match self
                .zfs
                .rollback(&target.name, req.destroy_more_recent)
                .await
            {
                Ok(()) => {}
                Err(e) if e.cache_drop_failed() => {
                    tracing::warn!(snapshot = %target.name, "rollback done; zfs could not drop the page cache, remounting");
                    if let Some((fs, _)) = target.name.split_once('@') {
                        stale.push(fs.to_string());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        stale.sort();
        let tops: Vec<&String> = stale
            .iter()
            .filter(|fs| {
                !stale
                    .iter()
                    .any(|p| p != *fs && fs.starts_with(&format!("{p}/")))
            })
            .collect();
        for fs in tops {
            self.zfs.remount_tree(fs).await?;
        }
        Ok(SnapshotResponse {
            snapshots: Some(vec![Self::snapshot_json(&snap)]),
        })
    }
}
