//! The one error type of the sub-agent and its wire text.

use virt::error::Error as VirtError;

/// libvirt's `VIR_ERR_NO_SUPPORT`: the driver lacks the call.
pub const CODE_NO_SUPPORT: u32 = 3;
/// libvirt's `VIR_ERR_INVALID_ARG`, also used for unsupported flags.
pub const CODE_INVALID_ARG: u32 = 8;
/// libvirt's `VIR_ERR_NO_DOMAIN`.
pub const CODE_NO_DOMAIN: u32 = 42;
/// libvirt's `VIR_ERR_NO_NETWORK`.
pub const CODE_NO_NETWORK: u32 = 43;

/// Everything a method can fail with. The `Display` text is what goes back to the agent
/// as the JSON-RPC error string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Bad input, refused before libvirt is called. An empty detail reads exactly
    /// `invalid argument`, as the original's EINVAL text.
    #[error("invalid argument{}", detail_suffix(.0))]
    InvalidArgument(String),
    /// An error reported by libvirt, in the original binding's text shape.
    #[error("[Code-{code}] [Domain-{domain}] {message}")]
    Libvirt {
        code: u32,
        domain: u32,
        message: String,
    },
    /// No pooled connection became free in time.
    #[error("no libvirt connection free after {0} s")]
    PoolExhausted(u64),
    /// A libvirt call did not return in time.
    #[error("libvirt did not answer within {0} s")]
    Timeout(u64),
    /// The blocking task running a libvirt call died.
    #[error("libvirt call failed: {0}")]
    Task(String),
    /// XML could not be written or read.
    #[error("XML error: {0}")]
    Xml(String),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl Error {
    /// An [`Error::InvalidArgument`] with a detail text.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Error::InvalidArgument(detail.into())
    }

    /// libvirt's error code, when this error came from libvirt.
    pub fn libvirt_code(&self) -> Option<u32> {
        match self {
            Error::Libvirt { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether libvirt reported that no such domain exists.
    pub fn is_no_domain(&self) -> bool {
        self.libvirt_code() == Some(CODE_NO_DOMAIN)
    }
}

impl From<VirtError> for Error {
    fn from(e: VirtError) -> Self {
        Error::Libvirt {
            code: e.code().to_raw(),
            domain: e.domain().to_raw(),
            message: e.message().to_string(),
        }
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(Error::invalid("").to_string(), "invalid argument");
        assert_eq!(
            Error::invalid("guest id is empty").to_string(),
            "invalid argument: guest id is empty"
        );
        let e = Error::Libvirt {
            code: 42,
            domain: 12,
            message: "Domain not found".into(),
        };
        assert_eq!(e.to_string(), "[Code-42] [Domain-12] Domain not found");
        assert!(e.is_no_domain());
    }
}
