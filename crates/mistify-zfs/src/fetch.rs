//! Where an image comes from (`--image-service`, or a request's `source` when
//! `--allowed-sources` allows it), and the download into a temp file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// Progress of one fetch, shown by `GetImage`/`ListImages` while it is pending.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    /// 0 when unknown.
    pub total: AtomicU64,
}

impl Progress {
    pub fn snapshot(&self) -> (u64, Option<u64>) {
        let total = self.total.load(Ordering::Relaxed);
        (
            self.done.load(Ordering::Relaxed),
            (total > 0).then_some(total),
        )
    }
}

/// A resolved image source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Http(String),
    File(PathBuf),
}

/// Resolves the source of image `id`: the image service's URL when `source` is empty,
/// else `source` itself if one of `allowed` permits it (a URL prefix, or a directory
/// that must contain the file after symlinks are resolved).
pub fn resolve(image_service: &str, allowed: &[String], id: &str, source: &str) -> Result<Source> {
    if source.is_empty() {
        return Ok(Source::Http(format!(
            "http://{image_service}/images/{id}/download"
        )));
    }
    let refuse = || Error::SourceNotAllowed(source.to_string());
    if source.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse());
    }
    if source.starts_with("http://") || source.starts_with("https://") {
        let url = reqwest::Url::parse(source).map_err(|_| refuse())?;
        // Compare the normalised form, so `..` segments cannot climb out of a prefix.
        let normal = url.as_str();
        if source.contains("/../") || source.contains("/./") || source.ends_with("/..") {
            return Err(refuse());
        }
        let ok = allowed.iter().any(|prefix| {
            (prefix.starts_with("http://") || prefix.starts_with("https://"))
                && normal.starts_with(prefix.as_str())
        });
        return if ok {
            Ok(Source::Http(normal.to_string()))
        } else {
            Err(refuse())
        };
    }
    if source.starts_with('/') {
        let real = std::fs::canonicalize(source).map_err(|_| refuse())?;
        let ok = allowed
            .iter()
            .filter(|a| a.starts_with('/'))
            .any(|dir| std::fs::canonicalize(dir).is_ok_and(|d| real.starts_with(&d) && real != d));
        return if ok && real.is_file() {
            Ok(Source::File(real))
        } else {
            Err(refuse())
        };
    }
    Err(refuse())
}

/// Downloads `url` into a new file in `dir` (named after `id`), updating `progress`;
/// the file's path. The file is removed on failure.
pub async fn download(
    http: &reqwest::Client,
    url: &str,
    dir: &Path,
    id: &str,
    progress: &Progress,
    idle: Duration,
) -> Result<PathBuf> {
    let path = dir.join(format!("{id}.{}.part", rand::random::<u32>()));
    let result = download_to(http, url, &path, progress, idle).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&path).await;
    }
    result.map(|()| path)
}

async fn download_to(
    http: &reqwest::Client,
    url: &str,
    path: &Path,
    progress: &Progress,
    idle: Duration,
) -> Result<()> {
    let response = tokio::time::timeout(idle, http.get(url).send())
        .await
        .map_err(|_| Error::Fetch(format!("no answer from {url} within {idle:?}")))?
        .map_err(|e| Error::Fetch(format!("cannot download {url}: {e}")))?;
    let code = response.status().as_u16();
    if code != 200 {
        return Err(Error::Fetch(format!(
            "unexpected http response code: expected 200, received {code}, url: {url}"
        )));
    }
    if let Some(len) = response.content_length() {
        progress.total.store(len, Ordering::Relaxed);
    }
    let mut file = tokio::fs::File::create(path).await?;
    let mut body = response.bytes_stream();
    loop {
        let chunk = match tokio::time::timeout(idle, body.next()).await {
            Err(_) => {
                return Err(Error::Fetch(format!(
                    "download of {url} stalled for {idle:?}"
                )))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(Error::Fetch(format!("download of {url}: {e}"))),
            Ok(Some(Ok(c))) => c,
        };
        file.write_all(&chunk).await?;
        progress
            .done
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    file.flush().await?;
    file.sync_all().await?;
    Ok(())
}

/// Whether `head` starts like a gzip stream (`1F 8B 08`).
pub fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b, 0x08])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let allowed = vec!["http://img.example/images/".to_string()];
        assert_eq!(
            resolve("h:1", &allowed, "u", "").unwrap(),
            Source::Http("http://h:1/images/u/download".into())
        );
        assert!(resolve("h", &[], "u", "http://img.example/images/u").is_err());
        assert!(resolve("h", &allowed, "u", "http://img.example/images/u").is_ok());
        assert!(resolve("h", &allowed, "u", "http://img.example/images/../secret").is_err());
        assert!(resolve("h", &allowed, "u", "http://img.example/other").is_err());
        assert!(resolve("h", &allowed, "u", "http://img.example.evil/images/u").is_err());
        assert!(resolve("h", &allowed, "u", "/etc/passwd").is_err());
        assert!(resolve("h", &["/etc".into()], "u", "/etc/passwd").is_ok());
        assert!(resolve("h", &["/etc".into()], "u", "/etc/../root/x").is_err());
        assert!(resolve("h", &["/etc".into()], "u", "file:///etc/passwd").is_err());
        assert!(is_gzip(&[0x1f, 0x8b, 0x08, 0]));
        assert!(!is_gzip(b"\0\0"));
    }
}
