//! Durations as operators write them (`"30s"`, `"90d"`, `"1h 30m"`), read with `humantime`
//! and shown by `config check` in the same whole units: `"90d"`, not humantime's
//! `"2months 29days 2h 52m 48s"` (it counts a month as 30.44 days).

use std::time::Duration;

use serde::{Deserializer, Serializer};

/// Reads `"30s"`, `"5m"`, `"1h 30m"`, `"90d"`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    humantime_serde::deserialize(deserializer)
}

/// Writes the largest whole units: `90d`, `1h 30m`, `200ms`.
pub(crate) fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*value))
}

/// `90d`, `1h 30m`, `1s 500ms`, `0s`.
pub(crate) fn format(value: Duration) -> String {
    const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let mut seconds = value.as_secs();
    let mut parts = Vec::new();
    for (unit, size) in UNITS {
        if seconds >= size {
            parts.push(format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    let millis = value.subsec_millis();
    if millis > 0 {
        parts.push(format!("{millis}ms"));
    }
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_units_round_trip_through_humantime() {
        for (value, text) in [
            (Duration::from_secs(90 * 86_400), "90d"),
            (Duration::from_secs(5_400), "1h 30m"),
            (Duration::from_millis(200), "200ms"),
            (Duration::from_millis(1_500), "1s 500ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format(value), text);
            assert_eq!(
                humantime_serde::re::humantime::parse_duration(text).unwrap(),
                value
            );
        }
    }
}
