//! Serde helpers that reproduce how Go's `encoding/json` read and wrote these types.
//!
//! * Input: a JSON `null` for any field leaves its zero value (Go ignores `null` for
//!   non-pointer fields), so every field decodes through [`null_default`].
//! * Output: Go writes a whole float64 without a fraction (`0`, not `0.0`): [`float`].
//! * Times: Go's `time.Time` marshals as RFC 3339 with nanoseconds and the trailing zeros
//!   of the fraction dropped; the unset time is `0001-01-01T00:00:00Z`: [`go_time`].

use serde::{Deserialize, Deserializer, Serializer};

/// Deserialize `T`, mapping an explicit JSON `null` to `T::default()`.
pub fn null_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// Largest magnitude below which every whole f64 is exactly an i64 (2^53).
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// Serialize an f64 the way Go's encoder does for the values we meet: whole numbers
/// without a fractional part, everything else in shortest round-trip form.
pub fn float<S: Serializer>(v: &f64, ser: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < EXACT_INT {
        ser.serialize_i64(*v as i64)
    } else {
        ser.serialize_f64(*v)
    }
}

/// `time.Time` as Go marshals it (RFC 3339, nanoseconds with trailing zeros trimmed, UTC).
pub mod go_time {
    use chrono::{DateTime, NaiveDate, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Go's zero `time.Time`: 0001-01-01T00:00:00Z.
    pub fn zero() -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(1, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|n| n.and_utc())
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Formats `t` exactly as Go's `time.Time.MarshalJSON` does for a UTC time.
    pub fn format(t: &DateTime<Utc>) -> String {
        let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
        let nanos = t.timestamp_subsec_nanos();
        if nanos != 0 {
            let frac = format!("{nanos:09}");
            s.push('.');
            s.push_str(frac.trim_end_matches('0'));
        }
        s.push('Z');
        s
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<DateTime<Utc>, D::Error> {
        match Option::<String>::deserialize(de)? {
            None => Ok(zero()),
            Some(s) => DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| serde::de::Error::custom(format!("invalid RFC 3339 time {s:?}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::go_time;
    use chrono::{TimeZone, Utc};

    #[test]
    fn go_time_trims_fraction_and_formats_zero() {
        assert_eq!(go_time::format(&go_time::zero()), "0001-01-01T00:00:00Z");
        let t = Utc.timestamp_opt(1_433_160_000, 123_450_000).unwrap();
        assert_eq!(go_time::format(&t), "2015-06-01T12:00:00.12345Z");
        let t = Utc.timestamp_opt(1_433_160_000, 0).unwrap();
        assert_eq!(go_time::format(&t), "2015-06-01T12:00:00Z");
    }
}
