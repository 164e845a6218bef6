//! Ids that travel in URL paths, store keys and dataset names: one validator for all of
//! them ([`Id::parse`]), and UUID canonicalisation ([`canonical_uuid`]).
//!
//! An id is refused when it is empty, `.`, longer than [`MAX_ID_BYTES`], holds `..`, one
//! of `/ \ @ ; ? #`, whitespace or a control character. No UUID or number check: an
//! unknown well-formed id is simply not found. The agent refuses such an id with 400, the
//! REST client before sending anything.

use std::fmt;

/// Longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Why an id was refused; names what the id was for (`guest id`, `job id`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct IdError {
    /// What the id names, e.g. `guest id`.
    pub what: &'static str,
    /// The refused text.
    pub value: String,
    /// Why, e.g. ``must not contain `/` ``.
    pub reason: &'static str,
}

/// A checked id (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(String);

impl Id {
    /// Checks `value` as the id of `what` (named in the error).
    pub fn parse(what: &'static str, value: &str) -> Result<Id, IdError> {
        check(what, value)?;
        Ok(Id(value.to_string()))
    }

    /// A fresh random (version 4) UUID, lower-case.
    pub fn new_uuid() -> Id {
        Id(new_uuid())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Id {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// The one id rule (see the module documentation): `Ok` when `value` may be used as the
/// id of `what`.
pub fn check(what: &'static str, value: &str) -> Result<(), IdError> {
    let unsafe_char = |c: char| {
        matches!(c, '/' | '\\' | '@' | ';' | '?' | '#') || c.is_whitespace() || c.is_control()
    };
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value == "." || value.contains("..") {
        Some("must not be `.` or contain `..`")
    } else if value.len() > MAX_ID_BYTES {
        Some("must not be longer than 256 bytes")
    } else if value.chars().any(unsafe_char) {
        Some("must not contain `/`, `\\`, `@`, `;`, `?`, `#`, whitespace or control characters")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(IdError {
            what,
            value: value.to_string(),
            reason,
        }),
    }
}

/// The canonical (lower-case, 8-4-4-4-12) form of a UUID given in any case, optionally
/// prefixed by `urn:uuid:` in any case (what the Go originals accepted); `None` for
/// anything else.
pub fn canonical_uuid(value: &str) -> Option<String> {
    let prefixed = value.len() == 45
        && value.is_char_boundary(9)
        && value[..9].eq_ignore_ascii_case("urn:uuid:");
    let bare = if prefixed { &value[9..] } else { value };
    let ok = bare.len() == 36
        && bare.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    ok.then(|| bare.to_ascii_lowercase())
}

/// Whether `value` is a UUID in a form [`canonical_uuid`] accepts.
pub fn is_uuid(value: &str) -> bool {
    canonical_uuid(value).is_some()
}

/// A fresh random (version 4) UUID, lower-case, as text.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_ids_are_refused() {
        for bad in [
            "",
            ".",
            "a/b",
            "..",
            "a..b",
            "x@y",
            "a;b",
            "a b",
            "a\tb",
            "a\u{0}b",
            "\\x",
            "a\u{7f}b",
            "\u{e9}/x",
            "a\u{a0}b",
            "a\u{2028}b",
            "a\u{85}b",
            "\u{e9}\tx",
            "a?b",
            "a#b",
        ] {
            assert!(check("id", bad).is_err(), "{bad:?}");
        }
        assert!(check("id", &"x".repeat(257)).is_err());
        for good in [
            "5a0c7d7e-0000-4000-8000-000000000001",
            "vda",
            "0",
            "snap-1433160000",
            "a.b_c",
            "caf\u{e9}",
            "\u{65e5}\u{672c}-1",
        ] {
            assert!(check("id", good).is_ok(), "{good:?}");
        }
        assert!(check("id", &"x".repeat(256)).is_ok());
        let e = Id::parse("guest id", "a/b").unwrap_err().to_string();
        assert!(
            e.starts_with("invalid guest id \"a/b\": must not contain"),
            "{e}"
        );
    }

    #[test]
    fn uuid_forms() {
        assert!(is_uuid("c6a0c1e4-4f5e-4d8b-9c1a-0e2b9a3f7d11"));
        assert_eq!(
            canonical_uuid("urn:uuid:C6A0C1E4-4F5E-4D8B-9C1A-0E2B9A3F7D11").as_deref(),
            Some("c6a0c1e4-4f5e-4d8b-9c1a-0e2b9a3f7d11")
        );
        assert!(is_uuid("URN:UUID:c6a0c1e4-4f5e-4d8b-9c1a-0e2b9a3f7d11"));
        assert!(!is_uuid("urn:uuid:"));
        assert!(!is_uuid("not-a-uuid"));
        assert!(!is_uuid("c6a0c1e44f5e4d8b9c1a0e2b9a3f7d11"));
        assert!(!is_uuid("c6a0c1e4-4f5e-4d8b-9c1a-0e2b9a3f7d1g"));
        let a = new_uuid();
        assert!(is_uuid(&a) && a == a.to_ascii_lowercase(), "{a}");
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, new_uuid());
    }
}
