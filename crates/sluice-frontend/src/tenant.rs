//! Which tenant a request belongs to.

use sluice_api::ApiError;
use sluice_proto::ErrorType;

/// The tenant of every request when multi-tenancy is off.
pub const ANONYMOUS: &str = "anonymous";

/// The header carrying the tenant, as Cortex, Mimir and Loki use it.
pub(crate) const TENANT_HEADER: &str = "X-Scope-OrgID";

const MAX_TENANT_LENGTH: usize = 150;

/// Finds the tenant of a request: always [`ANONYMOUS`] with multi-tenancy
/// off; otherwise the header, which must be present (401) and valid (400).
pub fn tenant_of(
    headers: &http::HeaderMap,
    multitenancy_enabled: bool,
) -> Result<String, ApiError> {
    if !multitenancy_enabled {
        return Ok(ANONYMOUS.to_owned());
    }
    let Some(value) = headers.get(TENANT_HEADER) else {
        return Err(ApiError::new(ErrorType::Unauthorized, "no org id"));
    };
    let Ok(tenant) = value.to_str() else {
        return Err(ApiError::bad_data(
            "tenant ID contains characters that are not allowed",
        ));
    };
    validate_tenant(tenant)?;
    Ok(tenant.to_owned())
}

/// The tenant of a query. With `federation` on, a header naming several
/// tenants (`a|b`, Mimir's separator) is a federated query of all of them:
/// each is checked as one tenant, and the id is their sorted, deduplicated
/// set, so `b|a` and `a|b|a` share cache entries and limits with `a|b`.
pub fn query_tenant_of(
    headers: &http::HeaderMap,
    multitenancy_enabled: bool,
    federation: bool,
) -> Result<String, ApiError> {
    let federated = federation
        && multitenancy_enabled
        && headers
            .get(TENANT_HEADER)
            .is_some_and(|value| value.as_bytes().contains(&b'|'));
    if !federated {
        return tenant_of(headers, multitenancy_enabled);
    }
    let Ok(value) = headers[TENANT_HEADER].to_str() else {
        return Err(ApiError::bad_data(
            "tenant ID contains characters that are not allowed",
        ));
    };
    let mut tenants: Vec<&str> = value.split('|').collect();
    for tenant in &tenants {
        validate_tenant(tenant)?;
    }
    tenants.sort_unstable();
    tenants.dedup();
    Ok(tenants.join("|"))
}

/// Mimir's rules: a tenant id is a path segment in object storage and a
/// label value, so it is short and made of safe characters only.
fn validate_tenant(tenant: &str) -> Result<(), ApiError> {
    if tenant.is_empty() {
        return Err(ApiError::new(ErrorType::Unauthorized, "no org id"));
    }
    if tenant.len() > MAX_TENANT_LENGTH {
        return Err(ApiError::bad_data(format!(
            "tenant ID is too long: max {MAX_TENANT_LENGTH} characters"
        )));
    }
    if tenant == "." || tenant == ".." {
        return Err(ApiError::bad_data("tenant ID is '.' or '..'"));
    }
    let allowed =
        |character: char| character.is_ascii_alphanumeric() || "!-_.*'()".contains(character);
    if let Some(bad) = tenant.chars().find(|character| !allowed(*character)) {
        return Err(ApiError::bad_data(format!(
            "tenant ID {tenant:?} contains unsupported character {bad:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(tenant: Option<&str>) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        if let Some(tenant) = tenant {
            headers.insert(TENANT_HEADER, tenant.parse().unwrap());
        }
        headers
    }

    #[test]
    fn single_tenant_ignores_the_header() {
        assert_eq!(
            tenant_of(&headers(Some("team-a")), false).unwrap(),
            ANONYMOUS
        );
        assert_eq!(tenant_of(&headers(None), false).unwrap(), ANONYMOUS);
    }

    #[test]
    fn a_federated_id_is_the_sorted_set_of_valid_tenants() {
        let federated = |value: &str, federation: bool| {
            query_tenant_of(&headers(Some(value)), true, federation)
        };
        assert_eq!(federated("b|a|b", true).unwrap(), "a|b");
        assert_eq!(federated("a|a", true).unwrap(), "a");
        assert_eq!(federated("team-a", true).unwrap(), "team-a");
        for bad in ["a|", "|a", "a||b", "a|x y"] {
            let error = federated(bad, true).unwrap_err();
            assert!(matches!(error.http_status(), 400 | 401), "{bad:?}");
        }
        let refused = federated("a|b", false).unwrap_err();
        assert_eq!(refused.http_status(), 400, "without federation, as before");
        assert_eq!(
            query_tenant_of(&headers(Some("a|b")), false, true).unwrap(),
            ANONYMOUS
        );
    }

    #[test]
    fn multi_tenant_requires_a_valid_header() {
        assert_eq!(tenant_of(&headers(Some("team-a")), true).unwrap(), "team-a");
        let missing = tenant_of(&headers(None), true).unwrap_err();
        assert_eq!(missing.http_status(), 401);
        for bad in ["a/b", "..", "x y", &"a".repeat(151)] {
            let error = tenant_of(&headers(Some(bad)), true).unwrap_err();
            assert_eq!(error.http_status(), 400, "tenant {bad:?}");
        }
    }
}
