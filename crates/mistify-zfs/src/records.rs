//! Image records: the wire type (the original's `rpc.Image` plus our progress and error
//! keys) and their embedded store (redb, one table `images`, key = image id, value =
//! the record's JSON).

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, RecordsError, Result};

const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");

pub const STATUS_PENDING: &str = "pending";
pub const STATUS_COMPLETE: &str = "complete";
pub const STATUS_ERROR: &str = "error";

/// One image as stored and as answered. The first six keys are the original's
/// `rpc.Image`; `error`, `bytes_done`, `bytes_total` are ours (omitted when empty, and
/// ignored by Go clients).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageInfo {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub volume: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub snapshot: String,
    /// MB.
    pub size: u64,
    /// `pending`, `complete` or `error`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Why the last fetch failed (status `error`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Bytes received so far (status `pending`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<u64>,
    /// Bytes expected, when the source told (status `pending`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
}

/// Reply of the image methods; `images` is `null` when there are none (as the original).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImagesReply {
    pub images: Option<Vec<ImageInfo>>,
}

/// The embedded store of image records.
#[derive(Clone)]
pub struct Records {
    db: Arc<Database>,
}

impl Records {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> Result<Records> {
        let db = Database::create(path).map_err(|source| {
            Error::Store(RecordsError::Open {
                path: path.to_path_buf(),
                source,
            })
        })?;
        let txn = db.begin_write()?;
        txn.open_table(IMAGES)?;
        txn.commit()?;
        Ok(Records { db: Arc::new(db) })
    }

    fn get_sync(&self, id: &str) -> Result<Option<ImageInfo>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(IMAGES)?;
        match table.get(id)? {
            None => Ok(None),
            Some(v) => {
                let info: ImageInfo = serde_json::from_slice(v.value())?;
                Ok((!info.id.is_empty()).then_some(info))
            }
        }
    }

    fn list_sync(&self) -> Result<Vec<ImageInfo>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(IMAGES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    fn put_sync(&self, info: &ImageInfo) -> Result<()> {
        let bytes = serde_json::to_vec(info)?;
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(IMAGES)?;
            table.insert(info.id.as_str(), bytes.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn remove_sync(&self, id: &str) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(IMAGES)?;
            table.remove(id)?;
        }
        txn.commit()?;
        Ok(())
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Records) -> Result<T> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| Error::Store(RecordsError::Task(e)))?
    }

    pub async fn get(&self, id: &str) -> Result<Option<ImageInfo>> {
        let id = id.to_string();
        self.blocking(move |r| r.get_sync(&id)).await
    }

    pub async fn list(&self) -> Result<Vec<ImageInfo>> {
        self.blocking(|r| r.list_sync()).await
    }

    pub async fn put(&self, info: ImageInfo) -> Result<()> {
        self.blocking(move |r| r.put_sync(&info)).await
    }

    pub async fn remove(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.blocking(move |r| r.remove_sync(&id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_keys() {
        let info = ImageInfo {
            id: "ubuntu-14.04".into(),
            volume: "mistify/images/ubuntu-14.04".into(),
            snapshot: "mistify/images/ubuntu-14.04@base".into(),
            size: 2048,
            status: "complete".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"id":"ubuntu-14.04","type":"","volume":"mistify/images/ubuntu-14.04","snapshot":"mistify/images/ubuntu-14.04@base","size":2048,"status":"complete"}"#
        );
        assert_eq!(
            serde_json::to_string(&ImagesReply::default()).unwrap(),
            r#"{"images":null}"#
        );
    }

    #[tokio::test]
    async fn store_round_trip() {
        let dir = std::env::temp_dir().join(format!("mistify-zfs-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("images.redb");
        let _ = std::fs::remove_file(&path);
        let r = Records::open(&path).unwrap();
        assert!(r.get("a").await.unwrap().is_none());
        r.put(ImageInfo {
            id: "a".into(),
            status: STATUS_PENDING.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(r.get("a").await.unwrap().unwrap().status, "pending");
        assert_eq!(r.list().await.unwrap().len(), 1);
        r.remove("a").await.unwrap();
        assert!(r.list().await.unwrap().is_empty());
        drop(r);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
