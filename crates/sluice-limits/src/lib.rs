//! Per-tenant limits. Every limit has a default, set by its flag; a runtime
//! configuration file (`-runtime-config.file`, in Mimir's shape,
//! `overrides: {tenant: {limit: value}}`) overrides any of them for any
//! tenant and is re-read every `-runtime-config.reload-period` while sluice
//! runs ([`reload`]), so no limit needs a restart.
//!
//! A tenant's overrides are laid over the defaults key by key, as Mimir does:
//! a limit the file does not name for a tenant keeps its flag's value. A file
//! that does not parse or validate (an unknown key, a bad duration, a regular
//! expression that does not compile) changes nothing: the limits in force
//! stay, with a log line and `sluice_runtime_config_last_reload_successful 0`.
//!
//! Reading a tenant's limits ([`Overrides::tenant`]) is a lookup under a read
//! lock that hands back a shared, already-validated [`Tenant`], cheap enough
//! for every request.

mod duration;
mod file;
pub mod reload;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use file::RuntimeConfig;

/// Why a runtime configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("parsing the runtime configuration: {0}")]
    Parse(String),
    #[error("the overrides of tenant {tenant:?}: {message}")]
    Tenant { tenant: String, message: String },
}

/// A query a tenant may not run: the query text itself, or (with `regex`) a
/// regular expression the whole query must match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockedQuery {
    pub pattern: String,
    #[serde(default)]
    pub regex: bool,
    /// Said to the client instead of the generic refusal.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The limits of one tenant, named as Mimir's per-tenant limits are.
/// Zero means "no limit" wherever Mimir says so.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    #[serde(with = "duration")]
    pub max_query_length: Duration,
    #[serde(with = "duration")]
    pub max_query_lookback: Duration,
    pub max_query_parallelism: usize,
    pub max_queriers_per_tenant: usize,
    pub max_outstanding_requests_per_tenant: usize,
    #[serde(with = "duration")]
    pub results_cache_ttl: Duration,
    pub max_fetched_series_per_query: usize,
    pub max_fetched_chunk_bytes_per_query: usize,
    #[serde(default)]
    pub blocked_queries: Vec<BlockedQuery>,
    /// Samples a second, over all of the tenant's writes.
    pub ingestion_rate: f64,
    pub ingestion_burst_size: usize,
    pub max_global_series_per_user: usize,
}

impl Default for TenantLimits {
    /// Mimir's defaults, where Mimir has the limit.
    fn default() -> Self {
        TenantLimits {
            max_query_length: Duration::ZERO,
            max_query_lookback: Duration::ZERO,
            max_query_parallelism: 14,
            max_queriers_per_tenant: 0,
            max_outstanding_requests_per_tenant: 100,
            results_cache_ttl: Duration::from_secs(7 * 24 * 3600),
            max_fetched_series_per_query: 0,
            max_fetched_chunk_bytes_per_query: 0,
            blocked_queries: Vec::new(),
            ingestion_rate: 10_000.0,
            ingestion_burst_size: 200_000,
            max_global_series_per_user: 150_000,
        }
    }
}

/// A tenant's limits, checked and ready to apply.
#[derive(Debug)]
pub struct Tenant {
    pub limits: TenantLimits,
    blocked: Vec<Blocker>,
}

#[derive(Clone, Debug)]
enum Blocker {
    Exact(String),
    Regex(regex::Regex),
}

impl Tenant {
    fn new(limits: TenantLimits) -> Result<Tenant, String> {
        if !limits.ingestion_rate.is_finite() || limits.ingestion_rate < 0.0 {
            return Err(format!(
                "ingestion_rate must be a number of samples a second, not {}",
                limits.ingestion_rate
            ));
        }
        let blocked = limits
            .blocked_queries
            .iter()
            .map(Blocker::new)
            .collect::<Result<_, _>>()?;
        Ok(Tenant { limits, blocked })
    }

    /// The rule that blocks `query`, if any: the first in the file's order.
    pub fn blocked(&self, query: &str) -> Option<&BlockedQuery> {
        let query = query.trim();
        self.blocked
            .iter()
            .zip(&self.limits.blocked_queries)
            .find(|(blocker, _)| blocker.matches(query))
            .map(|(_, rule)| rule)
    }
}

impl Blocker {
    fn new(rule: &BlockedQuery) -> Result<Blocker, String> {
        if !rule.regex {
            return Ok(Blocker::Exact(rule.pattern.trim().to_owned()));
        }
        // Anchored and dot-all, as Prometheus's label regexes, so a pattern
        // says what the whole query is.
        regex::Regex::new(&format!("^(?s:{})$", rule.pattern))
            .map(Blocker::Regex)
            .map_err(|error| format!("blocked query pattern {:?}: {error}", rule.pattern))
    }

    fn matches(&self, query: &str) -> bool {
        match self {
            // An exact rule is also a literal: `a+b` blocks only `a+b`.
            Blocker::Exact(pattern) => pattern == query,
            Blocker::Regex(regex) => regex.is_match(query),
        }
    }
}

/// The message a blocked query gets (400 `bad_data`), Mimir's words.
pub fn blocked_message(rule: &BlockedQuery) -> String {
    let mut message = "the request has been blocked by the cluster administrator".to_owned();
    if !rule.reason.is_empty() {
        message.push_str(": ");
        message.push_str(&rule.reason);
    }
    message
}

/// The smallest non-zero of `values` (0 when all are 0: no limit).
fn smallest_limit<T: PartialOrd + Default + Copy>(values: impl Iterator<Item = T>) -> T {
    let zero = T::default();
    values
        .filter(|value| *value != zero)
        .fold(zero, |least, value| match least == zero || value < least {
            true => value,
            false => least,
        })
}

/// One tenant's limits for a query over all of `tenants`.
fn strictest(tenants: &[Arc<Tenant>]) -> Tenant {
    let mut limits = tenants[0].limits.clone();
    let all = || tenants.iter().map(|tenant| &tenant.limits);
    limits.max_query_length = smallest_limit(all().map(|one| one.max_query_length));
    limits.max_query_lookback = smallest_limit(all().map(|one| one.max_query_lookback));
    limits.max_query_parallelism = smallest_limit(all().map(|one| one.max_query_parallelism));
    limits.max_queriers_per_tenant = smallest_limit(all().map(|one| one.max_queriers_per_tenant));
    limits.max_outstanding_requests_per_tenant =
        smallest_limit(all().map(|one| one.max_outstanding_requests_per_tenant));
    limits.results_cache_ttl = all()
        .map(|one| one.results_cache_ttl)
        .min()
        .unwrap_or_default();
    limits.blocked_queries = all()
        .flat_map(|one| one.blocked_queries.iter().cloned())
        .collect();
    let blocked = tenants
        .iter()
        .flat_map(|tenant| tenant.blocked.iter().cloned())
        .collect();
    Tenant { limits, blocked }
}

/// What is in force: the defaults, and each overridden tenant's limits.
struct InForce {
    tenants: HashMap<String, Arc<Tenant>>,
    /// Each tenant's overrides as the file gave them, for `/runtime_config`.
    given: BTreeMap<String, serde_yaml::Mapping>,
}

/// Every tenant's limits, swapped whole when the runtime file changes.
pub struct Overrides {
    defaults: Arc<Tenant>,
    in_force: RwLock<Arc<InForce>>,
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overrides")
            .field("defaults", &self.defaults.limits)
            .field("tenants", &self.read().given.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Overrides {
    /// Limits with `defaults` for every tenant and no overrides yet.
    pub fn new(defaults: TenantLimits) -> Result<Overrides, LimitsError> {
        let defaults = Tenant::new(defaults).map_err(|message| LimitsError::Tenant {
            tenant: "(defaults)".into(),
            message,
        })?;
        Ok(Overrides {
            defaults: Arc::new(defaults),
            in_force: RwLock::new(Arc::new(InForce {
                tenants: HashMap::new(),
                given: BTreeMap::new(),
            })),
        })
    }

    /// The limits of `tenant`. A federated id (`a|b`) gets the strictest
    /// of its tenants' query limits (the smallest non-zero, as Mimir
    /// takes them) and every tenant's blocked queries.
    pub fn tenant(&self, tenant: &str) -> Arc<Tenant> {
        if tenant.contains('|') {
            let each: Vec<Arc<Tenant>> = tenant.split('|').map(|one| self.tenant(one)).collect();
            return Arc::new(strictest(&each));
        }
        let in_force = self.read();
        in_force
            .tenants
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| self.defaults.clone())
    }

    pub fn defaults(&self) -> &TenantLimits {
        &self.defaults.limits
    }

    /// Puts `config` in force, or refuses it whole and keeps what was.
    pub fn apply(&self, config: &RuntimeConfig) -> Result<(), LimitsError> {
        let mut tenants = HashMap::new();
        for (tenant, given) in &config.overrides {
            let limits = file::overlay(&self.defaults.limits, given).map_err(|message| {
                LimitsError::Tenant {
                    tenant: tenant.clone(),
                    message,
                }
            })?;
            let checked = Tenant::new(limits).map_err(|message| LimitsError::Tenant {
                tenant: tenant.clone(),
                message,
            })?;
            tenants.insert(tenant.clone(), Arc::new(checked));
        }
        let in_force = InForce {
            tenants,
            given: config.overrides.clone(),
        };
        *self
            .in_force
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(in_force);
        Ok(())
    }

    fn read(&self) -> Arc<InForce> {
        self.in_force
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// What `/runtime_config` shows: every overridden tenant's limits in
    /// force, whole; or, with `diff`, only the limits that differ from the
    /// defaults (Mimir's `?mode=diff`).
    pub fn render(&self, diff: bool) -> String {
        let in_force = self.read();
        let mut overrides = serde_yaml::Mapping::new();
        for tenant in in_force.given.keys() {
            let Some(limits) = in_force.tenants.get(tenant) else {
                continue;
            };
            let shown = file::shown(&self.defaults.limits, &limits.limits, diff);
            overrides.insert(tenant.clone().into(), shown.into());
        }
        let mut root = serde_yaml::Mapping::new();
        root.insert("overrides".into(), overrides.into());
        serde_yaml::to_string(&root).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
