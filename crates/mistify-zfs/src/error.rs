//! The one error type of the store; its `Display` is the exact text an RPC reply carries
//! (`spec/storage-subagent.md` §6).

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
    Store(String),
    #[error("{0}")]
    Io(String),
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

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

macro_rules! store_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Store(e.to_string())
            }
        }
    )*};
}
store_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

pub type Result<T, E = Error> = std::result::Result<T, E>;
