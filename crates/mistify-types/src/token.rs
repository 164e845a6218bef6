//! Bearer-token files (`--token-file` of the agent, the sub-agents and the CLIs): one
//! token per line, `ro:` in front of a token that may only read; blank lines and `#`
//! comments are skipped. Every token is printable ASCII without spaces (it travels in a
//! header) and at least [`MIN_TOKEN_LEN`] characters long (a guessable token is no
//! protection).
//!
//! The agent accepts every token of its file ([`TokenFile::access`]); a sub-agent or a
//! client uses the first ([`TokenFile::first`]), so a line of the agent's file can be
//! copied into a client's as it is.

use std::path::{Path, PathBuf};

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a token file cannot be used; names the file (and the line).
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: no token in the file")]
    Empty { path: PathBuf },
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any request.
    ReadWrite,
    /// `GET` and `HEAD` only (an `ro:` line).
    ReadOnly,
}

/// A parsed token file: at least one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFile {
    entries: Vec<(String, Access)>,
}

impl TokenFile {
    /// Parses the text of a token file; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<TokenFile, TokenFileError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (token, access) = match line.strip_prefix("ro:") {
                Some(t) => (t, Access::ReadOnly),
                None => (line, Access::ReadWrite),
            };
            check_token(token).map_err(|reason| TokenFileError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            })?;
            entries.push((token.to_string(), access));
        }
        if entries.is_empty() {
            return Err(TokenFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(TokenFile { entries })
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<TokenFile, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        TokenFile::parse(path, &text)
    }

    /// One read-write token given by a program rather than read from a file (a
    /// sub-agent's `Server::require_token`); not checked against the file rules.
    pub fn single(token: &str) -> TokenFile {
        TokenFile {
            entries: vec![(token.to_string(), Access::ReadWrite)],
        }
    }

    /// The first token (without its `ro:` prefix): what a client or sub-agent sends or
    /// requires.
    pub fn first(&self) -> &str {
        self.entries.first().map(|(t, _)| t.as_str()).unwrap_or("")
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The access of `token`, comparing it with every entry in constant time per entry.
    pub fn access(&self, token: &[u8]) -> Option<Access> {
        let mut found = None;
        for (known, access) in &self.entries {
            if constant_time_eq(known.as_bytes(), token) && found.is_none() {
                found = Some(*access);
            }
        }
        found
    }
}

/// The rules of one token: printable ASCII without spaces, at least [`MIN_TOKEN_LEN`].
pub fn check_token(token: &str) -> Result<(), String> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "token too short ({} characters, at least {MIN_TOKEN_LEN})",
            token.len()
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token is printable ASCII without spaces (it travels in a header)".into());
    }
    Ok(())
}

/// Whether `a` and `b` are equal, in time that depends on their length only (for
/// comparing secrets).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TokenFile, TokenFileError> {
        TokenFile::parse(Path::new("tokens"), text)
    }

    #[test]
    fn tokens_parse_with_comments_and_read_only_prefix() {
        let t = parse("# operators\n\nabcdefghijklmnopq\nro:readonlytoken-12345\n").expect("ok");
        assert_eq!(t.len(), 2);
        assert_eq!(t.first(), "abcdefghijklmnopq");
        assert_eq!(t.access(b"abcdefghijklmnopq"), Some(Access::ReadWrite));
        assert_eq!(t.access(b"readonlytoken-12345"), Some(Access::ReadOnly));
        assert_eq!(t.access(b"ro:readonlytoken-12345"), None);
        assert_eq!(t.access(b"abcdefghijklmnop"), None);
        assert_eq!(t.access(b""), None);
        let ro = parse("ro:readonlytoken-12345\n").expect("ok");
        assert_eq!(ro.first(), "readonlytoken-12345");
    }

    #[test]
    fn bad_token_files_name_the_line() {
        let e = parse("abcdefghijklmnopq\nshort\n").unwrap_err().to_string();
        assert!(e.contains("tokens:2") && e.contains("too short"), "{e}");
        let e = parse("abcdefgh ijklmnopq\n").unwrap_err().to_string();
        assert!(e.contains("tokens:1") && e.contains("printable"), "{e}");
        let e = parse("# nothing\n\n").unwrap_err().to_string();
        assert!(e.contains("no token"), "{e}");
        let e = TokenFile::load(Path::new("/nonexistent/tokens"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read the token file"), "{e}");
        assert_eq!(TokenFile::single("short").first(), "short");
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
