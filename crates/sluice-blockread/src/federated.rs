//! Tenant federation, as Mimir's querier does it: one storage over several
//! tenants' storages, each series labelled with the tenant it came from
//! (`__tenant_id__`; a series that had that label already keeps its value
//! as `original___tenant_id__`). Matchers on `__tenant_id__` choose which
//! tenants are read and are not passed on, so `{__tenant_id__="a"}` never
//! reads tenant `b`.

use std::sync::Arc;

use promql_parser::label::Matcher as EngineMatcher;
use sluice_engine::{EngineError, Labels, Shard, Storage, StoredSeries};

/// The label a federated query adds to every series.
pub const TENANT_LABEL: &str = "__tenant_id__";
/// Where a series' own `__tenant_id__` goes when the label is added.
pub const ORIGINAL_TENANT_LABEL: &str = "original___tenant_id__";

/// Several tenants' storages read as one.
pub struct Federated<S> {
    tenants: Vec<(String, S)>,
}

impl<S> Federated<S> {
    pub fn new(tenants: Vec<(String, S)>) -> Federated<S> {
        Federated { tenants }
    }

    pub fn tenants(&self) -> &[(String, S)] {
        &self.tenants
    }
}

/// `labels` as a federated query shows them for `tenant`.
pub fn with_tenant(labels: &Labels, tenant: &str) -> Labels {
    let mut labelled = labels.clone();
    let original = labels.get(TENANT_LABEL);
    if !original.is_empty() {
        labelled.set(ORIGINAL_TENANT_LABEL, original);
    }
    labelled.set(TENANT_LABEL, tenant);
    labelled
}

/// The matchers on `__tenant_id__`, and the others.
pub fn split_tenant_matchers(
    matchers: &[EngineMatcher],
) -> (Vec<&EngineMatcher>, Vec<EngineMatcher>) {
    let (on_tenant, others): (Vec<&EngineMatcher>, Vec<&EngineMatcher>) = matchers
        .iter()
        .partition(|matcher| matcher.name == TENANT_LABEL);
    (on_tenant, others.into_iter().cloned().collect())
}

impl<S: Storage + Send> Storage for Federated<S> {
    fn select(
        &self,
        matchers: &[EngineMatcher],
        start_ms: i64,
        end_ms: i64,
        shard: Option<Shard>,
    ) -> Result<Vec<StoredSeries>, EngineError> {
        let (on_tenant, others) = split_tenant_matchers(matchers);
        let mut out = Vec::new();
        for (tenant, storage) in &self.tenants {
            if !on_tenant.iter().all(|matcher| matcher.is_match(tenant)) {
                continue;
            }
            for mut series in storage.select(&others, start_ms, end_ms, shard)? {
                series.labels = Arc::new(with_tenant(&series.labels, tenant));
                out.push(series);
            }
        }
        // One label order over all tenants, as a single storage gives.
        out.sort_by(|a, b| a.labels.iter().cmp(b.labels.iter()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use sluice_engine::{Engine, MemoryStorage, QueryOptions, QueryValue};

    use super::*;

    fn storage(series: &[&[(&str, &str)]]) -> MemoryStorage {
        let memory = MemoryStorage::new();
        for labels in series {
            memory.append(&Labels::from_pairs(labels.iter().copied()), &[(0, 1.0)]);
        }
        memory
    }

    fn labels_of(federated: &Federated<MemoryStorage>, query: &str) -> Vec<String> {
        let output = Engine::new()
            .instant(federated, query, 1, &QueryOptions::default())
            .unwrap();
        let QueryValue::Vector(samples) = output.value else {
            panic!("a vector");
        };
        samples
            .iter()
            .map(|sample| format!("{}", sample.labels))
            .collect()
    }

    #[test]
    fn each_series_is_labelled_with_its_tenant_and_matchers_choose_tenants() {
        let federated = Federated::new(vec![
            (
                "a".to_owned(),
                storage(&[&[("__name__", "up"), ("job", "x")]]),
            ),
            (
                "b".to_owned(),
                storage(&[&[("__name__", "up"), ("job", "x"), ("__tenant_id__", "old")]]),
            ),
        ]);
        assert_eq!(
            labels_of(&federated, "up"),
            vec![
                r#"{__name__="up", __tenant_id__="a", job="x"}"#,
                r#"{__name__="up", __tenant_id__="b", job="x", original___tenant_id__="old"}"#,
            ]
        );
        assert_eq!(labels_of(&federated, r#"up{__tenant_id__="b"}"#).len(), 1);
        assert_eq!(
            labels_of(&federated, r#"up{__tenant_id__=~"a|c"}"#),
            vec![r#"{__name__="up", __tenant_id__="a", job="x"}"#]
        );
        assert!(labels_of(&federated, r#"up{__tenant_id__="c"}"#).is_empty());
        assert_eq!(
            labels_of(&federated, "sum by (__tenant_id__) (up)").len(),
            2
        );
    }
}
