//! Durations in the runtime file as Prometheus writes them (`1h`, `30d`,
//! `0s`), for serde.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};
use sluice_api::params::{format_duration, parse_duration};

pub(crate) fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_duration(*value))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    // A bare number is seconds, as Prometheus's duration parser takes it.
    let value = serde_yaml::Value::deserialize(deserializer)?;
    let text = match &value {
        serde_yaml::Value::String(text) => text.clone(),
        serde_yaml::Value::Number(number) => number.to_string(),
        other => {
            return Err(serde::de::Error::custom(format!(
                "expected a duration, got {other:?}"
            )));
        }
    };
    let ms = parse_duration(&text).map_err(serde::de::Error::custom)?;
    u64::try_from(ms)
        .map(Duration::from_millis)
        .map_err(|_| serde::de::Error::custom(format!("negative duration {text:?}")))
}
