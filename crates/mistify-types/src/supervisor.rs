//! Wire types of the REST API (govisor-compatible, plus our own fields).
//!
//! Serial numbers and log ids travel as lowercase hexadecimal strings of the 64-bit
//! value; times are RFC 3339 (UTC, nanoseconds with trailing zeros dropped).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The header a client sends to long-poll: the ETag it already has.
pub const POLL_ETAG: &str = "X-Govisor-Poll-Etag";
/// The header a client sends to long-poll: how many seconds it is willing to wait.
pub const POLL_TIME: &str = "X-Govisor-Poll-Time";
/// The longest long-poll the server honours, in seconds.
pub const MAX_POLL_SECS: u64 = 300;
/// Records kept in each log ring.
pub const MAX_LOG_RECORDS: usize = 1000;

/// A 64-bit serial or log id, written as lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hex(pub u64);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl Hex {
    /// `"<hex>"`, the ETag form.
    pub fn etag(&self) -> String {
        format!("\"{:x}\"", self.0)
    }

    /// Parses an ETag (`"<hex>"`); `None` when it is not one.
    pub fn from_etag(s: &str) -> Option<Hex> {
        let s = s.trim();
        if s.len() < 2 || !s.starts_with('"') || !s.ends_with('"') {
            return None;
        }
        u64::from_str_radix(&s[1..s.len() - 1], 16).ok().map(Hex)
    }
}

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16)
            .map(Hex)
            .map_err(serde::de::Error::custom)
    }
}

/// A time on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub DateTime<Utc>);

impl Time {
    pub fn now() -> Time {
        Time(Utc::now())
    }

    /// Unix nanoseconds (0 before 1970 or past 2262).
    pub fn nanos(&self) -> u64 {
        self.0
            .timestamp_nanos_opt()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0)
    }

    /// IMF-fixdate, as in `Last-Modified`.
    pub fn http_date(&self) -> String {
        self.0.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
    }

    /// Go's zero time (year 1), used for a list that was never modified.
    pub fn zero() -> Time {
        Time(DateTime::<Utc>::MIN_UTC.with_timezone(&Utc)).max_year_one()
    }

    fn max_year_one(self) -> Time {
        use chrono::TimeZone;
        match Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0) {
            chrono::LocalResult::Single(t) => Time(t),
            _ => self,
        }
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| Time(t.with_timezone(&Utc)))
            .map_err(serde::de::Error::custom)
    }
}

/// `GET /`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManagerInfo {
    pub name: String,
    pub serial: Hex,
    pub created: Time,
    pub updated: Time,
}

/// The explicit state of a service (our addition; govisor derives it from flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Disabled,
    Waiting,
    Starting,
    Running,
    Stopping,
    Failed,
    Throttled,
    Exited,
}

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Disabled => "disabled",
            State::Waiting => "waiting",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Failed => "failed",
            State::Throttled => "throttled",
            State::Exited => "exited",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /services/{service}`: govisor's fields, then ours (old clients ignore them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub running: bool,
    pub failed: bool,
    pub provides: Vec<String>,
    pub depends: Vec<String>,
    pub conflicts: Vec<String>,
    pub status: String,
    pub tstamp: Time,
    pub serial: Hex,
    #[serde(default)]
    pub state: State,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub restarts: u64,
    #[serde(default)]
    pub throttled_until: Option<Time>,
}

impl ServiceInfo {
    /// govisor's word for the state: disabled, failed, running or standby.
    pub fn govisor_word(&self) -> &'static str {
        if !self.enabled {
            "disabled"
        } else if self.failed {
            "failed"
        } else if self.running {
            "running"
        } else {
            "standby"
        }
    }
}

/// ServiceInfo with exactly govisor's keys, in govisor's order (what `GET
/// /services/{name}` answers without `?full=1`).
#[derive(Debug, Clone, Serialize)]
pub struct GovisorServiceInfo<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub enabled: bool,
    pub running: bool,
    pub failed: bool,
    pub provides: &'a [String],
    pub depends: &'a [String],
    pub conflicts: &'a [String],
    pub status: &'a str,
    pub tstamp: Time,
    pub serial: Hex,
}

impl<'a> From<&'a ServiceInfo> for GovisorServiceInfo<'a> {
    fn from(s: &'a ServiceInfo) -> Self {
        GovisorServiceInfo {
            name: &s.name,
            description: &s.description,
            enabled: s.enabled,
            running: s.running,
            failed: s.failed,
            provides: &s.provides,
            depends: &s.depends,
            conflicts: &s.conflicts,
            status: &s.status,
            tstamp: s.tstamp,
            serial: s.serial,
        }
    }
}

/// One line of a log ring.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogRecord {
    pub id: Hex,
    pub time: Time,
    pub text: String,
}

/// The error body: `{"code": <status>, "message": "<text>"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: u16,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_etag_round_trip() {
        let h = Hex(0x17c3f0a2b9d41e07);
        assert_eq!(h.to_string(), "17c3f0a2b9d41e07");
        assert_eq!(h.etag(), "\"17c3f0a2b9d41e07\"");
        assert_eq!(Hex::from_etag(&h.etag()), Some(h));
        assert_eq!(Hex::from_etag("17c3"), None);
        assert_eq!(Hex::from_etag("\"zz\""), None);
        let j = serde_json::to_string(&h).unwrap_or_default();
        assert_eq!(j, "\"17c3f0a2b9d41e07\"");
    }

    #[test]
    fn zero_time_is_year_one() {
        assert_eq!(Time::zero().http_date(), "Mon, 01 Jan 0001 00:00:00 GMT");
    }
}
