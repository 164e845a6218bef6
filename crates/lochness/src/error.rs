//! The one error type of the crate.

/// Everything a lochness operation can fail with.
///
/// Callers that map errors to HTTP should treat [`Error::NotFound`] as 404,
/// [`Error::Conflict`] as 409, the `Invalid…` variants and [`Error::Refused`] as 400 and
/// the rest as 5xx.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An identifier is not a UUID in the accepted forms.
    #[error("invalid UUID: {0}")]
    InvalidUuid(String),
    /// A MAC address could not be parsed.
    #[error("invalid MAC address: {0}")]
    InvalidMac(String),
    /// An IP address could not be parsed.
    #[error("invalid IP address: {0}")]
    InvalidIp(String),
    /// A CIDR could not be parsed, or is of a family we do not support.
    #[error("invalid CIDR: {0}")]
    InvalidCidr(String),
    /// Stored or supplied JSON is malformed or has a field of the wrong type.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// An entity failed its `validate()` rules; the message says which one.
    #[error("{0}")]
    Invalid(String),
    /// The entity, key or referenced entity does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A compare-and-swap lost: someone else changed the entity since it was read, or it
    /// already exists when it was to be created.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The operation is not allowed in the current state (destroying a hypervisor that
    /// still has guests, a subnet that still has reservations, …).
    #[error("{0}")]
    Refused(String),
    /// No address is left to hand out.
    #[error("no available addresses")]
    NoAvailableAddresses,
    /// None of the guest's network subnets is attached to the hypervisor with a free address.
    #[error("no suitable subnet found")]
    NoSuitableSubnet,
    /// The hypervisor's available resources do not cover the guest's flavor.
    #[error("hypervisor {0} does not have the resources for the guest")]
    InsufficientResources(String),
    /// Candidate selection found no hypervisors at all.
    #[error("no hypervisors")]
    NoHypervisors,
    /// Candidate selection filtered every hypervisor out.
    #[error("no suitable hypervisors")]
    NoSuitableHypervisors,
    /// The claim on a job is no longer this process's (its lease expired or the claim
    /// was taken over): nothing was written.
    #[error("claim lost: {0}")]
    ClaimLost(String),
    /// A multi-key operation kept losing races and gave up after its retry bound.
    #[error("gave up after {attempts} conflicting attempts: {what}")]
    TooManyConflicts {
        /// The operation.
        what: String,
        /// How many transactions were tried.
        attempts: u32,
    },
    /// The running host's hypervisor identity does not match.
    #[error("Hypervisor ID does not match hostname/environment")]
    NotThisHypervisor,
    /// No hypervisor id could be discovered from the argument, environment or hostname.
    #[error("unable to discover an id to set")]
    NoHypervisorId,
    /// The agent answered with an unexpected HTTP status.
    #[error("unexpected HTTP Response Code: Expected {expected}, Received {code}")]
    HttpCode {
        /// The status we waited for.
        expected: u16,
        /// The status we got.
        code: u16,
    },
    /// The agent reported a job as failed; the message is the agent's.
    #[error("job failed: {0}")]
    JobFailed(String),
    /// Any other failure talking to the agent.
    #[error("agent: {0}")]
    Agent(String),
    /// etcd failed or could not be reached.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// Reading host facts (meminfo, cpuinfo, statvfs) failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }

    /// Whether this is [`Error::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict(_))
    }
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
