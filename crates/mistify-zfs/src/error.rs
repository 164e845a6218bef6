//! The one error type of the store; its `Display` is the exact text an RPC reply carries
//! (the Go sub-agent's texts where it had them).

use crate::zfs::ZfsError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Unknown image, missing dataset.
    #[error("not found")]
    NotFound,
    #[error("not a volume")]
    NotAVolume,
    #[error("not a snapshot")]
    NotASnapshot,
    /// A name failed local validation (the reason is logged, not returned, so that the
    /// text stays the original's).
    #[error("not a valid dataset")]
    InvalidDataset,
    #[error("invalid argument")]
    InvalidArgument,
    #[error("no space left on device")]
    NoSpace,
    /// An image that is still being fetched or whose fetch failed.
    #[error("image not ready")]
    ImageNotReady,
    /// A fixed message of the original (`need id`, `need a dest`, …).
    #[error("{0}")]
    Message(&'static str),
    /// A request's `source` outside `--allowed-sources`.
    #[error("source not allowed: {0}")]
    SourceNotAllowed(String),
    /// A download or import failure (the image records the same text).
    #[error("{0}")]
    Fetch(String),
    #[error("{0}")]
    Zfs(#[from] ZfsError),
    /// The embedded image store failed.
    #[error("image store: {0}")]
    Store(#[from] RecordsError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The pool or its datasets cannot serve as configured (no zvols, a dataset that is
    /// not a disk).
    #[error("{0}")]
    Setup(String),
    /// The pool is not imported, or the datasets the store uses are not mounted: the
    /// store cannot serve yet (`/healthz` answers 503 with this text).
    #[error("{0}")]
    NotReady(String),
}

/// Failures of the embedded store of image records, causes kept.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("{}: {source}", path.display())]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error(transparent)]
    Database(#[from] redb::Error),
    #[error("corrupt image record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("the store's task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Error {
    /// A zfs error, with "does not exist" mapped to [`Error::NotFound`].
    pub fn from_lookup(e: ZfsError) -> Error {
        if e.not_found() {
            Error::NotFound
        } else if e.invalid_name() {
            Error::InvalidDataset
        } else {
            Error::Zfs(e)
        }
    }
}

macro_rules! records_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Store(RecordsError::Database(e.into()))
            }
        }
    )*};
}
records_errors!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Store(RecordsError::Corrupt(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
