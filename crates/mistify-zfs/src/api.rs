//! The HTTP face of the store: the `ImageStore.*` RPC methods and the raw
//! `/snapshots/download` stream.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use mistify_rpc::{GuestRequest, ImageRequest, Server, SnapshotRequest, VolumeRequest};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use crate::error::Error;
use crate::store::Store;

/// The RPC server of `store` (gorilla v1 replies, byte for byte), with the download
/// route; `/healthz` answers 503 with the reason while the pool is not imported or its
/// filesystems are not mounted ([`Store::readiness`]).
pub fn server(store: Arc<Store>) -> Server {
    macro_rules! m {
        ($server:expr, $name:expr, $req:ty, |$s:ident, $r:ident| $body:expr) => {{
            let st = store.clone();
            $server.method($name, move |$r: $req| {
                let $s = st.clone();
                async move { $body.await.map_err(|e: Error| e.to_string()) }
            })
        }};
    }
    let ready = store.clone();
    let mut s = Server::new("mistify-zfs")
        .v1_only()
        .version(env!("CARGO_PKG_VERSION"))
        .health_check(move || {
            let store = ready.clone();
            async move { store.readiness().await }
        });
    s = m!(s, "ImageStore.ListImages", ImageRequest, |st, _r| st
        .list_images());
    s = m!(s, "ImageStore.GetImage", ImageRequest, |st, r| async move {
        st.get_image(&r.id).await
    });
    s = m!(
        s,
        "ImageStore.RequestImage",
        ImageRequest,
        |st, r| async move { st.request_image(&r.id, &r.source).await }
    );
    s = m!(
        s,
        "ImageStore.DeleteImage",
        ImageRequest,
        |st, r| async move { st.delete_image(&r.id).await }
    );
    s = m!(
        s,
        "ImageStore.CloneImage",
        ImageRequest,
        |st, r| async move { st.clone_image(&r.id, &r.dest).await }
    );
    s = m!(
        s,
        "ImageStore.VerifyDisks",
        GuestRequest,
        |st, r| async move { st.verify_disks(r).await }
    );
    s = m!(
        s,
        "ImageStore.CreateGuestDisks",
        GuestRequest,
        |st, r| async move { st.create_guest_disks(r).await }
    );
    s = m!(
        s,
        "ImageStore.DeleteGuestsDisks",
        GuestRequest,
        |st, r| async move { st.delete_guest_disks(r).await }
    );
    s = m!(
        s,
        "ImageStore.DeleteGuestDisks",
        GuestRequest,
        |st, r| async move { st.delete_guest_disks(r).await }
    );
    s = m!(s, "ImageStore.ListVolumes", VolumeRequest, |st, _r| st
        .list_volumes());
    s = m!(
        s,
        "ImageStore.CreateVolume",
        VolumeRequest,
        |st, r| async move { st.create_volume(r).await }
    );
    s = m!(
        s,
        "ImageStore.GetVolume",
        VolumeRequest,
        |st, r| async move { st.get_volume(r).await }
    );
    s = m!(
        s,
        "ImageStore.DeleteDataset",
        VolumeRequest,
        |st, r| async move { st.delete_dataset(r).await }
    );
    s = m!(
        s,
        "ImageStore.CreateSnapshot",
        SnapshotRequest,
        |st, r| async move { st.create_snapshot(r).await }
    );
    s = m!(
        s,
        "ImageStore.DeleteSnapshot",
        SnapshotRequest,
        |st, r| async move { st.delete_snapshot(r).await }
    );
    s = m!(
        s,
        "ImageStore.GetSnapshot",
        SnapshotRequest,
        |st, r| async move { st.get_snapshot(r).await }
    );
    s = m!(
        s,
        "ImageStore.ListSnapshots",
        SnapshotRequest,
        |st, r| async move { st.list_snapshots(r).await }
    );
    s = m!(
        s,
        "ImageStore.RollbackSnapshot",
        SnapshotRequest,
        |st, r| async move { st.rollback_snapshot(r).await }
    );
    s.merge(
        Router::new()
            .route("/snapshots/download", post(download))
            .with_state(store),
    )
}

fn text(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        format!("{message}\n"),
    )
        .into_response()
}

/// `POST /snapshots/download` with a bare SnapshotRequest: the `zfs send` stream of the
/// snapshot (`recursive`: a replication stream of the dataset and its descendants). A
/// failure after the first byte aborts the connection instead of appending text.
async fn download(State(store): State<Arc<Store>>, body: Bytes) -> Response {
    let req: Option<SnapshotRequest> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let msg = if body.iter().all(u8::is_ascii_whitespace) {
                "EOF".to_string()
            } else {
                e.to_string()
            };
            return text(StatusCode::BAD_REQUEST, msg);
        }
    };
    let req = req.unwrap_or_default();
    let snap = match store.resolve_snapshot(&req.id).await {
        Ok(s) => s,
        Err(e) => {
            let status = match e {
                Error::NotFound => StatusCode::NOT_FOUND,
                Error::Message(_) | Error::NotASnapshot | Error::InvalidDataset => {
                    StatusCode::BAD_REQUEST
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return text(status, e);
        }
    };
    let mut child = match store.zfs().spawn_send(&snap.name, req.recursive) {
        Ok(c) => c,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "zfs send: no pipes");
    };
    let errors = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    // The first chunk decides between 200 and 500.
    let mut first = vec![0u8; 64 * 1024];
    let n = match stdout.read(&mut first).await {
        Ok(n) => n,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    if n == 0 {
        let status = child.wait().await;
        let stderr = errors.await.unwrap_or_default();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("zfs send {}: {}", snap.name, stderr.trim_end()),
            );
        }
        return (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )],
            Body::empty(),
        )
            .into_response();
    }
    first.truncate(n);
    let name = snap.name.clone();
    let head =
        futures::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(first)) });
    let tail = ReaderStream::with_capacity(stdout, 1 << 20);
    // After the data: the exit status; a failure becomes a stream error (connection
    // aborted, so the client cannot mistake a truncated stream for a complete one).
    let end = futures::stream::once(async move {
        let status = child.wait().await;
        let stderr = errors.await.unwrap_or_default();
        match status {
            Ok(s) if s.success() => Ok(Bytes::new()),
            Ok(s) => {
                tracing::warn!(snapshot = %name, %s, stderr = %stderr.trim_end(), "zfs send failed mid-stream");
                Err(std::io::Error::other(format!("zfs send {name}: {s}: {}", stderr.trim_end())))
            }
            Err(e) => Err(e),
        }
    })
    .filter(|r| futures::future::ready(!matches!(r, Ok(b) if b.is_empty())));
    let stream = head.chain(tail).chain(end);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        Body::from_stream(stream),
    )
        .into_response()
}
