//! The runtime configuration file: its shape, and a tenant's overrides laid
//! over the defaults.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use crate::{LimitsError, TenantLimits};

/// A parsed runtime configuration file. Keys sluice does not know are
/// refused rather than ignored, so a misspelt limit is noticed.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub(crate) overrides: BTreeMap<String, Mapping>,
}

impl RuntimeConfig {
    /// Parses the file's text; an empty file overrides nothing.
    pub fn parse(text: &str) -> Result<RuntimeConfig, LimitsError> {
        if text.trim().is_empty() {
            return Ok(RuntimeConfig::default());
        }
        // `tenant:` with nothing under it is YAML null: no overrides.
        let raw: RawConfig =
            serde_yaml::from_str(text).map_err(|error| LimitsError::Parse(error.to_string()))?;
        let overrides = raw
            .overrides
            .into_iter()
            .map(|(tenant, given)| match given {
                Value::Null => Ok((tenant, Mapping::new())),
                Value::Mapping(mapping) => Ok((tenant, mapping)),
                _ => Err(LimitsError::Tenant {
                    tenant,
                    message: "expected a mapping of limit names to values".into(),
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(RuntimeConfig { overrides })
    }

    /// The tenants the file overrides.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.overrides.keys().map(String::as_str)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    overrides: BTreeMap<String, Value>,
}

/// `defaults` with each limit `given` names replaced by its given value.
pub(crate) fn overlay(defaults: &TenantLimits, given: &Mapping) -> Result<TenantLimits, String> {
    let mut merged = match serde_yaml::to_value(defaults) {
        Ok(Value::Mapping(mapping)) => mapping,
        _ => return Err("the defaults cannot be written as YAML".into()),
    };
    for (key, value) in given {
        merged.insert(key.clone(), value.clone());
    }
    serde_yaml::from_value(Value::Mapping(merged)).map_err(|error| error.to_string())
}

/// `limits` as `/runtime_config` shows them: whole, or only where they
/// differ from `defaults`.
pub(crate) fn shown(defaults: &TenantLimits, limits: &TenantLimits, diff: bool) -> Mapping {
    let (Ok(Value::Mapping(all)), Ok(Value::Mapping(base))) =
        (serde_yaml::to_value(limits), serde_yaml::to_value(defaults))
    else {
        return Mapping::new();
    };
    all.into_iter()
        .filter(|(key, value)| !diff || base.get(key) != Some(value))
        .collect()
}
