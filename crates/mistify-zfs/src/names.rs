//! Local validation of every name that reaches a zfs command line.
//!
//! Rules (stricter than ZFS, so that nothing from a request is ever interpreted by the
//! shell-less argv as an option or a path trick):
//! * a dataset name is `/`-separated components, each non-empty, made of
//!   `[A-Za-z0-9_.:-]`, not `.` or `..`, not starting with `-`;
//! * no leading or trailing `/`, no `//`;
//! * at most one `@`; when present, both sides are non-empty and the snapshot part has
//!   the component characters and no `/`;
//! * at most 255 bytes in total.
//!
//! Ids on the wire are relative to the pool; [`join`] checks the id and prefixes the pool.

use std::fmt;

/// Why a name was refused (logged; the reply says `not a valid dataset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError(pub String);

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest dataset name ZFS accepts.
pub const MAX_NAME: usize = 255;

fn component_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

/// One path component (also a snapshot name or an image/guest id).
pub fn check_component(part: &str) -> Result<(), NameError> {
    if part.is_empty() {
        return Err(NameError("empty name component".into()));
    }
    if part == "." || part == ".." {
        return Err(NameError(format!("component {part:?} is not allowed")));
    }
    if part.starts_with('-') {
        return Err(NameError(format!("component {part:?} starts with '-'")));
    }
    if let Some(c) = part.chars().find(|c| !component_char(*c)) {
        return Err(NameError(format!("character {c:?} is not allowed")));
    }
    Ok(())
}

/// A full dataset or snapshot name (`pool/a/b` or `pool/a@snap`).
pub fn check_dataset(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_NAME {
        return Err(NameError(format!("name longer than {MAX_NAME} bytes")));
    }
    if name.starts_with('/') || name.ends_with('/') {
        return Err(NameError("leading or trailing '/'".into()));
    }
    let (path, snap) = match name.split_once('@') {
        Some((path, snap)) => {
            if snap.contains('@') {
                return Err(NameError("more than one '@'".into()));
            }
            if snap.contains('/') {
                return Err(NameError("'/' in the snapshot name".into()));
            }
            (path, Some(snap))
        }
        None => (name, None),
    };
    for part in path.split('/') {
        check_component(part)?;
    }
    if let Some(snap) = snap {
        check_component(snap)?;
    }
    Ok(())
}

/// `<pool>/<id>` (`<pool>` for an empty id) after checking the pool-relative `id`.
pub fn join(pool: &str, id: &str) -> Result<String, NameError> {
    if id.starts_with('/') {
        return Err(NameError("leading '/'".into()));
    }
    let full = if id.is_empty() {
        pool.to_string()
    } else if id.starts_with('@') {
        format!("{pool}{id}")
    } else {
        format!("{pool}/{id}")
    };
    check_dataset(&full)?;
    Ok(full)
}

/// An image or guest id: one component starting with a letter or digit.
pub fn check_id(id: &str) -> Result<(), NameError> {
    check_component(id)?;
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(NameError(format!(
            "id {id:?} must start with a letter or digit"
        )));
    }
    if id.len() > 200 {
        return Err(NameError("id longer than 200 bytes".into()));
    }
    Ok(())
}

/// A snapshot name given as `dest` of `CreateSnapshot`: `^[a-zA-Z0-9_\-:.]+$` (the
/// original's rule) and a valid component.
pub fn check_snapshot_dest(dest: &str) -> bool {
    !dest.is_empty() && check_component(dest).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "mistify",
            "mistify/images/ubuntu-14.04",
            "mistify/guests/5a0c-1/disk-0@snap-1433160000",
            "p/a:b_c.d",
        ] {
            assert_eq!(check_dataset(ok), Ok(()), "{ok}");
        }
        assert_eq!(join("p", "").unwrap(), "p");
        assert_eq!(join("p", "guests/g@s").unwrap(), "p/guests/g@s");
    }

    #[test]
    fn refuses_tricks() {
        for bad in [
            "../etc",
            "guests/../x",
            "guests/a;rm -rf",
            "guests/a b",
            "guests/$(reboot)",
            "/guests/a",
            "guests/a@b@c",
            "guests/a/",
            "guests//a",
            "guests/-o",
            "guests/a@",
            "@",
            "guests/a@b/c",
            "guests/`id`",
            "guests/a\nb",
            "+*?@#$",
        ] {
            assert!(join("p", bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_dataset(&format!("p/{}", "a".repeat(300))).is_err());
        assert!(check_id(".temp").is_err());
        assert!(check_id("a/b").is_err());
        assert!(check_id("ubuntu-14.04").is_ok());
        assert!(!check_snapshot_dest("-?_&"));
        assert!(check_snapshot_dest("snap-1:2.3_x"));
    }
}
