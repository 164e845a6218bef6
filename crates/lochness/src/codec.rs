//! Encodings shared by every entity: UUIDs (canonicalised to lower case), IP and MAC
//! addresses, CIDRs (host bits masked), and the lenient JSON field access the decoders are
//! built on (field names matched exactly, then case-insensitively, as Go's
//! `encoding/json` did; where decoding is stricter than the original, see docs/compat.md,
//! section "lochness").

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Parses a UUID in the 36-character form (any case) or with a `urn:uuid:` prefix
/// (prefix in any case) and returns it lower-cased in the 36-character form.
pub fn canonicalize(id: &str) -> Result<String> {
    mistify_types::id::canonical_uuid(id).ok_or_else(|| Error::InvalidUuid(id.to_string()))
}

/// Whether `id` is a canonical (lower-case, 36-character) UUID.
pub fn is_uuid(id: &str) -> bool {
    canonicalize(id).is_ok()
}

/// A fresh random (v4) UUID, lower-case.
pub fn new_id() -> String {
    mistify_types::id::new_uuid()
}

/// Parses an optional IP: `""` means none, anything else must be an IP literal.
pub fn parse_ip(s: &str) -> Result<Option<IpAddr>> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<IpAddr>()
        .map(|ip| Some(canonical_ip(ip)))
        .map_err(|_| Error::InvalidIp(s.to_string()))
}

/// IPv4-mapped IPv6 addresses become plain IPv4 (Go prints them as dotted quads).
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Renders an optional IP as Go's `String()` does in text outputs: `<nil>` when absent.
pub fn ip_text(ip: &Option<IpAddr>) -> String {
    ip.map(|ip| ip.to_string())
        .unwrap_or_else(|| "<nil>".to_string())
}

/// A hardware address (6, 8 or 20 bytes), rendered lower-case and colon separated.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Mac(Vec<u8>);

impl Mac {
    /// Parses the forms Go's `net.ParseMAC` accepts: `aa:bb:…`, `aa-bb-…` and `aabb.ccdd.…`,
    /// 6, 8 or 20 bytes, any case.
    pub fn parse(s: &str) -> Result<Mac> {
        let bad = || Error::InvalidMac(s.to_string());
        if !s
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'-' | b'.'))
        {
            return Err(bad());
        }
        let bytes: Vec<u8> = if s.contains(':') || s.contains('-') {
            let sep = if s.contains(':') { ':' } else { '-' };
            s.split(sep)
                .map(|p| {
                    if p.len() == 2 {
                        u8::from_str_radix(p, 16).map_err(|_| bad())
                    } else {
                        Err(bad())
                    }
                })
                .collect::<Result<_>>()?
        } else if s.contains('.') {
            let mut out = Vec::new();
            for p in s.split('.') {
                if p.len() != 4 {
                    return Err(bad());
                }
                out.push(u8::from_str_radix(&p[..2], 16).map_err(|_| bad())?);
                out.push(u8::from_str_radix(&p[2..], 16).map_err(|_| bad())?);
            }
            out
        } else {
            return Err(bad());
        };
        if matches!(bytes.len(), 6 | 8 | 20) && s.is_ascii() {
            Ok(Mac(bytes))
        } else {
            Err(bad())
        }
    }

    /// Builds a MAC from raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Mac {
        Mac(bytes.to_vec())
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

/// Parses a CIDR and masks off the host bits (`192.168.100.1/24` → `192.168.100.0/24`).
pub fn parse_cidr(s: &str) -> Result<IpNetwork> {
    let bad = || Error::InvalidCidr(s.to_string());
    if !s.contains('/') {
        return Err(bad());
    }
    let net: IpNetwork = s.parse().map_err(|_| bad())?;
    IpNetwork::new(net.network(), net.prefix()).map_err(|_| bad())
}

/// The spec's CIDR text: masked network address, `/`, prefix length.
pub fn cidr_text(net: &IpNetwork) -> String {
    format!("{}/{}", net.network(), net.prefix())
}

pub(crate) fn ser_ip<S: Serializer>(ip: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
    match ip {
        Some(ip) => s.collect_str(ip),
        None => s.serialize_str(""),
    }
}

pub(crate) fn ser_mac<S: Serializer>(mac: &Option<Mac>, s: S) -> Result<S::Ok, S::Error> {
    match mac {
        Some(mac) => s.collect_str(mac),
        None => s.serialize_str(""),
    }
}

pub(crate) fn ser_cidr<S: Serializer>(net: &Option<IpNetwork>, s: S) -> Result<S::Ok, S::Error> {
    match net {
        Some(net) => s.serialize_str(&cidr_text(net)),
        None => s.serialize_str(""),
    }
}

/// Adds `revision()` and `to_json()` to an entity type that has a `mod_revision` field
/// and serialises to its stored JSON.
macro_rules! stored_entity {
    ($t:ty) => {
        impl $t {
            /// The `mod_revision` of the stored metadata this copy was read or saved at
            /// (0 = never).
            pub fn revision(&self) -> i64 {
                self.mod_revision
            }

            /// The stored JSON, fields in the original's order.
            pub fn to_json(&self) -> String {
                crate::codec::to_json(self)
            }

            /// The context this copy was made with (for the modules that change
            /// entities of every kind).
            #[allow(dead_code)]
            pub(crate) fn entity_context(&self) -> &crate::Context {
                &self.ctx
            }

            /// Records the revision this copy was written at (0: deleted).
            #[allow(dead_code)]
            pub(crate) fn set_entity_revision(&mut self, rev: i64) {
                self.mod_revision = rev;
            }
        }
    };
}
pub(crate) use stored_entity;

/// Adds `save()` to an entity with a UUID `id`, a `validate()` and a `key()` naming its
/// metadata key: validate, canonicalise the id, compare-and-swap on the revision.
macro_rules! saved_by_uuid {
    ($t:ty) => {
        impl $t {
            /// Validates and writes the entity: created when new, otherwise only if nobody
            /// changed it since this copy was read or saved ([`crate::Error::Conflict`]).
            pub async fn save(&mut self) -> crate::Result<()> {
                self.validate()?;
                self.id = crate::codec::canonicalize(&self.id)?;
                self.mod_revision = self
                    .ctx
                    .cas_put(&self.key(), self.to_json(), self.mod_revision)
                    .await?;
                Ok(())
            }
        }
    };
}
pub(crate) use saved_by_uuid;

/// `Ok` when `id` is a UUID, else [`Error::Invalid`] with `message`.
pub(crate) fn check_id(id: &str, message: &str) -> Result<()> {
    canonicalize(id)
        .map(|_| ())
        .map_err(|_| Error::Invalid(message.to_string()))
}

/// JSON text of a value whose serialisation cannot fail (maps with string keys, strings,
/// numbers).
pub(crate) fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// A decoded JSON object whose fields are looked up as Go's `encoding/json` does: exact
/// name first, then case-insensitively. Every accessor returns `None` for an absent field
/// and for `null`.
pub(crate) struct Obj(Map<String, Value>);

impl Obj {
    /// Parses `data`; `null` is an empty object, anything but an object is an error.
    pub(crate) fn parse(data: &[u8]) -> Result<Obj> {
        match serde_json::from_slice::<Value>(data) {
            Ok(Value::Object(m)) => Ok(Obj(m)),
            Ok(Value::Null) => Ok(Obj(Map::new())),
            Ok(other) => Err(Error::InvalidJson(format!(
                "expected an object, got {other}"
            ))),
            Err(e) => Err(Error::InvalidJson(e.to_string())),
        }
    }

    fn raw(&self, name: &str) -> Option<&Value> {
        let v = self.0.get(name).or_else(|| {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })?;
        (!v.is_null()).then_some(v)
    }

    pub(crate) fn string(&self, name: &str) -> Result<Option<String>> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(Error::InvalidJson(format!(
                "{name}: expected a string, got {other}"
            ))),
        }
    }

    pub(crate) fn u64(&self, name: &str) -> Result<Option<u64>> {
        match self.raw(name) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                Error::InvalidJson(format!("{name}: expected an unsigned integer, got {v}"))
            }),
        }
    }

    pub(crate) fn i64(&self, name: &str) -> Result<Option<i64>> {
        match self.raw(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| Error::InvalidJson(format!("{name}: expected an integer, got {v}"))),
        }
    }

    pub(crate) fn ip(&self, name: &str) -> Result<Option<IpAddr>> {
        match self.string(name)? {
            None => Ok(None),
            Some(s) => parse_ip(&s),
        }
    }

    pub(crate) fn mac(&self, name: &str) -> Result<Option<Mac>> {
        match self.string(name)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => Mac::parse(&s).map(Some),
        }
    }

    pub(crate) fn map(&self, name: &str) -> Result<Option<BTreeMap<String, String>>> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    Value::Null => Ok((k.clone(), String::new())),
                    other => Err(Error::InvalidJson(format!(
                        "{name}.{k}: expected a string, got {other}"
                    ))),
                })
                .collect::<Result<_>>()
                .map(Some),
            Some(other) => Err(Error::InvalidJson(format!(
                "{name}: expected an object, got {other}"
            ))),
        }
    }

    pub(crate) fn obj(&self, name: &str) -> Result<Option<Obj>> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Obj(m.clone()))),
            Some(other) => Err(Error::InvalidJson(format!(
                "{name}: expected an object, got {other}"
            ))),
        }
    }

    pub(crate) fn array(&self, name: &str) -> Result<Option<Vec<Obj>>> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Object(m) => Ok(Obj(m.clone())),
                    Value::Null => Ok(Obj(Map::new())),
                    other => Err(Error::InvalidJson(format!(
                        "{name}: expected objects, got {other}"
                    ))),
                })
                .collect::<Result<_>>()
                .map(Some),
            Some(other) => Err(Error::InvalidJson(format!(
                "{name}: expected an array, got {other}"
            ))),
        }
    }
}

/// Go's `Time.String()` of the current UTC time, e.g.
/// `2015-06-08 18:08:39.715868326 +0000 UTC` (trailing zeros of the fraction trimmed).
pub fn go_time_now() -> String {
    go_time(chrono::Utc::now())
}

/// Go's `Time.String()` of a UTC time.
pub fn go_time(t: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::Timelike;
    let nanos = t.nanosecond() % 1_000_000_000;
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!("{}{} +0000 UTC", t.format("%Y-%m-%d %H:%M:%S"), frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        let id = "0A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F9";
        assert_eq!(canonicalize(id).unwrap(), id.to_lowercase());
        assert_eq!(
            canonicalize(&format!("URN:uuid:{id}")).unwrap(),
            id.to_lowercase()
        );
        for bad in [
            "",
            "foo",
            "0a1b2c3d4e5f607182 93a4b5c6d7e8f9",
            "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8fg",
            "{0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9}",
        ] {
            assert!(
                matches!(canonicalize(bad), Err(Error::InvalidUuid(_))),
                "{bad}"
            );
        }
        assert!(is_uuid(&new_id()));
    }

    #[test]
    fn macs() {
        for s in ["96:E0:51:F9:31:C1", "96-e0-51-f9-31-c1", "96e0.51f9.31c1"] {
            assert_eq!(Mac::parse(s).unwrap().to_string(), "96:e0:51:f9:31:c1");
        }
        for bad in [
            "+a:e0:51:f9:31:c1",
            "aabb.ccdd.eeé",
            "",
            "96:e0:51:f9:31",
            "zz:e0:51:f9:31:c1",
            "96e051f931c1",
            "96:e0:51:f9:31:c1:",
        ] {
            assert!(
                matches!(Mac::parse(bad), Err(Error::InvalidMac(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn cidrs_are_masked() {
        assert_eq!(
            cidr_text(&parse_cidr("192.168.100.1/16").unwrap()),
            "192.168.0.0/16"
        );
        assert!(parse_cidr("192.168.100.1").is_err());
        assert!(parse_cidr("192.168.100.1/33").is_err());
    }

    #[test]
    fn go_time_format() {
        use chrono::TimeZone;
        let t = chrono::Utc.with_ymd_and_hms(2015, 6, 8, 18, 8, 39).unwrap()
            + chrono::Duration::nanoseconds(715_868_000);
        assert_eq!(go_time(t), "2015-06-08 18:08:39.715868 +0000 UTC");
        let t = chrono::Utc.with_ymd_and_hms(2015, 6, 8, 18, 8, 39).unwrap();
        assert_eq!(go_time(t), "2015-06-08 18:08:39 +0000 UTC");
    }
}
